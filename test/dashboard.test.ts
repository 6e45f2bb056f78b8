// The finance dashboard without a browser: authentication (redirect / 401, the login form, the
// session cookie and its tampering, bearer), the per-currency HTML, the CSV export and the assets.
// The browser end-to-end test is test/e2e/dashboard.e2e.ts (npm run test:e2e).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ManualClock } from '../src/clock.ts';
import { signToken } from '../src/email/tokens.ts';
import { createHmac } from 'node:crypto';
import { SESSION_COOKIE, SESSION_KIND, parseCookies, sessionKey } from '../src/dashboard/session.ts';
import { monthsOf, defaultRange } from '../src/dashboard/page.ts';
import { ADMIN_TOKEN, WRITE_KEY, build, type Built } from './helpers/build.ts';
import { deliver, envelope, invoice } from './helpers/stripe.ts';

const NOW = new Date('2026-03-10T12:00:00Z');
const FORM = { 'content-type': 'application/x-www-form-urlencoded' };
const HTML = { accept: 'text/html,application/xhtml+xml' };
const form = (fields: Record<string, string>) => new URLSearchParams(fields).toString();

async function login(svc: Built, token = ADMIN_TOKEN, next?: string) {
  return svc.app.inject({ method: 'POST', url: '/dashboard/login', headers: FORM, payload: form({ token, ...(next === undefined ? {} : { next }) }) });
}

/** The pre-2026-11 token shape (base64url JSON . HMAC), which src/ no longer issues. */
function legacySigned(key: string, kind: string, payload: object): string {
  const body = Buffer.from(JSON.stringify(payload)).toString('base64url');
  return `${body}.${createHmac('sha256', key).update(`${kind}.${body}`).digest('base64url')}`;
}

function cookieOf(res: { headers: Record<string, unknown> }): string {
  const header = res.headers['set-cookie'];
  const first = Array.isArray(header) ? header[0] : header;
  assert.ok(typeof first === 'string', 'a Set-Cookie header');
  return first;
}

function sessionValue(setCookie: string): string {
  const value = parseCookies(setCookie.split(';')[0]).get(SESSION_COOKIE);
  assert.ok(value, setCookie);
  return value;
}

/** Two currencies (one zero-decimal): failed invoices for three customers, one of them paid. */
async function scenario(svc: Built): Promise<void> {
  const at = (days: number) => new Date(NOW.getTime() - days * 86_400_000);
  const customers = [
    ['cus_d1', 'usd', 'in_d_usd_1', 4900],
    ['cus_d2', 'usd', 'in_d_usd_2', 12345],
    ['cus_d3', 'jpy', 'in_d_jpy_1', 5000],
  ] as const;
  for (const [id] of customers) {
    assert.equal((await deliver(svc.app, envelope('customer.created', { id, object: 'customer', email: `${id}@example.test`, name: `Name ${id}` }, { created: at(20) }))).statusCode, 200);
  }
  for (const [customer, currency, id, amount] of customers) {
    const inv = invoice({ id, customer, currency, amount_due: amount, subscription: null, customer_email: `${customer}@example.test` });
    assert.equal((await deliver(svc.app, envelope('invoice.payment_failed', inv, { created: at(9) }))).statusCode, 200);
  }
  const paid = invoice({ id: 'in_d_usd_1', customer: 'cus_d1', currency: 'usd', amount_due: 4900, status: 'paid', subscription: null, paid_at: Math.floor(at(7).getTime() / 1000) });
  assert.equal((await deliver(svc.app, envelope('invoice.paid', paid, { created: at(7) }))).statusCode, 200);
  await svc.drain();
}

test('dashboard: auth (redirect, 401, login form, cookie, tampering, expiry, bearer, logout), per-currency HTML, CSV, assets', async (t) => {
  const svc = await build(t, { clock: 'manual' });
  const clock = svc.clock as ManualClock;
  clock.set(NOW);
  await scenario(svc);

  // --- without credentials: a browser is sent to the login form, anything else gets 401
  const redirect = await svc.app.inject({ method: 'GET', url: '/dashboard?from=2026-01-01&to=2026-04-01', headers: HTML });
  assert.equal(redirect.statusCode, 303);
  assert.equal(redirect.headers.location, `/dashboard/login?next=${encodeURIComponent('/dashboard?from=2026-01-01&to=2026-04-01')}`);
  const bare = await svc.app.inject({ method: 'GET', url: '/dashboard' });
  assert.equal(bare.statusCode, 401);
  assert.match(String(bare.headers['www-authenticate']), /^Bearer/);
  assert.doesNotMatch(bare.body, /currency-usd/);
  const csvNoAuth = await svc.app.inject({ method: 'GET', url: '/dashboard/export/recovery.csv?from=2026-01-01&to=2026-04-01' });
  assert.equal(csvNoAuth.statusCode, 401);
  const badBearer = await svc.app.inject({ method: 'GET', url: '/dashboard', headers: { ...HTML, authorization: 'Bearer nope' } });
  assert.equal(badBearer.statusCode, 401, 'a wrong bearer key is refused, not redirected');

  // --- the login form
  const loginForm = await svc.app.inject({ method: 'GET', url: '/dashboard/login?next=%2Fdashboard%3Ffrom%3D2026-01-01%26to%3D2026-04-01' });
  assert.equal(loginForm.statusCode, 200);
  assert.match(String(loginForm.headers['content-type']), /^text\/html/);
  assert.match(loginForm.body, /<form method="post" action="\/dashboard\/login"/);
  assert.match(loginForm.body, /name="token" type="password"/);
  assert.match(loginForm.body, /name="next" value="\/dashboard\?from=2026-01-01&#38;to=2026-04-01"/);

  const wrong = await login(svc, 'not-the-token');
  assert.equal(wrong.statusCode, 401);
  assert.equal(wrong.headers['set-cookie'], undefined);
  assert.match(wrong.body, /data-testid="login-error"/);

  const ok = await login(svc, ADMIN_TOKEN, '/dashboard?from=2026-01-01&to=2026-04-01');
  assert.equal(ok.statusCode, 303);
  assert.equal(ok.headers.location, '/dashboard?from=2026-01-01&to=2026-04-01');
  const setCookie = cookieOf(ok);
  assert.match(setCookie, new RegExp(`^${SESSION_COOKIE}=[A-Za-z0-9_-]+;`), 'an opaque value');
  assert.match(setCookie, /; HttpOnly/);
  assert.match(setCookie, /; SameSite=Strict/);
  assert.match(setCookie, /; Path=\/dashboard/);
  assert.match(setCookie, /; Max-Age=43200/);
  assert.doesNotMatch(setCookie, /Secure/, 'plain http (PUBLIC_URL is http): no Secure flag');
  const session = sessionValue(setCookie);
  const cookie = `${SESSION_COOKIE}=${session}`;

  // open redirects are refused
  for (const next of ['https://evil.example/', '//evil.example/dashboard', '/dashboard/../docs', '/\\evil.example', '/docs']) {
    const res = await login(svc, ADMIN_TOKEN, next);
    assert.equal(res.statusCode, 303);
    assert.equal(res.headers.location, '/dashboard', next);
  }

  // --- the cookie works; the login page then forwards to the dashboard
  const page = await svc.app.inject({ method: 'GET', url: '/dashboard?from=2026-01-01&to=2026-04-01', headers: { ...HTML, cookie } });
  assert.equal(page.statusCode, 200, page.body);
  assert.equal((await svc.app.inject({ method: 'GET', url: '/dashboard/login', headers: { cookie } })).statusCode, 303);

  // --- tampered, forged, expired cookies are refused
  // The cookie is opaque (AES-GCM, src/email/tokens.ts): a changed byte anywhere is refused.
  const raw = Buffer.from(session, 'base64url');
  const flip = (i: number) => {
    const changed = Buffer.from(raw);
    changed[i]! ^= 0x01;
    return changed.toString('base64url');
  };
  const iat = Math.floor(NOW.getTime() / 1000);
  const exp = iat + 10 * 365 * 86_400;
  const forged = [
    flip(0), // version byte
    flip(5), // nonce
    flip(raw.length - 20), // ciphertext
    flip(raw.length - 1), // tag
    session.slice(0, -6),
    signToken('some-other-key', SESSION_KIND, { iat, exp }), // sealed with another key
    signToken(ADMIN_TOKEN, SESSION_KIND, { iat, exp }), // the admin token is not the key
    signToken(svc.secret, SESSION_KIND, { iat, exp }), // nor the service secret alone
    legacySigned(sessionKey(svc.secret, ADMIN_TOKEN), SESSION_KIND, { iat, exp }), // the old signed shape, right key: sessions never accept it
    '',
  ];
  for (const value of forged) {
    const res = await svc.app.inject({ method: 'GET', url: '/dashboard', headers: { ...HTML, cookie: `${SESSION_COOKIE}=${value}` } });
    assert.equal(res.statusCode, 303, `refused: ${value}`);
    assert.match(String(res.headers.location), /^\/dashboard\/login/);
    const api = await svc.app.inject({ method: 'GET', url: '/dashboard/export/recovery.csv?from=2026-01-01&to=2026-04-01', headers: { cookie: `${SESSION_COOKIE}=${value}` } });
    assert.equal(api.statusCode, 401);
  }
  // the session cookie is not an API credential
  const apiWithCookie = await svc.app.inject({ method: 'GET', url: '/v1/reports/recovery?from=2026-01-01&to=2026-04-01', headers: { cookie } });
  assert.equal(apiWithCookie.statusCode, 401);

  // --- bearer works without a cookie
  const bearer = await svc.app.inject({ method: 'GET', url: '/dashboard?from=2026-01-01&to=2026-04-01', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
  assert.equal(bearer.statusCode, 200);
  assert.equal(bearer.body, page.body, 'same page for bearer and cookie');

  // --- the page: headers, per-currency sections, amounts formatted for their own currency
  assert.match(String(page.headers['content-type']), /^text\/html; charset=utf-8/);
  const csp = String(page.headers['content-security-policy']);
  assert.match(csp, /script-src 'self'(;|$)/);
  assert.match(csp, /default-src 'none'/);
  assert.match(csp, /style-src 'sha256-[A-Za-z0-9+/=]+'/);
  assert.equal(page.headers['cache-control'], 'no-store');
  for (const script of page.body.match(/<script\b[^>]*>/g) ?? []) {
    assert.ok(/\bsrc="\/dashboard\/assets\//.test(script) || /type="application\/json"/.test(script), `no inline script: ${script}`);
  }
  assert.doesNotMatch(page.body, /https?:\/\/(?!127\.0\.0\.1)[^"'\s<]*\.(js|css|woff2?)/, 'nothing from another origin');
  const html = page.body;
  const text = (id: string) => {
    const m = new RegExp(`data-testid="${id}"[^>]*>([^<]*)<`).exec(html);
    assert.ok(m, `element ${id}`);
    return m[1];
  };
  assert.match(html, /data-testid="currency-jpy"/);
  assert.match(html, /data-testid="currency-usd"/);
  assert.doesNotMatch(html, /data-testid="currency-eur"/);
  assert.equal(text('usd-failed-count'), '2');
  assert.equal(text('usd-failed-amount'), '$172.45');
  assert.equal(text('usd-recovered-amount'), '$49.00');
  assert.equal(text('usd-open-amount'), '$123.45');
  assert.equal(text('usd-recovery-rate'), '28.4%');
  assert.equal(text('jpy-failed-count'), '1');
  assert.equal(text('jpy-failed-amount'), '¥5,000');
  assert.equal(text('jpy-open-amount'), '¥5,000');
  assert.equal(text('jpy-recovery-rate'), '0.0%');
  assert.match(html, /data-testid="usd-open-case" data-invoice="in_d_usd_2"/);
  assert.match(html, /data-testid="jpy-open-case" data-invoice="in_d_jpy_1"/);
  assert.match(html, /<canvas id="usd-chart-monthly"/);
  assert.match(html, /id="dashboard-data">\{"locale":"en-US","charts":\[/);
  assert.match(html, /data-testid="workflow-billing-recovery"/);
  assert.match(html, /Recovery report: definitions/);
  assert.match(html, /href="\/dashboard\/export\/recovery\.csv\?from=2026-01-01&#38;to=2026-04-01&#38;currency=jpy"/);

  // --- the CSV export: the API's ledger, for the cookie
  const csv = await svc.app.inject({ method: 'GET', url: '/dashboard/export/recovery.csv?from=2026-01-01&to=2026-04-01', headers: { cookie } });
  assert.equal(csv.statusCode, 200);
  assert.match(String(csv.headers['content-type']), /^text\/csv/);
  assert.equal(csv.headers['content-disposition'], 'attachment; filename="recovery-ledger_2026-01-01_2026-04-01.csv"');
  const viaApi = await svc.app.inject({ method: 'GET', url: '/v1/reports/recovery?from=2026-01-01&to=2026-04-01&format=csv', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
  assert.equal(csv.body, viaApi.body);
  assert.equal(csv.body.split('\r\n').filter(Boolean).length, 1 + 3);
  const jpyCsv = await svc.app.inject({ method: 'GET', url: '/dashboard/export/recovery.csv?from=2026-01-01&to=2026-04-01&currency=jpy', headers: { cookie } });
  assert.equal(jpyCsv.body.split('\r\n').filter(Boolean).length, 1 + 1);
  const badCsv = await svc.app.inject({ method: 'GET', url: '/dashboard/export/recovery.csv?from=2026-01-01', headers: { cookie } });
  assert.equal(badCsv.statusCode, 400);

  // --- the default range (last 12 months) and a bad range
  const byDefault = await svc.app.inject({ method: 'GET', url: '/dashboard', headers: { cookie } });
  assert.equal(byDefault.statusCode, 200);
  assert.match(byDefault.body, /name="from" value="2025-04-01"/);
  assert.match(byDefault.body, /name="to" value="2026-03-11"/);
  assert.match(byDefault.body, /data-testid="currency-usd"/);
  const badRange = await svc.app.inject({ method: 'GET', url: '/dashboard?from=2026-04-01&to=2026-01-01', headers: { cookie } });
  assert.equal(badRange.statusCode, 400);
  assert.match(badRange.body, /data-testid="range-error"[^>]*>Query parameter &#34;from&#34;/);

  // --- assets: from our origin, JavaScript, cached for a year under their hashed name
  const scripts = [...html.matchAll(/<script src="([^"]+)"/g)].map((m) => m[1]!);
  assert.equal(scripts.length, 2);
  for (const src of scripts) {
    const res = await svc.app.inject({ method: 'GET', url: src });
    assert.equal(res.statusCode, 200, src);
    assert.equal(res.headers['content-type'], 'text/javascript; charset=utf-8');
    assert.equal(res.headers['cache-control'], 'public, max-age=31536000, immutable');
    assert.equal(res.headers['x-content-type-options'], 'nosniff');
    const again = await svc.app.inject({ method: 'GET', url: src, headers: { 'if-none-match': String(res.headers.etag) } });
    assert.equal(again.statusCode, 304);
  }
  const chart = await svc.app.inject({ method: 'GET', url: '/dashboard/assets/chart.umd.js' });
  assert.equal(chart.statusCode, 200);
  assert.match(chart.body, /Chart\.js v4/);
  assert.equal(chart.headers['cache-control'], 'public, max-age=300');
  assert.equal((await svc.app.inject({ method: 'GET', url: '/dashboard/assets/dashboard.js' })).statusCode, 200);
  assert.equal((await svc.app.inject({ method: 'GET', url: '/dashboard/assets/..%2Fsession.ts' })).statusCode, 404);
  assert.equal((await svc.app.inject({ method: 'GET', url: '/dashboard/assets/nope.js' })).statusCode, 404);

  // --- logout clears the cookie; a cross-site POST is refused
  const crossSite = await svc.app.inject({ method: 'POST', url: '/dashboard/logout', headers: { cookie, origin: 'https://evil.example' } });
  assert.equal(crossSite.statusCode, 403);
  const logout = await svc.app.inject({ method: 'POST', url: '/dashboard/logout', headers: { cookie } });
  assert.equal(logout.statusCode, 303);
  assert.equal(logout.headers.location, '/dashboard/login');
  assert.match(cookieOf(logout), new RegExp(`^${SESSION_COOKIE}=; Path=/dashboard; Max-Age=0; HttpOnly; SameSite=Strict`));

  // --- a session expires after 12 hours
  clock.set(new Date(NOW.getTime() + 11 * 3_600_000));
  assert.equal((await svc.app.inject({ method: 'GET', url: '/dashboard/export/recovery.csv?from=2026-01-01&to=2026-04-01', headers: { cookie } })).statusCode, 200);
  clock.set(new Date(NOW.getTime() + 12 * 3_600_000 + 1000));
  assert.equal((await svc.app.inject({ method: 'GET', url: '/dashboard/export/recovery.csv?from=2026-01-01&to=2026-04-01', headers: { cookie } })).statusCode, 401);

  // --- repeated wrong tokens are throttled
  let last = 0;
  for (let i = 0; i < 11; i++) last = (await login(svc, `wrong-${i}`)).statusCode;
  assert.equal(last, 429);
  assert.equal((await login(svc)).statusCode, 429, 'even the right token, until the window passes');
  clock.set(new Date(NOW.getTime() + 13 * 3_600_000));
  assert.equal((await login(svc)).statusCode, 303);
});

test('dashboard: disabled without LIFELINE_ADMIN_TOKEN', async (t) => {
  const svc = await build(t, { env: { LIFELINE_ADMIN_TOKEN: undefined } });
  assert.equal((await svc.app.inject({ method: 'GET', url: '/dashboard', headers: HTML })).statusCode, 503);
  assert.equal((await svc.app.inject({ method: 'GET', url: '/dashboard/login' })).statusCode, 503);
  assert.equal((await login(svc, '')).statusCode, 503);
  assert.equal((await svc.app.inject({ method: 'GET', url: '/dashboard/assets/chart.umd.js' })).statusCode, 200);
});

test('dashboard: month axis and default range', () => {
  assert.deepEqual(monthsOf(new Date('2025-11-15T00:00:00Z'), new Date('2026-02-01T00:00:00Z')), ['2025-11', '2025-12', '2026-01']);
  assert.deepEqual(monthsOf(new Date('2026-01-01T00:00:00Z'), new Date('2026-01-02T00:00:00Z')), ['2026-01']);
  const r = defaultRange(new Date('2026-01-31T23:59:00Z'));
  assert.equal(r.from, '2025-02-01');
  assert.equal(r.to, '2026-02-01');
  assert.deepEqual(r.quick.find((q) => q.label === 'Last month'), { label: 'Last month', from: '2025-12-01', to: '2026-01-01' });
});

test('dashboard: work parked after repeated failures is shown at the top until it is replayed', async (t) => {
  const svc = await build(t, { clock: 'manual' });
  (svc.clock as ManualClock).set(NOW);
  const page = async () => (await svc.app.inject({ method: 'GET', url: '/dashboard?from=2026-01-01&to=2026-04-01', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).body;
  assert.doesNotMatch(await page(), /data-testid="dead-letters"/, 'nothing parked, no panel');
  const res = await svc.app.inject({
    method: 'POST', url: '/v1/track', headers: { authorization: `Bearer ${WRITE_KEY}` },
    payload: { userId: 'u1', event: 'Signed Up', messageId: 'm-dead-1' },
  });
  assert.equal(res.statusCode, 200);
  await svc.sql`update product_events set dead_at = ${NOW}, attempts = 10, last_error = 'boom' where message_id = 'm-dead-1'`;
  const withDead = await page();
  assert.match(withDead, /data-testid="dead-letters"/);
  assert.match(withDead, /1 item\(s\) parked after repeated failures: <code>product_events<\/code> 1/);
  const [row] = await svc.sql<{ id: number }[]>`select id from product_events where message_id = 'm-dead-1'`;
  const replay = await svc.app.inject({
    method: 'POST', url: '/v1/admin/dead-letters/replay', headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    payload: { queue: 'product_events', ids: [String(row!.id)] },
  });
  assert.equal(replay.statusCode, 200, replay.body);
  assert.doesNotMatch(await page(), /data-testid="dead-letters"/, 'replayed: the panel is gone');
});
