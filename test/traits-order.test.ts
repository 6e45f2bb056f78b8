// Traits do not depend on arrival order (#5): identify (and group) messages delivered in any
// order, with duplicates, in any split into processing passes, end with every trait holding the
// value of the latest message (by its timestamp) that set it. The same for the email and name
// Stripe events give a contact (by Stripe time; an identify's value always wins).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { build, WRITE_KEY, type Built } from './helpers/build.ts';
import { deliver as deliverStripe, envelope, invoice } from './helpers/stripe.ts';

interface Msg {
  n: number;
  at: number;
  traits: Record<string, number>;
}

const KEYS = ['plan', 'seats', 'role'];
const BASE = Date.parse('2026-02-01T00:00:00Z');

/** Distinct timestamps (a tie has no "latest"), each message setting some of the keys. */
const messages = fc
  .uniqueArray(fc.integer({ min: 0, max: 10_000 }), { minLength: 1, maxLength: 6 })
  .chain((times) =>
    fc.tuple(...times.map((at) => fc.dictionary(fc.constantFrom(...KEYS), fc.integer({ min: 0, max: 9 }), { minKeys: 1, maxKeys: 3 }).map((traits) => ({ at, traits })))),
  )
  .map((list) => list.map((m, n) => ({ ...m, n }) as Msg));

/** A delivery: every message at least once (duplicates allowed), in any order, cut into passes. */
const delivery = (msgs: Msg[]) =>
  fc
    .tuple(fc.shuffledSubarray(msgs, { minLength: 0 }), fc.array(fc.nat({ max: 5 }), { maxLength: 4 }))
    .chain(([dups, cuts]) => fc.tuple(fc.shuffledSubarray([...msgs, ...dups], { minLength: msgs.length + dups.length }), fc.constant(cuts)));

function expected(msgs: Msg[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const key of KEYS) {
    const latest = msgs.filter((m) => key in m.traits).sort((a, b) => b.at - a.at)[0];
    if (latest) out[key] = latest.traits[key]!;
  }
  return out;
}

let run = 0;

async function deliver(svc: Built, kind: 'identify' | 'group', subject: string, order: Msg[], cuts: number[]) {
  const passes: Msg[][] = [];
  let rest = order;
  for (const cut of cuts) {
    passes.push(rest.slice(0, cut));
    rest = rest.slice(cut);
  }
  passes.push(rest);
  for (const pass of passes) {
    if (pass.length === 0) continue;
    const batch = pass.map((m) => ({
      type: kind,
      messageId: `${subject}-${m.n}`,
      userId: kind === 'identify' ? subject : `${subject}-u${m.n % 2}`,
      ...(kind === 'group' ? { groupId: subject } : {}),
      timestamp: new Date(BASE + m.at * 1000).toISOString(),
      traits: m.traits,
    }));
    const res = await svc.app.inject({ method: 'POST', url: '/v1/batch', headers: { 'content-type': 'application/json', authorization: `Bearer ${WRITE_KEY}` }, payload: { batch } });
    assert.equal(res.statusCode, 200, res.body);
    await svc.inbox.drain();
  }
}

async function check(svc: Built, kind: 'identify' | 'group', msgs: Msg[], order: Msg[], cuts: number[]) {
  const subject = `${kind}-${++run}`;
  await deliver(svc, kind, subject, order, cuts);
  const [row] =
    kind === 'identify'
      ? await svc.sql<{ traits: Record<string, unknown> }[]>`select traits from contacts where user_id = ${subject}`
      : await svc.sql<{ traits: Record<string, unknown> }[]>`select traits from accounts where group_id = ${subject}`;
  assert.deepEqual(row!.traits, expected(msgs));
}

test('contact traits: per trait, the latest message wins whatever the delivery order, duplicates and passes', async (t) => {
  const svc = await build(t);
  // Shrunk counter-example kept as a regression: the older message arrives last, alone in its pass.
  const older: Msg = { n: 0, at: 1, traits: { plan: 1 } };
  const newer: Msg = { n: 1, at: 2, traits: { plan: 2, seats: 5 } };
  await check(svc, 'identify', [older, newer], [newer, older], [1]);
  await check(svc, 'identify', [older, newer], [newer, older], []);
  await fc.assert(
    fc.asyncProperty(messages.chain((msgs) => fc.tuple(fc.constant(msgs), delivery(msgs))), async ([msgs, [order, cuts]]) => {
      await check(svc, 'identify', msgs, order, cuts);
    }),
    { numRuns: 40 },
  );
});

test('account traits from group calls: per trait, the latest message wins', async (t) => {
  const svc = await build(t);
  const older: Msg = { n: 0, at: 1, traits: { plan: 1 } };
  const newer: Msg = { n: 1, at: 2, traits: { plan: 2 } };
  await check(svc, 'group', [older, newer], [newer, older], [1]);
  await fc.assert(
    fc.asyncProperty(messages.chain((msgs) => fc.tuple(fc.constant(msgs), delivery(msgs))), async ([msgs, [order, cuts]]) => {
      await check(svc, 'group', msgs, order, cuts);
    }),
    { numRuns: 25 },
  );
});

// Stripe billing details (customer email and name; an invoice's customer_email/customer_name,
// frozen when the invoice was made) reach the contact per trait by the time of the message that
// carried them, and never overwrite what a product message (identify) said about the person.
test('Stripe email and name: per trait the newest Stripe value wins, an identify always wins, in every arrival order', async (t) => {
  const svc = await build(t);
  const T = 1_760_000_000;
  type Step = 'older customer' | 'newer customer' | 'invoice' | 'identify';
  const send = async (step: Step, n: number) => {
    const cus = `cus_perm_${n}`;
    if (step === 'identify') {
      const res = await svc.app.inject({
        method: 'POST', url: '/v1/identify', headers: { authorization: `Bearer ${WRITE_KEY}` },
        payload: { userId: `u_perm_${n}`, messageId: `id-${n}`, timestamp: new Date((T - 100) * 1000).toISOString(), traits: { name: 'Pat', stripeCustomerId: cus } },
      });
      assert.equal(res.statusCode, 200, res.body);
      return;
    }
    const event =
      step === 'invoice'
        // the newest event, but its customer_email is as of the invoice's creation (between the two customer snapshots)
        ? envelope('invoice.payment_failed', { ...invoice({ id: `in_perm_${n}`, customer: cus, customer_email: `c${n}@example.test`, created: T + 20 }), customer_name: 'C' }, { id: `evt_inv_${n}`, created: T + 40 })
        : step === 'older customer'
          ? envelope('customer.updated', { id: cus, object: 'customer', email: `a${n}@example.test`, name: 'A', metadata: {} }, { id: `evt_a_${n}`, created: T + 10 })
          : envelope('customer.updated', { id: cus, object: 'customer', email: `b${n}@example.test`, name: 'B', metadata: {} }, { id: `evt_b_${n}`, created: T + 30 });
    const res = await deliverStripe(svc.app, event);
    assert.equal(res.statusCode, 200, res.body);
  };
  const permutations = <X>(xs: X[]): X[][] => (xs.length <= 1 ? [xs] : xs.flatMap((x, i) => permutations([...xs.slice(0, i), ...xs.slice(i + 1)]).map((rest) => [x, ...rest])));
  let n = 0;
  for (const withIdentify of [false, true]) {
    const steps: Step[] = ['older customer', 'newer customer', 'invoice', ...(withIdentify ? ['identify' as const] : [])];
    for (const order of permutations(steps)) {
      n++;
      for (const step of order) {
        await send(step, n);
        await svc.inbox.drain();
      }
      const rows = await svc.sql<{ email: string; traits: Record<string, unknown> }[]>`
        select email, traits from contacts where stripe_customer_id = ${`cus_perm_${n}`}`;
      const want = { email: `b${n}@example.test`, name: withIdentify ? 'Pat' : 'B' };
      assert.deepEqual(rows.map((r) => ({ email: r.email, traits: { email: r.traits.email, name: r.traits.name } })), [{ email: want.email, traits: want }], `arrival order: ${order.join(', ')}`);
    }
  }
});
