import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildApp } from '../src/app.ts';
import { systemClock } from '../src/clock.ts';
import { loadConfig } from '../src/config.ts';
import { createSql } from '../src/db/connection.ts';
import { createLogger } from '../src/logger.ts';
import { build, WEBHOOK_SECRET } from './helpers/build.ts';
import { deliver, envelope, invoice } from './helpers/stripe.ts';

test('a signed event is stored verbatim with its envelope fields and acknowledged', async (t) => {
  const svc = await build(t);
  const event = envelope('invoice.payment_failed', invoice(), { requestId: 'req_abc' });
  const res = await deliver(svc.app, event);
  assert.equal(res.statusCode, 200);
  assert.deepEqual(res.json(), { received: true, duplicate: false });
  const [row] = await svc.sql`select * from stripe_events where id = ${event.id}`;
  assert.ok(row);
  assert.equal(row.type, 'invoice.payment_failed');
  assert.equal(row.api_version, '2026-10-28.endive');
  assert.equal(row.livemode, false);
  assert.equal(row.request_id, 'req_abc');
  assert.equal(row.idempotency_key, 'idem_req_abc');
  assert.equal(row.object_id, 'in_test_1');
  assert.equal((row.created as Date).getTime(), event.created * 1000);
  // JSONB holds the object itself, not a JSON string of it.
  assert.equal(typeof row.payload, 'object');
  assert.equal((row.payload as { id: string }).id, event.id);
  assert.equal(row.processed_at, null);
});

test('signature failures answer 400 with a code, never 5xx', async (t) => {
  const svc = await build(t);
  const event = envelope('invoice.paid', invoice({ status: 'paid' }));

  const tampered = await deliver(svc.app, event, { tamper: (s) => s.replace('"amount_due":4900', '"amount_due":1') });
  assert.equal(tampered.statusCode, 400);
  assert.equal(tampered.json().error, 'invalid_signature');

  const wrongSecret = await deliver(svc.app, event, { secret: 'whsec_someone_else' });
  assert.equal(wrongSecret.statusCode, 400);
  assert.equal(wrongSecret.json().error, 'invalid_signature');

  const stale = await deliver(svc.app, event, { timestamp: Math.floor(Date.now() / 1000) - 3600 });
  assert.equal(stale.statusCode, 400);
  assert.equal(stale.json().error, 'invalid_signature');

  const missing = await svc.app.inject({ method: 'POST', url: '/webhooks/stripe', headers: { 'content-type': 'application/json' }, payload: JSON.stringify(event) });
  assert.equal(missing.statusCode, 400);
  assert.equal(missing.json().error, 'missing_signature');

  const garbage = await svc.app.inject({ method: 'POST', url: '/webhooks/stripe', headers: { 'content-type': 'application/json', 'stripe-signature': 'nonsense' }, payload: '{not json' });
  assert.equal(garbage.statusCode, 400);

  const [{ n }] = (await svc.sql<{ n: number }[]>`select count(*)::int as n from stripe_events`) as unknown as [{ n: number }];
  assert.equal(n, 0, 'nothing unverified is stored');
});

test('a signed payload that is not an event is refused with 400', async (t) => {
  const svc = await build(t);
  const res = await deliver(svc.app, { hello: 'world' });
  assert.equal(res.statusCode, 400);
  assert.equal(res.json().error, 'invalid_event');
});

test('without STRIPE_WEBHOOK_SECRET the route answers 503 saying what to set', async (t) => {
  const svc = await build(t, { env: { STRIPE_WEBHOOK_SECRET: undefined } });
  const res = await deliver(svc.app, envelope('invoice.paid', invoice()));
  assert.equal(res.statusCode, 503);
  assert.equal(res.json().error, 'not_configured');
  assert.match(res.json().message, /STRIPE_WEBHOOK_SECRET/);
});

test('the same event delivered 5 times is stored once and processed once', async (t) => {
  const svc = await build(t);
  const event = envelope('invoice.payment_failed', invoice());
  const answers = [];
  for (let i = 0; i < 5; i++) answers.push(await deliver(svc.app, event));
  assert.deepEqual(answers.map((r) => r.statusCode), [200, 200, 200, 200, 200]);
  assert.deepEqual(answers.map((r) => r.json().duplicate), [false, true, true, true, true]);
  // A concurrent redelivery race as well: Stripe can retry while the first attempt is in flight.
  await Promise.all([deliver(svc.app, event), deliver(svc.app, event)]);

  const processed = await svc.inbox.drain();
  assert.equal(processed, 1);
  assert.equal(await svc.inbox.drain(), 0);
  const [row] = await svc.sql`select deliveries, attempts, processed_at from stripe_events where id = ${event.id}`;
  assert.equal(row!.deliveries, 7);
  assert.equal(row!.attempts, 1);
  assert.ok(row!.processed_at);
  const facts = await svc.sql`select name from domain_events`;
  assert.deepEqual(facts.map((f) => f.name), ['invoice.payment_failed']);
});

test('a second event id describing the same failure does not record a second fact', async (t) => {
  const svc = await build(t);
  await deliver(svc.app, envelope('invoice.payment_failed', invoice({ attempt_count: 1 })));
  await deliver(svc.app, envelope('invoice.payment_failed', invoice({ attempt_count: 1 })));
  await svc.inbox.drain();
  const facts = await svc.sql`select name from domain_events where name = 'invoice.payment_failed'`;
  assert.equal(facts.length, 1);
});

test('unknown event types are stored and acknowledged, and processing them is a no-op', async (t) => {
  const svc = await build(t);
  const event = envelope('issuing_card.shipped', { id: 'ic_1', object: 'issuing.card' });
  const res = await deliver(svc.app, event);
  assert.equal(res.statusCode, 200);
  assert.equal(await svc.inbox.drain(), 1);
  const [row] = await svc.sql`select processed_at, last_error from stripe_events where id = ${event.id}`;
  assert.ok(row!.processed_at);
  assert.equal(row!.last_error, null);
});

test('database unavailable: the webhook answers 503 (Stripe retries), never 200', async (t) => {
  const logger = createLogger('silent');
  // A pool pointing at a port where no database listens.
  const sql = createSql('postgres://postgres@127.0.0.1:9/lifeline', { max: 1 });
  const config = loadConfig({ STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET, LOG_LEVEL: 'silent' });
  const app = await buildApp({ config, sql, clock: systemClock, logger });
  t.after(async () => {
    await app.close();
    await sql.end({ timeout: 1 });
  });
  const res = await deliver(app, envelope('invoice.payment_failed', invoice()));
  assert.equal(res.statusCode, 503);
  assert.equal(res.json().error, 'storage_unavailable');
  assert.equal(res.headers['retry-after'], '5');
});

test('an event that fails to process is kept and retried, not lost', async (t) => {
  const svc = await build(t, { clock: 'manual' });
  const event = envelope('invoice.payment_failed', invoice());
  await deliver(svc.app, event);
  // Break the projection target for a moment: the event must stay unprocessed with its error.
  await svc.sql`alter table invoices rename to invoices_away`;
  await svc.inbox.drain();
  let [row] = await svc.sql`select processed_at, attempts, last_error, retry_at from stripe_events where id = ${event.id}`;
  assert.equal(row!.processed_at, null);
  assert.equal(row!.attempts, 1);
  assert.match(String(row!.last_error), /invoices/);
  await svc.sql`alter table invoices_away rename to invoices`;
  assert.equal(await svc.inbox.drain(), 0, 'not retried before its retry time');
  (svc.clock as import('../src/clock.ts').ManualClock).advance(60_000);
  assert.equal(await svc.inbox.drain(), 1);
  [row] = await svc.sql`select processed_at, last_error from stripe_events where id = ${event.id}`;
  assert.ok(row!.processed_at);
  assert.equal(row!.last_error, null);
});
