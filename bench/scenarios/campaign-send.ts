// Campaign send: 100k contacts reach a send step at once; every email goes to a fake Resend
// that enforces 10 requests/s (Resend's limits are per team, per second). The ceiling is
// 10 req/s × 100 emails per batch request = 1,000 emails/s; the target is ≥ 95 % of it with no
// duplicate and no lost email.
//
// Two phases, each with a fresh Lifeline (ROLE=all, the real Resend SDK pointed at the fake):
//   queued   – 100k messages already queued (the sender alone: claim, render, batch, record);
//   workflow – 100k workflow runs whose wait ends now, right before a send_email step (the engine
//              wakes them, decides each send, queues the messages, and the sender delivers).
// BENCH_CAMPAIGN_SIZE=N changes the 100k (e.g. for a quick look).
import { startFakeResend, type FakeResend } from '../../test/helpers/fake-resend.ts';
import type { BenchContext, Scenario } from '../lib/context.ts';
import { cpuMeter, describeCpu } from '../lib/cpu.ts';
import { fmt, progress, sleep } from '../lib/log.ts';
import { ADMIN_TOKEN } from '../lib/payloads.ts';

const S = 'campaign-send';
const RATE = 10;
const BATCH = 100;
const CEILING = RATE * BATCH;
const WORKFLOW_KEY = 'bench-campaign';

function size(): number {
  const n = Number(process.env.BENCH_CAMPAIGN_SIZE ?? 100_000);
  if (!Number.isInteger(n) || n < 1000) throw new Error('BENCH_CAMPAIGN_SIZE must be a whole number ≥ 1000');
  return n;
}

/** A marketing workflow: a short wait, then one send (the 100k runs are generated at the wait). */
const definition = {
  key: WORKFLOW_KEY,
  name: 'Bench campaign',
  description: 'Benchmark: one marketing email after a wait.',
  category: 'marketing',
  trigger: { type: 'event', event: 'bench.campaign' },
  entry: { mode: 'once' },
  steps: [
    { id: 'pause', type: 'wait', duration: 'PT1M' },
    { id: 'offer', type: 'send_email', template: 'winback-offer', subject: 'A better price to come back, {{firstName}}' },
  ],
};

async function generateContacts(ctx: BenchContext, n: number): Promise<void> {
  const t0 = performance.now();
  await ctx.sql`truncate contacts, messages, message_events, workflow_runs, run_trace restart identity cascade`;
  await ctx.sql`
    insert into contacts (user_id, email, traits, created_at, updated_at)
    select 'bench-user-' || i, 'bench' || i || '@example.com',
           jsonb_build_object('firstName', (array['Ada','Grace','Linus','Ken','Barbara','Edsger'])[1 + i % 6], 'plan', 'team', 'locale', (array['en-US','de-DE','fr-FR'])[1 + i % 3]),
           now(), now()
    from generate_series(1, ${n}) as i`;
  await ctx.sql`analyze contacts`;
  progress(S, `${fmt(n)} contacts generated in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}

interface PhaseResult {
  ratePerSec: number;
  delivered: number;
  duplicates: number;
  lost: number;
  rateLimited: number;
  seconds: number;
  startupSeconds: number;
}

/** Waits until `n` distinct messages reached the fake (or no progress for 60 s), then checks the books. */
async function deliver(ctx: BenchContext, label: string, fake: FakeResend, n: number, env: Record<string, string>, senderEnv?: Record<string, string>): Promise<PhaseResult> {
  const started = Date.now(); // the fake stamps requests with Date.now()
  // With senderEnv: a second process that only sends (the first one's WORKER_TASKS leave it out).
  const sender = senderEnv ? await ctx.startChild(`lifeline ${label} sender`, 'server-child.ts', senderEnv) : null;
  const server = await ctx.startChild(`lifeline ${label}`, 'server-child.ts', env);
  const t0 = performance.now();
  const meter = cpuMeter(server.pid);
  let last = 0;
  let lastChange = performance.now();
  let lastReport = performance.now();
  while (fake.accepted.length < n) {
    await sleep(200);
    if (fake.accepted.length !== last) {
      last = fake.accepted.length;
      lastChange = performance.now();
    }
    if (performance.now() - lastReport > 10_000) {
      lastReport = performance.now();
      const secs = (performance.now() - t0) / 1000;
      progress(`${S}/${label}`, `${fmt(fake.accepted.length)} / ${fmt(n)} delivered after ${secs.toFixed(0)} s (${fmt(fake.accepted.length / secs)}/s)`);
    }
    if (performance.now() - lastChange > 60_000) break;
  }
  const sends = fake.requests.filter((r) => r.path.startsWith('/emails')).map((r) => r.at).sort((a, b) => a - b);
  const perRequest = fake.accepted.length / Math.max(1, sends.length);
  const gaps = sends.slice(1).map((t, i) => t - sends[i]!).sort((a, b) => a - b);
  if (gaps.length > 0) progress(`${S}/${label}`, `${sends.length} requests, ${perRequest.toFixed(1)} emails each; gaps between arrivals at the fake (ms): min ${gaps[0]}, p10 ${gaps[Math.floor(gaps.length * 0.1)]}, p50 ${gaps[Math.floor(gaps.length / 2)]}, p90 ${gaps[Math.floor(gaps.length * 0.9)]}, max ${gaps[gaps.length - 1]}`);
  const first = Math.min(...sends);
  const lastAccepted = Math.max(...sends);
  const cpu = meter();
  // The send rate: from the first request to the last, plus the one interval the last request
  // stands for (n requests at the limit span n − 1 intervals). Start-up (the service starting,
  // compiling templates; the engine waking the first runs) is reported separately.
  const seconds = (lastAccepted - first) / 1000 + 1 / RATE;
  const startupSeconds = (first - started) / 1000;
  await server.stop();
  if (sender) await sender.stop();
  const ids = new Set(fake.accepted.map((a) => a.headers['X-Lifeline-Message-Id']));
  const [books] = await ctx.sql<{ sent: number; other: number }[]>`
    select count(*) filter (where status = 'sent')::int as sent, count(*) filter (where status <> 'sent')::int as other from messages`;
  const rateLimited = fake.requests.filter((r) => r.path.startsWith('/emails')).length - new Set(fake.requests.map((r) => r.headers['idempotency-key'])).size;
  const result: PhaseResult = {
    ratePerSec: ids.size / seconds,
    delivered: ids.size,
    duplicates: fake.accepted.length - ids.size,
    lost: n - ids.size,
    rateLimited,
    seconds,
    startupSeconds,
  };
  ctx.report.phase(S, label, cpu, { emails: ids.size, seconds });
  progress(`${S}/${label}`, `first request ${startupSeconds.toFixed(1)} s after the service started; ${fmt(ids.size)} emails in ${seconds.toFixed(1)} s = ${fmt(result.ratePerSec)}/s (ceiling ${fmt(CEILING)}/s); duplicates ${result.duplicates}, lost ${result.lost}, requests repeated after 429/5xx ${rateLimited}; messages sent ${books!.sent}, other ${books!.other}`);
  progress(`${S}/${label}`, describeCpu(cpu));
  return result;
}

function report(ctx: BenchContext, label: string, r: PhaseResult): void {
  ctx.report.ratio(S, `${label}: emails/s to Resend at 10 req/s`, Math.round(r.ratePerSec), 'emails/s', CEILING, 0.95);
  ctx.report.info(S, `${label}: service start → first request`, Math.round(r.startupSeconds * 10) / 10, 's');
  ctx.report.info(S, `${label}: requests repeated after a 429/5xx`, r.rateLimited, 'requests');
  const clean = r.duplicates === 0 && r.lost === 0;
  ctx.report.rows.push({ scenario: S, figure: `${label}: duplicates + lost`, value: r.duplicates + r.lost, unit: 'emails', baseline: null, ratio: null, target: '= 0', holds: clean ? 'yes' : 'no' });
}

async function runWorkflowPhase(
  ctx: BenchContext,
  n: number,
  label: string,
  env: (fake: FakeResend) => Record<string, string>,
  senderEnv: ((fake: FakeResend) => Record<string, string>) | null,
): Promise<void> {
  await ctx.sql`truncate messages, message_events, workflow_runs, run_trace restart identity cascade`;
  const installer = await ctx.startLifeline('api');
  const put = await fetch(`${installer.url}/v1/workflows/${WORKFLOW_KEY}`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify(definition),
  });
  await installer.stop();
  if (!put.ok) throw new Error(`installing the bench workflow: ${put.status} ${await put.text()}`);
  const t0 = performance.now();
  await ctx.sql`
    insert into workflow_runs (workflow_key, version, contact_id, run_key, status, state, due_at, started_at, updated_at)
    select ${WORKFLOW_KEY}, v.version, c.id, 'once', 'active',
           jsonb_build_object(
             'status', 'active', 'stepId', 'pause', 'wait', jsonb_build_object('kind', 'time', 'until', to_jsonb(now())),
             'variants', '{}'::jsonb, 'holdout', false,
             'vars', jsonb_build_object('trigger', jsonb_build_object('name', 'bench.campaign', 'properties', '{}'::jsonb, 'occurredAt', to_jsonb(now() - interval '1 minute')), 'matched', '{}'::jsonb),
             'startedAt', to_jsonb(now() - interval '1 minute'), 'endedAt', null, 'endReason', null, 'convertedAt', null),
           now(), now() - interval '1 minute', now()
    from contacts c, (select max(version) as version from workflow_versions where key = ${WORKFLOW_KEY}) v`;
  await ctx.sql`analyze workflow_runs`;
  await ctx.settle();
  progress(`${S}/${label}`, `${fmt(n)} runs due at their send step, generated in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  const fake = await startFakeResend({ ratePerSecond: RATE, keepContent: false });
  try {
    const result = await deliver(ctx, label, fake, n, env(fake), senderEnv ? senderEnv(fake) : undefined);
    report(ctx, label, result);
    const [runs] = await ctx.sql<{ waiting: number; done: number }[]>`
      select count(*) filter (where state->>'stepId' = 'pause')::int as waiting, count(*) filter (where status <> 'active' or state->>'stepId' is distinct from 'pause')::int as done from workflow_runs`;
    progress(`${S}/${label}`, `runs still at the wait: ${runs!.waiting}, moved on: ${runs!.done}`);
  } finally {
    await fake.close();
  }
}

export const campaignSend: Scenario = {
  name: S,
  description: '100k contacts reach a send step; fake Resend at 10 req/s (ceiling 1,000 emails/s)',
  async run(ctx) {
    const n = size();
    await generateContacts(ctx, n);

    const common = (fake: FakeResend) => ({
      ROLE: 'all',
      RESEND_API_KEY: 're_bench_key',
      RESEND_BASE_URL: fake.url,
      RESEND_RATE_LIMIT: String(RATE),
      // The campaign is the point: no quiet hours (the run may be at night) and no cap.
      QUIET_HOURS: 'off',
      FREQUENCY_CAP: 'off',
    });

    // Phase 1: the sender alone.
    {
      await ctx.sql`
        insert into messages (id, contact_id, to_email, template, subject, category, status, created_at, updated_at)
        select 'bench-msg-' || c.id, c.id, c.email, 'winback-offer', 'A better price to come back', 'marketing', 'queued', now(), now()
        from contacts c`;
      await ctx.sql`analyze messages`;
      await ctx.settle();
      const fake = await startFakeResend({ ratePerSecond: RATE, keepContent: false });
      try {
        report(ctx, 'queued', await deliver(ctx, 'queued', fake, n, common(fake)));
      } finally {
        await fake.close();
      }
    }

    // Phase 2: through the engine, in one process (ROLE=all) and with the sender in a process
    // of its own (WORKER_TASKS), which is how a campaign-heavy deployment would run it.
    await runWorkflowPhase(ctx, n, 'workflow', common, null);
    await runWorkflowPhase(
      ctx,
      n,
      'workflow, sender apart',
      (fake) => ({ ...common(fake), ROLE: 'worker', WORKER_TASKS: 'inbox,engine,webhooks' }),
      (fake) => ({ ...common(fake), ROLE: 'worker', WORKER_TASKS: 'email' }),
    );
  },
};
