// Event → action latency at low load: from the HTTP request that carries a fact to the email for
// it reaching the email provider (a fake Resend in this process, reached by the real Resend SDK
// in the Lifeline child), and to the send being recorded (messages.sent_at).
//
// Path 1: signed invoice.payment_failed webhooks, each for a new customer with its own email:
//   the built-in billing-recovery workflow sends its first email at once (day 0) for every
//   decline class, so the built-in definition is measured as shipped.
// Path 2: runs parked in a wait_for_event step, woken by a `track`. No built-in workflow sends on
//   a wait_for_event match (their onEvent branches are empty; their emails go out on timeout), so
//   a bench definition is installed through the admin API: trigger → wait_for_event (P7D) →
//   send_email.
//
// Request start and the fake Resend's receive time are both this process's clock (Date.now());
// the database timestamps (stored, projected, queued, recorded sent) come from the child and
// PostgreSQL on the same machine and give the stage breakdown.
import { randomBytes } from 'node:crypto';
import { startFakeResend, type FakeResend } from '../../test/helpers/fake-resend.ts';
import type { ChildServer } from '../lib/child.ts';
import type { BenchContext, Scenario } from '../lib/context.ts';
import { paced, type PacedResult } from '../lib/load.ts';
import { fmt, progress, sleep } from '../lib/log.ts';
import { ADMIN_TOKEN, type HttpRequestSpec, stripeDeliveries, WRITE_KEY } from '../lib/payloads.ts';

const S = 'event-latency';
/** requests per second: low load */
const RATE = 5;
/** facts per path in the main (ROLE=all) run */
const MAIN_COUNT = 200;
/** facts per path in the secondary runs (api+worker, default rate limit) */
const SIDE_COUNT = 100;
/** how long to wait for the last email after the last request */
const RECEIPT_LIMIT_MS = 30_000;
/** Resend requests/s for the main run: above the offered 5 sends/s, so the limit never binds */
const MAIN_RATE_LIMIT = 10;
const P50_TARGET_MS = 100;
const P99_TARGET_MS = 500;

const WAIT_KEY = 'bench-event-latency';
const ARM_EVENT = 'Bench Latency Armed';
const ACTION_EVENT = 'Bench Latency Action';
const WAIT_DEFINITION = {
  key: WAIT_KEY,
  name: 'Bench: react to a product event',
  description: 'Benchmark only: waits for one product event, then sends one email.',
  category: 'lifecycle',
  trigger: { type: 'event', event: ARM_EVENT },
  entry: { mode: 'once' },
  steps: [
    {
      id: 'wait_action',
      type: 'wait_for_event',
      event: ACTION_EVENT,
      timeout: 'P7D',
      onEvent: [{ id: 'react', type: 'send_email', template: 'activation-create-project', subject: 'You did it: here is what comes next' }],
      onTimeout: [],
    },
  ],
};

/** One fact sent: what identifies its email and its database rows. */
interface Item {
  email: string;
  /** stripe_events.id or product_events.message_id */
  sourceId: string;
  /** Date.now() right before the request was written */
  start: number;
}

interface Timed extends Item {
  received: number | null;
  stored: number | null;
  projected: number | null;
  queued: number | null;
  sent: number | null;
  status: string | null;
}

function pct(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

/** The first time the fake Resend received an email to each address (single and batch sends). */
function receipts(fake: FakeResend): Map<string, number> {
  const out = new Map<string, number>();
  for (const r of fake.requests) {
    const emails = Array.isArray(r.body) ? r.body : [r.body];
    for (const e of emails as { to?: unknown }[]) {
      const to = Array.isArray(e?.to) ? String(e.to[0]) : e?.to ? String(e.to) : null;
      if (to && !out.has(to.toLowerCase())) out.set(to.toLowerCase(), r.at);
    }
  }
  return out;
}

async function http(url: string, method: 'POST' | 'PUT', body: unknown, token: string): Promise<unknown> {
  const res = await fetch(url, { method, headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` }, body: JSON.stringify(body) });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${url}: ${res.status} ${text.slice(0, 300)}`);
  return text ? JSON.parse(text) : null;
}

interface PathResult {
  items: Timed[];
  http: PacedResult;
  /** latency to the fake Resend receiving the email, ms, for the emails that arrived */
  toResend: number[];
  /** latency to messages.sent_at */
  toRecorded: number[];
  missing: number;
  stages: Record<string, number[]>;
}

/**
 * Send `count` requests at RATE/s (open loop, evenly paced), then wait until the fake has every
 * email (bounded) and read the database timestamps.
 */
async function measure(
  ctx: BenchContext,
  options: { label: string; url: string; cpuPid: number; fake: FakeResend; count: number; next: () => { spec: HttpRequestSpec; email: string; sourceId: string }; source: 'stripe' | 'product' },
): Promise<PathResult> {
  const items: Item[] = [];
  const result = await paced({
    label: options.label,
    url: options.url,
    serverPid: options.cpuPid,
    rate: RATE,
    warmupSec: 0,
    durationSec: options.count / RATE,
    maxSockets: 10,
    next: () => {
      const n = options.next();
      items.push({ email: n.email.toLowerCase(), sourceId: n.sourceId, start: Date.now() });
      return n.spec;
    },
  });
  const until = performance.now() + RECEIPT_LIMIT_MS;
  let got = receipts(options.fake);
  while (items.some((i) => !got.has(i.email)) && performance.now() < until) {
    await sleep(50);
    got = receipts(options.fake);
  }
  // sent_at is written just after the provider answers: give the last one a moment.
  await sleep(300);

  const emails = items.map((i) => i.email);
  const ids = items.map((i) => i.sourceId);
  const messages = await ctx.sql<{ email: string; created_at: Date; sent_at: Date | null; status: string }[]>`
    select lower(to_email) as email, created_at, sent_at, status from messages where lower(to_email) = any(${emails}::text[]) order by created_at`;
  const sources =
    options.source === 'stripe'
      ? await ctx.sql<{ id: string; received_at: Date; processed_at: Date | null }[]>`
          select id, received_at, processed_at from stripe_events where id = any(${ids}::text[])`
      : await ctx.sql<{ id: string; received_at: Date; processed_at: Date | null }[]>`
          select message_id as id, received_at, processed_at from product_events where message_id = any(${ids}::text[])`;
  const byEmail = new Map<string, (typeof messages)[number]>();
  for (const m of messages) if (!byEmail.has(m.email)) byEmail.set(m.email, m);
  const bySource = new Map(sources.map((s) => [s.id, s]));

  const timed: Timed[] = items.map((i) => {
    const m = byEmail.get(i.email);
    const s = bySource.get(i.sourceId);
    return {
      ...i,
      received: got.get(i.email) ?? null,
      stored: s?.received_at.getTime() ?? null,
      projected: s?.processed_at?.getTime() ?? null,
      queued: m?.created_at.getTime() ?? null,
      sent: m?.sent_at?.getTime() ?? null,
      status: m?.status ?? null,
    };
  });
  const diff = (pick: (t: Timed) => [number | null, number | null]) =>
    timed.flatMap((t) => {
      const [a, b] = pick(t);
      return a !== null && b !== null ? [b - a] : [];
    });
  const stages = {
    'request → stored': diff((t) => [t.start, t.stored]),
    'stored → projected': diff((t) => [t.stored, t.projected]),
    'projected → email queued': diff((t) => [t.projected, t.queued]),
    'queued → at Resend': diff((t) => [t.queued, t.received]),
    'at Resend → recorded sent': diff((t) => [t.received, t.sent]),
  };
  const toResend = diff((t) => [t.start, t.received]);
  const toRecorded = diff((t) => [t.start, t.sent]);
  const missing = timed.filter((t) => t.received === null).length;
  const line = (xs: number[]) => `p50 ${fmt(pct(xs, 50))} / p99 ${fmt(pct(xs, 99))} / max ${fmt(pct(xs, 100))} ms`;
  progress(options.label, `to Resend: ${line(toResend)} (${toResend.length}/${items.length} arrived${missing ? `, ${missing} NOT within ${RECEIPT_LIMIT_MS / 1000}s` : ''}); to recorded sent: ${line(toRecorded)}`);
  progress(options.label, `stages p50/p99 ms: ${Object.entries(stages).map(([k, v]) => `${k} ${fmt(pct(v, 50))}/${fmt(pct(v, 99))}`).join('; ')}`);
  // When the slowest facts were sent (a tail at the start is the new process warming up; one in
  // the middle, a pause of the machine or of the service).
  const slowest = timed
    .map((t, i) => ({ i, at: (t.start - timed[0]!.start) / 1000, total: t.received === null ? Infinity : t.received - t.start }))
    .sort((a, b) => b.total - a.total)
    .slice(0, 3);
  progress(options.label, `slowest: ${slowest.map((s) => `#${s.i + 1} (sent at ${s.at.toFixed(1)} s) ${fmt(s.total)} ms`).join(', ')}`);
  return { items: timed, http: result, toResend, toRecorded, missing, stages };
}

function stageSummary(r: PathResult): string {
  return Object.entries(r.stages)
    .map(([k, v]) => `${k} ${fmt(pct(v, 50))}/${fmt(pct(v, 99))}`)
    .join(', ');
}

export const eventLatency: Scenario = {
  name: S,
  description: `event → action latency at ${RATE}/s: payment_failed webhook, and a track awaited by wait_for_event, to the email at (fake) Resend`,
  async run(ctx) {
    const { report, sql } = ctx;
    const tag = randomBytes(3).toString('hex');
    const deliveries = stripeDeliveries({ idPrefix: `lat${tag}` });
    let userSeq = 0;

    // Earlier scenarios leave backlogs (unprocessed inbox rows, timeline facts not yet fed to the
    // engine, queued messages): mark them done so this scenario times only its own facts.
    await sql`update stripe_events set processed_at = now() where processed_at is null`;
    await sql`update product_events set processed_at = now() where processed_at is null`;
    await sql`update domain_events set engine_processed_at = now() where engine_processed_at is null`;
    await sql`update messages set status = 'skipped', status_reason = 'bench: left over from an earlier scenario' where status in ('queued', 'sending')`;
    await sql`delete from rate_limits where name like 'email:%'`; // no send slot reserved ahead by an earlier scenario

    const fake = await startFakeResend();
    progress(S, `fake Resend on ${fake.url}`);
    // Sends go through the real Resend SDK to the fake. QUIET_HOURS off: the bench workflow is a
    // lifecycle one and would otherwise be held overnight (by the wall clock of the run).
    const env = (rateLimit: number) => ({ RESEND_API_KEY: 're_bench', RESEND_BASE_URL: fake.url, RESEND_RATE_LIMIT: String(rateLimit), QUIET_HOURS: 'off' });
    const children: ChildServer[] = [];
    const start = async (role: 'all' | 'api' | 'worker', rateLimit: number) => {
      const c = await ctx.startChild(`lifeline ROLE=${role}`, 'server-child.ts', { ROLE: role, ...env(rateLimit) });
      children.push(c);
      return c;
    };
    const stopAll = async () => {
      for (const c of children.splice(0)) await c.stop({ graceful: false });
    };

    const webhookNext = () => {
      const spec = deliveries.next();
      const ids = deliveries.ids(deliveries.count());
      return { spec, email: ids.email, sourceId: ids.eventId };
    };

    /** Create `count` runs waiting in wait_for_event; returns the user ids and emails, in order. */
    const armRuns = async (apiUrl: string, count: number) => {
      const users = Array.from({ length: count }, () => {
        const i = ++userSeq;
        return { userId: `lat_${tag}_${i}`, email: `lat_${tag}_${i}@example.org` };
      });
      const [before] = await sql<{ n: number }[]>`select count(*)::int as n from workflow_runs where workflow_key = ${WAIT_KEY} and status = 'active'`;
      for (let k = 0; k < users.length; k += 100) {
        const batch = users.slice(k, k + 100).flatMap((u) => [
          { type: 'identify', userId: u.userId, traits: { email: u.email, name: 'Bench User' }, messageId: `${u.userId}_id` },
          { type: 'track', userId: u.userId, event: ARM_EVENT, properties: {}, messageId: `${u.userId}_arm` },
        ]);
        await http(`${apiUrl}/v1/batch`, 'POST', { batch }, WRITE_KEY);
      }
      const t0 = performance.now();
      let waiting = 0;
      while (performance.now() - t0 < 60_000) {
        const [r] = await sql<{ n: number }[]>`
          select count(*)::int as n from workflow_runs
          where workflow_key = ${WAIT_KEY} and status = 'active' and state->'wait'->>'kind' = 'event'`;
        waiting = r!.n - before!.n;
        if (waiting >= count) break;
        await sleep(100);
      }
      if (waiting < count) throw new Error(`only ${waiting} of ${count} runs reached wait_for_event within 60 s`);
      progress(S, `${count} runs waiting in wait_for_event after ${fmt((performance.now() - t0) / 1000, 1)} s`);
      let next = 0;
      return () => {
        const u = users[next++]!;
        const messageId = `${u.userId}_act`;
        const body = JSON.stringify({ userId: u.userId, event: ACTION_EVENT, properties: { source: 'bench' }, messageId, timestamp: new Date().toISOString() });
        return {
          spec: { method: 'POST' as const, path: '/v1/track', headers: { 'content-type': 'application/json', authorization: `Bearer ${WRITE_KEY}` }, body },
          email: u.email,
          sourceId: messageId,
        };
      };
    };

    const rows = (scope: string, r: PathResult, withTargets: boolean) => {
      if (withTargets) {
        report.atMost(S, `${scope}: p50 to email at Resend`, pct(r.toResend, 50), 'ms', P50_TARGET_MS);
        report.atMost(S, `${scope}: p99 to email at Resend`, pct(r.toResend, 99), 'ms', P99_TARGET_MS);
        report.info(S, `${scope}: max to email at Resend`, pct(r.toResend, 100), 'ms');
        report.info(S, `${scope}: p50 to send recorded (messages.sent_at)`, pct(r.toRecorded, 50), 'ms');
        report.info(S, `${scope}: p99 to send recorded (messages.sent_at)`, pct(r.toRecorded, 99), 'ms');
      } else {
        report.info(S, `${scope}: p50 to email at Resend`, pct(r.toResend, 50), 'ms');
        report.info(S, `${scope}: p99 to email at Resend`, pct(r.toResend, 99), 'ms');
      }
      report.info(S, `${scope}: emails at Resend, of ${r.items.length} facts sent${r.missing ? ` (${r.missing} missing after ${RECEIPT_LIMIT_MS / 1000}s)` : ''}`, r.toResend.length, 'emails');
    };
    const phase = (name: string, r: PathResult) =>
      report.phase(S, name, r.http.cpu, {
        rate: RATE,
        achieved: r.http.achievedRate,
        httpP50: r.http.p50,
        httpP99: r.http.p99,
        toResendP50: pct(r.toResend, 50),
        toResendP99: pct(r.toResend, 99),
        toRecordedP50: pct(r.toRecorded, 50),
        toRecordedP99: pct(r.toRecorded, 99),
        stages: Object.fromEntries(Object.entries(r.stages).map(([k, v]) => [k, { p50: pct(v, 50), p99: pct(v, 99) }])),
      });

    try {
      // 1. ROLE=all, Resend limit above the offered rate: the product's own reaction time.
      await ctx.settle();
      const all = await start('all', MAIN_RATE_LIMIT);
      await http(`${all.url}/v1/workflows/${WAIT_KEY}`, 'PUT', WAIT_DEFINITION, ADMIN_TOKEN);

      const p1 = await measure(ctx, { label: `${S}/payment_failed ROLE=all`, url: all.url, cpuPid: all.pid, fake, count: MAIN_COUNT, next: webhookNext, source: 'stripe' });
      const track = await armRuns(all.url, MAIN_COUNT);
      await ctx.settle();
      const p2 = await measure(ctx, { label: `${S}/wait_for_event ROLE=all`, url: all.url, cpuPid: all.pid, fake, count: MAIN_COUNT, next: track, source: 'product' });
      await stopAll();
      rows(`ROLE=all, payment_failed webhook → dunning email (${RATE}/s)`, p1, true);
      rows(`ROLE=all, track awaited by wait_for_event → email (${RATE}/s)`, p2, true);
      phase(`ROLE=all, payment_failed webhooks at ${RATE}/s`, p1);
      phase(`ROLE=all, awaited tracks at ${RATE}/s`, p2);
      report.note(
        `${S}: stages (p50/p99 ms, ROLE=all): webhook path: ${stageSummary(p1)}; wait_for_event path: ${stageSummary(p2)}. ` +
          '"stored" is stripe_events/product_events.received_at (PostgreSQL now()), "projected" the inbox batch\'s processed_at, "queued" messages.created_at (engine), "at Resend" the fake\'s receive time (bench clock), "recorded sent" messages.sent_at.',
      );

      // 2. ROLE=api + ROLE=worker in two processes (information only).
      await ctx.settle();
      const worker = await start('worker', MAIN_RATE_LIMIT);
      const api = await start('api', MAIN_RATE_LIMIT);
      const s1 = await measure(ctx, { label: `${S}/payment_failed api+worker`, url: api.url, cpuPid: worker.pid, fake, count: SIDE_COUNT, next: webhookNext, source: 'stripe' });
      const track2 = await armRuns(api.url, SIDE_COUNT);
      const s2 = await measure(ctx, { label: `${S}/wait_for_event api+worker`, url: api.url, cpuPid: worker.pid, fake, count: SIDE_COUNT, next: track2, source: 'product' });
      await stopAll();
      rows(`ROLE=api + ROLE=worker, payment_failed webhook → email (${RATE}/s)`, s1, false);
      rows(`ROLE=api + ROLE=worker, track awaited by wait_for_event → email (${RATE}/s)`, s2, false);
      phase(`ROLE=api+worker, payment_failed webhooks at ${RATE}/s (server = worker child; the api child counts as "other")`, s1);
      phase(`ROLE=api+worker, awaited tracks at ${RATE}/s (server = worker child; the api child counts as "other")`, s2);

      // 3. Resend's default team limit (2 requests/s) with the same offered 5 sends/s (information only).
      await ctx.settle();
      const dflt = await start('all', 2);
      const d1 = await measure(ctx, { label: `${S}/payment_failed RESEND_RATE_LIMIT=2`, url: dflt.url, cpuPid: dflt.pid, fake, count: SIDE_COUNT, next: webhookNext, source: 'stripe' });
      await stopAll();
      rows(`ROLE=all, RESEND_RATE_LIMIT=2 (default), payment_failed webhook → email (${RATE}/s)`, d1, false);
      phase(`ROLE=all, RESEND_RATE_LIMIT=2, payment_failed webhooks at ${RATE}/s`, d1);

      report.note(
        `${S}: path 1 uses the built-in billing-recovery workflow as shipped (its first email goes out at once, day 0, for soft, hard and SCA declines alike). ` +
          `Path 2 installs a bench workflow (PUT /v1/workflows/${WAIT_KEY}: "${ARM_EVENT}" → wait_for_event "${ACTION_EVENT}", timeout P7D → send_email), because no built-in workflow sends on a wait_for_event match (their onEvent branches are empty). ` +
          `Latency = bench-clock time from the HTTP request start to the fake Resend receiving the email (real Resend SDK, RESEND_BASE_URL), cross-checked with messages.sent_at. ` +
          `The main run sets RESEND_RATE_LIMIT=${MAIN_RATE_LIMIT} (a raised Resend team limit) so that ${RATE} sends/s never wait for a rate slot, and QUIET_HOURS=off so the lifecycle bench workflow is not held overnight; ` +
          `each fact is a new contact, so the frequency cap never applies. The RESEND_RATE_LIMIT=2 rows show Resend's default team limit at the same offered rate (${RATE} emails/s > 2 requests/s: the sender has to batch).`,
      );
    } finally {
      await stopAll();
      await fake.close();
    }
  },
};
