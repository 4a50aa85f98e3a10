CREATE TABLE "host_templates" (
	"host_id" uuid NOT NULL,
	"name" text NOT NULL,
	"team_id" uuid NOT NULL,
	"kind" text NOT NULL,
	"size_bytes" bigint DEFAULT 0 NOT NULL,
	"synced_at" timestamp (3) with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "host_templates_host_id_name_pk" PRIMARY KEY("host_id","name")
);
--> statement-breakpoint
ALTER TABLE "hosts" ADD COLUMN "agent_token_encrypted" text;--> statement-breakpoint
ALTER TABLE "sandboxes" ADD COLUMN "envd_version" text;--> statement-breakpoint
ALTER TABLE "sandboxes" ADD COLUMN "host_ip" text;--> statement-breakpoint
ALTER TABLE "sandboxes" ADD COLUMN "running_since" timestamp (3) with time zone;--> statement-breakpoint
ALTER TABLE "templates" ADD COLUMN "host_template_name" text;--> statement-breakpoint
ALTER TABLE "host_templates" ADD CONSTRAINT "host_templates_host_id_hosts_id_fk" FOREIGN KEY ("host_id") REFERENCES "public"."hosts"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "host_templates_name_idx" ON "host_templates" USING btree ("name");--> statement-breakpoint
ALTER TABLE "hosts" ADD CONSTRAINT "hosts_address_unique" UNIQUE("address");