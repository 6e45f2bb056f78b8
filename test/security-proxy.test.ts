// TRUST_PROXY (issue 11): off by default, X-Forwarded-* are ignored (a client cannot pick its own
// address to dodge a rate limit, or claim https); when set, the client address and protocol come
// from the proxy's headers: separate rate-limit budgets per real client, and a Secure session
// cookie behind a TLS-terminating proxy.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError, loadConfig } from '../src/config.ts';
import { ADMIN_TOKEN, build, type Built } from './helpers/build.ts';

test('TRUST_PROXY parsing: off by default; true; a hop count; addresses and CIDRs; anything else stops start-up', () => {
  const parse = (value: string | undefined) => loadConfig({ TRUST_PROXY: value }).trustProxy;
  assert.equal(parse(undefined), false);
  assert.equal(parse('false'), false);
  assert.equal(parse('0'), false);
  assert.equal(parse('true'), true);
  assert.equal(parse('1'), 1);
  assert.equal(parse('2'), 2);
  assert.deepEqual(parse('127.0.0.1'), ['127.0.0.1']);
  assert.deepEqual(parse(' 10.0.0.0/8, 192.168.1.10 ,::1, fd00::/8'), ['10.0.0.0/8', '192.168.1.10', '::1', 'fd00::/8']);
  for (const bad of ['yes please', '10.0.0.0/33', '::1/129', 'proxy.internal', '10.0.0.1/8/1', '1000', '-1', ',']) {
    assert.throws(() => parse(bad), (err: unknown) => err instanceof ConfigError && /TRUST_PROXY/.test(err.message), bad);
  }
});

/** Anonymous GETs from "two clients" behind one proxy (inject's peer is 127.0.0.1). */
async function statuses(svc: Built): Promise<number[]> {
  const codes: number[] = [];
  for (const client of ['203.0.113.1', '203.0.113.1', '203.0.113.2', '203.0.113.2']) {
    codes.push((await svc.app.inject({ method: 'GET', url: '/r/not-a-token', headers: { 'x-forwarded-for': client } })).statusCode);
  }
  return codes;
}

async function loginCookie(svc: Built, headers: Record<string, string>): Promise<string> {
  const res = await svc.app.inject({
    method: 'POST', url: '/dashboard/login',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    payload: new URLSearchParams({ token: ADMIN_TOKEN }).toString(),
  });
  assert.equal(res.statusCode, 303, res.body);
  return String(res.headers['set-cookie']);
}

test('without TRUST_PROXY, X-Forwarded-For and -Proto are ignored: one budget for the proxy, no Secure cookie from a header', async (t) => {
  const svc = await build(t, { env: { ANON_RATE_LIMIT_PER_MINUTE: '2' } });
  assert.deepEqual(await statuses(svc), [400, 400, 429, 429], 'every client shares the peer address');
  assert.doesNotMatch(await loginCookie(svc, { 'x-forwarded-proto': 'https' }), /Secure/);
});

for (const trust of ['true', '1', '127.0.0.1', '127.0.0.0/8']) {
  test(`TRUST_PROXY=${trust}: each forwarded client has its own budget; https behind the proxy gives a Secure cookie`, async (t) => {
    const svc = await build(t, { env: { ANON_RATE_LIMIT_PER_MINUTE: '2', TRUST_PROXY: trust } });
    assert.deepEqual(await statuses(svc), [400, 400, 400, 400], 'two clients, two budgets');
    const third = await svc.app.inject({ method: 'GET', url: '/r/not-a-token', headers: { 'x-forwarded-for': '203.0.113.1' } });
    assert.equal(third.statusCode, 429, 'and each budget still holds');
    assert.match(await loginCookie(svc, { 'x-forwarded-proto': 'https', 'x-forwarded-for': '203.0.113.9' }), /; Secure/);
    assert.doesNotMatch(await loginCookie(svc, { 'x-forwarded-proto': 'http', 'x-forwarded-for': '203.0.113.9' }), /Secure/);
  });
}

test('TRUST_PROXY naming another proxy: requests from elsewhere keep their peer address', async (t) => {
  const svc = await build(t, { env: { ANON_RATE_LIMIT_PER_MINUTE: '2', TRUST_PROXY: '10.0.0.5' } });
  assert.deepEqual(await statuses(svc), [400, 400, 429, 429], '127.0.0.1 is not the trusted proxy');
});
