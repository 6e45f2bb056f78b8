// The workflow engine end to end on real Postgres with a test clock: Stripe/product events in,
// runs, waits, sends recorded (once), goals and exits.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ManualClock } from '../src/clock.ts';
import { build, WRITE_KEY, type Built } from './helpers/build.ts';
import { deliver, envelope, invoice, subscription } from './helpers/stripe.ts';

const T = new Date('2026-03-02T10:00:00Z'); // a Monday, 10:00 UTC
const DAY = 86_400_000;
const at = (ms: number) => new Date(T.getTime() + ms);

async function setup(t: import('node:test').TestContext, env: Record<string, string> = {}) {
  const svc = await build(t, { clock: 'manual', env: { QUIET_HOURS: 'off', ...env } });
  const clock = svc.clock as ManualClock;
  clock.set(T);
  return { svc, clock };
}

async function messages(svc: Built, workflow?: string) {
  const rows = await svc.sql<{ step_id: string; template: string; to_email: string; created_at: Date; status: string }[]>`
    select step_id, template, to_email, created_at, status from messages
    where ${workflow ?? null}::text is null or workflow_key = ${workflow ?? null} order by created_at, id`;
  return rows.map((r) => ({ step: r.step_id, template: r.template, to: r.to_email, day: Math.round((r.created_at.getTime() - T.getTime()) / DAY) }));
}

async function runs(svc: Built) {
  return svc.sql<{ id: number; workflow_key: string; status: string; run_key: string; converted_at: Date | null }[]>`
    select id, workflow_key, status, run_key, converted_at from workflow_runs order by id`;
}

async function track(svc: Built, body: Record<string, unknown>) {
  const res = await svc.app.inject({ method: 'POST', url: '/v1/track', headers: { authorization: `Bearer ${WRITE_KEY}` }, payload: { timestamp: svc.clock.now().toISOString(), ...body } });
  assert.equal(res.statusCode, 200, res.body);
}

async function identify(svc: Built, body: Record<string, unknown>) {
  const res = await svc.app.inject({ method: 'POST', url: '/v1/identify', headers: { authorization: `Bearer ${WRITE_KEY}` }, payload: { timestamp: svc.clock.now().toISOString(), ...body } });
  assert.equal(res.statusCode, 200, res.body);
}

test('soft decline: dunning emails on day 0, 3, 5 and the sequence stops the moment invoice.paid arrives', async (t) => {
  const { svc, clock } = await setup(t);
  await deliver(svc.app, envelope('invoice.payment_failed', invoice({ id: 'in_soft', customer: 'cus_soft', customer_email: 'pay@soft.test' }), { created: T }));
  await svc.drain();
  assert.deepEqual(await messages(svc), [{ step: 'soft_1', template: 'dunning-soft-1', to: 'pay@soft.test', day: 0 }]);

  clock.set(at(3 * DAY));
  await svc.drain();
  clock.set(at(5 * DAY));
  await svc.drain();
  assert.deepEqual((await messages(svc)).map((m) => [m.step, m.day]), [['soft_1', 0], ['soft_2', 3], ['soft_3', 5]]);

  clock.set(at(6 * DAY));
  await deliver(svc.app, envelope('invoice.paid', invoice({ id: 'in_soft', customer: 'cus_soft', status: 'paid', attempt_count: 4 }), { created: at(6 * DAY) }));
  await svc.drain();
  const [run] = await runs(svc);
  assert.equal(run!.status, 'converted');
  assert.equal(run!.converted_at?.getTime(), at(6 * DAY).getTime());

  clock.set(at(30 * DAY));
  await svc.drain();
  assert.equal((await messages(svc)).length, 3, 'no final notice after payment');
  const trace = await svc.sql<{ kind: string }[]>`select kind from run_trace where run_id = ${run!.id} order by id`;
  assert.ok(trace.some((e) => e.kind === 'goal'));
});

test('hard decline takes the immediate update-card path', async (t) => {
  const { svc } = await setup(t);
  const charge = { id: 'ch_1', object: 'charge', customer: 'cus_hard', amount: 4900, currency: 'usd', status: 'failed', failure_code: 'card_declined', outcome: { reason: 'lost_card' } };
  await deliver(svc.app, envelope('charge.failed', charge, { created: at(-1000) }));
  await deliver(svc.app, envelope('invoice.payment_failed', invoice({ id: 'in_hard', customer: 'cus_hard' }), { created: T }));
  await svc.drain();
  assert.deepEqual((await messages(svc)).map((m) => [m.step, m.template, m.day]), [['hard_update_card', 'dunning-update-card', 0]]);
});

test('a duplicate payment_failed (redelivery, and the next attempt) does not start a second run', async (t) => {
  const { svc, clock } = await setup(t);
  const first = envelope('invoice.payment_failed', invoice({ id: 'in_dup', customer: 'cus_dup', attempt_count: 1 }), { created: T });
  await deliver(svc.app, first);
  await deliver(svc.app, first);
  await svc.drain();
  clock.set(at(DAY));
  await deliver(svc.app, envelope('invoice.payment_failed', invoice({ id: 'in_dup', customer: 'cus_dup', attempt_count: 2 }), { created: at(DAY) }));
  await svc.drain();
  const all = await runs(svc);
  assert.equal(all.filter((r) => r.workflow_key === 'billing-recovery').length, 1);
  assert.equal(all[0]!.run_key, 'in_dup');
  assert.equal((await messages(svc)).filter((m) => m.step === 'soft_1').length, 1);
});

test('the first invoice of a new subscription is not a recovery case', async (t) => {
  const { svc } = await setup(t);
  await deliver(svc.app, envelope('invoice.payment_failed', invoice({ id: 'in_new', customer: 'cus_new', billing_reason: 'subscription_create' }), { created: T }));
  await svc.drain();
  assert.equal((await runs(svc)).length, 0);
});

test('voided invoice exits the run', async (t) => {
  const { svc, clock } = await setup(t);
  await deliver(svc.app, envelope('invoice.payment_failed', invoice({ id: 'in_void', customer: 'cus_void' }), { created: T }));
  await svc.drain();
  clock.set(at(DAY));
  await deliver(svc.app, envelope('invoice.voided', invoice({ id: 'in_void', customer: 'cus_void', status: 'void' }), { created: at(DAY) }));
  await svc.drain();
  assert.equal((await runs(svc))[0]!.status, 'exited');
  clock.set(at(10 * DAY));
  await svc.drain();
  assert.equal((await messages(svc)).length, 1);
});

test('win-back: voluntary cancellation for price gets the offer a day later; involuntary gets restore at once', async (t) => {
  const { svc, clock } = await setup(t);
  await deliver(svc.app, envelope('customer.subscription.deleted', subscription({ id: 'sub_wb', customer: 'cus_wb', status: 'canceled', cancellation_reason: 'cancellation_requested', feedback: 'too_expensive' }), { created: T }));
  await deliver(svc.app, envelope('customer.subscription.deleted', subscription({ id: 'sub_inv', customer: 'cus_inv', status: 'canceled', cancellation_reason: 'payment_failed' }), { created: T }));
  await svc.drain();
  assert.deepEqual((await messages(svc, 'win-back')).map((m) => [m.template, m.day]), [['winback-restore', 0]]);
  clock.set(at(DAY));
  await svc.drain();
  assert.deepEqual((await messages(svc, 'win-back')).map((m) => [m.template, m.day]), [['winback-restore', 0], ['winback-offer', 1]]);
});

// The no-address case of a first email (skipped, with its reason) is
// test/regressions/delivery-order.test.ts's "an email due before any event told us the address".
test("a new run's first email is stored with the run: id run:step, the run's contact, its render input", async (t) => {
  const { svc } = await setup(t);
  await deliver(svc.app, envelope('invoice.payment_failed', invoice({ id: 'in_mail', customer: 'cus_mail', customer_email: 'pay@mail.test', amount_due: 4900 }), { created: T }));
  await deliver(svc.app, envelope('invoice.payment_failed', invoice({ id: 'in_two', customer: 'cus_two', customer_email: 'pay@two.test', amount_due: 1200 }), { created: T }));
  await svc.inbox.drain();
  await svc.engine.drain(); // not the sender: the messages stay as the engine queued them
  const rows = await svc.sql<{ id: string; run_id: number; run_key: string; contact_id: number; run_contact: number; account_id: number | null; run_account: number | null; workflow_key: string; to_email: string | null; status: string; status_reason: string | null; data: { trigger: Record<string, unknown> } }[]>`
    select m.id, m.run_id, r.run_key, m.contact_id, r.contact_id as run_contact, m.account_id, r.account_id as run_account, m.workflow_key,
           m.to_email, m.status, m.status_reason, m.data
    from messages m join workflow_runs r on r.id = m.run_id order by r.run_key`;
  assert.deepEqual(
    rows.map((r) => [r.run_key, r.id === `${r.run_id}:soft_1`, r.contact_id === r.run_contact, r.account_id === r.run_account, r.workflow_key, r.to_email, r.status, r.status_reason]),
    [
      ['in_mail', true, true, true, 'billing-recovery', 'pay@mail.test', 'queued', null],
      ['in_two', true, true, true, 'billing-recovery', 'pay@two.test', 'queued', null],
    ],
  );
  assert.deepEqual(rows.map((r) => [r.data.trigger['invoiceId'], r.data.trigger['amountDue']]), [['in_mail', 4900], ['in_two', 1200]]);
  const events = await svc.sql`select 1 from message_events`;
  assert.equal(events.length, 0, 'queued by the engine, nothing recorded by a sender yet');
});
