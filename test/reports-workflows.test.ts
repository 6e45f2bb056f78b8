// The per-workflow report through HTTP on real Postgres: funnel, KPIs and split statistics on
// small scenarios whose numbers are worked out by hand (p-values and intervals checked against
// scipy: 2 * norm.sf(|z|) with the pooled z, and norm.ppf(0.975) for the interval).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type { ManualClock } from '../src/clock.ts';
import { signToken } from '../src/email/tokens.ts';
import { compareProportions, median, normalSurvival } from '../src/reports/stats.ts';
import { builtinDefinition } from '../src/workflows/builtin/index.ts';
import { assignVariant } from '../src/workflows/interpreter.ts';
import { loadContact } from '../src/workflows/context-loader.ts';
import type { Step } from '../src/workflows/types.ts';
import { ADMIN_TOKEN, build, WRITE_KEY, type Built } from './helpers/build.ts';
import { deliver, envelope, invoice, subscription } from './helpers/stripe.ts';

const T = new Date('2026-03-02T10:00:00Z');
const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const at = (ms: number) => new Date(T.getTime() + ms);
const auth = { authorization: `Bearer ${ADMIN_TOKEN}` };
const RANGE = 'from=2026-03-01&to=2026-03-08';

async function setup(t: TestContext) {
  const svc = await build(t, { clock: 'manual', env: { QUIET_HOURS: 'off' } });
  const clock = svc.clock as ManualClock;
  clock.set(T);
  return { svc, clock };
}

async function post(svc: Built, url: string, body: Record<string, unknown>) {
  const res = await svc.app.inject({ method: 'POST', url, headers: { authorization: `Bearer ${WRITE_KEY}` }, payload: { timestamp: svc.clock.now().toISOString(), ...body } });
  assert.equal(res.statusCode, 200, res.body);
}
const track = (svc: Built, userId: string, event: string, extra: Record<string, unknown> = {}) => post(svc, '/v1/track', { userId, event, ...extra });
const identify = (svc: Built, userId: string, traits: Record<string, unknown> = {}) => post(svc, '/v1/identify', { userId, traits: { email: `${userId}@example.test`, ...traits } });

async function report(svc: Built, key: string, query = RANGE) {
  const res = await svc.app.inject({ method: 'GET', url: `/v1/reports/workflows/${key}?${query}`, headers: auth });
  assert.equal(res.statusCode, 200, res.body);
  return res.json() as {
    workflow: string;
    runs: { entered: number; active: number; converted: number; exited: number; completed: number; conversionRate: number | null };
    steps: { stepId: string; type: string | null; reached: number; sent: number; clicked: number }[];
    kpi: Record<string, unknown>;
    control: string | null;
    variants: { variant: string; entered: number; converted: number; conversionRate: number | null; vsControl: { differencePoints: number; ci95: [number, number]; pValue: number } | null }[];
    holdout: { entered: number; converted: number; conversionRate: number | null; treated: { entered: number; converted: number; conversionRate: number | null }; liftPoints: number | null; ci95: [number, number] | null; pValue: number | null };
    definition: string;
  };
}

const close = (actual: number | null | undefined, expected: number, what: string, tolerance = 1e-9) =>
  assert.ok(actual !== null && actual !== undefined && Math.abs(actual - expected) <= tolerance, `${what}: ${actual} vs ${expected}`);

async function clickMessage(svc: Built, userId: string, stepId: string) {
  const [m] = await svc.sql<{ id: string }[]>`
    select m.id from messages m join contacts c on c.id = m.contact_id
    where c.user_id = ${userId} and m.step_id = ${stepId} and m.sent_at is not null`;
  assert.ok(m, `no ${stepId} email for ${userId}`);
  const res = await svc.app.inject({ method: 'GET', url: `/r/${signToken(svc.secret, 'click', { m: m.id, u: 'https://app.example.test/' })}` });
  assert.equal(res.statusCode, 302);
}

test('stats: the two-proportion z-test and interval for a known 2x2 table; the median', () => {
  // 45/100 vs 30/100: z = 2.19089, two-sided p = 0.0284597 (scipy), 95% CI [1.743, 28.257] points
  const c = compareProportions(45, 100, 30, 100)!;
  close(c.differencePoints, 15, 'difference');
  close(c.z!, 2.1908902300206647, 'z', 1e-12);
  close(c.pValue, 0.02845973691631055, 'p-value', 1e-12);
  close(c.ci95[0], 1.7430493307564827, 'ci low', 1e-9);
  close(c.ci95[1], 28.25695066924352, 'ci high', 1e-9);
  close(normalSurvival(1.959963984540054), 0.025, 'P(Z > 1.96)', 1e-15);
  assert.equal(compareProportions(0, 0, 1, 2), null);
  assert.equal(compareProportions(0, 3, 0, 4)!.pValue, 1, 'no conversions at all: no evidence of a difference');
  assert.deepEqual(compareProportions(1, 5, 3, 4)!.ci95[0], -100, 'the interval is clamped to [-100, 100] points');
  assert.equal(median([]), null);
  assert.equal(median([30, 2, 10]), 10);
  assert.equal(median([1, 4, 2, 3]), 2.5);
});

test('activation and onboarding: time to value, completion, the step funnel and split statistics', async (t) => {
  const { svc, clock } = await setup(t);
  const onboardingSplit = builtinDefinition('onboarding')!.steps[0] as Extract<Step, { type: 'split' }>;
  assert.equal(onboardingSplit.id, 'subject_test');

  // Contacts first, so that their ids (and so their split buckets) are known.
  for (const u of ['a1', 'a2', 'a3', 'a4']) await identify(svc, u);
  for (let i = 1; i <= 40; i++) await identify(svc, `o${String(i).padStart(2, '0')}`);
  await svc.drain();
  const contacts = await svc.sql<{ user_id: string; id: number }[]>`select user_id, id from contacts where user_id like 'o%' order by user_id`;
  // Split assignment hashes who the contact is (its split key: here the user id), not its row id.
  const keys = await Promise.all(contacts.map(async (c) => (await loadContact(svc.sql, c.id))!.split_key));
  const bucket = new Map(contacts.map((c, i) => [c.user_id, assignVariant('onboarding', onboardingSplit, keys[i]!)]));
  const pick = (variant: string, n: number) => [...bucket].filter(([, v]) => v === variant).slice(0, n).map(([u]) => u);
  const A = pick('A', 4);
  const B = pick('B', 5);
  const H = pick('holdout', 2);
  assert.deepEqual([A.length, B.length, H.length], [4, 5, 2]);

  // T: four sign-ups (activation), eleven trials (onboarding).
  for (const u of ['a1', 'a2', 'a3', 'a4']) await track(svc, u, 'Signed Up');
  for (const u of [...A, ...B, ...H]) await track(svc, u, 'Trial Started');
  await svc.drain();
  // Time to value: 2 h, 10 h and 30 h (after the day-1 email); a4 never creates a project.
  const step = async (ms: number, fn?: () => Promise<void>) => {
    clock.set(at(ms));
    if (fn) await fn();
    await svc.drain();
  };
  await step(2 * HOUR, () => track(svc, 'a1', 'Project Created'));
  await step(10 * HOUR, () => track(svc, 'a2', 'Project Created'));
  await step(DAY); // day-1 emails: activation (a3, a4) and the onboarding nudge (the 9 treated trials)
  await step(DAY + HOUR, async () => {
    await clickMessage(svc, A[0]!, 'day1_nudge');
    await clickMessage(svc, B[0]!, 'day1_nudge');
  });
  await step(30 * HOUR, () => track(svc, 'a3', 'Project Created'));
  // Onboarding goal: 3 of A and 1 of B invite a teammate; nobody in the hold-out does.
  await step(36 * HOUR, async () => {
    for (const u of [...A.slice(0, 3), B[0]!]) await track(svc, u, 'Teammate Invited');
  });
  await step(3 * DAY); // the 5 treated trials that did not convert time out: get_started
  await step(3 * DAY + HOUR);

  const act = await report(svc, 'activation');
  assert.deepEqual(act.runs, { entered: 4, active: 1, converted: 3, exited: 0, completed: 0, conversionRate: 0.75 });
  assert.equal(act.kpi.activationRate, 0.75);
  close(act.kpi.medianHoursToValue as number, 10, 'median hours to value (2, 10, 30)');
  assert.deepEqual(act.variants, []);
  assert.equal(act.control, null);

  const onb = await report(svc, 'onboarding');
  assert.deepEqual(onb.runs, { entered: 11, active: 7, converted: 4, exited: 0, completed: 0, conversionRate: 4 / 11 });
  assert.equal(onb.kpi.completionRate, 4 / 11);
  assert.deepEqual(
    onb.steps.map((s) => [s.stepId, s.reached, s.sent, s.clicked]),
    [
      ['subject_test', 11, 0, 0],
      ['day1_wait', 9, 0, 0],
      ['day1_nudge', 9, 9, 2],
      ['wait_invite', 9, 0, 0],
      ['progress', 5, 0, 0],
      ['invite_to_project', 0, 0, 0],
      ['get_started', 5, 5, 0],
    ],
  );
  // Split: A (control) 3/4 = 75%, B 1/5 = 20%: B - A = -55 points, z = -1.65, p = 0.0989429 (scipy).
  assert.equal(onb.control, 'A');
  assert.deepEqual(
    onb.variants.map((v) => [v.variant, v.entered, v.converted, v.conversionRate]),
    [
      ['A', 4, 3, 0.75],
      ['B', 5, 1, 0.2],
    ],
  );
  assert.equal(onb.variants[0]!.vsControl, null);
  const b = onb.variants[1]!.vsControl!;
  close(b.differencePoints, -55, 'B vs A');
  close(b.pValue, 0.09894293606729615, 'B vs A p-value', 1e-12);
  close(b.ci95[0], -100, 'B vs A ci low (clamped from -110.04)');
  close(b.ci95[1], 0.04498746318769564, 'B vs A ci high', 1e-9);
  // Hold-out: treated 4/9 against 0/2: +44.44 points, z = 1.18187, p = 0.2372558 (scipy).
  assert.equal(onb.holdout.entered, 2);
  assert.equal(onb.holdout.converted, 0);
  assert.deepEqual(onb.holdout.treated, { entered: 9, converted: 4, conversionRate: 4 / 9 });
  close(onb.holdout.liftPoints, 400 / 9, 'lift');
  close(onb.holdout.pValue, 0.23725582662349487, 'hold-out p-value', 1e-12);
  close(onb.holdout.ci95![0], 11.980646645311793, 'hold-out ci low', 1e-9);
  close(onb.holdout.ci95![1], 76.90824224357709, 'hold-out ci high', 1e-9);
  assert.match(onb.definition, /two-proportion z-test/);

  // Outside the window: nothing.
  const empty = await report(svc, 'onboarding', 'from=2026-04-01&to=2026-05-01');
  assert.deepEqual(empty.runs, { entered: 0, active: 0, converted: 0, exited: 0, completed: 0, conversionRate: null });
});

test('win-back: reactivation rate and MRR reactivated per currency', async (t) => {
  const { svc, clock } = await setup(t);
  const cancel = (id: string, currency: string) =>
    deliver(svc.app, envelope('customer.subscription.deleted', subscription({ id: `sub_old_${id}`, customer: `cus_${id}`, status: 'canceled', currency, cancellation_reason: 'cancellation_requested', feedback: 'too_expensive' }), { created: T }));
  for (const [id, cur] of [['w1', 'usd'], ['w2', 'eur'], ['w3', 'usd']] as const) {
    await deliver(svc.app, envelope('customer.created', { id: `cus_${id}`, object: 'customer', email: `${id}@example.test`, name: id }, { created: at(-DAY) }));
    await cancel(id, cur);
  }
  await svc.drain();
  clock.set(at(3 * DAY));
  await deliver(svc.app, envelope('customer.subscription.created', subscription({ id: 'sub_new_w1', customer: 'cus_w1', currency: 'usd', unit_amount: 4900 }), { created: at(3 * DAY) }));
  await svc.drain();
  clock.set(at(4 * DAY));
  await deliver(svc.app, envelope('customer.subscription.created', subscription({ id: 'sub_new_w2', customer: 'cus_w2', currency: 'eur', unit_amount: 29000, interval: 'year' }), { created: at(4 * DAY) }));
  await svc.drain();

  const r = await report(svc, 'win-back');
  assert.equal(r.runs.entered, 3);
  assert.equal(r.runs.converted, 2);
  assert.equal(r.kpi.reactivationRate, 2 / 3);
  // eur: 290.00 a year is 24.17 a month (2417 cents); usd: 49.00 a month.
  assert.deepEqual(r.kpi.mrrReactivated, [
    { currency: 'eur', amount: 2417, count: 1 },
    { currency: 'usd', amount: 4900, count: 1 },
  ]);
});

test('expansion: upgrade conversion and MRR gained per currency (account-level runs)', async (t) => {
  const { svc, clock } = await setup(t);
  const accounts = [
    { group: 'acme', customer: 'cus_acme', currency: 'usd', from: 4900, to: 9900 },
    { group: 'beta', customer: 'cus_beta', currency: 'eur', from: 2900, to: 5800 },
    { group: 'gamma', customer: 'cus_gamma', currency: 'usd', from: 4900, to: null },
  ];
  for (const a of accounts) {
    await identify(svc, `admin_${a.group}`, { role: 'admin' });
    await post(svc, '/v1/group', { userId: `admin_${a.group}`, groupId: a.group, traits: { name: a.group, stripeCustomerId: a.customer } });
    await deliver(svc.app, envelope('customer.created', { id: a.customer, object: 'customer', email: `billing@${a.group}.test`, name: a.group }, { created: at(-2 * DAY) }));
    await deliver(svc.app, envelope('customer.subscription.created', subscription({ id: `sub_${a.group}`, customer: a.customer, currency: a.currency, unit_amount: a.from }), { created: at(-DAY) }));
  }
  await svc.drain();
  for (const a of accounts) {
    for (let i = 0; i < 3; i++) await track(svc, `admin_${a.group}`, 'Paywall Hit', { properties: { feature: 'sso' }, context: { groupId: a.group } });
  }
  await svc.drain();
  clock.set(at(2 * DAY));
  for (const a of accounts.filter((x) => x.to !== null)) {
    await deliver(svc.app, envelope('customer.subscription.updated', subscription({ id: `sub_${a.group}`, customer: a.customer, currency: a.currency, unit_amount: a.to! }), { created: at(2 * DAY), previous: { items: {} } }));
  }
  await svc.drain();

  const r = await report(svc, 'expansion');
  assert.equal(r.runs.entered, 3);
  assert.equal(r.runs.converted, 2);
  assert.equal(r.kpi.upgradeConversionRate, 2 / 3);
  assert.deepEqual(r.kpi.mrrGained, [
    { currency: 'eur', amount: 2900, count: 1 },
    { currency: 'usd', amount: 5000, count: 1 },
  ]);
});

test('billing-recovery: recovered revenue per currency and involuntary churn; 404 and 400', async (t) => {
  const { svc, clock } = await setup(t);
  const cases = [
    { id: 'r1', currency: 'usd', amount: 4900 },
    { id: 'r2', currency: 'eur', amount: 2900 },
    { id: 'r3', currency: 'usd', amount: 1000 },
    { id: 'r4', currency: 'usd', amount: 2000 },
  ];
  const inv = (c: (typeof cases)[number], fields: Parameters<typeof invoice>[0] = {}) =>
    invoice({ id: `in_${c.id}`, customer: `cus_${c.id}`, customer_email: `${c.id}@example.test`, subscription: `sub_${c.id}`, currency: c.currency, amount_due: c.amount, ...fields });
  for (const c of cases) await deliver(svc.app, envelope('invoice.payment_failed', inv(c), { created: T }));
  await svc.drain();
  clock.set(at(2 * DAY));
  for (const c of cases.slice(0, 2)) {
    await deliver(svc.app, envelope('invoice.paid', inv(c, { status: 'paid', attempt_count: 2, paid_at: Math.floor(at(2 * DAY).getTime() / 1000) }), { created: at(2 * DAY) }));
  }
  await deliver(svc.app, envelope('customer.subscription.deleted', subscription({ id: 'sub_r3', customer: 'cus_r3', status: 'canceled', cancellation_reason: 'payment_failed' }), { created: at(2 * DAY) }));
  await svc.drain();

  const r = await report(svc, 'billing-recovery');
  assert.deepEqual(r.runs, { entered: 4, active: 1, converted: 2, exited: 1, completed: 0, conversionRate: 0.5 });
  assert.deepEqual(r.kpi.recoveredRevenue, [
    { currency: 'eur', amount: 2900, count: 1 },
    { currency: 'usd', amount: 4900, count: 1 },
  ]);
  assert.deepEqual(r.kpi.involuntaryChurn, { churned: 1, atRisk: 4, rate: 0.25 });
  assert.ok(r.steps.some((s) => s.stepId === 'soft_1' && s.reached === 4 && s.sent === 4));

  const missing = await svc.app.inject({ method: 'GET', url: `/v1/reports/workflows/nope?${RANGE}`, headers: auth });
  assert.equal(missing.statusCode, 404);
  assert.equal(missing.json().error, 'workflow_not_found');
  for (const [q, message] of [
    ['', /"from" is required/],
    ['from=2026-03-01', /"to" is required/],
    ['from=2026-03-01&to=2026-13-01', /"to" is not a valid date/],
    ['from=2026-03-08&to=2026-03-01', /"from" .* must be before "to"/],
    ['from=yesterday&to=2026-03-01', /"from" must be a date as YYYY-MM-DD/],
  ] as const) {
    const res = await svc.app.inject({ method: 'GET', url: `/v1/reports/workflows/billing-recovery?${q}`, headers: auth });
    assert.equal(res.statusCode, 400, q);
    assert.match(res.json().message, message);
  }
  assert.equal((await svc.app.inject({ method: 'GET', url: `/v1/reports/workflows/billing-recovery?${RANGE}` })).statusCode, 401);
});
