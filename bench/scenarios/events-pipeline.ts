// Product events end to end: 2,000 users × 10 track events (users share 200 accounts) through
// POST /v1/batch (100 per request, 4 concurrent clients) until every event is on the timeline
// (domain_events) and consumed by the workflow engine (engine_processed_at set), with the
// service's inbox lanes and engine running in the same process (ROLE=all). Baseline: the same
// rows as 100-row INSERTs into a plain table from 4 concurrent clients, in the same run.
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import postgres from 'postgres';
import { cpuMeter, describeCpu } from '../lib/cpu.ts';
import type { Scenario } from '../lib/context.ts';
import { fmt, progress, sleep } from '../lib/log.ts';
import { BASELINE_PRODUCT_TABLE, WRITE_KEY } from '../lib/payloads.ts';

const S = 'events-pipeline';
const USERS = 2000;
const EVENTS_PER_USER = 10;
const ACCOUNTS = 200;
const PER_REQUEST = 100;
const CLIENTS = 4;
const TOTAL = USERS * EVENTS_PER_USER;

interface Track {
  type: 'track';
  messageId: string;
  userId: string;
  event: string;
  properties: Record<string, unknown>;
  context: Record<string, unknown>;
  timestamp: string;
}

/** Round-major: each request carries 100 different users; a user's events arrive in order. */
function requests(run: string): Track[][] {
  const all: Track[] = [];
  const base = Date.now() - TOTAL;
  for (let round = 0; round < EVENTS_PER_USER; round++) {
    for (let u = 0; u < USERS; u++) {
      const i = round * USERS + u;
      all.push({
        type: 'track',
        messageId: `pipe_${run}_${i}`,
        userId: `pipe_${run}_user_${u}`,
        event: ['Report Exported', 'Dashboard Viewed', 'Seat Added', 'Feature Used'][i % 4]!,
        properties: { plan: 'growth', seats: (i % 40) + 1, round },
        context: { groupId: `pipe_${run}_acct_${u % ACCOUNTS}`, library: { name: 'analytics-node', version: '2.1.0' }, ip: '203.0.113.7' },
        timestamp: new Date(base + i).toISOString(),
      });
    }
  }
  const out: Track[][] = [];
  for (let i = 0; i < all.length; i += PER_REQUEST) out.push(all.slice(i, i + PER_REQUEST));
  return out;
}

async function inParallel<T>(items: T[], clients: number, each: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: clients }, async () => {
    while (next < items.length) await each(items[next++]!);
  }));
}

async function baselineRowsPerSec(url: string, batches: Track[][]): Promise<number> {
  const sql = postgres(url, { max: CLIENTS, onnotice: () => {} });
  try {
    await sql.unsafe(`create table if not exists ${BASELINE_PRODUCT_TABLE} (
      message_id text primary key, kind text not null, user_id text, anonymous_id text, group_id text, event text,
      properties jsonb, traits jsonb, context jsonb, timestamp timestamptz not null, received_at timestamptz not null)`);
    await sql.unsafe(`truncate ${BASELINE_PRODUCT_TABLE}`);
    const started = performance.now();
    await inParallel(batches, CLIENTS, async (msgs) => {
      await sql`
        insert into bench_baseline_product_events
          (message_id, kind, user_id, anonymous_id, group_id, event, properties, traits, context, timestamp, received_at)
        select m, 'track', u, null, g, e, p::jsonb, null, c::jsonb, ts, ${new Date()}
        from unnest(
          ${msgs.map((m) => m.messageId)}::text[], ${msgs.map((m) => m.userId)}::text[],
          ${msgs.map((m) => m.context.groupId as string)}::text[], ${msgs.map((m) => m.event)}::text[],
          ${msgs.map((m) => JSON.stringify(m.properties))}::text[], ${msgs.map((m) => JSON.stringify(m.context))}::text[],
          ${msgs.map((m) => m.timestamp)}::timestamptz[]
        ) as x(m, u, g, e, p, c, ts)`;
    });
    return TOTAL / ((performance.now() - started) / 1000);
  } finally {
    await sql.unsafe(`truncate ${BASELINE_PRODUCT_TABLE}`);
    await sql.end({ timeout: 5 });
  }
}

function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : Number.NaN;
}

export const eventsPipeline: Scenario = {
  name: S,
  description: `${USERS} users x ${EVENTS_PER_USER} tracks via /v1/batch → timeline → engine, end to end`,
  async run(ctx) {
    const { report, sql, options } = ctx;
    const run = randomBytes(3).toString('hex');
    const batches = requests(run);
    await ctx.settle();
    const baseline = await baselineRowsPerSec(ctx.db.url, batches);
    progress(`${S}/baseline`, `${fmt(TOTAL)} rows as ${batches.length} INSERTs of ${PER_REQUEST}, ${CLIENTS} concurrent: ${fmt(baseline)} rows/s`);

    const [dl0] = await sql<{ deadlocks: number }[]>`select deadlocks::int from pg_stat_database where datname = current_database()`;
    await ctx.settle();
    const svc = await ctx.startLifeline('all');
    const meter = cpuMeter(svc.pid);
    const prefix = `pipe_${run}_%`;
    const started = performance.now();
    await inParallel(batches, CLIENTS, async (batch) => {
      const res = await fetch(`${svc.url}/v1/batch`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${WRITE_KEY}` },
        body: JSON.stringify({ batch, sentAt: new Date().toISOString() }),
      });
      if (res.status !== 200) throw new Error(`/v1/batch answered ${res.status}: ${await res.text()}`);
      await res.arrayBuffer();
    });
    const ingestSec = (performance.now() - started) / 1000;
    progress(S, `accepted ${fmt(TOTAL)} events in ${ingestSec.toFixed(2)} s (${fmt(TOTAL / ingestSec)} events/s)`);

    let timeline = 0;
    let consumed = 0;
    let timelineSec = Number.NaN;
    // What the database is busy with while the pipeline drains (sampled with every poll).
    const busy = new Map<string, number>();
    const deadline = performance.now() + options.drainLimitSec * 1000;
    while (performance.now() < deadline) {
      const [c] = await sql<{ timeline: number; consumed: number }[]>`
        select count(*)::int as timeline, count(engine_processed_at)::int as consumed
        from domain_events where source = 'product' and source_id like ${prefix}`;
      timeline = c!.timeline;
      consumed = c!.consumed;
      if (timeline >= TOTAL && Number.isNaN(timelineSec)) timelineSec = (performance.now() - started) / 1000;
      for (const a of await sql<{ q: string }[]>`
        select coalesce(wait_event_type || ':' || wait_event, 'running') || ' ' || left(btrim(regexp_replace(query, '[[:space:]]+', ' ', 'g')), 100) as q from pg_stat_activity
        where datname = current_database() and state = 'active' and pid <> pg_backend_pid()`) busy.set(a.q, (busy.get(a.q) ?? 0) + 1);
      if (consumed >= TOTAL) break;
      await sleep(20);
    }
    const totalSec = (performance.now() - started) / 1000;
    const cpu = meter();
    const rss = rssMb(svc.pid);
    const [errs] = await sql<{ failed: number; retried: number }[]>`
      select count(*) filter (where last_error is not null)::int as failed, count(*) filter (where attempts > 1)::int as retried
      from product_events where message_id like ${prefix}`;
    await svc.stop({ graceful: true });
    await sleep(200);
    const [dl1] = await sql<{ deadlocks: number }[]>`select deadlocks::int from pg_stat_database where datname = current_database()`;
    const rate = consumed / totalSec;
    const top = [...busy].sort((a, b) => b[1] - a[1]).slice(0, 12);
    for (const [q, n] of top) progress(`${S}/db`, `${String(n).padStart(4)} samples: ${q}`);
    progress(S, `all ${fmt(TOTAL)} on the timeline after ${timelineSec.toFixed(2)} s (${fmt(TOTAL / timelineSec)} events/s ingest → timeline)`);
    progress(S, `${fmt(timeline)} on the timeline, ${fmt(consumed)} consumed by the engine after ${totalSec.toFixed(2)} s: ${fmt(rate)} events/s end to end; ${describeCpu(cpu)}`);
    progress(S, `service RSS after the scenario: ${rss.toFixed(0)} MB; events with an error: ${errs!.failed}, retried: ${errs!.retried}; deadlocks (pg_stat_database delta): ${dl1!.deadlocks - dl0!.deadlocks}`);
    report.phase(S, 'Lifeline ROLE=all, 20k tracks end to end', cpu, { eventsPerSec: rate, ingestSec, totalSec });
    report.info(S, `baseline: ${PER_REQUEST}-row INSERTs of the same rows, ${CLIENTS} concurrent`, baseline, 'rows/s');
    report.ratio(S, `${fmt(TOTAL)} tracks via /v1/batch → timeline → engine consumed, end to end${consumed < TOTAL ? ` (ONLY ${fmt(consumed)} within ${options.drainLimitSec}s)` : ''}`, rate, 'events/s', baseline, 0.5);
    report.info(S, 'ingest only: /v1/batch accepted', TOTAL / ingestSec, 'events/s');
    report.info(S, 'ingest → timeline (inbox lanes done, before the engine)', TOTAL / timelineSec, 'events/s');
    report.info(S, 'service RSS after the scenario', rss, 'MB');
    report.info(S, 'deadlocks during the scenario (pg_stat_database)', dl1!.deadlocks - dl0!.deadlocks, 'count');
    report.info(S, 'product events retried (attempts > 1)', errs!.retried, 'events');
  },
};
