-- Stripe actions (issue 13): update-card portal sessions we opened (for the portal_update
-- attribution) and the pay-on-card-update work queue, one item per (invoice, payment method):
-- the primary key is what makes "once per invoice and card" hold however often and in whatever
-- order the card-change events arrive.
CREATE TABLE "card_update_sessions" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"customer_id" text NOT NULL,
	"invoice_id" text,
	"contact_id" bigint,
	"portal_session_id" text,
	"outcome" text NOT NULL,
	"created_at" timestamp with time zone NOT NULL
);--> statement-breakpoint
CREATE INDEX "card_update_sessions_customer_idx" ON "card_update_sessions" USING btree ("customer_id","created_at");--> statement-breakpoint
CREATE TABLE "card_update_payments" (
	"id" text PRIMARY KEY NOT NULL,
	"invoice_id" text NOT NULL,
	"customer_id" text NOT NULL,
	"payment_method_id" text NOT NULL,
	-- the payment method, or for a card-updater change the method at its new expiry: "until the
	-- card changes" means until this key changes
	"card_key" text NOT NULL,
	"card_brand" text,
	"trigger_event_id" text NOT NULL,
	"trigger_type" text NOT NULL,
	"created" timestamp with time zone NOT NULL,
	"lane" smallint GENERATED ALWAYS AS ((hashtext("customer_id") & 7)) STORED,
	"attempts" integer DEFAULT 0 NOT NULL,
	"retry_at" timestamp with time zone,
	"last_error" text,
	"dead_at" timestamp with time zone,
	"done_at" timestamp with time zone,
	"outcome" text,
	"reason" text,
	"decided_at" timestamp with time zone
);--> statement-breakpoint
CREATE INDEX "card_update_payments_due_idx" ON "card_update_payments" USING btree ("lane","created","id") WHERE done_at is null and dead_at is null;--> statement-breakpoint
CREATE INDEX "card_update_payments_pm_idx" ON "card_update_payments" USING btree ("payment_method_id","decided_at");--> statement-breakpoint
CREATE INDEX "card_update_payments_card_idx" ON "card_update_payments" USING btree ("card_key");--> statement-breakpoint
CREATE INDEX "card_update_payments_invoice_idx" ON "card_update_payments" USING btree ("invoice_id");--> statement-breakpoint
INSERT INTO "work_partitions" ("queue", "partition")
SELECT 'card-update-payments', p FROM generate_series(0, 7) AS p ON CONFLICT DO NOTHING;
--> statement-breakpoint
-- Pre-dunning: a customer's default card that expires before a subscription's next renewal,
-- checked at the notice time before the renewal (one row per card, expiry and renewal).
CREATE TABLE "pre_dunning_checks" (
	"check_key" text PRIMARY KEY NOT NULL,
	"customer_id" text NOT NULL,
	"payment_method_id" text NOT NULL,
	"brand" text,
	"exp_month" integer NOT NULL,
	"exp_year" integer NOT NULL,
	"renewal_at" timestamp with time zone NOT NULL,
	"due_at" timestamp with time zone NOT NULL,
	"fired_at" timestamp with time zone,
	"created_at" timestamp with time zone NOT NULL
);--> statement-breakpoint
CREATE INDEX "pre_dunning_checks_due_idx" ON "pre_dunning_checks" USING btree ("due_at") WHERE fired_at is null;
