-- One work mechanism for the queues we own (src/work/work-queue.ts). Items carry a partition
-- number ("lane") computed by PostgreSQL at insert from their ordering key, so the ingest INSERT
-- stays the same single statement; a partition is worked by one holder at a time under a lease
-- row with a fencing token; failures back off and end in a visible, replayable dead letter.
CREATE SEQUENCE "work_lease_token";
--> statement-breakpoint
CREATE TABLE "work_partitions" (
	"queue" text NOT NULL,
	"partition" integer NOT NULL,
	"token" bigint DEFAULT 0 NOT NULL,
	"lease_until" timestamp with time zone,
	"claimed" text[],
	"served_at" timestamp with time zone,
	CONSTRAINT "work_partitions_pk" PRIMARY KEY("queue","partition")
);
--> statement-breakpoint
INSERT INTO "work_partitions" ("queue", "partition")
SELECT q, p FROM unnest(ARRAY['product_events', 'stripe_events']) q, generate_series(0, 31) p;
--> statement-breakpoint
-- Product events: one partition per user (else anonymous visitor), 32 partitions.
ALTER TABLE "product_events" ADD COLUMN "lane" smallint GENERATED ALWAYS AS ((hashtext(coalesce("user_id", "anonymous_id", "message_id")) & 31)) STORED;--> statement-breakpoint
ALTER TABLE "product_events" ADD COLUMN "dead_at" timestamp with time zone;--> statement-breakpoint
-- Stripe events: one partition per customer (the customer id read from the payload at insert).
ALTER TABLE "stripe_events" ADD COLUMN "customer_id" text GENERATED ALWAYS AS (
	CASE WHEN "payload"->'data'->'object'->>'object' = 'customer' THEN "payload"->'data'->'object'->>'id'
	     WHEN jsonb_typeof("payload"->'data'->'object'->'customer') = 'string' THEN "payload"->'data'->'object'->>'customer'
	     WHEN jsonb_typeof("payload"->'data'->'object'->'customer') = 'object' THEN "payload"->'data'->'object'->'customer'->>'id'
	END) STORED;--> statement-breakpoint
ALTER TABLE "stripe_events" ADD COLUMN "lane" smallint GENERATED ALWAYS AS ((hashtext(coalesce(
	CASE WHEN "payload"->'data'->'object'->>'object' = 'customer' THEN "payload"->'data'->'object'->>'id'
	     WHEN jsonb_typeof("payload"->'data'->'object'->'customer') = 'string' THEN "payload"->'data'->'object'->>'customer'
	     WHEN jsonb_typeof("payload"->'data'->'object'->'customer') = 'object' THEN "payload"->'data'->'object'->'customer'->>'id'
	END, "object_id", "id")) & 31)) STORED;--> statement-breakpoint
ALTER TABLE "stripe_events" ADD COLUMN "dead_at" timestamp with time zone;--> statement-breakpoint
-- Rows that hit the old attempt limit were invisible forever: they become dead letters.
UPDATE "product_events" SET "dead_at" = now() WHERE "processed_at" IS NULL AND "attempts" >= 10;--> statement-breakpoint
UPDATE "stripe_events" SET "dead_at" = now() WHERE "processed_at" IS NULL AND "attempts" >= 10;--> statement-breakpoint
DROP INDEX "product_events_unprocessed_idx";--> statement-breakpoint
DROP INDEX "stripe_events_unprocessed_idx";--> statement-breakpoint
CREATE INDEX "product_events_due_idx" ON "product_events" USING btree ("lane","id") WHERE processed_at is null and dead_at is null;--> statement-breakpoint
CREATE INDEX "product_events_dead_idx" ON "product_events" USING btree ("dead_at") WHERE dead_at is not null;--> statement-breakpoint
CREATE INDEX "stripe_events_due_idx" ON "stripe_events" USING btree ("lane","created","id") WHERE processed_at is null and dead_at is null;--> statement-breakpoint
CREATE INDEX "stripe_events_dead_idx" ON "stripe_events" USING btree ("dead_at") WHERE dead_at is not null;--> statement-breakpoint
-- Traits remember when the message that set them happened: an older message never overwrites a
-- newer value (per trait). Keys without a time (older rows, workflow updates) lose to any timed one.
ALTER TABLE "contacts" ADD COLUMN "trait_times" jsonb DEFAULT '{}'::jsonb NOT NULL;--> statement-breakpoint
ALTER TABLE "accounts" ADD COLUMN "trait_times" jsonb DEFAULT '{}'::jsonb NOT NULL;--> statement-breakpoint
-- The entries of `patch` that win against the stored times: the patch key has a time, and the
-- stored key has none or one not later. Used as `traits || lifeline_newer(trait_times, patch, times)`.
CREATE FUNCTION "lifeline_newer"("stored_times" jsonb, "patch" jsonb, "patch_times" jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
	SELECT coalesce(jsonb_object_agg(e.key, e.value), '{}'::jsonb)
	FROM jsonb_each(coalesce(patch, '{}'::jsonb)) e
	WHERE patch_times ? e.key
	  AND (NOT coalesce(stored_times, '{}'::jsonb) ? e.key
	       OR (stored_times->>e.key)::timestamptz <= (patch_times->>e.key)::timestamptz)
$$;
--> statement-breakpoint
-- The inboxes churn (every row is updated once when processed): vacuum and analyze them early,
-- so their due indexes do not fill with dead entries and plans follow their size.
ALTER TABLE "product_events" SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);--> statement-breakpoint
ALTER TABLE "stripe_events" SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);
