// Gathers, from Postgres, everything the pure interpreter may read about one contact: traits,
// account, the invoice/subscription a run is about, counts its conditions need, and the
// cross-workflow policy inputs (open recovery case, last capped send, suppression).
import type { Queryable } from '../db/connection.ts';
import type { Config } from '../config.ts';
import { invoiceDecline } from '../stripe/projector.ts';
import { collectCountConditions, countKey, countMatchingEvents, emptyScope } from './conditions.ts';
import { subtractDuration } from './duration.ts';
import type { Context, EventFact, WorkflowDefinition } from './types.ts';

export interface ContactRecord {
  id: number;
  email: string | null;
  traits: Record<string, unknown>;
  stripe_customer_id: string | null;
}

export async function loadContact(db: Queryable, contactId: number): Promise<ContactRecord | null> {
  const [row] = await db<ContactRecord[]>`select id, email, traits, stripe_customer_id from contacts where id = ${contactId}`;
  return row ?? null;
}

/** The account a run is about: the given one, else the contact's first account. */
export async function loadAccount(db: Queryable, contactId: number, accountId: number | null) {
  const [row] = accountId !== null
    ? await db<{ id: number; traits: Record<string, unknown>; stripe_customer_id: string | null }[]>`
        select id, traits, stripe_customer_id from accounts where id = ${accountId}`
    : await db<{ id: number; traits: Record<string, unknown>; stripe_customer_id: string | null }[]>`
        select a.id, a.traits, a.stripe_customer_id from accounts a join account_members m on m.account_id = a.id
        where m.contact_id = ${contactId} order by m.joined_at, a.id limit 1`;
  return row ?? null;
}

const str = (v: unknown) => (typeof v === 'string' && v !== '' ? v : null);

async function loadInvoice(db: Queryable, invoiceId: string | null, at: Date) {
  if (!invoiceId) return null;
  const [row] = await db<Record<string, unknown>[]>`
    select id, customer_id as "customerId", subscription_id as "subscriptionId", status, currency,
           amount_due as "amountDue", amount_paid as "amountPaid", amount_remaining as "amountRemaining",
           attempt_count as "attemptCount", next_payment_attempt as "nextPaymentAttempt",
           hosted_invoice_url as "hostedInvoiceUrl", billing_reason as "billingReason"
    from invoices where id = ${invoiceId}`;
  if (!row) return null;
  const decline = await invoiceDecline(db, { id: invoiceId, customerId: String(row.customerId) }, at);
  return { ...row, declineClass: decline.declineClass, declineCode: decline.declineCode } as Record<string, unknown>;
}

async function loadSubscription(db: Queryable, subscriptionId: string | null) {
  if (!subscriptionId) return null;
  const [row] = await db<Record<string, unknown>[]>`
    select id, customer_id as "customerId", status, currency, mrr_minor as mrr, cancel_at_period_end as "cancelAtPeriodEnd",
           cancellation_reason as "cancellationReason", cancellation_feedback as "cancellationFeedback", trial_end as "trialEnd"
    from subscriptions where id = ${subscriptionId}`;
  return row ?? null;
}

/**
 * A contact is "in billing recovery" while a Stripe customer of its own, or of any account it
 * belongs to, has an open invoice that has failed at least once. A customer belongs to an
 * account through the account's stripeCustomerId trait or through any member it is linked to
 * (README: the paying contact's identify carries stripeCustomerId), so every teammate of a
 * failing account is held, not only the payer.
 */
export async function recoveryOpen(db: Queryable, contactId: number, accountId: number | null): Promise<boolean> {
  const [row] = await db<{ open: boolean }[]>`
    with accts as (
      select account_id as id from account_members where contact_id = ${contactId}
      union select ${accountId}::bigint where ${accountId}::bigint is not null),
    people as (
      select ${contactId}::bigint as id
      union select contact_id from account_members where account_id in (select id from accts)),
    custs as (
      select stripe_customer_id as id from contacts where id in (select id from people) and stripe_customer_id is not null
      union select id from customers where contact_id in (select id from people)
      union select stripe_customer_id from accounts where id in (select id from accts) and stripe_customer_id is not null)
    select exists (
      select 1 from invoices i
      where i.customer_id in (select id from custs) and i.status = 'open'
        and exists (select 1 from payment_failures f where f.invoice_id = i.id)
    ) as open`;
  return row?.open ?? false;
}

export async function loadContext(
  db: Queryable,
  config: Pick<Config, 'policy'>,
  input: {
    definition: WorkflowDefinition;
    contact: ContactRecord;
    accountId: number | null;
    /** trigger or incoming event: tells which invoice/subscription the run is about */
    subjects: (EventFact | null | undefined)[];
    /** counts are judged at this time */
    at: Date;
  },
): Promise<Context> {
  const { definition, contact, at } = input;
  const account = await loadAccount(db, contact.id, input.accountId);
  let invoiceId: string | null = null;
  let subscriptionId: string | null = null;
  for (const e of input.subjects) {
    invoiceId ??= str(e?.properties.invoiceId);
    subscriptionId ??= str(e?.properties.subscriptionId);
  }
  const invoice = await loadInvoice(db, invoiceId, at);
  subscriptionId ??= str(invoice?.subscriptionId);
  const subscription = await loadSubscription(db, subscriptionId);

  const counts: Record<string, number> = {};
  const countConditions = collectCountConditions(definition);
  for (const condition of countConditions) {
    const since = subtractDuration(at, condition.count.within);
    const scope = condition.count.scope ?? 'contact';
    if (scope === 'account' && !account) {
      counts[countKey(condition)] = 0;
      continue;
    }
    const rows = scope === 'account'
      ? await db<{ name: string; properties: Record<string, unknown>; occurred_at: Date; id: number }[]>`
          select id, name, properties, occurred_at from domain_events
          where account_id = ${account!.id} and name = ${condition.count.event} and occurred_at > ${since} and occurred_at <= ${at}`
      : await db<{ name: string; properties: Record<string, unknown>; occurred_at: Date; id: number }[]>`
          select id, name, properties, occurred_at from domain_events
          where contact_id = ${contact.id} and name = ${condition.count.event} and occurred_at > ${since} and occurred_at <= ${at}`;
    const events: EventFact[] = rows.map((r) => ({ id: String(r.id), name: r.name, properties: r.properties, occurredAt: r.occurred_at.toISOString() }));
    counts[countKey(condition)] = countMatchingEvents(condition, events, at, emptyScope({ contact: { id: contact.id, email: contact.email, traits: contact.traits } }));
  }

  const [last] = await db<{ at: Date | null }[]>`
    select max(created_at) as at from messages
    where contact_id = ${contact.id} and category in ('lifecycle', 'marketing') and status not in ('skipped', 'failed')`;
  const [suppression] = contact.email
    ? await db<{ scope: 'all' | 'non_transactional' }[]>`select scope from suppressions where email = lower(${contact.email})`
    : [];
  const tz = str(contact.traits.timezone) ?? str(account?.traits.timezone);

  return {
    contact: { id: contact.id, email: contact.email, traits: contact.traits },
    account: account ? { id: account.id, traits: account.traits } : null,
    invoice,
    subscription,
    counts,
    policy: {
      recoveryOpen: await recoveryOpen(db, contact.id, account ? Number(account.id) : null),
      lastCappedSendAt: last?.at ? last.at.toISOString() : null,
      frequencyCap: config.policy.frequencyCap,
      quietHours: config.policy.quietHours,
      timezone: tz,
      suppressed: suppression?.scope ?? null,
    },
  };
}
