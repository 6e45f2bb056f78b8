// fast-check arbitraries for the order-independence property (test/pipeline-order.property.test.ts):
// a realistic timeline of Stripe and product events for a few customers, and a delivery schedule
// that shuffles it, repeats events (Stripe redelivers the same event id, Segment retries the same
// messageId), processes the inboxes at random points and groups product calls into batches.
//
// A timeline is generated as a list of intents ("customer 1's invoice fails", "user 0 identifies
// with plan team"). A small state machine per customer turns intents into events that could
// really happen in that order (an invoice fails with attempt_count 1, 2, 3 …, is then paid,
// voided or written off; a subscription is created, paused, resumed, canceled; a canceled
// customer may subscribe again): intents that make no sense in the current state are dropped,
// and an invoice intent with no subscription yet first creates one. Times are offsets from the
// timeline's start, strictly increasing, so Stripe's `created` follows the true order (deliveries
// are shuffled, creation times are not) and no two events tie.
import fc from 'fast-check';
import { invoice, subscription } from './stripe.ts';

type Obj = Record<string, unknown>;

export const MAX_EVENTS = 12;
/** Deliveries of one event: 1–3 copies. */
export const MAX_COPIES = 3;

export interface StripeStep {
  kind: 'stripe';
  /** index in the timeline (true order) */
  index: number;
  /** offset from the timeline start, seconds */
  at: number;
  eventId: string;
  type: string;
  /** the Stripe object snapshot, built for a given absolute start (unix seconds) */
  object: (start: number) => Obj;
  previous?: Obj;
  /** one line for counter-examples */
  label: string;
}

export interface ProductStep {
  kind: 'product';
  index: number;
  at: number;
  messageId: string;
  call: 'identify' | 'group' | 'track';
  body: Obj;
  label: string;
}

export type TimelineStep = StripeStep | ProductStep;

export interface Timeline {
  customers: number;
  steps: TimelineStep[];
  /** seconds from the start to one minute after the last event: when everything is delivered */
  deliverAt: number;
}

export type Op =
  | 'invoice_fail'
  | 'invoice_paid'
  | 'invoice_void'
  | 'invoice_uncollectible'
  | 'sub_create'
  | 'sub_update'
  | 'sub_pause'
  | 'sub_resume'
  | 'sub_cancel'
  | 'pm_update'
  | 'pm_attach'
  | 'identify'
  | 'group'
  | 'track';

export const STRIPE_INVOICE_OPS: Op[] = ['invoice_fail', 'invoice_fail', 'invoice_fail', 'invoice_paid', 'invoice_void', 'invoice_uncollectible'];
export const STRIPE_SUBSCRIPTION_OPS: Op[] = ['sub_create', 'sub_update', 'sub_pause', 'sub_resume', 'sub_cancel'];
export const STRIPE_PM_OPS: Op[] = ['pm_update', 'pm_attach'];
export const PRODUCT_OPS: Op[] = ['identify', 'identify', 'group', 'track', 'track', 'track'];
export const ALL_OPS: Op[] = [...STRIPE_INVOICE_OPS, ...STRIPE_SUBSCRIPTION_OPS, ...STRIPE_PM_OPS, ...PRODUCT_OPS];

export interface Intent {
  customer: number;
  op: Op;
  /** picks amounts, trait values, feedback … */
  variant: number;
  /** minutes since the previous event */
  gapMinutes: number;
}

const PLANS = ['trial', 'starter', 'team', 'business'];
const USAGE = [40, 75, 92, 97];
const TRACKED = ['Signed Up', 'Project Created', 'Trial Started', 'Teammate Invited', 'Paywall Hit'];
const FEEDBACK = ['too_expensive', 'missing_features', 'unused', 'switched_service', null];
const AMOUNTS = [4900, 9900, 2500];

export const userId = (c: number) => `u_${c}`;
export const emailOf = (c: number) => `user${c}@example.test`;
export const customerId = (c: number) => `cus_${c}`;
export const groupId = (c: number) => `acct_${c}`;

interface CustomerState {
  sub: { id: string; status: string; unitAmount: number; quantity: number } | null;
  subs: number;
  /** the latest invoice; `retired` once its subscription is canceled (Stripe stops retrying it) */
  invoice: { id: string; subscription: string; status: string; attempts: number; amount: number; retired: boolean } | null;
  invoices: number;
  pm: string | null;
  pms: number;
}

/** Intents → a realistic timeline (see the file comment). */
export function buildTimeline(customers: number, intents: readonly Intent[]): Timeline {
  const state: CustomerState[] = Array.from({ length: customers }, () => ({ sub: null, subs: 0, invoice: null, invoices: 0, pm: null, pms: 0 }));
  const steps: TimelineStep[] = [];
  let at = 0;
  let product = 0;
  const push = (make: (index: number, at: number) => TimelineStep) => {
    if (steps.length >= MAX_EVENTS) return;
    steps.push(make(steps.length, at));
    at += 60; // an automatic follow-up (e.g. the subscription an invoice needs) a minute later
  };
  const stripe = (type: string, label: string, object: (start: number, at: number) => Obj, previous?: Obj) =>
    push((index, t) => ({ kind: 'stripe', index, at: t, eventId: `evt_${index}`, type, label, object: (start) => object(start, start + t), ...(previous ? { previous } : {}) }));
  const call = (c: number, kind: ProductStep['call'], body: Obj, label: string) =>
    push((index, t) => ({ kind: 'product', index, at: t, messageId: `msg_${++product}`, call: kind, body: { userId: userId(c), ...body }, label }));

  const subObject = (c: number, s: NonNullable<CustomerState['sub']>, extra: Obj = {}) => (_start: number) =>
    ({ ...subscription({ id: s.id, customer: customerId(c), status: s.status, unit_amount: s.unitAmount, quantity: s.quantity }), ...extra });

  function ensureSubscription(c: number, st: CustomerState): void {
    if (st.sub && st.sub.status !== 'canceled') return;
    st.sub = { id: `sub_${c}_${++st.subs}`, status: 'active', unitAmount: AMOUNTS[c % AMOUNTS.length]!, quantity: 1 };
    const snapshot = { ...st.sub };
    stripe('customer.subscription.created', `${snapshot.id} created (active)`, subObject(c, snapshot));
  }

  for (const intent of intents) {
    if (steps.length >= MAX_EVENTS) break;
    const c = intent.customer % customers;
    const st = state[c]!;
    const v = intent.variant;
    at += Math.max(1, intent.gapMinutes) * 60;
    const invoiceSnapshot = (status: string, attempts: number, paidAt = false) => {
      const inv = st.invoice!;
      const sub = inv.subscription;
      return (start: number, t: number) => ({
        ...invoice({
          id: inv.id, customer: customerId(c), customer_email: emailOf(c), subscription: sub, status, amount_due: inv.amount,
          attempt_count: attempts, next_payment_attempt: status === 'open' ? t + 3 * 86_400 : null,
          paid_at: paidAt ? t : null, created: start - 3_600,
        }),
        customer_name: `Customer ${c}`,
      });
    };
    switch (intent.op) {
      case 'invoice_fail': {
        ensureSubscription(c, st);
        if (!st.invoice || st.invoice.status !== 'open' || st.invoice.retired) {
          st.invoice = { id: `in_${c}_${++st.invoices}`, subscription: st.sub!.id, status: 'open', attempts: 0, amount: st.sub!.unitAmount * st.sub!.quantity, retired: false };
        }
        st.invoice.attempts++;
        stripe('invoice.payment_failed', `${st.invoice.id} payment_failed attempt ${st.invoice.attempts}`, invoiceSnapshot('open', st.invoice.attempts));
        break;
      }
      case 'invoice_paid': {
        // Paid after failing (a retry or the customer), or written off and paid later.
        if (!st.invoice || (st.invoice.status !== 'open' && st.invoice.status !== 'uncollectible')) break;
        st.invoice.attempts++;
        st.invoice.status = 'paid';
        stripe('invoice.paid', `${st.invoice.id} paid (attempt ${st.invoice.attempts})`, invoiceSnapshot('paid', st.invoice.attempts, true));
        break;
      }
      case 'invoice_void':
      case 'invoice_uncollectible': {
        if (!st.invoice || st.invoice.status !== 'open') break;
        const status = intent.op === 'invoice_void' ? 'void' : 'uncollectible';
        st.invoice.status = status;
        const type = intent.op === 'invoice_void' ? 'invoice.voided' : 'invoice.marked_uncollectible';
        stripe(type, `${st.invoice.id} ${status}`, invoiceSnapshot(status, st.invoice.attempts));
        break;
      }
      case 'sub_create': {
        if (st.sub && st.sub.status !== 'canceled') break;
        ensureSubscription(c, st);
        break;
      }
      case 'sub_update': {
        const s = st.sub;
        if (!s || s.status === 'canceled' || s.status === 'paused') break;
        if (v % 2 === 0) {
          // A status change (Stripe marks a subscription past_due after a failure, active after payment).
          const from = s.status;
          s.status = from === 'active' ? 'past_due' : 'active';
          const snapshot = { ...s };
          stripe('customer.subscription.updated', `${s.id} ${from} → ${s.status}`, subObject(c, snapshot), { status: from });
        } else {
          // A seat change: MRR up or down.
          const from = s.quantity;
          s.quantity = from === 1 ? 3 : from - 1;
          const snapshot = { ...s };
          stripe('customer.subscription.updated', `${s.id} quantity ${from} → ${s.quantity}`, subObject(c, snapshot), { items: {} });
        }
        break;
      }
      case 'sub_pause': {
        const s = st.sub;
        if (!s || s.status !== 'active') break;
        s.status = 'paused';
        const snapshot = { ...s };
        stripe('customer.subscription.paused', `${s.id} paused`, subObject(c, snapshot));
        break;
      }
      case 'sub_resume': {
        const s = st.sub;
        if (!s || s.status !== 'paused') break;
        s.status = 'active';
        const snapshot = { ...s };
        stripe('customer.subscription.resumed', `${s.id} resumed`, subObject(c, snapshot));
        break;
      }
      case 'sub_cancel': {
        const s = st.sub;
        if (!s || s.status === 'canceled') break;
        s.status = 'canceled';
        if (st.invoice?.subscription === s.id) st.invoice.retired = true;
        const involuntary = v % 3 === 0;
        const feedback = involuntary ? null : FEEDBACK[v % FEEDBACK.length]!;
        const snapshot = { ...s };
        stripe(
          'customer.subscription.deleted',
          `${s.id} canceled (${involuntary ? 'payment_failed' : `requested, ${feedback}`})`,
          (start, t) => ({
            ...subObject(c, snapshot)(start),
            canceled_at: t,
            ended_at: t,
            cancellation_details: { reason: involuntary ? 'payment_failed' : 'cancellation_requested', feedback, comment: null },
          }),
        );
        break;
      }
      case 'pm_update': {
        const previous = st.pm;
        st.pm = `pm_${c}_${++st.pms}`;
        const pm = st.pm;
        stripe(
          'customer.updated',
          `${customerId(c)} default payment method ${previous ?? 'none'} → ${pm}`,
          () => ({
            id: customerId(c), object: 'customer', email: emailOf(c), name: `Customer ${c}`, livemode: false, metadata: {},
            invoice_settings: { default_payment_method: pm, custom_fields: null, footer: null },
          }),
          { invoice_settings: { default_payment_method: previous } },
        );
        break;
      }
      case 'pm_attach': {
        const pm = `pm_${c}_${++st.pms}`;
        stripe('payment_method.attached', `${pm} attached to ${customerId(c)}`, (start) => ({
          id: pm, object: 'payment_method', type: 'card', customer: customerId(c), created: start, livemode: false, metadata: {},
          billing_details: { email: emailOf(c), name: null, phone: null, address: null },
          card: { brand: 'visa', country: 'US', exp_month: 1 + (v % 12), exp_year: 2030, funding: 'credit', last4: '4242' },
        }));
        break;
      }
      case 'identify': {
        const traits = { email: emailOf(c), stripeCustomerId: customerId(c), role: 'admin', plan: PLANS[v % PLANS.length], seats: 1 + (v % 7) };
        call(c, 'identify', { traits }, `${userId(c)} identify plan=${traits.plan} seats=${traits.seats}`);
        break;
      }
      case 'group': {
        const traits = { name: `Account ${c}`, stripeCustomerId: customerId(c), usage_pct: USAGE[v % USAGE.length] };
        call(c, 'group', { groupId: groupId(c), traits }, `${userId(c)} group ${groupId(c)} usage_pct=${traits.usage_pct}`);
        break;
      }
      case 'track': {
        const event = TRACKED[v % TRACKED.length]!;
        call(c, 'track', { event, properties: { n: v }, context: { groupId: groupId(c) } }, `${userId(c)} track ${event}`);
        break;
      }
    }
  }
  const last = steps.at(-1)?.at ?? 0;
  return { customers, steps, deliverAt: last + 60 };
}

export function intentArbitrary(ops: readonly Op[], customers: number): fc.Arbitrary<Intent> {
  return fc.record({
    customer: fc.nat(customers - 1),
    op: fc.constantFrom(...ops),
    variant: fc.nat(59),
    // minutes: often close together, sometimes a day or three apart (Stripe's retry spacing)
    gapMinutes: fc.oneof(fc.integer({ min: 1, max: 90 }), fc.integer({ min: 60, max: 4_320 })),
  });
}

export function timelineArbitrary(ops: readonly Op[], options: { customers?: { min: number; max: number }; maxIntents?: number } = {}): fc.Arbitrary<Timeline> {
  const { min, max } = options.customers ?? { min: 2, max: 3 };
  // No chain: the customer count and the intents shrink independently (intents name a customer
  // modulo the count).
  return fc
    .tuple(fc.integer({ min, max }), fc.array(intentArbitrary(ops, max), { minLength: 1, maxLength: options.maxIntents ?? 16 }))
    .map(([customers, intents]) => buildTimeline(customers, intents))
    .filter((t) => t.steps.length > 0);
}

/**
 * How a timeline is delivered. Arrays of the largest size any timeline needs; a timeline uses
 * a prefix. Every value shrinks towards "in order, once each, processed at the end".
 */
export interface DeliveryPlan {
  /** extra copies of event i (0–2) */
  extraCopies: number[];
  /** sort key of delivery j (deliveries are listed event by event, copy by copy; stable sort) */
  order: number[];
  /** process everything (inboxes, engine, emails) right after delivery j */
  drainAfter: boolean[];
  /** deliver a product call j inside a /v1/batch with its batchable neighbours */
  inBatch: boolean[];
}

const MAX_DELIVERIES = MAX_EVENTS * MAX_COPIES;

export const deliveryPlanArbitrary: fc.Arbitrary<DeliveryPlan> = fc.record({
  extraCopies: fc.array(fc.integer({ min: 0, max: MAX_COPIES - 1 }), { minLength: MAX_EVENTS, maxLength: MAX_EVENTS }),
  order: fc.array(fc.nat(1_000), { minLength: MAX_DELIVERIES, maxLength: MAX_DELIVERIES }),
  drainAfter: fc.array(fc.boolean(), { minLength: MAX_DELIVERIES, maxLength: MAX_DELIVERIES }),
  inBatch: fc.array(fc.boolean(), { minLength: MAX_DELIVERIES, maxLength: MAX_DELIVERIES }),
});

export interface Delivery {
  step: TimelineStep;
  copy: number;
  drainAfter: boolean;
  inBatch: boolean;
}

/** The deliveries a plan makes of a timeline, in arrival order. */
export function schedule(timeline: Timeline, plan: DeliveryPlan): Delivery[] {
  const listed: { step: TimelineStep; copy: number; key: number }[] = [];
  for (const step of timeline.steps) {
    const copies = 1 + (plan.extraCopies[step.index] ?? 0);
    for (let copy = 0; copy < copies; copy++) listed.push({ step, copy, key: plan.order[listed.length] ?? 0 });
  }
  const arrived = listed.map((d, i) => ({ ...d, i })).sort((a, b) => a.key - b.key || a.i - b.i);
  return arrived.map((d, j) => ({ step: d.step, copy: d.copy, drainAfter: plan.drainAfter[j] ?? false, inBatch: plan.inBatch[j] ?? false }));
}

/** The in-order reference: every event once, in true order, each processed before the next arrives. */
export function inOrder(timeline: Timeline): Delivery[] {
  return timeline.steps.map((step) => ({ step, copy: 0, drainAfter: true, inBatch: false }));
}

/** A counter-example, readable: the timeline in true order, then the arrival order. */
export function describe(timeline: Timeline, deliveries: readonly Delivery[]): string {
  const lines = [`timeline (${timeline.customers} customers, true order):`];
  for (const s of timeline.steps) lines.push(`  #${s.index} +${Math.round(s.at / 60)}min ${s.kind === 'stripe' ? `${s.eventId} ${s.type}` : `${s.messageId} ${s.call}`}: ${s.label}`);
  lines.push('deliveries (arrival order; | = processed here):');
  lines.push('  ' + deliveries.map((d) => `#${d.step.index}${d.copy > 0 ? `(copy ${d.copy + 1})` : ''}${d.inBatch && d.step.kind === 'product' ? '[batch]' : ''}${d.drainAfter ? ' |' : ''}`).join(' '));
  return lines.join('\n');
}

/**
 * Deliveries written out by hand (regression tests): step indexes in arrival order, a repeated
 * index is another copy, `b` after an index puts a product call in a /v1/batch, `|` processes
 * everything delivered so far. E.g. `'0 | 2 | 1 1 |'`.
 */
export function arrivals(timeline: Timeline, spec: string): Delivery[] {
  const out: Delivery[] = [];
  const copies = new Map<number, number>();
  for (const token of spec.trim().split(/\s+/)) {
    if (token === '|') {
      const last = out.at(-1);
      if (!last) throw new Error(`arrivals: "|" before any delivery in "${spec}"`);
      last.drainAfter = true;
      continue;
    }
    const m = /^(\d+)(b?)$/.exec(token);
    const step = m ? timeline.steps[Number(m[1])] : undefined;
    if (!m || !step) throw new Error(`arrivals: no step "${token}" in a timeline of ${timeline.steps.length}`);
    const copy = copies.get(step.index) ?? 0;
    copies.set(step.index, copy + 1);
    out.push({ step, copy, drainAfter: false, inBatch: m[2] === 'b' });
  }
  return out;
}
