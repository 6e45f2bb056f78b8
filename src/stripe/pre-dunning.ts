// Pre-dunning (issue 13): before the failure. When a customer's default card expires before a
// subscription's next renewal, a check is scheduled PRE_DUNNING_NOTICE_DAYS (config, default 7)
// before the renewal; when it is due it becomes the timeline fact `card.expiring_before_renewal`, which
// starts the built-in `pre-dunning` workflow (workflows/builtin/pre-dunning.json). That
// definition, not this module, decides whether to email: if the card updater replaced the card
// meanwhile (payment_method.automatically_updated), the run exits without a word.
//
// Card expiry comes from the payment-method facts the projection records (brand and expiry only)
// and from Stripe's `customer.source.expiring`; the renewal from the subscription snapshot's
// current_period_end (active or trialing, not cancelling at period end).
import type { Clock } from '../clock.ts';
import type { Queryable, Sql, Tx } from '../db/connection.ts';
import { recordDomainEvents, type DomainEventInput } from '../timeline/domain-event-store.ts';
import type { StripeEnvelope } from './event-inbox.ts';
import { idOf } from './shapes.ts';

/** How long before the renewal the customer is asked for a new card, unless PRE_DUNNING_NOTICE_DAYS says otherwise. */
export const DEFAULT_PRE_DUNNING_NOTICE_DAYS = 7;
const DAY_MS = 86_400_000;

const CHECK_EVENTS = new Set([
  'payment_method.attached',
  'payment_method.updated',
  'customer.updated',
  'customer.created',
  'customer.subscription.created',
  'customer.subscription.updated',
]);

type Obj = Record<string, unknown>;

/**
 * In the projection's transaction: schedule the checks the batch's events make necessary,
 * `noticeDays` (PRE_DUNNING_NOTICE_DAYS) before each renewal.
 */
export async function schedulePreDunningChecks(db: Queryable, events: readonly StripeEnvelope[], now: Date, noticeDays = DEFAULT_PRE_DUNNING_NOTICE_DAYS): Promise<void> {
  if (!Number.isInteger(noticeDays) || noticeDays < 1) throw new Error(`pre-dunning notice days must be a positive integer, got ${noticeDays}`);
  const customers = new Set<string>();
  const expiring: { customer_id: string; card: string; brand: string | null; exp_month: number; exp_year: number }[] = [];
  for (const event of events) {
    const o = (event.data?.object ?? {}) as Obj;
    if (event.type === 'customer.source.expiring') {
      const customer = idOf(o.customer);
      const card = idOf(o.id);
      if (customer && card && typeof o.exp_month === 'number' && typeof o.exp_year === 'number') {
        expiring.push({ customer_id: customer, card, brand: typeof o.brand === 'string' ? o.brand : null, exp_month: o.exp_month, exp_year: o.exp_year });
      }
      continue;
    }
    if (!CHECK_EVENTS.has(event.type)) continue;
    const customer = o.object === 'customer' ? idOf(o.id) : idOf(o.customer);
    if (customer) customers.add(customer);
  }
  const notice = `${noticeDays} days`;
  if (customers.size > 0) {
    await db`
      with card as (
        select c.id as customer_id, c.default_payment_method as pm, f.brand, f.exp_month, f.exp_year
        from customers c
        cross join lateral (
          select d.properties->>'brand' as brand, (d.properties->>'expMonth')::int as exp_month, (d.properties->>'expYear')::int as exp_year
          from domain_events d
          where d.stripe_customer_id = c.id and d.subject_id = c.default_payment_method
            and d.name in ('payment_method.updated', 'payment_method.automatically_updated')
            and d.properties->>'expYear' ~ '^[0-9]{4}$' and d.properties->>'expMonth' ~ '^[0-9]{1,2}$'
          order by d.occurred_at desc, d.id desc limit 1) f
        where c.id = any(${[...customers]}::text[]) and not c.deleted and c.default_payment_method is not null
      )
      ${insertChecks(db, notice, now)}
      from card join subscriptions s on s.customer_id = card.customer_id
      ${checkConditions(db, now)}`;
  }
  if (expiring.length > 0) {
    await db`
      with card as (
        select customer_id, card as pm, brand, exp_month, exp_year
        from jsonb_to_recordset(${db.json(expiring as never)}::jsonb) as x(customer_id text, card text, brand text, exp_month int, exp_year int)
      )
      ${insertChecks(db, notice, now)}
      from card join subscriptions s on s.customer_id = card.customer_id
      ${checkConditions(db, now)}`;
  }
}

/** The insert shared by both sources: a card valid through the end of its expiry month. */
function insertChecks(db: Queryable, notice: string, now: Date) {
  return db`
    insert into pre_dunning_checks (check_key, customer_id, payment_method_id, brand, exp_month, exp_year, renewal_at, due_at, created_at)
    select distinct on (1)
      card.pm || ':' || card.exp_year || '-' || card.exp_month || ':' || extract(epoch from s.current_period_end)::bigint,
      card.customer_id, card.pm, card.brand, card.exp_month, card.exp_year, s.current_period_end,
      s.current_period_end - ${notice}::interval, ${now}`;
}

function checkConditions(db: Queryable, now: Date) {
  return db`
    where s.status in ('active', 'trialing') and not s.cancel_at_period_end and s.current_period_end is not null
      and s.current_period_end > ${now}
      and make_date(card.exp_year, card.exp_month, 1) + interval '1 month' <= s.current_period_end
    on conflict (check_key) do nothing`;
}

/** Due checks become `card.expiring_before_renewal` facts (once each). Returns how many fired. */
export async function firePreDunningChecks(deps: { sql: Sql; clock: Clock }, limit = 500): Promise<number> {
  const now = deps.clock.now();
  return deps.sql.begin(async (tx: Tx) => {
    const rows = await tx<{ check_key: string; customer_id: string; payment_method_id: string; brand: string | null; exp_month: number; exp_year: number; renewal_at: Date; contact_id: number | null; superseded: boolean }[]>`
      select p.check_key, p.customer_id, p.payment_method_id, p.brand, p.exp_month, p.exp_year, p.renewal_at, c.contact_id,
             -- the customer has another default card by now: nothing to warn about
             -- or the renewal is no longer coming (canceled, cancelling at period end, or moved)
             (c.default_payment_method is distinct from p.payment_method_id
              or not exists (
                select 1 from subscriptions s
                where s.customer_id = p.customer_id and s.status in ('active', 'trialing') and not s.cancel_at_period_end
                  and s.current_period_end = p.renewal_at)) as superseded
      from pre_dunning_checks p left join customers c on c.id = p.customer_id
      where p.fired_at is null and p.due_at <= ${now}
      order by p.due_at limit ${limit}
      for update of p skip locked`;
    if (rows.length === 0) return 0;
    const due = rows.filter((r) => !r.superseded);
    const facts: DomainEventInput[] = due.map((d) => ({
      name: 'card.expiring_before_renewal',
      source: 'stripe',
      sourceId: d.check_key,
      dedupeKey: `card.expiring_before_renewal:${d.check_key}`,
      contactId: d.contact_id === null ? null : Number(d.contact_id),
      accountId: null,
      stripeCustomerId: d.customer_id,
      subjectId: d.payment_method_id,
      properties: {
        checkKey: d.check_key, customerId: d.customer_id, paymentMethodId: d.payment_method_id, brand: d.brand, expMonth: d.exp_month, expYear: d.exp_year,
        renewalAt: d.renewal_at.toISOString(),
        // What the email says ("in 7 days"): counted from now, not from the configured notice,
        // so a check scheduled late (renewal already closer than the notice) still tells the truth.
        daysUntilRenewal: Math.max(1, Math.ceil((d.renewal_at.getTime() - now.getTime()) / DAY_MS)),
      },
      occurredAt: now,
    }));
    await recordDomainEvents(tx, facts, now);
    await tx`update pre_dunning_checks set fired_at = ${now} where check_key = any(${rows.map((d) => d.check_key)}::text[])`;
    return rows.length;
  });
}
