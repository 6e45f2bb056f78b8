// SQL for the Stripe inbox: the verified event, stored verbatim once, is the work item.
import type { Sql } from '../db/connection.ts';

export const INBOX_CHANNEL = 'lifeline_inbox';

export interface StripeEnvelope {
  id: string;
  type: string;
  api_version?: string | null;
  created: number;
  livemode: boolean;
  request?: { id: string | null; idempotency_key: string | null } | string | null;
  data: { object: { id?: string; object?: string } & Record<string, unknown>; previous_attributes?: Record<string, unknown> };
}

function requestFields(request: StripeEnvelope['request']): { id: string | null; key: string | null } {
  // Very old API versions sent `request` as a bare id string.
  if (typeof request === 'string') return { id: request, key: null };
  return { id: request?.id ?? null, key: request?.idempotency_key ?? null };
}

/**
 * Store a verified event: one INSERT. Returns false for a redelivery (already stored:
 * acknowledged, not processed again). The caller wakes the workers (see inbox-notifier.ts).
 */
export async function storeStripeEvent(sql: Sql, event: StripeEnvelope, rawBody: string, receivedAt: Date): Promise<boolean> {
  const request = requestFields(event.request);
  // `::text::jsonb`: the raw body is parsed by Postgres, not re-serialized by the driver.
  const rows = await sql<{ inserted: boolean }[]>`
      insert into stripe_events
        (id, type, api_version, created, livemode, request_id, idempotency_key, object_id, payload, received_at)
      values (
        ${event.id}, ${event.type}, ${event.api_version ?? null}, to_timestamp(${event.created}),
        ${event.livemode}, ${request.id}, ${request.key}, ${event.data.object.id ?? null},
        ${rawBody}::text::jsonb, ${receivedAt}
      )
      on conflict (id) do update set deliveries = stripe_events.deliveries + 1
      returning (xmax = 0) as inserted`;
  return rows[0]?.inserted ?? false;
}
