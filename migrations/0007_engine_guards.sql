-- Engine dead letters: a due run that keeps failing is retried with backoff and parked after a
-- bounded number of attempts (dead_at), instead of being handed over every 5 minutes forever;
-- a timeline fact the engine cannot apply is parked the same way instead of being skipped.
ALTER TABLE "workflow_runs" ADD COLUMN "failures" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "workflow_runs" ADD COLUMN "last_error" text;--> statement-breakpoint
ALTER TABLE "workflow_runs" ADD COLUMN "dead_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "domain_events" ADD COLUMN "engine_error" text;--> statement-breakpoint
ALTER TABLE "domain_events" ADD COLUMN "engine_dead_at" timestamp with time zone;--> statement-breakpoint
CREATE INDEX "workflow_runs_dead_idx" ON "workflow_runs" USING btree ("dead_at") WHERE dead_at is not null;--> statement-breakpoint
CREATE INDEX "domain_events_engine_dead_idx" ON "domain_events" USING btree ("engine_dead_at") WHERE engine_dead_at is not null;--> statement-breakpoint
-- Account-subject date triggers: the scheduled entry remembers which account's trait it is for.
ALTER TABLE "scheduled_entries" ADD COLUMN "account_id" bigint;
