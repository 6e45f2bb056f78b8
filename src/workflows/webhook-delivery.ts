// Delivers a workflow `webhook` step: POST of signed JSON, retried with backoff by pg-boss.
// Signature header like Stripe's: `Lifeline-Signature: t=<unix>,v1=<hex hmac-sha256 of "t.body">`.
import { createHmac } from 'node:crypto';
import type { Logger } from 'pino';
import type { Clock } from '../clock.ts';
import type { Sql } from '../db/connection.ts';

export function signPayload(secret: string, body: string, at: Date): string {
  const t = Math.floor(at.getTime() / 1000);
  const v1 = createHmac('sha256', secret).update(`${t}.${body}`).digest('hex');
  return `t=${t},v1=${v1}`;
}

/** Last attempt pg-boss makes (retryLimit 8 → 9 attempts). */
const MAX_ATTEMPTS = 9;

export async function deliverWebhook(
  deps: { sql: Sql; clock: Clock; logger: Logger; secret: string; fetchImpl?: typeof fetch },
  deliveryId: string,
): Promise<void> {
  const { sql, clock, logger, secret } = deps;
  const [d] = await sql<{ id: string; url: string; body: Record<string, unknown>; status: string; attempts: number; run_id: number; step_id: string }[]>`
    select id, url, body, status, attempts, run_id, step_id from webhook_deliveries where id = ${deliveryId}`;
  if (!d || d.status === 'delivered') return;
  const body = JSON.stringify({ id: d.id, runId: d.run_id, stepId: d.step_id, data: d.body });
  const attempt = d.attempts + 1;
  let error: string | null = null;
  try {
    const res = await (deps.fetchImpl ?? fetch)(d.url, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'user-agent': 'Lifeline-Webhooks/1',
        'idempotency-key': d.id,
        'lifeline-signature': signPayload(secret, body, clock.now()),
      },
      body,
      signal: AbortSignal.timeout(10_000),
    });
    if (!res.ok) error = `HTTP ${res.status}`;
  } catch (err) {
    error = (err as Error).message;
  }
  if (error === null) {
    await sql`update webhook_deliveries set status = 'delivered', attempts = ${attempt}, last_error = null, delivered_at = ${clock.now()} where id = ${d.id}`;
    return;
  }
  await sql`update webhook_deliveries set attempts = ${attempt}, last_error = ${error},
            status = ${attempt >= MAX_ATTEMPTS ? 'failed' : 'pending'} where id = ${d.id}`;
  logger.warn({ deliveryId: d.id, attempt, error }, 'workflow webhook failed');
  // Throwing hands the job back to pg-boss, which retries it with backoff.
  throw new Error(`webhook ${d.id} failed: ${error}`);
}
