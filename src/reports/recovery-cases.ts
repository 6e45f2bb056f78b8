// The recovery ledger (recovery_cases): one row per recovery case, recomputed per invoice with
// set-based SQL whenever a fact that can change it arrives. Definitions: definitions.ts.
//
// Knowing what is dirty. The refresh reads four append-only source tables by id (a cursor per
// source in recovery_refresh_cursors):
//   domain_events     invoice facts → that invoice; subscription end → the subscription's cases;
//                     payment-method facts → the customer's cases; email.clicked → the run's invoice
//   payment_failures  decline detail (charge / payment_intent failures) → the invoice, or the customer's cases
//   message_events    a recovery email sent or clicked → the run's invoice
//   run_trace         a billing-recovery run entered or split (hold-out) → the run's invoice
// Ids come from sequences, so they are unique but may become visible out of order (a transaction
// still in flight when the cursor moves, or an id burnt by a rollback / ON CONFLICT DO NOTHING).
// Every id skipped over is remembered as a gap (recovery_refresh_gaps) and re-checked at every
// refresh until it appears or is older than GAP_TTL: a late commit is never lost. Each source is
// read, its dirty invoices marked and its gaps recorded in one statement (one snapshot), under a
// transaction-scoped advisory lock, so concurrent refreshes serialize and none sees half a state.
// When nothing is new, a refresh is a handful of index probes.
import type { Queryable, Sql, Tx } from '../db/connection.ts';
import { RECOVERY_WORKFLOW } from './definitions.ts';

const REFRESH_LOCK = 0x11fe13;
/** An id not visible for this long is taken to be burnt (rolled back, or a conflicting insert). */
const GAP_TTL = '15 minutes';

type SourceName = 'domain_events' | 'payment_failures' | 'message_events' | 'run_trace';
const SOURCES: SourceName[] = ['domain_events', 'payment_failures', 'message_events', 'run_trace'];

const INVOICE_FACTS = ['invoice.payment_failed', 'invoice.payment_action_required', 'invoice.paid', 'invoice.voided', 'invoice.marked_uncollectible'];

export interface RefreshResult {
  /** cases recomputed (invoices examined, whether or not they are still cases) */
  recomputed: number;
  /** new source rows read */
  read: number;
}

/**
 * Brings recovery_cases up to date with every fact committed so far. `invoiceIds` forces those
 * invoices to be recomputed too; `full` recomputes every invoice that ever failed a payment.
 */
export async function refreshRecoveryCases(sql: Sql, options: { invoiceIds?: string[]; full?: boolean } = {}): Promise<RefreshResult> {
  return sql.begin(async (tx: Tx) => {
    await tx`select pg_advisory_xact_lock(${REFRESH_LOCK})`;
    if (options.invoiceIds?.length) await markRecoveryDirty(tx, options.invoiceIds);
    if (options.full) {
      await tx`
        insert into recovery_dirty (invoice_id, marked_at)
        select distinct invoice_id, now() from payment_failures where invoice_id is not null
        on conflict (invoice_id) do nothing`;
    }
    await tx`delete from recovery_refresh_gaps where noted_at < now() - ${GAP_TTL}::interval`;
    const cursors = new Map((await tx<{ source: string; last_id: number }[]>`select source, last_id from recovery_refresh_cursors`).map((r) => [r.source, r.last_id]));
    let read = 0;
    for (const source of SOURCES) {
      const old = cursors.get(source) ?? 0;
      const [row] = await readSource(tx, source, old);
      read += row?.n ?? 0;
      const last = row?.last_id ?? old;
      if (last !== old || !cursors.has(source)) {
        await tx`
          insert into recovery_refresh_cursors (source, last_id, updated_at) values (${source}, ${last}, now())
          on conflict (source) do update set last_id = excluded.last_id, updated_at = excluded.updated_at`;
      }
    }
    const recomputed = await recomputeDirty(tx);
    return { recomputed, read };
  });
}

/** Queue invoices for recomputation at the next refresh (e.g. after a manual correction). */
export async function markRecoveryDirty(db: Queryable, invoiceIds: string[]): Promise<void> {
  if (invoiceIds.length === 0) return;
  await db`
    insert into recovery_dirty (invoice_id, marked_at)
    select distinct unnest(${invoiceIds}::text[]), now()
    on conflict (invoice_id) do nothing`;
}

// ---------------------------------------------------------------------------------------------
// Reading a source: new rows (id > cursor) and rows that appeared in remembered gaps. One
// statement marks the affected invoices dirty, records the ids skipped over as gaps, shrinks the
// gaps that filled, and returns the new cursor.

function readSource(tx: Tx, source: SourceName, old: number) {
  switch (source) {
    case 'domain_events':
      return tx<{ last_id: number; n: number }[]>`
        with r as (
          select id, name, stripe_customer_id, subject_id,
                 case when name = 'email.clicked' and properties->>'runId' ~ '^[0-9]{1,18}$' then (properties->>'runId')::bigint end as run_id,
                 false as from_gap
          from domain_events where id > ${old}
          union all
          select t.id, t.name, t.stripe_customer_id, t.subject_id,
                 case when t.name = 'email.clicked' and t.properties->>'runId' ~ '^[0-9]{1,18}$' then (t.properties->>'runId')::bigint end,
                 true
          from recovery_refresh_gaps g join domain_events t on t.id between g.lo and g.hi
          where g.source = 'domain_events'
        ),
        dirty as (
          insert into recovery_dirty (invoice_id, marked_at)
          select distinct invoice_id, now() from (
            select r.subject_id as invoice_id from r where r.name in ${tx(INVOICE_FACTS)}
            union all
            select rc.invoice_id from r join recovery_cases rc on rc.subscription_id = r.subject_id
            where r.name in ('subscription.canceled', 'subscription.status_changed')
            union all
            select rc.invoice_id from r join recovery_cases rc on rc.customer_id = r.stripe_customer_id
            where r.name in ('payment_method.updated', 'payment_method.automatically_updated')
            union all
            select wr.run_key from r join workflow_runs wr on wr.id = r.run_id
            where r.name = 'email.clicked' and wr.workflow_key = ${RECOVERY_WORKFLOW}
          ) x
          where invoice_id is not null
          on conflict (invoice_id) do nothing
        ),
        ${gapStatements(tx, 'domain_events', old)}`;
    case 'payment_failures':
      return tx<{ last_id: number; n: number }[]>`
        with r as (
          select id, invoice_id, customer_id, false as from_gap from payment_failures where id > ${old}
          union all
          select t.id, t.invoice_id, t.customer_id, true
          from recovery_refresh_gaps g join payment_failures t on t.id between g.lo and g.hi
          where g.source = 'payment_failures'
        ),
        dirty as (
          insert into recovery_dirty (invoice_id, marked_at)
          select distinct invoice_id, now() from (
            select r.invoice_id from r where r.invoice_id is not null
            union all
            select rc.invoice_id from r join recovery_cases rc on rc.customer_id = r.customer_id where r.invoice_id is null
          ) x
          on conflict (invoice_id) do nothing
        ),
        ${gapStatements(tx, 'payment_failures', old)}`;
    case 'message_events':
      return tx<{ last_id: number; n: number }[]>`
        with r as (
          select id, message_id, status, false as from_gap from message_events where id > ${old}
          union all
          select t.id, t.message_id, t.status, true
          from recovery_refresh_gaps g join message_events t on t.id between g.lo and g.hi
          where g.source = 'message_events'
        ),
        dirty as (
          insert into recovery_dirty (invoice_id, marked_at)
          select distinct wr.run_key, now()
          from r join messages m on m.id = r.message_id join workflow_runs wr on wr.id = m.run_id
          where r.status in ('sent', 'clicked') and wr.workflow_key = ${RECOVERY_WORKFLOW}
          on conflict (invoice_id) do nothing
        ),
        ${gapStatements(tx, 'message_events', old)}`;
    case 'run_trace':
      return tx<{ last_id: number; n: number }[]>`
        with r as (
          select id, run_id, kind, false as from_gap from run_trace where id > ${old}
          union all
          select t.id, t.run_id, t.kind, true
          from recovery_refresh_gaps g join run_trace t on t.id between g.lo and g.hi
          where g.source = 'run_trace'
        ),
        dirty as (
          insert into recovery_dirty (invoice_id, marked_at)
          select distinct wr.run_key, now()
          from r join workflow_runs wr on wr.id = r.run_id
          where r.kind in ('entered', 'split') and wr.workflow_key = ${RECOVERY_WORKFLOW}
          on conflict (invoice_id) do nothing
        ),
        ${gapStatements(tx, 'run_trace', old)}`;
  }
}

/**
 * The tail of a source statement (after the `r` and `dirty` CTEs): new gaps among the new ids,
 * shrinking of the gaps some rows filled, and the new cursor with the number of rows read.
 */
function gapStatements(tx: Tx, source: SourceName, old: number) {
  return tx`
    new_gaps as (
      insert into recovery_refresh_gaps (source, lo, hi, noted_at)
      select ${source}, prev + 1, id - 1, now()
      from (select id, lag(id, 1, ${old}::bigint) over (order by id) as prev from r where not from_gap) s
      where id > prev + 1
    ),
    found as (
      select g.id as gap_id, g.lo, g.hi, g.noted_at, r.id
      from r join recovery_refresh_gaps g on g.source = ${source} and r.id between g.lo and g.hi
      where r.from_gap
    ),
    closed as (
      delete from recovery_refresh_gaps g where g.id in (select gap_id from found)
    ),
    reopened as (
      insert into recovery_refresh_gaps (source, lo, hi, noted_at)
      select ${source}, lo, hi, noted_at from (
        select coalesce(lag(id) over (partition by gap_id order by id) + 1, lo) as lo, id - 1 as hi, noted_at from found
        union all
        select max(id) + 1, hi, noted_at from found group by gap_id, hi, noted_at
      ) pieces
      where lo <= hi
    )
    select coalesce(max(id) filter (where not from_gap), ${old}::bigint) as last_id, count(*)::int as n from r`;
}

// ---------------------------------------------------------------------------------------------
// Recomputing the dirty invoices: claim them, delete their rows, insert what they are now.

async function recomputeDirty(tx: Tx): Promise<number> {
  const [any] = await tx<{ n: number }[]>`select count(*)::int as n from (select 1 from recovery_dirty limit 1) x`;
  if (!any?.n) return 0;
  await tx`create temp table recovery_batch (invoice_id text primary key) on commit drop`;
  const [claimed] = await tx<{ n: number }[]>`
    with d as (delete from recovery_dirty returning invoice_id),
    ins as (insert into recovery_batch select distinct invoice_id from d returning 1)
    select count(*)::int as n from ins`;
  const n = claimed?.n ?? 0;
  // A large batch (a first refresh over history): give the planner real numbers.
  if (n > 1000) await tx`analyze recovery_batch`;
  await tx`delete from recovery_cases rc using recovery_batch b where rc.invoice_id = b.invoice_id`;
  await tx`
    insert into recovery_cases (
      invoice_id, customer_id, subscription_id, currency, amount_due, first_failed_at, decline_class, attempts,
      state, amount_recovered, recovered_at, lost_at, voided_at, late, attribution, holdout, run_id, computed_at)
    with inv as (
      select i.id, i.customer_id, i.subscription_id, i.currency, i.amount_due, i.amount_paid, i.status,
             i.billing_reason, i.paid_at, i.version_created
      from recovery_batch b join invoices i on i.id = b.invoice_id
    ),
    f as (
      select inv.id as invoice_id, de.name, de.occurred_at, de.properties, de.contact_id, de.dedupe_key,
             case when de.properties->>'attemptCount' ~ '^[0-9]{1,9}$' then (de.properties->>'attemptCount')::int end as attempt
      from inv join domain_events de on de.stripe_customer_id = inv.customer_id and de.subject_id = inv.id
      where de.name in ${tx(INVOICE_FACTS)}
    ),
    fails as (
      select invoice_id,
             min(occurred_at) as first_failed_at,
             (array_agg(jsonb_build_object('amountDue', properties->'amountDue', 'currency', properties->'currency',
                                           'billingReason', properties->'billingReason')
                        order by occurred_at, attempt nulls last, name, dedupe_key))[1] as first_props,
             greatest(coalesce(max(attempt), 0), count(distinct coalesce(attempt::text, dedupe_key)), 1)::int as attempts,
             array_remove(array_agg(distinct contact_id), null) as contacts
      from f where name in ('invoice.payment_failed', 'invoice.payment_action_required')
      group by invoice_id
    ),
    marks as (
      select invoice_id,
             min(occurred_at) filter (where name = 'invoice.paid') as paid_fact_at,
             min(occurred_at) filter (where name = 'invoice.voided') as voided_fact_at,
             min(occurred_at) filter (where name = 'invoice.marked_uncollectible') as uncollectible_at
      from f group by invoice_id
    ),
    base as (
      select inv.*, fa.first_failed_at, fa.first_props, fa.attempts, fa.contacts, m.paid_fact_at, m.voided_fact_at, m.uncollectible_at
      from inv join fails fa on fa.invoice_id = inv.id left join marks m on m.invoice_id = inv.id
      where coalesce(inv.billing_reason, fa.first_props->>'billingReason', '') <> 'subscription_create'
    ),
    sub_end as (
      select invoice_id, min(at) as ended_at from (
        select b.id as invoice_id, de.occurred_at as at
        from base b join domain_events de on de.stripe_customer_id = b.customer_id and de.subject_id = b.subscription_id
        where de.name = 'subscription.canceled'
           or (de.name = 'subscription.status_changed' and de.properties->>'to' in ('canceled', 'unpaid'))
        union all
        select b.id, coalesce(s.ended_at, s.canceled_at, s.version_created)
        from base b join subscriptions s on s.id = b.subscription_id
        where s.status in ('canceled', 'unpaid')
      ) x group by invoice_id
    ),
    linked as (
      select b.id as invoice_id, p.decline_class from base b join payment_failures p on p.invoice_id = b.id
      union all
      select b.id, p.decline_class
      from base b join payment_failures p on p.customer_id = b.customer_id and p.invoice_id is null
      where exists (
        select 1 from payment_failures a
        where a.invoice_id = b.id
          and ((a.payment_intent_id is not null and a.payment_intent_id = p.payment_intent_id)
               or p.occurred_at between a.occurred_at - interval '15 minutes' and a.occurred_at + interval '15 minutes'))
    ),
    decl as (
      select invoice_id,
             max(case decline_class when 'sca' then 3 when 'hard' then 2 when 'soft' then 1 else 0 end) as rank
      from linked group by invoice_id
    ),
    runs as (
      select b.id as invoice_id, min(wr.id) as run_id, array_agg(wr.id) as run_ids, bool_or(wr.holdout) as holdout
      from base b join workflow_runs wr
        on wr.workflow_key = ${RECOVERY_WORKFLOW} and wr.contact_id = any(b.contacts) and wr.run_key = b.id
      group by b.id
    ),
    st as (
      select b.id, b.customer_id, b.subscription_id, b.first_failed_at, b.attempts, b.amount_paid,
             lower(coalesce(b.first_props->>'currency', b.currency)) as currency,
             coalesce(case when b.first_props->>'amountDue' ~ '^-?[0-9]{1,18}$' then (b.first_props->>'amountDue')::bigint end, b.amount_due) as amount_due,
             coalesce(d.rank, 0) as decline_rank,
             r.run_id, r.run_ids, coalesce(r.holdout, false) as holdout,
             case when b.paid_fact_at is not null or b.status = 'paid' then coalesce(b.paid_at, b.paid_fact_at, b.version_created) end as paid_time,
             case when b.voided_fact_at is not null or b.status = 'void' then coalesce(b.voided_fact_at, b.version_created) end as voided_at,
             coalesce(least(b.uncollectible_at, se.ended_at), case when b.status = 'uncollectible' then b.version_created end) as lost_at
      from base b
      left join sub_end se on se.invoice_id = b.id
      left join decl d on d.invoice_id = b.id
      left join runs r on r.invoice_id = b.id
    ),
    cases as (
      select st.*,
             case when paid_time is not null then 'recovered'
                  when voided_at is not null then 'voided'
                  when lost_at is not null then 'lost'
                  else 'open' end as state
      from st
    )
    select c.id, c.customer_id, c.subscription_id, c.currency, c.amount_due, c.first_failed_at,
           (array['unknown', 'soft', 'hard', 'sca'])[c.decline_rank + 1],
           c.attempts, c.state,
           case when c.state = 'recovered' then c.amount_paid else 0 end,
           case when c.state = 'recovered' then c.paid_time end,
           c.lost_at, c.voided_at,
           c.state = 'recovered' and c.lost_at is not null and c.lost_at < c.paid_time,
           case
             when c.state <> 'recovered' then null
             when exists (
               select 1 from domain_events de
               where de.stripe_customer_id = c.customer_id and de.name = 'payment_method.updated'
                 and de.occurred_at >= c.first_failed_at and de.occurred_at < c.paid_time) then 'payment_method_updated'
             when exists (
               select 1 from messages m
               where m.run_id = any(c.run_ids) and m.clicked_at >= c.first_failed_at and m.clicked_at < c.paid_time)
               or exists (
               select 1 from messages m
               join domain_events de on de.contact_id = m.contact_id and de.name = 'email.clicked' and de.properties->>'messageId' = m.id
               where m.run_id = any(c.run_ids) and de.occurred_at >= c.first_failed_at and de.occurred_at < c.paid_time) then 'clicked'
             when exists (
               select 1 from messages m
               where m.run_id = any(c.run_ids) and m.sent_at >= c.first_failed_at and m.sent_at < c.paid_time) then 'emailed'
             when exists (
               select 1 from domain_events de
               where de.stripe_customer_id = c.customer_id and de.name = 'payment_method.automatically_updated'
                 and de.occurred_at >= c.first_failed_at and de.occurred_at < c.paid_time) then 'card_updater'
             else 'stripe_retry_only'
           end,
           c.holdout, c.run_id, now()
    from cases c`;
  return n;
}
