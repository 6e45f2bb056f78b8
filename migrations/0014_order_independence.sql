-- Order independence (issue 10).
--
-- subscription.mrr_changed compares a snapshot with the one before it in event time, not with
-- whatever was held when it arrived: every subscription snapshot is kept (amounts only, no
-- personal data), so a late older snapshot is slotted in between the right pair. Seeded with the
-- snapshot each subscription holds now (event_type 'seed'), so the next change still has something
-- to compare with; facts recorded up to a seed are left as they are (their pairs are unknown).
CREATE TABLE "subscription_versions" (
	"subscription_id" text NOT NULL,
	"version_created" timestamp with time zone NOT NULL,
	"version_event_id" text NOT NULL,
	"event_type" text NOT NULL,
	"customer_id" text NOT NULL,
	"status" text NOT NULL,
	"currency" text NOT NULL,
	"mrr_minor" bigint NOT NULL,
	CONSTRAINT "subscription_versions_pkey" PRIMARY KEY("subscription_id","version_created","version_event_id")
);--> statement-breakpoint
INSERT INTO "subscription_versions" ("subscription_id", "version_created", "version_event_id", "event_type", "customer_id", "status", "currency", "mrr_minor")
SELECT "id", "version_created", "version_event_id", 'seed', "customer_id", "status", "currency", "mrr_minor" FROM "subscriptions";--> statement-breakpoint
-- The email and name a Stripe event gives a contact (customer, invoice, checkout) remember that
-- event's time, per trait: the newest Stripe value wins, whatever order the events arrive in.
-- A trait a product message set (contacts.trait_times has it) is the person's own and always
-- wins over Stripe's billing details.
ALTER TABLE "contacts" ADD COLUMN "stripe_trait_times" jsonb DEFAULT '{}'::jsonb NOT NULL;--> statement-breakpoint
-- The entries of a Stripe patch that win: keys no product message set, whose Stripe time is not
-- older than the stored one (lifeline_newer, migration 0005). Used as
-- `traits || lifeline_stripe_won(trait_times, stripe_trait_times, patch, times)`.
CREATE FUNCTION "lifeline_stripe_won"("trait_times" jsonb, "stripe_times" jsonb, "patch" jsonb, "patch_times" jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
	SELECT lifeline_newer(stripe_times, coalesce(patch, '{}'::jsonb) - array(SELECT jsonb_object_keys(coalesce(trait_times, '{}'::jsonb))), patch_times)
$$;
