// Engine decisions that depend on delivery order and concurrency, on real Postgres: entry
// guards (a late trigger never starts a run whose goal or exit already happened), date-trait
// triggers re-read at fire time, the dunning hold for every member of a paying account and its
// release on the fact that ends it, and the frequency cap under concurrent advances.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Service } from '../src/service.ts';
import type { WorkflowDefinition } from '../src/workflows/types.ts';
import { deliver, envelope, invoice, subscription } from './helpers/stripe.ts';
import { at, DAY, HOUR, MIN, post, publish, setup, T } from './helpers/engine-scenario.ts';

async function messages(svc: Pick<Service, 'sql'>, workflow: string) {
  return [...await svc.sql<{ to_email: string | null; template: string; created_at: Date }[]>`
    select to_email, template, created_at from messages where workflow_key = ${workflow} order by created_at, id`].map((m) => [m.to_email, m.template, m.created_at.toISOString()]);
}

async function runs(svc: Pick<Service, 'sql'>, workflow: string) {
  return [...await svc.sql<{ run_key: string; status: string }[]>`select run_key, status from workflow_runs where workflow_key = ${workflow} order by id`];
}

// ---------------------------------------------------------------------------------------------
// 1. A late trigger after the fact that ends the run

for (const ending of [
  { type: 'invoice.paid', status: 'paid' },
  { type: 'invoice.voided', status: 'void' },
  { type: 'invoice.marked_uncollectible', status: 'uncollectible' },
] as const) {
  test(`a payment_failed delivered after ${ending.type} of the same invoice starts no dunning and sends nothing`, async (t) => {
    const { svc, clock } = await setup(t);
    await deliver(svc.app, envelope('customer.subscription.created', subscription({ id: 'sub_1', customer: 'cus_1', unit_amount: 4900 }), { created: at(-DAY) }));
    // Stripe: the payment failed at T, then (an hour later) the invoice was paid / voided /
    // written off. The later event is delivered first.
    await deliver(svc.app, envelope(ending.type, invoice({ id: 'in_1', customer: 'cus_1', subscription: 'sub_1', status: ending.status, attempt_count: 1, customer_email: 'pat@example.test' }), { created: at(HOUR) }));
    await deliver(svc.app, envelope('invoice.payment_failed', invoice({ id: 'in_1', customer: 'cus_1', subscription: 'sub_1', attempt_count: 1, customer_email: 'pat@example.test' }), { created: T }));
    clock.set(at(2 * HOUR));
    await svc.drain();
    for (const day of [3, 5, 7, 10]) {
      clock.set(at(day * DAY));
      await svc.drain();
    }
    assert.deepEqual(await messages(svc, 'billing-recovery'), [], 'no dunning email for an invoice that is already settled');
    // No run: the refused entry is only recorded (superseded: no step, no email, not in reports)
    // so that the entry rule counts it as the run it would have been in event order.
    assert.deepEqual((await runs(svc, 'billing-recovery')).map((r) => ({ ...r })), [{ run_key: 'in_1', status: 'superseded' }], 'no run, a superseded entry');
    const [invoiceRow] = await svc.sql<{ status: string }[]>`select status from invoices where id = 'in_1'`;
    assert.equal(invoiceRow!.status, ending.status, 'the late failure does not reopen the invoice');
  });
}

test('a subscription cancelled before a late failure of its invoice is delivered: no dunning', async (t) => {
  const { svc, clock } = await setup(t);
  await deliver(svc.app, envelope('customer.subscription.created', subscription({ id: 'sub_2', customer: 'cus_2', unit_amount: 4900 }), { created: at(-DAY) }));
  await deliver(svc.app, envelope('customer.subscription.deleted', subscription({ id: 'sub_2', customer: 'cus_2', unit_amount: 4900, status: 'canceled' }), { created: at(HOUR) }));
  await deliver(svc.app, envelope('invoice.payment_failed', invoice({ id: 'in_2', customer: 'cus_2', subscription: 'sub_2', attempt_count: 1, customer_email: 'sam@example.test' }), { created: T }));
  clock.set(at(2 * HOUR));
  await svc.drain();
  assert.deepEqual(await messages(svc, 'billing-recovery'), []);
});

test('the in-order timeline still recovers: failure, then (later) paid converts the run after the first email', async (t) => {
  const { svc, clock } = await setup(t);
  await deliver(svc.app, envelope('customer.subscription.created', subscription({ id: 'sub_3', customer: 'cus_3', unit_amount: 4900 }), { created: at(-DAY) }));
  await deliver(svc.app, envelope('invoice.payment_failed', invoice({ id: 'in_3', customer: 'cus_3', subscription: 'sub_3', attempt_count: 1, customer_email: 'kim@example.test' }), { created: T }));
  await svc.drain();
  clock.set(at(DAY));
  await deliver(svc.app, envelope('invoice.paid', invoice({ id: 'in_3', customer: 'cus_3', subscription: 'sub_3', status: 'paid', attempt_count: 2 }), { created: at(DAY) }));
  await svc.drain();
  assert.deepEqual(await messages(svc, 'billing-recovery'), [['kim@example.test', 'dunning-soft-1', T.toISOString()]]);
  assert.deepEqual(await runs(svc, 'billing-recovery'), [{ run_key: 'in_3', status: 'converted' }]);
});

// ---------------------------------------------------------------------------------------------
// 2. Date-trait triggers follow the trait

const trialEnding: WorkflowDefinition = {
  key: 'trial-ending',
  name: 'Trial ending',
  category: 'lifecycle',
  trigger: { type: 'date_trait', trait: 'trial_end', offset: '-P1D' },
  entry: { mode: 'once' },
  steps: [{ id: 'remind', type: 'send_email', template: 'onboarding-day1', subject: 'Your trial ends tomorrow' }],
};

test('date trait moved later (trial end day 5 → day 20): nothing on day 4, the email on day 19', async (t) => {
  const { svc, clock } = await setup(t, { FREQUENCY_CAP: 'off' });
  await publish(svc, trialEnding, T);
  await post(svc, '/v1/identify', { userId: 'u1', traits: { email: 'u1@example.test', trial_end: at(5 * DAY).toISOString() } });
  await svc.drain();
  clock.set(at(HOUR));
  await post(svc, '/v1/identify', { userId: 'u1', traits: { trial_end: at(20 * DAY).toISOString() } });
  await svc.drain();
  for (const day of [4, 5, 10]) {
    clock.set(at(day * DAY));
    await svc.drain();
    await svc.engine.tick();
    await svc.drain();
  }
  assert.deepEqual(await messages(svc, 'trial-ending'), [], 'the stale date does not fire');
  clock.set(at(19 * DAY));
  await svc.engine.tick();
  await svc.drain();
  assert.deepEqual(await messages(svc, 'trial-ending'), [['u1@example.test', 'onboarding-day1', at(19 * DAY).toISOString()]]);
});

test('date trait removed: the scheduled entry does not fire', async (t) => {
  const { svc, clock } = await setup(t, { FREQUENCY_CAP: 'off' });
  await publish(svc, trialEnding, T);
  await post(svc, '/v1/identify', { userId: 'u2', traits: { email: 'u2@example.test', trial_end: at(3 * DAY).toISOString() } });
  await svc.drain();
  clock.set(at(HOUR));
  await post(svc, '/v1/identify', { userId: 'u2', traits: { trial_end: null } });
  await svc.drain();
  clock.set(at(3 * DAY));
  await svc.engine.tick();
  await svc.drain();
  assert.deepEqual(await messages(svc, 'trial-ending'), []);
});

// ---------------------------------------------------------------------------------------------
// 3. Dunning hold for teammates, released by invoice.paid

test('dunning hold covers teammates when the Stripe customer is linked through the paying contact, and invoice.paid releases it at once', async (t) => {
  const { svc, clock } = await setup(t);
  // The paying contact carries the Stripe customer (README: identify with stripeCustomerId);
  // the account itself has no stripeCustomerId trait.
  await post(svc, '/v1/identify', { userId: 'u_payer', traits: { email: 'payer@acme.test', role: 'owner', stripeCustomerId: 'cus_acme' } });
  await post(svc, '/v1/identify', { userId: 'u_member', traits: { email: 'member@acme.test', role: 'member' } });
  await post(svc, '/v1/group', { userId: 'u_payer', groupId: 'acme', traits: { name: 'Acme', usage_pct: 40 } });
  await post(svc, '/v1/group', { userId: 'u_member', groupId: 'acme', traits: {} });
  await svc.drain();
  await deliver(svc.app, envelope('customer.subscription.created', subscription({ id: 'sub_acme', customer: 'cus_acme', unit_amount: 4900 }), { created: at(-DAY) }));
  await deliver(svc.app, envelope('invoice.payment_failed', invoice({ id: 'in_acme', customer: 'cus_acme', subscription: 'sub_acme', customer_email: 'payer@acme.test' }), { created: T }));
  await svc.drain();
  assert.deepEqual(await messages(svc, 'billing-recovery'), [['payer@acme.test', 'dunning-soft-1', T.toISOString()]]);

  // The member hits the paywall three times: an expansion run for the account, held.
  for (const minutes of [5, 10, 15]) {
    clock.set(at(minutes * MIN));
    await post(svc, '/v1/track', { userId: 'u_member', event: 'Paywall Hit', properties: { feature: 'sso' }, context: { groupId: 'acme' } });
    await svc.drain();
  }
  assert.deepEqual(await messages(svc, 'expansion'), [], 'no upsell while the account invoice is failing');
  const held = await svc.sql<{ reason: string }[]>`
    select t.data->>'reason' as reason from run_trace t join workflow_runs r on r.id = t.run_id
    where r.workflow_key = 'expansion' and t.kind = 'send_held'`;
  assert.deepEqual(held.map((h) => h.reason), ['dunning_priority']);

  // Paid 20 minutes later: the held send goes out at once, not on the next hourly re-check.
  const paidAt = at(35 * MIN);
  clock.set(paidAt);
  await deliver(svc.app, envelope('invoice.paid', invoice({ id: 'in_acme', customer: 'cus_acme', subscription: 'sub_acme', status: 'paid', attempt_count: 2 }), { created: paidAt }));
  await svc.drain();
  assert.deepEqual(await messages(svc, 'expansion'), [['payer@acme.test', 'expansion-paywall', paidAt.toISOString()]]);
});

// ---------------------------------------------------------------------------------------------
// 4. Frequency cap under concurrency

test('two runs of one contact advanced concurrently send one capped email, the other is held by the cap', async (t) => {
  const { svc, clock } = await setup(t, { FREQUENCY_CAP: 'PT24H' });
  for (const key of ['tips-a', 'tips-b']) {
    await publish(svc, {
      key,
      name: key,
      category: 'lifecycle',
      trigger: { type: 'event', event: 'Signed Up' },
      entry: { mode: 'once' },
      steps: [
        { id: 'pause', type: 'wait', duration: 'PT1H' },
        { id: 'tip', type: 'send_email', template: 'onboarding-day1', subject: key },
      ],
    }, T);
  }
  await post(svc, '/v1/identify', { userId: 'u3', traits: { email: 'u3@example.test' } });
  await post(svc, '/v1/track', { userId: 'u3', event: 'Signed Up' });
  await svc.drain();
  const ids = (await svc.sql<{ id: number }[]>`select id from workflow_runs where workflow_key in ('tips-a', 'tips-b') order by id`).map((r) => Number(r.id));
  assert.equal(ids.length, 2);
  clock.set(at(HOUR));
  // Two workers, one run each, at the same moment.
  await Promise.all(ids.map((id) => svc.engine.advanceDueBatch([id])));
  const sent = await svc.sql<{ n: number }[]>`select count(*)::int as n from messages where workflow_key in ('tips-a', 'tips-b')`;
  assert.equal(sent[0]!.n, 1, 'the frequency cap allows one lifecycle email per 24 h');
  const held = await svc.sql<{ n: number }[]>`
    select count(*)::int as n from run_trace t join workflow_runs r on r.id = t.run_id
    where r.workflow_key in ('tips-a', 'tips-b') and t.kind = 'send_held' and t.data->>'reason' = 'frequency_cap'`;
  assert.equal(held[0]!.n, 1);
});

// ---------------------------------------------------------------------------------------------
// 5. Dead letters: a run that always fails is parked after a bounded number of attempts

test('a due run that always fails is retried with backoff, parked after 5 failures, listed, and replayable', async (t) => {
  const { listDeadRuns, replayDeadRuns } = await import('../src/workflows/engine-dead-letters.ts');
  const { svc, clock } = await setup(t, { FREQUENCY_CAP: 'off' });
  await publish(svc, {
    key: 'poison',
    name: 'poison',
    category: 'lifecycle',
    trigger: { type: 'event', event: 'Signed Up' },
    entry: { mode: 'once' },
    steps: [
      { id: 'pause', type: 'wait', duration: 'PT1H' },
      { id: 'tip', type: 'send_email', template: 'onboarding-day1', subject: 'hi' },
    ],
  }, T);
  await post(svc, '/v1/identify', { userId: 'u5', traits: { email: 'u5@example.test' } });
  await post(svc, '/v1/track', { userId: 'u5', event: 'Signed Up' });
  await svc.drain();
  const [run] = await svc.sql<{ id: number; state: Record<string, unknown> }[]>`select id, state from workflow_runs where workflow_key = 'poison'`;
  // A state the interpreter cannot read (as a corrupted row or a bad migration would leave it).
  const good = run!.state;
  await svc.sql`update workflow_runs set state = jsonb_set(state, '{vars}', 'null') where id = ${run!.id}`;
  let now = at(HOUR);
  for (let attempt = 1; attempt <= 5; attempt++) {
    clock.set(now);
    await assert.rejects(svc.engine.advanceDue(Number(run!.id)));
    const [row] = await svc.sql<{ failures: number; due_at: Date | null; dead_at: Date | null; last_error: string | null }[]>`
      select failures, due_at, dead_at, last_error from workflow_runs where id = ${run!.id}`;
    assert.equal(row!.failures, attempt);
    assert.ok(row!.last_error);
    if (attempt < 5) {
      assert.equal(row!.dead_at, null);
      assert.ok(row!.due_at!.getTime() > now.getTime(), 'retried later, with backoff');
      now = row!.due_at!;
    } else {
      assert.equal(row!.due_at, null, 'parked: no more timers');
      assert.notEqual(row!.dead_at, null);
    }
  }
  // The tick no longer hands it over.
  clock.set(at(10 * DAY));
  await svc.engine.tick();
  const [parked] = await svc.sql<{ queued_at: Date | null }[]>`select queued_at from workflow_runs where id = ${run!.id}`;
  assert.equal(parked!.queued_at, null, 'not handed over again');
  const dead = await listDeadRuns(svc.sql);
  assert.deepEqual(dead.map((d) => [Number(d.id), d.workflowKey, d.failures]), [[Number(run!.id), 'poison', 5]]);

  // Fixed, then replayed: it advances and sends.
  await svc.sql`update workflow_runs set state = ${JSON.stringify(good)}::text::jsonb where id = ${run!.id}`;
  assert.equal(await replayDeadRuns(svc.sql, [Number(run!.id)], clock.now()), 1);
  await svc.drain();
  assert.deepEqual(await messages(svc, 'poison'), [['u5@example.test', 'onboarding-day1', at(10 * DAY).toISOString()]]);
  assert.deepEqual(await listDeadRuns(svc.sql), []);
});

test('a fact the engine cannot apply is retried with backoff, then parked as a dead letter (the rest of its batch goes on) and can be replayed', async (t) => {
  const { listDeadFacts, replayDeadFacts } = await import('../src/workflows/engine-dead-letters.ts');
  const { ENGINE_FEED_QUEUE } = await import('../src/workflows/engine.ts');
  const { svc, clock } = await setup(t, { FREQUENCY_CAP: 'off' });
  await publish(svc, {
    key: 'waiter',
    name: 'waiter',
    category: 'lifecycle',
    trigger: { type: 'event', event: 'Signed Up' },
    entry: { mode: 'once' },
    steps: [{ id: 'w', type: 'wait_for_event', event: 'Project Created', timeout: 'P2D', onEvent: [{ id: 'yay', type: 'send_email', template: 'onboarding-day1', subject: 'yay' }], onTimeout: [] }],
  }, T);
  for (const user of ['bad', 'good']) {
    await post(svc, '/v1/identify', { userId: user, traits: { email: `${user}@example.test` } });
    await post(svc, '/v1/track', { userId: user, event: 'Signed Up' });
  }
  await svc.drain();
  const [bad] = await svc.sql<{ id: number; state: unknown }[]>`
    select r.id, r.state from workflow_runs r join contacts c on c.id = r.contact_id where r.workflow_key = 'waiter' and c.user_id = 'bad'`;
  await svc.sql`update workflow_runs set state = jsonb_set(state, '{vars}', 'null') where id = ${bad!.id}`;
  for (const user of ['bad', 'good']) await post(svc, '/v1/track', { userId: user, event: 'Project Created' });
  await svc.drain();
  assert.deepEqual(await messages(svc, 'waiter'), [['good@example.test', 'onboarding-day1', T.toISOString()]], 'the other contact is not held up');
  // Failed once: retried with backoff (it may be a passing problem), not parked yet.
  const [failing] = await svc.sql<{ engine_attempts: number; engine_error: string | null; engine_retry_at: Date | null }[]>`
    select engine_attempts, engine_error, engine_retry_at from domain_events where name = 'Project Created' and engine_processed_at is null`;
  assert.equal(failing?.engine_attempts, 1);
  assert.ok(failing?.engine_error);
  assert.ok(failing?.engine_retry_at && failing.engine_retry_at.getTime() > clock.now().getTime());
  assert.deepEqual(await listDeadFacts(svc.sql), []);
  // Each retry fails the same way; the tenth attempt parks it (ENGINE_FEED_QUEUE.maxAttempts).
  for (let attempt = 2; attempt <= ENGINE_FEED_QUEUE.maxAttempts; attempt++) {
    clock.set(new Date(clock.now().getTime() + 16 * 60_000));
    await svc.drain();
  }
  const dead = await listDeadFacts(svc.sql);
  assert.deepEqual(dead.map((d) => d.name), ['Project Created']);
  assert.ok(dead[0]!.error);
  assert.equal(dead[0]!.attempts, 10);

  await svc.sql`update workflow_runs set state = ${JSON.stringify(bad!.state)}::text::jsonb where id = ${bad!.id}`;
  assert.equal(await replayDeadFacts(svc.sql, dead.map((d) => Number(d.id))), 1);
  await svc.drain();
  assert.equal((await messages(svc, 'waiter')).length, 2);
  assert.deepEqual(await listDeadFacts(svc.sql), []);
});

test('date trait with subject "account": scheduled from the group trait, follows it when it moves', async (t) => {
  const { svc, clock } = await setup(t, { FREQUENCY_CAP: 'off' });
  await publish(svc, {
    key: 'renewal',
    name: 'Renewal coming',
    category: 'lifecycle',
    trigger: { type: 'date_trait', trait: 'renewal_at', offset: '-P7D', subject: 'account' },
    entry: { mode: 'once' },
    steps: [{ id: 'remind', type: 'send_email', template: 'onboarding-day1', subject: 'Renewal in a week' }],
  }, T);
  await post(svc, '/v1/identify', { userId: 'owner', traits: { email: 'owner@acme.test' } });
  await post(svc, '/v1/group', { userId: 'owner', groupId: 'acme', traits: { renewal_at: at(10 * DAY).toISOString() } });
  await svc.drain();
  // A contact trait of the same name does not schedule anything for an account-subject trigger.
  await post(svc, '/v1/identify', { userId: 'owner', traits: { renewal_at: at(8 * DAY).toISOString() } });
  await svc.drain();
  clock.set(at(HOUR));
  await post(svc, '/v1/group', { userId: 'owner', groupId: 'acme', traits: { renewal_at: at(30 * DAY).toISOString() } });
  await svc.drain();
  for (const day of [1, 3, 10]) {
    clock.set(at(day * DAY));
    await svc.engine.tick();
    await svc.drain();
  }
  assert.deepEqual(await messages(svc, 'renewal'), [], 'neither the contact trait nor the stale account date fires');
  clock.set(at(23 * DAY));
  await svc.engine.tick();
  await svc.drain();
  assert.deepEqual(await messages(svc, 'renewal'), [['owner@acme.test', 'onboarding-day1', at(23 * DAY).toISOString()]]);
});
