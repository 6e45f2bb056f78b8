// What the dashboard shows, gathered from the report functions of src/reports (the same numbers
// as the admin API) plus the open cases of the ledger, which no report lists one by one.
import type { Sql } from '../db/connection.ts';
import { refreshRecoveryCases } from '../reports/recovery-cases.ts';
import { recoveryReport, type RecoveryReport } from '../reports/recovery-report.ts';
import { workflowReport, type WorkflowReport } from '../reports/workflow-report.ts';
import { getWorkflow, listWorkflows, type WorkflowSummary } from '../workflows/workflow-store.ts';
import { countDeadLetters } from '../work/dead-letters.ts';

/** Open cases listed per currency on the page (the CSV has all of them). */
export const OPEN_CASES_SHOWN = 100;

export interface OpenCase {
  invoiceId: string;
  customerId: string;
  customerName: string | null;
  customerEmail: string | null;
  currency: string;
  amountDue: number;
  firstFailedAt: Date;
  attempts: number;
  declineClass: string;
}

export interface Range {
  from: Date;
  to: Date;
  fromText: string;
  toText: string;
}

export interface DashboardData {
  range: Range;
  recovery: RecoveryReport;
  /** per currency: the largest open cases, and how many there are in all */
  openCases: Map<string, { shown: OpenCase[]; total: number }>;
  workflows: { summary: WorkflowSummary; report: WorkflowReport }[];
  /** items parked after their bounded retries, per queue (GET /v1/admin/dead-letters lists them) */
  deadLetters: { queue: string; count: number }[];
}

export async function openCases(sql: Sql, range: { from: Date; to: Date }): Promise<Map<string, { shown: OpenCase[]; total: number }>> {
  const rows = await sql<(OpenCase & { total: number })[]>`
    select * from (
      select rc.invoice_id as "invoiceId", rc.customer_id as "customerId", c.name as "customerName", c.email as "customerEmail",
             rc.currency, rc.amount_due::bigint as "amountDue", rc.first_failed_at as "firstFailedAt", rc.attempts,
             rc.decline_class as "declineClass",
             row_number() over (partition by rc.currency order by rc.amount_due desc, rc.first_failed_at, rc.invoice_id) as n,
             (count(*) over (partition by rc.currency))::int as total
      from recovery_cases rc left join customers c on c.id = rc.customer_id
      where rc.state = 'open' and rc.first_failed_at >= ${range.from} and rc.first_failed_at < ${range.to}
    ) x
    where n <= ${OPEN_CASES_SHOWN}
    order by currency, n`;
  const out = new Map<string, { shown: OpenCase[]; total: number }>();
  for (const r of rows) {
    let entry = out.get(r.currency);
    if (!entry) out.set(r.currency, (entry = { shown: [], total: r.total }));
    entry.shown.push({
      invoiceId: r.invoiceId,
      customerId: r.customerId,
      customerName: r.customerName,
      customerEmail: r.customerEmail,
      currency: r.currency,
      amountDue: Number(r.amountDue),
      firstFailedAt: r.firstFailedAt,
      attempts: r.attempts,
      declineClass: r.declineClass,
    });
  }
  return out;
}

export async function loadDashboard(sql: Sql, range: Range): Promise<DashboardData> {
  // The same refresh the report API does before answering.
  await refreshRecoveryCases(sql);
  const summaries = await listWorkflows(sql);
  const [recovery, open, workflows, deadLetters] = await Promise.all([
    recoveryReport(sql, { ...range, currency: null }),
    openCases(sql, range),
    Promise.all(
      summaries.map(async (summary) => {
        const record = await getWorkflow(sql, summary.key);
        if (!record) return null;
        return { summary, report: await workflowReport(sql, { key: summary.key, definition: record.definition }, range) };
      }),
    ),
    countDeadLetters(sql),
  ]);
  return { range, recovery, openCases: open, workflows: workflows.filter((w) => w !== null), deadLetters };
}
