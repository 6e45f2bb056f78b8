// Property-based fuzzing of every public route (issue 11): whatever arrives — malformed JSON,
// wrong or missing content types, huge or deeply nested bodies, invalid UTF-8, NUL bytes,
// __proto__ keys, SQL-like strings, bad signatures, duplicated headers — the answer is a 4xx
// with a JSON { error, message } (or a 2xx), never a 5xx, and the service stays healthy.
// Reproduce a failure with FUZZ_SEED=<printed seed>; widen with FUZZ_RUNS=5000.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import fc from 'fast-check';
import { build, ADMIN_TOKEN, WRITE_KEY } from './helpers/build.ts';
import { sign } from './helpers/stripe.ts';

const RESEND_WEBHOOK_SECRET = `whsec_${Buffer.from('resend-fuzz-webhook-secret').toString('base64')}`;
const SEED = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : Math.floor(Math.random() * 2 ** 31);
const RUNS = Number(process.env.FUZZ_RUNS ?? 400);

const PATHS: Array<{ method: 'GET' | 'POST' | 'PUT' | 'DELETE'; url: string }> = [
  { method: 'POST', url: '/webhooks/stripe' },
  { method: 'POST', url: '/webhooks/resend' },
  { method: 'POST', url: '/v1/track' },
  { method: 'POST', url: '/v1/identify' },
  { method: 'POST', url: '/v1/group' },
  { method: 'POST', url: '/v1/page' },
  { method: 'POST', url: '/v1/screen' },
  { method: 'POST', url: '/v1/batch' },
  { method: 'GET', url: '/unsubscribe/{id}' },
  { method: 'POST', url: '/unsubscribe/{id}' },
  { method: 'GET', url: '/r/{id}' },
  { method: 'GET', url: '/billing/update/{id}' },
  { method: 'POST', url: '/dashboard/login' },
  { method: 'GET', url: '/dashboard' },
  { method: 'GET', url: '/dashboard/assets/{id}' },
  { method: 'GET', url: '/v1/contacts/{id}' },
  { method: 'GET', url: '/v1/messages/{id}' },
  { method: 'GET', url: '/v1/reports/recovery' },
  { method: 'GET', url: '/v1/reports/workflows/{id}' },
  { method: 'GET', url: '/v1/workflows/{id}' },
  { method: 'PUT', url: '/v1/workflows/{id}' },
  { method: 'POST', url: '/v1/workflows/{id}/simulate' },
  { method: 'GET', url: '/v1/billing-status' },
  { method: 'POST', url: '/v1/billing-status/token' },
  { method: 'GET', url: '/v1/admin/dead-letters' },
  { method: 'POST', url: '/v1/admin/dead-letters/replay' },
];

const nasty = fc.constantFrom(
  '\u0000', 'a\u0000b', '\ud800', "' OR 1=1 --", '"; drop table contacts; --', '__proto__', 'constructor', '../../etc/passwd',
  '%00', '%ff', '%', '😀', 'x'.repeat(3000), '', ' ', 'null', '1e309', '-1', '9999999999999999999999',
);
const text = fc.oneof(fc.string({ maxLength: 40 }), nasty, fc.string({ unit: 'binary', maxLength: 20 }));
const pathId = fc.oneof(text.map((s) => encodeURIComponent(s.toWellFormed())), nasty.filter((s) => s !== '' && !s.includes('/') && !s.includes('%')));

// JSON values with hostile keys and strings, sometimes deeply nested.
const hostileJson = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: 'small' },
    text, fc.integer(), fc.double(), fc.boolean(), fc.constant(null),
    fc.array(tie('value'), { maxLength: 4 }),
    fc.dictionary(fc.oneof(text, fc.constantFrom('__proto__', 'constructor', 'prototype', 'event', 'userId', 'type', 'id', 'batch', 'traits')), tie('value'), { maxKeys: 5 }),
  ),
})).value;
const deep = fc.integer({ min: 50, max: 5000 }).map((n) => '['.repeat(n) + ']'.repeat(n));
const plausibleEvent = fc.record({
  userId: fc.option(text, { nil: undefined }),
  event: fc.option(text, { nil: undefined }),
  traits: fc.option(hostileJson, { nil: undefined }),
  properties: fc.option(hostileJson, { nil: undefined }),
  messageId: fc.option(text, { nil: undefined }),
  timestamp: fc.option(fc.oneof(text, fc.constant('2026-01-01T00:00:00Z'), fc.constant('+275760-09-13T00:00:01Z')), { nil: undefined }),
}, { requiredKeys: [] });

const body: fc.Arbitrary<string | Buffer | undefined> = fc.oneof(
  fc.constant(undefined),
  hostileJson.map((v) => JSON.stringify(v) ?? 'null'),
  plausibleEvent.map((v) => JSON.stringify(v)),
  plausibleEvent.map((v) => JSON.stringify({ batch: [v, v] })),
  text,
  deep,
  fc.constantFrom('{', '{"a":', '{"__proto__":{"polluted":1}}', '{"constructor":{"prototype":{"x":1}}}', 'null', '[]', '""', '\u0000', 'email=a%40b.c&password=x'),
  fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from([0xff, 0xfe, ...b])), // invalid UTF-8
  fc.integer({ min: 600_000, max: 700_000 }).map((n) => `{"a":"${'x'.repeat(n)}"}`), // over every body limit
);
const contentType = fc.option(fc.constantFrom(
  'application/json', 'application/json; charset=utf-8', 'text/plain', 'text/plain;charset=UTF-8', 'application/x-www-form-urlencoded',
  'multipart/form-data; boundary=x', 'application/octet-stream', 'application/json; charset=latin1', 'nonsense', '',
), { nil: undefined });
const auth = fc.constantFrom<'none' | 'write' | 'admin' | 'wrong' | 'basic' | 'garbage'>('none', 'write', 'admin', 'wrong', 'basic', 'garbage');
const query = fc.option(fc.dictionary(fc.constantFrom('from', 'to', 'currency', 'workflow', 'limit', 'cursor', 'email', 'token', 'next', '__proto__'), text, { maxKeys: 3 }), { nil: undefined });

const requestArb = fc.record({
  route: fc.constantFrom(...PATHS),
  id: pathId,
  body,
  contentType,
  auth,
  query,
  sign: fc.boolean(),
  duplicateHeaders: fc.boolean(),
});

type Req = typeof requestArb extends fc.Arbitrary<infer R> ? R : never;

function svixHeaders(payload: string) {
  const id = `msg_${Math.random().toString(36).slice(2)}`;
  const timestamp = String(Math.floor(Date.now() / 1000));
  const key = Buffer.from(RESEND_WEBHOOK_SECRET.replace(/^whsec_/, ''), 'base64');
  const signature = createHmac('sha256', key).update(`${id}.${timestamp}.${payload}`).digest('base64');
  return { 'svix-id': id, 'svix-timestamp': timestamp, 'svix-signature': `v1,${signature}` };
}

function toInject(r: Req) {
  const headers: Record<string, string | string[]> = {};
  if (r.contentType !== undefined) headers['content-type'] = r.contentType;
  const credential = { none: null, write: WRITE_KEY, admin: ADMIN_TOKEN, wrong: 'not-the-key', basic: null, garbage: null }[r.auth];
  if (credential) headers.authorization = `Bearer ${credential}`;
  if (r.auth === 'basic') headers.authorization = `Basic ${Buffer.from(`${WRITE_KEY}:`).toString('base64')}`;
  if (r.auth === 'garbage') headers.authorization = 'Basic %%%\u00ff';
  const payloadText = r.body === undefined ? '' : r.body.toString();
  if (r.sign && r.route.url === '/webhooks/stripe') headers['stripe-signature'] = sign(payloadText);
  if (r.sign && r.route.url === '/webhooks/resend') Object.assign(headers, svixHeaders(payloadText));
  if (r.duplicateHeaders) {
    if (headers.authorization) headers.authorization = [headers.authorization as string, 'Bearer other'];
    if (headers['stripe-signature']) headers['stripe-signature'] = [headers['stripe-signature'] as string, 't=1,v1=00'];
    headers['content-length-x'] = ['1', '2'];
  }
  let url = r.route.url.replace('{id}', r.id);
  if (r.query) url += `?${new URLSearchParams(r.query as Record<string, string>).toString()}`;
  const canHaveBody = r.route.method !== 'GET';
  return { method: r.route.method, url, headers, ...(canHaveBody && r.body !== undefined ? { payload: r.body } : {}) };
}

test(`fuzz: every public route answers 2xx/3xx/4xx with a JSON error, never 5xx (seed ${SEED}, ${RUNS} runs)`, async (t) => {
  const svc = await build(t, { env: { RESEND_WEBHOOK_SECRET, PUBLIC_URL: 'http://localhost:3000' } });
  t.diagnostic(`FUZZ_SEED=${SEED} FUZZ_RUNS=${RUNS}`);
  console.log(`fuzz-routes: FUZZ_SEED=${SEED} FUZZ_RUNS=${RUNS}`);
  const statuses = new Map<number, number>();
  let accepted = 0;
  await fc.assert(
    fc.asyncProperty(requestArb, async (r) => {
      const res = await svc.app.inject(toInject(r) as import("light-my-request").InjectOptions);
      statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1);
      assert.ok(res.statusCode < 500, `${r.route.method} ${r.route.url} -> ${res.statusCode} ${res.body.slice(0, 300)}`);
      if (res.statusCode >= 400 && String(res.headers['content-type'] ?? '').includes('application/json')) {
        const json = res.json() as { error?: unknown; message?: unknown };
        assert.equal(typeof json.error, 'string', res.body.slice(0, 200));
        assert.equal(typeof json.message, 'string', res.body.slice(0, 200));
      }
      if (res.statusCode >= 400 && !r.route.url.startsWith('/dashboard') && !r.route.url.startsWith('/unsubscribe') && !r.route.url.startsWith('/billing/update') && !r.route.url.startsWith('/r/')) {
        assert.match(String(res.headers['content-type']), /application\/json/, `${r.route.url} ${res.statusCode} answers JSON`);
      }
      if (res.statusCode < 300 && r.route.method === 'POST' && r.route.url.startsWith('/v1/')) accepted++;
    }),
    { seed: SEED, numRuns: RUNS },
  );
  t.diagnostic(`statuses: ${JSON.stringify(Object.fromEntries(statuses))}`);
  console.log(`fuzz-routes statuses: ${JSON.stringify(Object.fromEntries(statuses))}`);

  const health = await svc.app.inject({ method: 'GET', url: '/healthz' });
  assert.equal(health.statusCode, 200);
  const ready = await svc.app.inject({ method: 'GET', url: '/readyz' });
  assert.equal(ready.statusCode, 200);
  // No row from a rejected request: no generated Stripe payload is a valid event.
  const [stripeRows] = await svc.sql<{ n: number }[]>`select count(*)::int as n from stripe_events`;
  assert.equal(stripeRows!.n, 0);
  if (accepted === 0) {
    const [productRows] = await svc.sql<{ n: number }[]>`select count(*)::int as n from product_events`;
    assert.equal(productRows!.n, 0);
  }
});

test('events API: a text/plain JSON body (sendBeacon, no CORS preflight) is accepted like application/json', async (t) => {
  const svc = await build(t);
  const res = await svc.app.inject({
    method: 'POST',
    url: '/v1/track',
    headers: { 'content-type': 'text/plain;charset=UTF-8', authorization: `Bearer ${WRITE_KEY}` },
    payload: JSON.stringify({ userId: 'u_text_plain', event: 'Signed Up', messageId: 'm-text-plain-1' }),
  });
  assert.equal(res.statusCode, 200, res.body);
  const batch = await svc.app.inject({
    method: 'POST',
    url: '/v1/batch',
    headers: { 'content-type': 'text/plain', authorization: `Bearer ${WRITE_KEY}` },
    payload: JSON.stringify({ batch: [{ type: 'track', userId: 'u_text_plain', event: 'Opened', messageId: 'm-text-plain-2' }] }),
  });
  assert.equal(batch.statusCode, 200, batch.body);
  const bad = await svc.app.inject({ method: 'POST', url: '/v1/track', headers: { 'content-type': 'text/plain', authorization: `Bearer ${WRITE_KEY}` }, payload: '{not json' });
  assert.equal(bad.statusCode, 400);
  assert.equal(bad.json().error, 'invalid_json');
  const [rows] = await svc.sql<{ n: number }[]>`select count(*)::int as n from product_events`;
  assert.equal(rows!.n, 2);
});
