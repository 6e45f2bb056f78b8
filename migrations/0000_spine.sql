CREATE TABLE "account_members" (
	"account_id" bigint NOT NULL,
	"contact_id" bigint NOT NULL,
	"joined_at" timestamp with time zone NOT NULL,
	CONSTRAINT "account_members_account_id_contact_id_pk" PRIMARY KEY("account_id","contact_id")
);
--> statement-breakpoint
CREATE TABLE "accounts" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"group_id" text NOT NULL,
	"stripe_customer_id" text,
	"traits" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"created_at" timestamp with time zone NOT NULL,
	"updated_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
CREATE TABLE "contacts" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"user_id" text,
	"anonymous_id" text,
	"email" text,
	"stripe_customer_id" text,
	"traits" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"created_at" timestamp with time zone NOT NULL,
	"updated_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
CREATE TABLE "customers" (
	"id" text PRIMARY KEY NOT NULL,
	"email" text,
	"name" text,
	"deleted" boolean DEFAULT false NOT NULL,
	"livemode" boolean DEFAULT false NOT NULL,
	"default_payment_method" text,
	"metadata" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"contact_id" bigint,
	"version_created" timestamp with time zone NOT NULL,
	"version_event_id" text NOT NULL,
	"updated_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
CREATE TABLE "domain_events" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"name" text NOT NULL,
	"source" text NOT NULL,
	"source_id" text NOT NULL,
	"dedupe_key" text NOT NULL,
	"contact_id" bigint,
	"account_id" bigint,
	"stripe_customer_id" text,
	"subject_id" text,
	"properties" jsonb NOT NULL,
	"occurred_at" timestamp with time zone NOT NULL,
	"recorded_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
CREATE TABLE "invoices" (
	"id" text PRIMARY KEY NOT NULL,
	"customer_id" text NOT NULL,
	"subscription_id" text,
	"status" text NOT NULL,
	"currency" text NOT NULL,
	"amount_due" bigint NOT NULL,
	"amount_paid" bigint NOT NULL,
	"amount_remaining" bigint NOT NULL,
	"attempt_count" integer DEFAULT 0 NOT NULL,
	"next_payment_attempt" timestamp with time zone,
	"hosted_invoice_url" text,
	"billing_reason" text,
	"paid_at" timestamp with time zone,
	"stripe_created" timestamp with time zone,
	"livemode" boolean DEFAULT false NOT NULL,
	"version_rank" integer NOT NULL,
	"version_created" timestamp with time zone NOT NULL,
	"version_attempt" integer NOT NULL,
	"version_event_id" text NOT NULL,
	"updated_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
CREATE TABLE "payment_failures" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"stripe_event_id" text NOT NULL,
	"customer_id" text,
	"invoice_id" text,
	"payment_intent_id" text,
	"charge_id" text,
	"amount" bigint,
	"currency" text,
	"failure_code" text,
	"decline_code" text,
	"advice_code" text,
	"decline_class" text NOT NULL,
	"message" text,
	"occurred_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
CREATE TABLE "product_events" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"message_id" text NOT NULL,
	"kind" text NOT NULL,
	"user_id" text,
	"anonymous_id" text,
	"group_id" text,
	"event" text,
	"properties" jsonb,
	"traits" jsonb,
	"context" jsonb,
	"timestamp" timestamp with time zone NOT NULL,
	"received_at" timestamp with time zone DEFAULT now() NOT NULL,
	"processed_at" timestamp with time zone,
	"attempts" integer DEFAULT 0 NOT NULL,
	"retry_at" timestamp with time zone,
	"last_error" text
);
--> statement-breakpoint
CREATE TABLE "stripe_events" (
	"id" text PRIMARY KEY NOT NULL,
	"type" text NOT NULL,
	"api_version" text,
	"created" timestamp with time zone NOT NULL,
	"livemode" boolean NOT NULL,
	"request_id" text,
	"idempotency_key" text,
	"object_id" text,
	"payload" jsonb NOT NULL,
	"received_at" timestamp with time zone DEFAULT now() NOT NULL,
	"deliveries" integer DEFAULT 1 NOT NULL,
	"processed_at" timestamp with time zone,
	"attempts" integer DEFAULT 0 NOT NULL,
	"retry_at" timestamp with time zone,
	"last_error" text
);
--> statement-breakpoint
CREATE TABLE "subscriptions" (
	"id" text PRIMARY KEY NOT NULL,
	"customer_id" text NOT NULL,
	"status" text NOT NULL,
	"currency" text NOT NULL,
	"mrr_minor" bigint NOT NULL,
	"items" jsonb NOT NULL,
	"trial_start" timestamp with time zone,
	"trial_end" timestamp with time zone,
	"current_period_end" timestamp with time zone,
	"cancel_at_period_end" boolean DEFAULT false NOT NULL,
	"cancel_at" timestamp with time zone,
	"canceled_at" timestamp with time zone,
	"ended_at" timestamp with time zone,
	"cancellation_reason" text,
	"cancellation_feedback" text,
	"cancellation_comment" text,
	"stripe_created" timestamp with time zone,
	"version_rank" integer NOT NULL,
	"version_created" timestamp with time zone NOT NULL,
	"version_event_id" text NOT NULL,
	"updated_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
ALTER TABLE "account_members" ADD CONSTRAINT "account_members_account_id_accounts_id_fk" FOREIGN KEY ("account_id") REFERENCES "public"."accounts"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "account_members" ADD CONSTRAINT "account_members_contact_id_contacts_id_fk" FOREIGN KEY ("contact_id") REFERENCES "public"."contacts"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "customers" ADD CONSTRAINT "customers_contact_id_contacts_id_fk" FOREIGN KEY ("contact_id") REFERENCES "public"."contacts"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "account_members_contact_idx" ON "account_members" USING btree ("contact_id");--> statement-breakpoint
CREATE UNIQUE INDEX "accounts_group_id_key" ON "accounts" USING btree ("group_id");--> statement-breakpoint
CREATE INDEX "accounts_stripe_customer_idx" ON "accounts" USING btree ("stripe_customer_id");--> statement-breakpoint
CREATE UNIQUE INDEX "contacts_user_id_key" ON "contacts" USING btree ("user_id");--> statement-breakpoint
CREATE UNIQUE INDEX "contacts_anonymous_id_key" ON "contacts" USING btree ("anonymous_id") WHERE user_id is null;--> statement-breakpoint
CREATE INDEX "contacts_email_idx" ON "contacts" USING btree (lower("email"));--> statement-breakpoint
CREATE INDEX "contacts_stripe_customer_idx" ON "contacts" USING btree ("stripe_customer_id");--> statement-breakpoint
CREATE INDEX "customers_email_idx" ON "customers" USING btree (lower("email"));--> statement-breakpoint
CREATE INDEX "customers_contact_idx" ON "customers" USING btree ("contact_id");--> statement-breakpoint
CREATE UNIQUE INDEX "domain_events_dedupe_key" ON "domain_events" USING btree ("dedupe_key");--> statement-breakpoint
CREATE INDEX "domain_events_contact_idx" ON "domain_events" USING btree ("contact_id","name","occurred_at");--> statement-breakpoint
CREATE INDEX "domain_events_account_idx" ON "domain_events" USING btree ("account_id","name","occurred_at");--> statement-breakpoint
CREATE INDEX "domain_events_customer_idx" ON "domain_events" USING btree ("stripe_customer_id","occurred_at");--> statement-breakpoint
CREATE INDEX "invoices_customer_idx" ON "invoices" USING btree ("customer_id");--> statement-breakpoint
CREATE INDEX "invoices_subscription_idx" ON "invoices" USING btree ("subscription_id");--> statement-breakpoint
CREATE UNIQUE INDEX "payment_failures_event_key" ON "payment_failures" USING btree ("stripe_event_id");--> statement-breakpoint
CREATE INDEX "payment_failures_invoice_idx" ON "payment_failures" USING btree ("invoice_id");--> statement-breakpoint
CREATE INDEX "payment_failures_customer_idx" ON "payment_failures" USING btree ("customer_id","occurred_at");--> statement-breakpoint
CREATE UNIQUE INDEX "product_events_message_id_key" ON "product_events" USING btree ("message_id");--> statement-breakpoint
CREATE INDEX "product_events_unprocessed_idx" ON "product_events" USING btree ("id") WHERE processed_at is null;--> statement-breakpoint
CREATE INDEX "stripe_events_unprocessed_idx" ON "stripe_events" USING btree ("created","id") WHERE processed_at is null;--> statement-breakpoint
CREATE INDEX "stripe_events_object_idx" ON "stripe_events" USING btree ("object_id","created");--> statement-breakpoint
CREATE INDEX "subscriptions_customer_idx" ON "subscriptions" USING btree ("customer_id");