// Dashboard sign-in and forms (issue 11): every configured admin token signs in (rotation), and a
// session survives a rotation that keeps its token but ends with its token's removal; a
// cross-site POST (foreign Origin or Sec-Fetch-Site) is refused with 403 (HTML for a form, JSON
// otherwise) while the dashboard's own forms and non-browser clients work.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../src/clock.ts';
import { SESSION_COOKIE, issueSession, parseCookies, sessionKey, sessionKeys, validSession } from '../src/dashboard/session.ts';
import { tokenId } from '../src/http/auth.ts';
import { build, type Built } from './helpers/build.ts';

const SECRET = 'dashboard-test-secret';
const FORM = { 'content-type': 'application/x-www-form-urlencoded' };
const HTML = { accept: 'text/html,application/xhtml+xml' };

async function login(svc: Built, token: string, headers: Record<string, string> = {}) {
  return svc.app.inject({ method: 'POST', url: '/dashboard/login', headers: { ...FORM, ...headers }, payload: new URLSearchParams({ token }).toString() });
}

function cookieFrom(res: { headers: Record<string, unknown> }): string {
  const header = res.headers['set-cookie'];
  const first = Array.isArray(header) ? header[0] : header;
  assert.ok(typeof first === 'string', 'a Set-Cookie header');
  return `${SESSION_COOKIE}=${parseCookies(first.split(';')[0]).get(SESSION_COOKIE)}`;
}

async function dashboardStatus(svc: Built, headers: Record<string, string>): Promise<number> {
  return (await svc.app.inject({ method: 'GET', url: '/dashboard/export/recovery.csv?from=2026-01-01&to=2026-02-01', headers })).statusCode;
}

const service = (t: import('node:test').TestContext, tokens: string, clock: ManualClock) =>
  build(t, { clock, env: { LIFELINE_ADMIN_TOKEN: undefined, LIFELINE_ADMIN_TOKENS: tokens, LIFELINE_SECRET: SECRET } });

test('every admin token signs in and works as bearer; sessions survive a rotation that keeps their token, end with its removal', async (t) => {
  const clock = new ManualClock(new Date('2026-03-10T12:00:00Z'));
  const before = await service(t, 'tok_old_aaaaaaaa,tok_new_bbbbbbbb', clock);
  const sessions: Record<string, string> = {};
  for (const token of ['tok_old_aaaaaaaa', 'tok_new_bbbbbbbb']) {
    const res = await login(before, ` ${token} `);
    assert.equal(res.statusCode, 303, `${token}: ${res.body}`);
    sessions[token] = cookieFrom(res);
    assert.equal(await dashboardStatus(before, { cookie: sessions[token] }), 200, `${token}: its session works`);
    assert.equal(await dashboardStatus(before, { authorization: `Bearer ${token}` }), 200, `${token}: as bearer`);
  }
  assert.equal((await login(before, 'tok_other_cccccc')).statusCode, 401);
  assert.equal((await login(before, 'tok_old_aaaaaaa')).statusCode, 401, 'a prefix is not the token');
  assert.equal((await login(before, 'tok_old_aaaaaaaa,tok_new_bbbbbbbb')).statusCode, 401, 'the list is not a token');
  assert.equal(await dashboardStatus(before, { authorization: 'Bearer tok_other_cccccc' }), 401);

  // Rotation: the old token removed, a third added (same service secret, another instance).
  const after = await service(t, 'tok_new_bbbbbbbb,tok_next_dddddddd', clock);
  assert.equal(await dashboardStatus(after, { cookie: sessions.tok_new_bbbbbbbb! }), 200, 'the kept token’s session survives');
  assert.equal(await dashboardStatus(after, { cookie: sessions.tok_old_aaaaaaaa! }), 401, 'the removed token’s session ended');
  assert.equal(await dashboardStatus(after, { authorization: 'Bearer tok_old_aaaaaaaa' }), 401);
  assert.equal((await login(after, 'tok_next_dddddddd')).statusCode, 303);
  assert.equal((await login(after, 'tok_old_aaaaaaaa')).statusCode, 401);

  // The same at the unit level, and the session names its token (for the audit trail).
  const keys = sessionKeys(SECRET, ['tok_a', 'tok_b']);
  const cookie = issueSession(sessionKey(SECRET, 'tok_b'), clock);
  assert.equal(validSession(keys, cookie, clock), tokenId('tok_b'));
  assert.equal(validSession(sessionKeys(SECRET, ['tok_c', 'tok_b']), cookie, clock), tokenId('tok_b'), 'order and additions do not matter');
  assert.equal(validSession(sessionKeys(SECRET, ['tok_a', 'tok_c']), cookie, clock), undefined);
  assert.equal(validSession(sessionKeys('another-secret', ['tok_b']), cookie, clock), undefined, 'a new service secret ends every session');
  clock.advance(12 * 3600 * 1000 + 1000);
  assert.equal(validSession(keys, cookie, clock), undefined, 'expired');
});

test('cross-site POSTs to the dashboard are refused (403 HTML or JSON); its own forms and non-browser clients work', async (t) => {
  const clock = new ManualClock(new Date('2026-03-10T12:00:00Z'));
  const svc = await build(t, { clock, env: { LIFELINE_ADMIN_TOKENS: 'tok_csrf_aaaaaaaa', PUBLIC_URL: 'https://lifeline.example.com' } });
  const token = 'tok_csrf_aaaaaaaa';

  // A page on another site posting the login form (login CSRF) or the sign-out form.
  const foreign: Record<string, string>[] = [
    { origin: 'https://evil.example' },
    { origin: 'https://evil.example', 'sec-fetch-site': 'cross-site' },
    { 'sec-fetch-site': 'cross-site' }, // Origin stripped by a privacy extension
    { 'sec-fetch-site': 'same-site', origin: 'https://other.lifeline.example.com' }, // a sibling subdomain
    { origin: 'null' }, // a sandboxed iframe or data: URL
    { origin: 'https://lifeline.example.com.evil.example' },
  ];
  for (const headers of foreign) {
    const html = await login(svc, token, { ...headers, ...HTML });
    assert.equal(html.statusCode, 403, JSON.stringify(headers));
    assert.match(String(html.headers['content-type']), /^text\/html/);
    assert.equal(html.headers['set-cookie'], undefined, 'no session for a cross-site sign-in');
    const json = await login(svc, token, headers);
    assert.equal(json.statusCode, 403);
    assert.equal(json.json().error, 'cross_site_request');
    const logout = await svc.app.inject({ method: 'POST', url: '/dashboard/logout', headers: { ...HTML, ...headers } });
    assert.equal(logout.statusCode, 403, `logout ${JSON.stringify(headers)}`);
    assert.equal(logout.headers['set-cookie'], undefined, 'the cookie is not cleared');
  }

  // The dashboard's own forms, as a browser sends them (same origin, via PUBLIC_URL or the Host).
  const same = await login(svc, token, { ...HTML, origin: 'https://lifeline.example.com', 'sec-fetch-site': 'same-origin' });
  assert.equal(same.statusCode, 303, same.body);
  const cookie = cookieFrom(same);
  assert.equal((await login(svc, token, { origin: 'http://localhost', 'sec-fetch-site': 'same-origin' })).statusCode, 303, 'origin of the Host header');
  const logout = await svc.app.inject({ method: 'POST', url: '/dashboard/logout', headers: { ...HTML, cookie, origin: 'https://lifeline.example.com', 'sec-fetch-site': 'same-origin' } });
  assert.equal(logout.statusCode, 303);
  assert.match(String(logout.headers['set-cookie']), /Max-Age=0/);
  // curl / scripts: no Origin, no Sec-Fetch-Site
  assert.equal((await login(svc, token)).statusCode, 303);
  // GETs are never refused: a link from another site to the dashboard just opens it (or the login)
  assert.equal((await svc.app.inject({ method: 'GET', url: '/dashboard/login', headers: { ...HTML, 'sec-fetch-site': 'cross-site', origin: 'https://evil.example' } })).statusCode, 200);
});
