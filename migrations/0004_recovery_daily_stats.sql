-- The recovery report groups recovery_daily (one row per currency, day and outcome) by month and
-- outcome (src/reports/recovery-report.ts). Those columns are strongly correlated, so the planner
-- multiplied their distinct counts and expected as many groups as rows (34k for 42k rows over
-- 1M cases): it sorted every row on disk (work_mem) instead of hashing the ~2k real groups, 110 ms
-- of a 250 ms report. With the combined distinct count it hashes them in ~25 ms. The month
-- expression must stay the one the report groups by. (Hand-written: drizzle-kit does not model
-- extended statistics.)
CREATE STATISTICS "recovery_daily_groups" (ndistinct)
  ON "currency", "state", "attribution", "holdout", "has_run", "late", (date_trunc('month', "day" AT TIME ZONE 'UTC'))
  FROM "recovery_daily";
