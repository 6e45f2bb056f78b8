// SQL for the timeline: every processed fact (Stripe-derived or product) as one domain event,
// attached to a contact and/or account. The workflow engine consumes this table.
import type { Queryable } from '../db/connection.ts';
import { skippable, type ListenedNames } from '../workflows/fact-listeners.ts';

export const DOMAIN_EVENT_CHANNEL = 'lifeline_domain_events';

export interface DomainEventInput {
  name: string;
  source: 'stripe' | 'product';
  sourceId: string;
  /** Unique per fact: a redelivered or duplicated source event maps to the same key. */
  dedupeKey: string;
  contactId: number | null;
  accountId: number | null;
  stripeCustomerId: string | null;
  subjectId: string | null;
  properties: Record<string, unknown>;
  occurredAt: Date;
}

/**
 * Returns the new event id, or null when the fact was already recorded. With `listened` (taken
 * by FactListeners.current in this transaction) a fact no workflow hears is recorded as consumed.
 */
export async function recordDomainEvent(db: Queryable, e: DomainEventInput, recordedAt: Date, listened?: ListenedNames): Promise<number | null> {
  const skip = skippable(listened, e.name, e.contactId);
  const rows = await db<{ id: number }[]>`
    insert into domain_events
      (name, source, source_id, dedupe_key, contact_id, account_id, stripe_customer_id, subject_id, properties, occurred_at, recorded_at,
       engine_skipped, engine_processed_at)
    values (${e.name}, ${e.source}, ${e.sourceId}, ${e.dedupeKey}, ${e.contactId}, ${e.accountId}, ${e.stripeCustomerId},
            ${e.subjectId}, ${JSON.stringify(e.properties)}::text::jsonb, ${e.occurredAt}, ${recordedAt},
            ${skip}, ${skip ? recordedAt : null})
    on conflict (dedupe_key) do nothing
    returning id`;
  if (rows.length === 0) return null;
  if (skip) return rows[0]!.id;
  // A constant payload: Postgres folds identical notifications of one transaction into one,
  // so a batch of facts costs one NOTIFY at commit, not one each.
  await db`select pg_notify(${DOMAIN_EVENT_CHANNEL}, '')`;
  return rows[0]!.id;
}

/**
 * Many facts in one statement, in the order given (ids follow it); duplicates by dedupe key are
 * skipped. One NOTIFY for the batch (none when every new fact was skipped: nothing for the
 * engine). Returns the dedupe keys that were new. `listened`: as for recordDomainEvent.
 */
export async function recordDomainEvents(db: Queryable, events: DomainEventInput[], recordedAt: Date, listened?: ListenedNames): Promise<Set<string>> {
  if (events.length === 0) return new Set();
  const skips = events.map((e) => skippable(listened, e.name, e.contactId));
  const rows = await db<{ dedupe_key: string; engine_skipped: boolean }[]>`
    insert into domain_events
      (name, source, source_id, dedupe_key, contact_id, account_id, stripe_customer_id, subject_id, properties, occurred_at, recorded_at,
       engine_skipped, engine_processed_at)
    select name, source, source_id, dedupe_key, contact_id, account_id, stripe_customer_id, subject_id, properties::jsonb, occurred_at, ${recordedAt},
           skip::boolean, case when skip::boolean then ${recordedAt}::timestamptz end
    from unnest(${events.map((e) => e.name)}::text[], ${events.map((e) => e.source)}::text[], ${events.map((e) => e.sourceId)}::text[],
                ${events.map((e) => e.dedupeKey)}::text[], ${events.map((e) => e.contactId)}::bigint[], ${events.map((e) => e.accountId)}::bigint[],
                ${events.map((e) => e.stripeCustomerId)}::text[], ${events.map((e) => e.subjectId)}::text[],
                ${events.map((e) => JSON.stringify(e.properties))}::text[], ${events.map((e) => e.occurredAt.toISOString())}::timestamptz[],
                -- as text: postgres.js sends a JS boolean array as one boolean, not boolean[]
                ${skips.map((skip) => (skip ? 'true' : 'false'))}::text[])
      with ordinality as x(name, source, source_id, dedupe_key, contact_id, account_id, stripe_customer_id, subject_id, properties, occurred_at, skip, n)
    order by n
    on conflict (dedupe_key) do nothing
    returning dedupe_key, engine_skipped`;
  if (rows.some((r) => !r.engine_skipped)) await db`select pg_notify(${DOMAIN_EVENT_CHANNEL}, '')`;
  return new Set(rows.map((r) => r.dedupe_key));
}
