// The recovery report end to end on real Postgres, through HTTP: a three-currency scenario (usd,
// eur and zero-decimal jpy) with recovered, lost (written off; subscription canceled or unpaid),
// open and voided cases, every attribution bucket, a late recovery and a hold-out group (a
// published billing-recovery version whose first step is a split with a hold-out). The report
// must equal totals computed here, independently, from the scenario's raw events; the same
// scenario delivered out of order and with duplicates to a second service must give the same
// report and ledger; the CSV ledger must reconcile with the JSON totals.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type { ManualClock } from '../src/clock.ts';
import { signToken } from '../src/email/tokens.ts';
import { refreshRecoveryCases } from '../src/reports/recovery-cases.ts';
import { median } from '../src/reports/stats.ts';
import { builtinDefinition } from '../src/workflows/builtin/index.ts';
import { assignVariant } from '../src/workflows/interpreter.ts';
import { loadContact } from '../src/workflows/context-loader.ts';
import type { Step, WorkflowDefinition } from '../src/workflows/types.ts';
import { ADMIN_TOKEN, build, type Built } from './helpers/build.ts';
import { deliver, envelope, invoice, subscription } from './helpers/stripe.ts';

const D0 = Date.parse('2026-02-23T00:00:00Z'); // a Monday; day 6 is March 1st
const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const at = (day: number, hours = 0) => new Date(D0 + day * DAY + hours * HOUR);
const unix = (d: Date) => Math.floor(d.getTime() / 1000);
const LAST_DAY = 12;
const DUMP_DAY = 14; // the out-of-order service receives the delayed events on this day
const auth = { authorization: `Bearer ${ADMIN_TOKEN}` };

type Envelope = ReturnType<typeof envelope>;
type Group = 'treated' | 'holdout' | 'any';

// ---------------------------------------------------------------------------------------------
// The hold-out version of billing-recovery: a split first (treated: the usual sequence; hold-out:
// nothing), then the built-in steps.

const SPLIT: Extract<Step, { type: 'split' }> = {
  id: 'recovery_holdout',
  type: 'split',
  variants: [{ key: 'treated', weight: 1, steps: [] }],
  holdout: { weight: 1 },
};

function holdoutDefinition(): WorkflowDefinition {
  const base = JSON.parse(JSON.stringify(builtinDefinition('billing-recovery'))) as WorkflowDefinition;
  return { ...base, steps: [SPLIT, ...base.steps] };
}

// ---------------------------------------------------------------------------------------------
// The scenario. Each case names the group it needs (cases recovered by an email must be treated;
// the hold-out receives none); customers are assigned to cases by their split bucket.

interface CaseSpec {
  key: string;
  currency: string;
  amount: number;
  group: Group;
  /** delivered late (on DUMP_DAY) to the out-of-order service: only where emails cannot matter */
  delayable: boolean;
  subscription?: boolean;
  billingReason?: string;
  /** what happens, in days/hours from D0 */
  events: (c: Ctx) => Timed[];
  clicks?: { day: number; hours: number }[];
}

interface Ctx {
  invoice: string;
  customer: string;
  subscription: string | null;
  currency: string;
  amount: number;
  billingReason: string;
  email: string;
}

interface Timed {
  day: number;
  hours: number;
  env: Envelope;
}

function inv(c: Ctx, fields: Parameters<typeof invoice>[0] = {}) {
  return invoice({
    id: c.invoice,
    customer: c.customer,
    customer_email: c.email,
    subscription: c.subscription,
    currency: c.currency,
    amount_due: c.amount,
    billing_reason: c.billingReason,
    next_payment_attempt: null,
    ...fields,
  });
}

const fail = (day: number, hours: number, attempt = 1, type = 'invoice.payment_failed') => (c: Ctx): Timed => ({
  day,
  hours,
  env: envelope(type, inv(c, { attempt_count: attempt }), { created: at(day, hours) }),
});
const paid = (day: number, hours: number, attempt = 2) => (c: Ctx): Timed => ({
  day,
  hours,
  env: envelope('invoice.paid', inv(c, { status: 'paid', attempt_count: attempt, paid_at: unix(at(day, hours)) }), { created: at(day, hours) }),
});
const voided = (day: number, hours: number) => (c: Ctx): Timed => ({
  day,
  hours,
  env: envelope('invoice.voided', inv(c, { status: 'void' }), { created: at(day, hours) }),
});
const uncollectible = (day: number, hours: number) => (c: Ctx): Timed => ({
  day,
  hours,
  env: envelope('invoice.marked_uncollectible', inv(c, { status: 'uncollectible' }), { created: at(day, hours) }),
});
const pmUpdated = (day: number, hours: number) => (c: Ctx): Timed => ({
  day,
  hours,
  env: envelope('payment_method.attached', { id: `pm_${c.invoice}`, object: 'payment_method', customer: c.customer, type: 'card', card: { brand: 'visa', exp_month: 12, exp_year: 2031 } }, { created: at(day, hours) }),
});
const cardUpdater = (day: number, hours: number) => (c: Ctx): Timed => ({
  day,
  hours,
  env: envelope('payment_method.automatically_updated', { id: `pm_au_${c.invoice}`, object: 'payment_method', customer: c.customer, type: 'card', card: { brand: 'mastercard', exp_month: 3, exp_year: 2032 } }, { created: at(day, hours) }),
});
const subCanceled = (day: number, hours: number) => (c: Ctx): Timed => ({
  day,
  hours,
  env: envelope('customer.subscription.deleted', subscription({ id: c.subscription!, customer: c.customer, status: 'canceled', cancellation_reason: 'payment_failed', currency: c.currency, unit_amount: c.amount }), { created: at(day, hours) }),
});
const subUnpaid = (day: number, hours: number) => (c: Ctx): Timed => ({
  day,
  hours,
  env: envelope('customer.subscription.updated', subscription({ id: c.subscription!, customer: c.customer, status: 'unpaid', currency: c.currency, unit_amount: c.amount }), { created: at(day, hours), previous: { status: 'past_due' } }),
});
const hardCharge = (day: number, hours: number) => (c: Ctx): Timed => ({
  day,
  hours,
  env: envelope('charge.failed', { id: `ch_${c.invoice}`, object: 'charge', customer: c.customer, amount: c.amount, currency: c.currency, status: 'failed', failure_code: 'card_declined', outcome: { reason: 'lost_card' } }, { created: at(day, hours) }),
});
const softCharge = (day: number, hours: number) => (c: Ctx): Timed => ({
  day,
  hours,
  env: envelope('charge.failed', { id: `ch_${c.invoice}`, object: 'charge', customer: c.customer, amount: c.amount, currency: c.currency, status: 'failed', failure_code: 'card_declined', outcome: { reason: 'insufficient_funds' } }, { created: at(day, hours) }),
});

const CASES: CaseSpec[] = [
  // usd (cents)
  { key: 'u_pm', currency: 'usd', amount: 4900, group: 'any', delayable: true, events: (c) => [fail(0, 1)(c), pmUpdated(1, 2)(c), paid(2, 3)(c)] },
  { key: 'u_click', currency: 'usd', amount: 9900, group: 'treated', delayable: false, events: (c) => [fail(0, 2)(c), paid(2, 4)(c)], clicks: [{ day: 1, hours: 23.5 }] },
  { key: 'u_email', currency: 'usd', amount: 2500, group: 'treated', delayable: false, events: (c) => [softCharge(0, 2.9)(c), fail(0, 3)(c), paid(1, 5)(c)] },
  { key: 'u_card', currency: 'usd', amount: 3000, group: 'holdout', delayable: true, events: (c) => [fail(0, 4)(c), cardUpdater(1, 2)(c), paid(1, 6)(c)] },
  { key: 'u_retry', currency: 'usd', amount: 4000, group: 'holdout', delayable: true, events: (c) => [fail(0, 5)(c), fail(3, 5, 2)(c), paid(5, 5, 3)(c)] },
  { key: 'u_uncoll', currency: 'usd', amount: 7000, group: 'any', delayable: true, events: (c) => [fail(0, 6)(c), fail(3, 6, 2)(c), uncollectible(10, 1)(c)] },
  { key: 'u_cancel', currency: 'usd', amount: 5000, group: 'any', delayable: true, subscription: true, events: (c) => [fail(1, 1)(c), subCanceled(9, 2)(c)] },
  { key: 'u_open', currency: 'usd', amount: 1500, group: 'any', delayable: true, events: (c) => [fail(7, 3)(c)] },
  { key: 'u_void', currency: 'usd', amount: 2000, group: 'any', delayable: true, events: (c) => [fail(2, 1)(c), voided(4, 2)(c)] },
  { key: 'u_late', currency: 'usd', amount: 6000, group: 'holdout', delayable: true, events: (c) => [fail(0, 7)(c), uncollectible(5, 3)(c), paid(12, 2, 4)(c)] },
  { key: 'u_new', currency: 'usd', amount: 9000, group: 'any', delayable: true, billingReason: 'subscription_create', events: (c) => [fail(0, 8)(c)] },
  { key: 'u_hard', currency: 'usd', amount: 3500, group: 'any', delayable: true, events: (c) => [hardCharge(7, 4.9)(c), fail(7, 5)(c)] },
  {
    key: 'u_sca',
    currency: 'usd',
    amount: 4500,
    group: 'treated',
    delayable: false,
    // Stripe sends both for one attempt: one case, one attempt, decline class sca.
    events: (c) => [fail(6, 1, 1, 'invoice.payment_action_required')(c), fail(6, 1)(c), paid(7, 3)(c)],
  },
  { key: 'u_hold_lost', currency: 'usd', amount: 2200, group: 'holdout', delayable: true, events: (c) => [fail(1, 3)(c), uncollectible(11, 1)(c)] },
  // eur (cents)
  { key: 'e_pm', currency: 'eur', amount: 3900, group: 'any', delayable: true, events: (c) => [fail(1, 4)(c), pmUpdated(2, 1)(c), paid(3, 1)(c)] },
  { key: 'e_unpaid', currency: 'eur', amount: 2900, group: 'any', delayable: true, subscription: true, events: (c) => [fail(2, 2)(c), subUnpaid(9, 1)(c)] },
  { key: 'e_open', currency: 'eur', amount: 1900, group: 'holdout', delayable: true, events: (c) => [fail(8, 2)(c)] },
  { key: 'e_email', currency: 'eur', amount: 5900, group: 'treated', delayable: false, events: (c) => [fail(2, 3)(c), paid(4, 6)(c)] },
  // jpy (zero-decimal: amounts are yen)
  { key: 'j_click', currency: 'jpy', amount: 5000, group: 'treated', delayable: false, events: (c) => [fail(7, 2)(c), paid(9, 1)(c)], clicks: [{ day: 8, hours: 23.5 }] },
  { key: 'j_uncoll', currency: 'jpy', amount: 12000, group: 'any', delayable: true, events: (c) => [fail(6, 2)(c), uncollectible(11, 2)(c)] },
  { key: 'j_void', currency: 'jpy', amount: 3000, group: 'holdout', delayable: true, events: (c) => [fail(7, 3)(c), voided(9, 2)(c)] },
  { key: 'j_retry', currency: 'jpy', amount: 8000, group: 'holdout', delayable: true, events: (c) => [fail(6, 3)(c), paid(8, 4)(c)] },
  { key: 'j_late', currency: 'jpy', amount: 7000, group: 'holdout', delayable: true, subscription: true, events: (c) => [fail(6, 4)(c), subCanceled(8, 1)(c), paid(10, 3, 3)(c)] },
  { key: 'j_email', currency: 'jpy', amount: 2000, group: 'treated', delayable: false, events: (c) => [fail(6, 5)(c), paid(8, 6)(c)] },
];

interface Scenario {
  customers: Envelope[];
  ctx: Map<string, Ctx>;
  events: (Timed & { caseKey: string; delayable: boolean })[];
  clicks: { caseKey: string; day: number; hours: number }[];
}

const POOL = 64;

function customerEnvelopes(): Envelope[] {
  const customers: Envelope[] = [];
  for (let i = 1; i <= POOL; i++) {
    const id = `cus_r${String(i).padStart(2, '0')}`;
    customers.push(envelope('customer.created', { id, object: 'customer', email: `billing+${i}@example.test`, name: `Customer ${i}` }, { created: at(-7, i / 60) }));
  }
  return customers;
}

/** Builds the scenario once (the same envelopes, ids included, go to both services). */
function buildScenario(customers: Envelope[], groupOfCustomer: Map<string, 'treated' | 'holdout'>): Scenario {
  const used = new Set<string>();
  const ctx = new Map<string, Ctx>();
  const events: Scenario['events'] = [];
  const clicks: Scenario['clicks'] = [];
  for (const spec of CASES) {
    const pick = customers
      .map((e) => (e.data.object as { id: string }).id)
      .find((id) => !used.has(id) && groupOfCustomer.has(id) && (spec.group === 'any' || groupOfCustomer.get(id) === spec.group));
    assert.ok(pick, `no customer left in group ${spec.group} for ${spec.key}`);
    used.add(pick);
    const n = Number(pick.slice(5));
    const c: Ctx = {
      invoice: `in_${spec.key}`,
      customer: pick,
      subscription: spec.subscription ? `sub_${spec.key}` : null,
      currency: spec.currency,
      amount: spec.amount,
      billingReason: spec.billingReason ?? 'subscription_cycle',
      email: `billing+${n}@example.test`,
    };
    ctx.set(spec.key, c);
    for (const e of spec.events(c)) events.push({ ...e, caseKey: spec.key, delayable: spec.delayable });
    for (const click of spec.clicks ?? []) clicks.push({ caseKey: spec.key, ...click });
  }
  events.sort((a, b) => unix(new Date(a.env.created * 1000)) - unix(new Date(b.env.created * 1000)));
  return { customers, ctx, events, clicks };
}

// ---------------------------------------------------------------------------------------------
// Driving a service

async function startService(t: TestContext): Promise<{ svc: Built; clock: ManualClock }> {
  const svc = await build(t, { clock: 'manual', env: { QUIET_HOURS: 'off' } });
  const clock = svc.clock as ManualClock;
  clock.set(at(-8));
  const res = await svc.app.inject({ method: 'PUT', url: '/v1/workflows/billing-recovery', headers: auth, payload: holdoutDefinition() });
  assert.equal(res.statusCode, 200, res.body);
  return { svc, clock };
}

async function createCustomers(svc: Built, clock: ManualClock, customers: Envelope[]): Promise<Map<string, 'treated' | 'holdout'>> {
  clock.set(at(-7, 1));
  for (const e of customers) assert.equal((await deliver(svc.app, e)).statusCode, 200);
  await svc.drain();
  const rows = await svc.sql<{ id: string; contact_id: number }[]>`select id, contact_id from customers order by id`;
  assert.equal(rows.length, POOL);
  // Split assignment hashes who the contact is (its split key: here the Stripe customer), not its row id.
  const keys = await Promise.all(rows.map(async (r) => (await loadContact(svc.sql, r.contact_id))!.split_key));
  return new Map(rows.map((r, i) => [r.id, assignVariant('billing-recovery', SPLIT, keys[i]!) === 'holdout' ? 'holdout' : 'treated']));
}

async function click(svc: Built, invoiceId: string): Promise<void> {
  const [m] = await svc.sql<{ id: string }[]>`
    select m.id from messages m join workflow_runs r on r.id = m.run_id
    where r.workflow_key = 'billing-recovery' and r.run_key = ${invoiceId} and m.sent_at is not null
    order by m.sent_at, m.id limit 1`;
  assert.ok(m, `no sent email to click for ${invoiceId}`);
  const token = signToken(svc.secret, 'click', { m: m.id, u: `https://invoice.stripe.com/i/${invoiceId}` });
  const res = await svc.app.inject({ method: 'GET', url: `/r/${token}` });
  assert.equal(res.statusCode, 302);
}

async function getReport(svc: Built, query: string) {
  const res = await svc.app.inject({ method: 'GET', url: `/v1/reports/recovery?${query}`, headers: auth });
  assert.equal(res.statusCode, 200, res.body);
  return res.json() as Report;
}

/**
 * Plays the scenario day by day (clock at 23:00 for Stripe deliveries, 23:30 for clicks).
 * In order: each day's events oldest first, one drain per day. Out of order: each day's events
 * newest first, every third one delivered twice, a drain after every delivery (so each is
 * projected in that order), and the delayable cases' events all held back to DUMP_DAY.
 */
async function play(svc: Built, clock: ManualClock, s: Scenario, mode: 'in-order' | 'shuffled', onDay?: (day: number) => Promise<void>) {
  for (let day = 0; day <= DUMP_DAY; day++) {
    clock.set(at(day, 23));
    let batch = s.events.filter((e) => (mode === 'in-order' || !e.delayable ? e.day === day : day === DUMP_DAY));
    if (mode === 'in-order') {
      for (const e of batch) assert.equal((await deliver(svc.app, e.env)).statusCode, 200);
      await svc.drain();
    } else {
      batch = [...batch].reverse();
      for (const [i, e] of batch.entries()) {
        assert.equal((await deliver(svc.app, e.env)).statusCode, 200);
        await svc.drain();
        if (i % 3 === 0) {
          assert.equal((await deliver(svc.app, e.env)).statusCode, 200); // a redelivery
          await svc.drain();
        }
      }
      await svc.drain();
    }
    clock.set(at(day, 23.5));
    for (const c of s.clicks.filter((c) => c.day === day)) await click(svc, s.ctx.get(c.caseKey)!.invoice);
    await svc.drain();
    if (onDay) await onDay(day);
  }
}

// ---------------------------------------------------------------------------------------------
// The independent model: the ledger and the report computed from the raw scenario.

interface ModelCase {
  invoice: string;
  customer: string;
  currency: string;
  amountDue: number;
  amountRecovered: number;
  firstFailedAt: Date;
  recoveredAt: Date | null;
  state: 'open' | 'recovered' | 'lost' | 'voided';
  late: boolean;
  declineClass: string;
  attempts: number;
  attribution: string | null;
  holdout: boolean;
}

type Obj = Record<string, unknown>;

function model(s: Scenario, sentAt: Map<string, Date[]>, clickAt: Map<string, Date[]>, holdoutOf: Map<string, boolean>): ModelCase[] {
  const all = s.events.map((e) => ({ type: e.env.type, created: new Date(e.env.created * 1000), obj: e.env.data.object as Obj, prev: (e.env.data as { previous_attributes?: Obj }).previous_attributes }));
  const out: ModelCase[] = [];
  for (const c of s.ctx.values()) {
    const mine = all.filter((e) => e.obj.object === 'invoice' && e.obj.id === c.invoice);
    const failures = mine.filter((e) => e.type === 'invoice.payment_failed' || e.type === 'invoice.payment_action_required').sort((a, b) => +a.created - +b.created);
    if (failures.length === 0 || failures[0]!.obj.billing_reason === 'subscription_create') continue;
    const first = failures[0]!;
    const firstAt = first.created;
    const paidEvent = mine.find((e) => e.type === 'invoice.paid');
    const paidAt = paidEvent ? new Date(((paidEvent.obj.status_transitions as Obj).paid_at as number) * 1000) : null;
    const voidedAt = mine.find((e) => e.type === 'invoice.voided')?.created ?? null;
    const writtenOff = mine.find((e) => e.type === 'invoice.marked_uncollectible')?.created ?? null;
    const subEnd = c.subscription
      ? (all.find(
          (e) =>
            e.obj.object === 'subscription' &&
            e.obj.id === c.subscription &&
            (e.type === 'customer.subscription.deleted' || (e.type === 'customer.subscription.updated' && e.obj.status === 'unpaid')),
        )?.created ?? null)
      : null;
    const lostAt = [writtenOff, subEnd].filter((d): d is Date => d !== null).sort((a, b) => +a - +b)[0] ?? null;
    const state = paidAt ? 'recovered' : voidedAt ? 'voided' : lostAt ? 'lost' : 'open';

    // decline: sca if authentication was required; else the customer's charge failures within 15 minutes
    const charges = all.filter((e) => e.type === 'charge.failed' && e.obj.customer === c.customer && failures.some((f) => Math.abs(+f.created - +e.created) <= 15 * 60_000));
    const declineClass = failures.some((f) => f.type === 'invoice.payment_action_required')
      ? 'sca'
      : charges.some((e) => (e.obj.outcome as Obj).reason === 'lost_card')
        ? 'hard'
        : charges.length > 0
          ? 'soft'
          : 'unknown';

    let attribution: string | null = null;
    if (paidAt) {
      const inWindow = (d: Date) => +d >= +firstAt && +d < +paidAt;
      const customerFact = (type: string) => all.some((e) => e.type === type && e.obj.customer === c.customer && inWindow(e.created));
      if (customerFact('payment_method.attached')) attribution = 'payment_method_updated';
      else if ((clickAt.get(c.invoice) ?? []).some(inWindow)) attribution = 'clicked';
      else if ((sentAt.get(c.invoice) ?? []).some(inWindow)) attribution = 'emailed';
      else if (customerFact('payment_method.automatically_updated')) attribution = 'card_updater';
      else attribution = 'stripe_retry_only';
    }
    out.push({
      invoice: c.invoice,
      customer: c.customer,
      currency: c.currency,
      amountDue: first.obj.amount_due as number,
      amountRecovered: paidEvent ? (paidEvent.obj.amount_paid as number) : 0,
      firstFailedAt: firstAt,
      recoveredAt: paidAt,
      state,
      late: paidAt !== null && lostAt !== null && +lostAt < +paidAt,
      declineClass,
      attempts: Math.max(...failures.map((f) => f.obj.attempt_count as number)),
      attribution,
      holdout: holdoutOf.get(c.invoice) ?? false,
    });
  }
  return out.sort((a, b) => a.currency.localeCompare(b.currency) || +a.firstFailedAt - +b.firstFailedAt || a.invoice.localeCompare(b.invoice));
}

interface CA {
  count: number;
  amount: number;
}
interface Report {
  from: string;
  to: string;
  currency: string | null;
  currencies: {
    currency: string;
    failed: CA;
    recovered: CA;
    lost: CA;
    open: CA;
    voided: CA;
    recoveryRate: number | null;
    medianHoursToRecover: number | null;
    lateRecovered: CA;
    byAttribution: Record<string, CA>;
    holdout: { cases: number; recoveryRate: number | null; liftPoints: number | null; ci95: [number, number] | null; treated: { cases: number; recoveryRate: number | null } };
  }[];
  monthly: { currency: string; month: string; cases: number; failedAmount: number; voidedAmount: number; recoveredAmount: number; recoveryRate: number | null }[];
  definition: string;
}

const sum = (cases: ModelCase[], f: (c: ModelCase) => number) => cases.reduce((s, c) => s + f(c), 0);
const ca = (cases: ModelCase[], f: (c: ModelCase) => number): CA => ({ count: cases.length, amount: sum(cases, f) });

function expectedTotals(cases: ModelCase[], currency: string) {
  const mine = cases.filter((c) => c.currency === currency);
  const of = (state: string) => mine.filter((c) => c.state === state);
  const rate = (group: ModelCase[]) => {
    const den = sum(group, (c) => c.amountDue) - sum(group.filter((c) => c.state === 'voided'), (c) => c.amountDue);
    return den > 0 ? sum(group, (c) => c.amountRecovered) / den : null;
  };
  const hours = of('recovered')
    .map((c) => (+c.recoveredAt! - +c.firstFailedAt) / HOUR)
    .sort((a, b) => a - b);
  const median = hours.length === 0 ? null : hours.length % 2 ? hours[(hours.length - 1) / 2]! : (hours[hours.length / 2 - 1]! + hours[hours.length / 2]!) / 2;
  const hold = mine.filter((c) => c.holdout);
  const treated = mine.filter((c) => !c.holdout); // every case of the scenario has a run
  // count-based difference of proportions (normal approximation), in points
  const p = (g: ModelCase[]) => {
    const n = g.filter((c) => c.state !== 'voided').length;
    return { n, p: g.filter((c) => c.state === 'recovered').length / n };
  };
  const t = p(treated);
  const h = p(hold);
  const se = Math.sqrt((t.p * (1 - t.p)) / t.n + (h.p * (1 - h.p)) / h.n);
  return {
    failed: ca(mine, (c) => c.amountDue),
    recovered: ca(of('recovered'), (c) => c.amountRecovered),
    lost: ca(of('lost'), (c) => c.amountDue),
    open: ca(of('open'), (c) => c.amountDue),
    voided: ca(of('voided'), (c) => c.amountDue),
    recoveryRate: rate(mine),
    medianHoursToRecover: median,
    lateRecovered: ca(of('recovered').filter((c) => c.late), (c) => c.amountRecovered),
    byAttribution: Object.fromEntries(
      ['paid_on_card_update', 'portal_update', 'payment_method_updated', 'clicked', 'emailed', 'card_updater', 'stripe_retry_only'].map((b) => [b, ca(of('recovered').filter((c) => c.attribution === b), (c) => c.amountRecovered)]),
    ),
    holdout: {
      cases: hold.length,
      recoveryRate: rate(hold),
      treatedRate: rate(treated),
      ci95: [Math.max(-100, (t.p - h.p - 1.96 * se) * 100), Math.min(100, (t.p - h.p + 1.96 * se) * 100)] as [number, number],
    },
  };
}

const close = (actual: number | null | undefined, expected: number, what: string, tolerance = 1e-9) =>
  assert.ok(actual !== null && actual !== undefined && Math.abs(actual - expected) <= tolerance, `${what}: ${actual} vs ${expected}`);

// ---------------------------------------------------------------------------------------------
// CSV

function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (quoted) {
      if (ch === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (ch === '"') quoted = false;
      else field += ch;
    } else if (ch === '"') quoted = true;
    else if (ch === ',') {
      row.push(field);
      field = '';
    } else if (ch === '\r' && text[i + 1] === '\n') {
      row.push(field);
      rows.push(row);
      row = [];
      field = '';
      i++;
    } else field += ch;
  }
  assert.equal(field + row.join(''), '', 'the CSV ends with CRLF');
  return rows;
}

async function ledgerRows(svc: Built) {
  return [...(await svc.sql`
    select invoice_id, customer_id, subscription_id, currency, amount_due, first_failed_at, decline_class, attempts, state,
           amount_recovered, recovered_at, lost_at, voided_at, late, attribution, holdout, run_id is not null as has_run, recovery_seconds
    from recovery_cases order by invoice_id`)];
}

async function rollups(svc: Built) {
  const daily = await svc.sql`
    select currency, day, state, attribution, holdout, has_run, late, cases, amount_due, amount_recovered
    from recovery_daily order by 1, 2, 3, 4, 5, 6, 7`;
  const hist = await svc.sql`select currency, day, bucket, cases from recovery_time_hist order by 1, 2, 3`;
  return { daily: [...daily], hist: [...hist] };
}

async function rollupsFromCases(svc: Built) {
  const { RECOVERY_TIME_BUCKETS } = await import('../src/reports/recovery-cases.ts');
  const daily = await svc.sql`
    select currency, date_trunc('day', first_failed_at, 'UTC') as day, state, coalesce(attribution, '') as attribution, holdout,
           run_id is not null as has_run, late, count(*)::int as cases, sum(amount_due)::bigint as amount_due, sum(amount_recovered)::bigint as amount_recovered
    from recovery_cases group by 1, 2, 3, 4, 5, 6, 7 order by 1, 2, 3, 4, 5, 6, 7`;
  const hist = await svc.sql`
    select currency, date_trunc('day', first_failed_at, 'UTC') as day, width_bucket(recovery_seconds, ${RECOVERY_TIME_BUCKETS}::bigint[]) as bucket, count(*)::int as cases
    from recovery_cases where state = 'recovered' group by 1, 2, 3 order by 1, 2, 3`;
  return { daily: [...daily], hist: [...hist] };
}

// ---------------------------------------------------------------------------------------------

test('recovery report: every state, attribution bucket, a late recovery and the hold-out, equal to an independent computation; order-independent; CSV reconciles', async (t) => {
  const a = await startService(t);
  const b = await startService(t);
  // The customers (and so their contacts and split buckets) are created in the same order on both.
  const customers = customerEnvelopes();
  const groupsA = await createCustomers(a.svc, a.clock, customers);
  const groupsB = await createCustomers(b.svc, b.clock, customers);
  // Split buckets hash the contact id; the scenario only uses customers bucketed alike on both.
  const groups = new Map([...groupsA].filter(([id, g]) => groupsB.get(id) === g));
  const s = buildScenario(customers, groups);

  // Service A: in order, with a report (and so an incremental refresh) after every day.
  const query = 'from=2026-02-01&to=2026-04-01';
  await play(a.svc, a.clock, s, 'in-order', async () => {
    await getReport(a.svc, query);
  });
  // Service B: out of order, with duplicates; one report at the end.
  await play(b.svc, b.clock, s, 'shuffled');

  // --- the independent model, from the raw scenario (plus the emails the engine sent)
  const sent = await a.svc.sql<{ run_key: string; sent_at: Date }[]>`
    select r.run_key, m.sent_at from messages m join workflow_runs r on r.id = m.run_id
    where r.workflow_key = 'billing-recovery' and m.sent_at is not null`;
  const sentAt = new Map<string, Date[]>();
  for (const r of sent) sentAt.set(r.run_key, [...(sentAt.get(r.run_key) ?? []), r.sent_at]);
  const clickAt = new Map(s.clicks.map((c) => [s.ctx.get(c.caseKey)!.invoice, [at(c.day, c.hours)]]));
  const runs = await a.svc.sql<{ run_key: string; holdout: boolean }[]>`select run_key, holdout from workflow_runs where workflow_key = 'billing-recovery'`;
  const holdoutOf = new Map(runs.map((r) => [r.run_key, r.holdout]));
  for (const spec of CASES) {
    if (spec.group !== 'any' && spec.billingReason !== 'subscription_create') {
      assert.equal(holdoutOf.get(`in_${spec.key}`), spec.group === 'holdout', `${spec.key} landed in the ${spec.group} group`);
    }
  }
  const expected = model(s, sentAt, clickAt, holdoutOf);

  // the scenario covers what it claims to
  const states = new Set(expected.map((c) => c.state));
  assert.deepEqual([...states].sort(), ['lost', 'open', 'recovered', 'voided']);
  assert.deepEqual(
    [...new Set(expected.map((c) => c.attribution).filter(Boolean))].sort(),
    ['card_updater', 'clicked', 'emailed', 'payment_method_updated', 'stripe_retry_only'],
  );
  assert.ok(expected.some((c) => c.late && c.currency === 'usd') && expected.some((c) => c.late && c.currency === 'jpy'));
  assert.ok(!expected.some((c) => c.invoice === 'in_u_new'), 'a first subscription invoice is not a case');
  assert.equal(expected.find((c) => c.invoice === 'in_u_hard')!.declineClass, 'hard');
  assert.equal(expected.find((c) => c.invoice === 'in_u_sca')!.declineClass, 'sca');
  assert.equal(expected.find((c) => c.invoice === 'in_u_sca')!.attempts, 1);
  assert.equal(expected.find((c) => c.invoice === 'in_u_email')!.declineClass, 'soft');

  // --- the report equals the model, to the unit
  const report = await getReport(a.svc, query);
  assert.deepEqual(report.currencies.map((c) => c.currency), ['eur', 'jpy', 'usd']);
  for (const got of report.currencies) {
    const want = expectedTotals(expected, got.currency);
    for (const k of ['failed', 'recovered', 'lost', 'open', 'voided', 'lateRecovered', 'byAttribution'] as const) {
      assert.deepEqual(got[k], want[k], `${got.currency} ${k}`);
    }
    assert.equal(got.recoveryRate, want.recoveryRate, `${got.currency} recoveryRate`);
    assert.ok(Math.abs(got.medianHoursToRecover! - want.medianHoursToRecover!) < 1e-9, `${got.currency} median ${got.medianHoursToRecover} vs ${want.medianHoursToRecover}`);
    assert.equal(got.holdout.cases, want.holdout.cases, `${got.currency} hold-out cases`);
    assert.equal(got.holdout.recoveryRate, want.holdout.recoveryRate, `${got.currency} hold-out rate`);
    assert.equal(got.holdout.treated.recoveryRate, want.holdout.treatedRate);
    if (want.holdout.recoveryRate !== null && want.holdout.treatedRate !== null) {
      assert.ok(Math.abs(got.holdout.liftPoints! - (want.holdout.treatedRate - want.holdout.recoveryRate) * 100) < 1e-9);
    }
    if (Number.isFinite(want.holdout.ci95[0])) {
      assert.ok(got.holdout.ci95, `${got.currency} ci95`);
      assert.ok(Math.abs(got.holdout.ci95[0] - want.holdout.ci95[0]) < 0.01 && Math.abs(got.holdout.ci95[1] - want.holdout.ci95[1]) < 0.01, JSON.stringify([got.holdout.ci95, want.holdout.ci95]));
    }
    const total = Object.values(got.byAttribution).reduce((s2, v) => ({ count: s2.count + v.count, amount: s2.amount + v.amount }), { count: 0, amount: 0 });
    assert.deepEqual(total, got.recovered, 'the attribution buckets add up to recovered');
    assert.equal(got.failed.count, got.recovered.count + got.lost.count + got.open.count + got.voided.count);
  }
  // jpy is reported in yen, never converted or mixed
  assert.deepEqual(report.currencies.find((c) => c.currency === 'jpy')!.failed, { count: 6, amount: 5000 + 12000 + 3000 + 8000 + 7000 + 2000 });
  // monthly series
  const months = new Map<string, ModelCase[]>();
  for (const c of expected) {
    const key = `${c.currency} ${c.firstFailedAt.toISOString().slice(0, 7)}`;
    months.set(key, [...(months.get(key) ?? []), c]);
  }
  assert.deepEqual(
    report.monthly.map((m) => `${m.currency} ${m.month}`),
    [...months.keys()].sort(),
  );
  for (const m of report.monthly) {
    const cs = months.get(`${m.currency} ${m.month}`)!;
    const failedAmount = sum(cs, (c) => c.amountDue);
    const voidedAmount = sum(cs.filter((c) => c.state === 'voided'), (c) => c.amountDue);
    const recoveredAmount = sum(cs, (c) => c.amountRecovered);
    assert.deepEqual(m, { currency: m.currency, month: m.month, cases: cs.length, failedAmount, voidedAmount, recoveredAmount, recoveryRate: failedAmount - voidedAmount > 0 ? recoveredAmount / (failedAmount - voidedAmount) : null });
  }
  assert.match(report.definition, /recoveryRate = recovered\.amount \/ \(failed\.amount - voided\.amount\)/);
  assert.match(report.definition, /sca > hard > soft > unknown/);

  // --- the rollups the report reads equal an aggregate of the ledger
  assert.deepEqual(await rollups(a.svc), await rollupsFromCases(a.svc));
  // --- the incremental ledger equals a full recomputation
  const incremental = await ledgerRows(a.svc);
  await refreshRecoveryCases(a.svc.sql, { full: true, strategy: 'incremental' });
  assert.deepEqual(await ledgerRows(a.svc), incremental, 'incremental refreshes left nothing stale');
  // … and the set-based plan (first refresh over history, full rebuilds) applies the same rules
  const rebuilt = await refreshRecoveryCases(a.svc.sql, { full: true, strategy: 'bulk' });
  assert.equal(rebuilt.recomputed, CASES.length);
  assert.deepEqual(await ledgerRows(a.svc), incremental, 'the bulk plan gives the same ledger');
  assert.deepEqual(await rollups(a.svc), await rollupsFromCases(a.svc));

  // --- out of order and duplicated: the same report and the same ledger, except for whether
  // Lifeline treated a case. Service B learns of the delayed cases only on DUMP_DAY, with the
  // settling fact (paid, voided, written off, canceled or marked unpaid) delivered before the failure: it must not
  // start a run for them (it would email a customer who no longer owes anything), so those cases
  // have no run, hence are neither treated nor hold-out. Every other figure is order-independent.
  const reportB = await getReport(b.svc, query);
  const withoutTreatment = (r: typeof report) => ({ ...r, currencies: r.currencies.map((c) => ({ ...c, holdout: null })) });
  assert.deepEqual(withoutTreatment(reportB), withoutTreatment(report));
  const ledgerB = await ledgerRows(b.svc);
  const untreated = new Set(ledgerB.filter((row) => !row.has_run).map((row) => String(row.invoice_id)));
  const settling = new Set(['invoice.paid', 'invoice.voided', 'invoice.marked_uncollectible', 'customer.subscription.deleted']);
  const unpaid = (e: (typeof s.events)[number]) => e.env.type === 'customer.subscription.updated' && (e.env.data.object as Obj).status === 'unpaid';
  const settledLate = new Set(s.events.filter((e) => e.delayable && (settling.has(e.env.type) || unpaid(e))).map((e) => s.ctx.get(e.caseKey)!.invoice));
  for (const invoice of untreated) {
    assert.ok(settledLate.has(invoice) || !incremental.find((row) => String(row.invoice_id) === invoice)?.has_run, `${invoice}: no run only because it was settled before its failure arrived`);
  }
  const strip = (rows: typeof ledgerB) => rows.map((row) => (untreated.has(String(row.invoice_id)) ? { ...row, holdout: null, has_run: null } : row));
  assert.deepEqual(strip(ledgerB), strip(incremental));
  const dunnedAfterSettling = await b.svc.sql<{ run_key: string }[]>`
    select r.run_key from messages m join workflow_runs r on r.id = m.run_id join invoices i on i.id = r.run_key
    where r.workflow_key = 'billing-recovery' and i.status <> 'open' and m.created_at >= ${at(DUMP_DAY, 0)}`;
  assert.deepEqual([...dunnedAfterSettling], [], 'no dunning email for a case already settled when Lifeline heard of it');

  // --- CSV: one row per case, equal to the model, reconciling with the JSON totals
  const csvRes = await a.svc.app.inject({ method: 'GET', url: `/v1/reports/recovery?${query}&format=csv`, headers: auth });
  assert.equal(csvRes.statusCode, 200);
  assert.match(String(csvRes.headers['content-type']), /^text\/csv/);
  assert.match(String(csvRes.headers['content-disposition']), /^attachment; filename="recovery-ledger_2026-02-01_2026-04-01\.csv"$/);
  const [header, ...rows] = parseCsv(csvRes.body);
  assert.deepEqual(header, ['invoice', 'customer', 'currency', 'amount_due', 'amount_recovered', 'first_failed_at', 'recovered_at', 'state', 'late', 'decline_class', 'attempts', 'attribution', 'holdout']);
  assert.deepEqual(
    rows,
    expected.map((c) => [
      c.invoice,
      c.customer,
      c.currency,
      String(c.amountDue),
      String(c.amountRecovered),
      c.firstFailedAt.toISOString(),
      c.recoveredAt ? c.recoveredAt.toISOString() : '',
      c.state,
      String(c.late),
      c.declineClass,
      String(c.attempts),
      c.attribution ?? '',
      String(c.holdout),
    ]),
  );
  for (const cur of report.currencies) {
    const mine = rows.filter((r) => r[2] === cur.currency);
    assert.equal(mine.length, cur.failed.count);
    assert.equal(sum(mine.map((r) => ({ amountDue: Number(r[3]) }) as ModelCase), (c) => c.amountDue), cur.failed.amount);
    assert.equal(mine.reduce((s2, r) => s2 + Number(r[4]), 0), cur.recovered.amount);
    for (const state of ['lost', 'open', 'voided'] as const) {
      assert.equal(mine.filter((r) => r[7] === state).reduce((s2, r) => s2 + Number(r[3]), 0), cur[state].amount, `${cur.currency} ${state}`);
    }
  }
  // Accept: text/csv works too, and the B service's CSV is the same (but for the hold-out flag of
  // the cases B never treated, see above)
  const viaAccept = await b.svc.app.inject({ method: 'GET', url: `/v1/reports/recovery?${query}`, headers: { ...auth, accept: 'text/csv' } });
  const treatedOnly = (body: string) => parseCsv(body).map((r) => (untreated.has(r[0]!) ? [...r.slice(0, -1), '-'] : r));
  assert.deepEqual(treatedOnly(viaAccept.body), treatedOnly(csvRes.body));

  // --- currency filter
  const jpyOnly = await getReport(a.svc, `${query}&currency=JPY`);
  assert.deepEqual(jpyOnly.currencies, report.currencies.filter((c) => c.currency === 'jpy'));
  assert.deepEqual(jpyOnly.monthly, report.monthly.filter((m) => m.currency === 'jpy'));
  const march = await getReport(a.svc, 'from=2026-03-01&to=2026-03-02');
  assert.deepEqual(
    march.currencies.map((c) => [c.currency, c.failed.count]),
    [...new Set(expected.filter((c) => c.firstFailedAt.toISOString().startsWith('2026-03-01')).map((c) => c.currency))]
      .sort()
      .map((cur) => [cur, expected.filter((c) => c.currency === cur && c.firstFailedAt.toISOString().startsWith('2026-03-01')).length]),
  );
});

test('recovery report: CSV quoting', async () => {
  const { csvField, csvLine } = await import('../src/reports/recovery-report.ts');
  assert.equal(csvField('plain'), 'plain');
  assert.equal(csvField('a,b'), '"a,b"');
  assert.equal(csvField('say "hi"'), '"say ""hi"""');
  assert.equal(csvField('two\nlines'), '"two\nlines"');
  assert.equal(csvField(null), '');
  assert.equal(csvField(new Date('2026-03-01T00:00:00Z')), '2026-03-01T00:00:00.000Z');
  assert.equal(csvLine(['in_1', 'x,"y"', 12, true]), 'in_1,"x,""y""",12,true\r\n');
  assert.deepEqual(parseCsv(csvLine(['in_1', 'x,"y"\r\nz', 12])), [['in_1', 'x,"y"\r\nz', '12']]);
});

test('recovery report: bad parameters are 400 naming the parameter; no token is 401', async (t) => {
  const svc = await build(t);
  const get = (q: string, headers: Record<string, string> = auth) => svc.app.inject({ method: 'GET', url: `/v1/reports/recovery${q}`, headers });
  const cases: [string, RegExp][] = [
    ['', /"from" is required/],
    ['?from=2026-01-01', /"to" is required/],
    ['?from=2026-1-01&to=2026-02-01', /"from" must be a date as YYYY-MM-DD/],
    ['?from=2026-01-01&to=2026-02-30', /"to" is not a valid date/],
    ['?from=2026-02-01&to=2026-02-01', /"from" .* must be before "to"/],
    ['?from=2026-03-01&to=2026-02-01', /"from" .* must be before "to"/],
    ['?from=2026-01-01&to=2026-02-01&currency=us', /"currency" must be a three-letter/],
    ['?from=2026-01-01&to=2026-02-01&currency=usd1', /"currency" must be a three-letter/],
    ['?from=2026-01-01&to=2026-02-01&currency=zzq', /"currency": unknown currency code "zzq"/],
    ['?from=2026-01-01&to=2026-02-01&format=xml', /"format" must be "json" or "csv"/],
    ['?from=2026-01-01&from=2026-01-02&to=2026-02-01', /"from" must be given once/],
  ];
  for (const [q, message] of cases) {
    const res = await get(q);
    assert.equal(res.statusCode, 400, `${q}: ${res.body}`);
    assert.equal(res.json().error, 'invalid_parameter');
    assert.match(res.json().message, message, q);
  }
  assert.equal((await get('?from=2026-01-01&to=2026-02-01', {})).statusCode, 401);
  const empty = await get('?from=2026-01-01&to=2026-02-01&currency=eur');
  assert.equal(empty.statusCode, 200);
  const body = empty.json() as Report;
  assert.equal(body.currencies.length, 1);
  assert.deepEqual(body.currencies[0]!.failed, { count: 0, amount: 0 });
  assert.equal(body.currencies[0]!.recoveryRate, null);
  assert.deepEqual(Object.keys(body.currencies[0]!.byAttribution), ['paid_on_card_update', 'portal_update', 'payment_method_updated', 'clicked', 'emailed', 'card_updater', 'stripe_retry_only']);
});

test('refresh: a fact committed late under a lower id is still applied (gaps); an idle refresh reads and recomputes nothing', async (t) => {
  const { projectStripeEvent } = await import('../src/stripe/projector.ts');
  const svc = await build(t, { clock: 'manual', env: { QUIET_HOURS: 'off' } });
  const clock = svc.clock as ManualClock;
  clock.set(at(0, 12));
  const c = (id: string, customer: string): Ctx => ({ invoice: id, customer, subscription: null, currency: 'usd', amount: 1000, billingReason: 'subscription_cycle', email: `${customer}@example.test` });
  const first = c('in_gap_a', 'cus_gap_a');
  const second = c('in_gap_b', 'cus_gap_b');
  for (const e of [fail(0, 1)(first), fail(0, 2)(second)]) await deliver(svc.app, e.env);
  await svc.drain();
  const states = async () => {
    const r = await getReport(svc, 'from=2026-02-01&to=2026-03-01');
    const rows = await svc.sql<{ invoice_id: string; state: string }[]>`select invoice_id, state from recovery_cases order by invoice_id`;
    assert.equal(r.currencies[0]!.failed.count, 2);
    return rows.map((row) => `${row.invoice_id}:${row.state}`);
  };
  assert.deepEqual(await states(), ['in_gap_a:open', 'in_gap_b:open']);

  // A worker projects in_gap_a's payment but has not committed yet (its fact holds the lower id) …
  let release!: () => void;
  let projected!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const inside = new Promise<void>((r) => (projected = r));
  const inflight = svc.sql.begin(async (tx) => {
    await projectStripeEvent(tx, paid(0, 5)(first).env as never, clock.now());
    projected();
    await gate;
  });
  await inside;
  // … while a later fact commits and a report moves the cursor past both ids.
  await deliver(svc.app, paid(0, 6)(second).env);
  await svc.drain();
  assert.deepEqual(await states(), ['in_gap_a:open', 'in_gap_b:recovered']);
  release();
  await inflight;
  assert.deepEqual(await states(), ['in_gap_a:recovered', 'in_gap_b:recovered'], 'the late commit was picked up');
  assert.deepEqual(await refreshRecoveryCases(svc.sql), { recomputed: 0, read: 0 });
});

test('rollups follow recovery_cases whoever writes it (insert, update, delete, truncate)', async (t) => {
  const svc = await build(t);
  await svc.sql`
    insert into recovery_cases (invoice_id, customer_id, currency, amount_due, first_failed_at, decline_class, attempts, state,
                                amount_recovered, recovered_at, attribution, holdout, run_id, recovery_seconds, computed_at)
    select 'in_' || g, 'cus_' || g, (array['usd', 'eur', 'jpy'])[g % 3 + 1], 1000 + g, timestamptz '2026-01-01' + g * interval '7 hours',
           'unknown', 1, case when g % 2 = 0 then 'recovered' else 'open' end, case when g % 2 = 0 then 1000 + g else 0 end,
           case when g % 2 = 0 then timestamptz '2026-01-01' + g * interval '7 hours' + g * interval '5 hours' end,
           case when g % 2 = 0 then 'stripe_retry_only' end, g % 5 = 0, g, case when g % 2 = 0 then g * 5 * 3600 end, now()
    from generate_series(1, 300) g`;
  assert.deepEqual(await rollups(svc), await rollupsFromCases(svc));
  await svc.sql`update recovery_cases set state = 'lost', amount_recovered = 0, recovered_at = null, attribution = null, recovery_seconds = null where invoice_id like 'in_1%'`;
  await svc.sql`delete from recovery_cases where invoice_id like 'in_2%'`;
  const after = await rollups(svc);
  assert.deepEqual(after, await rollupsFromCases(svc));
  assert.ok(after.daily.length > 0 && after.hist.length > 0);
  const r = await getReport(svc, 'from=2026-01-01&to=2026-12-01');
  const [count] = await svc.sql<{ n: number }[]>`select count(*)::int as n from recovery_cases`;
  assert.equal(r.currencies.reduce((s2, c) => s2 + c.failed.count, 0), count!.n);
  for (const c of r.currencies) {
    const hours = (await svc.sql<{ s: number }[]>`select recovery_seconds as s from recovery_cases where currency = ${c.currency} and state = 'recovered'`).map((x) => x.s / 3600);
    close(c.medianHoursToRecover, median(hours)!, `${c.currency} median`);
  }
  await svc.sql`truncate recovery_cases`;
  assert.deepEqual(await rollups(svc), { daily: [], hist: [] });
});
