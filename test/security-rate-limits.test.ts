// Rate limits (issue 11): 429 + retry-after past the budget, per credential; the login has its
// own small budget; webhooks are never limited.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { build, WRITE_KEY } from './helpers/build.ts';
import { deliver, envelope, invoice } from './helpers/stripe.ts';

test('the events API answers 429 with retry-after past RATE_LIMIT_PER_MINUTE; webhooks are exempt; login has its own budget', async (t) => {
  // ANON 3: a webhook carries no credential, so without its exemption the 4th delivery would be a 429.
  const svc = await build(t, { env: { RATE_LIMIT_PER_MINUTE: '5', LOGIN_RATE_LIMIT_PER_MINUTE: '3', ANON_RATE_LIMIT_PER_MINUTE: '3' } });
  const track = (key: string, n: number) => svc.app.inject({
    method: 'POST', url: '/v1/track', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    payload: { userId: 'u_rl', event: 'Clicked', messageId: `m-rl-${key}-${n}` },
  });
  const codes: number[] = [];
  for (let i = 0; i < 7; i++) codes.push((await track(WRITE_KEY, i)).statusCode);
  assert.deepEqual(codes, [200, 200, 200, 200, 200, 429, 429]);
  const limited = await track(WRITE_KEY, 99);
  assert.equal(limited.statusCode, 429);
  assert.equal(limited.json().error, 'rate_limited');
  assert.ok(Number(limited.headers['retry-after']) >= 1, `retry-after ${limited.headers['retry-after']}`);
  // Another credential has its own budget (a 401, not a 429).
  assert.equal((await track('someone-else', 1)).statusCode, 401);
  const [rows] = await svc.sql<{ n: number }[]>`select count(*)::int as n from product_events`;
  assert.equal(rows!.n, 5, 'nothing from a limited request is stored');

  for (let i = 0; i < 10; i++) assert.equal((await deliver(svc.app, envelope('invoice.paid', invoice({ status: 'paid' })))).statusCode, 200);

  const login = () => svc.app.inject({ method: 'POST', url: '/dashboard/login', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: 'token=wrong' });
  const loginCodes: number[] = [];
  for (let i = 0; i < 5; i++) loginCodes.push((await login()).statusCode);
  assert.deepEqual(loginCodes.slice(3), [429, 429]);
  assert.ok(loginCodes.slice(0, 3).every((c) => c !== 429), String(loginCodes));
});

test('requests without credentials (unsubscribe, redirects) are limited per address by ANON_RATE_LIMIT_PER_MINUTE', async (t) => {
  const svc = await build(t, { env: { ANON_RATE_LIMIT_PER_MINUTE: '3' } });
  const codes: number[] = [];
  for (let i = 0; i < 5; i++) codes.push((await svc.app.inject({ method: 'GET', url: '/unsubscribe/not-a-token' })).statusCode);
  assert.ok(codes.slice(0, 3).every((c) => c !== 429), String(codes));
  assert.deepEqual(codes.slice(3), [429, 429]);
  const redirect = await svc.app.inject({ method: 'GET', url: '/r/not-a-token' });
  assert.equal(redirect.statusCode, 429, 'same address, same budget');
  assert.ok(redirect.headers['retry-after']);
});
