// Security headers (issue 11, @fastify/helmet): every HTML page (dashboard, login, unsubscribe,
// link error pages, the update-card fallback) has a strict CSP whose hashes cover each of its
// inline <style> blocks, with no inline script; no framing, nosniff, no referrer for token pages;
// HSTS only when PUBLIC_URL is https; the embeddable script loads cross-origin (CORP, CORS);
// the JSON API carries no CSP. The browser check is test/e2e/dashboard.e2e.ts (npm run test:e2e).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { signToken } from '../src/email/tokens.ts';
import { cardUpdateUrl } from '../src/stripe/card-update-link.ts';
import { ADMIN_TOKEN, build } from './helpers/build.ts';
import { deliver, envelope, invoice } from './helpers/stripe.ts';

type Res = { statusCode: number; headers: Record<string, unknown>; body: string };

/** The CSP's directives, by name. */
function directives(res: Res): Map<string, string[]> {
  const csp = res.headers['content-security-policy'];
  assert.equal(typeof csp, 'string', 'a CSP header');
  return new Map(String(csp).split(';').map((d) => d.trim().split(/\s+/)).filter((d) => d[0]).map(([name, ...values]) => [name!, values]));
}

function assertStrictPage(name: string, res: Res, options: { scripts: boolean; referrer: string }) {
  assert.match(String(res.headers['content-type']), /^text\/html/, name);
  const csp = directives(res);
  assert.deepEqual(csp.get('default-src'), ["'none'"], `${name}: default-src`);
  assert.deepEqual(csp.get('script-src'), options.scripts ? ["'self'"] : ["'none'"], `${name}: script-src`);
  assert.deepEqual(csp.get('frame-ancestors'), ["'none'"], name);
  assert.deepEqual(csp.get('form-action'), ["'self'"], name);
  assert.deepEqual(csp.get('base-uri'), ["'none'"], name);
  assert.ok(!String(res.headers['content-security-policy']).includes('unsafe-inline'), `${name}: no unsafe-inline`);
  // every inline style block is allowed by its hash, and nothing else is inline
  const styles = [...res.body.matchAll(/<style>([\s\S]*?)<\/style>/g)].map((m) => m[1]!);
  assert.ok(styles.length > 0, `${name}: has its style`);
  for (const style of styles) {
    const hash = `'sha256-${createHash('sha256').update(style).digest('base64')}'`;
    assert.ok(csp.get('style-src')?.includes(hash), `${name}: style block allowed by hash ${hash}`);
  }
  assert.doesNotMatch(res.body, /\sstyle="/, `${name}: no style attributes (the CSP would block them)`);
  assert.doesNotMatch(res.body, /\son[a-z]+="/, `${name}: no inline event handlers`);
  for (const script of res.body.match(/<script\b[^>]*>/g) ?? []) {
    assert.ok(/\bsrc="\//.test(script) || /type="application\/json"/.test(script), `${name}: no inline script: ${script}`);
  }
  assert.equal(res.headers['x-frame-options'], 'DENY', name);
  assert.equal(res.headers['x-content-type-options'], 'nosniff', name);
  assert.equal(res.headers['referrer-policy'], options.referrer, name);
  assert.equal(res.headers['cross-origin-opener-policy'], 'same-origin', name);
}

test('HTML pages have a strict CSP covering their inline styles; the embed script loads cross-origin; the API has no CSP', async (t) => {
  const svc = await build(t, { env: { BILLING_STATUS_ORIGINS: 'https://app.acme.test' } });
  const admin = { authorization: `Bearer ${ADMIN_TOKEN}` };
  await deliver(svc.app, envelope('invoice.payment_failed', invoice({ id: 'in_hdr_1', customer: 'cus_hdr_1', customer_email: 'h@acme.test' })));
  await svc.drain();

  const pages: [string, Res, { scripts: boolean; referrer: string }][] = [
    ['login', await svc.app.inject({ method: 'GET', url: '/dashboard/login' }), { scripts: true, referrer: 'same-origin' }],
    ['dashboard', await svc.app.inject({ method: 'GET', url: '/dashboard', headers: admin }), { scripts: true, referrer: 'same-origin' }],
    ['dashboard 401', await svc.app.inject({ method: 'GET', url: '/dashboard' }), { scripts: true, referrer: 'same-origin' }],
    ['login refused cross-site', await svc.app.inject({ method: 'POST', url: '/dashboard/login', headers: { accept: 'text/html', origin: 'https://evil.example' }, payload: {} }), { scripts: true, referrer: 'same-origin' }],
    ['unsubscribe page', await svc.app.inject({ method: 'GET', url: `/unsubscribe/${signToken(svc.secret, 'unsubscribe', { m: 'msg_hdr' })}` }), { scripts: false, referrer: 'no-referrer' }],
    ['unsubscribe invalid', await svc.app.inject({ method: 'GET', url: '/unsubscribe/garbage' }), { scripts: false, referrer: 'no-referrer' }],
    ['unsubscribe POST', await svc.app.inject({ method: 'POST', url: '/unsubscribe/garbage' }), { scripts: false, referrer: 'no-referrer' }],
    ['click invalid', await svc.app.inject({ method: 'GET', url: '/r/garbage' }), { scripts: false, referrer: 'no-referrer' }],
    ['update-card invalid', await svc.app.inject({ method: 'GET', url: '/billing/update/garbage' }), { scripts: false, referrer: 'no-referrer' }],
    ['update-card fallback', await svc.app.inject({ method: 'GET', url: new URL(cardUpdateUrl('http://x', svc.secret, 'in_hdr_1', null)).pathname }), { scripts: false, referrer: 'no-referrer' }],
  ];
  for (const [name, res, options] of pages) assertStrictPage(name, res, options);
  assert.equal(pages[1]![1].statusCode, 200);
  assert.match(pages[9]![1].body, /Open your invoice/, 'the fallback page with its link');
  assert.equal(pages[0]![1].headers['strict-transport-security'], undefined, 'no HSTS on plain http');

  // the embeddable script: loadable from customers' apps
  const script = await svc.app.inject({ method: 'GET', url: '/embed/billing-notice.js', headers: { origin: 'https://app.acme.test' } });
  assert.equal(script.statusCode, 200);
  assert.equal(script.headers['cross-origin-resource-policy'], 'cross-origin');
  assert.equal(script.headers['access-control-allow-origin'], 'https://app.acme.test');
  assert.equal(script.headers['x-content-type-options'], 'nosniff');
  assert.equal(script.headers['content-security-policy'], undefined);
  // the dashboard's own scripts: same origin only
  const asset = await svc.app.inject({ method: 'GET', url: '/dashboard/assets/dashboard.js' });
  assert.equal(asset.statusCode, 200);
  assert.equal(asset.headers['cross-origin-resource-policy'], 'same-origin');

  // the JSON API: no page headers
  for (const url of ['/healthz', '/v1/workflows']) {
    const res = await svc.app.inject({ method: 'GET', url, headers: admin });
    assert.equal(res.statusCode, 200, url);
    assert.equal(res.headers['content-security-policy'], undefined, url);
  }
});

test('HSTS (this host only) when PUBLIC_URL is https', async (t) => {
  const svc = await build(t, { env: { PUBLIC_URL: 'https://lifeline.example.com' } });
  const login = await svc.app.inject({ method: 'GET', url: '/dashboard/login' });
  assert.equal(login.headers['strict-transport-security'], 'max-age=31536000');
  const unsubscribe = await svc.app.inject({ method: 'GET', url: '/unsubscribe/garbage' });
  assert.equal(unsubscribe.headers['strict-transport-security'], 'max-age=31536000');
});

test('the API docs (/docs) get a CSP without inline scripts or upgrade-insecure-requests, nosniff and no framing', async (t) => {
  const svc = await build(t);
  for (const url of ['/docs', '/docs/json']) {
    const res = await svc.app.inject({ method: 'GET', url });
    assert.equal(res.statusCode, 200, url);
    const csp = String(res.headers['content-security-policy'] ?? '');
    assert.match(csp, /default-src 'self'/, url);
    assert.match(csp, /frame-ancestors 'none'/, url);
    assert.match(csp, /style-src 'self' https: 'sha256-[A-Za-z0-9+/=]+'/, url);
    assert.doesNotMatch(csp, /upgrade-insecure-requests|unsafe-inline|unsafe-eval/, url);
    assert.equal(res.headers['x-content-type-options'], 'nosniff', url);
    assert.equal(res.headers['x-frame-options'], 'DENY', url);
    assert.equal(res.headers['referrer-policy'], 'no-referrer', url);
  }
});
