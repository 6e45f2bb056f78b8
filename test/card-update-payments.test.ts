// Pay as soon as the card is fixed (issue 13), through the real pipeline: signed webhooks →
// inbox → projection → the card-update-payments work queue → the real Stripe SDK against the
// fake Stripe API (invoices.pay). Once per (invoice, card) whatever the events' order and
// duplicates (property), the card networks' 15-in-30 limit and do_not_try_again respected.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { decideCardUpdatePayment } from '../src/stripe/card-update-payments.ts';
import { ADMIN_TOKEN, build, type Built } from './helpers/build.ts';
import { FAKE_STRIPE_KEY, FakeStripeApi, type FakeStripeRequest } from './helpers/fake-stripe-api.ts';
import { deliver, envelope, invoice, subscription } from './helpers/stripe.ts';

type Obj = Record<string, unknown>;
const T0 = 1_760_000_000;

async function setUp(t: TestContext, pay: (req: FakeStripeRequest) => { status?: number; body: unknown } = (req) => ({ body: { id: req.params.id, object: 'invoice', status: 'paid' } })) {
  const fake = await FakeStripeApi.start();
  t.after(() => fake.close());
  fake.route('POST', '/v1/invoices/:id/pay', pay);
  const svc = await build(t, { env: { STRIPE_SECRET_KEY: FAKE_STRIPE_KEY, STRIPE_API_BASE: fake.url } });
  return { fake, svc };
}

const customer = (id: string, defaultPm: string | null) => ({ id, object: 'customer', email: `${id}@acme.test`, name: 'Ada', invoice_settings: { default_payment_method: defaultPm }, metadata: {}, created: T0 - 100_000 });
const paymentMethod = (id: string, customerId: string, brand = 'visa') => ({ id, object: 'payment_method', type: 'card', customer: customerId, card: { brand, exp_month: 12, exp_year: 2031, last4: '4242' } });

async function ok(svc: Built, event: object) {
  const res = await deliver(svc.app, event);
  assert.equal(res.statusCode, 200, res.body);
}

/** A customer on pm_old with `n` open failed invoices (and one paid invoice, never paid again). */
async function customerWithFailedInvoices(svc: Built, cus: string, n: number, defaultPm = 'pm_old') {
  await ok(svc, envelope('customer.created', customer(cus, defaultPm), { created: T0 - 1000 }));
  for (let i = 0; i < n; i++) await ok(svc, envelope('invoice.payment_failed', invoice({ id: `in_${cus}_${i}`, customer: cus, subscription: `sub_${cus}_${i}` }), { created: T0 + i }));
  await ok(svc, envelope('invoice.paid', invoice({ id: `in_${cus}_paid`, customer: cus, status: 'paid', subscription: `sub_${cus}_p` }), { created: T0 }));
  await svc.drain();
}

/** The three kinds of "the card changed" event for a new default card. */
function cardChangeEvents(cus: string, pm: string, at: number): ((dup: number) => Obj)[] {
  return [
    (dup) => envelope('payment_method.attached', paymentMethod(pm, cus), { created: at, id: `evt_att_${cus}_${dup}` }),
    (dup) => envelope('customer.updated', customer(cus, pm), { created: at + 1, previous: { invoice_settings: { default_payment_method: 'pm_old' } }, id: `evt_cu_${cus}_${dup}` }),
    (dup) => envelope('setup_intent.succeeded', { id: `seti_${cus}`, object: 'setup_intent', customer: cus, payment_method: pm, status: 'succeeded' }, { created: at + 2, id: `evt_si_${cus}_${dup}` }),
  ];
}

test('card updated → one invoices.pay per open failed invoice, with the new card and an idempotency key, for all three events twice in any order (property)', async (t) => {
  const { fake, svc } = await setUp(t);
  let run = 0;
  await fc.assert(
    fc.asyncProperty(
      // each of the 3 events twice; a permutation of the 6 deliveries; a redelivery of the same
      // event id or a distinct event; drains at arbitrary points
      fc.array(fc.nat(5), { minLength: 6, maxLength: 6 }).map((keys) => [0, 1, 2, 0, 1, 2].map((kind, i) => ({ kind, key: keys[i]! * 10 + i, second: i >= 3 })).sort((a, b) => a.key - b.key)),
      fc.boolean(),
      fc.array(fc.boolean(), { minLength: 6, maxLength: 6 }),
      async (order, sameIds, drainAfter) => {
        run += 1;
        const cus = `cus_p${run}`;
        await customerWithFailedInvoices(svc, cus, 2);
        const before = fake.requests.length;
        const events = cardChangeEvents(cus, `pm_new_${run}`, T0 + 5000);
        for (const [i, d] of order.entries()) {
          await ok(svc, events[d.kind]!(d.second && !sameIds ? 2 : 1));
          if (drainAfter[i]) await svc.drain();
        }
        await svc.drain();
        const pays = fake.requests.slice(before).filter((r) => r.method === 'POST' && r.path.endsWith('/pay'));
        assert.deepEqual(pays.map((r) => r.path).sort(), [`/v1/invoices/in_${cus}_0/pay`, `/v1/invoices/in_${cus}_1/pay`]);
        for (const r of pays) {
          assert.equal(r.body.payment_method, `pm_new_${run}`);
          assert.match(r.idempotencyKey ?? '', /^lifeline-pay-on-card-update:in_/);
        }
      },
    ),
    { numRuns: 12 },
  );
});

test('a failed invoice is not paid when the change is an attached card that is not the default, when its subscription was canceled, or with RECOVERY_PAY_ON_CARD_UPDATE=off', async (t) => {
  const { fake, svc } = await setUp(t);
  await customerWithFailedInvoices(svc, 'cus_nd', 1);
  await ok(svc, envelope('payment_method.attached', paymentMethod('pm_spare', 'cus_nd'), { created: T0 + 5000 }));
  await svc.drain();
  assert.equal(fake.requestsTo('POST', '/v1/invoices').length, 0);
  // nor an open invoice of a subscription canceled meanwhile
  await customerWithFailedInvoices(svc, 'cus_gone', 1);
  await ok(svc, envelope('customer.subscription.deleted', { ...subscription({ id: 'sub_cus_gone_0', customer: 'cus_gone', status: 'canceled' }) }, { created: T0 + 4000 }));
  for (const e of cardChangeEvents('cus_gone', 'pm_gone', T0 + 5000)) await ok(svc, e(1));
  await svc.drain();
  assert.equal(fake.requestsTo('POST', '/v1/invoices').length, 0);

  const fake2 = await FakeStripeApi.start();
  t.after(() => fake2.close());
  const off = await build(t, { env: { STRIPE_SECRET_KEY: FAKE_STRIPE_KEY, STRIPE_API_BASE: fake2.url, RECOVERY_PAY_ON_CARD_UPDATE: 'off' } });
  await customerWithFailedInvoices(off, 'cus_off', 1);
  for (const e of cardChangeEvents('cus_off', 'pm_x', T0 + 5000)) await ok(off, e(1));
  await off.drain();
  assert.equal(fake2.requestsTo('POST', '/v1/invoices').length, 0);
});

test('the 15-in-30-days Visa limit: 16 open invoices, soft declines → exactly 15 attempts; the 16th is blocked and the trace says why', async (t) => {
  const { fake, svc } = await setUp(t, () => ({ status: 402, body: { error: { type: 'card_error', code: 'card_declined', decline_code: 'insufficient_funds', advice_code: 'try_again_later', message: 'Your card has insufficient funds.' } } }));
  await customerWithFailedInvoices(svc, 'cus_lim', 16, 'pm_visa');
  await ok(svc, envelope('payment_method.attached', paymentMethod('pm_visa', 'cus_lim', 'visa'), { created: T0 + 5000 }));
  await svc.drain();
  assert.equal(fake.requestsTo('POST', '/v1/invoices').length, 15);
  const outcomes = await svc.sql<{ outcome: string; reason: string }[]>`select outcome, reason from card_update_payments where customer_id = 'cus_lim' order by created, id`;
  assert.deepEqual(outcomes.map((o) => o.outcome).sort(), [...Array(15).fill('declined'), 'blocked'].sort());
  const blocked = outcomes.find((o) => o.outcome === 'blocked')!;
  assert.match(blocked.reason, /card network limit: 15 attempts on this visa card in 30 days \(limit 15\)/);
  const traces = await svc.sql<{ detail: string }[]>`select t.detail from run_trace t join workflow_runs r on r.id = t.run_id where t.kind = 'action' and r.run_key like 'in_cus_lim_%'`;
  assert.equal(traces.length, 16);
  assert.equal(traces.filter((x) => /blocked: card network limit/.test(x.detail)).length, 1);
});

test('do_not_try_again on the new card: no attempt on the other invoices until the card changes; a new card pays them', async (t) => {
  const { fake, svc } = await setUp(t, (req) =>
    String(req.body.payment_method) === 'pm_bad'
      ? { status: 402, body: { error: { type: 'card_error', code: 'card_declined', decline_code: 'do_not_honor', advice_code: 'do_not_try_again', message: 'Your card was declined.' } } }
      : { body: { id: req.params.id, object: 'invoice', status: 'paid' } },
  );
  await customerWithFailedInvoices(svc, 'cus_dnt', 3);
  for (const e of cardChangeEvents('cus_dnt', 'pm_bad', T0 + 5000)) await ok(svc, e(1));
  await svc.drain();
  const bad = fake.requestsTo('POST', '/v1/invoices');
  assert.equal(bad.length, 1, 'one attempt; do_not_try_again stops the rest');
  const rows = await svc.sql<{ outcome: string; reason: string }[]>`select outcome, reason from card_update_payments where payment_method_id = 'pm_bad' order by decided_at, id`;
  assert.deepEqual(rows.map((r) => r.outcome).sort(), ['blocked', 'blocked', 'declined']);
  assert.ok(rows.filter((r) => r.outcome === 'blocked').every((r) => /do_not_try_again/.test(r.reason)));

  for (const e of cardChangeEvents('cus_dnt', 'pm_good', T0 + 9000)) await ok(svc, e(7));
  await svc.drain();
  const good = fake.requestsTo('POST', '/v1/invoices').filter((r) => r.body.payment_method === 'pm_good');
  assert.equal(good.length, 3, 'the changed card pays all three');
});

test('the decision is pure: limits per brand, advice, invoice state', () => {
  const h = { brand: 'mastercard', attempts30Days: 20, attempts24Hours: 9, doNotTryAgain: false, hardDecline: false };
  assert.equal(decideCardUpdatePayment({ enabled: true, invoiceStatus: 'open', amountRemaining: 100, history: h }).pay, true);
  assert.equal(decideCardUpdatePayment({ enabled: true, invoiceStatus: 'open', amountRemaining: 100, history: { ...h, attempts24Hours: 10 } }).pay, false);
  assert.equal(decideCardUpdatePayment({ enabled: true, invoiceStatus: 'open', amountRemaining: 100, history: { ...h, attempts30Days: 35 } }).pay, false);
  assert.equal(decideCardUpdatePayment({ enabled: true, invoiceStatus: 'open', amountRemaining: 100, history: { ...h, brand: 'visa', attempts30Days: 15 } }).pay, false);
  assert.equal(decideCardUpdatePayment({ enabled: true, invoiceStatus: 'open', amountRemaining: 100, history: { ...h, brand: null, attempts30Days: 14, attempts24Hours: 10 } }).pay, false);
  assert.equal(decideCardUpdatePayment({ enabled: true, invoiceStatus: 'paid', amountRemaining: 0, history: h }).pay, false);
  assert.equal(decideCardUpdatePayment({ enabled: true, invoiceStatus: 'open', amountRemaining: 100, history: { ...h, hardDecline: true } }).pay, false);
  assert.equal(decideCardUpdatePayment({ enabled: false, invoiceStatus: 'open', amountRemaining: 100, history: h }).pay, false);
});

test('a Stripe 500 on invoices.pay is retried under the same idempotency key (one charge at most); the queue is in the dead-letter API', async (t) => {
  const { fake, svc } = await setUp(t);
  await customerWithFailedInvoices(svc, 'cus_500', 1);
  fake.failNext({ status: 500, path: '/v1/invoices/in_cus_500_0/pay' });
  for (const e of cardChangeEvents('cus_500', 'pm_500', T0 + 5000)) await ok(svc, e(1));
  await svc.drain();
  const pays = fake.requestsTo('POST', '/v1/invoices/in_cus_500_0/pay');
  assert.equal(pays.length, 2, 'the 500, then the retry');
  assert.equal(fake.faultsServed.status, 1);
  assert.ok(pays[0]!.idempotencyKey);
  assert.equal(pays[1]!.idempotencyKey, pays[0]!.idempotencyKey);
  const [item] = await svc.sql<{ outcome: string }[]>`select outcome from card_update_payments where invoice_id = 'in_cus_500_0'`;
  assert.equal(item?.outcome, 'paid');
  const dead = await svc.app.inject({ method: 'GET', url: '/v1/admin/dead-letters?queue=card-update-payments', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
  assert.equal(dead.statusCode, 200, dead.body);
  assert.deepEqual((dead.json() as { items: unknown[] }).items, []);
});
