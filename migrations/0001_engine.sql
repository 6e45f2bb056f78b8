CREATE TABLE "messages" (
	"id" text PRIMARY KEY NOT NULL,
	"run_id" bigint,
	"step_id" text,
	"workflow_key" text,
	"contact_id" bigint,
	"account_id" bigint,
	"to_email" text,
	"template" text NOT NULL,
	"subject" text NOT NULL,
	"category" text NOT NULL,
	"variant" text,
	"data" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"status" text NOT NULL,
	"status_reason" text,
	"provider_id" text,
	"created_at" timestamp with time zone NOT NULL,
	"sent_at" timestamp with time zone,
	"updated_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
CREATE TABLE "run_trace" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"run_id" bigint NOT NULL,
	"at" timestamp with time zone NOT NULL,
	"step_id" text,
	"kind" text NOT NULL,
	"detail" text NOT NULL,
	"data" jsonb
);
--> statement-breakpoint
CREATE TABLE "scheduled_entries" (
	"workflow_key" text NOT NULL,
	"contact_id" bigint NOT NULL,
	"trait_value" text NOT NULL,
	"due_at" timestamp with time zone NOT NULL,
	"done_at" timestamp with time zone,
	CONSTRAINT "scheduled_entries_workflow_key_contact_id_trait_value_pk" PRIMARY KEY("workflow_key","contact_id","trait_value")
);
--> statement-breakpoint
CREATE TABLE "segment_memberships" (
	"workflow_key" text NOT NULL,
	"contact_id" bigint NOT NULL,
	"inside" boolean NOT NULL,
	"changed_at" timestamp with time zone NOT NULL,
	CONSTRAINT "segment_memberships_workflow_key_contact_id_pk" PRIMARY KEY("workflow_key","contact_id")
);
--> statement-breakpoint
CREATE TABLE "settings" (
	"key" text PRIMARY KEY NOT NULL,
	"value" text NOT NULL,
	"created_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
CREATE TABLE "suppressions" (
	"email" text PRIMARY KEY NOT NULL,
	"scope" text NOT NULL,
	"reason" text NOT NULL,
	"created_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
CREATE TABLE "webhook_deliveries" (
	"id" text PRIMARY KEY NOT NULL,
	"run_id" bigint NOT NULL,
	"step_id" text NOT NULL,
	"url" text NOT NULL,
	"body" jsonb NOT NULL,
	"status" text NOT NULL,
	"attempts" integer DEFAULT 0 NOT NULL,
	"last_error" text,
	"created_at" timestamp with time zone NOT NULL,
	"delivered_at" timestamp with time zone
);
--> statement-breakpoint
CREATE TABLE "workflow_runs" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"workflow_key" text NOT NULL,
	"version" integer NOT NULL,
	"contact_id" bigint NOT NULL,
	"account_id" bigint,
	"run_key" text NOT NULL,
	"status" text NOT NULL,
	"state" jsonb NOT NULL,
	"due_at" timestamp with time zone,
	"queued_at" timestamp with time zone,
	"trigger_event_id" bigint,
	"holdout" boolean DEFAULT false NOT NULL,
	"variant" text,
	"started_at" timestamp with time zone NOT NULL,
	"ended_at" timestamp with time zone,
	"converted_at" timestamp with time zone,
	"updated_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
CREATE TABLE "workflow_versions" (
	"key" text NOT NULL,
	"version" integer NOT NULL,
	"definition" jsonb NOT NULL,
	"created_at" timestamp with time zone NOT NULL,
	CONSTRAINT "workflow_versions_key_version_pk" PRIMARY KEY("key","version")
);
--> statement-breakpoint
CREATE TABLE "workflows" (
	"key" text PRIMARY KEY NOT NULL,
	"current_version" integer NOT NULL,
	"paused" boolean DEFAULT false NOT NULL,
	"builtin" boolean DEFAULT false NOT NULL,
	"updated_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
ALTER TABLE "domain_events" ADD COLUMN "engine_processed_at" timestamp with time zone;--> statement-breakpoint
CREATE INDEX "messages_contact_idx" ON "messages" USING btree ("contact_id","created_at");--> statement-breakpoint
CREATE INDEX "messages_run_idx" ON "messages" USING btree ("run_id");--> statement-breakpoint
CREATE INDEX "messages_queued_idx" ON "messages" USING btree ("created_at") WHERE status = 'queued';--> statement-breakpoint
CREATE INDEX "run_trace_run_idx" ON "run_trace" USING btree ("run_id","id");--> statement-breakpoint
CREATE INDEX "scheduled_entries_due_idx" ON "scheduled_entries" USING btree ("due_at") WHERE done_at is null;--> statement-breakpoint
CREATE UNIQUE INDEX "workflow_runs_entry_key" ON "workflow_runs" USING btree ("workflow_key","contact_id","run_key");--> statement-breakpoint
CREATE INDEX "workflow_runs_due_idx" ON "workflow_runs" USING btree ("due_at") WHERE status = 'active' and due_at is not null;--> statement-breakpoint
CREATE INDEX "workflow_runs_active_contact_idx" ON "workflow_runs" USING btree ("contact_id") WHERE status = 'active';--> statement-breakpoint
CREATE INDEX "workflow_runs_workflow_idx" ON "workflow_runs" USING btree ("workflow_key","started_at");--> statement-breakpoint
CREATE INDEX "domain_events_engine_pending_idx" ON "domain_events" USING btree ("id") WHERE engine_processed_at is null;