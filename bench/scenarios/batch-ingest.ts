// POST /v1/batch with 100 track events per request against a multi-row INSERT of the same rows
// into a plain table straight from a bench process.
import postgres from 'postgres';
import { createSql } from '../../src/db/connection.ts';
import { storeProductEvents, type InboxMessage } from '../../src/events/event-inbox.ts';
import { cpuMeter, describeCpu, type CpuShare } from '../lib/cpu.ts';
import type { Scenario } from '../lib/context.ts';
import { saturate } from '../lib/load.ts';
import { fmt, median, NOISY_OTHER_CORES, pairRounds, progress } from '../lib/log.ts';
import { BASELINE_PRODUCT_TABLE, batchRequests, trackMessages, type TrackMessage } from '../lib/payloads.ts';

const S = 'batch-ingest';

/**
 * Baseline: `concurrency` loops, each inserting `size` rows per statement (unnest of column
 * arrays, one round trip) into a plain table with the same columns as product_events and a
 * primary key on message_id. Rows are generated and serialized in this loop too.
 */
async function baselineRowsPerSec(url: string, concurrency: number, size: number, warmupSec: number, durationSec: number): Promise<{ rowsPerSec: number; cpu: CpuShare | null }> {
  const sql = postgres(url, { max: concurrency, onnotice: () => {} });
  await sql.unsafe(`create table if not exists ${BASELINE_PRODUCT_TABLE} (
    message_id text primary key, kind text not null, user_id text, anonymous_id text, group_id text, event text,
    properties jsonb, traits jsonb, context jsonb, timestamp timestamptz not null, received_at timestamptz not null)`);
  const gen = trackMessages();
  const insert = async (msgs: TrackMessage[]) => {
    const now = new Date();
    await sql`
      insert into bench_baseline_product_events
        (message_id, kind, user_id, anonymous_id, group_id, event, properties, traits, context, timestamp, received_at)
      select m, 'track', u, null, g, e, p::jsonb, null, c::jsonb, ts, ${now}
      from unnest(
        ${msgs.map((m) => m.messageId)}::text[], ${msgs.map((m) => m.userId)}::text[],
        ${msgs.map((m) => (m.context.groupId as string) ?? null)}::text[], ${msgs.map((m) => m.event)}::text[],
        ${msgs.map((m) => JSON.stringify(m.properties))}::text[], ${msgs.map((m) => JSON.stringify(m.context))}::text[],
        ${msgs.map((m) => m.timestamp)}::timestamptz[]
      ) as x(m, u, g, e, p, c, ts)`;
  };
  const run = async (sec: number) => {
    const until = performance.now() + sec * 1000;
    let rows = 0;
    const start = performance.now();
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (performance.now() < until) {
          await insert(gen.next(size));
          rows += size;
        }
      }),
    );
    return rows / ((performance.now() - start) / 1000);
  };
  try {
    if (warmupSec > 0) progress(`${S}/baseline`, `warm-up ${warmupSec}s: ${fmt(await run(warmupSec))} rows/s`);
    const meter = cpuMeter(null);
    const rps = await run(durationSec);
    const cpu = meter();
    progress(`${S}/baseline`, `${durationSec}s x ${concurrency} concurrent INSERTs of ${size} rows: ${fmt(rps)} rows/s`);
    progress(`${S}/baseline`, `${describeCpu(cpu)} (loadgen = the inserting bench process)`);
    return { rowsPerSec: rps, cpu };
  } finally {
    await sql.unsafe(`truncate ${BASELINE_PRODUCT_TABLE}`);
    await sql.end({ timeout: 5 });
  }
}

/**
 * Diagnostic (--diagnose): Lifeline's own storeProductEvents() (its SQL, its table, its NOTIFY)
 * called straight from the bench process with the same concurrency: no HTTP, no validation.
 * Splits the gap to the baseline into "the database statement" and "the HTTP layer".
 */
async function storeDirectRowsPerSec(url: string, concurrency: number, size: number, warmupSec: number, durationSec: number): Promise<{ rowsPerSec: number; cpu: CpuShare | null }> {
  const sql = createSql(url, { max: concurrency, applicationName: 'bench-direct' });
  const gen = trackMessages();
  const toInbox = (m: TrackMessage): InboxMessage => ({
    messageId: m.messageId, kind: 'track', userId: m.userId, anonymousId: null, groupId: (m.context.groupId as string) ?? null,
    event: m.event, properties: m.properties, traits: null, context: m.context, timestamp: new Date(m.timestamp),
  });
  const run = async (sec: number) => {
    const until = performance.now() + sec * 1000;
    let rows = 0;
    const start = performance.now();
    await Promise.all(Array.from({ length: concurrency }, async () => {
      while (performance.now() < until) {
        await storeProductEvents(sql, gen.next(size).map(toInbox), new Date());
        rows += size;
      }
    }));
    return rows / ((performance.now() - start) / 1000);
  };
  try {
    if (warmupSec > 0) await run(warmupSec);
    const meter = cpuMeter(null);
    const rps = await run(durationSec);
    const cpu = meter();
    progress(`${S}/direct`, `storeProductEvents() from the bench process, ${concurrency} concurrent: ${fmt(rps)} rows/s; ${describeCpu(cpu)}`);
    return { rowsPerSec: rps, cpu };
  } finally {
    await sql`truncate product_events`;
    await sql.end({ timeout: 5 });
  }
}

export const batchIngest: Scenario = {
  name: S,
  description: 'Segment batches (100 track events, unique messageIds) to POST /v1/batch',
  async run(ctx) {
    const { options: o, report, sql } = ctx;
    const size = o.batchSize;
    const requests = batchRequests(size);
    progress(S, `${size} track events per request (${fmt(requests.bytes)} bytes); ${o.batchConnections} connections, ${o.warmupSec}s warm-up + ${o.durationSec}s per phase, ${o.rounds} round(s)`);
    const tag = (round: number) => (o.rounds > 1 ? ` (round ${round})` : '');

    const measure = async (role: 'all' | 'api', round: number) => {
      await sql`truncate product_events`;
      await ctx.settle();
      const svc = await ctx.startLifeline(role);
      const r = await saturate({ label: `${S}/lifeline ROLE=${role}${tag(round)}`, url: svc.url, serverPid: svc.pid, connections: o.batchConnections, warmupSec: o.warmupSec, durationSec: o.durationSec, next: requests.next });
      const [c] = await sql<{ total: number; backlog: number }[]>`select count(*)::int as total, count(*) filter (where processed_at is null)::int as backlog from product_events`;
      // Not graceful: Lifeline's stop() lets the worker finish the whole backlog first.
      await svc.stop({ graceful: false });
      progress(S, `ROLE=${role}: ${fmt(c!.total)} events stored (warm-up included), ${fmt(c!.total - c!.backlog)} processed by the worker during the load`);
      report.phase(S, `Lifeline ROLE=${role}, saturated${tag(round)}`, r.cpu, { rps: r.rps, eventsPerSec: r.rps * size, p99: r.latencyP99 });
      return { eventsPerSec: r.rps * size, p99: r.latencyP99, processed: c!.total - c!.backlog, stored: c!.total, noisy: (r.cpu?.other ?? 0) > NOISY_OTHER_CORES };
    };

    const base: { value: number; noisy: boolean }[] = [];
    const direct: { value: number; noisy: boolean }[] = [];
    const all: Awaited<ReturnType<typeof measure>>[] = [];
    const api: Awaited<ReturnType<typeof measure>>[] = [];
    for (let round = 1; round <= o.rounds; round++) {
      if (o.rounds > 1) progress(S, `round ${round} of ${o.rounds}`);
      await ctx.settle();
      const b = await baselineRowsPerSec(ctx.db.url, o.batchConnections, size, o.warmupSec, o.durationSec);
      base.push({ value: b.rowsPerSec, noisy: (b.cpu?.other ?? 0) > NOISY_OTHER_CORES });
      report.phase(S, `baseline, saturated (inserts from the bench process)${tag(round)}`, b.cpu, { rowsPerSec: b.rowsPerSec });
      if (o.diagnose) {
        await ctx.settle();
        const d = await storeDirectRowsPerSec(ctx.db.url, o.batchConnections, size, o.warmupSec, o.durationSec);
        direct.push({ value: d.rowsPerSec, noisy: (d.cpu?.other ?? 0) > NOISY_OTHER_CORES });
        report.phase(S, `diagnostic: storeProductEvents() direct, no HTTP${tag(round)}`, d.cpu, { rowsPerSec: d.rowsPerSec });
      }
      all.push(await measure('all', round));
      api.push(await measure('api', round));
    }
    await sql`truncate product_events`;

    const note = (basis: string) => (basis ? ` (${basis})` : '');
    const pair = (runs: { value: number; noisy: boolean }[]) => pairRounds(runs.map((r, i) => ({ value: r.value, baseline: base[i]!.value, noisy: r.noisy || base[i]!.noisy })));
    const b = pairRounds(base.map((r) => ({ value: r.value, baseline: r.value, noisy: r.noisy })));
    report.info(S, `baseline: ${size}-row INSERT (unnest) from a bench process, ${o.batchConnections} concurrent${note(b.basis)}`, b.value, 'rows/s');
    if (o.diagnose) {
      const d = pair(direct);
      report.ratio(S, `diagnostic: Lifeline's storeProductEvents() called directly (its SQL and table, no HTTP)${note(d.basis)}`, d.value, 'rows/s', d.baseline, null, d.ratio);
    }
    const l = pair(all.map((r) => ({ value: r.eventsPerSec, noisy: r.noisy })));
    report.ratio(S, `Lifeline POST /v1/batch (${size} events/request), ROLE=all, saturated${note(l.basis)}`, l.value, 'events/s', l.baseline, 0.5, l.ratio);
    report.info(S, 'Lifeline ROLE=all: p99 request latency at saturation (median of the rounds)', median(all.map((r) => r.p99)), 'ms');
    report.info(S, 'worker (ROLE=all): product events processed while the load ran (incl. warm-up, last round)', all[all.length - 1]!.processed, 'events');
    const a = pair(api.map((r) => ({ value: r.eventsPerSec, noisy: r.noisy })));
    report.ratio(S, `Lifeline POST /v1/batch (${size} events/request), ROLE=api (worker off), saturated${note(a.basis)}`, a.value, 'events/s', a.baseline, 0.5, a.ratio);
  },
};
