// Delivery order and duplicates do not change what Lifeline does.
//
// Property-based (fast-check), end to end through the real service on Postgres: a generated
// timeline of Stripe events (invoice failures with growing attempt_count, payment, void, write-
// off, subscription created/updated/paused/resumed/canceled, payment method changes) and product
// calls (identify, group, track) for 2–3 customers is delivered twice, each time to a fresh
// Lifeline: once in true order, each event processed before the next arrives (the reference),
// and once shuffled, with 1–3 copies of every event (Stripe redelivers the same event id,
// Segment retries the same messageId), processed at random points, product calls partly in
// /v1/batch. Stripe webhooks are signed and go through the Fastify app; product calls use the
// write key. Both services then walk a ManualClock through 40 days (the dunning schedule and
// beyond), processing every 12 h. The shuffled delivery must end where the reference does.
//
// A failure prints the seed, the replay path and the shrunk counter-example (timeline in true
// order and the arrival order). Replay: ORDER_SEED=<seed> ORDER_PATH=<path> node --test … this
// file; ORDER_RUNS=<n> runs more (or fewer) cases per property.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  deliveryPlanArbitrary,
  describe,
  schedule,
  timelineArbitrary,
  ALL_OPS,
  PRODUCT_OPS,
  STRIPE_INVOICE_OPS,
  STRIPE_PM_OPS,
  STRIPE_SUBSCRIPTION_OPS,
  type DeliveryPlan,
  type Op,
  type Timeline,
} from './helpers/timeline-generator.ts';
import { assertOneFactPerTransition, assertSameOutcome, deliverAll, harness, nextStart, runCase, type Aspect, type Harness } from './helpers/pipeline-driver.ts';

const SEED = process.env.ORDER_SEED ? Number(process.env.ORDER_SEED) : undefined;
const PATH = process.env.ORDER_PATH || undefined;
const RUNS = process.env.ORDER_RUNS ? Number(process.env.ORDER_RUNS) : undefined;
/**
 * fast-check stops a property after this long, runs and shrinking together (a run that has not
 * failed by then passes with the runs it made): it keeps each property inside npm test's 180 s
 * per-test timeout on a busy machine, and bounds shrinking, which re-runs the pipeline many times.
 */
const TIME_LIMIT_MS = Number(process.env.ORDER_TIME_LIMIT_MS ?? 100_000);
const TIMING = process.env.ORDER_TIMING === '1';

type Case = { timeline: Timeline; plan: DeliveryPlan };

// A property that fails because its fix has not landed yet runs as node:test `todo` (reported,
// not failing the suite), naming its counter-example. None is todo now. The last one (win-back
// cooldown, a later run started first: ORDER_SEED=220418603 ORDER_PATH=11:1:1 on "end to end,
// everything") is fixed by withdrawing the runs a late entry's cooldown covers; its shrunk form
// is in test/regressions/delivery-order.test.ts.

const cases = (ops: readonly Op[]) => fc.record({ timeline: timelineArbitrary(ops), plan: deliveryPlanArbitrary });

async function checkProperty(t: TestContext, arbitrary: fc.Arbitrary<Case>, numRuns: number, body: (c: Case) => Promise<void>): Promise<void> {
  const out = await fc.check(fc.asyncProperty(arbitrary, body), {
    numRuns: RUNS ?? numRuns,
    ...(SEED !== undefined ? { seed: SEED } : {}),
    ...(PATH ? { path: PATH } : {}),
    interruptAfterTimeLimit: TIME_LIMIT_MS,
  });
  t.diagnostic(`${out.numRuns} run(s)${out.interrupted ? `, stopped at the ${TIME_LIMIT_MS} ms limit` : ''}, seed ${out.seed}`);
  if (!out.failed) return;
  if (out.counterexample === null) assert.fail(`interrupted after ${TIME_LIMIT_MS} ms before a single run completed (ORDER_TIME_LIMIT_MS)`);
  const c = out.counterexample[0];
  const error = out.errorInstance instanceof Error ? out.errorInstance.message : String(out.errorInstance);
  assert.fail(
    [
      `order-independence property failed after ${out.numRuns} run(s), shrunk ${out.numShrinks} time(s)${out.interrupted ? ' (shrinking stopped at the time limit)' : ''}`,
      `replay: ORDER_SEED=${out.seed} ORDER_PATH=${out.counterexamplePath}`,
      describe(c.timeline, schedule(c.timeline, c.plan)),
      error,
    ].join('\n'),
  );
}

async function services(t: TestContext): Promise<[Harness, Harness]> {
  return Promise.all([harness(t), harness(t)]);
}

/** The property: the shuffled, repeated delivery ends where the in-order one does, in these aspects. */
async function sameOutcome(t: TestContext, ops: readonly Op[], numRuns: number, aspects: readonly Aspect[], options: { follow: boolean }): Promise<void> {
  const [ref, shuffled] = await services(t);
  await checkProperty(t, cases(ops), numRuns, async ({ timeline, plan }) => {
    const began = performance.now();
    const start = await runCase(ref, shuffled, timeline, schedule(timeline, plan), options);
    if (TIMING) process.stderr.write(`run: ${timeline.steps.length} events, ${Math.round(performance.now() - began)} ms\n`);
    await assertSameOutcome(ref, shuffled, start, aspects);
  });
}

const STRIPE_OPS: Op[] = [...STRIPE_INVOICE_OPS, ...STRIPE_SUBSCRIPTION_OPS, ...STRIPE_PM_OPS];

test('Stripe domain state (invoices, subscriptions, customers) does not depend on delivery order or duplicates', async (t) => {
  await sameOutcome(t, STRIPE_OPS, 20, ['stripe'], { follow: false });
});

test('the timeline (Stripe facts) does not depend on delivery order or duplicates', async (t) => {
  await sameOutcome(t, STRIPE_OPS, 20, ['stripe-facts'], { follow: false });
});

// Weighted towards subscription transitions, so that repeated ones (paused, resumed, paused …) are common.
const TRANSITION_OPS: Op[] = ['sub_create', 'sub_pause', 'sub_resume', 'sub_pause', 'sub_resume', 'sub_update', 'sub_cancel', 'invoice_fail', 'invoice_paid', 'pm_update'];

test('every Stripe transition is one fact, however often and in whatever order it arrives', async (t) => {
  const h = await harness(t);
  await checkProperty(t, fc.record({ timeline: timelineArbitrary(TRANSITION_OPS, { customers: { min: 1, max: 2 } }), plan: deliveryPlanArbitrary }), 20, async ({ timeline, plan }) => {
    await h.reset();
    await deliverAll(h, timeline, schedule(timeline, plan), nextStart());
    await assertOneFactPerTransition(h, timeline);
  });
});

test('contacts and accounts (traits, links, members) do not depend on delivery order or duplicates', async (t) => {
  // Product calls and the Stripe events that make or link contacts (customer email on invoices
  // and customers; none on subscriptions and payment methods).
  await sameOutcome(t, [...PRODUCT_OPS, 'invoice_fail', 'pm_update', 'sub_create', 'pm_attach'], 20, ['people'], { follow: false });
});

// Contacts and timeline facts are compared by the properties above (each fails on its own); here
// the workflows' behaviour: emails and runs, then the recovery report and the domain state.
const WORKFLOW_ASPECTS: Aspect[] = ['emails', 'runs', 'report', 'stripe'];

// Weighted towards dunning: failures, then payment, void, write-off or cancellation of the same
// invoice, with card changes and identify calls around them (1–2 customers, so they collide).
const BILLING_OPS: Op[] = ['invoice_fail', 'invoice_fail', 'invoice_fail', 'invoice_paid', 'invoice_paid', 'invoice_void', 'invoice_uncollectible', 'sub_cancel', 'sub_create', 'pm_update', 'identify'];

test('end to end, billing: no dunning email or run the in-order delivery would not have; the same recovery report and state', async (t) => {
  const [ref, shuffled] = await services(t);
  await checkProperty(t, fc.record({ timeline: timelineArbitrary(BILLING_OPS, { customers: { min: 1, max: 2 }, maxIntents: 10 }), plan: deliveryPlanArbitrary }), 15, async ({ timeline, plan }) => {
    const start = await runCase(ref, shuffled, timeline, schedule(timeline, plan), { follow: true });
    await assertSameOutcome(ref, shuffled, start, WORKFLOW_ASPECTS);
  });
});

test('end to end, everything: no email or workflow run the in-order delivery would not have; the same recovery report and state', async (t) => {
  await sameOutcome(t, ALL_OPS, 12, WORKFLOW_ASPECTS, { follow: true });
});
