// Per-workflow report: the run funnel, the workflow's primary KPI, split-test statistics and the
// hold-out lift, over the runs started in [from, to). Definitions: definitions.ts.
import type { PendingQuery, Row } from 'postgres';
import type { Sql } from '../db/connection.ts';
import type { Step, WorkflowDefinition } from '../workflows/types.ts';
import { ATTRIBUTION_BUCKETS, RECOVERY_WORKFLOW, WORKFLOW_DEFINITION } from './definitions.ts';
import { compareProportions, ratio } from './stats.ts';

export interface AmountByCurrency {
  currency: string;
  amount: number;
  count: number;
}

export interface VariantStats {
  variant: string;
  entered: number;
  converted: number;
  conversionRate: number | null;
  /** against the control; null for the control itself or when a group is empty */
  vsControl: { differencePoints: number; ci95: [number, number]; pValue: number } | null;
}

export interface WorkflowReport {
  workflow: string;
  name: string;
  from: string;
  to: string;
  runs: { entered: number; active: number; converted: number; exited: number; completed: number; conversionRate: number | null };
  steps: { stepId: string; type: string | null; reached: number; sent: number; clicked: number }[];
  kpi: Record<string, unknown>;
  control: string | null;
  variants: VariantStats[];
  holdout: {
    entered: number;
    converted: number;
    conversionRate: number | null;
    treated: { entered: number; converted: number; conversionRate: number | null };
    liftPoints: number | null;
    ci95: [number, number] | null;
    pValue: number | null;
  };
  definition: string;
}

/** Step ids and types of a definition in pre-order (the order they appear in the editor). */
export function stepOrder(steps: Step[]): { id: string; type: string }[] {
  const out: { id: string; type: string }[] = [];
  const walk = (list: Step[]) => {
    for (const step of list) {
      out.push({ id: step.id, type: step.type });
      if (step.type === 'branch') {
        for (const b of step.branches) walk(b.steps);
        walk(step.otherwise);
      } else if (step.type === 'split') {
        for (const v of step.variants) walk(v.steps);
      } else if (step.type === 'wait_for_event') {
        walk(step.onEvent);
        walk(step.onTimeout);
      }
    }
  };
  walk(steps);
  return out;
}

function firstSplitControl(steps: Step[]): string | null {
  const find = (list: Step[]): string | null => {
    for (const step of list) {
      if (step.type === 'split') return step.variants[0]?.key ?? null;
      const children =
        step.type === 'branch' ? [...step.branches.map((b) => b.steps), step.otherwise] : step.type === 'wait_for_event' ? [step.onEvent, step.onTimeout] : [];
      for (const c of children) {
        const found = find(c);
        if (found) return found;
      }
    }
    return null;
  };
  return find(steps);
}

const byCurrency = (rows: { currency: string | null; amount: number; n: number }[]): AmountByCurrency[] =>
  rows
    .filter((r) => r.currency)
    .map((r) => ({ currency: r.currency!, amount: r.amount, count: r.n }))
    .sort((a, b) => a.currency.localeCompare(b.currency));

export async function workflowReport(
  sql: Sql,
  workflow: { key: string; definition: WorkflowDefinition },
  params: { from: Date; to: Date; fromText: string; toText: string },
): Promise<WorkflowReport> {
  const { key, definition } = workflow;
  const { from, to } = params;
  const cohort = sql`
    select id, status, holdout, variant, started_at, converted_at, contact_id, account_id, run_key
    from workflow_runs where workflow_key = ${key} and started_at >= ${from} and started_at < ${to}
      -- an entry refused because its goal or exit came first (delivery order) is no run: no steps, no email
      and status <> 'superseded'`;

  const [groups, reached, sends] = await Promise.all([
    sql<{ status: string; holdout: boolean; variant: string | null; n: number }[]>`
      select status, holdout, variant, count(*)::int as n from (${cohort}) c group by 1, 2, 3`,
    sql<{ step_id: string; n: number }[]>`
      select t.step_id, count(distinct t.run_id)::int as n
      from (${cohort}) c join run_trace t on t.run_id = c.id
      where t.step_id is not null group by t.step_id`,
    sql<{ step_id: string; sent: number; clicked: number }[]>`
      select m.step_id, count(*) filter (where m.sent_at is not null)::int as sent, count(*) filter (where m.clicked_at is not null)::int as clicked
      from (${cohort}) c join messages m on m.run_id = c.id
      where m.step_id is not null group by m.step_id`,
  ]);

  const runs = { entered: 0, active: 0, converted: 0, exited: 0, completed: 0, conversionRate: null as number | null };
  const variantCounts = new Map<string, { entered: number; converted: number }>();
  const hold = { entered: 0, converted: 0 };
  const treated = { entered: 0, converted: 0 };
  for (const g of groups) {
    runs.entered += g.n;
    if (g.status === 'active' || g.status === 'converted' || g.status === 'exited' || g.status === 'completed') runs[g.status] += g.n;
    const converted = g.status === 'converted' ? g.n : 0;
    const group = g.holdout ? hold : treated;
    group.entered += g.n;
    group.converted += converted;
    if (!g.holdout && g.variant !== null && g.variant !== 'holdout') {
      const v = variantCounts.get(g.variant) ?? { entered: 0, converted: 0 };
      v.entered += g.n;
      v.converted += converted;
      variantCounts.set(g.variant, v);
    }
  }
  runs.conversionRate = ratio(runs.converted, runs.entered);

  // Funnel: current definition order, then steps only older versions (or traces) know.
  const reachedOf = new Map(reached.map((r) => [r.step_id, r.n]));
  const sendsOf = new Map(sends.map((r) => [r.step_id, r]));
  // An exit's steps (e.g. the lost-case alert) act as the run ends: listed after the steps.
  const ordered = stepOrder([...definition.steps, ...(definition.exit ?? []).flatMap((exit) => exit.steps ?? [])]);
  const known = new Set(ordered.map((s) => s.id));
  const extra = [...new Set([...reachedOf.keys(), ...sendsOf.keys()])].filter((id) => !known.has(id)).sort();
  const steps = [...ordered, ...extra.map((id) => ({ id, type: null as string | null }))].map((s) => ({
    stepId: s.id,
    type: s.type,
    reached: reachedOf.get(s.id) ?? 0,
    sent: sendsOf.get(s.id)?.sent ?? 0,
    clicked: sendsOf.get(s.id)?.clicked ?? 0,
  }));

  // Split variants against the control.
  const control = firstSplitControl(definition.steps) ?? ([...variantCounts.keys()].sort()[0] ?? null);
  const variantKeys = [...new Set([...(control ? [control] : []), ...variantCounts.keys()])];
  const controlCounts = control ? (variantCounts.get(control) ?? { entered: 0, converted: 0 }) : null;
  const variants: VariantStats[] = variantKeys.map((variant) => {
    const v = variantCounts.get(variant) ?? { entered: 0, converted: 0 };
    const cmp = variant !== control && controlCounts ? compareProportions(v.converted, v.entered, controlCounts.converted, controlCounts.entered) : null;
    return {
      variant,
      entered: v.entered,
      converted: v.converted,
      conversionRate: ratio(v.converted, v.entered),
      vsControl: cmp ? { differencePoints: cmp.differencePoints, ci95: cmp.ci95, pValue: cmp.pValue } : null,
    };
  });

  const holdCmp = compareProportions(treated.converted, treated.entered, hold.converted, hold.entered);
  const holdout = {
    entered: hold.entered,
    converted: hold.converted,
    conversionRate: ratio(hold.converted, hold.entered),
    treated: { ...treated, conversionRate: ratio(treated.converted, treated.entered) },
    liftPoints: holdCmp ? holdCmp.differencePoints : null,
    ci95: holdCmp ? holdCmp.ci95 : null,
    pValue: holdCmp ? holdCmp.pValue : null,
  };

  return {
    workflow: key,
    name: definition.name,
    from: params.fromText,
    to: params.toText,
    runs,
    steps,
    kpi: await kpiFor(sql, key, cohort, runs),
    control,
    variants,
    holdout,
    definition: WORKFLOW_DEFINITION,
  };
}

type Fragment = PendingQuery<Row[]>;

async function kpiFor(sql: Sql, key: string, cohort: Fragment, runs: { entered: number; converted: number }): Promise<Record<string, unknown>> {
  const rate = ratio(runs.converted, runs.entered);
  switch (key) {
    case 'activation': {
      const [row] = await sql<{ hours: number | null }[]>`
        select percentile_cont(0.5) within group (order by extract(epoch from converted_at - started_at)::float8 / 3600) as hours
        from (${cohort}) c where status = 'converted' and converted_at is not null`;
      return { name: 'time to value', activationRate: rate, medianHoursToValue: row?.hours ?? null };
    }
    case 'onboarding':
      return { name: 'onboarding completion', completionRate: rate };
    case 'expansion':
    case 'expansion-usage': {
      const rows = await goalFactSums(sql, cohort, 'subscription.mrr_changed', 'delta');
      return { name: 'upgrade conversion', upgradeConversionRate: rate, mrrGained: byCurrency(rows) };
    }
    case 'win-back': {
      const rows = await goalFactSums(sql, cohort, 'subscription.created', 'mrr');
      return { name: 'reactivation', reactivationRate: rate, mrrReactivated: byCurrency(rows) };
    }
    case RECOVERY_WORKFLOW: {
      const [revenue, [churn], byAction] = await Promise.all([
        sql<{ currency: string; amount: number; n: number }[]>`
          select rc.currency, coalesce(sum(rc.amount_recovered), 0)::bigint as amount, count(*)::int as n
          from (${cohort}) c join recovery_cases rc on rc.invoice_id = c.run_key
          where rc.state = 'recovered' group by rc.currency`,
        sql<{ at_risk: number; churned: number }[]>`
          with subs as (
            select distinct rc.subscription_id, rc.customer_id
            from (${cohort}) c join recovery_cases rc on rc.invoice_id = c.run_key
            where rc.subscription_id is not null
          )
          select count(*)::int as at_risk,
                 count(*) filter (where exists (
                   select 1 from domain_events de
                   where de.stripe_customer_id = s.customer_id and de.name = 'subscription.canceled'
                     and de.subject_id = s.subscription_id and de.properties->>'reason' = 'payment_failed'))::int as churned
          from subs s`,
        // recoveries per action (the recovery ledger's attribution)
        sql<{ attribution: string; currency: string; amount: number; n: number }[]>`
          select rc.attribution, rc.currency, coalesce(sum(rc.amount_recovered), 0)::bigint as amount, count(*)::int as n
          from (${cohort}) c join recovery_cases rc on rc.invoice_id = c.run_key
          where rc.state = 'recovered' group by rc.attribution, rc.currency order by rc.currency`,
      ]);
      const recoveriesByAction = Object.fromEntries(
        ATTRIBUTION_BUCKETS.map((bucket) => {
          const rows = byAction.filter((r) => r.attribution === bucket);
          return [bucket, { count: rows.reduce((n, r) => n + r.n, 0), amounts: byCurrency(rows) }];
        }),
      );
      const atRisk = churn?.at_risk ?? 0;
      const churned = churn?.churned ?? 0;
      return {
        name: 'recovered revenue',
        recoveredRevenue: byCurrency(revenue),
        involuntaryChurn: { churned, atRisk, rate: ratio(churned, atRisk) },
        recoveriesByAction,
        conversionRate: rate,
      };
    }
    default:
      return { name: 'conversion', conversionRate: rate };
  }
}

/** Sums a numeric property of the fact that converted each converted run, per currency. */
async function goalFactSums(sql: Sql, cohort: Fragment, event: string, property: string) {
  return sql<{ currency: string | null; amount: number; n: number }[]>`
    with goal as (
      select distinct on (c.id) c.id, de.properties
      from (${cohort}) c
      join domain_events de on de.name = ${event} and de.occurred_at = c.converted_at
        and (de.contact_id = c.contact_id or (c.account_id is not null and de.account_id = c.account_id))
      where c.status = 'converted'
      order by c.id, (de.contact_id = c.contact_id) desc, de.id
    )
    select lower(properties->>'currency') as currency,
           coalesce(sum(case when properties->>${property} ~ '^-?[0-9]{1,15}$' then (properties->>${property})::bigint else 0 end), 0)::bigint as amount,
           count(*)::int as n
    from goal group by 1`;
}
