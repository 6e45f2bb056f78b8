// Bulk data for the scale scenarios, generated inside PostgreSQL (INSERT … SELECT over
// generate_series): a million rows take seconds, not the minutes a client-side loop would. The
// data is pseudo-random but repeatable (setseed in the same transaction).
import type postgres from 'postgres';
import { startRun } from '../../src/workflows/interpreter.ts';
import { billingRecovery } from '../../src/workflows/builtin/index.ts';
import type { Context, EventFact, RunState } from '../../src/workflows/types.ts';

type Sql = postgres.Sql;

/**
 * `count` recovery cases (the recovery_cases ledger) over `days` days of history ending now, in
 * three currencies: usd 60% (cents), eur 30% (cents), jpy 10% (yen, no minor unit), at plan
 * prices. Outcomes: 55% recovered (4% of them late, i.e. paid after they were lost), 10% voided,
 * open if the first failure is under 30 days old (15%), lost otherwise. Recovery times from
 * minutes to weeks (log-normal-ish, median ≈ 10 h). Attribution over the five buckets; 90% of
 * the cases have a billing-recovery run, 10% of those in the hold-out group. Decline classes
 * soft 70%, hard 20%, sca 7%, unknown 3%. ~350k customers (several cases each).
 *
 * One INSERT statement: the statement-level triggers of recovery_cases (migration 0003) build the
 * rollups (recovery_daily, recovery_time_hist) from its transition table, as they would for the
 * product's own bulk refresh.
 */
export async function insertRecoveryCases(sql: Sql, options: { count: number; days: number; seed?: number }): Promise<void> {
  await sql.begin(async (tx) => {
    await tx`select setseed(${options.seed ?? 0.42})`;
    await tx`
      insert into recovery_cases (invoice_id, customer_id, subscription_id, currency, amount_due, first_failed_at, decline_class, attempts, state,
        amount_recovered, recovered_at, lost_at, voided_at, late, attribution, holdout, run_id, recovery_seconds, computed_at)
      select 'in_bench_' || g, 'cus_bench_' || (g % 350000), 'sub_bench_' || (g % 350000), cur, due, ff, dc, att, st,
        case when st = 'recovered' then due else 0 end,
        case when st = 'recovered' then ff + make_interval(secs => rs) end,
        case when st = 'lost' then ff + interval '14 days' when late then ff + make_interval(secs => rs / 2) end,
        case when st = 'voided' then ff + interval '5 days' end,
        late,
        case when st = 'recovered' then attr end,
        has_run and hold,
        case when has_run then g end,
        case when st = 'recovered' then rs end,
        now()
      from (
        select g, cur, due, ff, dc, att, st, attr, has_run, hold, rs, st = 'recovered' and r5 < 0.04 as late
        from (
          select g, ff, r5,
            case when r1 < 0.6 then 'usd' when r1 < 0.9 then 'eur' else 'jpy' end as cur,
            (case when r1 < 0.9 then (array[900, 2900, 4900, 9900, 19900, 49900])[1 + floor(r2 * 6)::int]
                  else (array[1000, 3000, 5000, 10000, 30000, 100000])[1 + floor(r2 * 6)::int] end)::bigint as due,
            case when r3 < 0.70 then 'soft' when r3 < 0.90 then 'hard' when r3 < 0.97 then 'sca' else 'unknown' end as dc,
            1 + floor(r4 * 4)::int as att,
            case when r6 < 0.55 then 'recovered' when r6 < 0.65 then 'voided'
                 when ff > now() - interval '30 days' and r6 < 0.80 then 'open' else 'lost' end as st,
            case when r7 < 0.25 then 'payment_method_updated' when r7 < 0.45 then 'clicked' when r7 < 0.60 then 'emailed'
                 when r7 < 0.70 then 'card_updater' else 'stripe_retry_only' end as attr,
            r8 < 0.9 as has_run, r9 < 0.1 as hold,
            least(round(exp(7 + 5 * r10 + 2 * r5))::bigint, 60 * 86400) as rs
          from (
            select g, random() r1, random() r2, random() r3, random() r4, random() r5, random() r6, random() r7, random() r8,
                   random() r9, random() r10, now() - make_interval(secs => random() * ${options.days} * 86400) as ff
            from generate_series(1, ${options.count}::int) g
          ) x
        ) y
      ) z`;
  });
}

/** The trigger properties the Stripe projector records on an invoice.payment_failed fact. */
function failureProperties(now: Date): Record<string, unknown> {
  return {
    invoiceId: 'in_placeholder',
    customerId: 'cus_placeholder',
    subscriptionId: 'sub_placeholder',
    status: 'open',
    currency: 'usd',
    amountDue: 4900,
    amountPaid: 0,
    amountRemaining: 4900,
    attemptCount: 1,
    nextPaymentAttempt: new Date(now.getTime() + 3 * 86_400_000).toISOString(),
    billingReason: 'subscription_cycle',
    hostedInvoiceUrl: 'https://invoice.stripe.com/i/acct_bench/test_placeholder',
    declineClass: 'soft',
    declineCode: 'insufficient_funds',
  };
}

/**
 * The state of a billing-recovery run right after its first (soft-decline) email, waiting on its
 * first timer (soft_wait_1): computed by the product's own interpreter, so it has the shape the
 * engine expects. Per-run fields (invoice, customer, wait.until) are filled in by SQL.
 */
export function waitingRecoveryState(now: Date): RunState {
  const trigger: EventFact = { id: '0', name: 'invoice.payment_failed', occurredAt: now.toISOString(), properties: failureProperties(now) };
  const context: Context = {
    contact: { id: 0, email: 'placeholder@example.org', traits: {} },
    account: null,
    invoice: null,
    subscription: null,
    counts: {},
    policy: { recoveryOpen: false, lastCappedSendAt: null, frequencyCap: null, quietHours: null, timezone: null, suppressed: null },
  };
  const { state } = startRun(billingRecovery, trigger, context, now);
  if (state.status !== 'active' || state.wait?.kind !== 'time') throw new Error(`unexpected billing-recovery start state: ${JSON.stringify(state.wait)}`);
  return state;
}

/**
 * `waiting + due` contacts (one per run, with an email and a Stripe customer id) and as many
 * active billing-recovery runs waiting on a timer. Waiting runs are due 1–180 days from now; the
 * `due` runs are spread evenly through the table (every k-th row) and are due at `dueAt`, both in
 * `due_at` and in their state (`wait.until`), as the engine would have written them. Returns the
 * ids of the due runs. ANALYZE is left to the caller.
 */
export async function insertWaitingRuns(
  sql: Sql,
  options: { waiting: number; due: number; dueAt: Date; seed?: number; tag?: string },
): Promise<number[]> {
  const total = options.waiting + options.due;
  const step = Math.floor(total / options.due);
  const now = new Date();
  const state = waitingRecoveryState(now);
  const tag = options.tag ?? 'wr';
  return sql.begin(async (tx) => {
    await tx`select setseed(${options.seed ?? 0.17})`;
    const rows = await tx<{ id: string }[]>`
      with c as (
        insert into contacts (user_id, email, stripe_customer_id, traits, created_at, updated_at)
        select 'bench_' || ${tag} || '_' || g, 'bench_' || ${tag} || '_' || g || '@example.org', 'cus_bench_' || ${tag} || '_' || g,
               jsonb_build_object('plan', (array['starter', 'growth', 'scale'])[1 + g % 3], 'seats', 1 + g % 40),
               ${now}::timestamptz - make_interval(days => 30 + g % 700), ${now}::timestamptz
        from generate_series(1, ${total}::int) g
        returning id, user_id
      ),
      r as (
        select c.id as contact_id, g,
               case when g % ${step}::int = 0 and g / ${step}::int <= ${options.due}::int then ${options.dueAt}::timestamptz
                    else ${now}::timestamptz + make_interval(secs => 86400 + random() * 179 * 86400) end as due_at
        from c cross join lateral (select split_part(c.user_id, '_', 3)::int as g) x
      ),
      runs as (
        insert into workflow_runs (workflow_key, version, contact_id, account_id, run_key, status, state, due_at, queued_at,
                                   trigger_event_id, holdout, variant, started_at, updated_at)
        select ${billingRecovery.key}, 1, r.contact_id, null, 'in_bench_' || ${tag} || '_' || r.g, 'active',
               jsonb_set(jsonb_set(jsonb_set(jsonb_set(${JSON.stringify(state)}::text::jsonb,
                 '{wait,until}', to_jsonb(to_char(r.due_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))),
                 '{vars,trigger,properties,invoiceId}', to_jsonb('in_bench_' || ${tag} || '_' || r.g)),
                 '{vars,trigger,properties,customerId}', to_jsonb('cus_bench_' || ${tag} || '_' || r.g)),
                 '{vars,trigger,properties,subscriptionId}', to_jsonb('sub_bench_' || ${tag} || '_' || r.g)),
               r.due_at, null, null, false, null, ${now}::timestamptz - interval '3 days', ${now}::timestamptz
        from r
        returning id, due_at
      )
      select id::text as id from runs where due_at = ${options.dueAt}::timestamptz order by runs.id`;
    return rows.map((r) => Number(r.id));
  });
}
