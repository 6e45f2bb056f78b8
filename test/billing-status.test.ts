// In-product billing status (issue 13): GET /v1/billing-status for each state, the browser token
// (minted with the write key, scoped to one user, short-lived), auth failures, CORS, and several
// currencies (never added together). State comes from real Stripe webhooks through the projector.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { FastifyInstance } from 'fastify';
import { ManualClock } from '../src/clock.ts';
import { mintBillingStatusToken } from '../src/billing/billing-status.ts';
import { signToken } from '../src/email/tokens.ts';
import { build, WRITE_KEY } from './helpers/build.ts';
import { deliver, envelope, invoice, subscription } from './helpers/stripe.ts';

const NOW = new Date('2025-10-14T00:00:00Z'); // 1_760_400_000; failures below are at 1_760_000_000 (~4.6 days earlier)
let seq = 0;

async function identify(app: FastifyInstance, userId: string, customerId: string) {
  const res = await app.inject({
    method: 'POST',
    url: '/v1/identify',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${WRITE_KEY}` },
    payload: JSON.stringify({ messageId: `bs-${process.pid}-${++seq}`, userId, traits: { stripeCustomerId: customerId } }),
  });
  assert.equal(res.statusCode, 200, res.body);
}

async function stripe(app: FastifyInstance, type: string, object: Record<string, unknown>, created = 1_760_000_000) {
  const res = await deliver(app, envelope(type, object, { created }));
  assert.equal(res.statusCode, 200, res.body);
}

function customerObject(id: string) {
  return { id, object: 'customer', email: `${id}@acme.test`, name: 'Acme', invoice_settings: { default_payment_method: 'pm_1' }, metadata: {}, created: 1_750_000_000 };
}

async function setup(t: Parameters<typeof build>[0], env: Record<string, string> = {}) {
  const clock = new ManualClock(NOW);
  const svc = await build(t, { clock, env: { BILLING_STATUS_ORIGINS: 'https://app.acme.test', RECOVERY_CANCEL_AFTER_DAYS: '14', ...env } });
  // u_ok: active subscription, paid. u_due: failed USD 49.00 + EUR 20.00 (separate customers, one account).
  // u_sca: action required. u_gone: canceled subscription, nothing due.
  for (const c of ['cus_ok', 'cus_due', 'cus_due_eu', 'cus_sca', 'cus_gone']) await stripe(svc.app, 'customer.created', customerObject(c), 1_759_000_000);
  await stripe(svc.app, 'customer.subscription.created', subscription({ id: 'sub_ok', customer: 'cus_ok' }), 1_759_000_000);
  await stripe(svc.app, 'invoice.paid', invoice({ id: 'in_ok', customer: 'cus_ok', subscription: 'sub_ok', status: 'paid' }));
  await stripe(svc.app, 'customer.subscription.created', subscription({ id: 'sub_due', customer: 'cus_due' }), 1_759_000_000);
  await stripe(svc.app, 'invoice.payment_failed', invoice({ id: 'in_due', customer: 'cus_due', subscription: 'sub_due', amount_due: 4900 }));
  await stripe(svc.app, 'invoice.payment_failed', invoice({ id: 'in_due_eu', customer: 'cus_due_eu', subscription: null, currency: 'eur', amount_due: 2000 }), 1_760_100_000);
  await stripe(svc.app, 'invoice.payment_action_required', invoice({ id: 'in_sca', customer: 'cus_sca', subscription: null, amount_due: 1500 }));
  await stripe(svc.app, 'customer.subscription.deleted', subscription({ id: 'sub_gone', customer: 'cus_gone', status: 'canceled' }), 1_759_500_000);
  await svc.drain();
  await identify(svc.app, 'u_ok', 'cus_ok');
  await identify(svc.app, 'u_due', 'cus_due');
  await identify(svc.app, 'u_sca', 'cus_sca');
  await identify(svc.app, 'u_gone', 'cus_gone');
  await identify(svc.app, 'u_new', 'cus_none');
  // the EUR customer is the user's company account (Segment group with the Stripe id)
  const group = await svc.app.inject({
    method: 'POST',
    url: '/v1/group',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${WRITE_KEY}` },
    payload: JSON.stringify({ messageId: `bs-${process.pid}-${++seq}`, userId: 'u_due', groupId: 'g_acme', traits: { stripeCustomerId: 'cus_due_eu' } }),
  });
  assert.equal(group.statusCode, 200, group.body);
  await svc.drain();
  return { svc, clock };
}

async function status(app: FastifyInstance, query: string, authorization?: string, headers: Record<string, string> = {}) {
  return app.inject({ method: 'GET', url: `/v1/billing-status${query}`, headers: { ...(authorization ? { authorization } : {}), ...headers } });
}

async function mint(app: FastifyInstance, userId: string) {
  const res = await app.inject({ method: 'POST', url: '/v1/billing-status/token', headers: { authorization: `Bearer ${WRITE_KEY}`, 'content-type': 'application/json' }, payload: { userId } });
  assert.equal(res.statusCode, 200, res.body);
  return res.json() as { token: string; expiresAt: string };
}

test('billing status: ok, past_due (per currency, never added), action_required, canceled; token scope, expiry, forgery; CORS', async (t) => {
  const { svc, clock } = await setup(t);
  const app = svc.app;
  const key = `Bearer ${WRITE_KEY}`;

  await t.test('each state with the write key', async () => {
    const ok = await status(app, '?userId=u_ok', key);
    assert.equal(ok.statusCode, 200, ok.body);
    assert.deepEqual(ok.json(), { state: 'ok', amountDue: 0, currency: null, updateUrl: null, daysUntilCancel: null, daysPastDue: null, dues: [] });
    assert.equal(ok.headers['cache-control'], 'no-store');

    const due = (await status(app, '?userId=u_due', key)).json();
    assert.equal(due.state, 'past_due');
    // the oldest failure is the USD one: top-level fields are USD only, EUR listed apart
    assert.equal(due.currency, 'usd');
    assert.equal(due.amountDue, 4900);
    assert.deepEqual(due.dues, [
      { currency: 'usd', amountDue: 4900, invoices: 1 },
      { currency: 'eur', amountDue: 2000, invoices: 1 },
    ]);
    assert.equal(due.daysPastDue, 4); // 400 000 s = 4.63 days
    assert.equal(due.daysUntilCancel, 14 - 5);
    assert.match(due.updateUrl, /^http:\/\/localhost:\d+\/billing\/update\/[\w-]+$/);
    // the link is the working update-card route (without a Stripe key: the hosted-invoice page)
    const visit = await app.inject({ method: 'GET', url: new URL(due.updateUrl).pathname });
    assert.equal(visit.statusCode, 200);
    assert.match(visit.body, /invoice\.stripe\.com\/i\/in_due/);

    const sca = (await status(app, '?userId=u_sca', key)).json();
    assert.equal(sca.state, 'action_required');
    assert.equal(sca.amountDue, 1500);

    assert.equal((await status(app, '?userId=u_gone', key)).json().state, 'canceled');
    assert.equal((await status(app, '?userId=u_new', key)).json().state, 'ok');
    assert.equal((await status(app, '?userId=nobody', key)).json().state, 'ok');
  });

  await t.test('auth failures are 4xx with a code', async () => {
    const missing = await status(app, '?userId=u_due');
    assert.equal(missing.statusCode, 401);
    assert.equal(missing.json().error, 'unauthorized');
    assert.equal((await status(app, '?userId=u_due', 'Bearer wk_wrong')).statusCode, 401);
    assert.equal((await status(app, '', key)).statusCode, 400); // the write key must name the user
    // minting needs the write key too
    const noKey = await app.inject({ method: 'POST', url: '/v1/billing-status/token', payload: { userId: 'u_due' } });
    assert.equal(noKey.statusCode, 401);
    const badBody = await app.inject({ method: 'POST', url: '/v1/billing-status/token', headers: { authorization: key }, payload: { user: 'x' } });
    assert.equal(badBody.statusCode, 400);
  });

  await t.test('browser token: one user, short-lived, unforgeable', async () => {
    const { token, expiresAt } = await mint(app, 'u_due');
    assert.equal(new Date(expiresAt).getTime(), NOW.getTime() + 900_000);
    const mine = await status(app, '', `Bearer ${token}`);
    assert.equal(mine.statusCode, 200, mine.body);
    assert.equal(mine.json().state, 'past_due');
    assert.equal((await status(app, '?userId=u_due', `Bearer ${token}`)).statusCode, 200);
    // the token is accepted as a query parameter too (for a plain <script src>-style fetch)
    assert.equal((await status(app, `?token=${encodeURIComponent(token)}`)).statusCode, 200);

    const other = await status(app, '?userId=u_ok', `Bearer ${token}`);
    assert.equal(other.statusCode, 403);
    assert.equal(other.json().error, 'forbidden');

    // forged: a byte of the (encrypted) token changed; sealed with another secret; another kind
    const changed = Buffer.from(token, 'base64url');
    changed[changed.length - 30]! ^= 0x01;
    assert.equal((await status(app, '', `Bearer ${changed.toString('base64url')}`)).statusCode, 401);
    assert.equal((await status(app, '', `Bearer ${signToken(svc.secret, 'click', { u: 'u_ok', x: NOW.getTime() + 900_000 })}`)).statusCode, 401);
    const otherSecret = mintBillingStatusToken('another-secret', 'u_ok', new Date(NOW.getTime() + 900_000));
    assert.equal((await status(app, '', `Bearer ${otherSecret}`)).statusCode, 401);
    assert.equal((await status(app, '', 'Bearer not-a-token')).statusCode, 401);

    clock.advance(900_000);
    const expired = await status(app, '', `Bearer ${token}`);
    assert.equal(expired.statusCode, 401);
    assert.equal(expired.json().error, 'token_expired');
  });

  await t.test('CORS: allowed origins only, no credentials', async () => {
    const preflight = await app.inject({
      method: 'OPTIONS',
      url: '/v1/billing-status',
      headers: { origin: 'https://app.acme.test', 'access-control-request-method': 'GET', 'access-control-request-headers': 'authorization' },
    });
    assert.equal(preflight.statusCode, 204);
    assert.equal(preflight.headers['access-control-allow-origin'], 'https://app.acme.test');
    assert.match(String(preflight.headers['access-control-allow-headers']), /authorization/i);
    assert.equal(preflight.headers['access-control-allow-credentials'], undefined);
    const { token } = await mint(app, 'u_ok');
    const allowed = await status(app, '', `Bearer ${token}`, { origin: 'https://app.acme.test' });
    assert.equal(allowed.headers['access-control-allow-origin'], 'https://app.acme.test');
    const denied = await status(app, '', `Bearer ${token}`, { origin: 'https://evil.test' });
    assert.equal(denied.headers['access-control-allow-origin'], undefined);
  });

  await t.test('the embed script is served with the brand colour as data', async () => {
    const res = await app.inject({ method: 'GET', url: '/embed/billing-notice.js' });
    assert.equal(res.statusCode, 200);
    assert.match(String(res.headers['content-type']), /javascript/);
    assert.match(res.body, /"brandColor":"#4f46e5"/);
    assert.doesNotMatch(res.body, /\beval\(|document\.cookie|\.style\s*=|setAttribute\('style'/);
  });
});
