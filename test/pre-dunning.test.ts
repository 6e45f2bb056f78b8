// Pre-dunning (issue 13): a default card that expires before the subscription's renewal is
// checked 7 days before the renewal; the built-in pre-dunning workflow emails the update-card
// link, unless the card updater replaced the card meanwhile (then: exit, no email).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ManualClock } from '../src/clock.ts';
import type { EmailTransport, OutgoingEmail } from '../src/email/transport.ts';
import { build, type Built } from './helpers/build.ts';
import { deliver, envelope, subscription } from './helpers/stripe.ts';

function recordingTransport(): EmailTransport & { sent: OutgoingEmail[] } {
  const sent: OutgoingEmail[] = [];
  return { name: 'log', sent, send: async (emails) => (sent.push(...emails), { ok: true, results: emails.map((e) => ({ providerId: `re_${e.id}` })) }) };
}

const unix = (iso: string) => Math.floor(Date.parse(iso) / 1000);
const RENEWAL = '2026-04-05T00:00:00Z';

async function ok(svc: Built, event: object) {
  const res = await deliver(svc.app, event);
  assert.equal(res.statusCode, 200, res.body);
}

async function customerWithExpiringCard(svc: Built, cus: string) {
  const pm = `pm_${cus}`;
  await ok(svc, envelope('customer.created', { id: cus, object: 'customer', email: `${cus}@acme.test`, name: 'Ada', invoice_settings: { default_payment_method: pm }, metadata: {}, created: unix('2025-01-01T00:00:00Z') }, { created: unix('2026-03-01T00:00:00Z') }));
  // valid through the end of March 2026: before the April 5 renewal
  await ok(svc, envelope('payment_method.attached', { id: pm, object: 'payment_method', type: 'card', customer: cus, card: { brand: 'visa', exp_month: 3, exp_year: 2026, last4: '4242' } }, { created: unix('2026-03-01T00:00:01Z') }));
  const sub = subscription({ id: `sub_${cus}`, customer: cus }) as { items: { data: { current_period_end: number }[] } };
  sub.items.data[0]!.current_period_end = unix(RENEWAL);
  await ok(svc, envelope('customer.subscription.updated', sub as unknown as Record<string, unknown>, { created: unix('2026-03-01T00:00:02Z') }));
}

test('card expiring before the renewal: nothing before the notice time, then one email with the update-card link; the card updater fixing it meanwhile → exit without email', async (t) => {
  const transport = recordingTransport();
  const svc = await build(t, { transport, clock: 'manual', env: { QUIET_HOURS: 'off', FREQUENCY_CAP: 'off' } });
  const clock = svc.clock as ManualClock;
  clock.set('2026-03-10T00:00:00Z');
  await customerWithExpiringCard(svc, 'cus_pd_mail');
  await customerWithExpiringCard(svc, 'cus_pd_updater');
  await customerWithExpiringCard(svc, 'cus_pd_newcard');
  await customerWithExpiringCard(svc, 'cus_pd_canceled');
  await svc.drain();
  const checks = await svc.sql<{ customer_id: string; due_at: Date }[]>`select customer_id, due_at from pre_dunning_checks order by customer_id`;
  assert.deepEqual(checks.map((c) => [c.customer_id, c.due_at.toISOString()]), [['cus_pd_canceled', '2026-03-29T00:00:00.000Z'], ['cus_pd_mail', '2026-03-29T00:00:00.000Z'], ['cus_pd_newcard', '2026-03-29T00:00:00.000Z'], ['cus_pd_updater', '2026-03-29T00:00:00.000Z']]);
  assert.equal(transport.sent.filter((e) => e.template === 'pre-dunning-card-expiring').length, 0, 'nothing before the notice time');

  // The card network's updater replaces one customer's card (same method, new expiry).
  clock.set('2026-03-20T00:00:00Z');
  await ok(svc, envelope('payment_method.automatically_updated', { id: 'pm_cus_pd_updater', object: 'payment_method', type: 'card', customer: 'cus_pd_updater', card: { brand: 'visa', exp_month: 3, exp_year: 2029, last4: '4242' } }, { created: unix('2026-03-20T00:00:00Z') }));
  // Another customer sets a new default card (valid past the renewal) before the notice time.
  await ok(svc, envelope('customer.updated', { id: 'cus_pd_newcard', object: 'customer', email: 'cus_pd_newcard@acme.test', name: 'Ada', invoice_settings: { default_payment_method: 'pm_fresh' }, metadata: {}, created: unix('2025-01-01T00:00:00Z') }, { created: unix('2026-03-21T00:00:00Z'), previous: { invoice_settings: { default_payment_method: 'pm_cus_pd_newcard' } } }));
  // And one cancels the subscription: no renewal to warn about.
  const canceled = subscription({ id: 'sub_cus_pd_canceled', customer: 'cus_pd_canceled', status: 'canceled' }) as { items: { data: { current_period_end: number }[] } };
  canceled.items.data[0]!.current_period_end = unix(RENEWAL);
  await ok(svc, envelope('customer.subscription.deleted', canceled as unknown as Record<string, unknown>, { created: unix('2026-03-22T00:00:00Z') }));
  await svc.drain();

  clock.set('2026-03-29T12:00:00Z');
  await svc.drain();
  await svc.drain();
  const mails = transport.sent.filter((e) => e.template === 'pre-dunning-card-expiring');
  assert.equal(mails.length, 1, `one pre-dunning email (${transport.sent.map((e) => e.template).join(',')})`);
  assert.equal(mails[0]!.to, 'cus_pd_mail@acme.test');
  assert.match(mails[0]!.text, /expires at the end of\s+3\/2026, before your next renewal on April 5, 2026,\s+in 7 days\./);
  assert.match(mails[0]!.html, /\/r\//, 'the button is a tracked link');
  const runs = await svc.sql<{ email: string; status: string }[]>`
    select c.email, r.status from workflow_runs r join contacts c on c.id = r.contact_id where r.workflow_key = 'pre-dunning' order by c.email`;
  assert.deepEqual(runs.map((r) => r.email), ['cus_pd_mail@acme.test', 'cus_pd_updater@acme.test']);
  assert.notEqual(runs[1]!.status, 'active', 'the card updater case ended without emailing');
  // the customers who changed the card or canceled got no run at all (their checks were superseded)

  // The emailed link opens the update-card route for that customer (no Stripe key here: the fallback page).
  const tracked = mails[0]!.html.match(/href="([^"]+\/r\/[^"]+)"/)![1]!;
  const redirect = await svc.app.inject({ method: 'GET', url: new URL(tracked).pathname });
  const target = new URL(redirect.headers.location as string);
  assert.match(target.pathname, /^\/billing\/update\//);
  const page = await svc.app.inject({ method: 'GET', url: target.pathname });
  assert.equal(page.statusCode, 200);
  const [visit] = await svc.sql<{ customer_id: string; outcome: string }[]>`select customer_id, outcome from card_update_sessions`;
  assert.deepEqual({ ...visit }, { customer_id: 'cus_pd_mail', outcome: 'fallback_no_key' });

  // Once: later drains fire nothing again.
  await svc.drain();
  assert.equal(transport.sent.filter((e) => e.template === 'pre-dunning-card-expiring').length, 1);
});

test('PRE_DUNNING_NOTICE_DAYS=3: the check is scheduled 3 days before the renewal, nothing goes out at the default 7, and the email says "in 3 days"', async (t) => {
  const transport = recordingTransport();
  const svc = await build(t, { transport, clock: 'manual', env: { QUIET_HOURS: 'off', FREQUENCY_CAP: 'off', PRE_DUNNING_NOTICE_DAYS: '3' } });
  const clock = svc.clock as ManualClock;
  clock.set('2026-03-10T00:00:00Z');
  await customerWithExpiringCard(svc, 'cus_pd_three');
  await svc.drain();
  const checks = await svc.sql<{ due_at: Date; renewal_at: Date }[]>`select due_at, renewal_at from pre_dunning_checks`;
  assert.deepEqual(checks.map((c) => [c.due_at.toISOString(), c.renewal_at.toISOString()]), [['2026-04-02T00:00:00.000Z', '2026-04-05T00:00:00.000Z']]);

  // the default notice time (7 days before) passes: nothing yet
  clock.set('2026-03-29T12:00:00Z');
  await svc.drain();
  await svc.drain();
  assert.equal(transport.sent.filter((e) => e.template === 'pre-dunning-card-expiring').length, 0);

  clock.set('2026-04-02T00:00:30Z');
  await svc.drain();
  await svc.drain();
  const mails = transport.sent.filter((e) => e.template === 'pre-dunning-card-expiring');
  assert.equal(mails.length, 1);
  assert.match(mails[0]!.text, /before your next renewal on April 5, 2026,\s+in 3 days\./);
  assert.doesNotMatch(mails[0]!.text, /7 days/);
});
