// Parsing Stripe objects of every shape we have samples of (no database).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { classifyDecline, monthlyAmount, parseCustomer, parseInvoice, parsePaymentFailure, parseSubscription } from '../src/stripe/shapes.ts';
import { fixture } from './helpers/stripe.ts';

test('current-shape invoice: subscription comes from parent.subscription_details', () => {
  const inv = parseInvoice(fixture('pay-rails/invoice.payment_failed.json').object);
  assert.ok(inv);
  assert.equal(inv.subscriptionId, 'sub_1234');
  assert.equal(inv.customerId, 'cus_1234');
  assert.equal(inv.status, 'open');
  assert.equal(inv.amountDue, 24900);
  assert.equal(inv.amountRemaining, 24900);
  assert.equal(inv.attemptCount, 1);
  assert.equal(inv.billingReason, 'subscription_cycle');
  assert.equal(inv.nextPaymentAttempt?.toISOString(), new Date(1745552783 * 1000).toISOString());
  assert.equal(inv.hostedInvoiceUrl, 'https://invoice.stripe.com/');
  assert.equal(inv.customerEmail, 'customer@example.org');
});

test('transitional invoice carrying both legacy and parent fields prefers parent', () => {
  const raw = fixture('pay-rails/invoice.payment_action_required.json').object;
  const inv = parseInvoice({ ...raw, subscription: 'sub_legacy_should_lose' });
  assert.equal(inv?.subscriptionId, 'sub_1234');
});

test('legacy invoice with only a top-level subscription still parses it', () => {
  const raw = { ...fixture('pay-rails/invoice.payment_failed.json').object, parent: null, subscription: 'sub_legacy' };
  assert.equal(parseInvoice(raw)?.subscriptionId, 'sub_legacy');
});

test('paid invoice: paid_at from status_transitions, amounts as given', () => {
  const inv = parseInvoice(fixture('pay-rails/invoice.json').object);
  assert.ok(inv);
  assert.equal(inv.status, 'paid');
  assert.equal(inv.amountPaid, 24512);
  assert.equal(inv.paidAt?.getTime(), 1744986363 * 1000);
});

test('OpenAPI sample invoice (every current field) parses', () => {
  const inv = parseInvoice(fixture('openapi-fixtures3/invoice.json').object);
  assert.ok(inv);
  assert.equal(inv.subscriptionId, 'subscription');
  assert.equal(inv.status, 'draft');
});

test('an invoice_payment object (pay-rails invoice.updated) is not mistaken for an invoice', () => {
  assert.equal(parseInvoice(fixture('pay-rails/invoice.updated.json').object), null);
});

test('legacy subscription shapes: price with top-level amount/interval, period end on the subscription', () => {
  const sub = parseSubscription(fixture('pay-rails/subscription.deleted.json').object);
  assert.ok(sub);
  assert.equal(sub.status, 'canceled');
  assert.equal(sub.currency, 'usd');
  assert.equal(sub.mrrMinor, 300);
  assert.equal(sub.items[0]?.interval, 'month');
  assert.equal(sub.currentPeriodEnd?.getTime(), 1488987924 * 1000);

  const updated = parseSubscription(fixture('pay-rails/subscription.updated.json').object);
  assert.equal(updated?.mrrMinor, 600, 'quantity 2 × 300');
});

test('current subscription shape: period end from items, MRR from price.recurring', () => {
  const sub = parseSubscription(fixture('openapi-fixtures3/subscription.json').object);
  assert.ok(sub);
  assert.equal(sub.mrrMinor, 2000);
  assert.equal(sub.currentPeriodEnd?.getTime(), 976287773 * 1000);
  assert.equal(sub.customerId, 'cus_QXg1o8vcGmoR32');
});

test('MRR normalizes intervals to a month, in minor units', () => {
  assert.equal(monthlyAmount(24900, 1, 'year', 1), 2075);
  assert.equal(monthlyAmount(1000, 3, 'month', 1), 3000);
  assert.equal(monthlyAmount(6000, 1, 'month', 3), 2000, 'quarterly');
  assert.equal(monthlyAmount(1200, 1, 'week', 1), 5200);
  assert.equal(monthlyAmount(null, 5, 'month', 1), 0, 'metered prices are not recurring revenue');
  assert.equal(monthlyAmount(4900, 1, 'fortnight', 1), 0, 'unknown interval: no guess');
});

test('customers: default payment method and deleted flag', () => {
  const c = parseCustomer({ id: 'cus_1', object: 'customer', email: 'a@b.c', invoice_settings: { default_payment_method: { id: 'pm_9', object: 'payment_method' } } });
  assert.equal(c?.defaultPaymentMethod, 'pm_9', 'expanded objects give their id');
  assert.equal(parseCustomer({ id: 'cus_2', object: 'customer', deleted: true })?.deleted, true);
  assert.equal(parseCustomer(fixture('pay-rails/customer.updated.json').object)?.id, 'cus_1234');
});

test('decline detail from a payment intent and from a charge', () => {
  const pi = parsePaymentFailure(fixture('stripe-java/payment_intent_last_payment_error.json').object);
  assert.equal(pi?.declineCode, 'generic_decline');
  assert.equal(pi?.failureCode, 'card_declined');
  assert.equal(pi?.declineClass, 'soft');
  assert.equal(pi?.chargeId, 'ch_123');

  const charge = parsePaymentFailure({ ...fixture('pay-rails/charge.updated.json').object, failure_code: 'card_declined', outcome: { reason: 'stolen_card', advice_code: null } });
  assert.equal(charge?.declineCode, 'stolen_card');
  assert.equal(charge?.declineClass, 'hard');
  assert.equal(charge?.paymentIntentId, 'pi_1234');
});

test('decline classes: hard, soft, SCA, advice codes, unknown', () => {
  assert.equal(classifyDecline({ declineCode: 'insufficient_funds' }), 'soft');
  assert.equal(classifyDecline({ declineCode: 'lost_card' }), 'hard');
  assert.equal(classifyDecline({ declineCode: 'expired_card' }), 'hard');
  assert.equal(classifyDecline({ declineCode: 'generic_decline', adviceCode: 'do_not_try_again' }), 'hard');
  assert.equal(classifyDecline({ declineCode: 'authentication_required' }), 'sca');
  assert.equal(classifyDecline({ declineCode: 'some_future_code' }), 'soft', 'unknown codes: a retry may still work');
  assert.equal(classifyDecline({}), 'unknown');
});
