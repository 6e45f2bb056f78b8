// Stripe events become the same domain state whatever order (and however often) they arrive.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { build, type Built } from './helpers/build.ts';
import { deliver, envelope, fixture, invoice, subscription } from './helpers/stripe.ts';

const T = 1_760_000_000; // a failure time, unix seconds
const DAY = 86_400;

function permutations<T>(items: T[]): T[][] {
  if (items.length <= 1) return [items];
  return items.flatMap((item, i) => permutations([...items.slice(0, i), ...items.slice(i + 1)]).map((rest) => [item, ...rest]));
}

/** A dunning timeline for one invoice: fail, Stripe schedules a retry, fail again, paid (+ its twin event). */
function dunningTimeline(key: string) {
  const id = `in_${key}`;
  const customer = `cus_${key}`;
  const base = { id, customer, subscription: `sub_${key}` };
  return [
    envelope('invoice.payment_failed', invoice({ ...base, attempt_count: 1, next_payment_attempt: T + 3 * DAY }), { id: `evt_${key}_1`, created: T }),
    envelope('invoice.updated', invoice({ ...base, attempt_count: 1, next_payment_attempt: T + 3 * DAY }), { id: `evt_${key}_2`, created: T + 60 }),
    envelope('invoice.payment_failed', invoice({ ...base, attempt_count: 2, next_payment_attempt: T + 5 * DAY }), { id: `evt_${key}_3`, created: T + 3 * DAY }),
    envelope('invoice.paid', invoice({ ...base, status: 'paid', attempt_count: 3, next_payment_attempt: null, paid_at: T + 5 * DAY }), { id: `evt_${key}_4`, created: T + 5 * DAY }),
    // Same second as invoice.paid: a tie on time that must still settle the same way.
    envelope('invoice.payment_succeeded', invoice({ ...base, status: 'paid', attempt_count: 3, next_payment_attempt: null, paid_at: T + 5 * DAY }), { id: `evt_${key}_5`, created: T + 5 * DAY }),
  ];
}

async function invoiceState(svc: Built, id: string) {
  const [row] = await svc.sql`
    select status, amount_due, amount_paid, amount_remaining, attempt_count, next_payment_attempt, paid_at, subscription_id
    from invoices where id = ${id}`;
  return row;
}

async function factsFor(svc: Built, subjectId: string) {
  const rows = await svc.sql<{ name: string; dedupe_key: string }[]>`
    select name, dedupe_key from domain_events where subject_id = ${subjectId} order by dedupe_key`;
  return rows.map((r) => `${r.name}|${r.dedupe_key.replace(subjectId, 'X')}`);
}

test('a dunning timeline delivered in all 120 orders ends in the same invoice state and facts', async (t) => {
  const svc = await build(t);
  const orders = permutations([0, 1, 2, 3, 4]);
  assert.equal(orders.length, 120);
  const states = new Set<string>();
  const factSets = new Set<string>();
  for (const [n, order] of orders.entries()) {
    const key = `perm${n}`;
    const timeline = dunningTimeline(key);
    for (const i of order) {
      const res = await deliver(svc.app, timeline[i]!);
      assert.equal(res.statusCode, 200);
      await svc.inbox.drain(); // process between arrivals, like a live worker would
    }
    const state = await invoiceState(svc, `in_${key}`);
    assert.equal(state!.subscription_id, `sub_${key}`);
    states.add(JSON.stringify({ ...state, subscription_id: 'sub_X' }));
    factSets.add(JSON.stringify(await factsFor(svc, `in_${key}`)));
  }
  assert.equal(states.size, 1, `every order gives one final state, got ${[...states].join('\n')}`);
  const final = JSON.parse([...states][0]!);
  assert.equal(final.status, 'paid');
  assert.equal(final.amount_paid, 4900);
  assert.equal(final.amount_remaining, 0);
  assert.equal(final.attempt_count, 3);
  assert.equal(final.next_payment_attempt, null);
  assert.equal(new Date(final.paid_at).getTime(), (T + 5 * DAY) * 1000);
  assert.equal(factSets.size, 1);
  assert.deepEqual(JSON.parse([...factSets][0]!), [
    'invoice.paid|invoice.paid:X',
    'invoice.payment_failed|invoice.payment_failed:X:1',
    'invoice.payment_failed|invoice.payment_failed:X:2',
  ]);
});

test('delivering the timeline all at once in reverse, twice, gives the same state as in order', async (t) => {
  const svc = await build(t);
  const inOrder = dunningTimeline('ordered');
  for (const e of inOrder) await deliver(svc.app, e);
  await svc.inbox.drain();
  const reversed = dunningTimeline('reversed').reverse();
  for (const e of [...reversed, ...reversed]) await deliver(svc.app, e);
  await svc.inbox.drain();
  const a = await invoiceState(svc, 'in_ordered');
  const b = await invoiceState(svc, 'in_reversed');
  assert.deepEqual({ ...a, subscription_id: null }, { ...b, subscription_id: null });
  assert.equal(b!.status, 'paid');
});

test('a payment_failed stamped in the same second as invoice.paid does not reopen the invoice', async (t) => {
  const svc = await build(t);
  await deliver(svc.app, envelope('invoice.paid', invoice({ id: 'in_tie', status: 'paid', attempt_count: 2 }), { created: T }));
  await svc.inbox.drain();
  await deliver(svc.app, envelope('invoice.payment_failed', invoice({ id: 'in_tie', attempt_count: 2 }), { created: T }));
  await svc.inbox.drain();
  assert.equal((await invoiceState(svc, 'in_tie'))!.status, 'paid');
});

test('uncollectible then paid later: the invoice ends paid', async (t) => {
  const svc = await build(t);
  await deliver(svc.app, envelope('invoice.paid', invoice({ id: 'in_late', status: 'paid' }), { created: T + 20 * DAY }));
  await deliver(svc.app, envelope('invoice.marked_uncollectible', invoice({ id: 'in_late', status: 'uncollectible' }), { created: T + 14 * DAY }));
  await svc.inbox.drain();
  assert.equal((await invoiceState(svc, 'in_late'))!.status, 'paid');
  const facts = await factsFor(svc, 'in_late');
  assert.deepEqual(facts, ['invoice.marked_uncollectible|invoice.marked_uncollectible:X', 'invoice.paid|invoice.paid:X']);
});

test('an older subscription.updated never overwrites a newer one; canceled is final', async (t) => {
  const svc = await build(t);
  await deliver(svc.app, envelope('customer.subscription.updated', subscription({ id: 'sub_o', status: 'active', unit_amount: 9900 }), { created: T + 100 }));
  await deliver(svc.app, envelope('customer.subscription.updated', subscription({ id: 'sub_o', status: 'past_due', unit_amount: 4900 }), { created: T }));
  await svc.inbox.drain();
  let [row] = await svc.sql`select status, mrr_minor from subscriptions where id = 'sub_o'`;
  assert.deepEqual({ ...row }, { status: 'active', mrr_minor: 9900 });

  await deliver(svc.app, envelope('customer.subscription.deleted', subscription({ id: 'sub_o', status: 'canceled', cancellation_reason: 'payment_failed' }), { created: T + 200 }));
  await deliver(svc.app, envelope('customer.subscription.updated', subscription({ id: 'sub_o', status: 'active' }), { created: T + 200 }));
  await svc.inbox.drain();
  [row] = await svc.sql`select status, cancellation_reason from subscriptions where id = 'sub_o'`;
  assert.deepEqual({ ...row }, { status: 'canceled', cancellation_reason: 'payment_failed' });
  const [fact] = await svc.sql`select properties from domain_events where name = 'subscription.canceled'`;
  assert.equal((fact!.properties as { voluntary: boolean }).voluntary, false, 'canceled for failed payment is involuntary');
});

test('an upgrade records subscription.mrr_changed with from/to in one currency', async (t) => {
  const svc = await build(t);
  await deliver(svc.app, envelope('customer.subscription.created', subscription({ id: 'sub_up', unit_amount: 4900 }), { created: T }));
  await svc.inbox.drain();
  await deliver(svc.app, envelope('customer.subscription.updated', subscription({ id: 'sub_up', unit_amount: 4900, quantity: 3 }), { created: T + 60, previous: { items: {} } }));
  await svc.inbox.drain();
  const facts = await svc.sql<{ name: string; properties: Record<string, unknown> }[]>`
    select name, properties from domain_events where subject_id = 'sub_up' order by id`;
  assert.deepEqual(facts.map((f) => f.name), ['subscription.created', 'subscription.mrr_changed']);
  assert.equal(facts[1]!.properties.from, 4900);
  assert.equal(facts[1]!.properties.to, 14700);
  assert.equal(facts[1]!.properties.currency, 'usd');
});

test('decline detail from charge.failed reaches the invoice.payment_failed fact (current API: linked by customer and time)', async (t) => {
  const svc = await build(t);
  const charge = { ...fixture('pay-rails/charge.updated.json').object, id: 'ch_hard', customer: 'cus_hard', invoice: null, status: 'failed', failure_code: 'card_declined', outcome: { reason: 'stolen_card', type: 'issuer_declined' } };
  await deliver(svc.app, envelope('charge.failed', charge, { created: T - 2 }));
  await deliver(svc.app, envelope('invoice.payment_failed', invoice({ id: 'in_hard', customer: 'cus_hard' }), { created: T }));
  // A different customer's soft failure at the same moment must not leak into it.
  await deliver(svc.app, envelope('charge.failed', { ...charge, id: 'ch_other', customer: 'cus_other', outcome: { reason: 'insufficient_funds' } }, { created: T - 1 }));
  await svc.inbox.drain();
  const [fact] = await svc.sql<{ properties: Record<string, unknown> }[]>`select properties from domain_events where name = 'invoice.payment_failed'`;
  assert.equal(fact!.properties.declineClass, 'hard');
  assert.equal(fact!.properties.declineCode, 'stolen_card');
});

test('SCA: invoice.payment_action_required is recorded as an sca failure', async (t) => {
  const svc = await build(t);
  const raw = fixture('pay-rails/invoice.payment_action_required.json').object;
  await deliver(svc.app, envelope('invoice.payment_action_required', raw, { created: T }));
  await svc.inbox.drain();
  const [fact] = await svc.sql<{ properties: Record<string, unknown> }[]>`select properties from domain_events where name = 'invoice.payment_action_required'`;
  assert.equal(fact!.properties.declineClass, 'sca');
  assert.equal(fact!.properties.subscriptionId, 'sub_1234');
});

test('Stripe facts land on a contact created from the customer email, and a card update is a fact', async (t) => {
  const svc = await build(t);
  const customer = fixture('pay-rails/customer.updated.json');
  await deliver(svc.app, envelope('invoice.payment_failed', invoice({ id: 'in_c', customer: 'cus_1234', customer_email: 'pat@acme.test' }), { created: T }));
  await deliver(
    svc.app,
    envelope('customer.updated', { ...customer.object, email: 'pat@acme.test', invoice_settings: { default_payment_method: 'pm_new' } }, { created: T + 10, previous: { invoice_settings: { default_payment_method: null } } }),
  );
  await deliver(svc.app, envelope('payment_method.attached', fixture('pay-rails/payment_method.attached.json').object, { created: T + 11 }));
  await svc.inbox.drain();
  const contacts = await svc.sql`select id, email, stripe_customer_id from contacts`;
  assert.equal(contacts.length, 1);
  assert.equal(contacts[0]!.email, 'pat@acme.test');
  assert.equal(contacts[0]!.stripe_customer_id, 'cus_1234');
  const facts = await svc.sql`select name, contact_id from domain_events order by occurred_at, id`;
  assert.deepEqual(facts.map((f) => f.name), ['invoice.payment_failed', 'payment_method.updated', 'payment_method.updated']);
  assert.ok(facts.every((f) => f.contact_id === contacts[0]!.id));
  // The card change's key names the change (customer, card, event time), nothing else.
  const [keyed] = await svc.sql`select dedupe_key from domain_events where name = 'payment_method.updated' and dedupe_key like '%pm_new%'`;
  assert.equal(keyed!.dedupe_key, `payment_method.updated:cus_1234:pm_new:${T + 10}`);
  const [cust] = await svc.sql`select contact_id, default_payment_method from customers where id = 'cus_1234'`;
  assert.equal(cust!.contact_id, contacts[0]!.id);
  assert.equal(cust!.default_payment_method, 'pm_new');
});

test('every pay-rails fixture is accepted, stored and processed without error', async (t) => {
  const svc = await build(t);
  const files = ['charge.updated', 'checkout.session.completed', 'customer.updated', 'invoice.payment_action_required', 'invoice.payment_failed',
    'invoice.upcoming', 'invoice.updated', 'payment_method.attached', 'payment_method.updated', 'subscription.deleted',
    'subscription.trial_will_end', 'subscription.updated'];
  for (const [i, name] of files.entries()) {
    const f = fixture(`pay-rails/${name}.json`);
    const type = name.startsWith('subscription.') ? `customer.${name}` : name;
    const res = await deliver(svc.app, envelope(type, f.object, { created: T + i, ...(f.previous_attributes ? { previous: f.previous_attributes } : {}) }));
    assert.equal(res.statusCode, 200, name);
  }
  assert.equal(await svc.inbox.drain(), files.length);
  const failed = await svc.sql`select id, type, last_error from stripe_events where processed_at is null or last_error is not null`;
  assert.deepEqual([...failed], []);
  const [sub] = await svc.sql`select status, mrr_minor, currency from subscriptions where id = 'sub_00000000000000'`;
  assert.equal(sub!.status, 'canceled');
  const [inv] = await svc.sql`select subscription_id, amount_due from invoices where id = 'in_1234'`;
  assert.equal(inv!.subscription_id, 'sub_1234');
  assert.equal(inv!.amount_due, 24900);
});

test('facts are events, not states: paused → resumed → paused records three facts', async (t) => {
  const svc = await build(t);
  const sub = (status: string) => subscription({ id: 'sub_pr', customer: 'cus_pr', status });
  await deliver(svc.app, envelope('customer.subscription.paused', sub('paused'), { id: 'evt_pr_1', created: T }));
  await deliver(svc.app, envelope('customer.subscription.resumed', sub('active'), { id: 'evt_pr_2', created: T + DAY }));
  await deliver(svc.app, envelope('customer.subscription.paused', sub('paused'), { id: 'evt_pr_3', created: T + 2 * DAY }));
  await svc.inbox.drain();
  const facts = await svc.sql<{ name: string; occurred_at: Date }[]>`select name, occurred_at from domain_events where subject_id = 'sub_pr' order by occurred_at`;
  assert.deepEqual(facts.map((f) => [f.name, f.occurred_at.getTime() / 1000]), [
    ['subscription.paused', T],
    ['subscription.resumed', T + DAY],
    ['subscription.paused', T + 2 * DAY],
  ]);
});

test('one change delivered as two events with different ids gives one fact', async (t) => {
  const svc = await build(t);
  const sub = subscription({ id: 'sub_twin', customer: 'cus_twin', status: 'paused' });
  await deliver(svc.app, envelope('customer.subscription.paused', sub, { id: 'evt_twin_a', created: T }));
  await deliver(svc.app, envelope('customer.subscription.paused', sub, { id: 'evt_twin_b', created: T }));
  const past = subscription({ id: 'sub_twin', customer: 'cus_twin', status: 'past_due' });
  await deliver(svc.app, envelope('customer.subscription.updated', past, { id: 'evt_twin_c', created: T + 60, previous: { status: 'paused' } }));
  await deliver(svc.app, envelope('customer.subscription.updated', past, { id: 'evt_twin_d', created: T + 60, previous: { status: 'paused' } }));
  const pm = { ...fixture('pay-rails/payment_method.attached.json').object, customer: 'cus_twin' };
  await deliver(svc.app, envelope('payment_method.attached', pm, { id: 'evt_twin_e', created: T + 120 }));
  await deliver(svc.app, envelope('payment_method.attached', pm, { id: 'evt_twin_f', created: T + 120 }));
  await deliver(svc.app, envelope('invoice.payment_failed', invoice({ id: 'in_twin', customer: 'cus_twin', attempt_count: 2 }), { id: 'evt_twin_g', created: T + 180 }));
  await deliver(svc.app, envelope('invoice.payment_failed', invoice({ id: 'in_twin', customer: 'cus_twin', attempt_count: 2 }), { id: 'evt_twin_h', created: T + 181 }));
  await svc.inbox.drain();
  const facts = await svc.sql<{ name: string }[]>`select name from domain_events order by occurred_at, id`;
  assert.deepEqual(facts.map((f) => f.name), ['subscription.paused', 'subscription.status_changed', 'payment_method.updated', 'invoice.payment_failed']);
});
