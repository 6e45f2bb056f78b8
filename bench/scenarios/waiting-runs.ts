// Due work among many waiting runs: the engine keeps timers in workflow_runs.due_at (an indexed
// column) and a tick hands only the due runs to pg-boss, so waking 1k due runs should cost the
// same whether 1k or 1M other runs wait far in the future. Measured on the real service: a
// Lifeline ROLE=worker child (its own tick, pg-boss queue and advanceDue), with the runs
// generated in SQL by bench/lib/generators.ts.
//
// Per population (baseline: 1k waiting + 1k due; then 1M waiting + 1k due):
//  1. generate contacts and billing-recovery runs waiting on a timer (the 1k to be woken are
//     spread through the table, waiting like the others), then VACUUM ANALYZE (what autovacuum
//     would do, and so that it does not start during the measurements; the due-work plan is also
//     checked before it: with no statistics yet the planner must still use the due index);
//  2. start the worker and let it settle;
//  3. tick alone: in a transaction that is rolled back, make the 1k runs due and time the tick's
//     due-work statement (EXPLAIN ANALYZE shows which index it used);
//  4. make the 1k runs due (commit) and wait until every one has moved on to its next step (a
//     send, then the next timer). Timed from the tick that picked them up (the pg-boss jobs'
//     created_on, the tick transaction's start) to the last run's updated_at, both stamped by the
//     product, so the phase of the 1 s tick does not enter the figure; repeated REPS times (each
//     repetition wakes the runs at their next timer), median.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { BenchContext, Scenario } from '../lib/context.ts';
import type { ChildServer } from '../lib/child.ts';
import { cpuMeter, describeCpu, type CpuShare } from '../lib/cpu.ts';
import { insertWaitingRuns } from '../lib/generators.ts';
import { fmt, median, NOISY_OTHER_CORES, progress, sleep } from '../lib/log.ts';

const S = 'waiting-runs';
const DUE = 1000;
/** BENCH_WAITING_RUNS overrides the large population (for quick development runs). */
const WAITING = Number(process.env.BENCH_WAITING_RUNS ?? 1_000_000);
const BASELINE_WAITING = 1000;
/** wake-ups per population (each moves the runs one step on: soft_wait_1 → soft_2 → soft_wait_2 …) */
const REPS = 3;
/** timed executions of the tick statement (each in a savepoint that is rolled back) */
const TICK_SAMPLES = 20;
const WAKE_LIMIT_MS = 180_000;
/** where the 1k runs wait until they are made due (the waiting population is due in 1–180 days) */
const PARKED = new Date(Date.now() + 3650 * 86_400_000);

/**
 * The tick's due-work statement, as in tick() in src/workflows/due-runs.ts (keep them equal): the
 * due runs not handed over in the last 5 minutes, oldest first, marked as queued.
 */
const TICK_STATEMENT = `
  with due as (
    select id from workflow_runs
    where status = 'active' and due_at <= $1 and (queued_at is null or queued_at < $2)
    order by due_at limit 1000 for update skip locked)
  update workflow_runs r set queued_at = $1 from due where r.id = due.id
  returning r.id, r.due_at`;

interface PlanNode {
  'Node Type': string;
  'Index Name'?: string;
  'Relation Name'?: string;
  'Actual Rows'?: number;
  'Actual Total Time'?: number;
  Plans?: PlanNode[];
}

function planNodes(node: PlanNode): PlanNode[] {
  return [node, ...(node.Plans ?? []).flatMap(planNodes)];
}

/**
 * How the due runs were found: the scan of workflow_runs that feeds the CTE (not the primary-key
 * lookups of the UPDATE), with the index it used (a Bitmap Heap Scan names it on its child).
 */
function describeDueScan(plan: PlanNode): { text: string; usesDueIndex: boolean } {
  const isDueScan = (n: PlanNode) => /Scan/.test(n['Node Type']) && n['Index Name'] !== 'workflow_runs_pkey' && (n['Relation Name'] === 'workflow_runs' || n['Node Type'] === 'Bitmap Index Scan');
  const scan = planNodes(plan).find((n) => isDueScan(n) && n['Relation Name'] === 'workflow_runs');
  if (!scan) return { text: 'no scan of workflow_runs found in the plan', usesDueIndex: false };
  const index = scan['Index Name'] ?? planNodes(scan).find((n) => n['Index Name'])?.['Index Name'];
  const rows = scan['Actual Rows'] !== undefined ? `, ${fmt(scan['Actual Rows'])} rows in ${fmt(scan['Actual Total Time'] ?? 0, 2)} ms` : '';
  return { text: `${scan['Node Type']}${index ? ` on ${index}` : ''}${rows}`, usesDueIndex: index === 'workflow_runs_due_idx' };
}

interface PopulationResult {
  waiting: number;
  /** tick statement, median ms */
  tickMs: number;
  plan: string;
  usesDueIndex: boolean;
  planBeforeAnalyze: string;
  /** tick → last run advanced, per repetition, ms (product timestamps) */
  wakeMs: number[];
  /** commit of "due" → last run seen advanced by the bench (includes the tick phase), ms */
  wallMs: number[];
  cpu: (CpuShare | null)[];
  generateSec: number;
}

async function truncateRuns(ctx: BenchContext): Promise<void> {
  // contacts cascade to customers and account_members: scenarios do not share data.
  await ctx.sql`truncate workflow_runs, run_trace, messages, message_events, webhook_deliveries, segment_memberships, scheduled_entries, contacts cascade`;
}

/** Make the runs due now: due_at and the timer in their state, as the engine would have written them. */
function makeDue(db: { unsafe: BenchContext['sql']['unsafe'] }, ids: number[], at: Date) {
  return db.unsafe(
    `update workflow_runs set due_at = $2, state = jsonb_set(state, '{wait,until}', to_jsonb($3::text)) where id = any($1::bigint[])`,
    [ids as never, at as never, at.toISOString()],
  );
}

async function tickAlone(ctx: BenchContext, ids: number[]): Promise<{ ms: number; plan: PlanNode }> {
  let plan: PlanNode | null = null;
  const times: number[] = [];
  const rollback = new Error('rollback');
  await ctx.sql
    .begin(async (tx) => {
      const now = new Date();
      await makeDue(tx, ids, new Date(now.getTime() - 1000));
      const args = [now, new Date(now.getTime() - 5 * 60_000)] as never[];
      for (let i = 0; i <= TICK_SAMPLES; i++) {
        await tx
          .savepoint(async (sp) => {
            if (i === 0) {
              const [row] = await sp.unsafe(`explain (analyze, format json) ${TICK_STATEMENT}`, args);
              plan = (row!['QUERY PLAN'] as { Plan: PlanNode }[])[0]!.Plan;
            } else {
              const t0 = performance.now();
              const rows = await sp.unsafe(TICK_STATEMENT, args);
              times.push(performance.now() - t0);
              if (rows.length !== ids.length) throw new Error(`tick statement found ${rows.length} due runs, expected ${ids.length}`);
            }
            throw rollback;
          })
          .catch((err: unknown) => {
            if (err !== rollback) throw err;
          });
      }
      throw rollback;
    })
    .catch((err: unknown) => {
      if (err !== rollback) throw err;
    });
  return { ms: median(times), plan: plan! };
}

async function explainDue(ctx: BenchContext): Promise<string> {
  // Nothing is due yet: this shows the access path the planner picks for the due-work query.
  const now = new Date();
  const [row] = await ctx.sql.unsafe(`explain (format json) ${TICK_STATEMENT}`, [now, new Date(now.getTime() - 5 * 60_000)] as never[]);
  return describeDueScan((row!['QUERY PLAN'] as { Plan: PlanNode }[])[0]!.Plan).text;
}

/** Wake the runs once: make them due, wait until all moved on; times from the product's own stamps. */
async function wake(ctx: BenchContext, worker: ChildServer, ids: number[], label: string): Promise<{ wakeMs: number; wallMs: number; cpu: CpuShare | null }> {
  const { sql } = ctx;
  // The database's clock before the runs become due: every job the tick creates for them is newer.
  const [clock] = await sql<{ at: Date }[]>`select now() as at`;
  const before = clock!.at;
  const dueAt = new Date(before.getTime() - 1000);
  const meter = cpuMeter(worker.pid);
  const t0 = performance.now();
  await makeDue(sql, ids, dueAt);
  let moved = 0;
  for (;;) {
    const [row] = await sql<{ n: number }[]>`
      select count(*)::int as n from workflow_runs
      where id = any(${ids}::bigint[]) and (status <> 'active' or due_at is null or due_at > ${before})`;
    moved = row!.n;
    if (moved >= ids.length) break;
    if (performance.now() - t0 > WAKE_LIMIT_MS) throw new Error(`${label}: only ${moved} of ${ids.length} due runs advanced after ${WAKE_LIMIT_MS / 1000}s`);
    await sleep(50);
  }
  const wallMs = performance.now() - t0;
  const cpu = meter();
  const [stamps] = await sql<{ tick: Date | null; last: Date; jobs: number }[]>`
    select (select min(created_on) from pgboss.job
            where name = 'workflow.due' and created_on >= ${before} and (data->>'runId')::bigint = any(${ids}::bigint[])) as tick,
           (select count(*)::int from pgboss.job
            where name = 'workflow.due' and created_on >= ${before} and (data->>'runId')::bigint = any(${ids}::bigint[])) as jobs,
           (select max(updated_at) from workflow_runs where id = any(${ids}::bigint[])) as last`;
  const wakeMs = stamps!.tick ? stamps!.last.getTime() - stamps!.tick.getTime() : wallMs;
  progress(S, `${label}: ${fmt(ids.length)} due runs advanced ${fmt(wakeMs)} ms after the tick picked them up (${fmt(stamps!.jobs)} jobs; ${fmt(wallMs)} ms from due to seen); ${describeCpu(cpu)}`);
  return { wakeMs, wallMs, cpu };
}

async function population(ctx: BenchContext, waiting: number, outboxDir: string): Promise<PopulationResult> {
  const { sql } = ctx;
  const label = waiting === BASELINE_WAITING ? 'baseline' : `${fmt(waiting)} waiting`;
  await truncateRuns(ctx);
  const g0 = performance.now();
  const ids = await insertWaitingRuns(sql, { waiting, due: DUE, dueAt: PARKED, tag: `w${waiting}` });
  const generateSec = (performance.now() - g0) / 1000;
  progress(S, `${label}: generated ${fmt(waiting + DUE)} contacts and billing-recovery runs (${fmt(DUE)} to be woken) in ${generateSec.toFixed(1)} s`);
  const planBeforeAnalyze = await explainDue(ctx);
  // VACUUM ANALYZE: the statistics, and the vacuum autovacuum would otherwise start on the
  // freshly loaded tables in the middle of the measurements (a steady state, not a bulk load).
  const a0 = performance.now();
  await sql`vacuum (analyze) workflow_runs, contacts`;
  progress(S, `${label}: due-work plan before ANALYZE: ${planBeforeAnalyze}; VACUUM ANALYZE took ${fmt(performance.now() - a0)} ms`);
  await ctx.settle();

  const worker = await ctx.startChild('lifeline ROLE=worker', 'server-child.ts', { ROLE: 'worker', LIFELINE_OUTBOX_DIR: outboxDir });
  try {
    await sleep(2000); // first tick, queue workers polling

    const tick = await tickAlone(ctx, ids);
    const scan = describeDueScan(tick.plan);
    progress(S, `${label}: tick statement (1k due) ${tick.ms.toFixed(2)} ms median of ${TICK_SAMPLES}; plan: ${scan.text}`);

    const wakeMs: number[] = [];
    const wallMs: number[] = [];
    const cpu: (CpuShare | null)[] = [];
    for (let rep = 1; rep <= REPS; rep++) {
      await ctx.settle();
      const w = await wake(ctx, worker, ids, `${label}, wake-up ${rep} of ${REPS}`);
      wakeMs.push(w.wakeMs);
      wallMs.push(w.wallMs);
      cpu.push(w.cpu);
      ctx.report.phase(S, `${label}: wake ${fmt(DUE)} due runs (${rep} of ${REPS})`, w.cpu, { waiting, wakeMs: w.wakeMs, wallMs: w.wallMs });
    }
    return { waiting, tickMs: tick.ms, plan: scan.text, usesDueIndex: scan.usesDueIndex, planBeforeAnalyze, wakeMs, wallMs, cpu, generateSec };
  } finally {
    await worker.stop({ graceful: false });
  }
}

export const waitingRuns: Scenario = {
  name: S,
  description: `one due-work tick and waking ${fmt(DUE)} due runs with ${fmt(WAITING)} runs waiting far in the future, against ${fmt(BASELINE_WAITING)} waiting`,
  async run(ctx) {
    const { report } = ctx;
    const outboxDir = await mkdtemp(path.join(tmpdir(), 'lifeline-bench-outbox-'));
    try {
      const base = await population(ctx, BASELINE_WAITING, outboxDir);
      const big = await population(ctx, WAITING, outboxDir);
      await truncateRuns(ctx);

      const noisy = [...base.cpu, ...big.cpu].some((c) => (c?.other ?? 0) > NOISY_OTHER_CORES);
      const basis = `median of ${REPS} wake-ups each${noisy ? '; NOISY: outside load during some wake-ups' : ''}`;
      const bw = median(base.wakeMs);
      const vw = median(big.wakeMs);
      report.ratioAtMost(S, `wake ${fmt(DUE)} due runs (tick → last run advanced), ${fmt(WAITING)} waiting vs ${fmt(BASELINE_WAITING)} waiting (${basis})`, vw, 'ms', bw, 2);
      report.info(S, `  same, per due run, ${fmt(WAITING)} waiting`, vw / DUE, 'ms');
      report.info(S, `  due → all ${fmt(DUE)} seen advanced, incl. up to one tick interval (median), ${fmt(WAITING)} waiting`, median(big.wallMs), 'ms');
      report.ratioAtMost(
        S,
        `tick's due-work statement with ${fmt(DUE)} due, ${fmt(WAITING)} waiting vs ${fmt(BASELINE_WAITING)} (plan: ${big.plan}; baseline: ${base.plan})`,
        big.tickMs,
        'ms',
        base.tickMs,
        2,
      );
      if (!big.usesDueIndex) report.note(`${S}: the tick's due-work statement did not use workflow_runs_due_idx with ${fmt(WAITING)} waiting runs (${big.plan})`);
      if (!/workflow_runs_due_idx/.test(big.planBeforeAnalyze)) {
        report.note(`${S}: before ANALYZE (fresh bulk insert), the due-work plan was ${big.planBeforeAnalyze}`);
      }
    } finally {
      await rm(outboxDir, { recursive: true, force: true });
    }
  },
};
