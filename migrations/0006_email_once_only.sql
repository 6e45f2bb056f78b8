-- Once-only email sends: a batch is persisted (members in order, idempotency key, the render
-- inputs) before the provider call, and every re-send repeats exactly that batch. See the comment
-- at the top of src/email/sender.ts for the argument.
CREATE TABLE "email_batches" (
	"id" text PRIMARY KEY NOT NULL,
	"idempotency_key" text NOT NULL,
	"message_ids" text[] NOT NULL,
	"render_inputs" text NOT NULL,
	"status" text NOT NULL,
	"status_reason" text,
	"lease" integer DEFAULT 1 NOT NULL,
	"locked_until" timestamp with time zone,
	"next_attempt_at" timestamp with time zone,
	"attempts" integer DEFAULT 0 NOT NULL,
	"rate_limited" integer DEFAULT 0 NOT NULL,
	"created_at" timestamp with time zone NOT NULL,
	"updated_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
CREATE INDEX "email_batches_pending_idx" ON "email_batches" USING btree ("created_at") WHERE status in ('queued', 'sending');--> statement-breakpoint
ALTER TABLE "messages" ADD COLUMN "batch_id" text;--> statement-breakpoint
ALTER TABLE "messages" ADD COLUMN "claim_token" text;--> statement-breakpoint
DROP INDEX "messages_pending_idx";--> statement-breakpoint
CREATE INDEX "messages_pending_idx" ON "messages" USING btree ("created_at") WHERE status in ('queued', 'sending') and batch_id is null;--> statement-breakpoint
CREATE INDEX "messages_dead_idx" ON "messages" USING btree ("updated_at") WHERE status = 'dead';
