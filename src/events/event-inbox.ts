// SQL for the product-event inbox: messages are stored as received (deduplicated by
// messageId) and turned into contacts, accounts and timeline events by the worker.
import type { Sql } from '../db/connection.ts';
import type { QueueSpec } from '../work/work-queue.ts';
import { INBOX_QUEUE_POLICY } from '../stripe/event-inbox.ts';

export interface InboxMessage {
  messageId: string;
  kind: 'track' | 'identify' | 'group';
  userId: string | null;
  anonymousId: string | null;
  groupId: string | null;
  event: string | null;
  properties: Record<string, unknown> | null;
  traits: Record<string, unknown> | null;
  context: Record<string, unknown> | null;
  timestamp: Date;
}

const json = (v: unknown) => (v == null ? null : JSON.stringify(v));

/**
 * Insert many messages in one statement (unnest of column arrays: one round trip, one plan).
 * Returns the messageIds that were new; the others were duplicates.
 */
export async function storeProductEvents(sql: Sql, messages: InboxMessage[], receivedAt: Date): Promise<Set<string>> {
  if (messages.length === 0) return new Set();
  const rows = await sql<{ message_id: string }[]>`
      insert into product_events
        (message_id, kind, user_id, anonymous_id, group_id, event, properties, traits, context, timestamp, received_at)
      select m, k, u, a, g, e, p::jsonb, t::jsonb, c::jsonb, ts, ${receivedAt}
      from unnest(
        ${messages.map((m) => m.messageId)}::text[],
        ${messages.map((m) => m.kind)}::text[],
        ${messages.map((m) => m.userId)}::text[],
        ${messages.map((m) => m.anonymousId)}::text[],
        ${messages.map((m) => m.groupId)}::text[],
        ${messages.map((m) => m.event)}::text[],
        ${messages.map((m) => json(m.properties))}::text[],
        ${messages.map((m) => json(m.traits))}::text[],
        ${messages.map((m) => json(m.context))}::text[],
        ${messages.map((m) => m.timestamp.toISOString())}::timestamptz[]
      ) as x(m, k, u, a, g, e, p, t, c, ts)
      on conflict (message_id) do nothing
      returning message_id`;
  return new Set(rows.map((r) => r.message_id));
}

/** The product inbox as a work queue: partitioned by user (else anonymous id; migration 0005), in arrival order. */
export const PRODUCT_QUEUE = {
  name: 'product_events',
  table: 'product_events',
  idType: 'bigint',
  order: 'id',
  columns: 'id, message_id, kind, user_id, anonymous_id, group_id, event, properties, traits, timestamp, attempts',
  ...INBOX_QUEUE_POLICY,
} as const satisfies QueueSpec;
