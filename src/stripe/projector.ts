// Turns one stored Stripe event into domain state (customers, subscriptions, invoices, payment
// failures) and timeline facts. Order-independent by construction: every projected row keeps
// the ordering key of the snapshot it holds and an upsert only replaces it with a greater key,
// so the final state is the greatest snapshot whatever the arrival order; facts are
// deduplicated by a key derived from what they describe, not from the delivery.
import type { Queryable } from '../db/connection.ts';
import { accountForCustomer, contactForCustomer } from '../contacts/contact-store.ts';
import { recordDomainEvent, type DomainEventInput } from '../timeline/domain-event-store.ts';
import type { StripeEnvelope } from './event-inbox.ts';
import {
  idOf,
  invoiceStatusRank,
  parseCustomer,
  parseInvoice,
  parsePaymentFailure,
  parseSubscription,
  subscriptionStatusRank,
  type DeclineClass,
  type InvoiceRow,
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

export interface ProjectionResult {
  /** names of the timeline facts recorded (new ones only) */
  facts: string[];
}

export async function projectStripeEvent(db: Queryable, event: StripeEnvelope, now: Date): Promise<ProjectionResult> {
  const object = event.data.object as Obj;
  const created = new Date(event.created * 1000);
  const ctx: EventContext = { db, event, created, now, facts: [] };
  switch (object.object) {
    case 'customer':
      await projectCustomer(ctx, object);
      break;
    case 'invoice':
      await projectInvoice(ctx, object);
      break;
    case 'subscription':
      await projectSubscription(ctx, object);
      break;
    case 'charge':
    case 'payment_intent':
      if (event.type === 'charge.failed' || event.type === 'payment_intent.payment_failed') await projectPaymentFailure(ctx, object);
      break;
    case 'payment_method':
      await projectPaymentMethod(ctx, object);
      break;
    case 'checkout.session':
      if (event.type === 'checkout.session.completed') await projectCheckout(ctx, object);
      break;
    default:
      // Stored and acknowledged; nothing to project (unknown types are not errors).
      break;
  }
  return { facts: ctx.facts };
}

interface EventContext {
  db: Queryable;
  event: StripeEnvelope;
  created: Date;
  now: Date;
  facts: string[];
}

async function fact(
  ctx: EventContext,
  input: Omit<DomainEventInput, 'source' | 'sourceId' | 'occurredAt' | 'contactId' | 'accountId'> & { customer?: { email: string | null; name: string | null } },
): Promise<void> {
  let contactId: number | null = null;
  let accountId: number | null = null;
  if (input.stripeCustomerId) {
    const customer = await customerIdentity(ctx.db, input.stripeCustomerId, input.customer);
    contactId = await contactForCustomer(ctx.db, customer, ctx.now);
    accountId = await accountForCustomer(ctx.db, input.stripeCustomerId, contactId);
  }
  const { customer: _ignored, ...rest } = input;
  const id = await recordDomainEvent(
    ctx.db,
    { ...rest, source: 'stripe', sourceId: ctx.event.id, occurredAt: ctx.created, contactId, accountId },
    ctx.now,
  );
  if (id !== null) ctx.facts.push(input.name);
}

async function customerIdentity(db: Queryable, customerId: string, fallback?: { email: string | null; name: string | null }) {
  const [row] = await db<{ email: string | null; name: string | null }[]>`select email, name from customers where id = ${customerId}`;
  return { id: customerId, email: row?.email ?? fallback?.email ?? null, name: row?.name ?? fallback?.name ?? null };
}

/**
 * Invoices and subscriptions can arrive before their customer: keep a placeholder row (empty
 * version) that any real customer snapshot replaces, so emails and links still work.
 */
async function ensureCustomer(db: Queryable, customerId: string, email: string | null, name: string | null, now: Date): Promise<void> {
  await db`
    insert into customers (id, email, name, version_created, version_event_id, updated_at)
    values (${customerId}, ${email}, ${name}, 'epoch', '', ${now})
    on conflict (id) do update set
      email = coalesce(customers.email, excluded.email),
      name = coalesce(customers.name, excluded.name)
    where customers.version_event_id = ''`;
}

// ---------------------------------------------------------------------------------------------

async function projectCustomer(ctx: EventContext, object: Obj): Promise<void> {
  const c = parseCustomer(object);
  if (!c) return;
  const deleted = c.deleted || ctx.event.type === 'customer.deleted';
  await ctx.db`
    insert into customers (id, email, name, deleted, livemode, default_payment_method, metadata, version_created, version_event_id, updated_at)
    values (${c.id}, ${c.email}, ${c.name}, ${deleted}, ${c.livemode}, ${c.defaultPaymentMethod},
            ${JSON.stringify(c.metadata)}::text::jsonb, ${ctx.created}, ${ctx.event.id}, ${ctx.now})
    on conflict (id) do update set
      email = excluded.email, name = excluded.name, deleted = excluded.deleted, livemode = excluded.livemode,
      default_payment_method = excluded.default_payment_method, metadata = excluded.metadata,
      version_created = excluded.version_created, version_event_id = excluded.version_event_id, updated_at = excluded.updated_at
    where (customers.deleted = false or excluded.deleted)
      and (excluded.deleted::int, excluded.version_created, excluded.version_event_id)
        > (customers.deleted::int, customers.version_created, customers.version_event_id)`;
  if (!deleted) await contactForCustomer(ctx.db, { id: c.id, email: c.email, name: c.name }, ctx.now);

  // A customer who sets a new default payment method has fixed their card.
  const previous = ctx.event.data.previous_attributes as Obj | undefined;
  const prevSettings = previous?.invoice_settings as Obj | undefined;
  const pmChanged = (prevSettings && 'default_payment_method' in prevSettings) || (previous && 'default_source' in previous);
  if (ctx.event.type === 'customer.updated' && pmChanged && c.defaultPaymentMethod) {
    await fact(ctx, {
      name: 'payment_method.updated',
      dedupeKey: `payment_method.updated:${ctx.event.id}`,
      stripeCustomerId: c.id,
      subjectId: c.defaultPaymentMethod,
      properties: { customerId: c.id, paymentMethodId: c.defaultPaymentMethod, via: 'customer.updated' },
    });
  }
}

// ---------------------------------------------------------------------------------------------

async function projectInvoice(ctx: EventContext, object: Obj): Promise<void> {
  const inv = parseInvoice(object);
  if (!inv) return;
  await ensureCustomer(ctx.db, inv.customerId, inv.customerEmail, inv.customerName, ctx.now);
  await ctx.db`
    insert into invoices (
      id, customer_id, subscription_id, status, currency, amount_due, amount_paid, amount_remaining,
      attempt_count, next_payment_attempt, hosted_invoice_url, billing_reason, paid_at, stripe_created, livemode,
      version_rank, version_created, version_attempt, version_event_id, updated_at)
    values (
      ${inv.id}, ${inv.customerId}, ${inv.subscriptionId}, ${inv.status}, ${inv.currency}, ${inv.amountDue},
      ${inv.amountPaid}, ${inv.amountRemaining}, ${inv.attemptCount}, ${inv.nextPaymentAttempt},
      ${inv.hostedInvoiceUrl}, ${inv.billingReason}, ${inv.paidAt}, ${inv.stripeCreated}, ${inv.livemode},
      ${invoiceStatusRank(inv.status)}, ${ctx.created}, ${inv.attemptCount}, ${ctx.event.id}, ${ctx.now})
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
        > (invoices.version_rank, invoices.version_created, invoices.version_attempt, invoices.version_event_id)`;

  const type = ctx.event.type;
  if (type === 'invoice.payment_failed' || type === 'invoice.payment_action_required') {
    // The failure itself, even when the snapshot above was older than what we hold.
    const sca = type === 'invoice.payment_action_required';
    await ctx.db`
      insert into payment_failures (stripe_event_id, customer_id, invoice_id, payment_intent_id, charge_id, amount, currency,
                                    failure_code, decline_class, occurred_at)
      values (${ctx.event.id}, ${inv.customerId}, ${inv.id}, ${inv.paymentIntentId}, ${inv.chargeId}, ${inv.amountDue},
              ${inv.currency}, ${sca ? 'authentication_required' : null}, ${sca ? 'sca' : 'unknown'}, ${ctx.created})
      on conflict (stripe_event_id) do nothing`;
  }
  const name = INVOICE_FACTS[type];
  if (!name) return;
  const decline = name.startsWith('invoice.payment_') ? await invoiceDecline(ctx.db, inv, ctx.created) : null;
  await fact(ctx, {
    name,
    // Stripe may emit two events for one change: one fact per invoice (and attempt, for failures).
    dedupeKey: name.startsWith('invoice.payment_') ? `${name}:${inv.id}:${inv.attemptCount}` : `${name}:${inv.id}`,
    stripeCustomerId: inv.customerId,
    subjectId: inv.id,
    customer: { email: inv.customerEmail, name: inv.customerName },
    properties: invoiceProperties(inv, decline),
  });
}

function invoiceProperties(inv: InvoiceRow, decline: { declineClass: DeclineClass; declineCode: string | null } | null): Record<string, unknown> {
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

/**
 * What kind of decline an invoice's payment hit. Invoices in current API versions carry no
 * decline detail; it arrives on `charge.failed` / `payment_intent.payment_failed`, which link to
 * the invoice by id (older shapes), by payment intent, or, failing both, by customer and time.
 */
export async function invoiceDecline(
  db: Queryable,
  inv: { id: string; customerId: string; paymentIntentId?: string | null },
  around: Date,
): Promise<{ declineClass: DeclineClass; declineCode: string | null }> {
  const [row] = await db<{ decline_class: DeclineClass; decline_code: string | null }[]>`
    select decline_class, coalesce(decline_code, failure_code) as decline_code from payment_failures
    where decline_class <> 'unknown'
      and (invoice_id = ${inv.id}
        or (${inv.paymentIntentId ?? null}::text is not null and payment_intent_id = ${inv.paymentIntentId ?? null})
        or (invoice_id is null and customer_id = ${inv.customerId}
            and occurred_at between ${new Date(around.getTime() - 15 * 60_000)} and ${new Date(around.getTime() + 15 * 60_000)}))
    order by occurred_at desc, id desc
    limit 1`;
  return row ? { declineClass: row.decline_class, declineCode: row.decline_code } : { declineClass: 'unknown', declineCode: null };
}

// ---------------------------------------------------------------------------------------------

async function projectSubscription(ctx: EventContext, object: Obj): Promise<void> {
  const sub = parseSubscription(object);
  if (!sub) return;
  const status = ctx.event.type === 'customer.subscription.deleted' && sub.status !== 'incomplete_expired' ? 'canceled' : sub.status;
  const row: SubscriptionRow = { ...sub, status };
  await ensureCustomer(ctx.db, row.customerId, null, null, ctx.now);
  const [before] = await ctx.db<{ mrr_minor: number; currency: string; status: string }[]>`
    select mrr_minor, currency, status from subscriptions where id = ${row.id} for update`;
  const applied = await ctx.db`
    insert into subscriptions (
      id, customer_id, status, currency, mrr_minor, items, trial_start, trial_end, current_period_end,
      cancel_at_period_end, cancel_at, canceled_at, ended_at, cancellation_reason, cancellation_feedback,
      cancellation_comment, stripe_created, version_rank, version_created, version_event_id, updated_at)
    values (
      ${row.id}, ${row.customerId}, ${row.status}, ${row.currency}, ${row.mrrMinor}, ${JSON.stringify(row.items)}::text::jsonb,
      ${row.trialStart}, ${row.trialEnd}, ${row.currentPeriodEnd}, ${row.cancelAtPeriodEnd}, ${row.cancelAt},
      ${row.canceledAt}, ${row.endedAt}, ${row.cancellationReason}, ${row.cancellationFeedback},
      ${row.cancellationComment}, ${row.stripeCreated}, ${subscriptionStatusRank(row.status)}, ${ctx.created},
      ${ctx.event.id}, ${ctx.now})
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
        > (subscriptions.version_rank, subscriptions.version_created, subscriptions.version_event_id)
    returning id`;

  const props = {
    subscriptionId: row.id,
    customerId: row.customerId,
    status: row.status,
    mrr: row.mrrMinor,
    currency: row.currency,
  };
  const name = SUBSCRIPTION_FACTS[ctx.event.type];
  if (name) {
    await fact(ctx, {
      name,
      dedupeKey: `${name}:${row.id}`,
      stripeCustomerId: row.customerId,
      subjectId: row.id,
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
    });
  }
  if (ctx.event.type === 'customer.subscription.updated') {
    const previous = ctx.event.data.previous_attributes as Obj | undefined;
    if (previous && typeof previous.status === 'string' && previous.status !== row.status) {
      await fact(ctx, {
        name: 'subscription.status_changed',
        dedupeKey: `subscription.status_changed:${ctx.event.id}`,
        stripeCustomerId: row.customerId,
        subjectId: row.id,
        properties: { ...props, from: previous.status, to: row.status },
      });
    }
    // An upgrade or downgrade: only when this snapshot was newer than the one we held, and
    // only within one currency (amounts of different currencies are never compared).
    if (applied.length > 0 && before && before.currency === row.currency && before.mrr_minor !== row.mrrMinor) {
      await fact(ctx, {
        name: 'subscription.mrr_changed',
        dedupeKey: `subscription.mrr_changed:${ctx.event.id}`,
        stripeCustomerId: row.customerId,
        subjectId: row.id,
        properties: { ...props, from: before.mrr_minor, to: row.mrrMinor, delta: row.mrrMinor - before.mrr_minor },
      });
    }
  }
}

// ---------------------------------------------------------------------------------------------

async function projectPaymentFailure(ctx: EventContext, object: Obj): Promise<void> {
  const f = parsePaymentFailure(object);
  if (!f) return;
  await ctx.db`
    insert into payment_failures (stripe_event_id, customer_id, invoice_id, payment_intent_id, charge_id, amount, currency,
                                  failure_code, decline_code, advice_code, decline_class, message, occurred_at)
    values (${ctx.event.id}, ${f.customerId}, ${f.invoiceId}, ${f.paymentIntentId}, ${f.chargeId}, ${f.amount}, ${f.currency},
            ${f.failureCode}, ${f.declineCode}, ${f.adviceCode}, ${f.declineClass}, ${f.message}, ${ctx.created})
    on conflict (stripe_event_id) do nothing`;
}

async function projectPaymentMethod(ctx: EventContext, object: Obj): Promise<void> {
  const customerId = idOf(object.customer);
  const id = idOf(object.id);
  if (!customerId || !id) return;
  const type = ctx.event.type;
  const name =
    type === 'payment_method.automatically_updated'
      ? 'payment_method.automatically_updated'
      : type === 'payment_method.attached' || type === 'payment_method.updated'
        ? 'payment_method.updated'
        : null;
  if (!name) return;
  await ensureCustomer(ctx.db, customerId, null, null, ctx.now);
  const card = (object.card ?? {}) as Obj;
  await fact(ctx, {
    name,
    dedupeKey: `${name}:${ctx.event.id}`,
    stripeCustomerId: customerId,
    subjectId: id,
    // Card brand and expiry only: never numbers or fingerprints.
    properties: { customerId, paymentMethodId: id, type: object.type ?? null, brand: card.brand ?? null, expMonth: card.exp_month ?? null, expYear: card.exp_year ?? null, via: type },
  });
}

async function projectCheckout(ctx: EventContext, object: Obj): Promise<void> {
  const customerId = idOf(object.customer);
  if (!customerId) return;
  const details = (object.customer_details ?? {}) as Obj;
  const email = typeof details.email === 'string' ? details.email : null;
  const name = typeof details.name === 'string' ? details.name : null;
  await ensureCustomer(ctx.db, customerId, email, name, ctx.now);
  await fact(ctx, {
    name: 'checkout.completed',
    dedupeKey: `checkout.completed:${String(object.id)}`,
    stripeCustomerId: customerId,
    subjectId: idOf(object.id),
    customer: { email, name },
    properties: { sessionId: object.id, customerId, subscriptionId: idOf(object.subscription), mode: object.mode ?? null, amountTotal: object.amount_total ?? null, currency: object.currency ?? null },
  });
}
