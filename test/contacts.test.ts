// What the worker makes of stored Segment messages (svc.inbox.drain()): contacts and their
// traits, accounts and memberships, timeline facts, and how one person stays one contact across
// anonymous visits, identify calls and Stripe customers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { FastifyInstance } from 'fastify';
import { build, WRITE_KEY, type Built } from './helpers/build.ts';
import { deliver, envelope, invoice } from './helpers/stripe.ts';

let seq = 0;
/** POST one Segment message (type decides the route) and insist it was accepted. */
async function send(app: FastifyInstance, message: Record<string, unknown> & { type: string }) {
  const { type, ...body } = message;
  const res = await app.inject({
    method: 'POST',
    url: `/v1/${type}`,
    headers: { 'content-type': 'application/json', authorization: `Bearer ${WRITE_KEY}` },
    payload: JSON.stringify({ messageId: `m-${process.pid}-${++seq}`, ...body }),
  });
  assert.equal(res.statusCode, 200, res.body);
  return res.json() as { success: boolean; duplicate: boolean };
}

function customer(fields: { id?: string; email?: string | null; name?: string | null } = {}) {
  return {
    id: fields.id ?? 'cus_test_1',
    object: 'customer',
    email: fields.email === undefined ? 'ada@acme.test' : fields.email,
    name: fields.name === undefined ? 'Ada Lovelace' : fields.name,
    livemode: false,
    metadata: {},
    invoice_settings: { default_payment_method: null },
    created: 1_759_000_000,
  };
}

async function deliverCustomer(svc: Built, fields: Parameters<typeof customer>[0] = {}) {
  const res = await deliver(svc.app, envelope('customer.created', customer(fields)));
  assert.equal(res.statusCode, 200, res.body);
}

interface Contact {
  id: number;
  user_id: string | null;
  anonymous_id: string | null;
  email: string | null;
  stripe_customer_id: string | null;
  traits: Record<string, unknown>;
}

const contacts = (svc: Built) => svc.sql<Contact[]>`select id, user_id, anonymous_id, email, stripe_customer_id, traits from contacts order by id`;

async function drainAll(svc: Built): Promise<number> {
  const n = await svc.inbox.drain();
  const failed = await svc.sql`select message_id, last_error from product_events where last_error is not null`;
  assert.deepEqual(failed.map((r) => ({ ...r })), [], 'no product event failed to process');
  const unprocessed = await svc.sql`select message_id from product_events where processed_at is null`;
  assert.equal(unprocessed.length, 0, 'every product event was processed');
  return n;
}

// ---------------------------------------------------------------------------------------------
// identify, track

test('identify creates a contact; later identifies merge traits (a key is overwritten, others kept)', async (t) => {
  const svc = await build(t);
  await send(svc.app, { type: 'identify', userId: 'user_1', traits: { email: 'ada@acme.test', name: 'Ada', plan: 'trial' } });
  assert.equal(await drainAll(svc), 1);
  let [c] = await contacts(svc);
  assert.ok(c);
  assert.equal(c.user_id, 'user_1');
  assert.equal(c.email, 'ada@acme.test');
  assert.deepEqual(c.traits, { email: 'ada@acme.test', name: 'Ada', plan: 'trial' });

  await send(svc.app, { type: 'identify', userId: 'user_1', traits: { plan: 'pro', seats: 5 } });
  await drainAll(svc);
  const all = await contacts(svc);
  assert.equal(all.length, 1, 'still one contact');
  c = all[0]!;
  assert.deepEqual(c.traits, { email: 'ada@acme.test', name: 'Ada', plan: 'pro', seats: 5 });
  assert.equal(c.email, 'ada@acme.test', 'an identify without email keeps the email');

  await send(svc.app, { type: 'identify', userId: 'user_1', traits: { email: 'ada@newco.test' } });
  await drainAll(svc);
  [c] = await contacts(svc);
  assert.equal(c!.email, 'ada@newco.test', 'the email column follows traits.email');
  assert.equal(c!.traits.email, 'ada@newco.test');
  assert.equal(c!.traits.plan, 'pro');

  const facts = await svc.sql`select name, contact_id, properties from domain_events order by id`;
  assert.deepEqual(facts.map((f) => f.name), ['identify', 'identify', 'identify']);
  assert.ok(facts.every((f) => f.contact_id === c!.id));
  assert.deepEqual(facts[1]!.properties, { traits: { plan: 'pro', seats: 5 } });
});

test('a track by the same userId is recorded on the contact with its name, properties and timestamp', async (t) => {
  const svc = await build(t);
  await send(svc.app, { type: 'identify', userId: 'user_1', messageId: 'id-1', traits: { email: 'ada@acme.test' } });
  await send(svc.app, {
    type: 'track',
    userId: 'user_1',
    messageId: 'track-1',
    event: 'Report Exported',
    properties: { format: 'csv', rows: 120, nested: { a: [1, 2] } },
    timestamp: '2025-11-05T08:30:00.250Z',
  });
  await drainAll(svc);
  const [c] = await contacts(svc);
  const [fact] = await svc.sql`select * from domain_events where source_id = 'track-1'`;
  assert.ok(fact);
  assert.equal(fact.name, 'Report Exported');
  assert.equal(fact.source, 'product');
  assert.equal(fact.dedupe_key, 'product:track-1');
  assert.equal(fact.contact_id, c!.id);
  assert.equal(fact.account_id, null);
  assert.deepEqual(fact.properties, { format: 'csv', rows: 120, nested: { a: [1, 2] } });
  assert.equal((fact.occurred_at as Date).toISOString(), '2025-11-05T08:30:00.250Z');
  assert.equal((await contacts(svc)).length, 1);
});

test('a track before any identify creates the contact that the identify then completes', async (t) => {
  const svc = await build(t);
  await send(svc.app, { type: 'track', userId: 'user_1', event: 'Signed Up' });
  await send(svc.app, { type: 'identify', userId: 'user_1', traits: { email: 'ada@acme.test' } });
  await drainAll(svc);
  const all = await contacts(svc);
  assert.equal(all.length, 1);
  assert.equal(all[0]!.email, 'ada@acme.test');
  const facts = await svc.sql`select name, contact_id from domain_events order by id`;
  assert.deepEqual(facts.map((f) => [f.name, f.contact_id]), [['Signed Up', all[0]!.id], ['identify', all[0]!.id]]);
});

test('page and screen views are recorded as Page Viewed / Screen Viewed facts', async (t) => {
  const svc = await build(t);
  await send(svc.app, { type: 'page', userId: 'user_1', name: 'Pricing', properties: { path: '/pricing' } });
  await send(svc.app, { type: 'screen', userId: 'user_1', name: 'Home' });
  await drainAll(svc);
  const facts = await svc.sql`select name, properties from domain_events order by id`;
  assert.deepEqual(facts.map((f) => ({ ...f })), [
    { name: 'Page Viewed', properties: { path: '/pricing', name: 'Pricing' } },
    { name: 'Screen Viewed', properties: { name: 'Home' } },
  ]);
});

test('reprocessing is idempotent: a redelivered message records no second fact', async (t) => {
  const svc = await build(t);
  await send(svc.app, { type: 'track', userId: 'user_1', messageId: 'once', event: 'Clicked' });
  await drainAll(svc);
  // a crash after recording the fact but before marking the row processed
  await svc.sql`update product_events set processed_at = null`;
  assert.equal(await drainAll(svc), 1);
  assert.equal((await svc.sql`select id from domain_events`).length, 1);
});

// ---------------------------------------------------------------------------------------------
// group, accounts

test('group creates an account with traits and a membership; later groups merge traits', async (t) => {
  const svc = await build(t);
  await send(svc.app, { type: 'group', userId: 'user_1', groupId: 'acct_1', traits: { name: 'Acme', plan: 'trial' } });
  await drainAll(svc);
  const [account] = await svc.sql`select id, group_id, traits, stripe_customer_id from accounts`;
  assert.ok(account);
  assert.equal(account.group_id, 'acct_1');
  assert.deepEqual(account.traits, { name: 'Acme', plan: 'trial' });
  assert.equal(account.stripe_customer_id, null);
  const [c] = await contacts(svc);
  assert.equal(c!.user_id, 'user_1');
  assert.deepEqual(c!.traits, {}, 'group traits describe the account, not the person');
  const members = await svc.sql`select account_id, contact_id from account_members`;
  assert.deepEqual(members.map((m) => ({ ...m })), [{ account_id: account.id, contact_id: c!.id }]);
  const [fact] = await svc.sql`select name, contact_id, account_id, properties from domain_events`;
  assert.deepEqual({ ...fact }, { name: 'group', contact_id: c!.id, account_id: account.id, properties: { groupId: 'acct_1', traits: { name: 'Acme', plan: 'trial' } } });

  // a second member, and new traits for the account
  await send(svc.app, { type: 'group', userId: 'user_2', groupId: 'acct_1', traits: { plan: 'pro', stripeCustomerId: 'cus_acme' } });
  await send(svc.app, { type: 'group', userId: 'user_1', groupId: 'acct_1' });
  await drainAll(svc);
  const accounts = await svc.sql`select id, traits, stripe_customer_id from accounts`;
  assert.equal(accounts.length, 1);
  assert.deepEqual(accounts[0]!.traits, { name: 'Acme', plan: 'pro', stripeCustomerId: 'cus_acme' });
  assert.equal(accounts[0]!.stripe_customer_id, 'cus_acme');
  const [members2] = await svc.sql<{ n: number }[]>`select count(*)::int as n from account_members`;
  assert.equal(members2!.n, 2, 'one membership per contact, not per group call');
});

test('a track with context.groupId is attached to that account', async (t) => {
  const svc = await build(t);
  await send(svc.app, { type: 'group', userId: 'user_1', groupId: 'acct_1', traits: { name: 'Acme' } });
  await send(svc.app, { type: 'track', userId: 'user_1', messageId: 'in-acct', event: 'Invited Teammate', context: { groupId: 'acct_1' } });
  await send(svc.app, { type: 'track', userId: 'user_1', messageId: 'no-acct', event: 'Logged In' });
  // an account first seen in a track's context exists afterwards too
  await send(svc.app, { type: 'track', userId: 'user_1', messageId: 'new-acct', event: 'Switched Workspace', context: { groupId: 'acct_2' } });
  await drainAll(svc);
  const accounts = await svc.sql`select id, group_id from accounts order by id`;
  const byGroup = Object.fromEntries(accounts.map((a) => [a.group_id, a.id]));
  const facts = await svc.sql`select source_id, account_id from domain_events where name <> 'group' order by id`;
  assert.deepEqual(facts.map((f) => [f.source_id, f.account_id]), [['in-acct', byGroup.acct_1], ['no-acct', null], ['new-acct', byGroup.acct_2]]);
  const members = await svc.sql`select account_id from account_members order by account_id`;
  assert.deepEqual(members.map((m) => m.account_id), [byGroup.acct_1, byGroup.acct_2]);
});

// ---------------------------------------------------------------------------------------------
// One person, one contact

test('an anonymous track then an identify with anonymousId and userId ends with one (adopted) contact', async (t) => {
  const svc = await build(t);
  await send(svc.app, { type: 'track', anonymousId: 'anon_1', messageId: 'anon-track', event: 'Viewed Pricing' });
  await drainAll(svc);
  let all = await contacts(svc);
  assert.equal(all.length, 1);
  assert.equal(all[0]!.user_id, null);
  const anonymousContact = all[0]!.id;

  await send(svc.app, { type: 'identify', anonymousId: 'anon_1', userId: 'user_1', traits: { email: 'ada@acme.test' } });
  await send(svc.app, { type: 'track', userId: 'user_1', anonymousId: 'anon_1', messageId: 'known-track', event: 'Signed Up' });
  await drainAll(svc);
  all = await contacts(svc);
  assert.equal(all.length, 1, 'the anonymous contact was adopted, not duplicated');
  assert.equal(all[0]!.id, anonymousContact);
  assert.equal(all[0]!.user_id, 'user_1');
  assert.equal(all[0]!.anonymous_id, 'anon_1');
  assert.equal(all[0]!.email, 'ada@acme.test');
  const facts = await svc.sql`select source_id, contact_id from domain_events order by id`;
  assert.ok(facts.length === 3 && facts.every((f) => f.contact_id === anonymousContact), JSON.stringify(facts));
});

test('an anonymous event processed after the identify (a retried batch) still lands on the identified contact', async (t) => {
  const svc = await build(t);
  await send(svc.app, { type: 'identify', anonymousId: 'anon_1', userId: 'user_1', traits: { email: 'ada@acme.test' } });
  await drainAll(svc);
  await send(svc.app, { type: 'track', anonymousId: 'anon_1', messageId: 'late', event: 'Viewed Pricing', timestamp: '2025-01-01T00:00:00Z' });
  await drainAll(svc);
  const all = await contacts(svc);
  assert.equal(all.length, 1, JSON.stringify(all));
  const [fact] = await svc.sql`select contact_id from domain_events where source_id = 'late'`;
  assert.equal(fact!.contact_id, all[0]!.id);
});

test('an anonymous visitor on a new device is merged into the known user when they log in', async (t) => {
  const svc = await build(t);
  await send(svc.app, { type: 'group', userId: 'user_1', groupId: 'acct_1' });
  await send(svc.app, { type: 'identify', userId: 'user_1', anonymousId: 'anon_laptop', traits: { email: 'ada@acme.test', plan: 'pro' } });
  // later, a phone: anonymous first, with an account context and traits
  await send(svc.app, { type: 'track', anonymousId: 'anon_phone', messageId: 'phone-1', event: 'Opened App', context: { groupId: 'acct_2' } });
  await send(svc.app, { type: 'identify', anonymousId: 'anon_phone', traits: { device: 'phone', plan: 'stale' } });
  await drainAll(svc);
  assert.equal((await contacts(svc)).length, 2);

  await send(svc.app, { type: 'identify', userId: 'user_1', anonymousId: 'anon_phone', traits: { name: 'Ada' } });
  await drainAll(svc);
  const all = await contacts(svc);
  assert.equal(all.length, 1, JSON.stringify(all));
  const c = all[0]!;
  assert.equal(c.user_id, 'user_1');
  assert.equal(c.anonymous_id, 'anon_laptop');
  assert.deepEqual(c.traits, { device: 'phone', email: 'ada@acme.test', plan: 'pro', name: 'Ada' }, "the known contact's traits win");
  const facts = await svc.sql`select contact_id from domain_events`;
  assert.ok(facts.every((f) => f.contact_id === c.id), 'the anonymous history moved to the known contact');
  const members = await svc.sql`select a.group_id from account_members m join accounts a on a.id = m.account_id where m.contact_id = ${c.id} order by a.group_id`;
  assert.deepEqual(members.map((m) => m.group_id), ['acct_1', 'acct_2']);
  // Not covered: a contact keeps one anonymous_id, so a later anonymous-only event from the
  // phone (anon_phone) would start a new anonymous contact until the next identify merges it.
});

test('a contact created from a Stripe customer is adopted by a later identify with the same email', async (t) => {
  const svc = await build(t);
  await deliverCustomer(svc, { id: 'cus_1', email: 'Ada@Acme.test' });
  await deliver(svc.app, envelope('invoice.payment_failed', invoice({ customer: 'cus_1', customer_email: 'Ada@Acme.test' })));
  await drainAll(svc);
  let all = await contacts(svc);
  assert.equal(all.length, 1);
  assert.equal(all[0]!.user_id, null);
  assert.equal(all[0]!.stripe_customer_id, 'cus_1');
  const stripeContact = all[0]!.id;

  await send(svc.app, { type: 'identify', userId: 'user_1', messageId: 'id-1', traits: { email: 'ada@acme.test', name: 'Ada' } });
  await drainAll(svc);
  all = await contacts(svc);
  assert.equal(all.length, 1, 'one contact, not a second one for the identify');
  assert.equal(all[0]!.id, stripeContact);
  assert.equal(all[0]!.user_id, 'user_1');
  assert.equal(all[0]!.stripe_customer_id, 'cus_1');
  const [cus] = await svc.sql`select contact_id from customers where id = 'cus_1'`;
  assert.equal(cus!.contact_id, stripeContact);
  const facts = await svc.sql`select name, contact_id, stripe_customer_id from domain_events order by id`;
  assert.deepEqual(facts.map((f) => ({ ...f })), [
    { name: 'invoice.payment_failed', contact_id: stripeContact, stripe_customer_id: 'cus_1' },
    { name: 'identify', contact_id: stripeContact, stripe_customer_id: 'cus_1' },
  ]);
});

test('a Stripe customer created after the identify is linked to the existing contact by email', async (t) => {
  const svc = await build(t);
  await send(svc.app, { type: 'identify', userId: 'user_1', traits: { email: 'ada@acme.test' } });
  await drainAll(svc);
  await deliverCustomer(svc, { id: 'cus_1', email: 'ADA@acme.test' });
  await drainAll(svc);
  const all = await contacts(svc);
  assert.equal(all.length, 1);
  assert.equal(all[0]!.stripe_customer_id, 'cus_1');
  const [cus] = await svc.sql`select contact_id from customers where id = 'cus_1'`;
  assert.equal(cus!.contact_id, all[0]!.id);
});

test('the first identify that links a Stripe customer by email records the customer on its fact', async (t) => {
  const svc = await build(t);
  await send(svc.app, { type: 'track', userId: 'user_1', event: 'Signed Up' });
  await drainAll(svc);
  // The customer's contact is created from its email while user_1 has none yet.
  await deliverCustomer(svc, { id: 'cus_1', email: 'ada@acme.test' });
  await drainAll(svc);
  assert.equal((await contacts(svc)).length, 2);

  await send(svc.app, { type: 'identify', userId: 'user_1', messageId: 'id-1', traits: { email: 'ada@acme.test' } });
  await drainAll(svc);
  const all = await contacts(svc);
  assert.equal(all.length, 1, 'the Stripe-created contact is merged into the known user');
  assert.equal(all[0]!.user_id, 'user_1');
  assert.equal(all[0]!.stripe_customer_id, 'cus_1');
  const [cus] = await svc.sql`select contact_id from customers where id = 'cus_1'`;
  assert.equal(cus!.contact_id, all[0]!.id);
  const [fact] = await svc.sql`select stripe_customer_id, contact_id from domain_events where source_id = 'id-1'`;
  assert.deepEqual({ ...fact }, { stripe_customer_id: 'cus_1', contact_id: all[0]!.id });
});

test('traits.stripeCustomerId links contact and customer, whichever arrives first', async (t) => {
  const svc = await build(t);
  // identify first, customer later (with a different email: the explicit link wins)
  await send(svc.app, { type: 'identify', userId: 'user_1', traits: { email: 'ada@acme.test', stripeCustomerId: 'cus_1' } });
  await drainAll(svc);
  let [c] = await contacts(svc);
  assert.equal(c!.stripe_customer_id, 'cus_1');
  await deliverCustomer(svc, { id: 'cus_1', email: 'billing@acme.test' });
  await drainAll(svc);
  let all = await contacts(svc);
  assert.equal(all.length, 1);
  let [cus] = await svc.sql`select contact_id from customers where id = 'cus_1'`;
  assert.equal(cus!.contact_id, all[0]!.id);

  // customer first (its own contact from the billing email), identify later with the snake_case trait
  await deliverCustomer(svc, { id: 'cus_2', email: 'finance@globex.test' });
  await drainAll(svc);
  assert.equal((await contacts(svc)).length, 2);
  await send(svc.app, { type: 'identify', userId: 'user_2', messageId: 'id-2', traits: { email: 'hank@globex.test', stripe_customer_id: 'cus_2' } });
  await drainAll(svc);
  all = await contacts(svc);
  assert.equal(all.length, 2, 'the customer contact was adopted');
  c = all.find((x) => x.user_id === 'user_2');
  assert.ok(c);
  assert.equal(c.stripe_customer_id, 'cus_2');
  assert.equal(c.email, 'hank@globex.test');
  [cus] = await svc.sql`select contact_id from customers where id = 'cus_2'`;
  assert.equal(cus!.contact_id, c.id);
  const [fact] = await svc.sql`select stripe_customer_id from domain_events where source_id = 'id-2'`;
  assert.equal(fact!.stripe_customer_id, 'cus_2');
});

test('two users with the same email stay two contacts; a Stripe customer is never taken from an identified contact', async (t) => {
  const svc = await build(t);
  await send(svc.app, { type: 'identify', userId: 'user_1', traits: { email: 'shared@acme.test' } });
  await drainAll(svc);
  await deliverCustomer(svc, { id: 'cus_1', email: 'shared@acme.test' });
  await drainAll(svc);
  await send(svc.app, { type: 'identify', userId: 'user_2', traits: { email: 'shared@acme.test' } });
  await drainAll(svc);
  const all = await contacts(svc);
  assert.equal(all.length, 2);
  const first = all.find((c) => c.user_id === 'user_1')!;
  const second = all.find((c) => c.user_id === 'user_2')!;
  const [cus] = await svc.sql`select contact_id from customers where id = 'cus_1'`;
  assert.equal(cus!.contact_id, first.id);
  assert.equal(second.stripe_customer_id, null);
});

test('a message that fails to process is kept with its error and retried, the others go on', async (t) => {
  const svc = await build(t, { clock: 'manual' });
  await send(svc.app, { type: 'group', userId: 'user_1', messageId: 'g', groupId: 'acct_1' });
  await send(svc.app, { type: 'track', userId: 'user_1', messageId: 't', event: 'Clicked' });
  await svc.sql`alter table accounts rename to accounts_away`;
  assert.equal(await svc.inbox.drain(), 2);
  const rows = await svc.sql`select message_id, processed_at is not null as done, attempts, last_error from product_events order by id`;
  assert.equal(rows[0]!.done, false);
  assert.equal(rows[0]!.attempts, 1);
  assert.match(String(rows[0]!.last_error), /accounts/);
  assert.equal(rows[1]!.done, true);
  await svc.sql`alter table accounts_away rename to accounts`;
  (svc.clock as import('../src/clock.ts').ManualClock).advance(60_000);
  assert.equal(await drainAll(svc), 1);
  assert.equal((await svc.sql`select id from accounts`).length, 1);
});
