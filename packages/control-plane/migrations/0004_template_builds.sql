CREATE TABLE "template_build_events" (
	"build_id" text NOT NULL,
	"seq" integer NOT NULL,
	"event" jsonb NOT NULL,
	CONSTRAINT "template_build_events_build_id_seq_pk" PRIMARY KEY("build_id","seq")
);
--> statement-breakpoint
CREATE TABLE "template_builds" (
	"id" text PRIMARY KEY NOT NULL,
	"team_id" uuid NOT NULL,
	"name" text NOT NULL,
	"base_template" text NOT NULL,
	"steps" jsonb NOT NULL,
	"status" text DEFAULT 'building' NOT NULL,
	"error" text,
	"sandbox_id" text,
	"template_id" uuid,
	"started_at" timestamp (3) with time zone DEFAULT now() NOT NULL,
	"finished_at" timestamp (3) with time zone,
	CONSTRAINT "template_builds_status_check" CHECK (status IN ('building', 'ready', 'failed'))
);
--> statement-breakpoint
ALTER TABLE "template_build_events" ADD CONSTRAINT "template_build_events_build_id_template_builds_id_fk" FOREIGN KEY ("build_id") REFERENCES "public"."template_builds"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "template_builds" ADD CONSTRAINT "template_builds_team_id_teams_id_fk" FOREIGN KEY ("team_id") REFERENCES "public"."teams"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "template_builds" ADD CONSTRAINT "template_builds_template_id_templates_id_fk" FOREIGN KEY ("template_id") REFERENCES "public"."templates"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "template_builds_team_id_started_at_idx" ON "template_builds" USING btree ("team_id","started_at");--> statement-breakpoint
CREATE INDEX "template_builds_template_id_idx" ON "template_builds" USING btree ("template_id");--> statement-breakpoint
CREATE INDEX "template_builds_building_idx" ON "template_builds" USING btree ("status") WHERE status = 'building';