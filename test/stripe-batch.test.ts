// projectStripeBatch: the same state and facts as projecting the events one at a time, in a
// fixed handful of statements per batch, all-or-nothing on failure, no deadlock between
// concurrent batches that share customers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import postgres from 'postgres';
import { createSql, type Sql, type Tx } from '../src/db/connection.ts';
import type { StripeEnvelope } from '../src/stripe/event-inbox.ts';
import { projectStripeBatch, projectStripeEvent } from '../src/stripe/projector.ts';
import { createTestDatabase } from './helpers/database.ts';
import { envelope, fixture, invoice, subscription } from './helpers/stripe.ts';

const T = 1_760_000_000;
const NOW = new Date('2026-11-01T00:00:00Z');

async function database(t: import('node:test').TestContext, options: { debug?: () => void } = {}): Promise<Sql> {
  const db = await createTestDatabase();
  // With `debug`: a pool that counts statements (postgres.js calls it once per query sent).
  const sql = options.debug
    ? (postgres(db.url, { max: 4, onnotice: () => {}, types: { bigint: { to: 20, from: [20], serialize: (x: number) => String(x), parse: (x: string) => Number(x) } }, debug: options.debug }) as unknown as Sql)
    : createSql(db.url, { max: 4 });
  t.after(async () => {
    await sql.end();
    await db.drop();
  });
  return sql;
}

// ---------------------------------------------------------------------------------------------
// A small random Stripe world: 3 customers, 4 invoices, 2 subscriptions; events of every kind
// the projector handles, with ties on time, twin events (same change, new id) and repeats.

const CUSTOMERS = ['a', 'b', 'c'];
const INVOICES = [
  { id: 'in0', customer: 'a', sub: 's0' },
  { id: 'in1', customer: 'a', sub: 's0' },
  { id: 'in2', customer: 'b', sub: 's1' },
  { id: 'in3', customer: 'c', sub: null },
];
const SUBS = [
  { id: 's0', customer: 'a' },
  { id: 's1', customer: 'b' },
];
// One email per customer, shared by b and c: two customers of one person.
const EMAILS: Record<string, string> = { a: 'ann@acme.test', b: 'bob@beta.test', c: 'BOB@beta.test' };
let EMAIL: Record<string, string> = EMAILS;

type Spec =
  | { k: 'invoice'; type: 'invoice.payment_failed' | 'invoice.updated' | 'invoice.paid' | 'invoice.payment_action_required' | 'invoice.voided'; inv: number; attempt: number }
  | { k: 'charge'; customer: number; code: 'insufficient_funds' | 'stolen_card' | 'authentication_required' }
  | { k: 'customer'; customer: number; pm: boolean; deleted: boolean }
  | { k: 'sub'; type: 'customer.subscription.updated' | 'customer.subscription.paused' | 'customer.subscription.resumed' | 'customer.subscription.created' | 'customer.subscription.deleted'; sub: number; status: string; quantity: number; prev: string | null }
  | { k: 'pm'; customer: number }
  | { k: 'checkout'; customer: number };

const specArb: fc.Arbitrary<Spec> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ k: fc.constant('invoice' as const), type: fc.constantFrom('invoice.payment_failed' as const, 'invoice.updated' as const, 'invoice.paid' as const, 'invoice.payment_action_required' as const, 'invoice.voided' as const), inv: fc.nat(3), attempt: fc.integer({ min: 1, max: 3 }) }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('charge' as const), customer: fc.nat(2), code: fc.constantFrom('insufficient_funds' as const, 'stolen_card' as const, 'authentication_required' as const) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('customer' as const), customer: fc.nat(2), pm: fc.boolean(), deleted: fc.boolean().map((d) => d && Math.random() < 0.3) }) },
  { weight: 3, arbitrary: fc.record({ k: fc.constant('sub' as const), type: fc.constantFrom('customer.subscription.updated' as const, 'customer.subscription.paused' as const, 'customer.subscription.resumed' as const, 'customer.subscription.created' as const, 'customer.subscription.deleted' as const), sub: fc.nat(1), status: fc.constantFrom('active', 'past_due', 'paused', 'canceled'), quantity: fc.integer({ min: 1, max: 3 }), prev: fc.constantFrom(null, 'active', 'past_due') }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('pm' as const), customer: fc.nat(2) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('checkout' as const), customer: fc.nat(2) }) },
);

/** [spec, created offset (few values: ties), twin: a second event id for the same change] */
const stepArb = fc.tuple(specArb, fc.integer({ min: 0, max: 5 }), fc.boolean().map((b) => b && Math.random() < 0.25));

function toEvents(run: string, steps: [Spec, number, boolean][]): StripeEnvelope[] {
  const out: StripeEnvelope[] = [];
  const cus = (i: number) => `cus_${run}_${CUSTOMERS[i]}`;
  EMAIL = Object.fromEntries(Object.entries(EMAILS).map(([k, v]) => [k, `${run}.${v}`]));
  steps.forEach(([s, dt, twin], n) => {
    const created = T + dt * 60;
    let object: Record<string, unknown>;
    let type: string;
    let previous: Record<string, unknown> | undefined;
    if (s.k === 'invoice') {
      const inv = INVOICES[s.inv]!;
      const status = s.type === 'invoice.paid' ? 'paid' : s.type === 'invoice.voided' ? 'void' : 'open';
      object = invoice({ id: `in_${run}_${inv.id}`, customer: `cus_${run}_${inv.customer}`, subscription: inv.sub ? `sub_${run}_${inv.sub}` : null, status, attempt_count: s.attempt, customer_email: EMAIL[inv.customer]! });
      type = s.type;
    } else if (s.k === 'charge') {
      const charge = fixture('pay-rails/charge.updated.json').object;
      object = { ...charge, id: `ch_${run}_${n}`, customer: cus(s.customer), invoice: null, status: 'failed', failure_code: 'card_declined', outcome: { reason: s.code, type: 'issuer_declined' } };
      type = 'charge.failed';
    } else if (s.k === 'customer') {
      const c = fixture('pay-rails/customer.updated.json').object;
      object = { ...c, id: cus(s.customer), email: EMAIL[CUSTOMERS[s.customer]!], deleted: s.deleted, invoice_settings: { default_payment_method: s.pm ? `pm_${run}_${n}` : null } };
      type = s.deleted ? 'customer.deleted' : 'customer.updated';
      previous = s.pm ? { invoice_settings: { default_payment_method: null } } : undefined;
    } else if (s.k === 'sub') {
      const sub = SUBS[s.sub]!;
      object = subscription({ id: `sub_${run}_${sub.id}`, customer: `cus_${run}_${sub.customer}`, status: s.status, quantity: s.quantity });
      type = s.type;
      previous = s.prev ? { status: s.prev } : undefined;
    } else if (s.k === 'pm') {
      object = { ...fixture('pay-rails/payment_method.attached.json').object, id: `pm_${run}_${s.customer}`, customer: cus(s.customer) };
      type = 'payment_method.attached';
    } else {
      object = { ...fixture('pay-rails/checkout.session.completed.json').object, id: `cs_${run}_${n}`, customer: cus(s.customer), customer_details: { email: EMAIL[CUSTOMERS[s.customer]!], name: 'Pat' } };
      type = 'checkout.session.completed';
    }
    const e = envelope(type, object, { id: `evt_${run}_${n}`, created, ...(previous ? { previous } : {}) }) as unknown as StripeEnvelope;
    out.push(e);
    if (twin) out.push({ ...e, id: `evt_${run}_${n}_twin` });
  });
  return out;
}

/** Everything the projection writes for one run, with database ids replaced by what they point at. */
async function state(sql: Sql, run: string) {
  const like = `%${run}%`;
  const customers = await sql`
    select c.id, c.email, c.name, c.deleted, c.default_payment_method, c.version_created, c.version_event_id, k.email as contact_email, k.stripe_customer_id as contact_customer
    from customers c left join contacts k on k.id = c.contact_id where c.id like ${like} order by c.id`;
  const invoices = await sql`select * from invoices where id like ${like} order by id`;
  const subscriptions = await sql`select * from subscriptions where id like ${like} order by id`;
  const failures = await sql`
    select stripe_event_id, customer_id, invoice_id, payment_intent_id, charge_id, amount, currency, failure_code, decline_code, advice_code, decline_class, message, occurred_at
    from payment_failures where stripe_event_id like ${like} order by stripe_event_id`;
  const facts = await sql`
    select d.name, d.dedupe_key, d.source_id, d.stripe_customer_id, d.subject_id, d.properties, d.occurred_at, d.recorded_at, k.email as contact_email, k.stripe_customer_id as contact_customer
    from domain_events d left join contacts k on k.id = d.contact_id where d.source_id like ${like} order by d.dedupe_key`;
  const contacts = await sql`select email, stripe_customer_id, traits from contacts where stripe_customer_id like ${like} order by stripe_customer_id, email`;
  // The engine reads facts in id order: the batch keeps the one-by-one order.
  const order = await sql`select dedupe_key from domain_events where source_id like ${like} order by id`;
  return JSON.parse(JSON.stringify({ customers, invoices, subscriptions, failures, facts, contacts, order }));
}

test('a batch projects exactly what the same events give one at a time (random histories, random batch cuts)', async (t) => {
  const one = await database(t);
  const many = await database(t);
  let run = 0;
  await fc.assert(
    fc.asyncProperty(fc.array(stepArb, { minLength: 1, maxLength: 24 }), fc.array(fc.integer({ min: 1, max: 12 }), { minLength: 1, maxLength: 6 }), async (steps, cuts) => {
      const id = `r${++run}`;
      const events = toEvents(id, steps);
      for (const e of events) await one.begin((tx: Tx) => projectStripeEvent(tx, e, NOW));
      let at = 0;
      for (let i = 0; at < events.length; i++) {
        const size = cuts[i % cuts.length]!;
        const chunk = events.slice(at, at + size);
        at += size;
        await many.begin((tx: Tx) => projectStripeBatch(tx, chunk, NOW));
      }
      assert.deepEqual(await state(many, id), await state(one, id));
    }),
    { numRuns: Number(process.env.STRIPE_BATCH_RUNS ?? 60) },
  );
});

function paymentFailed(run: string, i: number): StripeEnvelope {
  return envelope('invoice.payment_failed', invoice({ id: `in_${run}_${i}`, customer: `cus_${run}_${i}`, customer_email: `c${i}@${run}.test` }), { id: `evt_${run}_${i}`, created: T + i }) as unknown as StripeEnvelope;
}

test('a batch of 100 first failed payments (100 customers) costs a fixed handful of statements', async (t) => {
  let statements = 0;
  const sql = await database(t, { debug: () => statements++ });
  const events = Array.from({ length: 100 }, (_, i) => paymentFailed('st', i));
  const one = await sql.begin((tx: Tx) => projectStripeEvent(tx, paymentFailed('single', 0), NOW));
  assert.deepEqual(one.facts, ['invoice.payment_failed']);
  statements = 0;
  const results = await sql.begin((tx: Tx) => projectStripeBatch(tx, events, NOW));
  const perBatch = statements - 2; // begin, commit
  assert.ok(perBatch <= 12, `statements for 100 events: ${perBatch}`);
  assert.deepEqual(results.map((r) => r.facts), events.map(() => ['invoice.payment_failed']));
  const [counts] = await sql<{ contacts: number; facts: number; linked: number; invoices: number; failures: number }[]>`
    select (select count(*)::int from contacts where stripe_customer_id like 'cus_st_%') as contacts,
           (select count(*)::int from domain_events where stripe_customer_id like 'cus_st_%' and contact_id is not null) as facts,
           (select count(*)::int from customers where id like 'cus_st_%' and contact_id is not null) as linked,
           (select count(*)::int from invoices where id like 'in_st_%') as invoices,
           (select count(*)::int from payment_failures where invoice_id like 'in_st_%') as failures`;
  assert.deepEqual({ ...counts }, { contacts: 100, facts: 100, linked: 100, invoices: 100, failures: 100 });
  // Facts in batch order (the engine's feed order).
  const order = await sql<{ subject_id: string }[]>`select subject_id from domain_events where stripe_customer_id like 'cus_st_%' order by id`;
  assert.deepEqual(order.map((r) => r.subject_id), events.map((_, i) => `in_st_${i}`));
  // The same batch again (a retry after a crash): no new fact, no new contact.
  const again = await sql.begin((tx: Tx) => projectStripeBatch(tx, events, NOW));
  assert.ok(again.every((r) => r.facts.length === 0));
  const [c] = await sql<{ n: number }[]>`select count(*)::int as n from contacts where stripe_customer_id like 'cus_st_%'`;
  assert.equal(c!.n, 100);
});

test('one failing event fails the whole batch (nothing kept); one at a time, only that event fails', async (t) => {
  const sql = await database(t);
  const events = [paymentFailed('f', 0), paymentFailed('f', 1), paymentFailed('f', 2)];
  // An amount no bigint column can hold: the invoice upsert fails for this event only.
  (events[1]!.data.object as Record<string, unknown>).amount_due = 1e30;
  await assert.rejects(sql.begin((tx: Tx) => projectStripeBatch(tx, events, NOW)), /out of range/);
  const [before] = await sql<{ n: number }[]>`select (select count(*) from invoices)::int + (select count(*) from domain_events)::int + (select count(*) from contacts)::int as n`;
  assert.equal(before!.n, 0, 'nothing of the failed batch is kept');
  // The caller's fallback: each event in its own savepoint.
  const failed: string[] = [];
  await sql.begin(async (tx: Tx) => {
    for (const e of events) {
      try {
        await tx.savepoint((sp) => projectStripeEvent(sp as Tx, e, NOW));
      } catch {
        failed.push(e.id);
      }
    }
  });
  assert.deepEqual(failed, ['evt_f_1']);
  const facts = await sql<{ subject_id: string }[]>`select subject_id from domain_events order by id`;
  assert.deepEqual(facts.map((f) => f.subject_id), ['in_f_0', 'in_f_2']);
});

test('concurrent batches sharing customers in opposite orders neither deadlock nor duplicate contacts', async (t) => {
  const sql = await database(t);
  for (let round = 0; round < 5; round++) {
    const run = `dl${round}`;
    const events = Array.from({ length: 30 }, (_, i) => paymentFailed(run, i));
    const twins = events.map((e) => ({ ...e, id: `${e.id}_twin` }));
    await Promise.all([
      sql.begin((tx: Tx) => projectStripeBatch(tx, events, NOW)),
      sql.begin((tx: Tx) => projectStripeBatch(tx, [...twins].reverse(), NOW)),
    ]);
    const [r] = await sql<{ contacts: number; facts: number }[]>`
      select (select count(*)::int from contacts where stripe_customer_id like ${`cus_${run}_%`}) as contacts,
             (select count(*)::int from domain_events where stripe_customer_id like ${`cus_${run}_%`}) as facts`;
    assert.deepEqual({ ...r }, { contacts: 30, facts: 30 });
  }
});
