CREATE TABLE "recovery_cases" (
	"invoice_id" text PRIMARY KEY NOT NULL,
	"customer_id" text NOT NULL,
	"subscription_id" text,
	"currency" text NOT NULL,
	"amount_due" bigint NOT NULL,
	"first_failed_at" timestamp with time zone NOT NULL,
	"decline_class" text NOT NULL,
	"attempts" integer NOT NULL,
	"state" text NOT NULL,
	"amount_recovered" bigint DEFAULT 0 NOT NULL,
	"recovered_at" timestamp with time zone,
	"lost_at" timestamp with time zone,
	"voided_at" timestamp with time zone,
	"late" boolean DEFAULT false NOT NULL,
	"attribution" text,
	"holdout" boolean DEFAULT false NOT NULL,
	"run_id" bigint,
	"recovery_seconds" bigint,
	"computed_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
CREATE TABLE "recovery_daily" (
	"currency" text NOT NULL,
	"day" timestamp with time zone NOT NULL,
	"state" text NOT NULL,
	"attribution" text DEFAULT '' NOT NULL,
	"holdout" boolean NOT NULL,
	"has_run" boolean NOT NULL,
	"late" boolean NOT NULL,
	"cases" integer NOT NULL,
	"amount_due" bigint NOT NULL,
	"amount_recovered" bigint NOT NULL,
	CONSTRAINT "recovery_daily_currency_day_state_attribution_holdout_has_run_late_pk" PRIMARY KEY("currency","day","state","attribution","holdout","has_run","late")
);
--> statement-breakpoint
CREATE TABLE "recovery_dirty" (
	"invoice_id" text PRIMARY KEY NOT NULL,
	"marked_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
CREATE TABLE "recovery_refresh_cursors" (
	"source" text PRIMARY KEY NOT NULL,
	"last_id" bigint NOT NULL,
	"updated_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
CREATE TABLE "recovery_refresh_gaps" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"source" text NOT NULL,
	"lo" bigint NOT NULL,
	"hi" bigint NOT NULL,
	"noted_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
CREATE TABLE "recovery_time_hist" (
	"currency" text NOT NULL,
	"day" timestamp with time zone NOT NULL,
	"bucket" integer NOT NULL,
	"cases" integer NOT NULL,
	CONSTRAINT "recovery_time_hist_currency_day_bucket_pk" PRIMARY KEY("currency","day","bucket")
);
--> statement-breakpoint
CREATE INDEX "recovery_cases_cohort_idx" ON "recovery_cases" USING btree ("first_failed_at","currency");--> statement-breakpoint
CREATE INDEX "recovery_cases_customer_idx" ON "recovery_cases" USING btree ("customer_id");--> statement-breakpoint
CREATE INDEX "recovery_cases_subscription_idx" ON "recovery_cases" USING btree ("subscription_id");--> statement-breakpoint
CREATE INDEX "recovery_cases_recovery_time_idx" ON "recovery_cases" USING btree ("currency","recovery_seconds","first_failed_at") WHERE state = 'recovered';--> statement-breakpoint
CREATE INDEX "recovery_refresh_gaps_source_idx" ON "recovery_refresh_gaps" USING btree ("source","lo");--> statement-breakpoint
-- Rollups of recovery_cases, kept by statement-level triggers (hand-written: drizzle-kit does not
-- model triggers). Whoever writes recovery_cases, in whatever batch size, recovery_daily and
-- recovery_time_hist stay equal to an aggregate of it, in the same transaction. The bucket
-- bounds repeat RECOVERY_TIME_BUCKETS (src/reports/recovery-cases.ts).
CREATE FUNCTION "recovery_cases_rollup"() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  sign int := TG_ARGV[0]::int;
BEGIN
  INSERT INTO recovery_daily (currency, day, state, attribution, holdout, has_run, late, cases, amount_due, amount_recovered)
  SELECT currency, date_trunc('day', first_failed_at, 'UTC'), state, coalesce(attribution, ''), holdout, run_id IS NOT NULL, late,
         sign * count(*)::int, sign * sum(amount_due)::bigint, sign * sum(amount_recovered)::bigint
  FROM changed_rows
  GROUP BY 1, 2, 3, 4, 5, 6, 7
  ON CONFLICT (currency, day, state, attribution, holdout, has_run, late) DO UPDATE SET
    cases = recovery_daily.cases + excluded.cases,
    amount_due = recovery_daily.amount_due + excluded.amount_due,
    amount_recovered = recovery_daily.amount_recovered + excluded.amount_recovered;
  INSERT INTO recovery_time_hist (currency, day, bucket, cases)
  SELECT currency, date_trunc('day', first_failed_at, 'UTC'),
         width_bucket(recovery_seconds, ARRAY[3600,7200,10800,21600,43200,64800,86400,129600,172800,216000,259200,345600,432000,518400,604800,777600,950400,1209600,1814400,2592000,3888000,5184000,7776000,15552000,31536000]::bigint[]),
         sign * count(*)::int
  FROM changed_rows
  WHERE state = 'recovered' AND recovery_seconds IS NOT NULL
  GROUP BY 1, 2, 3
  ON CONFLICT (currency, day, bucket) DO UPDATE SET cases = recovery_time_hist.cases + excluded.cases;
  IF sign < 0 THEN
    -- rows taken out may leave empty groups: drop them (only the groups this statement touched)
    DELETE FROM recovery_daily d
    USING (SELECT DISTINCT currency, date_trunc('day', first_failed_at, 'UTC') AS day FROM changed_rows) k
    WHERE d.currency = k.currency AND d.day = k.day AND d.cases = 0;
    DELETE FROM recovery_time_hist h
    USING (SELECT DISTINCT currency, date_trunc('day', first_failed_at, 'UTC') AS day FROM changed_rows) k
    WHERE h.currency = k.currency AND h.day = k.day AND h.cases = 0;
  END IF;
  RETURN NULL;
END
$$;
--> statement-breakpoint
CREATE FUNCTION "recovery_cases_rollup_truncate"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  TRUNCATE recovery_daily, recovery_time_hist;
  RETURN NULL;
END
$$;
--> statement-breakpoint
CREATE TRIGGER "recovery_cases_rollup_insert" AFTER INSERT ON "recovery_cases" REFERENCING NEW TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION "recovery_cases_rollup"('1');
--> statement-breakpoint
CREATE TRIGGER "recovery_cases_rollup_delete" AFTER DELETE ON "recovery_cases" REFERENCING OLD TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION "recovery_cases_rollup"('-1');
--> statement-breakpoint
CREATE TRIGGER "recovery_cases_rollup_update_old" AFTER UPDATE ON "recovery_cases" REFERENCING OLD TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION "recovery_cases_rollup"('-1');
--> statement-breakpoint
CREATE TRIGGER "recovery_cases_rollup_update_new" AFTER UPDATE ON "recovery_cases" REFERENCING NEW TABLE AS changed_rows FOR EACH STATEMENT EXECUTE FUNCTION "recovery_cases_rollup"('1');
--> statement-breakpoint
CREATE TRIGGER "recovery_cases_rollup_truncate" AFTER TRUNCATE ON "recovery_cases" FOR EACH STATEMENT EXECUTE FUNCTION "recovery_cases_rollup_truncate"();
