// Email delivery end to end: workflow sends through the real Resend SDK to a local fake Resend,
// retries, batching, unsubscribe, bounces and complaints, click tracking.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import type { ManualClock } from '../src/clock.ts';
import { ADMIN_TOKEN, build, WRITE_KEY, type Built } from './helpers/build.ts';
import { startFakeResend, type FakeResend } from './helpers/fake-resend.ts';
import { deliver, envelope, invoice, subscription } from './helpers/stripe.ts';

const T = new Date('2026-03-02T10:00:00Z');
const RESEND_WEBHOOK_SECRET = `whsec_${Buffer.from('resend-test-webhook-secret').toString('base64')}`;

async function setup(t: import('node:test').TestContext, env: Record<string, string> = {}): Promise<{ svc: Built; fake: FakeResend; clock: ManualClock }> {
  const fake = await startFakeResend();
  t.after(() => fake.close());
  const svc = await build(t, {
    clock: 'manual',
    env: { RESEND_API_KEY: 're_test_key', RESEND_BASE_URL: fake.url, RESEND_WEBHOOK_SECRET, QUIET_HOURS: 'off', PUBLIC_URL: 'https://lifeline.example.com', ...env },
  });
  const clock = svc.clock as ManualClock;
  clock.set(T);
  return { svc, fake, clock };
}

async function failInvoice(svc: Built, key: string, email: string) {
  await deliver(svc.app, envelope('invoice.payment_failed', invoice({ id: `in_${key}`, customer: `cus_${key}`, customer_email: email }), { created: T }));
}

async function cancelInvoluntarily(svc: Built, key: string, email: string) {
  await deliver(svc.app, envelope('customer.created', { id: `cus_${key}`, object: 'customer', email, name: 'Pat Doe' }, { created: new Date(T.getTime() - 60_000) }));
  await deliver(svc.app, envelope('customer.subscription.deleted', subscription({ id: `sub_${key}`, customer: `cus_${key}`, status: 'canceled', cancellation_reason: 'payment_failed' }), { created: T }));
}

function svixHeaders(payload: string, id: string, secret = RESEND_WEBHOOK_SECRET) {
  const timestamp = String(Math.floor(Date.now() / 1000));
  const key = Buffer.from(secret.replace(/^whsec_/, ''), 'base64');
  const signature = createHmac('sha256', key).update(`${id}.${timestamp}.${payload}`).digest('base64');
  return { 'svix-id': id, 'svix-timestamp': timestamp, 'svix-signature': `v1,${signature}`, 'content-type': 'application/json' };
}

async function messageRows(svc: Built) {
  return svc.sql<{ id: string; template: string; status: string; status_reason: string | null; provider_id: string | null; to_email: string }[]>`
    select id, template, status, status_reason, provider_id, to_email from messages order by created_at, id`;
}

test('a dunning send goes through the Resend SDK with its idempotency key and no List-Unsubscribe; marketing has both headers', async (t) => {
  const { svc, fake } = await setup(t);
  await failInvoice(svc, 'a', 'pay@acme.test');
  await svc.drain(); // alone: a single send (several due at once would go as one batch)
  await cancelInvoluntarily(svc, 'b', 'gone@acme.test');
  await svc.drain();

  const rows = await messageRows(svc);
  const dunning = rows.find((r) => r.template === 'dunning-soft-1')!;
  const winback = rows.find((r) => r.template === 'winback-restore')!;
  assert.ok(dunning && winback, JSON.stringify(rows));
  assert.equal(dunning.status, 'sent');
  const sentDunning = fake.accepted.find((e) => e.to === 'pay@acme.test')!;
  assert.equal(dunning.provider_id, sentDunning.id);
  assert.equal(sentDunning.idempotencyKey, dunning.id, 'the message id is the idempotency key');
  assert.equal(sentDunning.headers['List-Unsubscribe'], undefined, 'transactional: no unsubscribe header');
  assert.match(sentDunning.html, /https:\/\/lifeline\.example\.com\/r\//, 'the invoice link is click-tracked');
  assert.ok(sentDunning.text.length > 0, 'a plain-text part');

  const sentWinback = fake.accepted.find((e) => e.to === 'gone@acme.test')!;
  assert.match(sentWinback.headers['List-Unsubscribe'] ?? '', /^<https:\/\/lifeline\.example\.com\/unsubscribe\/[^>]+>$/);
  assert.equal(sentWinback.headers['List-Unsubscribe-Post'], 'List-Unsubscribe=One-Click');
  assert.equal(fake.accepted.length, 2);
});

test('429 with retry-after, then 500, then 200: one email delivered, none lost, none duplicated', async (t) => {
  const { svc, fake } = await setup(t);
  fake.script({ status: 429, headers: { 'retry-after': '1' } }, { status: 500 });
  await failInvoice(svc, 'r', 'retry@acme.test');
  const started = Date.now();
  await svc.drain();
  assert.ok(Date.now() - started >= 1000, 'retry-after was honoured');
  assert.equal(fake.requests.length, 3);
  const keys = new Set(fake.requests.map((r) => r.headers['idempotency-key']));
  assert.equal(keys.size, 1, 'every retry carries the same idempotency key');
  assert.equal(fake.accepted.length, 1);
  const [row] = await messageRows(svc);
  assert.equal(row!.status, 'sent');
  const timeline = await svc.sql`select status from message_events where message_id = ${row!.id} order by id`;
  assert.deepEqual(timeline.map((e) => e.status), ['sent']);
});

test('a 422 marks the message failed with the reason', async (t) => {
  const { svc, fake } = await setup(t);
  await failInvoice(svc, 'bad', 'nobody@invalid.test');
  await svc.drain();
  const [row] = await messageRows(svc);
  assert.equal(row!.status, 'failed');
  assert.match(row!.status_reason ?? '', /validation_error/);
  assert.equal(fake.accepted.length, 0);
  const again = await svc.email.sendPending();
  assert.equal(again.sent + again.failed, 0, 'a failed message is not retried');
});

test('several due sends go out as one batch request; an invalid one fails alone', async (t) => {
  const { svc, fake } = await setup(t);
  for (const [i, email] of ['a@x.test', 'b@x.test', 'c@invalid.test', 'd@x.test', 'e@x.test'].entries()) await failInvoice(svc, `batch${i}`, email);
  await svc.inbox.drain();
  await svc.engine.drain();
  const result = await svc.email.sendPending();
  assert.deepEqual({ sent: result.sent, failed: result.failed }, { sent: 4, failed: 1 });
  assert.equal(fake.requests.length, 1);
  assert.equal(fake.requests[0]!.path, '/emails/batch');
  assert.equal((fake.requests[0]!.body as unknown[]).length, 5);
  const rows = await messageRows(svc);
  assert.equal(rows.find((r) => r.to_email === 'c@invalid.test')!.status, 'failed');
  assert.equal(rows.filter((r) => r.status === 'sent').length, 4);
  // Provider ids line up with the right messages.
  for (const row of rows.filter((r) => r.status === 'sent')) {
    assert.equal(fake.accepted.find((e) => e.id === row.provider_id)!.to, row.to_email);
  }
});

test('one-click unsubscribe, the GET page, a tampered token; marketing stops, dunning still goes out', async (t) => {
  const { svc, fake, clock } = await setup(t);
  await cancelInvoluntarily(svc, 'u', 'leave@acme.test');
  await svc.drain();
  const header = fake.accepted[0]!.headers['List-Unsubscribe']!;
  const url = new URL(header.slice(1, -1));
  const page = await svc.app.inject({ method: 'GET', url: url.pathname });
  assert.equal(page.statusCode, 200);
  assert.match(page.body, /<form method="post">/);
  assert.equal((await svc.sql`select * from suppressions`).length, 0, 'GET alone does not unsubscribe');

  const tampered = url.pathname.slice(0, -3) + (url.pathname.endsWith('AAA') ? 'BBB' : 'AAA');
  assert.equal((await svc.app.inject({ method: 'POST', url: tampered, headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: 'List-Unsubscribe=One-Click' })).statusCode, 400);
  assert.equal((await svc.app.inject({ method: 'GET', url: '/unsubscribe/garbage' })).statusCode, 400);

  const post = await svc.app.inject({ method: 'POST', url: url.pathname, headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: 'List-Unsubscribe=One-Click' });
  assert.equal(post.statusCode, 200);
  const [suppression] = await svc.sql`select email, scope from suppressions`;
  assert.deepEqual({ ...suppression }, { email: 'leave@acme.test', scope: 'non_transactional' });

  // The 7-day reminder of win-back is skipped (and traced); a new card failure still gets dunning.
  clock.set(new Date(T.getTime() + 8 * 86_400_000));
  await deliver(svc.app, envelope('invoice.payment_failed', invoice({ id: 'in_u2', customer: 'cus_u', customer_email: 'leave@acme.test' }), { created: clock.now() }));
  await svc.drain();
  const sentTo = fake.accepted.filter((e) => e.to === 'leave@acme.test').map((e) => e.subject);
  assert.equal(sentTo.length, 2, JSON.stringify(sentTo));
  assert.equal(fake.accepted.filter((e) => e.to === 'leave@acme.test' && e.headers['List-Unsubscribe']).length, 1, 'only the first marketing email');
  const skipped = await svc.sql`select detail from run_trace where kind = 'send_skipped'`;
  assert.ok(skipped.some((s) => /suppressed/.test(String(s.detail))), 'the skip is in the decision trace');
});

test('Resend webhooks: bad signature 400; delivered, hard bounce and complaint update the log and suppress', async (t) => {
  const { svc, fake, clock } = await setup(t);
  await failInvoice(svc, 'w1', 'bounce@acme.test');
  await cancelInvoluntarily(svc, 'w2', 'complain@acme.test');
  await svc.drain();
  const idOf = (to: string) => fake.accepted.find((e) => e.to === to)!.id;
  const post = (payload: object, svixId: string, secret?: string) => {
    const body = JSON.stringify(payload);
    return svc.app.inject({ method: 'POST', url: '/webhooks/resend', headers: svixHeaders(body, svixId, secret), payload: body });
  };
  const bad = await post({ type: 'email.delivered', data: { email_id: idOf('bounce@acme.test') } }, 'msg_bad', `whsec_${Buffer.from('wrong').toString('base64')}`);
  assert.equal(bad.statusCode, 400);
  assert.equal(bad.json().error, 'invalid_signature');
  assert.equal((await svc.app.inject({ method: 'POST', url: '/webhooks/resend', payload: '{}', headers: { 'content-type': 'application/json' } })).statusCode, 400);

  assert.equal((await post({ type: 'email.delivered', created_at: T.toISOString(), data: { email_id: idOf('bounce@acme.test') } }, 'msg_1')).statusCode, 200);
  assert.equal((await post({ type: 'email.bounced', created_at: T.toISOString(), data: { email_id: idOf('bounce@acme.test'), bounce: { type: 'Permanent', message: 'mailbox does not exist' } } }, 'msg_2')).statusCode, 200);
  await post({ type: 'email.bounced', created_at: T.toISOString(), data: { email_id: idOf('bounce@acme.test'), bounce: { type: 'Permanent' } } }, 'msg_2'); // redelivery
  assert.equal((await post({ type: 'email.complained', created_at: T.toISOString(), data: { email_id: idOf('complain@acme.test') } }, 'msg_3')).statusCode, 200);

  const rows = await messageRows(svc);
  assert.equal(rows.find((r) => r.to_email === 'bounce@acme.test')!.status, 'bounced');
  assert.equal(rows.find((r) => r.to_email === 'complain@acme.test')!.status, 'complained');
  const suppressions = await svc.sql`select email, scope from suppressions order by email`;
  assert.deepEqual(suppressions.map((s) => [s.email, s.scope]), [['bounce@acme.test', 'all'], ['complain@acme.test', 'non_transactional']]);
  const bounceEvents = await svc.sql`select status from message_events where message_id = ${rows.find((r) => r.to_email === 'bounce@acme.test')!.id} order by id`;
  assert.deepEqual(bounceEvents.map((e) => e.status), ['sent', 'delivered', 'bounced'], 'the redelivered webhook was not applied twice');

  // A hard-bounced address gets no more mail at all, not even billing.
  clock.set(new Date(T.getTime() + 3 * 86_400_000));
  const before = fake.accepted.length;
  await svc.drain();
  assert.equal(fake.accepted.filter((e) => e.to === 'bounce@acme.test').length, 1);
  assert.equal(fake.accepted.length, before);
  // The bounced message by address: both were queued in one transaction (same created_at).
  const log = await svc.app.inject({ url: `/v1/messages/${encodeURIComponent(rows.find((r) => r.to_email === 'bounce@acme.test')!.id)}`, headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
  assert.deepEqual(log.json().timeline.map((e: { status: string }) => e.status), ['queued', 'sent', 'delivered', 'bounced']);
});

test('the tracked link records the click against message and run, then lands on the update-card link (which, without a Stripe key, offers the invoice)', async (t) => {
  const { svc, fake } = await setup(t);
  await failInvoice(svc, 'c', 'click@acme.test');
  await svc.drain();
  const href = /href="(https:\/\/lifeline\.example\.com\/r\/[^"]+)"/.exec(fake.accepted[0]!.html)![1]!;
  const res = await svc.app.inject({ method: 'GET', url: new URL(href.replaceAll('&amp;', '&')).pathname });
  assert.equal(res.statusCode, 302);
  assert.match(String(res.headers.location), /^https:\/\/lifeline\.example\.com\/billing\/update\/[^/]+$/);
  const landing = await svc.app.inject({ method: 'GET', url: new URL(String(res.headers.location)).pathname });
  assert.equal(landing.statusCode, 200);
  assert.match(landing.body, /https:\/\/invoice\.stripe\.com\/i\/in_c/);
  const [m] = await svc.sql`select clicked_at, run_id from messages`;
  assert.ok(m!.clicked_at);
  const [fact] = await svc.sql`select name, properties from domain_events where name = 'email.clicked'`;
  assert.equal((fact!.properties as { runId: number }).runId, m!.run_id);
  assert.equal((await svc.app.inject({ method: 'GET', url: new URL(href).pathname + 'x' })).statusCode, 400);
  void WRITE_KEY;
});

// ---------------------------------------------------------------------------------------------
// Pacing under the provider's rate limit (real clock: the fake Resend counts real seconds)

async function pacingSetup(t: import('node:test').TestContext, ratePerSecond: number) {
  const fake = await startFakeResend({ ratePerSecond, keepContent: false });
  t.after(() => fake.close());
  // The real SDK, wrapped to note when the sender lets each request go.
  const { createResendTransport } = await import('../src/email/transport.ts');
  const resend = createResendTransport({ apiKey: 're_test_key', baseUrl: fake.url });
  const starts: number[] = [];
  const transport = { name: resend.name, send: (...args: Parameters<typeof resend.send>) => (starts.push(Date.now()), resend.send(...args)) };
  const svc = await build(t, { transport, env: { RESEND_API_KEY: 're_test_key', RESEND_BASE_URL: fake.url, RESEND_RATE_LIMIT: String(ratePerSecond), QUIET_HOURS: 'off' } });
  return { svc, fake, starts };
}

async function queueMessages(svc: Built, from: number, count: number) {
  await svc.sql`
    insert into messages (id, to_email, template, subject, category, status, created_at, updated_at)
    select 'pace-' || i, 'pace' || i || '@example.test', 'winback-offer', 'Hello', 'marketing', 'queued', now(), now()
    from generate_series(${from}::int, ${from + count - 1}::int) as i`;
}

test('a backlog goes out 100 per request, several batches in flight, never over the limit in any second; none lost or repeated', async (t) => {
  const { svc, fake, starts } = await pacingSetup(t, 5);
  await queueMessages(svc, 1, 1200);
  const began = Date.now();
  const totals = await svc.email.sendPending();
  assert.deepEqual(totals, { sent: 1200, failed: 0, skipped: 0, requeued: 0 });
  const ids = fake.accepted.map((a) => a.headers['X-Lifeline-Message-Id']);
  assert.equal(new Set(ids).size, 1200, 'every message delivered');
  assert.equal(ids.length, 1200, 'none twice');
  const accepted = fake.requests.filter((r) => r.path === '/emails/batch');
  // 12 full batches; a request the fake saw early (this process also runs the fake, so arrival
  // times jitter on a loaded machine) may have been answered 429 and sent again: a retry, with
  // the same idempotency key, not a new batch.
  assert.ok(accepted.length >= 12, `requests: ${accepted.length}`);
  assert.equal(new Set(accepted.map((r) => r.headers['idempotency-key'])).size, 12, 'twelve batches of 100');
  // The sender's own pacing: no six requests (five per second allowed) leave within a second.
  const sorted = [...starts].sort((a, b) => a - b);
  for (let i = 5; i < sorted.length; i++) assert.ok(sorted[i]! - sorted[i - 5]! >= 1000, `request ${i} left within a second of the 5th before it`);
  // Spaced at the limit, not bunched: every request waits for its own slot, reserved after
  // `began`, each slot 1/5 s (plus a margin) after the one before, so the twelfth request cannot
  // leave before began + 11 × 200 ms, however loaded the machine (lateness only delays requests;
  // measured from `began`, a late first request shortens nothing). A limiter that let five go at
  // once and then waited a second would send the twelfth at ~2 s. (Gaps between requests are no
  // measure: on a loaded machine late requests leave together — CI saw a median gap of 131 ms.)
  const last = sorted.at(11)!;
  assert.ok(last - began >= 11 * 200, `the twelfth request left ${last - began} ms after the start, before its slot (gaps ${sorted.slice(1).map((at, i) => at - sorted[i]!).join(', ')})`);
  const [sent] = await svc.sql<{ n: number }[]>`select count(*)::int as n from messages where status = 'sent'`;
  assert.equal(sent!.n, 1200);
});

test('a send that waits for its rate slot takes along what became due meanwhile (one request, not one per email)', async (t) => {
  const { svc, fake } = await pacingSetup(t, 1);
  await queueMessages(svc, 1, 1);
  await svc.email.sendPending(); // the slot was free: sent at once
  assert.equal(fake.accepted.length, 1);

  // The next slot is a second away. While the sender waits for it, 30 more sends become due.
  const { createEmailSender } = await import('../src/email/sender.ts');
  const { createResendTransport } = await import('../src/email/transport.ts');
  const { createLogger } = await import('../src/logger.ts');
  let slept = 0;
  const sender = createEmailSender({
    sql: svc.sql,
    clock: svc.clock,
    logger: createLogger('silent'),
    config: svc.config,
    templates: svc.templates,
    transport: createResendTransport({ apiKey: 're_test_key', baseUrl: fake.url }),
    secret: 'test-secret',
    sleep: async (ms) => {
      if (slept++ === 0) await queueMessages(svc, 2, 30);
      await new Promise((resolve) => setTimeout(resolve, ms));
    },
  });
  await queueMessages(svc, 100, 1);
  const totals = await sender.sendPending();
  assert.equal(totals.sent, 31);
  const requests = fake.requests.filter((r) => r.path.startsWith('/emails'));
  // One batch after the single email. (On a loaded machine the fake may see it a little early and
  // answer 429; the retry repeats the batch's idempotency key, so count batches, not requests.)
  const batches = new Set(requests.map((r) => r.headers['idempotency-key']));
  assert.equal(batches.size, 2, 'the 31 went in one batch');
  assert.equal(requests.at(-1)!.path, '/emails/batch');
  assert.equal(fake.accepted.length, 32);
});
