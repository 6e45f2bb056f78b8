// Regressions found by fuzzing (issue 11): each answered 5xx before the fix. All are behind a
// valid signature or the admin token, so they are kept here as plain examples.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { build, ADMIN_TOKEN } from './helpers/build.ts';
import { envelope, invoice, sign } from './helpers/stripe.ts';

const RESEND_WEBHOOK_SECRET = `whsec_${Buffer.from('resend-fuzz-webhook-secret').toString('base64')}`;

function svixHeaders(payload: string, id: string) {
  const timestamp = String(Math.floor(Date.now() / 1000));
  const key = Buffer.from(RESEND_WEBHOOK_SECRET.replace(/^whsec_/, ''), 'base64');
  const signature = createHmac('sha256', key).update(`${id}.${timestamp}.${payload}`).digest('base64');
  return { 'svix-id': id, 'svix-timestamp': timestamp, 'svix-signature': `v1,${signature}`, 'content-type': 'application/json' };
}

function postStripeRaw(app: import('fastify').FastifyInstance, payload: string) {
  return app.inject({ method: 'POST', url: '/webhooks/stripe', headers: { 'content-type': 'application/json', 'stripe-signature': sign(payload) }, payload });
}

async function count(svc: { sql: import('../src/db/connection.ts').Sql }, table: 'stripe_events'): Promise<number> {
  const [row] = await svc.sql<{ n: number }[]>`select count(*)::int as n from ${svc.sql(table)}`;
  return row!.n;
}

test('signed null, array, number and string bodies on the Stripe webhook are 400 invalid_event', async (t) => {
  const svc = await build(t);
  for (const payload of ['null', '[]', '42', '"evt"', 'true', '{"id":"evt_1","type":"x","created":1,"data":null}']) {
    const res = await postStripeRaw(svc.app, payload);
    assert.equal(res.statusCode, 400, `${payload} -> ${res.statusCode} ${res.body}`);
    assert.equal(res.json().error, 'invalid_event');
  }
  assert.equal(await count(svc, 'stripe_events'), 0);
});

test('signed Stripe events that cannot be stored as they are: NUL and lone surrogates are stored sanitised; missing livemode or out-of-range created are 400', async (t) => {
  const svc = await build(t);
  // Customer-provided metadata can carry \u0000 (jsonb refuses it) or a lone surrogate.
  const withNul = envelope('invoice.payment_failed', { ...invoice(), metadata: { note: 'a\u0000b' } });
  const nulRes = await postStripeRaw(svc.app, JSON.stringify(withNul));
  assert.equal(nulRes.statusCode, 200, nulRes.body);
  const withSurrogate = envelope('invoice.payment_failed', { ...invoice({ id: 'in_sur' }), metadata: { note: 'x\ud800y' } });
  // JSON.stringify escapes a lone surrogate as \ud800, which jsonb refuses.
  const surRes = await postStripeRaw(svc.app, JSON.stringify(withSurrogate));
  assert.equal(surRes.statusCode, 200, surRes.body);
  const rows = await svc.sql<{ id: string; note: string }[]>`select id, payload->'data'->'object'->'metadata'->>'note' as note from stripe_events order by id`;
  const notes = new Map(rows.map((r) => [r.id, r.note]));
  assert.equal(notes.get(withNul.id), 'a\ufffdb');
  assert.equal(notes.get(withSurrogate.id), 'x\ufffdy');
  // ... and they are processed like any event.
  await svc.inbox.drain();
  const [pending] = await svc.sql<{ n: number }[]>`select count(*)::int as n from stripe_events where processed_at is null`;
  assert.equal(pending!.n, 0);

  const noLivemode: Record<string, unknown> = envelope('invoice.paid', invoice());
  delete noLivemode.livemode;
  for (const [label, event] of [
    ['no livemode', noLivemode],
    ['created far in the future', envelope('invoice.paid', invoice(), { created: 1e15 })],
    ['created negative', envelope('invoice.paid', invoice(), { created: -5 })],
    ['created fractional', envelope('invoice.paid', invoice(), { created: 1.5 })],
  ] as const) {
    const res = await postStripeRaw(svc.app, JSON.stringify(event));
    assert.equal(res.statusCode, 400, `${label}: ${res.statusCode} ${res.body}`);
    assert.equal(res.json().error, 'invalid_event');
  }
  assert.equal(await count(svc, 'stripe_events'), 2);
});

test('signed null, empty and non-object bodies on the Resend webhook are 400', async (t) => {
  const svc = await build(t, { env: { RESEND_WEBHOOK_SECRET } });
  let n = 0;
  for (const payload of ['null', '', '[]', '7', '"x"', '{"type":"email.delivered","data":null}']) {
    const res = await svc.app.inject({ method: 'POST', url: '/webhooks/resend', headers: svixHeaders(payload, `msg_fuzz_${++n}`), payload });
    assert.ok(res.statusCode >= 400 && res.statusCode < 500 || res.statusCode === 200, `${JSON.stringify(payload)} -> ${res.statusCode} ${res.body}`);
    if (res.statusCode !== 200) assert.equal(typeof res.json().error, 'string');
  }
  const nullRes = await svc.app.inject({ method: 'POST', url: '/webhooks/resend', headers: svixHeaders('null', 'msg_null'), payload: 'null' });
  assert.equal(nullRes.statusCode, 400);
  assert.equal(nullRes.json().error, 'invalid_event');
  const emptyRes = await svc.app.inject({ method: 'POST', url: '/webhooks/resend', headers: svixHeaders('', 'msg_empty'), payload: '' });
  assert.equal(emptyRes.statusCode, 400);
});

test('a NUL byte in a path id is 400, not a PostgreSQL 22021 error', async (t) => {
  const svc = await build(t);
  for (const url of ['/v1/contacts/%00', '/v1/messages/%00', '/v1/reports/workflows/%00', '/v1/contacts/a%00b']) {
    const res = await svc.app.inject({ method: 'GET', url, headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    assert.equal(res.statusCode, 400, `${url} -> ${res.statusCode} ${res.body}`);
    assert.match(res.json().error, /^invalid_(input|parameter)$/);
  }
});

test('PUT /v1/workflows/:key with an empty JSON body is 400 invalid_json, not a 500 from response serialization', async (t) => {
  const svc = await build(t);
  // Shrunk counter-example of fuzz-routes: the route's 400 schema required `errors`.
  const res = await svc.app.inject({ method: 'PUT', url: '/v1/workflows/', headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN_TOKEN}` } });
  assert.equal(res.statusCode, 400, res.body);
  assert.equal(typeof res.json().error, 'string');
  const notJson = await svc.app.inject({ method: 'PUT', url: '/v1/workflows/w1', headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN_TOKEN}` }, payload: '{' });
  assert.equal(notJson.statusCode, 400, notJson.body);
  assert.equal(notJson.json().error, 'invalid_json');
});
