// Update-card links (issue 13): a dunning email's button leads to /billing/update/<token>, which
// creates a fresh Billing Portal session per click (the real SDK against the fake Stripe API)
// and redirects; without a key, or when Stripe answers 500, a page with the hosted invoice.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type { OutgoingEmail, EmailTransport } from '../src/email/transport.ts';
import { cardUpdateUrl } from '../src/stripe/card-update-link.ts';
import { build } from './helpers/build.ts';
import { FAKE_STRIPE_KEY, FakeStripeApi } from './helpers/fake-stripe-api.ts';
import { deliver, envelope, invoice } from './helpers/stripe.ts';

function recordingTransport(): EmailTransport & { sent: OutgoingEmail[] } {
  const sent: OutgoingEmail[] = [];
  return { name: 'log', sent, send: async (emails) => (sent.push(...emails), { ok: true, results: emails.map((e) => ({ providerId: `re_${e.id}` })) }) };
}

async function fakeStripe(t: TestContext): Promise<FakeStripeApi> {
  const fake = await FakeStripeApi.start();
  t.after(() => fake.close());
  let n = 0;
  fake.route('POST', '/v1/billing_portal/sessions', (req) => {
    n += 1;
    return { body: { id: `bps_${n}`, object: 'billing_portal.session', customer: req.body.customer, return_url: req.body.return_url, url: `https://billing.stripe.com/p/session/test_${n}` } };
  });
  return fake;
}

async function failedInvoice(svc: Awaited<ReturnType<typeof build>>, id = 'in_card_1') {
  const customer = { id: 'cus_card_1', object: 'customer', email: 'ada@acme.test', name: 'Ada', invoice_settings: { default_payment_method: 'pm_old' }, metadata: {}, created: 1_759_000_000 };
  assert.equal((await deliver(svc.app, envelope('customer.created', customer, { created: 1_759_990_000 }))).statusCode, 200);
  assert.equal((await deliver(svc.app, envelope('invoice.payment_failed', invoice({ id, customer: 'cus_card_1' }), { created: 1_760_000_000 }))).statusCode, 200);
  await svc.drain();
}

test('the dunning email links to the update-card route; each click opens a fresh portal session (payment_method_update) and is recorded', async (t) => {
  const fake = await fakeStripe(t);
  const transport = recordingTransport();
  const svc = await build(t, { transport, env: { STRIPE_SECRET_KEY: FAKE_STRIPE_KEY, STRIPE_API_BASE: fake.url, RECOVERY_PORTAL_RETURN_URL: 'https://app.acme.test/billing', QUIET_HOURS: 'off' } });
  await failedInvoice(svc);
  await svc.email.sendPending();
  const email = transport.sent.find((e) => e.template.startsWith('dunning-'));
  assert.ok(email, 'a dunning email was sent');
  // The button is the click-tracked link whose target is our update-card route.
  const tracked = [...email.html.matchAll(/href="([^"]+\/r\/[^"]+)"/g)].map((m) => m[1]!.replace(/&amp;/g, '&'));
  assert.ok(tracked.length > 0);
  const first = await svc.app.inject({ method: 'GET', url: new URL(tracked[0]!).pathname });
  assert.equal(first.statusCode, 302);
  const target = new URL(first.headers.location as string);
  assert.match(target.pathname, /^\/billing\/update\//);
  // No readable PII in our token.
  const token = target.pathname.split('/').pop()!;
  assert.doesNotMatch(Buffer.from(token.split('.')[0]!, 'base64url').toString('utf8'), /ada|acme/i);

  for (const n of [1, 2]) {
    const res = await svc.app.inject({ method: 'GET', url: target.pathname });
    assert.equal(res.statusCode, 303);
    assert.equal(res.headers.location, `https://billing.stripe.com/p/session/test_${n}`);
  }
  const created = fake.requestsTo('POST', '/v1/billing_portal/sessions');
  assert.equal(created.length, 2, 'one portal session per click');
  for (const r of created) {
    assert.equal(r.body.customer, 'cus_card_1');
    assert.equal(r.body.return_url, 'https://app.acme.test/billing');
    assert.deepEqual(r.body.flow_data, { type: 'payment_method_update' });
  }
  const visits = await svc.sql<{ outcome: string; portal_session_id: string; invoice_id: string }[]>`select outcome, portal_session_id, invoice_id from card_update_sessions order by id`;
  assert.deepEqual(visits.map((v) => [v.outcome, v.portal_session_id, v.invoice_id]), [['portal', 'bps_1', 'in_card_1'], ['portal', 'bps_2', 'in_card_1']]);
  const [clicked] = await svc.sql<{ clicked_at: Date | null }[]>`select clicked_at from messages where id = ${email.id}`;
  assert.ok(clicked?.clicked_at, 'the click is recorded as for any tracked link');
});

test('without a Stripe key the link shows the hosted invoice page (200, never a 500)', async (t) => {
  const svc = await build(t);
  await failedInvoice(svc);
  const res = await svc.app.inject({ method: 'GET', url: new URL(cardUpdateUrl(svc.config.publicUrl, svc.secret, 'in_card_1', null)).pathname });
  assert.equal(res.statusCode, 200);
  assert.match(res.body, /href="https:\/\/invoice\.stripe\.com\/i\/in_card_1"/);
  const [visit] = await svc.sql<{ outcome: string }[]>`select outcome from card_update_sessions`;
  assert.equal(visit?.outcome, 'fallback_no_key');
});

test('when Stripe answers 500 the link falls back to the hosted invoice; bad and unknown tokens are 4xx pages', async (t) => {
  const fake = await fakeStripe(t);
  fake.route('POST', '/v1/billing_portal/sessions', () => ({ status: 500, body: { error: { type: 'api_error', message: 'boom' } } }));
  const svc = await build(t, { env: { STRIPE_SECRET_KEY: FAKE_STRIPE_KEY, STRIPE_API_BASE: fake.url } });
  await failedInvoice(svc);
  const path = new URL(cardUpdateUrl(svc.config.publicUrl, svc.secret, 'in_card_1', 1)).pathname;
  const res = await svc.app.inject({ method: 'GET', url: path });
  assert.equal(res.statusCode, 200);
  assert.match(res.body, /invoice\.stripe\.com\/i\/in_card_1/);
  assert.ok(fake.requestsTo('POST', '/v1/billing_portal/sessions').length >= 1, 'Stripe was asked');
  const [visit] = await svc.sql<{ outcome: string }[]>`select outcome from card_update_sessions`;
  assert.equal(visit?.outcome, 'fallback_error');

  const tampered = await svc.app.inject({ method: 'GET', url: path.slice(0, -2) + 'xx' });
  assert.equal(tampered.statusCode, 400);
  const unknown = await svc.app.inject({ method: 'GET', url: new URL(cardUpdateUrl(svc.config.publicUrl, svc.secret, 'in_nope', null)).pathname });
  assert.equal(unknown.statusCode, 404);
  // A click token is not an update-card token (the kind is in the MAC).
  const { signToken } = await import('../src/email/tokens.ts');
  const wrongKind = await svc.app.inject({ method: 'GET', url: `/billing/update/${signToken(svc.secret, 'click', { i: 'in_card_1', c: null })}` });
  assert.equal(wrongKind.statusCode, 400);
});
