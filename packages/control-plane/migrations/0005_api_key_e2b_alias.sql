ALTER TABLE "api_keys" ADD COLUMN "e2b_alias_hash" text;--> statement-breakpoint
ALTER TABLE "api_keys" ADD CONSTRAINT "api_keys_e2b_alias_hash_unique" UNIQUE("e2b_alias_hash");