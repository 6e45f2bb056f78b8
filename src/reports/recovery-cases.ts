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
import type { PendingQuery, Row } from 'postgres';
import type { Queryable, Sql, Tx } from '../db/connection.ts';
import { RECOVERY_WORKFLOW } from './definitions.ts';

type Fragment = PendingQuery<Row[]>;

const REFRESH_LOCK = 0x11fe13;
/** An id not visible for this long is taken to be burnt (rolled back, or a conflicting insert). */
const GAP_TTL = '15 minutes';

type SourceName = 'domain_events' | 'payment_failures' | 'message_events' | 'run_trace';
const SOURCES: SourceName[] = ['domain_events', 'payment_failures', 'message_events', 'run_trace'];

const INVOICE_FACTS = ['invoice.payment_failed', 'invoice.payment_action_required', 'invoice.paid', 'invoice.voided', 'invoice.marked_uncollectible'];

/** How a batch is recomputed: per-invoice index lookups, set-based joins, or by batch size. */
export type Strategy = 'auto' | 'incremental' | 'bulk';
/** From this many dirty invoices on, 'auto' recomputes them set-based. */
const BULK_THRESHOLD = 20_000;

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
export async function refreshRecoveryCases(
  sql: Sql,
  options: { invoiceIds?: string[]; full?: boolean; strategy?: Strategy } = {},
): Promise<RefreshResult> {
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
    const recomputed = await recomputeDirty(tx, options.strategy ?? 'auto');
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
          where r.kind in ('entered', 'split', 'action') and wr.workflow_key = ${RECOVERY_WORKFLOW}
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
// Recomputing the dirty invoices: claim them, delete their rows, insert what they are now. The
// rollups (recovery_daily, recovery_time_hist) are kept by statement-level triggers on
// recovery_cases (AFTER INSERT / UPDATE / DELETE with transition tables, and TRUNCATE), so they
// equal an aggregate of recovery_cases whoever writes it, in the writer's transaction.

/**
 * Upper bounds (seconds) of the recovery-time histogram buckets: 1 h … 1 year. The trigger
 * function recovery_cases_rollup() in migrations/0003 repeats this list: keep them equal.
 */
export const RECOVERY_TIME_BUCKETS = [1, 2, 3, 6, 12, 18, 24, 36, 48, 60, 72, 96, 120, 144, 168, 216, 264, 336, 504, 720, 1080, 1440, 2160, 4320, 8760].map(
  (hours) => hours * 3600,
);

async function recomputeDirty(tx: Tx, strategy: Strategy): Promise<number> {
  const [any] = await tx<{ n: number }[]>`select count(*)::int as n from (select 1 from recovery_dirty limit 1) x`;
  if (!any?.n) return 0;
  await tx`create temp table recovery_batch (invoice_id text primary key) on commit drop`;
  const [claimed] = await tx<{ n: number }[]>`
    with d as (delete from recovery_dirty returning invoice_id),
    ins as (insert into recovery_batch select distinct invoice_id from d returning 1)
    select count(*)::int as n from ins`;
  const n = claimed?.n ?? 0;
  const bulk = strategy === 'bulk' || (strategy === 'auto' && n >= BULK_THRESHOLD);
  // A large batch (a first refresh over history): give the planner real numbers.
  if (n > 1000 || bulk) await tx`analyze recovery_batch`;
  // The statement-level triggers of recovery_cases (migration 0003) move the rollups along.
  await tx`delete from recovery_cases rc using recovery_batch b where rc.invoice_id = b.invoice_id`;
  if (bulk) await tx`set local enable_nestloop = off`;
  await tx`
    insert into recovery_cases (
      invoice_id, customer_id, subscription_id, currency, amount_due, first_failed_at, decline_class, attempts, state,
      amount_recovered, recovered_at, lost_at, voided_at, late, attribution, holdout, run_id, recovery_seconds, computed_at)
    ${bulk ? caseRowsBulk(tx) : caseRows(tx)}`;
  if (bulk) await tx`set local enable_nestloop = on`;
  return n;
}

// ---------------------------------------------------------------------------------------------
// The case rows of the invoices in the temporary table recovery_batch. Two plans, one meaning:
//  - caseRows (incremental): each invoice gathers its facts through LATERAL index lookups (by
//    customer, then subject), linear in the batch whatever the planner estimates;
//  - caseRowsBulk (a first refresh over history, a full rebuild): the same rules as set-based
//    hash joins and aggregates, a few scans of the source tables instead of millions of probes.
// The shared fragments below hold the rules, so the two cannot drift apart; the tests rebuild
// the scenario's ledger with both and compare.

const FAILURE_FACTS = ['invoice.payment_failed', 'invoice.payment_action_required'];

/** Per-invoice aggregates over its invoice facts `f` (name, occurred_at, properties, contact_id, dedupe_key, failure, attempt). */
function factAggregates(tx: Queryable) {
  return tx`
    min(f.occurred_at) filter (where f.failure) as first_failed_at,
    (array_agg(jsonb_build_object('amountDue', f.properties->'amountDue', 'currency', f.properties->'currency',
                                  'billingReason', f.properties->'billingReason')
               order by f.occurred_at, f.attempt nulls last, f.name, f.dedupe_key) filter (where f.failure))[1] as first_props,
    greatest(coalesce(max(f.attempt) filter (where f.failure), 0),
             count(distinct coalesce(f.attempt::text, f.dedupe_key)) filter (where f.failure), 1)::int as attempts,
    array_remove(array_agg(distinct f.contact_id) filter (where f.failure), null) as contacts,
    min(f.occurred_at) filter (where f.name = 'invoice.paid') as paid_fact_at,
    min(f.occurred_at) filter (where f.name = 'invoice.voided') as voided_fact_at,
    min(f.occurred_at) filter (where f.name = 'invoice.marked_uncollectible') as uncollectible_at`;
}

/** The columns of one invoice fact `de`, as factAggregates reads them. */
function factColumns(tx: Queryable) {
  return tx`
    de.name, de.occurred_at, de.properties, de.contact_id, de.dedupe_key,
    de.name in ${tx(FAILURE_FACTS)} as failure,
    case when de.properties->>'attemptCount' ~ '^[0-9]{1,9}$' then (de.properties->>'attemptCount')::int end as attempt`;
}

const INVOICE_COLUMNS = (tx: Queryable) => tx`
  i.id, i.customer_id, i.subscription_id, i.currency as invoice_currency, i.amount_due as invoice_amount_due,
  i.amount_paid, i.status, i.paid_at, i.version_created`;

/** An invoice with failure facts, except a new subscription's first invoice. */
const IS_CASE = (tx: Queryable) => tx`
  fx.first_failed_at is not null and coalesce(i.billing_reason, fx.first_props->>'billingReason', '') <> 'subscription_create'`;

/** A subscription fact `de` that ends it (canceled, or unpaid). */
const ENDS_SUBSCRIPTION = (tx: Queryable) => tx`
  (de.name = 'subscription.canceled' or (de.name = 'subscription.status_changed' and de.properties->>'to' in ('canceled', 'unpaid')))`;
const SNAPSHOT_ENDED = (tx: Queryable) => tx`s.status in ('canceled', 'unpaid')`;
const SNAPSHOT_ENDED_AT = (tx: Queryable) => tx`coalesce(s.ended_at, s.canceled_at, s.version_created)`;

const DECLINE_RANK = (tx: Queryable) => tx`case x.decline_class when 'sca' then 3 when 'hard' then 2 when 'soft' then 1 else 0 end`;
/** A customer-level failure q (no invoice id) linked to invoice b: same payment intent, or within 15 minutes of one of its failures. */
const LINKED_FAILURE = (tx: Queryable) => tx`
  exists (
    select 1 from payment_failures a
    where a.invoice_id = b.id
      and ((a.payment_intent_id is not null and a.payment_intent_id = q.payment_intent_id)
           or q.occurred_at between a.occurred_at - interval '15 minutes' and a.occurred_at + interval '15 minutes'))`;

/** st: a case's facts (base b, subscription end se, decline d, runs r) turned into times. */
function stColumns(tx: Queryable) {
  return tx`
    b.id, b.customer_id, b.subscription_id, b.first_failed_at, b.attempts, b.amount_paid,
    lower(coalesce(b.first_props->>'currency', b.invoice_currency)) as currency,
    coalesce(case when b.first_props->>'amountDue' ~ '^-?[0-9]{1,18}$' then (b.first_props->>'amountDue')::bigint end, b.invoice_amount_due) as amount_due,
    coalesce(d.rank, 0) as decline_rank,
    r.run_id, r.run_ids, coalesce(r.holdout, false) as holdout,
    case when b.paid_fact_at is not null or b.status = 'paid' then coalesce(b.paid_at, b.paid_fact_at, b.version_created) end as paid_time,
    case when b.voided_fact_at is not null or b.status = 'void' then coalesce(b.voided_fact_at, b.version_created) end as voided_at,
    coalesce(least(b.uncollectible_at, se.ended_at), case when b.status = 'uncollectible' then b.version_created end) as lost_at`;
}

const STATE = (tx: Queryable) => tx`
  case when paid_time is not null then 'recovered'
       when voided_at is not null then 'voided'
       when lost_at is not null then 'lost'
       else 'open' end as state`;

/** The attribution buckets in order, from six flags judged in [first_failed_at, paid_time). */
function attribution(tx: Queryable, flags: { paidOnCardUpdate: Fragment; portal: Fragment; pm: Fragment; clicked: Fragment; emailed: Fragment; card: Fragment }) {
  return tx`
    case
      when c.state <> 'recovered' then null
      when ${flags.paidOnCardUpdate} then 'paid_on_card_update'
      when ${flags.portal} then 'portal_update'
      when ${flags.pm} then 'payment_method_updated'
      when ${flags.clicked} then 'clicked'
      when ${flags.emailed} then 'emailed'
      when ${flags.card} then 'card_updater'
      else 'stripe_retry_only'
    end`;
}

/** Our immediate attempt after a card change (card-update-payments.ts) paid the invoice. */
const paidOnCardUpdate = (tx: Queryable, invoiceId: Fragment, firstFailedAt: Fragment) => tx`exists (
  select 1 from card_update_payments cp
  where cp.invoice_id = ${invoiceId} and cp.outcome = 'paid' and cp.decided_at >= ${firstFailedAt})`;

/**
 * The customer opened a Billing Portal session through our update-card link in the window, and
 * a payment_method.updated fact for them followed it (before the payment).
 */
const portalUpdate = (tx: Queryable, customerId: Fragment, firstFailedAt: Fragment, paidTime: Fragment) => tx`exists (
  select 1 from card_update_sessions cs
  join domain_events de on de.stripe_customer_id = cs.customer_id and de.name = 'payment_method.updated'
    and de.occurred_at >= cs.created_at and de.occurred_at < ${paidTime}
  where cs.customer_id = ${customerId} and cs.outcome = 'portal' and cs.created_at >= ${firstFailedAt} and cs.created_at < ${paidTime})`;

/** The recovery_cases row of case c, in column order. */
function caseColumns(tx: Queryable, attributionExpr: Fragment) {
  return tx`
    c.id, c.customer_id, c.subscription_id, c.currency, c.amount_due, c.first_failed_at,
    (array['unknown', 'soft', 'hard', 'sca'])[c.decline_rank + 1],
    c.attempts, c.state,
    case when c.state = 'recovered' then c.amount_paid else 0 end,
    case when c.state = 'recovered' then c.paid_time end,
    c.lost_at, c.voided_at,
    c.state = 'recovered' and c.lost_at is not null and c.lost_at < c.paid_time,
    ${attributionExpr},
    c.holdout, c.run_id,
    case when c.state = 'recovered' then round(extract(epoch from c.paid_time - c.first_failed_at))::bigint end,
    now()`;
}

/** Incremental plan: LATERAL index lookups per invoice (exported for EXPLAIN). */
export function caseRows(tx: Queryable) {
  const inWindow = (column: Fragment) => tx`${column} >= c.first_failed_at and ${column} < c.paid_time`;
  const customerFact = (name: string) => tx`exists (
    select 1 from domain_events de
    where de.stripe_customer_id = c.customer_id and de.name = ${name} and ${inWindow(tx`de.occurred_at`)})`;
  return tx`
    with base as (
      select ${INVOICE_COLUMNS(tx)}, fx.*
      from recovery_batch rb
      join invoices i on i.id = rb.invoice_id
      cross join lateral (
        select ${factAggregates(tx)}
        from (
          select ${factColumns(tx)} from domain_events de
          where de.stripe_customer_id = i.customer_id and de.subject_id = i.id and de.name in ${tx(INVOICE_FACTS)}
        ) f
      ) fx
      where ${IS_CASE(tx)}
    ),
    st as (
      select ${stColumns(tx)}
      from base b
      cross join lateral (
        select min(x.at) as ended_at from (
          select de.occurred_at as at from domain_events de
          where b.subscription_id is not null and de.stripe_customer_id = b.customer_id and de.subject_id = b.subscription_id
            and ${ENDS_SUBSCRIPTION(tx)}
          union all
          select ${SNAPSHOT_ENDED_AT(tx)} from subscriptions s where s.id = b.subscription_id and ${SNAPSHOT_ENDED(tx)}
        ) x
      ) se
      cross join lateral (
        select max(${DECLINE_RANK(tx)}) as rank
        from (
          select p.decline_class from payment_failures p where p.invoice_id = b.id
          union all
          select q.decline_class from payment_failures q
          where q.customer_id = b.customer_id and q.invoice_id is null and ${LINKED_FAILURE(tx)}
        ) x
      ) d
      cross join lateral (
        select min(wr.id) as run_id, array_agg(wr.id) as run_ids, bool_or(wr.holdout) as holdout
        from workflow_runs wr
        where wr.workflow_key = ${RECOVERY_WORKFLOW} and wr.contact_id = any(b.contacts) and wr.run_key = b.id
          and wr.status <> 'superseded' -- an entry refused as already paid/voided (delivered first): no run
      ) r
    ),
    cases as (select st.*, ${STATE(tx)} from st)
    select ${caseColumns(
      tx,
      attribution(tx, {
        paidOnCardUpdate: paidOnCardUpdate(tx, tx`c.id`, tx`c.first_failed_at`),
        portal: portalUpdate(tx, tx`c.customer_id`, tx`c.first_failed_at`, tx`c.paid_time`),
        pm: customerFact('payment_method.updated'),
        clicked: tx`(
          exists (select 1 from messages m where m.run_id = any(c.run_ids) and ${inWindow(tx`m.clicked_at`)})
          or exists (
            select 1 from messages m
            join domain_events de on de.contact_id = m.contact_id and de.name = 'email.clicked' and de.properties->>'messageId' = m.id
            where m.run_id = any(c.run_ids) and ${inWindow(tx`de.occurred_at`)}))`,
        emailed: tx`exists (select 1 from messages m where m.run_id = any(c.run_ids) and ${inWindow(tx`m.sent_at`)})`,
        card: customerFact('payment_method.automatically_updated'),
      }),
    )}
    from cases c`;
}

/** Bulk plan: the same rules as hash joins and aggregates (run with nested loops disabled). */
export function caseRowsBulk(tx: Queryable) {
  const inWindow = (column: Fragment) => tx`${column} >= rec.first_failed_at and ${column} < rec.paid_time`;
  return tx`
    with inv as (
      select ${INVOICE_COLUMNS(tx)}, i.billing_reason from recovery_batch rb join invoices i on i.id = rb.invoice_id
    ),
    fx as (
      select f.invoice_id, ${factAggregates(tx)}
      from (
        select inv.id as invoice_id, ${factColumns(tx)}
        from inv join domain_events de on de.subject_id = inv.id and de.stripe_customer_id = inv.customer_id
        where de.name in ${tx(INVOICE_FACTS)}
      ) f
      group by f.invoice_id
    ),
    base as (
      select i.*, fx.first_failed_at, fx.first_props, fx.attempts, fx.contacts, fx.paid_fact_at, fx.voided_fact_at, fx.uncollectible_at
      from inv i join fx on fx.invoice_id = i.id
      where ${IS_CASE(tx)}
    ),
    se as (
      select x.invoice_id, min(x.at) as ended_at from (
        select b.id as invoice_id, de.occurred_at as at
        from base b join domain_events de on de.subject_id = b.subscription_id and de.stripe_customer_id = b.customer_id
        where ${ENDS_SUBSCRIPTION(tx)}
        union all
        select b.id, ${SNAPSHOT_ENDED_AT(tx)} from base b join subscriptions s on s.id = b.subscription_id where ${SNAPSHOT_ENDED(tx)}
      ) x group by x.invoice_id
    ),
    d as (
      select x.invoice_id, max(${DECLINE_RANK(tx)}) as rank from (
        select b.id as invoice_id, p.decline_class from base b join payment_failures p on p.invoice_id = b.id
        union all
        select b.id, q.decline_class from base b join payment_failures q on q.customer_id = b.customer_id and q.invoice_id is null
        where ${LINKED_FAILURE(tx)}
      ) x group by x.invoice_id
    ),
    r as (
      select b.id as invoice_id, min(wr.id) as run_id, array_agg(wr.id) as run_ids, bool_or(wr.holdout) as holdout
      from base b cross join unnest(b.contacts) as bc(contact_id)
      join workflow_runs wr on wr.workflow_key = ${RECOVERY_WORKFLOW} and wr.contact_id = bc.contact_id and wr.run_key = b.id
        and wr.status <> 'superseded' -- an entry refused as already paid/voided (delivered first): no run
      group by b.id
    ),
    st as (
      select ${stColumns(tx)}
      from base b left join se on se.invoice_id = b.id left join d on d.invoice_id = b.id left join r on r.invoice_id = b.id
    ),
    cases as (select st.*, ${STATE(tx)} from st),
    rec as (select id, customer_id, first_failed_at, paid_time, run_ids from cases where state = 'recovered'),
    pm as (
      select rec.id,
             bool_or(de.name = 'payment_method.updated') as updated,
             bool_or(de.name = 'payment_method.automatically_updated') as card
      from rec join domain_events de on de.stripe_customer_id = rec.customer_id
      where de.name in ('payment_method.updated', 'payment_method.automatically_updated') and ${inWindow(tx`de.occurred_at`)}
      group by rec.id
    ),
    msg as (
      select rec.id,
             coalesce(bool_or(${inWindow(tx`m.clicked_at`)}), false) as clicked,
             coalesce(bool_or(${inWindow(tx`m.sent_at`)}), false) as sent
      from rec cross join unnest(rec.run_ids) as rr(run_id) join messages m on m.run_id = rr.run_id
      group by rec.id
    ),
    clicks as (
      select distinct rec.id
      from rec cross join unnest(rec.run_ids) as rr(run_id)
      join messages m on m.run_id = rr.run_id
      join domain_events de on de.contact_id = m.contact_id and de.properties->>'messageId' = m.id
      where de.name = 'email.clicked' and ${inWindow(tx`de.occurred_at`)}
    )
    select ${caseColumns(
      tx,
      attribution(tx, {
        paidOnCardUpdate: paidOnCardUpdate(tx, tx`c.id`, tx`c.first_failed_at`),
        portal: portalUpdate(tx, tx`c.customer_id`, tx`c.first_failed_at`, tx`c.paid_time`),
        pm: tx`coalesce(pm.updated, false)`,
        clicked: tx`(coalesce(msg.clicked, false) or clicks.id is not null)`,
        emailed: tx`coalesce(msg.sent, false)`,
        card: tx`coalesce(pm.card, false)`,
      }),
    )}
    from cases c left join pm on pm.id = c.id left join msg on msg.id = c.id left join clicks on clicks.id = c.id`;
}
