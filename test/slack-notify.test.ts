// Slack alerts (issue 13): a notify row for a billing-recovery run is delivered to a fake Slack
// incoming webhook as a Block Kit message (customer, amount, MRR, decline reason, days in dunning,
// links); Slack 500 and 429 are retried with backoff; once per (run, step); dead letter at the end.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ManualClock } from '../src/clock.ts';
import { createSlackNotifier, retryAfterMs } from '../src/notify/slack-notifier.ts';
import { createLogger } from '../src/logger.ts';
import { ADMIN_TOKEN, build } from './helpers/build.ts';
import { deliver, envelope, invoice, subscription } from './helpers/stripe.ts';

interface FakeSlack {
  url: string;
  received: Array<{ text: string; blocks: Array<Record<string, unknown>> }>;
  /** statuses to answer next, in order; then 200 "ok" */
  answers: number[];
  /** the Retry-After header of a 429 */
  retryAfter: string;
}

async function fakeSlack(t: TestContext): Promise<FakeSlack> {
  const fake: FakeSlack = { url: '', received: [], answers: [], retryAfter: '1' };
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      const status = fake.answers.shift() ?? 200;
      if (status === 200) fake.received.push(JSON.parse(body));
      res.writeHead(status, { 'content-type': 'text/plain', ...(status === 429 ? { 'retry-after': fake.retryAfter } : {}) });
      res.end(status === 200 ? 'ok' : status === 429 ? 'rate_limited' : 'internal_error');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  fake.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/services/T000/B000/XXXX`;
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return fake;
}

async function failedRun(t: TestContext) {
  const clock = new ManualClock('2025-10-16T12:00:00Z'); // 2.5 days after the failure
  const svc = await build(t, { clock });
  const customer = { id: 'cus_big', object: 'customer', email: 'ada@big.test', name: 'Big Corp', invoice_settings: { default_payment_method: 'pm_1' }, metadata: {}, created: 1_750_000_000 };
  for (const [type, object, created] of [
    ['customer.created', customer, 1_759_000_000],
    ['customer.subscription.created', subscription({ id: 'sub_big', customer: 'cus_big', unit_amount: 250_000 }), 1_759_000_000],
    ['customer.subscription.created', subscription({ id: 'sub_big_eu', customer: 'cus_big', unit_amount: 10_000, currency: 'eur' }), 1_759_000_000],
    ['invoice.payment_failed', invoice({ id: 'in_big', customer: 'cus_big', subscription: 'sub_big', amount_due: 250_000 }), 1_760_400_000],
  ] as const) {
    assert.equal((await deliver(svc.app, envelope(type, object, { created }))).statusCode, 200);
  }
  await svc.drain();
  const [run] = await svc.sql<{ id: number }[]>`select id from workflow_runs where workflow_key = 'billing-recovery' and run_key = 'in_big'`;
  assert.ok(run, 'the failure started a billing-recovery run');
  return { svc, clock, runId: run.id };
}

test('a notify row becomes one Block Kit message with customer, amount, MRR per currency, decline, days, links', async (t) => {
  const slack = await fakeSlack(t);
  const { svc, clock, runId } = await failedRun(t);
  const notifier = createSlackNotifier({ sql: svc.sql, clock, logger: createLogger('silent'), defaultWebhookUrl: slack.url });
  const insert = () => svc.sql`insert into slack_notifications (id, run_id, step_id, text, created) values (${`${runId}:alert`}, ${runId}, 'alert', 'High-value payment failed', ${clock.now()}) on conflict (id) do nothing`;
  await insert();
  await insert(); // the same (run, step) again: still one row
  assert.equal(await notifier.drain(), 1);
  assert.equal(slack.received.length, 1);
  const message = slack.received[0]!;
  assert.equal(message.text, 'High-value payment failed');
  assert.deepEqual(message.blocks.map((b) => b.type), ['header', 'section', 'actions']);
  const fields = (message.blocks[1] as { fields: Array<{ text: string }> }).fields.map((f) => f.text);
  assert.ok(fields.includes('*Customer*\nBig Corp'), fields.join(' | '));
  assert.ok(fields.includes('*Amount due*\n$2,500.00'));
  assert.ok(fields.includes('*MRR*\n€100.00 + $2,500.00'), fields.join(' | ')); // never added across currencies
  assert.ok(fields.includes('*Days in dunning*\n2'));
  assert.ok(fields.some((f) => f.startsWith('*Decline reason*\n') && f !== '*Decline reason*\n—'));
  const buttons = (message.blocks[2] as { elements: Array<{ url: string }> }).elements.map((e) => e.url);
  assert.deepEqual(buttons, ['https://dashboard.stripe.com/customers/cus_big', 'https://invoice.stripe.com/i/in_big']);
  // sent: nothing more to do, ever
  clock.advance(3_600_000);
  assert.equal(await notifier.drain(), 0);
  assert.equal(slack.received.length, 1);
});

test('Slack 500 is retried with backoff, 429 when its Retry-After says; out of attempts → dead letter', async (t) => {
  const slack = await fakeSlack(t);
  const { svc, clock, runId } = await failedRun(t);
  const notifier = createSlackNotifier({ sql: svc.sql, clock, logger: createLogger('silent'), defaultWebhookUrl: slack.url });
  await svc.sql`insert into slack_notifications (id, run_id, step_id, text, created) values (${`${runId}:a`}, ${runId}, 'a', 'Payment failed', ${clock.now()})`;
  slack.answers.push(500, 429);
  slack.retryAfter = '30';
  await notifier.runOnce();
  let [row] = await svc.sql<{ attempts: number; last_error: string; sent_at: Date | null }[]>`select attempts, last_error, sent_at from slack_notifications`;
  assert.equal(row!.attempts, 1);
  assert.match(row!.last_error, /HTTP 500/);
  assert.equal(await notifier.runOnce(), 0, 'backoff: not due yet');
  clock.advance(5_000);
  await notifier.runOnce();
  [row] = await svc.sql<{ attempts: number; last_error: string; sent_at: Date | null }[]>`select attempts, last_error, sent_at from slack_notifications`;
  assert.equal(row!.attempts, 2);
  assert.match(row!.last_error, /HTTP 429/);
  clock.advance(10_000);
  assert.equal(await notifier.runOnce(), 0, 'not at the doubled backoff (10 s): Slack said 30 s');
  clock.advance(19_999);
  assert.equal(await notifier.runOnce(), 0, 'not before Retry-After');
  clock.advance(1);
  await notifier.runOnce();
  [row] = await svc.sql<{ attempts: number; last_error: string; sent_at: Date | null }[]>`select attempts, last_error, sent_at from slack_notifications`;
  assert.ok(row!.sent_at);
  assert.equal(slack.received.length, 1);

  // a webhook that always fails ends in the dead letters after 8 attempts
  await svc.sql`insert into slack_notifications (id, run_id, step_id, text, created) values (${`${runId}:b`}, ${runId}, 'b', 'Payment failed', ${clock.now()})`;
  slack.answers.push(...Array(8).fill(500));
  for (let i = 0; i < 8; i++) {
    await notifier.runOnce();
    clock.advance(900_000);
  }
  const dead = await notifier.queue.dead(10);
  assert.deepEqual(dead.map((d) => d.id), [`${runId}:b`]);
  const listed = await svc.app.inject({ method: 'GET', url: '/v1/admin/dead-letters?queue=slack-notifications', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
  assert.equal(listed.statusCode, 200, listed.body);
  assert.match(listed.body, new RegExp(`"${runId}:b"`));
  assert.doesNotMatch(listed.body, /services\/T000/, 'the webhook URL (a secret) is not shown');
  assert.equal(slack.received.length, 1);
});

test('Retry-After: delay-seconds or an HTTP-date, clamped to an hour; absent or unreadable → the backoff', () => {
  const now = new Date('2025-10-16T12:00:00Z');
  assert.equal(retryAfterMs('30', now), 30_000);
  assert.equal(retryAfterMs(' 0 ', now), 0);
  assert.equal(retryAfterMs('Thu, 16 Oct 2025 12:02:00 GMT', now), 120_000);
  assert.equal(retryAfterMs('Thu, 16 Oct 2025 11:00:00 GMT', now), 0, 'a date in the past: retry now');
  assert.equal(retryAfterMs('86400', now), 3_600_000);
  assert.equal(retryAfterMs(null, now), null);
  assert.equal(retryAfterMs('soon', now), null);
});

test('a notify step in a published definition alerts only above an MRR threshold, once per (run, step), and shows in the trace', async (t) => {
  const slack = await fakeSlack(t);
  const clock = new ManualClock('2025-10-16T12:00:00Z');
  const svc = await build(t, { clock, env: { SLACK_WEBHOOK_URL: slack.url } });
  const definition = {
    key: 'big-account-alert',
    name: 'Alert on big accounts',
    category: 'transactional',
    trigger: { type: 'event', event: 'invoice.payment_failed' },
    entry: { mode: 'once_per_key', key: 'trigger.properties.invoiceId' },
    steps: [
      {
        id: 'big',
        type: 'branch',
        branches: [
          {
            label: 'MRR at least $1,000',
            when: { all: [{ path: 'subscription.currency', op: 'eq', value: 'usd' }, { path: 'subscription.mrr', op: 'gte', value: 100_000 }] },
            steps: [{ id: 'alert', type: 'notify', channel: 'slack', text: 'High-value payment failed' }],
          },
        ],
        otherwise: [],
      },
    ],
  };
  const put = await svc.app.inject({ method: 'PUT', url: '/v1/workflows/big-account-alert', headers: { authorization: `Bearer ${ADMIN_TOKEN}` }, payload: definition });
  assert.equal(put.statusCode, 201, put.body);
  // an invalid notify step is refused at publish time
  const bad = await svc.app.inject({
    method: 'PUT',
    url: '/v1/workflows/bad-alert',
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    payload: { ...definition, key: 'bad-alert', steps: [{ id: 'alert', type: 'notify', channel: 'email', text: '' }] },
  });
  assert.equal(bad.statusCode, 400, bad.body);

  for (const [c, amount] of [['cus_big', 250_000], ['cus_small', 2_000]] as const) {
    const customer = { id: c, object: 'customer', email: `${c}@x.test`, name: c, invoice_settings: { default_payment_method: 'pm_1' }, metadata: {}, created: 1_750_000_000 };
    for (const [type, object, created] of [
      ['customer.created', customer, 1_759_000_000],
      ['customer.subscription.created', subscription({ id: `sub_${c}`, customer: c, unit_amount: amount }), 1_759_000_000],
      ['invoice.payment_failed', invoice({ id: `in_${c}`, customer: c, subscription: `sub_${c}`, amount_due: amount }), 1_760_400_000],
      ['invoice.payment_failed', invoice({ id: `in_${c}`, customer: c, subscription: `sub_${c}`, amount_due: amount, attempt_count: 2 }), 1_760_500_000],
    ] as const) {
      assert.equal((await deliver(svc.app, envelope(type, object, { created }))).statusCode, 200);
    }
  }
  await svc.drain();
  assert.equal(await svc.slack.drain(), 1);
  assert.equal(slack.received.length, 1);
  const fields = (slack.received[0]!.blocks[1] as { fields: Array<{ text: string }> }).fields.map((f) => f.text);
  assert.ok(fields.includes('*Customer*\ncus_big'), fields.join(' | '));
  const [trace] = await svc.sql<{ detail: string }[]>`
    select t.detail from run_trace t join workflow_runs r on r.id = t.run_id
    where r.workflow_key = 'big-account-alert' and t.kind = 'notify'`;
  assert.equal(trace?.detail, 'notify slack: High-value payment failed');
  clock.advance(60_000);
  await svc.drain();
  assert.equal(await svc.slack.drain(), 0);
  assert.equal(slack.received.length, 1);
});

// The built-in billing-recovery definition alerts by itself (issue 13): above RECOVERY_ALERT_MRR
// (per currency, in the failed invoice's currency) at the failure, and when the case is lost.
async function failing(svc: Awaited<ReturnType<typeof build>>, c: string, subs: Array<{ amount: number; currency: string }>, currency = subs[0]!.currency) {
  const customer = { id: c, object: 'customer', email: `${c}@x.test`, name: c, invoice_settings: { default_payment_method: 'pm_1' }, metadata: {}, created: 1_750_000_000 };
  const events: Array<[string, Record<string, unknown>, number]> = [['customer.created', customer, 1_759_000_000]];
  subs.forEach((s, i) => events.push(['customer.subscription.created', subscription({ id: `sub_${c}_${i}`, customer: c, unit_amount: s.amount, currency: s.currency }), 1_759_000_000]));
  events.push(['invoice.payment_failed', invoice({ id: `in_${c}`, customer: c, subscription: `sub_${c}_0`, amount_due: subs[0]!.amount, currency }), 1_760_400_000]);
  for (const [type, object, created] of events) assert.equal((await deliver(svc.app, envelope(type, object, { created }))).statusCode, 200);
}

test('built-in billing recovery: alerts above RECOVERY_ALERT_MRR in the invoice currency, and when a case is lost; once each', async (t) => {
  const slack = await fakeSlack(t);
  const clock = new ManualClock('2025-10-16T12:00:00Z');
  const svc = await build(t, { clock, env: { SLACK_WEBHOOK_URL: slack.url, RECOVERY_ALERT_MRR: '100000 usd, 900000 eur' } });
  await failing(svc, 'cus_big', [{ amount: 250_000, currency: 'usd' }, { amount: 10_000, currency: 'eur' }]);
  await failing(svc, 'cus_small', [{ amount: 2_000, currency: 'usd' }]);
  // 500,000 in eur is under the eur threshold; it is never compared with the usd one
  await failing(svc, 'cus_eu', [{ amount: 500_000, currency: 'eur' }]);
  // two subscriptions of 60,000 usd: 120,000 usd of MRR together (one currency: added)
  await failing(svc, 'cus_two', [{ amount: 60_000, currency: 'usd' }, { amount: 60_000, currency: 'usd' }]);
  await failing(svc, 'cus_unp', [{ amount: 3_000, currency: 'usd' }]);
  await svc.drain();
  const rows = async () => (await svc.sql<{ id: string; run_key: string; step_id: string }[]>`
    select n.id, r.run_key, n.step_id from slack_notifications n join workflow_runs r on r.id = n.run_id order by r.run_key, n.step_id`).map((r) => [r.run_key, r.step_id]);
  assert.deepEqual(await rows(), [['in_cus_big', 'alert_high_mrr'], ['in_cus_two', 'alert_high_mrr']]);
  assert.equal(await svc.slack.drain(), 2);
  assert.deepEqual(slack.received.map((m) => m.text), ['Payment failed on a high-MRR account', 'Payment failed on a high-MRR account']);

  // lost: the small customer's invoice is written off; the eur customer's subscription is canceled unpaid
  clock.advance(9 * 86_400_000);
  assert.equal((await deliver(svc.app, envelope('invoice.marked_uncollectible', invoice({ id: 'in_cus_small', customer: 'cus_small', subscription: 'sub_cus_small_0', amount_due: 2_000, status: 'uncollectible' }), { created: 1_761_200_000 }))).statusCode, 200);
  assert.equal((await deliver(svc.app, envelope('customer.subscription.deleted', subscription({ id: 'sub_cus_eu_0', customer: 'cus_eu', status: 'canceled', unit_amount: 500_000, currency: 'eur', cancellation_reason: 'payment_failed' }), { created: 1_761_200_000 }))).statusCode, 200);
  // Stripe's retries are over and it marks the subscription unpaid (a setting): lost as well
  assert.equal((await deliver(svc.app, envelope('customer.subscription.updated', subscription({ id: 'sub_cus_unp_0', customer: 'cus_unp', status: 'unpaid', unit_amount: 3_000 }), { created: 1_761_200_000, previous: { status: 'past_due' } }))).statusCode, 200);
  // and the big customer pays: recovered, no alert
  assert.equal((await deliver(svc.app, envelope('invoice.paid', invoice({ id: 'in_cus_big', customer: 'cus_big', subscription: 'sub_cus_big_0', amount_due: 250_000, status: 'paid' }), { created: 1_761_200_000 }))).statusCode, 200);
  await svc.drain();
  assert.deepEqual(await rows(), [
    ['in_cus_big', 'alert_high_mrr'],
    ['in_cus_eu', 'alert_lost_canceled'],
    ['in_cus_small', 'alert_lost_written_off'],
    ['in_cus_two', 'alert_high_mrr'],
    ['in_cus_unp', 'alert_lost_unpaid'],
  ]);
  assert.equal(await svc.slack.drain(), 3);
  const lost = slack.received.slice(2).map((m) => m.text).sort();
  assert.deepEqual(lost, ['Payment recovery lost: the invoice was written off', 'Payment recovery lost: the subscription was canceled unpaid', 'Payment recovery lost: the subscription was marked unpaid']);
  const written = slack.received.find((m) => m.text.includes('written off'))!;
  const fields = (written.blocks[1] as { fields: Array<{ text: string }> }).fields.map((f) => f.text);
  assert.ok(fields.includes('*Customer*\ncus_small'), fields.join(' | '));
  const traced = await svc.sql<{ run_key: string; detail: string }[]>`
    select r.run_key, t.detail from run_trace t join workflow_runs r on r.id = t.run_id
    where r.workflow_key = 'billing-recovery' and t.kind = 'notify' order by r.run_key, t.id`;
  assert.deepEqual(traced.map((r) => [r.run_key, r.detail]), [
    ['in_cus_big', 'notify slack: Payment failed on a high-MRR account'],
    ['in_cus_eu', 'notify slack: Payment recovery lost: the subscription was canceled unpaid'],
    ['in_cus_small', 'notify slack: Payment recovery lost: the invoice was written off'],
    ['in_cus_two', 'notify slack: Payment failed on a high-MRR account'],
    ['in_cus_unp', 'notify slack: Payment recovery lost: the subscription was marked unpaid'],
  ]);

  // the workflow report's funnel lists the exit's steps after the steps, with how many runs reached them
  const report = await svc.app.inject({ method: 'GET', url: '/v1/reports/workflows/billing-recovery?from=2025-10-16&to=2025-10-17', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
  assert.equal(report.statusCode, 200, report.body);
  const funnel = (report.json() as { steps: Array<{ stepId: string; type: string | null; reached: number }> }).steps;
  const at = (id: string) => funnel.find((s) => s.stepId === id);
  assert.deepEqual(at('alert_high_mrr'), { ...at('alert_high_mrr'), type: 'notify', reached: 2 });
  assert.deepEqual(at('alert_lost_written_off'), { ...at('alert_lost_written_off'), type: 'notify', reached: 1 });
  assert.ok(funnel.findIndex((s) => s.stepId === 'lost_written_off') > funnel.findIndex((s) => s.stepId === 'soft_final'), 'exit steps come after the steps');

  // the same facts again (Stripe redelivers): nothing new
  assert.equal((await deliver(svc.app, envelope('invoice.marked_uncollectible', invoice({ id: 'in_cus_small', customer: 'cus_small', subscription: 'sub_cus_small_0', amount_due: 2_000, status: 'uncollectible' }), { created: 1_761_200_000 }))).statusCode, 200);
  await svc.drain();
  assert.equal(await svc.slack.drain(), 0);
  assert.equal(slack.received.length, 5);

  // simulate shows the alert the engine would raise, with the settings it assumed
  const simulated = await svc.app.inject({
    method: 'POST',
    url: '/v1/workflows/billing-recovery/simulate',
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    payload: {
      contact: { email: 'pat@acme.test' },
      invoice: { status: 'open', currency: 'usd' },
      customer: { mrr: 150_000 },
      timeline: [
        { name: 'invoice.payment_failed', occurredAt: '2026-03-02T10:00:00Z', properties: { invoiceId: 'in_1', subscriptionId: 'sub_1', declineClass: 'soft', billingReason: 'subscription_cycle' } },
        { name: 'subscription.canceled', occurredAt: '2026-03-16T10:00:00Z', properties: { subscriptionId: 'sub_1' } },
      ],
    },
  });
  assert.equal(simulated.statusCode, 200, simulated.body);
  const body = simulated.json() as { alerts: Array<{ stepId: string; at: string }>; settings: Record<string, unknown> };
  assert.deepEqual(body.alerts.map((a) => [a.stepId, a.at]), [['alert_high_mrr', '2026-03-02T10:00:00.000Z'], ['alert_lost_canceled', '2026-03-16T10:00:00.000Z']]);
  assert.deepEqual(body.settings, { recoveryAlertMrr: 100_000, slackWebhookConfigured: true });
});

test('built-in billing recovery without SLACK_WEBHOOK_URL: the alert is a traced no-op — no row, no failure, no dead letter', async (t) => {
  const clock = new ManualClock('2025-10-16T12:00:00Z');
  const svc = await build(t, { clock, env: { RECOVERY_ALERT_MRR: '100000 usd' } });
  await failing(svc, 'cus_big', [{ amount: 250_000, currency: 'usd' }]);
  await svc.drain();
  clock.advance(14 * 86_400_000);
  assert.equal((await deliver(svc.app, envelope('customer.subscription.deleted', subscription({ id: 'sub_cus_big_0', customer: 'cus_big', status: 'canceled', unit_amount: 250_000 }), { created: 1_761_600_000 }))).statusCode, 200);
  await svc.drain();
  const [run] = await svc.sql<{ status: string }[]>`select status from workflow_runs where workflow_key = 'billing-recovery' and run_key = 'in_cus_big'`;
  assert.equal(run?.status, 'exited');
  assert.equal((await svc.sql`select 1 from slack_notifications`).length, 0);
  assert.equal(await svc.slack.drain(), 0);
  assert.equal((await svc.slack.queue.dead(10)).length, 0);
  const traced = await svc.sql<{ step_id: string; detail: string; data: { skipped?: string } }[]>`
    select t.step_id, t.detail, t.data from run_trace t join workflow_runs r on r.id = t.run_id
    where r.run_key = 'in_cus_big' and t.kind = 'notify' order by t.id`;
  assert.deepEqual(traced.map((r) => [r.step_id, r.data.skipped]), [['alert_high_mrr', 'no_webhook_url'], ['alert_lost_canceled', 'no_webhook_url']]);
  const dead = await svc.app.inject({ method: 'GET', url: '/v1/admin/dead-letters?queue=slack-notifications', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
  assert.equal(dead.statusCode, 200);
  assert.doesNotMatch(dead.body, /in_cus_big|alert_/);
});
