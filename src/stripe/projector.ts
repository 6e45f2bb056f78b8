// Turns stored Stripe events into domain state (customers, subscriptions, invoices, payment
// failures) and timeline facts, a batch at a time. Order-independent by construction: every
// projected row keeps the ordering key of the snapshot it holds and an upsert only replaces it
// with a greater key, so the final state is the greatest snapshot whatever the arrival order;
// facts are deduplicated by a key that names the change they describe (not the delivery).
//
// A batch costs a fixed handful of statements, not a handful per event: every table gets one
// multi-row upsert (jsonb_to_recordset of one JSON parameter), contacts and accounts of all the
// batch's customers are resolved together (customer-contacts.ts), and every fact goes into one
// multi-row insert. The statements are issued without waiting for each other (postgres.js
// pipelines the queries of one transaction), in two waves: the second needs the answers of the
// first (contact look-ups, subscription before/after, decline detail).
//
// Every query is sent with `.execute()` the moment it is built: a postgres.js query is lazy
// (sent when first awaited), and awaiting through async helpers and Promise.all takes different
// numbers of microtask hops, which would let a later statement overtake an earlier one.
import type { Queryable, Sql, Tx } from '../db/connection.ts';
import { DOMAIN_EVENT_CHANNEL } from '../timeline/domain-event-store.ts';
import { applyContactChanges, lockCustomers, planContacts, readCandidateContacts, readCustomers, type ContactPoint, type StoredCustomer } from './customer-contacts.ts';
import { failureExplains, lookupDeclines, type DeclineLookup, type StoredDecline } from './declines.ts';
import type { StripeEnvelope } from './event-inbox.ts';
import {
  idOf,
  invoiceStatusRank,
  parseCustomer,
  parseInvoice,
  parsePaymentFailure,
  parseSubscription,
  subscriptionStatusRank,
  type CustomerRow,
  type DeclineClass,
  type InvoiceRow,
  type PaymentFailure,
  type SubscriptionRow,
} from './shapes.ts';

type Obj = Record<string, unknown>;

/** Invoice events that become timeline facts, and the fact name each becomes. */
const INVOICE_FACTS: Record<string, string> = {
  'invoice.payment_failed': 'invoice.payment_failed',
  'invoice.payment_action_required': 'invoice.payment_action_required',
  'invoice.paid': 'invoice.paid',
  'invoice.voided': 'invoice.voided',
  'invoice.marked_uncollectible': 'invoice.marked_uncollectible',
};

const SUBSCRIPTION_FACTS: Record<string, string> = {
  'customer.subscription.created': 'subscription.created',
  'customer.subscription.deleted': 'subscription.canceled',
  'customer.subscription.paused': 'subscription.paused',
  'customer.subscription.resumed': 'subscription.resumed',
  'customer.subscription.trial_will_end': 'subscription.trial_will_end',
};

/**
 * Every Stripe event type the projection reads (planEvent below): the webhook endpoint that
 * `lifeline setup stripe` creates listens to exactly these, and `doctor` checks against them.
 * Snapshot-only types (created/updated) keep state current; the others also become facts.
 */
export const PROJECTED_STRIPE_EVENT_TYPES: readonly string[] = [
  'customer.created',
  'customer.updated',
  'customer.deleted',
  'invoice.created',
  'invoice.finalized',
  'invoice.updated',
  ...Object.keys(INVOICE_FACTS),
  'customer.subscription.updated',
  ...Object.keys(SUBSCRIPTION_FACTS),
  'charge.failed',
  'payment_intent.payment_failed',
  'payment_method.attached',
  'payment_method.updated',
  'payment_method.automatically_updated',
  // pay on card update (card-update-payments.ts) and pre-dunning (pre-dunning.ts); not projected
  'setup_intent.succeeded',
  // pre-dunning (pre-dunning.ts): a legacy card source expiring
  'customer.source.expiring',
  'checkout.session.completed',
];

export interface ProjectionResult {
  /** names of the timeline facts recorded (new ones only) */
  facts: string[];
}

/** One event, projected alone: a batch of one. */
export async function projectStripeEvent(db: Queryable, event: StripeEnvelope, now: Date): Promise<ProjectionResult> {
  const [result] = await projectStripeBatch(db, [event], now);
  return result!;
}

/**
 * Project a batch of stored events; returns one result per event, in input order.
 *
 * Order: events are projected as if one after the other in the given order (the caller passes
 * them ordered, and all events of one customer in the batch in their order). State does not
 * depend on it (version keys), but which of two events first records a fact does.
 *
 * Transaction: `db` should be a transaction (the caller's, so marking the inbox rows done
 * commits with the projection); given the pool, the batch opens its own. Per-customer advisory
 * locks (the key contactForCustomer uses) are taken for every customer of the batch first, in
 * sorted order, so two batches sharing customers cannot deadlock; row locks follow in id order.
 *
 * Failure contract: all or nothing. If any statement fails the function throws (the first
 * error) and the transaction is aborted: the caller rolls back (the transaction, or the
 * savepoint it ran the batch in) and finds the culprit by projecting the events one at a time,
 * each in its own savepoint (projectStripeEvent); the others then succeed. Nothing is retried
 * here. An event that cannot be parsed (unknown type or shape) is not an error: it projects to
 * nothing, like today.
 */
export async function projectStripeBatch(db: Queryable, events: readonly StripeEnvelope[], now: Date): Promise<ProjectionResult[]> {
  if (events.length === 0) return [];
  // Pipelined statements must share one connection and transaction.
  if (!('savepoint' in db) && 'begin' in db) return (db as Sql).begin((tx: Tx) => projectStripeBatch(tx, events, now)) as Promise<ProjectionResult[]>;
  const plan = planBatch(events);
  const contactIds = [...plan.identities].sort();

  // Wave 1: everything that needs no answer from the database, plus the reads wave 2 needs.
  // Statements run on the server in the order they are issued: the reads of customers and
  // contacts see them as they were before the batch.
  const pending: Promise<unknown>[] = [lockCustomers(db, [...plan.customerIds].sort())];
  const storedCustomers = readCustomers(db, contactIds);
  const candidates = readCandidateContacts(db, contactIds, [...plan.emails]);
  pending.push(storedCustomers, candidates);
  for (const round of rounds(plan.customers, (c) => c.row.id)) pending.push(upsertCustomers(db, round, now));
  if (plan.placeholders.size > 0) pending.push(ensureCustomers(db, plan.placeholders, now));
  // Decline detail known before this batch; the batch's own failures are added in JS (see below).
  const declineQuery = plan.declineLookups.length > 0 ? lookupDeclines(db, plan.declineLookups) : Promise.resolve([]);
  pending.push(declineQuery);
  if (plan.failures.length > 0) pending.push(insertFailures(db, plan.failures));
  for (const round of rounds(plan.invoices, (i) => i.row.id)) pending.push(upsertInvoices(db, round, now));
  for (const round of rounds(plan.subscriptions, (s) => s.row.id)) pending.push(upsertSubscriptions(db, round, now));
  // The subscriptions' history as it was before the batch, then the batch's snapshots join it.
  let history: Promise<MrrHistory> = Promise.resolve({ versions: [], recorded: [] });
  if (plan.subscriptions.length > 0) {
    history = readMrrHistory(db, plan.subscriptions);
    pending.push(history, insertSubscriptionVersions(db, plan.subscriptions));
  }
  await Promise.all(pending);

  const declines = mergeDeclines(plan, await declineQuery);
  const facts: FactRow[] = [];
  for (const item of plan.factSources) facts.push(...item.build({ declines }));
  const mrr = planMrr(plan, await history);
  mergeMrrFacts(facts, mrr.inserts);
  const points = contactPoints(plan, await storedCustomers, facts);
  const changes = planContacts(await storedCustomers, await candidates, points);

  // Wave 2: contacts, then every fact (on its customer's contact) in one insert.
  const seen = new Set<string>();
  const unique = facts.filter((f) => (seen.has(f.dedupe_key) ? false : (seen.add(f.dedupe_key), true)));
  const contactsDone = applyContactChanges(db, changes, now);
  // Corrections before the insert: a change removed and made again gets a new id (feed order).
  const corrected = correctMrrFacts(db, mrr);
  const inserted = unique.length > 0 ? insertFacts(db, unique, now) : Promise.resolve([] as string[]);
  await Promise.all([contactsDone, inserted, ...corrected]);

  const results: ProjectionResult[] = events.map(() => ({ facts: [] }));
  const newKeys = new Set(await inserted);
  for (const f of unique) if (newKeys.has(f.dedupe_key)) results[f.pos]!.facts.push(f.name);
  return results;
}

/**
 * Where one-at-a-time projection would call contactForCustomer, and with which identity, each
 * value with the time of the Stripe event it comes from (customer-contacts.ts): for a customer
 * snapshot, its own email and name at its time; for a fact, per value, the email and name the
 * event itself carries (an invoice's customer_email, a checkout's customer_details) as of when
 * (FactRow.fallback), else the customers row as it would be at that event (replayed here from the row before the
 * batch and the batch's writes to it) at that snapshot's time, else what a placeholder row holds
 * (copied from some event: the oldest possible time, it only fills gaps). Each value goes with the
 * time of the message it comes from, so the newest one wins whichever arrives first.
 */
function contactPoints(plan: Plan, stored: StoredCustomer[], facts: FactRow[]): ContactPoint[] {
  type Row = { email: string | null; name: string | null; deleted: boolean; vc: number; ve: string };
  const rows = new Map<string, Row>(stored.map((r) => [r.id, { email: r.email, name: r.name, deleted: r.deleted, vc: r.version_created.getTime(), ve: r.version_event_id }]));
  const points: ContactPoint[] = [];
  let f = 0;
  for (const op of plan.ops) {
    if (op.kind === 'placeholder') {
      const row = rows.get(op.cid);
      if (!row) rows.set(op.cid, { email: op.email, name: op.name, deleted: false, vc: 0, ve: '' });
      else if (row.ve === '') {
        row.email ??= op.email;
        row.name ??= op.name;
      }
    } else if (op.kind === 'snapshot') {
      const row = rows.get(op.cid);
      const c = op.snap;
      const vc = c.created.getTime();
      const newer = !row || ((!row.deleted || c.row.deleted) && compareTuple([Number(c.row.deleted), vc, c.eventId], [Number(row.deleted), row.vc, row.ve]) > 0);
      if (newer) rows.set(op.cid, { email: c.row.email, name: c.row.name, deleted: c.row.deleted, vc, ve: c.eventId });
      if (!c.row.deleted && plan.identities.has(op.cid)) points.push({ cid: op.cid, email: c.row.email, name: c.row.name, emailAt: vc, nameAt: vc });
    } else {
      // the facts of this event, in the order they are recorded
      for (; f < facts.length && facts[f]!.pos <= op.pos; f++) {
        const fact = facts[f]!;
        if (fact.pos < op.pos || fact.cid === null) continue;
        const row = rows.get(fact.cid);
        const real = row !== undefined && row.ve !== '';
        const at = fact.fallback?.at ?? fact.occurred_at.getTime();
        const pick = (snapshot: string | null | undefined, carried: string | null | undefined): [string | null, number] =>
          carried ? [carried, at] : real && snapshot ? [snapshot, row!.vc] : snapshot ? [snapshot, 0] : [null, 0];
        const [email, emailAt] = pick(row?.email, fact.fallback?.email);
        const [name, nameAt] = pick(row?.name, fact.fallback?.name);
        points.push({ cid: fact.cid, email, name, emailAt, nameAt });
      }
    }
  }
  return points;
}

function compareTuple(a: (number | string)[], b: (number | string)[]): number {
  for (let i = 0; i < a.length; i++) {
    if (a[i]! < b[i]!) return -1;
    if (a[i]! > b[i]!) return 1;
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Planning: parse every event once, in order, into the rows each table gets.

interface Versioned<Row> {
  pos: number;
  row: Row;
  created: Date;
  eventId: string;
}

interface FailureInsert {
  pos: number;
  eventId: string;
  f: PaymentFailure;
  occurredAt: Date;
}

type Decline = { declineClass: DeclineClass; declineCode: string | null };

interface FactRow {
  pos: number;
  name: string;
  dedupe_key: string;
  source_id: string;
  cid: string | null;
  subject_id: string | null;
  properties: Record<string, unknown>;
  occurred_at: Date;
  /**
   * the identity the event carries, and as of when (ms): an invoice's customer_email/name are
   * copied from the customer when the invoice is made and then frozen, so they date from the
   * invoice's creation, not from the event (a retry weeks later must not pass them off as new)
   */
  fallback?: { email: string | null; name: string | null; at: number };
}

interface FactSource {
  build(answers: { declines: Map<number, Decline> }): FactRow[];
}

interface Plan {
  customerIds: Set<string>;
  customers: Versioned<CustomerRow & { deleted: boolean }>[];
  /** placeholder customers: first non-null email/name seen, in order */
  placeholders: Map<string, { email: string | null; name: string | null }>;
  failures: FailureInsert[];
  declineLookups: DeclineLookup[];
  invoices: Versioned<InvoiceRow>[];
  subscriptions: (Versioned<SubscriptionRow> & { type: string })[];
  /** customers that may need a contact (facts, snapshots), and every email the batch gives them */
  identities: Set<string>;
  emails: Set<string>;
  /** the batch's writes to customers rows, and where each event's facts come, in order */
  ops: CustomerOp[];
  factSources: FactSource[];
}

type CustomerOp =
  | { kind: 'snapshot'; pos: number; cid: string; snap: Versioned<CustomerRow & { deleted: boolean }> }
  | { kind: 'placeholder'; pos: number; cid: string; email: string | null; name: string | null }
  | { kind: 'facts'; pos: number };

function planBatch(events: readonly StripeEnvelope[]): Plan {
  const plan: Plan = {
    customerIds: new Set(),
    customers: [],
    placeholders: new Map(),
    failures: [],
    declineLookups: [],
    invoices: [],
    subscriptions: [],
    identities: new Set(),
    emails: new Set(),
    ops: [],
    factSources: [],
  };
  let at = 0;
  const placeholder = (id: string, email: string | null, name: string | null) => {
    plan.customerIds.add(id);
    plan.ops.push({ kind: 'placeholder', pos: at, cid: id, email, name });
    if (email) plan.emails.add(email);
    const p = plan.placeholders.get(id);
    if (!p) plan.placeholders.set(id, { email, name });
    else {
      p.email ??= email;
      p.name ??= name;
    }
  };
  const identity = (id: string, email: string | null = null) => {
    plan.customerIds.add(id);
    plan.identities.add(id);
    if (email) plan.emails.add(email);
  };
  events.forEach((event, pos) => {
    at = pos;
    planEvent(event, pos);
    plan.ops.push({ kind: 'facts', pos });
  });
  return plan;

  function planEvent(event: StripeEnvelope, pos: number): void {
    const object = event.data.object as Obj;
    const created = new Date(event.created * 1000);
    const base = { pos, created, eventId: event.id };
    const fact = (f: Omit<FactRow, 'pos' | 'source_id' | 'occurred_at'>): FactRow => ({ ...f, pos, source_id: event.id, occurred_at: created });
    switch (object.object) {
      case 'customer': {
        const c = parseCustomer(object);
        if (!c) return;
        const deleted = c.deleted || event.type === 'customer.deleted';
        const snap = { ...base, row: { ...c, deleted } };
        plan.customers.push(snap);
        plan.ops.push({ kind: 'snapshot', pos, cid: c.id, snap });
        plan.customerIds.add(c.id);
        if (c.email) plan.emails.add(c.email);
        if (!deleted) identity(c.id, c.email);
        // A customer who sets a new default payment method has fixed their card.
        const previous = event.data.previous_attributes as Obj | undefined;
        const prevSettings = previous?.invoice_settings as Obj | undefined;
        const pmChanged = (prevSettings && 'default_payment_method' in prevSettings) || (previous && 'default_source' in previous);
        if (event.type === 'customer.updated' && pmChanged && c.defaultPaymentMethod) {
          identity(c.id, c.email);
          const pm = c.defaultPaymentMethod;
          plan.factSources.push({
            build: () => [
              fact({
                name: 'payment_method.updated',
                dedupe_key: `payment_method.updated:${c.id}:${pm}:${event.created}`,
                cid: c.id,
                subject_id: pm,
                properties: { customerId: c.id, paymentMethodId: pm, via: 'customer.updated' },
              }),
            ],
          });
        }
        return;
      }
      case 'invoice': {
        const inv = parseInvoice(object);
        if (!inv) return;
        placeholder(inv.customerId, inv.customerEmail, inv.customerName);
        plan.invoices.push({ ...base, row: inv });
        const type = event.type;
        if (type === 'invoice.payment_failed' || type === 'invoice.payment_action_required') {
          // The failure itself, even when the snapshot above was older than what we hold.
          const sca = type === 'invoice.payment_action_required';
          plan.failures.push({
            pos,
            eventId: event.id,
            occurredAt: created,
            f: {
              customerId: inv.customerId,
              invoiceId: inv.id,
              paymentIntentId: inv.paymentIntentId,
              chargeId: inv.chargeId,
              amount: inv.amountDue,
              currency: inv.currency,
              failureCode: sca ? 'authentication_required' : null,
              declineCode: null,
              adviceCode: null,
              declineClass: sca ? 'sca' : 'unknown',
              message: null,
            },
          });
        }
        const name = INVOICE_FACTS[type];
        if (!name) return;
        identity(inv.customerId, inv.customerEmail);
        const payment = name.startsWith('invoice.payment_');
        if (payment) plan.declineLookups.push({ pos, invoiceId: inv.id, customerId: inv.customerId, paymentIntentId: inv.paymentIntentId, around: created });
        plan.factSources.push({
          build: ({ declines }) => [
            fact({
              name,
              // Failures: one fact per invoice and attempt (Stripe's own change marker), so twin
              // events of one attempt give one fact and every retry its own. The other invoice
              // facts are transitions an invoice makes at most once (statuses only move forward).
              dedupe_key: payment ? `${name}:${inv.id}:${inv.attemptCount}` : `${name}:${inv.id}`,
              cid: inv.customerId,
              subject_id: inv.id,
              properties: invoiceProperties(inv, payment ? (declines.get(pos) ?? { declineClass: 'unknown', declineCode: null }) : null),
              fallback: { email: inv.customerEmail, name: inv.customerName, at: Math.min(inv.stripeCreated?.getTime() ?? created.getTime(), created.getTime()) },
            }),
          ],
        });
        return;
      }
      case 'subscription': {
        const sub = parseSubscription(object);
        if (!sub) return;
        const status = event.type === 'customer.subscription.deleted' && sub.status !== 'incomplete_expired' ? 'canceled' : sub.status;
        const row: SubscriptionRow = { ...sub, status };
        placeholder(row.customerId, null, null);
        plan.subscriptions.push({ ...base, row, type: event.type });
        planSubscriptionFacts(plan, event, row, fact, identity);
        return;
      }
      case 'charge':
      case 'payment_intent': {
        if (event.type !== 'charge.failed' && event.type !== 'payment_intent.payment_failed') return;
        const f = parsePaymentFailure(object);
        if (f) plan.failures.push({ pos, eventId: event.id, f, occurredAt: created });
        return;
      }
      case 'payment_method': {
        const customerId = idOf(object.customer);
        const id = idOf(object.id);
        if (!customerId || !id) return;
        const type = event.type;
        const name =
          type === 'payment_method.automatically_updated'
            ? 'payment_method.automatically_updated'
            : type === 'payment_method.attached' || type === 'payment_method.updated'
              ? 'payment_method.updated'
              : null;
        if (!name) return;
        placeholder(customerId, null, null);
        identity(customerId);
        const card = (object.card ?? {}) as Obj;
        plan.factSources.push({
          build: () => [
            fact({
              name,
              dedupe_key: `${name}:${id}:${event.created}`,
              cid: customerId,
              subject_id: id,
              // Card brand and expiry only: never numbers or fingerprints.
              properties: { customerId, paymentMethodId: id, type: object.type ?? null, brand: card.brand ?? null, expMonth: card.exp_month ?? null, expYear: card.exp_year ?? null, via: type },
            }),
          ],
        });
        return;
      }
      case 'checkout.session': {
        if (event.type !== 'checkout.session.completed') return;
        const customerId = idOf(object.customer);
        if (!customerId) return;
        const details = (object.customer_details ?? {}) as Obj;
        const email = typeof details.email === 'string' ? details.email : null;
        const name = typeof details.name === 'string' ? details.name : null;
        placeholder(customerId, email, name);
        identity(customerId, email);
        plan.factSources.push({
          build: () => [
            fact({
              name: 'checkout.completed',
              dedupe_key: `checkout.completed:${String(object.id)}`,
              cid: customerId,
              subject_id: idOf(object.id),
              properties: { sessionId: object.id, customerId, subscriptionId: idOf(object.subscription), mode: object.mode ?? null, amountTotal: object.amount_total ?? null, currency: object.currency ?? null },
              fallback: { email, name, at: created.getTime() },
            }),
          ],
        });
        return;
      }
      default:
        // Stored and acknowledged; nothing to project (unknown types are not errors).
        return;
    }
  }
}

function planSubscriptionFacts(
  plan: Plan,
  event: StripeEnvelope,
  row: SubscriptionRow,
  fact: (f: Omit<FactRow, 'pos' | 'source_id' | 'occurred_at'>) => FactRow,
  identity: (id: string) => void,
): void {
  const props = { subscriptionId: row.id, customerId: row.customerId, status: row.status, mrr: row.mrrMinor, currency: row.currency };
  const name = SUBSCRIPTION_FACTS[event.type];
  const previous = event.data.previous_attributes as Obj | undefined;
  const statusChange = event.type === 'customer.subscription.updated' && previous && typeof previous.status === 'string' && previous.status !== row.status ? previous.status : null;
  // Any snapshot, even an old one arriving late, can make or change an mrr_changed fact (its
  // own, or the next snapshot's: mrrFacts): its customer is read up front too.
  identity(row.customerId);
  if (!name && !statusChange) return;
  const at = event.created;
  plan.factSources.push({
    build: () => {
      const out: FactRow[] = [];
      if (name) {
        // Created and canceled happen once per subscription (a comeback is a new id); pause,
        // resume and trial ends can repeat, so their key carries the change's own marker.
        const marker = name === 'subscription.paused' || name === 'subscription.resumed' ? `:${at}` : name === 'subscription.trial_will_end' ? `:${row.trialEnd ? row.trialEnd.getTime() / 1000 : at}` : '';
        out.push(
          fact({
            name,
            dedupe_key: `${name}:${row.id}${marker}`,
            cid: row.customerId,
            subject_id: row.id,
            properties:
              name === 'subscription.canceled'
                ? {
                    ...props,
                    reason: row.cancellationReason,
                    feedback: row.cancellationFeedback,
                    comment: row.cancellationComment,
                    // Stripe ends a subscription for failed payments itself: that churn is involuntary.
                    voluntary: row.cancellationReason !== 'payment_failed' && row.cancellationReason !== 'payment_disputed',
                  }
                : props,
          }),
        );
      }
      if (statusChange) {
        out.push(
          fact({
            name: 'subscription.status_changed',
            dedupe_key: `subscription.status_changed:${row.id}:${statusChange}:${row.status}:${at}`,
            cid: row.customerId,
            subject_id: row.id,
            properties: { ...props, from: statusChange, to: row.status },
          }),
        );
      }
      return out;
    },
  });
}

/**
 * Split items into rounds: round k holds the k-th item of each key (in order), so a multi-row
 * upsert never touches one row twice, and several snapshots of one object in a batch are
 * applied one after another, exactly as one at a time. Each round is sorted by key (row locks
 * in a stable order).
 */
function rounds<T>(items: T[], key: (item: T) => string): T[][] {
  const out: T[][] = [];
  const seen = new Map<string, number>();
  for (const item of items) {
    const k = key(item);
    const n = seen.get(k) ?? 0;
    seen.set(k, n + 1);
    (out[n] ??= []).push(item);
  }
  for (const round of out) round.sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
  return out;
}

const json = (rows: unknown[]) => JSON.stringify(rows);

function invoiceProperties(inv: InvoiceRow, decline: Decline | null): Record<string, unknown> {
  return {
    invoiceId: inv.id,
    customerId: inv.customerId,
    subscriptionId: inv.subscriptionId,
    status: inv.status,
    currency: inv.currency,
    amountDue: inv.amountDue,
    amountPaid: inv.amountPaid,
    amountRemaining: inv.amountRemaining,
    attemptCount: inv.attemptCount,
    nextPaymentAttempt: inv.nextPaymentAttempt?.toISOString() ?? null,
    billingReason: inv.billingReason,
    hostedInvoiceUrl: inv.hostedInvoiceUrl,
    ...(decline ? { declineClass: decline.declineClass, declineCode: decline.declineCode } : {}),
  };
}

// ---------------------------------------------------------------------------------------------
// Customers

async function upsertCustomers(db: Queryable, round: Versioned<CustomerRow & { deleted: boolean }>[], now: Date): Promise<void> {
  const rows = round.map(({ row: c, created, eventId }) => ({
    id: c.id,
    email: c.email,
    name: c.name,
    deleted: c.deleted,
    livemode: c.livemode,
    default_payment_method: c.defaultPaymentMethod,
    metadata: c.metadata,
    version_created: created,
    version_event_id: eventId,
  }));
  await db`
    insert into customers (id, email, name, deleted, livemode, default_payment_method, metadata, version_created, version_event_id, updated_at)
    select r.id, r.email, r.name, r.deleted, r.livemode, r.default_payment_method, r.metadata, r.version_created, r.version_event_id, ${now}
    from jsonb_to_recordset(${json(rows)}::text::jsonb) as r(id text, email text, name text, deleted boolean, livemode boolean,
      default_payment_method text, metadata jsonb, version_created timestamptz, version_event_id text)
    order by r.id
    on conflict (id) do update set
      email = excluded.email, name = excluded.name, deleted = excluded.deleted, livemode = excluded.livemode,
      default_payment_method = excluded.default_payment_method, metadata = excluded.metadata,
      version_created = excluded.version_created, version_event_id = excluded.version_event_id, updated_at = excluded.updated_at
    where (customers.deleted = false or excluded.deleted)
      and (excluded.deleted::int, excluded.version_created, excluded.version_event_id)
        > (customers.deleted::int, customers.version_created, customers.version_event_id)`.execute();
}

/**
 * Invoices and subscriptions can arrive before their customer: keep a placeholder row (empty
 * version) that any real customer snapshot replaces, so emails and links still work.
 */
async function ensureCustomers(db: Queryable, placeholders: Map<string, { email: string | null; name: string | null }>, now: Date): Promise<void> {
  const rows = [...placeholders].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([id, p]) => ({ id, email: p.email, name: p.name }));
  await db`
    insert into customers (id, email, name, version_created, version_event_id, updated_at)
    select r.id, r.email, r.name, 'epoch', '', ${now}
    from jsonb_to_recordset(${json(rows)}::text::jsonb) as r(id text, email text, name text)
    on conflict (id) do update set
      email = coalesce(customers.email, excluded.email),
      name = coalesce(customers.name, excluded.name)
    where customers.version_event_id = ''`.execute();
}

// ---------------------------------------------------------------------------------------------
// Invoices and payment failures

async function upsertInvoices(db: Queryable, round: Versioned<InvoiceRow>[], now: Date): Promise<void> {
  const rows = round.map(({ row: inv, created, eventId }) => ({
    id: inv.id,
    customer_id: inv.customerId,
    subscription_id: inv.subscriptionId,
    status: inv.status,
    currency: inv.currency,
    amount_due: inv.amountDue,
    amount_paid: inv.amountPaid,
    amount_remaining: inv.amountRemaining,
    attempt_count: inv.attemptCount,
    next_payment_attempt: inv.nextPaymentAttempt,
    hosted_invoice_url: inv.hostedInvoiceUrl,
    billing_reason: inv.billingReason,
    paid_at: inv.paidAt,
    stripe_created: inv.stripeCreated,
    livemode: inv.livemode,
    version_rank: invoiceStatusRank(inv.status),
    version_created: created,
    version_event_id: eventId,
  }));
  await db`
    insert into invoices (
      id, customer_id, subscription_id, status, currency, amount_due, amount_paid, amount_remaining,
      attempt_count, next_payment_attempt, hosted_invoice_url, billing_reason, paid_at, stripe_created, livemode,
      version_rank, version_created, version_attempt, version_event_id, updated_at)
    select r.id, r.customer_id, r.subscription_id, r.status, r.currency, r.amount_due, r.amount_paid, r.amount_remaining,
      r.attempt_count, r.next_payment_attempt, r.hosted_invoice_url, r.billing_reason, r.paid_at, r.stripe_created, r.livemode,
      r.version_rank, r.version_created, r.attempt_count, r.version_event_id, ${now}
    from jsonb_to_recordset(${json(rows)}::text::jsonb) as r(id text, customer_id text, subscription_id text, status text, currency text,
      amount_due bigint, amount_paid bigint, amount_remaining bigint, attempt_count int, next_payment_attempt timestamptz,
      hosted_invoice_url text, billing_reason text, paid_at timestamptz, stripe_created timestamptz, livemode boolean,
      version_rank int, version_created timestamptz, version_event_id text)
    order by r.id
    on conflict (id) do update set
      customer_id = excluded.customer_id, subscription_id = coalesce(excluded.subscription_id, invoices.subscription_id),
      status = excluded.status, currency = excluded.currency, amount_due = excluded.amount_due,
      amount_paid = excluded.amount_paid, amount_remaining = excluded.amount_remaining,
      attempt_count = greatest(excluded.attempt_count, invoices.attempt_count),
      next_payment_attempt = excluded.next_payment_attempt, hosted_invoice_url = coalesce(excluded.hosted_invoice_url, invoices.hosted_invoice_url),
      billing_reason = coalesce(excluded.billing_reason, invoices.billing_reason), paid_at = coalesce(excluded.paid_at, invoices.paid_at),
      stripe_created = excluded.stripe_created, livemode = excluded.livemode,
      version_rank = excluded.version_rank, version_created = excluded.version_created,
      version_attempt = excluded.version_attempt, version_event_id = excluded.version_event_id, updated_at = excluded.updated_at
    where (excluded.version_rank, excluded.version_created, excluded.version_attempt, excluded.version_event_id)
        > (invoices.version_rank, invoices.version_created, invoices.version_attempt, invoices.version_event_id)`.execute();
}

async function insertFailures(db: Queryable, failures: FailureInsert[]): Promise<void> {
  // In batch order: payment_failures.id breaks ties between failures of the same instant.
  const rows = failures.map(({ eventId, f, occurredAt }, n) => ({
    n,
    stripe_event_id: eventId,
    customer_id: f.customerId,
    invoice_id: f.invoiceId,
    payment_intent_id: f.paymentIntentId,
    charge_id: f.chargeId,
    amount: f.amount,
    currency: f.currency,
    failure_code: f.failureCode,
    decline_code: f.declineCode,
    advice_code: f.adviceCode,
    decline_class: f.declineClass,
    message: f.message,
    occurred_at: occurredAt,
  }));
  await db`
    insert into payment_failures (stripe_event_id, customer_id, invoice_id, payment_intent_id, charge_id, amount, currency,
                                  failure_code, decline_code, advice_code, decline_class, message, occurred_at)
    select r.stripe_event_id, r.customer_id, r.invoice_id, r.payment_intent_id, r.charge_id, r.amount, r.currency,
           r.failure_code, r.decline_code, r.advice_code, r.decline_class, r.message, r.occurred_at
    from jsonb_to_recordset(${json(rows)}::text::jsonb) as r(stripe_event_id text, customer_id text, invoice_id text,
      payment_intent_id text, charge_id text, amount bigint, currency text, failure_code text, decline_code text, advice_code text,
      decline_class text, message text, occurred_at timestamptz, n bigint)
    order by r.n
    on conflict (stripe_event_id) do nothing`.execute();
}


/**
 * The decline each invoice fact reports: the latest matching failure among those stored before
 * the batch and the batch's own failures up to and including that event (as if the events had
 * been projected one by one: a failure later in the batch is not seen by an earlier fact).
 * Batch failures are newer rows than stored ones, so they win ties on time.
 */
function mergeDeclines(plan: Plan, stored: StoredDecline[]): Map<number, Decline> {
  const best = new Map<number, { at: number; rank: number; d: Decline }>();
  for (const s of stored) best.set(s.pos, { at: s.occurred_at.getTime(), rank: -1, d: { declineClass: s.decline_class, declineCode: s.decline_code } });
  if (plan.declineLookups.length > 0) {
    const known = plan.failures.filter((x) => x.f.declineClass !== 'unknown');
    for (const q of plan.declineLookups) {
      for (const [rank, x] of known.entries()) {
        if (x.pos > q.pos) continue;
        const f = x.f;
        const at = x.occurredAt.getTime();
        if (!failureExplains({ invoiceId: f.invoiceId, paymentIntentId: f.paymentIntentId, customerId: f.customerId, occurredAt: x.occurredAt }, q)) continue;
        const cur = best.get(q.pos);
        if (!cur || at > cur.at || (at === cur.at && rank > cur.rank)) best.set(q.pos, { at, rank, d: { declineClass: f.declineClass, declineCode: f.declineCode ?? f.failureCode } });
      }
    }
  }
  return new Map([...best].map(([pos, b]) => [pos, b.d]));
}

// ---------------------------------------------------------------------------------------------
// Subscriptions

/** One round of subscription snapshots: each replaces the row only if its version key is greater. */
async function upsertSubscriptions(db: Queryable, round: Versioned<SubscriptionRow>[], now: Date): Promise<void> {
  const rows = round.map(({ row, created, eventId }) => ({
    id: row.id,
    customer_id: row.customerId,
    status: row.status,
    currency: row.currency,
    mrr_minor: row.mrrMinor,
    items: row.items,
    trial_start: row.trialStart,
    trial_end: row.trialEnd,
    current_period_end: row.currentPeriodEnd,
    cancel_at_period_end: row.cancelAtPeriodEnd,
    cancel_at: row.cancelAt,
    canceled_at: row.canceledAt,
    ended_at: row.endedAt,
    cancellation_reason: row.cancellationReason,
    cancellation_feedback: row.cancellationFeedback,
    cancellation_comment: row.cancellationComment,
    stripe_created: row.stripeCreated,
    version_rank: subscriptionStatusRank(row.status),
    version_created: created,
    version_event_id: eventId,
  }));
  await db`
    with r as (
      select * from jsonb_to_recordset(${json(rows)}::text::jsonb) as r(id text, customer_id text, status text, currency text,
        mrr_minor bigint, items jsonb, trial_start timestamptz, trial_end timestamptz, current_period_end timestamptz,
        cancel_at_period_end boolean, cancel_at timestamptz, canceled_at timestamptz, ended_at timestamptz,
        cancellation_reason text, cancellation_feedback text, cancellation_comment text, stripe_created timestamptz,
        version_rank int, version_created timestamptz, version_event_id text))
    insert into subscriptions (
        id, customer_id, status, currency, mrr_minor, items, trial_start, trial_end, current_period_end,
        cancel_at_period_end, cancel_at, canceled_at, ended_at, cancellation_reason, cancellation_feedback,
        cancellation_comment, stripe_created, version_rank, version_created, version_event_id, updated_at)
      select id, customer_id, status, currency, mrr_minor, items, trial_start, trial_end, current_period_end,
        cancel_at_period_end, cancel_at, canceled_at, ended_at, cancellation_reason, cancellation_feedback,
        cancellation_comment, stripe_created, version_rank, version_created, version_event_id, ${now}
      from r order by id
      on conflict (id) do update set
        customer_id = excluded.customer_id, status = excluded.status, currency = excluded.currency,
        mrr_minor = excluded.mrr_minor, items = excluded.items, trial_start = excluded.trial_start,
        trial_end = excluded.trial_end, current_period_end = excluded.current_period_end,
        cancel_at_period_end = excluded.cancel_at_period_end, cancel_at = excluded.cancel_at,
        canceled_at = excluded.canceled_at, ended_at = excluded.ended_at,
        cancellation_reason = excluded.cancellation_reason, cancellation_feedback = excluded.cancellation_feedback,
        cancellation_comment = excluded.cancellation_comment, stripe_created = excluded.stripe_created,
        version_rank = excluded.version_rank, version_created = excluded.version_created,
        version_event_id = excluded.version_event_id, updated_at = excluded.updated_at
      where (excluded.version_rank, excluded.version_created, excluded.version_event_id)
          > (subscriptions.version_rank, subscriptions.version_created, subscriptions.version_event_id)`.execute();
}

// ---------------------------------------------------------------------------------------------
// MRR changes
//
// subscription.mrr_changed is an event: the change from the snapshot before a
// customer.subscription.updated snapshot in event time (not the one held when it arrived) to it,
// within one currency. Every snapshot is kept in subscription_versions, and the recorded changes
// of a subscription are always those of its known history: a late older snapshot adds its own
// change and moves the next one's `from` (or makes it no change at all), so whatever the arrival
// order, the complete history gives the same facts. The key names the change
// (`<subscription>:<new MRR>:<event time>`): redeliveries and twin events give one fact.
// A correction does not undo what the engine already did with the corrected fact.
//
// A batch replays its snapshots one at a time in memory over the history read before it (as
// one-at-a-time projection would: which event first makes a change known decides where its fact
// goes in the feed order), then writes the difference: inserts with the batch's facts,
// corrections (new from/delta, removal) just before them.

interface MrrVersion {
  subscription_id: string;
  at: number;
  event_id: string;
  event_type: string;
  customer_id: string;
  status: string;
  currency: string;
  mrr: number;
}

interface MrrHistory {
  versions: MrrVersion[];
  /** recorded changes after each subscription's seed version (those up to it are left alone) */
  recorded: { dedupe_key: string; subject_id: string; properties: Record<string, unknown> }[];
}

interface MrrPlan {
  inserts: FactRow[];
  updates: { key: string; properties: Record<string, unknown> }[];
  deletes: string[];
}

/**
 * The history of the batch's subscriptions before the batch (issue before its versions are
 * inserted). Facts up to a subscription's seed version (the snapshot it held when the history
 * began, migration 0014) are not read: the snapshots before it are unknown.
 */
async function readMrrHistory(db: Queryable, versions: Versioned<SubscriptionRow>[]): Promise<MrrHistory> {
  const subs = [...new Set(versions.map((v) => v.row.id))].sort();
  const customers = [...new Set(versions.map((v) => v.row.customerId))].sort();
  const [stored, recorded] = await Promise.all([
    db<(Omit<MrrVersion, 'at'> & { at: Date })[]>`
      select subscription_id, version_created as at, version_event_id as event_id, event_type, customer_id, status, currency, mrr_minor::float8 as mrr
      from subscription_versions where subscription_id = any(${subs}::text[])`.execute(),
    db<MrrHistory['recorded']>`
      select e.dedupe_key, e.subject_id, e.properties from domain_events e
      where e.name = 'subscription.mrr_changed' and e.stripe_customer_id = any(${customers}::text[]) and e.subject_id = any(${subs}::text[])
        and e.occurred_at > coalesce((select max(s.version_created) from subscription_versions s
                                      where s.subscription_id = e.subject_id and s.event_type = 'seed'), '-infinity')`.execute(),
  ]);
  return { versions: stored.map((v) => ({ ...v, at: v.at.getTime() })), recorded: [...recorded] };
}

async function insertSubscriptionVersions(db: Queryable, versions: (Versioned<SubscriptionRow> & { type: string })[]): Promise<void> {
  const rows = versions.map(({ row, created, eventId, type }) => ({
    subscription_id: row.id,
    version_created: created,
    version_event_id: eventId,
    event_type: type,
    customer_id: row.customerId,
    status: row.status,
    currency: row.currency,
    mrr_minor: row.mrrMinor,
  }));
  await db`
    insert into subscription_versions (subscription_id, version_created, version_event_id, event_type, customer_id, status, currency, mrr_minor)
    select r.subscription_id, r.version_created, r.version_event_id, r.event_type, r.customer_id, r.status, r.currency, r.mrr_minor
    from jsonb_to_recordset(${json(rows)}::text::jsonb) as r(subscription_id text, version_created timestamptz, version_event_id text,
      event_type text, customer_id text, status text, currency text, mrr_minor bigint)
    order by 1, 2, 3
    on conflict do nothing`.execute();
}

type MrrChange = { version: MrrVersion; properties: Record<string, unknown> };

/** The changes of one subscription's history, by key. */
function mrrChanges(history: MrrVersion[]): Map<string, MrrChange> {
  const sorted = [...history].sort((a, b) => a.at - b.at || (a.event_id < b.event_id ? -1 : a.event_id > b.event_id ? 1 : 0));
  const out = new Map<string, MrrChange>();
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!;
    const v = sorted[i]!;
    if (v.event_type !== 'customer.subscription.updated' || prev.currency !== v.currency || prev.mrr === v.mrr) continue;
    const key = `subscription.mrr_changed:${v.subscription_id}:${v.mrr}:${v.at / 1000}`;
    if (out.has(key)) continue; // the first change of that amount at that instant names it
    out.set(key, {
      version: v,
      properties: { subscriptionId: v.subscription_id, customerId: v.customer_id, status: v.status, mrr: v.mrr, currency: v.currency, from: prev.mrr, to: v.mrr, delta: v.mrr - prev.mrr },
    });
  }
  return out;
}

/** JSON with sorted keys: jsonb does not keep key order. */
const canonical = (value: unknown): string =>
  JSON.stringify(value, (_k, v: unknown) => (v && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : 1))) : v));

/** Replays the batch's snapshots over the history (see the section comment). */
function planMrr(plan: Plan, history: MrrHistory): MrrPlan {
  const out: MrrPlan = { inserts: [], updates: [], deletes: [] };
  for (const sub of new Set(plan.subscriptions.map((v) => v.row.id))) {
    const versions = history.versions.filter((v) => v.subscription_id === sub);
    const seen = new Set(versions.map((v) => `${v.at}|${v.event_id}`));
    const initial = new Map(history.recorded.filter((r) => r.subject_id === sub).map((r) => [r.dedupe_key, canonical(r.properties)]));
    const current = new Map(initial);
    /** per key: the change, the batch position that (last) inserted it, whether it was deleted meanwhile */
    const fate = new Map<string, { change: MrrChange | null; insertedAt: number | null; deleted: boolean }>();
    for (const item of plan.subscriptions.filter((v) => v.row.id === sub)) {
      const id = `${item.created.getTime()}|${item.eventId}`;
      if (seen.has(id)) continue;
      seen.add(id);
      versions.push({ subscription_id: sub, at: item.created.getTime(), event_id: item.eventId, event_type: item.type, customer_id: item.row.customerId, status: item.row.status, currency: item.row.currency, mrr: item.row.mrrMinor });
      const desired = mrrChanges(versions);
      for (const [key, change] of desired) {
        const before = current.get(key);
        const f = fate.get(key) ?? { change: null, insertedAt: null, deleted: false };
        if (before === undefined) f.insertedAt = item.pos;
        f.change = change;
        fate.set(key, f);
        current.set(key, canonical(change.properties));
      }
      for (const key of [...current.keys()]) {
        if (desired.has(key)) continue;
        current.delete(key);
        const f = fate.get(key) ?? { change: null, insertedAt: null, deleted: false };
        f.deleted = true;
        f.change = null;
        f.insertedAt = null;
        fate.set(key, f);
      }
    }
    for (const [key, f] of fate) {
      const was = initial.get(key);
      if (f.change === null) {
        if (was !== undefined) out.deletes.push(key);
        continue;
      }
      if (was !== undefined && f.insertedAt === null) {
        if (was !== canonical(f.change.properties)) out.updates.push({ key, properties: f.change.properties });
        continue;
      }
      // New, or removed and made again within the batch (one at a time, it would get a new id).
      if (was !== undefined) out.deletes.push(key);
      const v = f.change.version;
      out.inserts.push({
        pos: f.insertedAt!,
        name: 'subscription.mrr_changed',
        dedupe_key: key,
        source_id: v.event_id,
        cid: v.customer_id,
        subject_id: sub,
        properties: f.change.properties,
        occurred_at: new Date(v.at),
      });
    }
  }
  return out;
}

/** The new changes join the batch's facts at the position that made them known, after that event's own facts. */
function mergeMrrFacts(facts: FactRow[], inserts: FactRow[]): void {
  if (inserts.length === 0) return;
  const merged = [...facts, ...inserts].map((f, n) => ({ f, n })).sort((a, b) => a.f.pos - b.f.pos || a.n - b.n).map((x) => x.f);
  facts.splice(0, facts.length, ...merged);
}

/** Recorded MRR changes whose pair moved (a late older snapshot): new from/delta, or removed. */
function correctMrrFacts(db: Queryable, mrr: MrrPlan): Promise<unknown>[] {
  const pending: Promise<unknown>[] = [];
  if (mrr.updates.length > 0) {
    pending.push(db`
      update domain_events e set properties = u.properties
      from jsonb_to_recordset(${json(mrr.updates)}::text::jsonb) as u(key text, properties jsonb)
      where e.dedupe_key = u.key`.execute());
  }
  if (mrr.deletes.length > 0) pending.push(db`delete from domain_events where dedupe_key = any(${mrr.deletes}::text[])`.execute());
  return pending;
}

// ---------------------------------------------------------------------------------------------
// Facts

/**
 * Every fact of the batch in one insert, in batch order (domain_events.id is the engine's feed
 * order), each on its customer's contact (set by resolveCustomerContacts just before, in the
 * same pipeline) and account. Returns the dedupe keys that were new. A constant NOTIFY payload:
 * Postgres folds identical notifications of one transaction into one at commit.
 */
async function insertFacts(db: Queryable, facts: FactRow[], now: Date): Promise<string[]> {
  const rows = facts.map((f, n) => ({ n, name: f.name, dedupe_key: f.dedupe_key, source_id: f.source_id, cid: f.cid, subject_id: f.subject_id, properties: f.properties, occurred_at: f.occurred_at }));
  const [inserted] = await Promise.all([
    db<{ dedupe_key: string }[]>`
      insert into domain_events
        (name, source, source_id, dedupe_key, contact_id, account_id, stripe_customer_id, subject_id, properties, occurred_at, recorded_at)
      select f.name, 'stripe', f.source_id, f.dedupe_key, c.contact_id,
             coalesce((select a.id from accounts a where a.stripe_customer_id = f.cid order by a.id limit 1),
                      (select m.account_id from account_members m where m.contact_id = c.contact_id order by m.joined_at limit 1)),
             f.cid, f.subject_id, f.properties, f.occurred_at, ${now}
      from jsonb_to_recordset(${json(rows)}::text::jsonb) as f(name text, dedupe_key text, source_id text, cid text,
        subject_id text, properties jsonb, occurred_at timestamptz, n bigint)
      left join customers c on c.id = f.cid
      order by f.n
      on conflict (dedupe_key) do nothing
      returning dedupe_key`.execute(),
    // Sent even when every fact was a duplicate: a spare wake-up costs the engine one empty look.
    db`select pg_notify(${DOMAIN_EVENT_CHANNEL}, '')`.execute(),
  ]);
  return inserted.map((r) => r.dedupe_key);
}
