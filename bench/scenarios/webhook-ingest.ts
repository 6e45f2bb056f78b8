// POST /webhooks/stripe: saturated throughput against a minimal verify+INSERT baseline, with
// the worker on (ROLE=all) and off (ROLE=api); the worker's drain of the backlog; latency at a
// fraction of saturation.
//
// With --rounds=N the saturated phases run N times interleaved (baseline, ROLE=all, ROLE=api,
// baseline, …) and the ratios use the medians, so a burst of outside load on a shared machine
// hits both sides. The drain and the latency runs happen once, in the last round.
import type { Scenario } from '../lib/context.ts';
import { cpuMeter, describeCpu } from '../lib/cpu.ts';
import { autocannonAtRate, paced, saturate, type SaturationResult } from '../lib/load.ts';
import { fmt, median, NOISY_OTHER_CORES, pairRounds, progress, sleep } from '../lib/log.ts';
import { BASELINE_STRIPE_TABLE, stripeDeliveries } from '../lib/payloads.ts';

const S = 'webhook-ingest';

export const webhookIngest: Scenario = {
  name: S,
  description: 'Stripe invoice.payment_failed deliveries (unique id, fresh signature each) to POST /webhooks/stripe',
  async run(ctx) {
    const { options: o, report, sql } = ctx;
    const deliveries = stripeDeliveries();
    progress(S, `payload ${fmt(deliveries.bytes)} bytes; ${o.connections} connections, ${o.warmupSec}s warm-up + ${o.durationSec}s per phase, ${o.rounds} round(s)`);
    const load = (label: string, server: { url: string; pid: number }) =>
      saturate({ label: `${S}/${label}`, url: server.url, serverPid: server.pid, connections: o.connections, warmupSec: o.warmupSec, durationSec: o.durationSec, next: deliveries.next });
    const counts = async () => {
      const [r] = await sql<{ total: number; backlog: number }[]>`select count(*)::int as total, count(*) filter (where processed_at is null)::int as backlog from stripe_events`;
      return r!;
    };
    const tag = (round: number) => (o.rounds > 1 ? ` (round ${round})` : '');

    // 0. The load generator's own ceiling with the same requests (signing included).
    const nul = await ctx.startChild('null-server', 'null-child.ts');
    const ceiling = await saturate({ label: `${S}/loadgen-ceiling`, url: nul.url, serverPid: nul.pid, connections: o.connections, warmupSec: 1, durationSec: Math.min(5, o.durationSec), next: deliveries.next });
    await nul.stop();
    report.info(S, 'load generator ceiling (no-op server, same signed requests)', ceiling.rps, 'req/s');
    report.phase(S, 'load generator ceiling (no-op node:http server)', ceiling.cpu, { rps: ceiling.rps });

    const baseRuns: SaturationResult[] = [];
    const allRuns: SaturationResult[] = [];
    const apiRuns: SaturationResult[] = [];
    const diag: Record<'inline' | 'coalesced', SaturationResult[]> = { inline: [], coalesced: [] };
    let latencyRate = 0;
    // Rows measured in the last round (drain, latency) are added after the saturation rows.
    const later: (() => void)[] = [];

    for (let round = 1; round <= o.rounds; round++) {
      const last = round === o.rounds;
      if (o.rounds > 1) progress(S, `round ${round} of ${o.rounds}`);

      // a. Baseline: bare Fastify + constructEvent + one INSERT into a plain table.
      await ctx.settle();
      const base = await ctx.startChild('baseline', 'baseline-child.ts');
      const b = await load(`baseline${tag(round)}`, base);
      await base.stop();
      baseRuns.push(b);
      report.phase(S, `baseline, saturated${tag(round)}`, b.cpu, { rps: b.rps, p99: b.latencyP99 });
      await sql.unsafe(`truncate ${BASELINE_STRIPE_TABLE}`);

      if (o.diagnose) {
        // The baseline with Lifeline's per-insert NOTIFY, and with a coalesced NOTIFY outside the
        // insert's transaction (a prototype of the fix), to size what the NOTIFY costs.
        for (const mode of ['inline', 'coalesced'] as const) {
          await ctx.settle();
          const child = await ctx.startChild(`baseline+notify ${mode}`, 'baseline-child.ts', { BASELINE_NOTIFY: mode });
          const r = await load(`baseline+notify ${mode}${tag(round)}`, child);
          await child.stop();
          diag[mode].push(r);
          report.phase(S, `diagnostic: baseline + notify ${mode}, saturated${tag(round)}`, r.cpu, { rps: r.rps, p99: r.latencyP99 });
          await sql.unsafe(`truncate ${BASELINE_STRIPE_TABLE}`);
        }
      }

      // b. Lifeline, ROLE=all (the worker processes the inbox while requests arrive).
      await sql`truncate stripe_events`;
      await ctx.settle();
      const all = await ctx.startLifeline('all');
      const l = await load(`lifeline ROLE=all${tag(round)}`, all);
      allRuns.push(l);
      report.phase(S, `Lifeline ROLE=all, saturated${tag(round)}`, l.cpu, { rps: l.rps, p99: l.latencyP99 });
      const loadEnd = performance.now();
      const atEnd = await counts();
      progress(S, `after the load: ${fmt(atEnd.total)} events stored, ${fmt(atEnd.total - atEnd.backlog)} processed during the load, backlog ${fmt(atEnd.backlog)}`);

      if (last) {
        later.push(() => report.info(S, 'worker (ROLE=all): events processed while the load ran (incl. warm-up)', atEnd.total - atEnd.backlog, 'events'));
        later.push(() => report.info(S, 'worker (ROLE=all): backlog when the load stopped', atEnd.backlog, 'events'));
        // Drain: how long the worker needs for the backlog once requests stop (bounded).
        let now = atEnd;
        const drainLimitMs = o.drainLimitSec * 1000;
        let lastLog = performance.now();
        const drainMeter = cpuMeter(all.pid);
        while (now.backlog > 0 && performance.now() - loadEnd < drainLimitMs) {
          await sleep(200);
          now = await counts();
          if (performance.now() - lastLog > 10_000) {
            lastLog = performance.now();
            progress(S, `draining: backlog ${fmt(now.backlog)}`);
          }
        }
        const drainCpu = drainMeter();
        const drainSec = (performance.now() - loadEnd) / 1000;
        const drained = atEnd.backlog - now.backlog;
        progress(S, `drain: ${fmt(drained)} events in ${drainSec.toFixed(1)} s${now.backlog > 0 ? ` (stopped at the ${o.drainLimitSec}s limit, ${fmt(now.backlog)} left)` : ''}; ${describeCpu(drainCpu)}`);
        later.push(() => report.info(S, `worker (ROLE=all): time to drain the backlog after the load${now.backlog > 0 ? ` (NOT drained: ${now.backlog} left at the limit)` : ''}`, drainSec, 's'));
        if (drained > 0) later.push(() => report.info(S, 'worker (ROLE=all): drain rate with no ingest load', drained / drainSec, 'events/s'));
        report.phase(S, 'worker drain after the load (no HTTP load)', drainCpu, { events: drained, seconds: drainSec, eventsPerSec: drained / drainSec });

        // c. Latency at a fraction of the saturated rate (median of the rounds), same ROLE=all service.
        latencyRate = Math.max(1, Math.round(o.latencyLoad * median(allRuns.map((r) => r.rps))));
        const pct = `${Math.round(o.latencyLoad * 100)}%`;
        const p = await paced({ label: `${S}/latency`, url: all.url, serverPid: all.pid, rate: latencyRate, warmupSec: o.warmupSec, durationSec: o.durationSec, maxSockets: o.connections, next: deliveries.next });
        later.push(() => report.info(S, `Lifeline ROLE=all: p50 latency at ${pct} of saturation (${latencyRate} req/s, evenly paced)`, p.p50, 'ms'));
        later.push(() => report.atMost(S, `Lifeline ROLE=all: p99 latency at ${pct} of saturation (${latencyRate} req/s, evenly paced)`, p.p99, 'ms', 10));
        report.phase(S, `Lifeline ROLE=all, ${latencyRate} req/s evenly paced`, p.cpu, { rate: latencyRate, achieved: p.achievedRate, p50: p.p50, p90: p.p90, p99: p.p99, max: p.max });
        // For comparison: autocannon's own pacing, which sends each second's budget in a burst.
        const ac = await autocannonAtRate({ label: `${S}/latency-autocannon`, url: all.url, serverPid: all.pid, connections: o.connections, rate: latencyRate, durationSec: o.durationSec, next: deliveries.next });
        later.push(() => report.info(S, `Lifeline ROLE=all: p99 latency at ${latencyRate} req/s via autocannon overallRate (per-second bursts)`, ac.latencyP99, 'ms'));
        report.phase(S, `Lifeline ROLE=all, ${latencyRate} req/s autocannon overallRate`, ac.cpu, { p50: ac.latencyP50, p99: ac.latencyP99 });
        const left = await counts();
        if (left.backlog > 0) progress(S, `backlog after the latency runs: ${fmt(left.backlog)} (stopping without waiting for the worker)`);
      }
      // Not graceful: Lifeline's stop() would let the worker finish the whole backlog first.
      await all.stop({ graceful: false });

      // d. Lifeline, ROLE=api: ingest only, the worker off.
      await sql`truncate stripe_events`;
      await ctx.settle();
      const api = await ctx.startLifeline('api');
      const a = await load(`lifeline ROLE=api${tag(round)}`, api);
      apiRuns.push(a);
      report.phase(S, `Lifeline ROLE=api, saturated${tag(round)}`, a.cpu, { rps: a.rps, p99: a.latencyP99 });
      if (last) {
        // Same paced rate as (c), worker off: the ingest path's own latency, without the worker
        // sharing the event loop.
        const pa = await paced({ label: `${S}/latency ROLE=api`, url: api.url, serverPid: api.pid, rate: latencyRate, warmupSec: o.warmupSec, durationSec: o.durationSec, maxSockets: o.connections, next: deliveries.next });
        later.push(() => report.info(S, `Lifeline ROLE=api: p50 latency at ${latencyRate} req/s (evenly paced, worker off)`, pa.p50, 'ms'));
        later.push(() => report.info(S, `Lifeline ROLE=api: p99 latency at ${latencyRate} req/s (evenly paced, worker off)`, pa.p99, 'ms'));
        report.phase(S, `Lifeline ROLE=api, ${latencyRate} req/s evenly paced`, pa.cpu, { rate: latencyRate, achieved: pa.achievedRate, p50: pa.p50, p90: pa.p90, p99: pa.p99, max: pa.max });
      }
      await api.stop();
      await sql`truncate stripe_events`;
      if (last) {
        // The baseline at the same paced rate: what this machine allows for the latency target.
        await ctx.settle();
        const base = await ctx.startChild('baseline', 'baseline-child.ts');
        const pb = await paced({ label: `${S}/latency baseline`, url: base.url, serverPid: base.pid, rate: latencyRate, warmupSec: o.warmupSec, durationSec: o.durationSec, maxSockets: o.connections, next: deliveries.next });
        await base.stop();
        await sql.unsafe(`truncate ${BASELINE_STRIPE_TABLE}`);
        later.push(() => report.info(S, `baseline: p50 latency at ${latencyRate} req/s (evenly paced)`, pb.p50, 'ms'));
        later.push(() => report.info(S, `baseline: p99 latency at ${latencyRate} req/s (evenly paced)`, pb.p99, 'ms'));
        report.phase(S, `baseline, ${latencyRate} req/s evenly paced`, pb.cpu, { rate: latencyRate, achieved: pb.achievedRate, p50: pb.p50, p90: pb.p90, p99: pb.p99, max: pb.max });
      }
    }

    const noisy = (r: SaturationResult) => (r.cpu?.other ?? 0) > NOISY_OTHER_CORES;
    const pair = (runs: SaturationResult[]) =>
      pairRounds(runs.map((r, i) => ({ value: r.rps, baseline: baseRuns[i]!.rps, noisy: noisy(r) || noisy(baseRuns[i]!) })));
    const note = (basis: string) => (basis ? ` (${basis})` : '');
    const baseOnly = pairRounds(baseRuns.map((r) => ({ value: r.rps, baseline: r.rps, noisy: noisy(r) })));
    report.info(S, `baseline: bare Fastify, constructEvent + 1 INSERT, saturated${note(baseOnly.basis)}`, baseOnly.value, 'req/s');
    if (o.diagnose) {
      const inline = pair(diag.inline);
      const coalesced = pair(diag.coalesced);
      report.ratio(S, `diagnostic: baseline + pg_notify in the INSERT statement (as Lifeline), saturated${note(inline.basis)}`, inline.value, 'req/s', inline.baseline, null, inline.ratio);
      report.ratio(S, `diagnostic: baseline + coalesced pg_notify after commit (proposed fix), saturated${note(coalesced.basis)}`, coalesced.value, 'req/s', coalesced.baseline, null, coalesced.ratio);
    }
    const l = pair(allRuns);
    report.ratio(S, `Lifeline POST /webhooks/stripe, ROLE=all, saturated${note(l.basis)}`, l.value, 'req/s', l.baseline, 0.8, l.ratio);
    report.info(S, 'Lifeline ROLE=all: p99 latency at saturation (median of the rounds)', median(allRuns.map((r) => r.latencyP99)), 'ms');
    const a = pair(apiRuns);
    report.ratio(S, `Lifeline POST /webhooks/stripe, ROLE=api (worker off), saturated${note(a.basis)}`, a.value, 'req/s', a.baseline, 0.8, a.ratio);
    for (const add of later) add();
  },
};
