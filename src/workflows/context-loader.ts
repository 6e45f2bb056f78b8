// Gathers, from Postgres, everything the pure interpreter may read about one contact: traits,
// account, the invoice/subscription a run is about, counts its conditions need, and the
// cross-workflow policy inputs (open recovery case, last capped send, suppression); for
// definitions that read them, the run's Stripe customer and its MRR; the run's instance settings.
import type { Queryable } from '../db/connection.ts';
import type { Config } from '../config.ts';
import { liveMrrByCustomer } from '../stripe/customer-mrr.ts';
import { failureExplains, invoiceDecline } from '../stripe/declines.ts';
import type { DeclineClass } from '../stripe/shapes.ts';
import { collectCountConditions, countKey, countMatchingEvents, emptyScope, forEachCondition, isComparison } from './conditions.ts';
import { subtractDuration } from './duration.ts';
import type { Context, EventFact, RunSettings, WorkflowDefinition } from './types.ts';

/**
 * An open failed invoice is a billing-recovery case unless its subscription has been canceled:
 * billing recovery exits on the cancellation and win-back takes over (its "restore" email must
 * not wait behind a recovery that has ended). Without this, whether the restore email went out
 * depended on whether the failure or the cancellation was delivered first (order property).
 */
const NOT_OF_CANCELED_SUBSCRIPTION = "not exists (select 1 from subscriptions s where s.id = i.subscription_id and s.status = 'canceled')";

export interface ContactRecord {
  id: number;
  email: string | null;
  traits: Record<string, unknown>;
  stripe_customer_id: string | null;
  /** who the contact is, stably (SPLIT_KEY): split assignment hashes it */
  split_key: string;
}

/**
 * A contact's stable name for split and hold-out assignment: its user id, else its Stripe
 * customer, else its email, else its anonymous id. Not the row id: contacts are numbered in the
 * order they are made, which follows delivery order, so two deliveries of the same history would
 * put the same person in different variants.
 */
const SPLIT_KEY = `coalesce('user:' || user_id, 'cus:' || stripe_customer_id, 'email:' || lower(email), 'anon:' || anonymous_id, 'id:' || id::text) as split_key`;

type AccountRow = { id: number; traits: Record<string, unknown>; stripe_customer_id: string | null };
type FailureRow = { invoice_id: string | null; customer_id: string; decline_class: DeclineClass; decline_code: string | null; occurred_at: Date; id: number };

/**
 * What the engine will read for a batch of facts, loaded with one query per kind instead of a
 * dozen small queries per fact (a batch's round trips and statements, not its rows, are what the
 * feed pays for). Entries about a contact or account are only valid until the engine writes
 * something about it (a run, a message, traits): the engine calls `forgetContact` /
 * `forgetAccount` on every such write, and later reads go to the database. Invoices,
 * subscriptions, payment failures and suppressions are never written by the engine, so they stay
 * valid for the whole transaction.
 */
export interface ContextPrefetch {
  contacts: Map<number, ContactRecord | null>;
  /** the contact's first account (loadAccount with no account given) */
  firstAccount: Map<number, AccountRow | null>;
  accounts: Map<number, AccountRow | null>;
  invoices: Map<string, Record<string, unknown> | null>;
  subscriptions: Map<string, Record<string, unknown> | null>;
  /** classified payment failures, newest first, for the decline lookup */
  failures: FailureRow[];
  failuresLoaded: boolean;
  lastCappedSend: Map<number, Date | null>;
  suppressions: Map<string, 'all' | 'non_transactional' | null>;
  /** recovery open for the contact's own accounts, and which accounts those are */
  recovery: Map<number, { open: boolean; accounts: number[] }>;
  /** live MRR per currency of the Stripe customers of the batch's invoices and subscriptions (customer.*) */
  customerMrr: Map<string, Record<string, number>>;
}

export function emptyPrefetch(): ContextPrefetch {
  return {
    contacts: new Map(),
    firstAccount: new Map(),
    accounts: new Map(),
    invoices: new Map(),
    subscriptions: new Map(),
    failures: [],
    failuresLoaded: false,
    lastCappedSend: new Map(),
    suppressions: new Map(),
    recovery: new Map(),
    customerMrr: new Map(),
  };
}

export function forgetContact(p: ContextPrefetch | undefined, contactId: number): void {
  if (!p) return;
  const id = Number(contactId);
  p.contacts.delete(id);
  p.firstAccount.delete(id);
  p.lastCappedSend.delete(id);
  p.recovery.delete(id);
}

export async function prefetchContexts(
  db: Queryable,
  p: ContextPrefetch,
  input: { contactIds: number[]; accountIds: number[]; invoiceIds: string[]; subscriptionIds: string[] },
): Promise<void> {
  const contactIds = [...new Set(input.contactIds.map(Number))];
  const [contacts, firstAccounts, accounts, invoices, subscriptions, last, recovery] = await Promise.all([
    db<ContactRecord[]>`select id, email, traits, stripe_customer_id, ${db.unsafe(SPLIT_KEY)} from contacts where id = any(${contactIds}::bigint[])`,
    db<(AccountRow & { contact_id: number })[]>`
      select distinct on (m.contact_id) m.contact_id, a.id, a.traits, a.stripe_customer_id
      from account_members m join accounts a on a.id = m.account_id
      where m.contact_id = any(${contactIds}::bigint[]) order by m.contact_id, m.joined_at, a.id`,
    db<AccountRow[]>`select id, traits, stripe_customer_id from accounts where id = any(${[...new Set(input.accountIds.map(Number))]}::bigint[])`,
    db<Record<string, unknown>[]>`${invoiceSelect(db)} where id = any(${[...new Set(input.invoiceIds)]}::text[])`,
    db<Record<string, unknown>[]>`${subscriptionSelect(db)} where id = any(${[...new Set(input.subscriptionIds)]}::text[])`,
    db<{ contact_id: number; at: Date | null }[]>`
      select contact_id, max(created_at) as at from messages
      where contact_id = any(${contactIds}::bigint[]) and category in ('lifecycle', 'marketing') and status not in ('skipped', 'failed', 'dead')
      group by contact_id`,
    // Per contact, by index look-ups only (people → their customers → that customer's open
    // invoices), so the cost follows the batch, not the tables. Written as one set of CTEs
    // joined to the batch, PostgreSQL answered the EXISTS with a hashed subplan: every contact
    // with a customer, every customer and every open invoice, scanned for each engine batch
    // (58 ms a batch with 5,000 customers, growing with them; BENCHMARKS.md, session 9). The
    // LATERAL joins fix the order (customers drive the invoice look-up); OFFSET 0 keeps the
    // account look-ups as parameterized index scans even when statistics still say the tables
    // are empty.
    db<{ contact_id: number; accounts: number[]; open: boolean }[]>`
      select c.contact_id,
             coalesce((select array_agg(m.account_id) from account_members m where m.contact_id = c.contact_id), '{}') as accounts,
             exists (
               select 1
               from (select c.contact_id as person
                     union select t.contact_id from account_members m
                           cross join lateral (select t.contact_id from account_members t where t.account_id = m.account_id offset 0) t
                     where m.contact_id = c.contact_id) p
               cross join lateral (
                 select ct.stripe_customer_id as customer_id from contacts ct where ct.id = p.person and ct.stripe_customer_id is not null
                 union all select cu.id from customers cu where cu.contact_id = p.person
                 union all select a.stripe_customer_id from account_members m
                           cross join lateral (select ac.stripe_customer_id from accounts ac where ac.id = m.account_id and ac.stripe_customer_id is not null offset 0) a
                   where p.person = c.contact_id and m.contact_id = c.contact_id) x
               cross join lateral (
                 select 1 from invoices i
                 where i.customer_id = x.customer_id and i.status = 'open'
                   and exists (select 1 from payment_failures f where f.invoice_id = i.id)
                   and ${db.unsafe(NOT_OF_CANCELED_SUBSCRIPTION)}
                 limit 1) o
             ) as open
      from (select distinct unnest(${contactIds}::bigint[]) as contact_id) c`,
  ]);
  for (const id of contactIds) {
    p.contacts.set(id, null);
    p.firstAccount.set(id, null);
    p.lastCappedSend.set(id, null);
  }
  for (const row of contacts) p.contacts.set(Number(row.id), row);
  for (const row of firstAccounts) p.firstAccount.set(Number(row.contact_id), { id: row.id, traits: row.traits, stripe_customer_id: row.stripe_customer_id });
  for (const id of input.accountIds) p.accounts.set(Number(id), null);
  for (const row of accounts) p.accounts.set(Number(row.id), row);
  for (const id of input.invoiceIds) p.invoices.set(id, null);
  for (const row of invoices) p.invoices.set(String(row.id), row);
  for (const id of input.subscriptionIds) p.subscriptions.set(id, null);
  for (const row of subscriptions) p.subscriptions.set(String(row.id), row);
  for (const row of last) p.lastCappedSend.set(Number(row.contact_id), row.at);
  for (const row of recovery) p.recovery.set(Number(row.contact_id), { open: row.open, accounts: row.accounts.map(Number) });

  const emails = contacts.flatMap((c) => (c.email ? [c.email.toLowerCase()] : []));
  const customers = [...new Set([...invoices.map((i) => String(i.customerId))])];
  // The customers a run may read `customer.*` of: its invoice's, else its subscription's.
  const mrrCustomers = [...new Set([...customers, ...subscriptions.map((s) => String(s.customerId))])];
  const [suppressions, failures, mrr] = await Promise.all([
    db<{ email: string; scope: 'all' | 'non_transactional' }[]>`select email, scope from suppressions where email = any(${emails}::text[])`,
    db<FailureRow[]>`
      select id, invoice_id, customer_id, decline_class, coalesce(decline_code, failure_code) as decline_code, occurred_at
      from payment_failures
      where decline_class <> 'unknown'
        and (invoice_id = any(${[...new Set(input.invoiceIds)]}::text[]) or (invoice_id is null and customer_id = any(${customers}::text[])))
      order by occurred_at desc, id desc`,
    liveMrrByCustomer(db, mrrCustomers),
  ]);
  for (const [id, byCurrency] of mrr) p.customerMrr.set(id, byCurrency);
  for (const email of emails) p.suppressions.set(email, null);
  for (const row of suppressions) p.suppressions.set(row.email, row.scope);
  // Complete for the batch's invoices and their customers; any other invoice is looked up live.
  p.failures = [...failures];
  p.failuresLoaded = invoices.length > 0;
}

const invoiceSelect = (db: Queryable) => db`
    select id, customer_id as "customerId", subscription_id as "subscriptionId", status, currency,
           amount_due as "amountDue", amount_paid as "amountPaid", amount_remaining as "amountRemaining",
           attempt_count as "attemptCount", next_payment_attempt as "nextPaymentAttempt",
           hosted_invoice_url as "hostedInvoiceUrl", billing_reason as "billingReason"
    from invoices`;

const subscriptionSelect = (db: Queryable) => db`
    select id, customer_id as "customerId", status, currency, mrr_minor as mrr, cancel_at_period_end as "cancelAtPeriodEnd",
           cancellation_reason as "cancellationReason", cancellation_feedback as "cancellationFeedback", trial_end as "trialEnd"
    from subscriptions`;

export async function loadContact(db: Queryable, contactId: number, p?: ContextPrefetch): Promise<ContactRecord | null> {
  const cached = p?.contacts.get(Number(contactId));
  if (cached !== undefined) return cached;
  const [row] = await db<ContactRecord[]>`select id, email, traits, stripe_customer_id, ${db.unsafe(SPLIT_KEY)} from contacts where id = ${contactId}`;
  return row ?? null;
}

/** The account a run is about: the given one, else the contact's first account. */
export async function loadAccount(db: Queryable, contactId: number, accountId: number | null, p?: ContextPrefetch) {
  const cached = accountId !== null ? p?.accounts.get(Number(accountId)) : p?.firstAccount.get(Number(contactId));
  if (cached !== undefined) return cached;
  const [row] = accountId !== null
    ? await db<{ id: number; traits: Record<string, unknown>; stripe_customer_id: string | null }[]>`
        select id, traits, stripe_customer_id from accounts where id = ${accountId}`
    : await db<{ id: number; traits: Record<string, unknown>; stripe_customer_id: string | null }[]>`
        select a.id, a.traits, a.stripe_customer_id from accounts a join account_members m on m.account_id = a.id
        where m.contact_id = ${contactId} order by m.joined_at, a.id limit 1`;
  return row ?? null;
}

const str = (v: unknown) => (typeof v === 'string' && v !== '' ? v : null);

/** The decline behind an invoice's failure, from prefetched failures (the rule of invoiceDecline). */
function prefetchedDecline(p: ContextPrefetch, inv: { id: string; customerId: string }, at: Date) {
  const invoice = { invoiceId: inv.id, customerId: inv.customerId, paymentIntentId: null, around: at };
  // Newest first (prefetch order), as invoiceDecline picks.
  const row = p.failures.find((f) => failureExplains({ invoiceId: f.invoice_id, paymentIntentId: null, customerId: f.customer_id, occurredAt: f.occurred_at }, invoice));
  return row ? { declineClass: row.decline_class, declineCode: row.decline_code } : { declineClass: 'unknown' as DeclineClass, declineCode: null };
}

async function loadInvoice(db: Queryable, invoiceId: string | null, at: Date, p?: ContextPrefetch) {
  if (!invoiceId) return null;
  const cached = p?.invoices.get(invoiceId);
  const row = cached !== undefined ? cached : (await db<Record<string, unknown>[]>`${invoiceSelect(db)} where id = ${invoiceId}`)[0];
  if (!row) return null;
  const inv = { id: invoiceId, customerId: String(row.customerId) };
  const decline = cached !== undefined && p?.failuresLoaded ? prefetchedDecline(p, inv, at) : await invoiceDecline(db, inv, at);
  return { ...row, declineClass: decline.declineClass, declineCode: decline.declineCode } as Record<string, unknown>;
}

async function loadSubscription(db: Queryable, subscriptionId: string | null, p?: ContextPrefetch) {
  if (!subscriptionId) return null;
  const cached = p?.subscriptions.get(subscriptionId);
  if (cached !== undefined) return cached;
  const [row] = await db<Record<string, unknown>[]>`${subscriptionSelect(db)} where id = ${subscriptionId}`;
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
        and ${db.unsafe(NOT_OF_CANCELED_SUBSCRIPTION)}
    ) as open`;
  return row?.open ?? false;
}

/** The instance settings a run reads (settings.*), resolved for the run's currency. */
export function runSettings(config: Pick<Config, 'recovery' | 'slackWebhookUrl'>, currency: string | null): RunSettings {
  const threshold = currency ? config.recovery.alertMrr[currency.toLowerCase()] : undefined;
  return { recoveryAlertMrr: threshold ?? null, slackWebhookConfigured: config.slackWebhookUrl !== undefined };
}

const customerReaders = new WeakMap<WorkflowDefinition, boolean>();

/** Whether any condition of the definition reads `customer.*` (its MRR costs a query). */
function readsCustomer(definition: WorkflowDefinition): boolean {
  const known = customerReaders.get(definition);
  if (known !== undefined) return known;
  let reads = false;
  forEachCondition(definition, (condition) => {
    if (isComparison(condition) && (condition.path.startsWith('customer.') || condition.ref?.startsWith('customer.'))) reads = true;
  });
  customerReaders.set(definition, reads);
  return reads;
}

/**
 * The Stripe customer a run is about, with its MRR per currency (live subscriptions: active,
 * trialing, past due, unpaid — as the Slack alert counts it) and in the run's currency.
 */
async function loadCustomer(db: Queryable, customerId: string | null, currency: string | null, p?: ContextPrefetch): Promise<Context['customer']> {
  if (!customerId) return null;
  // Prefetched for the batch (subscriptions are not written by the engine, so it stays valid).
  const prefetched = p?.customerMrr.get(customerId);
  const mrrByCurrency = { ...(prefetched ?? (await liveMrrByCustomer(db, [customerId])).get(customerId)) };
  const own = currency ? currency.toLowerCase() : null;
  return { id: customerId, currency: own, mrr: own ? (mrrByCurrency[own] ?? 0) : null, mrrByCurrency };
}

export async function loadContext(
  db: Queryable,
  config: Pick<Config, 'policy' | 'recovery' | 'slackWebhookUrl'>,
  input: {
    definition: WorkflowDefinition;
    contact: ContactRecord;
    accountId: number | null;
    /** trigger or incoming event: tells which invoice/subscription the run is about */
    subjects: (EventFact | null | undefined)[];
    /** counts are judged at this time */
    at: Date;
  },
  p?: ContextPrefetch,
): Promise<Context> {
  const { definition, contact, at } = input;
  const account = await loadAccount(db, contact.id, input.accountId, p);
  let invoiceId: string | null = null;
  let subscriptionId: string | null = null;
  for (const e of input.subjects) {
    invoiceId ??= str(e?.properties.invoiceId);
    subscriptionId ??= str(e?.properties.subscriptionId);
  }
  const invoice = await loadInvoice(db, invoiceId, at, p);
  subscriptionId ??= str(invoice?.subscriptionId);
  const subscription = await loadSubscription(db, subscriptionId, p);
  // The run's currency: the invoice's, else the subscription's (money is compared in one currency).
  const currency = str(invoice?.currency) ?? str(subscription?.currency);
  const customer = readsCustomer(definition)
    ? await loadCustomer(db, str(invoice?.customerId) ?? str(subscription?.customerId), currency, p)
    : null;

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

  const cachedLast = p?.lastCappedSend.get(Number(contact.id));
  const [last] = cachedLast !== undefined
    ? [{ at: cachedLast }]
    : await db<{ at: Date | null }[]>`
        select max(created_at) as at from messages
        where contact_id = ${contact.id} and category in ('lifecycle', 'marketing') and status not in ('skipped', 'failed', 'dead')`;
  const cachedSuppression = contact.email ? p?.suppressions.get(contact.email.toLowerCase()) : null;
  const [suppression] = cachedSuppression !== undefined
    ? (cachedSuppression ? [{ scope: cachedSuppression }] : [])
    : await db<{ scope: 'all' | 'non_transactional' }[]>`select scope from suppressions where email = lower(${contact.email})`;
  const accountNumber = account ? Number(account.id) : null;
  const cachedRecovery = p?.recovery.get(Number(contact.id));
  // Prefetched for the contact's own accounts: good for any run about one of them.
  const open = cachedRecovery && (accountNumber === null || cachedRecovery.accounts.includes(accountNumber))
    ? cachedRecovery.open
    : await recoveryOpen(db, contact.id, accountNumber);
  const tz = str(contact.traits.timezone) ?? str(account?.traits.timezone);

  return {
    contact: { id: contact.id, email: contact.email, traits: contact.traits, splitKey: contact.split_key },
    account: account ? { id: account.id, traits: account.traits } : null,
    invoice,
    subscription,
    customer,
    settings: runSettings(config, currency),
    counts,
    policy: {
      recoveryOpen: open,
      lastCappedSendAt: last?.at ? last.at.toISOString() : null,
      frequencyCap: config.policy.frequencyCap,
      quietHours: config.policy.quietHours,
      timezone: tz,
      suppressed: suppression?.scope ?? null,
    },
  };
}
