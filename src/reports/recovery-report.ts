// The recovery report over recovery_cases (kept current by refreshRecoveryCases): totals per
// currency, attribution, hold-out lift, a monthly series, and the case-level ledger as CSV.
// It reads the rollups (recovery_daily, recovery_time_hist) and, for the exact median, a few
// index entries; everything else is arithmetic on a few rows.
import type { Sql } from '../db/connection.ts';
import { ATTRIBUTION_BUCKETS, RECOVERY_DEFINITION, type AttributionBucket, type CaseState } from './definitions.ts';
import { RECOVERY_TIME_BUCKETS } from './recovery-cases.ts';
import { compareProportions, ratio } from './stats.ts';

export interface CountAmount {
  count: number;
  amount: number;
}

export interface CurrencyRecovery {
  currency: string;
  failed: CountAmount;
  recovered: CountAmount;
  lost: CountAmount;
  open: CountAmount;
  voided: CountAmount;
  /** recovered.amount / (failed.amount - voided.amount) */
  recoveryRate: number | null;
  medianHoursToRecover: number | null;
  /** recovered cases after they had been lost */
  lateRecovered: CountAmount;
  byAttribution: Record<AttributionBucket, CountAmount>;
  holdout: {
    cases: number;
    recovered: CountAmount;
    voided: CountAmount;
    failedAmount: number;
    recoveryRate: number | null;
    treated: { cases: number; recovered: CountAmount; voided: CountAmount; failedAmount: number; recoveryRate: number | null };
    /** cases with no billing-recovery run (neither treated nor hold-out) */
    withoutRun: number;
    liftPoints: number | null;
    ci95: [number, number] | null;
    pValue: number | null;
  };
}

export interface MonthlyRecovery {
  currency: string;
  /** YYYY-MM (UTC) of first failure */
  month: string;
  cases: number;
  failedAmount: number;
  voidedAmount: number;
  recoveredAmount: number;
  recoveryRate: number | null;
}

export interface RecoveryReport {
  from: string;
  to: string;
  currency: string | null;
  currencies: CurrencyRecovery[];
  monthly: MonthlyRecovery[];
  definition: string;
}

interface GroupRow {
  currency: string;
  month: string;
  state: CaseState;
  attribution: AttributionBucket | null;
  holdout: boolean;
  has_run: boolean;
  late: boolean;
  n: number;
  due: number;
  recovered: number;
}

const zero = (): CountAmount => ({ count: 0, amount: 0 });
const add = (target: CountAmount, count: number, amount: number) => {
  target.count += count;
  target.amount += amount;
};

function emptyCurrency(currency: string): CurrencyRecovery {
  return {
    currency,
    failed: zero(),
    recovered: zero(),
    lost: zero(),
    open: zero(),
    voided: zero(),
    recoveryRate: null,
    medianHoursToRecover: null,
    lateRecovered: zero(),
    byAttribution: Object.fromEntries(ATTRIBUTION_BUCKETS.map((b) => [b, zero()])) as Record<AttributionBucket, CountAmount>,
    holdout: {
      cases: 0,
      recovered: zero(),
      voided: zero(),
      failedAmount: 0,
      recoveryRate: null,
      treated: { cases: 0, recovered: zero(), voided: zero(), failedAmount: 0, recoveryRate: null },
      withoutRun: 0,
      liftPoints: null,
      ci95: null,
      pValue: null,
    },
  };
}

export async function recoveryReport(sql: Sql, params: { from: Date; to: Date; fromText: string; toText: string; currency: string | null }): Promise<RecoveryReport> {
  const { from, to, currency } = params;
  const filter = currency === null ? sql`` : sql`and currency = ${currency}`;
  // The rollups hold one row per currency, day and outcome: a report reads up to a few tens of
  // thousands of rows and folds them into months. The month is grouped by the expression the
  // extended statistics recovery_daily_groups (migration 0004) know, so the planner expects the
  // real number of groups and hashes them instead of sorting every row.
  const [groups, hist] = await Promise.all([
    sql<GroupRow[]>`
      select currency, to_char(month, 'YYYY-MM') as month, state, nullif(attribution, '') as attribution,
             holdout, has_run, late, n, due, recovered
      from (
        select currency, date_trunc('month', day at time zone 'UTC') as month, state, attribution, holdout, has_run, late,
               sum(cases)::int as n, sum(amount_due)::bigint as due, sum(amount_recovered)::bigint as recovered
        from recovery_daily
        where day >= ${from} and day < ${to} ${filter}
        group by 1, 2, 3, 4, 5, 6, 7
        having sum(cases) <> 0
      ) g`,
    sql<{ currency: string; bucket: number; n: number }[]>`
      select currency, bucket, sum(cases)::int as n
      from recovery_time_hist
      where day >= ${from} and day < ${to} ${filter}
      group by 1, 2
      having sum(cases) <> 0
      order by 1, 2`,
  ]);
  const medianOf = new Map<string, number | null>();
  await Promise.all(
    [...new Set(hist.map((h) => h.currency))].map(async (cur) => {
      medianOf.set(cur, await medianRecoveryHours(sql, cur, from, to, hist.filter((h) => h.currency === cur)));
    }),
  );

  const byCurrency = new Map<string, CurrencyRecovery>();
  const months = new Map<string, MonthlyRecovery>();
  if (currency !== null) byCurrency.set(currency, emptyCurrency(currency));
  for (const g of groups) {
    let c = byCurrency.get(g.currency);
    if (!c) byCurrency.set(g.currency, (c = emptyCurrency(g.currency)));
    add(c.failed, g.n, g.due);
    if (g.state === 'recovered') {
      add(c.recovered, g.n, g.recovered);
      if (g.late) add(c.lateRecovered, g.n, g.recovered);
      const bucket = c.byAttribution[g.attribution ?? 'stripe_retry_only'];
      add(bucket, g.n, g.recovered);
    } else {
      add(c[g.state], g.n, g.due);
    }
    const group = g.holdout ? c.holdout : g.has_run ? c.holdout.treated : null;
    if (group) {
      group.cases += g.n;
      group.failedAmount += g.due;
      if (g.state === 'recovered') add(group.recovered, g.n, g.recovered);
      if (g.state === 'voided') add(group.voided, g.n, g.due);
    } else {
      c.holdout.withoutRun += g.n;
    }
    const key = `${g.currency} ${g.month}`;
    let m = months.get(key);
    if (!m) months.set(key, (m = { currency: g.currency, month: g.month, cases: 0, failedAmount: 0, voidedAmount: 0, recoveredAmount: 0, recoveryRate: null }));
    m.cases += g.n;
    m.failedAmount += g.due;
    if (g.state === 'voided') m.voidedAmount += g.due;
    if (g.state === 'recovered') m.recoveredAmount += g.recovered;
  }

  for (const c of byCurrency.values()) {
    c.recoveryRate = ratio(c.recovered.amount, c.failed.amount - c.voided.amount);
    c.medianHoursToRecover = medianOf.get(c.currency) ?? null;
    const h = c.holdout;
    h.recoveryRate = ratio(h.recovered.amount, h.failedAmount - h.voided.amount);
    h.treated.recoveryRate = ratio(h.treated.recovered.amount, h.treated.failedAmount - h.treated.voided.amount);
    h.liftPoints = h.recoveryRate !== null && h.treated.recoveryRate !== null ? (h.treated.recoveryRate - h.recoveryRate) * 100 : null;
    const cmp = compareProportions(h.treated.recovered.count, h.treated.cases - h.treated.voided.count, h.recovered.count, h.cases - h.voided.count);
    h.ci95 = cmp ? cmp.ci95 : null;
    h.pValue = cmp ? cmp.pValue : null;
  }
  for (const m of months.values()) m.recoveryRate = ratio(m.recoveredAmount, m.failedAmount - m.voidedAmount);

  return {
    from: params.fromText,
    to: params.toText,
    currency,
    currencies: [...byCurrency.values()].sort((a, b) => a.currency.localeCompare(b.currency)),
    monthly: [...months.values()].sort((a, b) => a.currency.localeCompare(b.currency) || a.month.localeCompare(b.month)),
    definition: RECOVERY_DEFINITION,
  };
}

/**
 * The exact median recovery time of one currency's recovered cases in [from, to): the histogram
 * tells which bucket holds the middle rank(s) and how many cases lie below; the ordered index
 * on (currency, recovery_seconds) then reads only that bucket's cases.
 */
async function medianRecoveryHours(sql: Sql, currency: string, from: Date, to: Date, buckets: { bucket: number; n: number }[]): Promise<number | null> {
  const total = buckets.reduce((s, b) => s + b.n, 0);
  if (total <= 0) return null;
  const ranks = [Math.floor((total - 1) / 2), Math.ceil((total - 1) / 2)]; // 0-based middle rank(s)
  const values = new Map<number, number>();
  for (const rank of new Set(ranks)) {
    let below = 0;
    for (const b of buckets) {
      if (rank < below + b.n) {
        // width_bucket: bucket 0 is below the first bound, bucket i in [bounds[i-1], bounds[i]).
        const lo = b.bucket > 0 ? RECOVERY_TIME_BUCKETS[b.bucket - 1]! : null;
        const hi = b.bucket < RECOVERY_TIME_BUCKETS.length ? RECOVERY_TIME_BUCKETS[b.bucket]! : null;
        const [row] = await sql<{ s: number }[]>`
          select recovery_seconds as s from recovery_cases
          where state = 'recovered' and currency = ${currency}
            ${lo === null ? sql`` : sql`and recovery_seconds >= ${lo}`}
            ${hi === null ? sql`` : sql`and recovery_seconds < ${hi}`}
            and first_failed_at >= ${from} and first_failed_at < ${to}
          order by recovery_seconds
          offset ${rank - below} limit 1`;
        if (!row) throw new Error(`recovery_time_hist disagrees with recovery_cases (${currency}, bucket ${b.bucket})`);
        values.set(rank, row.s);
        break;
      }
      below += b.n;
    }
  }
  return (values.get(ranks[0]!)! + values.get(ranks[1]!)!) / 2 / 3600;
}

// ---------------------------------------------------------------------------------------------
// The case-level ledger as CSV (RFC 4180), streamed in batches.

export const LEDGER_COLUMNS = [
  'invoice',
  'customer',
  'currency',
  'amount_due',
  'amount_recovered',
  'first_failed_at',
  'recovered_at',
  'state',
  'late',
  'decline_class',
  'attempts',
  'attribution',
  'holdout',
] as const;

/** One CSV field: quoted when it holds a comma, a quote, CR or LF (quotes doubled). */
export function csvField(value: unknown): string {
  if (value === null || value === undefined) return '';
  const text = value instanceof Date ? value.toISOString() : String(value);
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

export const csvLine = (fields: unknown[]): string => `${fields.map(csvField).join(',')}\r\n`;

interface LedgerRow {
  invoice_id: string;
  customer_id: string;
  currency: string;
  amount_due: number;
  amount_recovered: number;
  first_failed_at: Date;
  recovered_at: Date | null;
  state: string;
  late: boolean;
  decline_class: string;
  attempts: number;
  attribution: string | null;
  holdout: boolean;
}

export async function* recoveryLedgerCsv(sql: Sql, params: { from: Date; to: Date; currency: string | null }): AsyncGenerator<string> {
  const filter = params.currency === null ? sql`` : sql`and currency = ${params.currency}`;
  yield csvLine([...LEDGER_COLUMNS]);
  const cursor = sql<LedgerRow[]>`
    select invoice_id, customer_id, currency, amount_due, amount_recovered, first_failed_at, recovered_at, state, late,
           decline_class, attempts, attribution, holdout
    from recovery_cases
    where first_failed_at >= ${params.from} and first_failed_at < ${params.to} ${filter}
    order by currency, first_failed_at, invoice_id`.cursor(5000);
  for await (const rows of cursor) {
    let chunk = '';
    for (const r of rows) {
      chunk += csvLine([
        r.invoice_id,
        r.customer_id,
        r.currency,
        r.amount_due,
        r.amount_recovered,
        r.first_failed_at,
        r.recovered_at,
        r.state,
        r.late,
        r.decline_class,
        r.attempts,
        r.attribution,
        r.holdout,
      ]);
    }
    yield chunk;
  }
}
