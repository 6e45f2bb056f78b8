// Pay as soon as the card is fixed (issue 13). When a customer's payment method changes, their
// open failed invoices are paid at once with `invoices.pay` instead of waiting days for Stripe's
// next scheduled retry.
//
// Shape: the Stripe inbox (in the projection's transaction) turns card-change events into work
// items, one per (open failed invoice, card): the item's primary key is what makes "once per
// invoice and payment method" hold when payment_method.attached, customer.updated,
// setup_intent.succeeded and payment_method.automatically_updated all arrive, twice, in any
// order. A work queue (work-queue.ts: leases, fencing, backoff, dead letters) then makes the
// Stripe call outside the webhook request, under an idempotency key named after the item, so a
// retried item (crash, timeout, lost lease) cannot charge twice.
//
// Before each attempt a pure decision (decideCardUpdatePayment) checks the card networks' retry
// rules and the card's decline history; its answer, with the reason, is kept on the item and
// written to the billing-recovery run's decision trace (run_trace kind 'action').
import type Stripe from 'stripe';
import type { Logger } from 'pino';
import type { Clock } from '../clock.ts';
import type { Queryable, Sql, Tx } from '../db/connection.ts';
import { createWorkQueue, drainBatches, failureText, type QueueSpec, type WorkQueue } from '../work/work-queue.ts';
import type { StripeEnvelope } from './event-inbox.ts';
import { classifyDecline, idOf } from './shapes.ts';

type Obj = Record<string, unknown>;

export const CARD_UPDATE_PAYMENTS_QUEUE: QueueSpec = {
  name: 'card-update-payments',
  table: 'card_update_payments',
  idType: 'text',
  order: 'created, id',
  columns: 'id, invoice_id, customer_id, payment_method_id, card_key, card_brand, created',
  doneColumn: 'done_at',
  partitions: 8,
  maxAttempts: 8,
  backoff: { baseMs: 30_000, maxMs: 3_600_000 },
  leaseMs: 120_000,
  analyzeEvery: 0,
};

/** The Stripe events that mean "the customer's card changed". */
export const CARD_CHANGE_EVENT_TYPES = ['payment_method.attached', 'customer.updated', 'setup_intent.succeeded', 'payment_method.automatically_updated'] as const;

export interface CardChange {
  customerId: string;
  paymentMethodId: string;
  /** per-card key: the method id, plus the new expiry when the card updater changed the card behind it */
  cardKey: string;
  brand: string | null;
  /** attached/setup events count only when the method is (by then) the customer's default */
  requiresDefault: boolean;
  eventId: string;
  type: string;
  created: Date;
}

/** The card change an event describes, or null. Pure. */
export function cardChangeOf(event: StripeEnvelope): CardChange | null {
  const object = (event.data?.object ?? {}) as Obj;
  const base = { eventId: event.id, type: event.type, created: new Date(event.created * 1000) };
  const card = (object.card ?? {}) as Obj;
  const brand = typeof card.brand === 'string' ? card.brand : null;
  switch (event.type) {
    case 'payment_method.attached':
    case 'payment_method.automatically_updated': {
      const customerId = idOf(object.customer);
      const pm = idOf(object.id);
      if (!customerId || !pm) return null;
      const auto = event.type === 'payment_method.automatically_updated';
      // The card updater keeps the method id; the card behind it (expiry) is what changed.
      const cardKey = auto ? `${pm}@${String(card.exp_year ?? '')}-${String(card.exp_month ?? '')}` : pm;
      return { ...base, customerId, paymentMethodId: pm, cardKey, brand, requiresDefault: !auto };
    }
    case 'setup_intent.succeeded': {
      const customerId = idOf(object.customer);
      const pm = idOf(object.payment_method);
      if (!customerId || !pm) return null;
      return { ...base, customerId, paymentMethodId: pm, cardKey: pm, brand: null, requiresDefault: true };
    }
    case 'customer.updated': {
      const previous = (event.data as { previous_attributes?: Obj }).previous_attributes;
      const prevSettings = previous?.invoice_settings as Obj | undefined;
      if (!prevSettings || !('default_payment_method' in prevSettings)) return null;
      const settings = (object.invoice_settings ?? {}) as Obj;
      const pm = idOf(settings.default_payment_method);
      const customerId = idOf(object.id);
      if (!customerId || !pm) return null;
      return { ...base, customerId, paymentMethodId: pm, cardKey: pm, brand: null, requiresDefault: false };
    }
    default:
      return null;
  }
}

/**
 * In the projection's transaction, after the batch was projected: one work item per open failed
 * invoice of each customer whose card changed (duplicates fold into the existing item).
 */
export async function enqueueCardUpdatePayments(db: Queryable, events: readonly StripeEnvelope[]): Promise<number> {
  const changes = events.map(cardChangeOf).filter((c): c is CardChange => c !== null);
  if (changes.length === 0) return 0;
  const records = changes.map((c) => ({
    customer_id: c.customerId,
    pm: c.paymentMethodId,
    card_key: c.cardKey,
    brand: c.brand,
    event_id: c.eventId,
    type: c.type,
    created: c.created.toISOString(),
    requires_default: c.requiresDefault,
  }));
  const rows = await db`
    insert into card_update_payments (id, invoice_id, customer_id, payment_method_id, card_key, card_brand, trigger_event_id, trigger_type, created)
    select i.id || ':' || c.card_key, i.id, i.customer_id, c.pm, c.card_key, c.brand, c.event_id, c.type, c.created
    from jsonb_to_recordset(${db.json(records as never)}::jsonb)
      as c(customer_id text, pm text, card_key text, brand text, event_id text, type text, created timestamptz, requires_default boolean)
    join invoices i on i.customer_id = c.customer_id and i.status = 'open' and i.attempt_count > 0 and i.amount_remaining > 0
    left join customers cu on cu.id = c.customer_id
    where (not c.requires_default or cu.default_payment_method = c.pm)
      -- an open invoice of a canceled subscription is not a recovery to collect
      and not exists (select 1 from subscriptions s where s.id = i.subscription_id and s.status in ('canceled', 'incomplete_expired'))
    on conflict (id) do nothing
    returning id`;
  return rows.length;
}

// --- The decision (pure) -------------------------------------------------------------------

/**
 * Card networks' limits on re-attempting a declined card (merchant-initiated, per card).
 * Visa: 15 re-attempts in a rolling 30 days (Visa raised it to 20 from 19 May 2025; we keep the
 * stricter 15); Mastercard: 10 in 24 hours and 35 in 30 days. Source: Checkout.com, "When can I
 * retry a declined transaction?" (support.checkout.com/hc/en-us/articles/25482040901394) and
 * PayPal, "How to avoid excessive retries penalties". Other or unknown brands get the strictest
 * of both.
 */
export const CARD_NETWORK_LIMITS: Record<string, { per30Days: number; per24Hours: number | null }> = {
  visa: { per30Days: 15, per24Hours: null },
  mastercard: { per30Days: 35, per24Hours: 10 },
  default: { per30Days: 15, per24Hours: 10 },
};

export interface CardHistory {
  brand: string | null;
  /** attempts on this card (ours and Stripe's we know of) in the last 30 days / 24 hours */
  attempts30Days: number;
  attempts24Hours: number;
  /** the latest decline on this card (since it last changed) advised not to try again, or was hard */
  doNotTryAgain: boolean;
  hardDecline: boolean;
}

export type CardUpdateDecision = { pay: true; reason: string } | { pay: false; outcome: 'skipped' | 'blocked'; reason: string };

export function decideCardUpdatePayment(input: { enabled: boolean; invoiceStatus: string | null; amountRemaining: number; history: CardHistory }): CardUpdateDecision {
  const { history } = input;
  if (!input.enabled) return { pay: false, outcome: 'skipped', reason: 'RECOVERY_PAY_ON_CARD_UPDATE is off' };
  if (input.invoiceStatus !== 'open' || input.amountRemaining <= 0) return { pay: false, outcome: 'skipped', reason: `invoice is ${input.invoiceStatus ?? 'unknown'}, nothing to pay` };
  if (history.doNotTryAgain) return { pay: false, outcome: 'blocked', reason: 'the issuer advised do_not_try_again on this card: no attempt until the card changes' };
  if (history.hardDecline) return { pay: false, outcome: 'blocked', reason: 'hard decline on this card: no attempt until the card changes' };
  const brand = history.brand && CARD_NETWORK_LIMITS[history.brand] ? history.brand : 'default';
  const limits = CARD_NETWORK_LIMITS[brand]!;
  if (history.attempts30Days >= limits.per30Days) {
    return { pay: false, outcome: 'blocked', reason: `card network limit: ${history.attempts30Days} attempts on this ${brand === 'default' ? 'card' : brand + ' card'} in 30 days (limit ${limits.per30Days})` };
  }
  if (limits.per24Hours !== null && history.attempts24Hours >= limits.per24Hours) {
    return { pay: false, outcome: 'blocked', reason: `card network limit: ${history.attempts24Hours} attempts on this card in 24 hours (limit ${limits.per24Hours})` };
  }
  return { pay: true, reason: `card changed: paying now (${history.attempts30Days} of ${limits.per30Days} attempts in 30 days used)` };
}

// --- The worker ------------------------------------------------------------------------------

interface ItemRow {
  id: string;
  invoice_id: string;
  customer_id: string;
  payment_method_id: string;
  card_key: string;
  card_brand: string | null;
  created: Date;
}

export interface CardUpdatePayer {
  queue: WorkQueue;
  /** one batch; returns the number of items taken */
  runOnce(limit?: number): Promise<number>;
  /** until nothing is due */
  drain(): Promise<number>;
}

/** What the card's history says, from our attempts and the payment failures Stripe sent us. */
async function readCardHistory(tx: Tx, item: ItemRow, now: Date): Promise<CardHistory> {
  const day = new Date(now.getTime() - 86_400_000);
  const month = new Date(now.getTime() - 30 * 86_400_000);
  const [row] = await tx<{ brand: string | null; ours30: number; ours24: number; theirs30: number; theirs24: number; our_dnt: boolean; our_hard: boolean; their_dnt: boolean; their_hard: boolean }[]>`
    with since as (select min(created) as at from card_update_payments where card_key = ${item.card_key}),
    ours as (
      select * from card_update_payments where payment_method_id = ${item.payment_method_id} and outcome in ('paid', 'declined')),
    -- Failures Stripe reported for this customer since this card arrived were on this card
    -- (it is their default): counted towards its limit, conservatively.
    theirs as (
      select f.* from payment_failures f, since
      where f.customer_id = ${item.customer_id} and f.occurred_at >= since.at and f.failure_code is distinct from 'authentication_required'
        -- our own attempt's failure comes back as a webhook too: counted once, as ours
        and not exists (select 1 from ours o where o.invoice_id = f.invoice_id and abs(extract(epoch from f.occurred_at - o.decided_at)) < 600))
    select
      coalesce(${item.card_brand}, (select d.properties->>'brand' from domain_events d where d.subject_id = ${item.payment_method_id} and d.properties->>'brand' is not null order by d.occurred_at desc limit 1)) as brand,
      (select count(*)::int from ours where decided_at > ${month}) as ours30,
      (select count(*)::int from ours where decided_at > ${day}) as ours24,
      (select count(*)::int from theirs where occurred_at > ${month}) as theirs30,
      (select count(*)::int from theirs where occurred_at > ${day}) as theirs24,
      exists (select 1 from ours where card_key = ${item.card_key} and reason like '%advice_code=do_not_try_again%') as our_dnt,
      exists (select 1 from ours where card_key = ${item.card_key} and reason like '%class=hard%') as our_hard,
      exists (select 1 from theirs where advice_code = 'do_not_try_again') as their_dnt,
      exists (select 1 from theirs where decline_class = 'hard') as their_hard`;
  return {
    brand: row?.brand ?? null,
    attempts30Days: (row?.ours30 ?? 0) + (row?.theirs30 ?? 0),
    attempts24Hours: (row?.ours24 ?? 0) + (row?.theirs24 ?? 0),
    doNotTryAgain: Boolean(row?.our_dnt || row?.their_dnt),
    hardDecline: Boolean(row?.our_hard || row?.their_hard),
  };
}

/** The decision, on the item and in the billing-recovery run's decision trace (when there is a run). */
async function recordDecision(tx: Tx, item: ItemRow, outcome: string, reason: string, now: Date): Promise<void> {
  await tx`update card_update_payments set outcome = ${outcome}, reason = ${reason}, decided_at = ${now} where id = ${item.id}`;
  await tx`
    insert into run_trace (run_id, at, step_id, kind, detail, data)
    select r.id, ${now}, null, 'action', ${`pay on card update: ${outcome}: ${reason}`},
      ${tx.json({ action: 'pay_on_card_update', invoiceId: item.invoice_id, paymentMethodId: item.payment_method_id, outcome, reason } as never)}
    from workflow_runs r where r.workflow_key = 'billing-recovery' and r.run_key = ${item.invoice_id}`;
}

export function createCardUpdatePayer(deps: { sql: Sql; clock: Clock; logger: Pick<Logger, 'info' | 'warn'>; stripe: Stripe; enabled: boolean }): CardUpdatePayer {
  const { sql, clock, logger, stripe } = deps;
  const queue = createWorkQueue({ sql, clock }, CARD_UPDATE_PAYMENTS_QUEUE);

  async function runOnce(limit = 20): Promise<number> {
    return queue.runBatch<ItemRow>(limit, async (tx, rows, report) => {
      for (const item of rows) {
        const now = clock.now();
        const [invoice] = await tx<{ status: string; amount_remaining: number }[]>`select status, amount_remaining::int from invoices where id = ${item.invoice_id}`;
        const decision = decideCardUpdatePayment({ enabled: deps.enabled, invoiceStatus: invoice?.status ?? null, amountRemaining: invoice?.amount_remaining ?? 0, history: await readCardHistory(tx, item, now) });
        if (!decision.pay) {
          await recordDecision(tx, item, decision.outcome, decision.reason, now);
          continue;
        }
        try {
          await stripe.invoices.pay(item.invoice_id, { payment_method: item.payment_method_id }, { idempotencyKey: `lifeline-pay-on-card-update:${item.id}` });
          await recordDecision(tx, item, 'paid', decision.reason, now);
          logger.info({ invoiceId: item.invoice_id }, 'paid on card update');
        } catch (err) {
          const e = err as { type?: string; code?: string; decline_code?: string; advice_code?: string; statusCode?: number };
          if (e.type === 'StripeCardError') {
            // The decline itself reaches the case as any failure does (Stripe sends
            // invoice.payment_failed for this attempt); here it blocks further attempts on the card.
            const cls = classifyDecline({ failureCode: e.code ?? null, declineCode: e.decline_code ?? null, adviceCode: e.advice_code ?? null });
            await recordDecision(tx, item, 'declined', `declined: code=${e.code ?? ''} decline_code=${e.decline_code ?? ''} advice_code=${e.advice_code ?? ''} class=${cls}`, now);
          } else if (e.type === 'StripeInvalidRequestError' && e.statusCode === 400) {
            // e.g. the invoice was paid or voided meanwhile: nothing to retry.
            await recordDecision(tx, item, 'skipped', `Stripe refused: ${e.code ?? 'invalid_request'}`, now);
          } else {
            logger.warn({ invoiceId: item.invoice_id, type: e.type, status: e.statusCode }, 'pay on card update failed; will retry under the same idempotency key');
            report.fail(item.id, new Error(failureText(err)));
          }
        }
      }
    });
  }

  return {
    queue,
    runOnce,
    drain: () => drainBatches(runOnce),
  };
}
