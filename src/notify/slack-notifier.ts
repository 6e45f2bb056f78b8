// Slack alerts (issue 13): delivers the rows of slack_notifications (one per workflow `notify`
// step execution, id "<run id>:<step id>") to a Slack incoming webhook as a Block Kit message,
// through a work queue: leases, exponential backoff on failure (Slack 5xx, network) — a 429 comes
// back when its Retry-After says (the work queue's per-failure retry time) —, dead letters after
// maxAttempts. Idempotent per (run, step): the row's primary key, and a row is sent
// at most once it is marked sent (a crash between Slack's 200 and our commit re-sends once:
// incoming webhooks take no idempotency key).
//
// The message is built at delivery from what the database knows about the run's invoice (the
// billing-recovery run key): customer, amount due, MRR per currency (never added across
// currencies), the latest decline reason, days in dunning, links to Stripe and the hosted invoice.
// Nothing about the customer is logged.
import type { Logger } from 'pino';
import type { Clock } from '../clock.ts';
import type { Queryable, Sql } from '../db/connection.ts';
import { liveMrrByCustomer } from '../stripe/customer-mrr.ts';
import { createWorkQueue, drainBatches, failureText, type QueueSpec, type WorkQueue } from '../work/work-queue.ts';

export const SLACK_NOTIFICATIONS_QUEUE: QueueSpec = {
  name: 'slack-notifications',
  table: 'slack_notifications',
  idType: 'text',
  order: 'created, id',
  columns: 'id, run_id, step_id, webhook_url, text, created',
  doneColumn: 'sent_at',
  partitions: 4,
  maxAttempts: 8,
  backoff: { baseMs: 5_000, maxMs: 900_000 },
  leaseMs: 60_000,
  analyzeEvery: 0,
};

interface NotificationRow {
  id: string;
  run_id: number;
  step_id: string;
  webhook_url: string | null;
  text: string;
  created: Date;
}

export interface AlertFacts {
  workflowKey: string | null;
  invoiceId: string | null;
  customerId: string | null;
  customerName: string | null;
  amountDue: number | null;
  currency: string | null;
  hostedInvoiceUrl: string | null;
  /** per currency, never added together */
  mrr: Array<{ currency: string; mrrMinor: number }>;
  declineReason: string | null;
  firstFailedAt: Date | null;
  caseState: string | null;
}

/** Amount in minor units as text, with the currency's own number of decimals (Intl). */
export function formatMinor(minor: number, currency: string, locale = 'en-US'): string {
  const format = new Intl.NumberFormat(locale, { style: 'currency', currency: currency.toUpperCase() });
  const digits = format.resolvedOptions().maximumFractionDigits ?? 2;
  return format.format(minor / 10 ** digits);
}

/** What the alert says about a run: read from the projected Stripe state, by the run's invoice. */
export async function readAlertFacts(db: Queryable, runId: number): Promise<AlertFacts> {
  const [row] = await db<
    {
      workflow_key: string;
      invoice_id: string | null;
      customer_id: string | null;
      customer_name: string | null;
      amount_remaining: string | null;
      currency: string | null;
      hosted_invoice_url: string | null;
      decline: string | null;
      first_failed_at: Date | null;
      case_state: string | null;
    }[]
  >`
    select r.workflow_key, i.id as invoice_id, i.customer_id, cu.name as customer_name, i.amount_remaining::text,
      i.currency, i.hosted_invoice_url, rc.state as case_state,
      coalesce(rc.first_failed_at, (select min(occurred_at) from payment_failures where invoice_id = i.id)) as first_failed_at,
      (select coalesce(nullif(concat_ws(' / ', pf.decline_code, pf.failure_code, pf.advice_code), ''), pf.decline_class)
         from payment_failures pf where pf.invoice_id = i.id order by pf.occurred_at desc, pf.id desc limit 1) as decline
    from workflow_runs r
    left join invoices i on i.id = r.run_key
    left join customers cu on cu.id = i.customer_id
    left join recovery_cases rc on rc.invoice_id = i.id
    where r.id = ${runId}`.execute();
  const mrr = row?.customer_id ? Object.entries((await liveMrrByCustomer(db, [row.customer_id])).get(row.customer_id)!) : [];
  return {
    workflowKey: row?.workflow_key ?? null,
    invoiceId: row?.invoice_id ?? null,
    customerId: row?.customer_id ?? null,
    customerName: row?.customer_name ?? null,
    amountDue: row?.amount_remaining == null ? null : Number(row.amount_remaining),
    currency: row?.currency ?? null,
    hostedInvoiceUrl: row?.hosted_invoice_url ?? null,
    mrr: mrr.map(([currency, mrrMinor]) => ({ currency, mrrMinor })),
    declineReason: row?.decline ?? null,
    firstFailedAt: row?.first_failed_at ?? null,
    caseState: row?.case_state ?? null,
  };
}

/** The Block Kit message (text is the notification fallback Slack requires). */
export function slackMessage(text: string, facts: AlertFacts, now: Date): { text: string; blocks: unknown[] } {
  const days = facts.firstFailedAt ? Math.floor((now.getTime() - new Date(facts.firstFailedAt).getTime()) / 86_400_000) : null;
  const field = (label: string, value: string) => ({ type: 'mrkdwn', text: `*${label}*\n${value}` });
  const fields = [
    field('Customer', facts.customerName ?? facts.customerId ?? 'unknown'),
    field('Amount due', facts.amountDue !== null && facts.currency ? formatMinor(facts.amountDue, facts.currency) : '—'),
    field('MRR', facts.mrr.length > 0 ? facts.mrr.map((m) => formatMinor(m.mrrMinor, m.currency)).join(' + ') : '—'),
    field('Decline reason', facts.declineReason ?? '—'),
    field('Days in dunning', days === null ? '—' : String(days)),
    ...(facts.caseState ? [field('Case', facts.caseState)] : []),
  ];
  const links: unknown[] = [];
  if (facts.customerId) {
    links.push({ type: 'button', text: { type: 'plain_text', text: 'Customer in Stripe' }, url: `https://dashboard.stripe.com/customers/${encodeURIComponent(facts.customerId)}` });
  }
  if (facts.hostedInvoiceUrl) links.push({ type: 'button', text: { type: 'plain_text', text: 'Invoice' }, url: facts.hostedInvoiceUrl });
  return {
    text,
    blocks: [
      { type: 'header', text: { type: 'plain_text', text: text.slice(0, 150) } },
      { type: 'section', fields },
      ...(links.length > 0 ? [{ type: 'actions', elements: links }] : []),
    ],
  };
}

/** Longest Retry-After we wait for; a bigger value (or a bogus date) is clamped to it. */
const MAX_RETRY_AFTER_MS = 3_600_000;

/**
 * An HTTP Retry-After value (RFC 9110: delay-seconds or an HTTP-date) as milliseconds from `now`;
 * null when absent or unreadable (the queue's backoff applies).
 */
export function retryAfterMs(value: string | null, now: Date): number | null {
  if (value === null || value.trim() === '') return null;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Math.min(MAX_RETRY_AFTER_MS, Number(text) * 1000);
  const at = Date.parse(text);
  if (Number.isNaN(at)) return null;
  return Math.min(MAX_RETRY_AFTER_MS, Math.max(0, at - now.getTime()));
}

class SlackHttpError extends Error {
  readonly retryAfterMs: number | null;
  constructor(status: number, retryAfter: number | null) {
    super(`Slack answered HTTP ${status}${retryAfter !== null ? ` (retry after ${Math.ceil(retryAfter / 1000)} s)` : ''}`);
    this.retryAfterMs = retryAfter;
  }
}

export interface SlackNotifier {
  queue: WorkQueue;
  runOnce(limit?: number): Promise<number>;
  drain(): Promise<number>;
}

export function createSlackNotifier(deps: {
  sql: Sql;
  clock: Clock;
  logger: Pick<Logger, 'warn'>;
  /** SLACK_WEBHOOK_URL: used when the step names no URL of its own */
  defaultWebhookUrl: string | undefined;
  fetchImpl?: typeof fetch;
  timeoutMs?: number;
}): SlackNotifier {
  const { sql, clock, logger } = deps;
  const queue = createWorkQueue({ sql, clock }, SLACK_NOTIFICATIONS_QUEUE);

  async function runOnce(limit = 20): Promise<number> {
    return queue.runBatch<NotificationRow>(limit, async (tx, rows, report) => {
      for (const item of rows) {
        const url = item.webhook_url ?? deps.defaultWebhookUrl;
        if (!url) {
          report.fail(item.id, new Error('no Slack webhook URL: set SLACK_WEBHOOK_URL or the step webhookUrl'));
          continue;
        }
        const message = slackMessage(item.text, await readAlertFacts(tx, item.run_id), clock.now());
        try {
          const res = await (deps.fetchImpl ?? fetch)(url, {
            method: 'POST',
            headers: { 'content-type': 'application/json', 'user-agent': 'Lifeline-Slack/1' },
            body: JSON.stringify(message),
            signal: AbortSignal.timeout(deps.timeoutMs ?? 10_000),
          });
          await res.arrayBuffer();
          if (!res.ok) {
            // Slack rate-limits incoming webhooks (about one message per second) with 429 and
            // Retry-After: retrying sooner only earns another 429 and burns an attempt.
            throw new SlackHttpError(res.status, res.status === 429 ? retryAfterMs(res.headers.get('retry-after'), clock.now()) : null);
          }
        } catch (err) {
          // the URL is a secret (it alone allows posting): never logged
          logger.warn({ notificationId: item.id, error: failureText(err) }, 'Slack alert failed; will retry');
          report.fail(item.id, new Error(failureText(err)), err instanceof SlackHttpError ? err.retryAfterMs ?? undefined : undefined);
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
