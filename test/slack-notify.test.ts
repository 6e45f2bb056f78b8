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
