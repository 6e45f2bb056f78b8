-- `lifeline backfill`: where each stream of a backfill has got to, so an interrupted backfill
-- (Ctrl-C, crash, Stripe failing beyond retries) resumes after the last page it committed.
-- The cursor is written in the same transaction as that page's projection.
CREATE TABLE "stripe_backfill_cursors" (
	"stream" text PRIMARY KEY NOT NULL,
	"starting_after" text,
	"items" bigint DEFAULT 0 NOT NULL,
	"since" timestamp with time zone,
	"started_at" timestamp with time zone NOT NULL,
	"completed_at" timestamp with time zone,
	"updated_at" timestamp with time zone NOT NULL
);
