-- The Stripe inbox's ordering key and partition are written by the INSERT (storeStripeEvent),
-- not generated from the stored payload: the generated expressions detoasted the jsonb once per
-- `payload->…`, ~65 µs of backend CPU per webhook (issue 10, webhook ingest). Existing rows keep
-- their values; the INSERT computes them the same way (hashtext of customer, object, event id).
ALTER TABLE "stripe_events" ALTER COLUMN "customer_id" DROP EXPRESSION;--> statement-breakpoint
ALTER TABLE "stripe_events" ALTER COLUMN "lane" DROP EXPRESSION;--> statement-breakpoint
ALTER TABLE "stripe_events" ALTER COLUMN "lane" SET NOT NULL;
