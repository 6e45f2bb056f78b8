// The whole Stripe pipeline at throughput: N first failed payments (signed invoice.payment_failed
// webhooks, billing_reason subscription_cycle, each a new customer with its own email) posted as
// fast as a closed-loop client can, until every billing-recovery email (dunning-soft-1: the
// invoice carries no decline detail, which takes the soft sequence) has reached a fake Resend
// that never throttles.
//
// Figure: end-to-end events/s = N / (first request sent → last email received at the fake),
// against the bare verify+INSERT server (bench/baseline-child.ts) accepting the same N requests
// from the same client in the same run. Per-stage rates show where the time goes:
//   accepted/s  = N / (first request → last 2xx answer),
//   projected/s = N / (first request → last stripe_events.processed_at),
//   queued/s    = N / (first request → last messages.created_at),
//   emailed/s   = the figure.
// BENCH_PIPELINE_EVENTS=N changes N (default 3,000).
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { startFakeResend, type FakeResend } from '../../test/helpers/fake-resend.ts';
import type { Scenario } from '../lib/context.ts';
import { cpuMeter, describeCpu } from '../lib/cpu.ts';
import { fmt, progress, sleep } from '../lib/log.ts';
import { BASELINE_STRIPE_TABLE, stripeDeliveries, type HttpRequestSpec } from '../lib/payloads.ts';

const S = 'stripe-pipeline';
const TARGET = 0.5;
/** how long to wait for the last email after the last request */
const LIMIT_MS = 600_000;

function count(): number {
  const n = Number(process.env.BENCH_PIPELINE_EVENTS ?? 3000);
  if (!Number.isInteger(n) || n < 100) throw new Error('BENCH_PIPELINE_EVENTS must be a whole number ≥ 100');
  return n;
}

interface Sent {
  /** Date.now() when the first request was written */
  first: number;
  /** Date.now() when the last answer arrived */
  lastAnswer: number;
  ok: number;
  failed: number;
}

/**
 * Closed loop: `connections` keep-alive connections, each sending its next request as soon as
 * the previous one is answered, until `n` requests were sent. The same client for both servers.
 */
function sendAll(url: string, n: number, connections: number, next: () => HttpRequestSpec): Promise<Sent> {
  const target = new URL(url);
  if (target.hostname !== '127.0.0.1') throw new Error('load generator only targets 127.0.0.1');
  const agent = new http.Agent({ keepAlive: true, maxSockets: connections });
  let sent = 0;
  const result: Sent = { first: 0, lastAnswer: 0, ok: 0, failed: 0 };
  const one = (): Promise<void> =>
    new Promise((resolve) => {
      const spec = next();
      if (result.first === 0) result.first = Date.now();
      const req = http.request({ agent, host: target.hostname, port: target.port, method: spec.method, path: spec.path, headers: { ...spec.headers, 'content-length': Buffer.byteLength(spec.body) } }, (res) => {
        res.resume();
        res.on('end', () => {
          if (res.statusCode! >= 200 && res.statusCode! < 300) result.ok++;
          else result.failed++;
          result.lastAnswer = Date.now();
          resolve();
        });
      });
      req.on('error', () => {
        result.failed++;
        result.lastAnswer = Date.now();
        resolve();
      });
      req.end(spec.body);
    });
  const lane = async () => {
    while (sent < n) {
      sent++;
      await one();
    }
  };
  return Promise.all(Array.from({ length: connections }, lane)).then(() => {
    agent.destroy();
    return result;
  });
}

function rssMiB(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

/** One Lifeline deployment taking the N webhooks until every email reached the fake. */
async function lifeline(ctx: Parameters<Scenario['run']>[0], fake: FakeResend, n: number, prefix: string, roles: 'all' | 'api+worker') {
  const { report, sql, options: o } = ctx;
  const env = { RESEND_API_KEY: 're_bench_key', RESEND_BASE_URL: fake.url, RESEND_RATE_LIMIT: '1000' };
  await ctx.settle();
  const children = roles === 'all'
    ? [await ctx.startChild('lifeline ROLE=all', 'server-child.ts', { ROLE: 'all', ...env })]
    : [await ctx.startChild('lifeline ROLE=api', 'server-child.ts', { ROLE: 'api', ...env }), await ctx.startChild('lifeline ROLE=worker', 'server-child.ts', { ROLE: 'worker', ...env })];
  const front = children[0]!;
  const worker = children[children.length - 1]!;
  const label = roles === 'all' ? 'Lifeline' : 'Lifeline api+worker';
  const deliveries = stripeDeliveries({ idPrefix: prefix });
  const meter = cpuMeter(worker.pid);
  const sending = sendAll(front.url, n, o.connections, deliveries.next);
  // The fake stamps each request on arrival (Date.now()): the last email's stamp is the end.
  let lastEmail = 0;
  let lastLog = performance.now();
  const until = performance.now() + LIMIT_MS;
  const accepted = () => fake.accepted.length;
  let sent: Sent | null = null;
  void sending.then((x) => (sent = x));
  while (accepted() < n && performance.now() < until) {
    await sleep(20);
    if (performance.now() - lastLog > 10_000) {
      lastLog = performance.now();
      const [r] = await sql<{ projected: number }[]>`select count(*)::int as projected from stripe_events where id like ${`evt_${prefix}_%`} and processed_at is not null`;
      progress(S, `${label}: ${sent ? 'all sent' : 'sending'}; projected ${fmt(r!.projected)}, emails at the fake ${fmt(accepted())} of ${fmt(n)}`);
    }
  }
  if (accepted() >= n) lastEmail = fake.requests[fake.requests.length - 1]!.at;
  const s = await sending;
  const cpu = meter();
  const rss = children.reduce((sum, c) => sum + rssMiB(c.pid), 0);
  const [st] = await sql<{ projected: number; last_projected: Date | null; queued: number; last_queued: Date | null; sent: number }[]>`
    select (select count(*)::int from stripe_events where id like ${`evt_${prefix}_%`} and processed_at is not null) as projected,
           (select max(processed_at) from stripe_events where id like ${`evt_${prefix}_%`}) as last_projected,
           (select count(*)::int from messages where to_email like ${`cus_${prefix}_%`}) as queued,
           (select max(created_at) from messages where to_email like ${`cus_${prefix}_%`}) as last_queued,
           (select count(*)::int from messages where to_email like ${`cus_${prefix}_%`} and template = 'dunning-soft-1') as sent`;
  if (o.diagnose) {
    // Where the pipeline waits: how many events each stage had finished, every half second.
    const marks = await sql<{ t: number; received: number; projected: number; fed: number; queued: number; sent: number }[]>`
      with e as (select received_at, processed_at from stripe_events where id like ${`evt_${prefix}_%`}),
           f as (select engine_processed_at from domain_events where source_id like ${`evt_${prefix}_%`}),
           m as (select created_at, sent_at from messages where to_email like ${`cus_${prefix}_%`}),
           t0 as (select min(received_at) as t0 from e),
           ticks as (select generate_series(0, 40, 0.5)::float8 as t)
      select t, (select count(*)::int from e where received_at <= t0 + t * interval '1 second') as received,
             (select count(*)::int from e where processed_at <= t0 + t * interval '1 second') as projected,
             (select count(*)::int from f where engine_processed_at <= t0 + t * interval '1 second') as fed,
             (select count(*)::int from m where created_at <= t0 + t * interval '1 second') as queued,
             (select count(*)::int from m where sent_at <= t0 + t * interval '1 second') as sent
      from ticks, t0 order by t`;
    for (const r of marks) {
      progress(S, `${label} t=${r.t.toFixed(1)} s: received ${r.received}, projected ${r.projected}, fed to the engine ${r.fed}, queued ${r.queued}, sent ${r.sent}`);
      if (r.sent >= n) break;
    }
  }
  for (const c of children) await c.stop({ graceful: false });

  const sec = (t: number | null | undefined) => (t ? (t - s.first) / 1000 : NaN);
  const result = {
    e2e: lastEmail ? n / sec(lastEmail) : 0,
    acceptedRate: s.ok / sec(s.lastAnswer),
    projectedRate: st!.projected / sec(st!.last_projected?.getTime()),
    queuedRate: st!.queued / sec(st!.last_queued?.getTime()),
    rss,
    cpu,
    sent: st!.sent,
  };
  progress(
    S,
    `${label}: ${fmt(s.ok)} accepted (${s.failed} failed) by ${fmt(sec(s.lastAnswer), 2)} s, ${fmt(st!.projected)} projected by ${fmt(sec(st!.last_projected?.getTime()), 2)} s, ` +
      `${fmt(st!.queued)} emails queued by ${fmt(sec(st!.last_queued?.getTime()), 2)} s, ${fmt(accepted())} at the fake by ${lastEmail ? fmt(sec(lastEmail), 2) : 'NOT ALL'} s; RSS ${fmt(rss)} MiB; ${describeCpu(cpu)}`,
  );
  if (accepted() < n) report.note(`${S} (${roles}): only ${accepted()} of ${n} emails reached the fake within ${LIMIT_MS / 1000} s of the start`);
  return result;
}

export const stripePipeline: Scenario = {
  name: S,
  description: 'N first failed payments as signed webhooks → projected → billing-recovery email at an unthrottled fake Resend (end-to-end events/s vs a bare verify+INSERT server)',
  async run(ctx) {
    const { report, sql, options: o } = ctx;
    const n = count();
    const tag = randomBytes(3).toString('hex');

    // Earlier scenarios leave backlogs: mark them done so this scenario times only its own work.
    await sql`update stripe_events set processed_at = now() where processed_at is null`;
    await sql`update product_events set processed_at = now() where processed_at is null`;
    await sql`update domain_events set engine_processed_at = now() where engine_processed_at is null`;
    await sql`update messages set status = 'skipped', status_reason = 'bench: left over from an earlier scenario' where status in ('queued', 'sending')`;
    await sql`delete from rate_limits where name like 'email:%'`;

    // 1. Baseline: the bare server accepting the same N requests.
    await ctx.settle();
    const base = await ctx.startChild('baseline', 'baseline-child.ts');
    const baseMeter = cpuMeter(base.pid);
    const b = await sendAll(base.url, n, o.connections, stripeDeliveries({ idPrefix: `pb${tag}` }).next);
    const baseCpu = baseMeter();
    await base.stop();
    await sql.unsafe(`truncate ${BASELINE_STRIPE_TABLE}`);
    const baseRate = b.ok / ((b.lastAnswer - b.first) / 1000);
    progress(S, `baseline: ${fmt(b.ok)} accepted (${b.failed} failed) in ${fmt((b.lastAnswer - b.first) / 1000, 2)} s = ${fmt(baseRate)} events/s; ${describeCpu(baseCpu)}`);
    report.phase(S, `baseline: ${n} webhooks, ${o.connections} connections`, baseCpu, { rps: baseRate });

    // 2. Lifeline ROLE=all (the figure), then (information) ROLE=api + ROLE=worker as two
    //    processes, the scale-out deployment: with two cores the worker no longer shares a thread
    //    with HTTP. Resend unthrottled (fake without a limit, RESEND_RATE_LIMIT at its maximum).
    const fake = await startFakeResend({ keepContent: false });
    try {
      const all = await lifeline(ctx, fake, n, `pl${tag}`, 'all');
      report.ratio(S, `end-to-end: ${n} first failed payments, first request → last dunning-soft-1 email at Resend (vs baseline accepting them)`, all.e2e, 'events/s', baseRate, TARGET);
      report.info(S, 'stage: accepted (first request → last 2xx)', all.acceptedRate, 'events/s');
      report.info(S, 'stage: projected (first request → last stripe_events.processed_at)', all.projectedRate, 'events/s');
      report.info(S, 'stage: email queued (first request → last messages.created_at)', all.queuedRate, 'events/s');
      report.info(S, 'stage: emailed (first request → last email at the fake Resend)', all.e2e, 'events/s');
      report.info(S, 'Lifeline RSS after the scenario', all.rss, 'MiB');
      report.phase(S, `Lifeline ROLE=all: ${n} webhooks → emails`, all.cpu, { rps: all.e2e, accepted: all.acceptedRate, projected: all.projectedRate, queued: all.queuedRate, rssMiB: all.rss });

      fake.accepted.length = 0;
      fake.requests.length = 0;
      const split = await lifeline(ctx, fake, n, `pw${tag}`, 'api+worker');
      report.info(S, `ROLE=api + ROLE=worker (two processes): end to end, ${n} first failed payments → emails (ratio to the baseline ${fmt(split.e2e / baseRate, 2)})`, split.e2e, 'events/s');
      report.info(S, 'ROLE=api + ROLE=worker: stage accepted', split.acceptedRate, 'events/s');
      report.info(S, 'ROLE=api + ROLE=worker: stage projected', split.projectedRate, 'events/s');
      report.info(S, 'ROLE=api + ROLE=worker: stage email queued', split.queuedRate, 'events/s');
      report.info(S, 'ROLE=api + ROLE=worker: RSS of both processes after the scenario', split.rss, 'MiB');
      report.phase(S, `Lifeline ROLE=api + ROLE=worker: ${n} webhooks → emails (server = worker child; the api child counts as "other")`, split.cpu, { rps: split.e2e, accepted: split.acceptedRate, projected: split.projectedRate, queued: split.queuedRate, rssMiB: split.rss });
      report.note(`${S}: ${o.connections} keep-alive connections, closed loop, ${n} requests to each server; ${all.sent} dunning-soft-1 messages recorded (ROLE=all). RESEND_RATE_LIMIT=1000 (the highest allowed; 100,000 emails/s at 100 per request), fake Resend without a limit.`);
    } finally {
      await fake.close();
    }
  },
};
