// The fake Stripe API itself (test/helpers/fake-stripe-api.ts), as other tests rely on it: the
// real SDK's requests arrive decoded and recorded, routes can be added, lists page like Stripe's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeStripeApi, fakeCustomer } from './helpers/fake-stripe-api.ts';

test('route() serves an extra endpoint to the real SDK and records the decoded body and Idempotency-Key', async (t) => {
  const fake = await FakeStripeApi.start();
  t.after(() => fake.close());
  fake.route('POST', '/v1/billing_portal/sessions', (req) => ({
    body: { id: 'bps_1', object: 'billing_portal.session', customer: req.body.customer, return_url: req.body.return_url, url: 'https://billing.stripe.test/session/bps_1' },
  }));
  fake.route('POST', '/v1/invoices/:id/pay', (req) => ({ body: { id: req.params.id, object: 'invoice', status: 'paid' } }));
  const stripe = fake.client();
  const session = await stripe.billingPortal.sessions.create({ customer: 'cus_1', return_url: 'https://app.example.test/billing' }, { idempotencyKey: 'portal-cus_1' });
  assert.equal(session.url, 'https://billing.stripe.test/session/bps_1');
  const paid = await stripe.invoices.pay('in_42', { off_session: true });
  assert.equal(paid.status, 'paid');
  const [portal, pay] = fake.requests;
  assert.deepEqual([portal!.method, portal!.path, portal!.body, portal!.idempotencyKey], ['POST', '/v1/billing_portal/sessions', { customer: 'cus_1', return_url: 'https://app.example.test/billing' }, 'portal-cus_1']);
  assert.deepEqual([pay!.path, pay!.params, pay!.body], ['/v1/invoices/in_42/pay', { id: 'in_42' }, { off_session: 'true' }]);
  assert.match(pay!.idempotencyKey ?? '', /^stripe-node-retry-/, 'the SDK adds its own key to POSTs so its retries are safe');
});

test('lists: newest first, limit, starting_after/ending_before, has_more; unknown ids 404 like Stripe', async (t) => {
  const fake = await FakeStripeApi.start();
  t.after(() => fake.close());
  fake.add('/v1/customers', Array.from({ length: 5 }, (_, i) => fakeCustomer({ id: `cus_${i}`, created: 1_700_000_000 + i })));
  const stripe = fake.client();
  const first = await stripe.customers.list({ limit: 2 });
  assert.deepEqual([first.data.map((c) => c.id), first.has_more], [['cus_4', 'cus_3'], true]);
  const last = await stripe.customers.list({ limit: 2, starting_after: 'cus_1' });
  assert.deepEqual([last.data.map((c) => c.id), last.has_more], [['cus_0'], false]);
  const before = await stripe.customers.list({ limit: 2, ending_before: 'cus_1' });
  assert.deepEqual(before.data.map((c) => c.id), ['cus_3', 'cus_2']);
  assert.equal((await stripe.customers.retrieve('cus_2')).id, 'cus_2');
  await assert.rejects(stripe.customers.retrieve('cus_nope'), (err: { statusCode?: number; code?: string }) => err.statusCode === 404 && err.code === 'resource_missing');
  assert.deepEqual((await stripe.invoices.list()).data, [], 'an empty collection is an empty list');
});

test('faults: a 429 beyond the retries surfaces as the SDK rate-limit error; rateLimit() answers 429 beyond N a second', async (t) => {
  const fake = await FakeStripeApi.start();
  t.after(() => fake.close());
  fake.add('/v1/customers', [fakeCustomer()]);
  fake.failNext({ status: 429 });
  await assert.rejects(fake.client({ maxNetworkRetries: 0 }).customers.list(), (err: { type?: string }) => err.type === 'StripeRateLimitError');
  fake.rateLimit(2);
  const noRetry = fake.client({ maxNetworkRetries: 0 });
  const results = await Promise.allSettled([1, 2, 3, 4].map(() => noRetry.customers.list()));
  assert.equal(results.filter((r) => r.status === 'rejected').length, 2);
  assert.equal(fake.faultsServed.rateLimited, 2);
});
