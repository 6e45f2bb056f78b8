-- The engine's timeline feed on the shared work queue (src/work/work-queue.ts): facts are
-- partitioned by contact (8 lanes), so the facts of one contact reach its runs in order and never
-- through two feeders at once, while different contacts are fed in parallel (before: one feeder
-- for the whole timeline under an advisory lock). The engine_* names keep the timeline's own
-- columns apart from the queue's bookkeeping; engine_error/engine_dead_at are the queue's
-- last_error/dead_at (dead letters as before).
ALTER TABLE "domain_events" ADD COLUMN "engine_lane" smallint GENERATED ALWAYS AS ((hashtext(coalesce("contact_id", 0)::text) & 7)) STORED;--> statement-breakpoint
ALTER TABLE "domain_events" ADD COLUMN "engine_attempts" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "domain_events" ADD COLUMN "engine_retry_at" timestamp with time zone;--> statement-breakpoint
DROP INDEX "domain_events_engine_pending_idx";--> statement-breakpoint
CREATE INDEX "domain_events_engine_due_idx" ON "domain_events" USING btree ("engine_lane","id") WHERE engine_processed_at is null and engine_dead_at is null;--> statement-breakpoint
ALTER TABLE "domain_events" SET (autovacuum_analyze_scale_factor = 0.02);--> statement-breakpoint
INSERT INTO "work_partitions" ("queue", "partition")
SELECT 'engine_feed', p FROM generate_series(0, 7) AS p ON CONFLICT DO NOTHING;
