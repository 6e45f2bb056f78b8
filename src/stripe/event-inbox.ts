// SQL for the Stripe inbox: the verified event, stored verbatim once, is the work item.
import type { Queryable, Sql } from '../db/connection.ts';
import type { QueueSpec } from '../work/work-queue.ts';

export const INBOX_CHANNEL = 'lifeline_inbox';

/**
 * What both inboxes (Stripe events, product events) share as work queues: 32 partitions (the
 * `lane` columns of migration 0005 are computed modulo 32), 10 attempts with backoff from 5 s to
 * 15 min, a 15 s lease, and the inbox channel to wake consumers after a replay.
 *
 * The lease only covers the moment between a claim and the batch transaction locking its
 * partition (work-queue.ts `hold`): a long batch keeps its partition by that lock, not by the
 * lease. What the lease length decides is how long work waits after its holder died: with 60 s,
 * the crash suite's phases waited up to a minute behind partitions of killed incarnations.
 */
export const INBOX_QUEUE_POLICY = {
  doneColumn: 'processed_at',
  partitions: 32,
  maxAttempts: 10,
  backoff: { baseMs: 5_000, maxMs: 15 * 60_000 },
  leaseMs: 15_000,
  channel: INBOX_CHANNEL,
  // Projection writes only our own tables; anything it makes happen outside (emails, Stripe
  // calls) goes through workers that commit synchronously first (work-queue.ts).
  asyncCommit: true,
} as const;

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

/** The Stripe customer an event's object belongs to: the inbox's ordering key (its partition). */
export function stripeCustomerOf(object: Record<string, unknown>): string | null {
  if (object.object === 'customer') return typeof object.id === 'string' ? object.id : null;
  const customer = object.customer;
  if (typeof customer === 'string') return customer;
  if (customer && typeof customer === 'object' && typeof (customer as { id?: unknown }).id === 'string') return (customer as { id: string }).id;
  return null;
}

/**
 * Store a verified event: one INSERT. Returns false for a redelivery (already stored:
 * acknowledged, not processed again). The caller wakes the workers (see inbox-notifier.ts).
 *
 * `customer_id` and `lane` are written here from the parsed event (migration 0016). They were
 * generated columns reading the stored jsonb: PostgreSQL detoasted the payload for each
 * `payload->…` in their expressions, ~65 µs of backend CPU per webhook (BENCHMARKS.md). The lane
 * is still hashed by PostgreSQL (`hashtext`), so a customer's old and new events share a lane.
 */
export async function storeStripeEvent(sql: Sql, event: StripeEnvelope, rawBody: string, receivedAt: Date): Promise<boolean> {
  const request = requestFields(event.request);
  const customer = stripeCustomerOf(event.data.object);
  const objectId = typeof event.data.object.id === 'string' ? event.data.object.id : null;
  // `::text::jsonb`: the raw body is parsed by Postgres, not re-serialized by the driver.
  const rows = await sql<{ inserted: boolean }[]>`
      insert into stripe_events
        (id, type, api_version, created, livemode, request_id, idempotency_key, object_id, payload, received_at, customer_id, lane)
      values (
        ${event.id}, ${event.type}, ${event.api_version ?? null}, to_timestamp(${event.created}),
        ${event.livemode}, ${request.id}, ${request.key}, ${objectId},
        ${rawBody}::text::jsonb, ${receivedAt}, ${customer},
        hashtext(coalesce(${customer}::text, ${objectId}::text, ${event.id}::text)) & 31
      )
      on conflict (id) do update set deliveries = stripe_events.deliveries + 1
      returning (xmax = 0) as inserted`;
  return rows[0]?.inserted ?? false;
}

/** The Stripe inbox as a work queue: partitioned by customer (migration 0005), oldest event first. */
export const STRIPE_QUEUE = {
  name: 'stripe_events',
  table: 'stripe_events',
  idType: 'text',
  order: 'created, id',
  columns: 'id, payload, attempts, customer_id',
  ...INBOX_QUEUE_POLICY,
} as const satisfies QueueSpec;

export interface StripeInboxRow {
  id: string;
  payload: StripeEnvelope;
  attempts: number;
  customer_id: string | null;
}

/**
 * The identity keys a Stripe batch locks before projecting (see lockIdentities): its customers,
 * and the emails by which their contacts may be found (the payload's and the stored customer's).
 */
export async function stripeIdentityKeys(db: Queryable, rows: StripeInboxRow[]): Promise<Set<string>> {
  const keys = new Set<string>();
  const customers = new Set<string>();
  const text = (v: unknown) => (typeof v === 'string' && v.trim() !== '' ? v.trim().toLowerCase() : null);
  for (const row of rows) {
    if (row.customer_id) {
      keys.add(`customer:${row.customer_id}`);
      customers.add(row.customer_id);
    }
    const object = row.payload.data.object as Record<string, unknown>;
    for (const email of [text(object.customer_email), object.object === 'customer' ? text(object.email) : null]) {
      if (email) keys.add(`email:${email}`);
    }
  }
  if (customers.size > 0) {
    const stored = await db<{ email: string | null }[]>`select email from customers where id = any(${[...customers]}::text[]) and email is not null`;
    for (const c of stored) keys.add(`email:${c.email!.trim().toLowerCase()}`);
  }
  return keys;
}
