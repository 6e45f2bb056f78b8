// GET /v1/reports/recovery over a ledger of 1M recovery cases in three currencies (usd, eur,
// jpy) and 18 months of history. The cases are generated straight into recovery_cases (one
// INSERT … SELECT, bench/lib/generators.ts); its statement-level triggers build the rollups the
// report reads, as they do for the product's own writes. The source tables the report's refresh
// reads are emptied first, so that refresh has nothing to recompute: this measures the report,
// not a first ledger build.
//
// Phases: bulk load → rollups checked against an aggregate of the ledger → one report call right
// after the load (nothing vacuumed or analyzed yet, like right after a bulk rebuild) → VACUUM
// ANALYZE (what autovacuum does soon after a bulk insert; steady state) → a fresh ROLE=api
// process: its first call (cold) and CALLS timed calls → the answer checked against SQL
// aggregates → the CSV ledger once.
import type { BenchContext, Scenario } from '../lib/context.ts';
import { cpuMeter, describeCpu } from '../lib/cpu.ts';
import { insertRecoveryCases } from '../lib/generators.ts';
import { fmt, median, NOISY_OTHER_CORES, progress } from '../lib/log.ts';
import { ADMIN_TOKEN } from '../lib/payloads.ts';
// The report's own type: the JSON the bench checks is what the route serializes.
import type { RecoveryReport } from '../../src/reports/recovery-report.ts';

const S = 'recovery-report';
/** BENCH_RECOVERY_CASES overrides the ledger size (for quick development runs). */
const CASES = Number(process.env.BENCH_RECOVERY_CASES ?? 1_000_000);
const DAYS = 540;
const CALLS = 40;
const TARGET_MS = 500;

const ROLLUP_TABLES = ['recovery_cases', 'recovery_daily', 'recovery_time_hist'];

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)]!;
}

async function get(url: string, accept = 'application/json'): Promise<{ ms: number; status: number; body: string }> {
  const t0 = performance.now();
  const res = await fetch(url, { headers: { authorization: `Bearer ${ADMIN_TOKEN}`, accept } });
  const body = await res.text();
  return { ms: performance.now() - t0, status: res.status, body };
}

/** The report's figures recomputed from recovery_cases with plain SQL; returns the mismatches. */
async function verify(ctx: BenchContext, report: RecoveryReport): Promise<string[]> {
  const rows = await ctx.sql<
    { currency: string; n: number; due: number; rec_n: number; rec_amount: number; lost_n: number; lost_due: number; open_n: number; open_due: number;
      void_n: number; void_due: number; holdout: number; median_h: number | null }[]
  >`
    select currency, count(*)::int as n, sum(amount_due)::float8 as due,
           count(*) filter (where state = 'recovered')::int as rec_n, coalesce(sum(amount_recovered) filter (where state = 'recovered'), 0)::float8 as rec_amount,
           count(*) filter (where state = 'lost')::int as lost_n, coalesce(sum(amount_due) filter (where state = 'lost'), 0)::float8 as lost_due,
           count(*) filter (where state = 'open')::int as open_n, coalesce(sum(amount_due) filter (where state = 'open'), 0)::float8 as open_due,
           count(*) filter (where state = 'voided')::int as void_n, coalesce(sum(amount_due) filter (where state = 'voided'), 0)::float8 as void_due,
           count(*) filter (where holdout)::int as holdout,
           (percentile_cont(0.5) within group (order by recovery_seconds) filter (where state = 'recovered')) / 3600 as median_h
    from recovery_cases group by currency order by currency`;
  const problems: string[] = [];
  const eq = (what: string, got: number | null | undefined, want: number | null) => {
    const ok = got === want || (got != null && want !== null && Math.abs(got - want) <= 1e-9 * Math.max(1, Math.abs(want)));
    if (!ok) problems.push(`${what}: report ${got}, SQL ${want}`);
  };
  if (report.currencies.length !== rows.length) problems.push(`currencies: report ${report.currencies.map((c) => c.currency).join(',')}, SQL ${rows.map((r) => r.currency).join(',')}`);
  for (const r of rows) {
    const c = report.currencies.find((x) => x.currency === r.currency);
    if (!c) continue;
    const k = r.currency;
    eq(`${k} failed.count`, c.failed.count, r.n);
    eq(`${k} failed.amount`, c.failed.amount, r.due);
    eq(`${k} recovered.count`, c.recovered.count, r.rec_n);
    eq(`${k} recovered.amount`, c.recovered.amount, r.rec_amount);
    eq(`${k} lost.count`, c.lost.count, r.lost_n);
    eq(`${k} lost.amount`, c.lost.amount, r.lost_due);
    eq(`${k} open.count`, c.open.count, r.open_n);
    eq(`${k} open.amount`, c.open.amount, r.open_due);
    eq(`${k} voided.count`, c.voided.count, r.void_n);
    eq(`${k} voided.amount`, c.voided.amount, r.void_due);
    eq(`${k} holdout.cases`, c.holdout.cases, r.holdout);
    eq(`${k} medianHoursToRecover`, c.medianHoursToRecover, r.median_h);
    const attr = Object.values(c.byAttribution).reduce((s, b) => ({ count: s.count + b.count, amount: s.amount + b.amount }), { count: 0, amount: 0 });
    eq(`${k} sum of byAttribution counts`, attr.count, r.rec_n);
    eq(`${k} sum of byAttribution amounts`, attr.amount, r.rec_amount);
    const months = report.monthly.filter((m) => m.currency === k);
    eq(`${k} sum of monthly cases`, months.reduce((s, m) => s + m.cases, 0), r.n);
    eq(`${k} sum of monthly recovered amounts`, months.reduce((s, m) => s + m.recoveredAmount, 0), r.rec_amount);
  }
  return problems;
}

/** The rollups equal an aggregate of the ledger (the triggers kept them through the bulk load). */
async function checkRollups(ctx: BenchContext): Promise<string[]> {
  const diff = await ctx.sql<{ what: string; currency: string }[]>`
    with d as (select currency, sum(cases)::bigint as n, sum(amount_due)::bigint as due, sum(amount_recovered)::bigint as rec from recovery_daily group by 1),
         c as (select currency, count(*)::bigint as n, sum(amount_due)::bigint as due, sum(amount_recovered)::bigint as rec from recovery_cases group by 1),
         h as (select currency, sum(cases)::bigint as n from recovery_time_hist group by 1),
         r as (select currency, count(*)::bigint as n from recovery_cases where state = 'recovered' group by 1)
    select 'recovery_daily' as what, coalesce(d.currency, c.currency) as currency from d full join c using (currency)
    where d.n is distinct from c.n or d.due is distinct from c.due or d.rec is distinct from c.rec
    union all
    select 'recovery_time_hist', coalesce(h.currency, r.currency) from h full join r using (currency) where h.n is distinct from r.n`;
  return diff.map((d) => `${d.what} disagrees with recovery_cases for ${d.currency}`);
}

async function timedCalls(url: string, n: number): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const r = await get(url);
    if (r.status !== 200) throw new Error(`GET ${url}: ${r.status} ${r.body.slice(0, 200)}`);
    times.push(r.ms);
  }
  return times.sort((a, b) => a - b);
}

export const recoveryReport: Scenario = {
  name: S,
  description: `GET /v1/reports/recovery over ${fmt(CASES)} recovery cases in 3 currencies (target < ${TARGET_MS} ms)`,
  async run(ctx) {
    const { sql, report } = ctx;
    // A clean ledger with nothing for the refresh to pick up (earlier scenarios leave facts behind).
    await sql`truncate recovery_cases, recovery_dirty, recovery_refresh_cursors, recovery_refresh_gaps, domain_events, payment_failures, message_events, run_trace`;
    // No autovacuum in the middle of the phases below: the VACUUM ANALYZE is done explicitly.
    for (const t of ROLLUP_TABLES) await sql.unsafe(`alter table ${t} set (autovacuum_enabled = off)`);
    try {
      await ctx.settle();
      const t0 = performance.now();
      await insertRecoveryCases(sql, { count: CASES, days: DAYS });
      const loadSec = (performance.now() - t0) / 1000;
      const [size] = await sql<{ cases: number; daily: number; hist: number; first: string }[]>`
        select (select count(*)::int from recovery_cases) as cases, (select count(*)::int from recovery_daily) as daily,
               (select count(*)::int from recovery_time_hist) as hist,
               (select to_char(min(first_failed_at) at time zone 'UTC', 'YYYY-MM-DD') from recovery_cases) as first`;
      progress(S, `${fmt(size!.cases)} cases inserted in ${loadSec.toFixed(1)} s (one INSERT; the triggers wrote ${fmt(size!.daily)} recovery_daily and ${fmt(size!.hist)} recovery_time_hist rows)`);
      report.info(S, `bulk load: ${fmt(CASES)} cases in one INSERT … SELECT, rollup triggers included`, loadSec, 's');
      const rollupProblems = await checkRollups(ctx);
      if (rollupProblems.length) for (const p of rollupProblems) report.note(`${S}: ${p}`);
      else progress(S, 'rollups (recovery_daily, recovery_time_hist) equal an aggregate of recovery_cases');

      const tomorrow = new Date(Date.now() + 86_400_000).toISOString().slice(0, 10);
      const from = size!.first;
      const path = `/v1/reports/recovery?from=${from}&to=${tomorrow}`;

      // Right after the bulk load: no statistics, no visibility map.
      let svc = await ctx.startLifeline('api');
      try {
        const r = await get(svc.url + path);
        if (r.status !== 200) throw new Error(`GET ${path}: ${r.status} ${r.body.slice(0, 300)}`);
        progress(S, `first report right after the bulk load (not vacuumed or analyzed yet): ${fmt(r.ms)} ms`);
        report.info(S, 'report right after the bulk load (before VACUUM/ANALYZE), first call', r.ms, 'ms');
      } finally {
        await svc.stop();
      }

      const v0 = performance.now();
      await sql.unsafe(`vacuum (analyze) ${ROLLUP_TABLES.join(', ')}`);
      progress(S, `VACUUM ANALYZE of the ledger and rollups: ${fmt(performance.now() - v0)} ms`);
      await ctx.settle();

      svc = await ctx.startLifeline('api');
      try {
        const cold = await get(svc.url + path);
        if (cold.status !== 200) throw new Error(`GET ${path}: ${cold.status} ${cold.body.slice(0, 300)}`);
        progress(S, `cold first call (fresh ROLE=api process): ${fmt(cold.ms)} ms, ${fmt(cold.body.length)} bytes`);

        const meter = cpuMeter(svc.pid);
        const times = await timedCalls(svc.url + path, CALLS);
        const cpu = meter();
        const p50 = median(times);
        const p99 = percentile(times, 0.99);
        const noisy = (cpu?.other ?? 0) > NOISY_OTHER_CORES ? ' (NOISY: outside load)' : '';
        progress(S, `${CALLS} sequential calls, from=${from} to=${tomorrow} (all ${fmt(CASES)} cases): p50 ${fmt(p50, 1)} ms, p99 ${fmt(p99, 1)} ms, max ${fmt(times[times.length - 1]!, 1)} ms; ${describeCpu(cpu)}`);
        report.phase(S, `GET /v1/reports/recovery x${CALLS}, all ${fmt(CASES)} cases`, cpu, { p50, p99 });
        report.info(S, 'cold first call (fresh ROLE=api process, after VACUUM ANALYZE)', cold.ms, 'ms');
        report.atMost(S, `p50 latency, all ${fmt(CASES)} cases, 3 currencies, ${CALLS} calls${noisy}`, p50, 'ms', TARGET_MS);
        report.atMost(S, `p99 latency, same calls${noisy}`, p99, 'ms', TARGET_MS);

        // One month, one currency: the common dashboard query.
        const month = new Date(Date.now() - 45 * 86_400_000).toISOString().slice(0, 7);
        const next = new Date(Date.UTC(Number(month.slice(0, 4)), Number(month.slice(5, 7)), 1)).toISOString().slice(0, 10);
        const narrow = await timedCalls(`${svc.url}/v1/reports/recovery?from=${month}-01&to=${next}&currency=usd`, 10);
        report.info(S, `one month, usd only (${month}): p50 of 10 calls`, median(narrow), 'ms');

        const problems = await verify(ctx, JSON.parse(cold.body) as RecoveryReport);
        if (problems.length) {
          report.note(`${S}: the report disagrees with a SQL aggregate of recovery_cases: ${problems.slice(0, 6).join('; ')}${problems.length > 6 ? ` (+${problems.length - 6} more)` : ''}`);
          progress(S, `MISMATCH: ${problems.join('; ')}`);
        } else {
          progress(S, 'report checked: per-currency counts and amounts per state, hold-out cases, exact median, attribution and monthly sums equal SQL aggregates of recovery_cases');
        }

        // The case-level ledger as CSV, once: every row streamed and summed here.
        const c0 = performance.now();
        const res = await fetch(`${svc.url}${path}&format=csv`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
        if (res.status !== 200 || !res.body) throw new Error(`CSV ledger: ${res.status}`);
        const decoder = new TextDecoder();
        let rest = '';
        let lines = 0;
        let bytes = 0;
        const dueByCurrency = new Map<string, number>();
        const take = (line: string) => {
          if (lines++ === 0 || line === '') return; // header
          const f = line.split(',');
          dueByCurrency.set(f[2]!, (dueByCurrency.get(f[2]!) ?? 0) + Number(f[3]));
        };
        for await (const chunk of res.body) {
          bytes += chunk.byteLength;
          const text = rest + decoder.decode(chunk, { stream: true });
          const parts = text.split('\r\n');
          rest = parts.pop()!;
          for (const line of parts) take(line);
        }
        if (rest) take(rest);
        const csvSec = (performance.now() - c0) / 1000;
        const rowsCsv = lines - 1;
        progress(S, `CSV ledger: ${fmt(rowsCsv)} rows, ${fmt(bytes / 1e6, 1)} MB in ${csvSec.toFixed(1)} s`);
        report.info(S, `CSV ledger (?format=csv), all ${fmt(rowsCsv)} rows streamed`, csvSec, 's');
        const totals = JSON.parse(cold.body) as RecoveryReport;
        for (const c of totals.currencies) {
          if (dueByCurrency.get(c.currency) !== c.failed.amount) report.note(`${S}: CSV ledger amount_due for ${c.currency} sums to ${dueByCurrency.get(c.currency)}, the JSON report says ${c.failed.amount}`);
        }
        if (rowsCsv !== CASES) report.note(`${S}: the CSV ledger has ${rowsCsv} rows, expected ${CASES}`);
      } finally {
        await svc.stop();
      }
    } finally {
      for (const t of ROLLUP_TABLES) await sql.unsafe(`alter table ${t} reset (autovacuum_enabled)`).catch(() => {});
      await sql`truncate recovery_cases`;
    }
  },
};
