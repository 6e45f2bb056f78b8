// Which kind of decline an invoice's payment hit, read from the stored payment failures. Shared
// by the Stripe projection (for a batch of invoice facts) and the workflow context (for the one
// invoice a run is about), so the workflow core does not reach into the projector.
import type { Queryable } from '../db/connection.ts';
import type { DeclineClass } from './shapes.ts';

export type Decline = { declineClass: DeclineClass; declineCode: string | null };

/** A charge/payment-intent failure without an invoice id explains an invoice's failure within this window. */
export const DECLINE_WINDOW_MS = 15 * 60_000;

/**
 * Whether a stored failure tells how an invoice's payment was declined: it names the invoice,
 * shares its payment intent, or (naming no invoice) is the same customer's within ±15 minutes.
 * The in-memory twin of lookupDeclines' three branches.
 */
export function failureExplains(
  failure: { invoiceId: string | null; paymentIntentId: string | null; customerId: string | null; occurredAt: Date },
  invoice: { invoiceId: string; customerId: string; paymentIntentId: string | null; around: Date },
): boolean {
  return (
    failure.invoiceId === invoice.invoiceId ||
    (invoice.paymentIntentId !== null && failure.paymentIntentId === invoice.paymentIntentId) ||
    (failure.invoiceId === null && failure.customerId === invoice.customerId &&
      Math.abs(failure.occurredAt.getTime() - invoice.around.getTime()) <= DECLINE_WINDOW_MS)
  );
}

export interface DeclineLookup {
  pos: number;
  invoiceId: string;
  customerId: string;
  paymentIntentId: string | null;
  around: Date;
}

/**
 * What kind of decline an invoice's payment hit (one invoice, read from the database; the
 * workflow context uses it). The batch does the same look-up for many invoices at once
 * (lookupDeclines + mergeDeclines).
 */
export async function invoiceDecline(
  db: Queryable,
  inv: { id: string; customerId: string; paymentIntentId?: string | null },
  around: Date,
): Promise<Decline> {
  const [row] = await lookupDeclines(db, [{ pos: 0, invoiceId: inv.id, customerId: inv.customerId, paymentIntentId: inv.paymentIntentId ?? null, around }]);
  return row ? { declineClass: row.decline_class, declineCode: row.decline_code } : { declineClass: 'unknown', declineCode: null };
}


export interface StoredDecline {
  pos: number;
  decline_class: DeclineClass;
  decline_code: string | null;
  occurred_at: Date;
}

/**
 * What kind of decline an invoice's payment hit, as far as the failures stored before this
 * batch tell. Invoices in current API versions carry no decline detail; it arrives on
 * `charge.failed` / `payment_intent.payment_failed`, which link to the invoice by id (older
 * shapes), by payment intent, or, failing both, by customer and time (±15 minutes).
 */
export async function lookupDeclines(db: Queryable, lookups: DeclineLookup[]): Promise<StoredDecline[]> {
  const rows = lookups.map((l) => ({ pos: l.pos, invoice_id: l.invoiceId, pi: l.paymentIntentId, customer_id: l.customerId, around: l.around }));
  return db<StoredDecline[]>`
    select q.pos, d.decline_class, d.decline_code, d.occurred_at
    from jsonb_to_recordset(${JSON.stringify(rows)}::text::jsonb) as q(pos int, invoice_id text, pi text, customer_id text, around timestamptz)
    -- Three branches, each on an index (an OR across them would scan payment_failures once
    -- per look-up); the payment intent branch runs only for legacy invoices that carry one.
    join lateral (
      select m.decline_class, m.decline_code, m.occurred_at from (
        select pf.id, pf.decline_class, coalesce(pf.decline_code, pf.failure_code) as decline_code, pf.occurred_at
        from payment_failures pf where pf.invoice_id = q.invoice_id and pf.decline_class <> 'unknown'
        union all
        select pf.id, pf.decline_class, coalesce(pf.decline_code, pf.failure_code), pf.occurred_at
        from payment_failures pf where q.pi is not null and pf.payment_intent_id = q.pi and pf.decline_class <> 'unknown'
        union all
        select pf.id, pf.decline_class, coalesce(pf.decline_code, pf.failure_code), pf.occurred_at
        from payment_failures pf
        where pf.customer_id = q.customer_id and pf.invoice_id is null and pf.decline_class <> 'unknown'
          and pf.occurred_at between q.around - interval '15 minutes' and q.around + interval '15 minutes') m
      order by m.occurred_at desc, m.id desc
      limit 1) d on true`.execute();
}
