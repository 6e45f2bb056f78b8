// Normalizers from Stripe objects (any API version we have seen) to our domain rows.
// Stripe moves fields between versions (invoice.subscription → parent.subscription_details,
// subscription.current_period_end → items.data[].current_period_end, plan → price) and enums
// grow: every reader here prefers the current shape, falls back to the legacy one, and
// tolerates unknown values.

type Obj = Record<string, unknown>;

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const str = (v: unknown): string | null => (typeof v === 'string' && v !== '' ? v : null);
const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);
const int = (v: unknown, fallback = 0): number => (typeof v === 'number' && Number.isFinite(v) ? Math.round(v) : fallback);
/** An id field may be a string or an expanded object. */
export const idOf = (v: unknown): string | null => (isObj(v) ? str(v.id) : str(v));
const unixToDate = (v: unknown): Date | null => (typeof v === 'number' && v > 0 ? new Date(v * 1000) : null);

// ---------------------------------------------------------------------------------------------
// Invoices

export const INVOICE_STATUS_RANK: Record<string, number> = {
  draft: 0,
  open: 1,
  uncollectible: 2,
  paid: 3,
  void: 3,
};

/**
 * An invoice's status only moves forward (draft → open → uncollectible → paid | void), so the
 * rank is the first part of the ordering key: a late `payment_failed` (open) can never reopen
 * a paid invoice, whatever the arrival order or timestamps.
 */
export function invoiceStatusRank(status: string): number {
  return INVOICE_STATUS_RANK[status] ?? 1;
}

export interface InvoiceRow {
  id: string;
  customerId: string;
  customerEmail: string | null;
  customerName: string | null;
  subscriptionId: string | null;
  status: string;
  currency: string;
  amountDue: number;
  amountPaid: number;
  amountRemaining: number;
  attemptCount: number;
  nextPaymentAttempt: Date | null;
  hostedInvoiceUrl: string | null;
  billingReason: string | null;
  paidAt: Date | null;
  stripeCreated: Date | null;
  livemode: boolean;
  /** legacy shapes only */
  paymentIntentId: string | null;
  chargeId: string | null;
}

export function parseInvoice(o: Obj): InvoiceRow | null {
  const id = str(o.id);
  const customerId = idOf(o.customer);
  if (!id || !customerId || o.object !== 'invoice') return null;
  const parent = isObj(o.parent) ? o.parent : null;
  const subDetails = parent && isObj(parent.subscription_details) ? parent.subscription_details : null;
  const transitions = isObj(o.status_transitions) ? o.status_transitions : null;
  const status = str(o.status) ?? 'open';
  return {
    id,
    customerId,
    customerEmail: str(o.customer_email),
    customerName: str(o.customer_name),
    subscriptionId: idOf(subDetails?.subscription) ?? idOf(o.subscription),
    status,
    currency: (str(o.currency) ?? 'usd').toLowerCase(),
    amountDue: int(o.amount_due),
    amountPaid: int(o.amount_paid),
    amountRemaining: int(o.amount_remaining, int(o.amount_due) - int(o.amount_paid)),
    attemptCount: int(o.attempt_count),
    nextPaymentAttempt: unixToDate(o.next_payment_attempt),
    hostedInvoiceUrl: str(o.hosted_invoice_url),
    billingReason: str(o.billing_reason),
    paidAt: unixToDate(transitions?.paid_at) ?? (status === 'paid' ? unixToDate(o.webhooks_delivered_at) : null),
    stripeCreated: unixToDate(o.created),
    livemode: o.livemode === true,
    paymentIntentId: idOf(o.payment_intent),
    chargeId: idOf(o.charge),
  };
}

// ---------------------------------------------------------------------------------------------
// Subscriptions

export interface SubscriptionItem {
  priceId: string | null;
  productId: string | null;
  quantity: number;
  unitAmount: number | null;
  interval: string | null;
  intervalCount: number;
  /** this item's contribution to MRR in minor units */
  mrr: number;
}

export interface SubscriptionRow {
  id: string;
  customerId: string;
  status: string;
  currency: string;
  mrrMinor: number;
  items: SubscriptionItem[];
  trialStart: Date | null;
  trialEnd: Date | null;
  currentPeriodEnd: Date | null;
  cancelAtPeriodEnd: boolean;
  cancelAt: Date | null;
  canceledAt: Date | null;
  endedAt: Date | null;
  cancellationReason: string | null;
  cancellationFeedback: string | null;
  cancellationComment: string | null;
  stripeCreated: Date | null;
}

/** Terminal statuses win ties and can never be overwritten by a non-terminal snapshot. */
export function subscriptionStatusRank(status: string): number {
  return status === 'canceled' || status === 'incomplete_expired' ? 1 : 0;
}

// Monthly factor per billing interval. A year is 12 months; a week 52/12 months; a day 365/12.
const MONTHS_PER_INTERVAL: Record<string, number> = { month: 1, year: 12, week: 12 / 52, day: 12 / 365 };

/**
 * Monthly recurring revenue of one price × quantity, in minor units, rounded to the unit.
 * Metered and tiered prices (no unit amount) contribute 0: their revenue is not recurring.
 */
export function monthlyAmount(unitAmount: number | null, quantity: number, interval: string | null, intervalCount: number): number {
  if (unitAmount === null || !interval) return 0;
  const months = (MONTHS_PER_INTERVAL[interval] ?? 0) * Math.max(1, intervalCount);
  if (months === 0) return 0;
  return Math.round((unitAmount * quantity) / months);
}

function parseItem(item: Obj, fallbackQuantity: number): SubscriptionItem {
  const price = isObj(item.price) ? item.price : isObj(item.plan) ? item.plan : {};
  const recurring = isObj(price.recurring) ? price.recurring : null;
  // Legacy `plan` objects carry `amount` and `interval` at the top level.
  const unitAmount = num(price.unit_amount) ?? num(price.amount) ?? (str(price.unit_amount_decimal) ? Number(price.unit_amount_decimal) : null);
  const interval = str(recurring?.interval) ?? str(price.interval);
  const intervalCount = int(recurring?.interval_count ?? price.interval_count, 1) || 1;
  const quantity = int(item.quantity, fallbackQuantity);
  return {
    priceId: str(price.id),
    productId: idOf(price.product),
    quantity,
    unitAmount,
    interval,
    intervalCount,
    mrr: monthlyAmount(unitAmount, quantity, interval, intervalCount),
  };
}

export function parseSubscription(o: Obj): SubscriptionRow | null {
  const id = str(o.id);
  const customerId = idOf(o.customer);
  if (!id || !customerId || o.object !== 'subscription') return null;
  const itemsList = isObj(o.items) && Array.isArray(o.items.data) ? (o.items.data as unknown[]).filter(isObj) : [];
  let items = itemsList.map((i) => parseItem(i, 1));
  if (items.length === 0 && isObj(o.plan)) items = [parseItem({ plan: o.plan, quantity: o.quantity }, 1)];
  const details = isObj(o.cancellation_details) ? o.cancellation_details : null;
  const periodEnds = itemsList.map((i) => num(i.current_period_end)).filter((v): v is number => v !== null);
  const firstItemPrice = itemsList[0] && isObj(itemsList[0].price) ? itemsList[0].price : null;
  return {
    id,
    customerId,
    status: str(o.status) ?? 'active',
    currency: (str(o.currency) ?? str(firstItemPrice?.currency) ?? (isObj(o.plan) ? str(o.plan.currency) : null) ?? 'usd').toLowerCase(),
    mrrMinor: items.reduce((sum, i) => sum + i.mrr, 0),
    items,
    trialStart: unixToDate(o.trial_start),
    trialEnd: unixToDate(o.trial_end),
    currentPeriodEnd: unixToDate(periodEnds.length ? Math.max(...periodEnds) : o.current_period_end),
    cancelAtPeriodEnd: o.cancel_at_period_end === true,
    cancelAt: unixToDate(o.cancel_at),
    canceledAt: unixToDate(o.canceled_at),
    endedAt: unixToDate(o.ended_at),
    cancellationReason: str(details?.reason),
    cancellationFeedback: str(details?.feedback),
    cancellationComment: str(details?.comment),
    stripeCreated: unixToDate(o.created),
  };
}

// ---------------------------------------------------------------------------------------------
// Customers

export interface CustomerRow {
  id: string;
  email: string | null;
  name: string | null;
  deleted: boolean;
  livemode: boolean;
  defaultPaymentMethod: string | null;
  metadata: Record<string, unknown>;
}

export function parseCustomer(o: Obj): CustomerRow | null {
  const id = str(o.id);
  if (!id || o.object !== 'customer') return null;
  const settings = isObj(o.invoice_settings) ? o.invoice_settings : null;
  return {
    id,
    email: str(o.email),
    name: str(o.name),
    deleted: o.deleted === true,
    livemode: o.livemode === true,
    defaultPaymentMethod: idOf(settings?.default_payment_method) ?? idOf(o.default_source),
    metadata: isObj(o.metadata) ? o.metadata : {},
  };
}

// ---------------------------------------------------------------------------------------------
// Payment failures (decline detail lives on charges and payment intents, not on invoices)

export type DeclineClass = 'hard' | 'soft' | 'sca' | 'unknown';

// Retrying will not help without a new card (Stripe's decline-code docs; engineering notes).
const HARD_DECLINES = new Set([
  'incorrect_number',
  'invalid_number',
  'lost_card',
  'pickup_card',
  'stolen_card',
  'revocation_of_authorization',
  'revocation_of_all_authorizations',
  'highest_risk_level',
  'expired_card',
  'restricted_card',
  'invalid_account',
  'new_account_information_available',
  'do_not_honor_permanently',
]);
const SCA_CODES = new Set(['authentication_required', 'card_authentication_required']);

/** Hard (needs a new card), SCA (customer must confirm), soft (a retry may work). */
export function classifyDecline(codes: { failureCode?: string | null; declineCode?: string | null; adviceCode?: string | null }): DeclineClass {
  const { failureCode, declineCode, adviceCode } = codes;
  if ((declineCode && SCA_CODES.has(declineCode)) || (failureCode && SCA_CODES.has(failureCode))) return 'sca';
  if (adviceCode === 'do_not_try_again' || adviceCode === 'confirm_card_data') return 'hard';
  if ((declineCode && HARD_DECLINES.has(declineCode)) || (failureCode && HARD_DECLINES.has(failureCode))) return 'hard';
  if (declineCode || failureCode || adviceCode) return 'soft';
  return 'unknown';
}

export interface PaymentFailure {
  customerId: string | null;
  invoiceId: string | null;
  paymentIntentId: string | null;
  chargeId: string | null;
  amount: number | null;
  currency: string | null;
  failureCode: string | null;
  declineCode: string | null;
  adviceCode: string | null;
  declineClass: DeclineClass;
  message: string | null;
}

/** From a `charge.failed` charge or a `payment_intent.payment_failed` payment intent. */
export function parsePaymentFailure(o: Obj): PaymentFailure | null {
  if (o.object === 'charge') {
    const outcome = isObj(o.outcome) ? o.outcome : null;
    const failureCode = str(o.failure_code);
    // For card declines, the charge's outcome.reason carries the decline code.
    const declineCode = str(outcome?.reason) ?? (failureCode && failureCode !== 'card_declined' ? failureCode : null);
    const adviceCode = str(outcome?.advice_code);
    return {
      customerId: idOf(o.customer),
      invoiceId: idOf(o.invoice),
      paymentIntentId: idOf(o.payment_intent),
      chargeId: str(o.id),
      amount: num(o.amount),
      currency: str(o.currency)?.toLowerCase() ?? null,
      failureCode,
      declineCode,
      adviceCode,
      declineClass: classifyDecline({ failureCode, declineCode, adviceCode }),
      message: str(o.failure_message),
    };
  }
  if (o.object === 'payment_intent') {
    const err = isObj(o.last_payment_error) ? o.last_payment_error : null;
    const failureCode = str(err?.code);
    const declineCode = str(err?.decline_code);
    const adviceCode = str(err?.advice_code) ?? str(err?.network_advice_code);
    return {
      customerId: idOf(o.customer),
      invoiceId: idOf(o.invoice),
      paymentIntentId: str(o.id),
      chargeId: idOf(err?.charge) ?? idOf(o.latest_charge),
      amount: num(o.amount),
      currency: str(o.currency)?.toLowerCase() ?? null,
      failureCode,
      declineCode,
      adviceCode,
      declineClass: classifyDecline({ failureCode, declineCode, adviceCode }),
      message: str(err?.message),
    };
  }
  return null;
}
