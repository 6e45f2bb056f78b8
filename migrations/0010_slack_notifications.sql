-- Slack alerts (issue 13): one row per workflow `notify` step execution (id = "<run id>:<step id>",
-- so a step re-run never alerts twice), delivered by the `slack-notifications` work queue
-- (leases, backoff, dead letters). The message is built at delivery from the run's invoice,
-- customer, subscriptions and failures.
CREATE TABLE "slack_notifications" (
	"id" text PRIMARY KEY NOT NULL,
	"run_id" bigint NOT NULL,
	"step_id" text NOT NULL,
	-- the step's own incoming-webhook URL; null: SLACK_WEBHOOK_URL
	"webhook_url" text,
	"text" text NOT NULL,
	"created" timestamp with time zone NOT NULL,
	"lane" smallint GENERATED ALWAYS AS ((hashtext("id") & 3)) STORED,
	"attempts" integer DEFAULT 0 NOT NULL,
	"retry_at" timestamp with time zone,
	"last_error" text,
	"dead_at" timestamp with time zone,
	"sent_at" timestamp with time zone
);--> statement-breakpoint
CREATE INDEX "slack_notifications_due_idx" ON "slack_notifications" USING btree ("lane","created","id") WHERE sent_at is null and dead_at is null;--> statement-breakpoint
INSERT INTO "work_partitions" ("queue", "partition")
SELECT 'slack-notifications', p FROM generate_series(0, 3) AS p ON CONFLICT DO NOTHING;
