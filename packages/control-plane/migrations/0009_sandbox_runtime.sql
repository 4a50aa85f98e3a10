ALTER TABLE "sandboxes" ADD COLUMN "runtime" text;--> statement-breakpoint
-- Every sandbox made before runtimes could be chosen ran on gVisor.
UPDATE "sandboxes" SET "runtime" = 'gvisor';
