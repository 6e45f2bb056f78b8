// The outbox's SQL: claiming loose messages, persisting a batch, settling and releasing, taking
// over batches whose sender died, and the retry bookkeeping. Every statement that the once-only
// argument (top of sender.ts) relies on is here, each a function over explicit dependencies
// (OutboxDeps) so the sender is only their caller: step 1 is persistBatch, step 2 the
// `batch_id is null` of claimLoose, step 3's take-over takeOverBatch, step 5's fencing the
// `lease`/`claim_token` conditions of settleBatch, beginRetry, settleLoose and releaseLoose.
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { erasedAddressKey } from '../contacts/data-rights.ts';
import type { Clock } from '../clock.ts';
import type { Queryable, Sql } from '../db/connection.ts';
import type { OutgoingEmail } from './transport.ts';

export const OUTBOX_CHANNEL = 'lifeline_outbox';

/** What the outbox statements need: the database, the time, and how long a claim or lease lasts. */
export interface OutboxDeps {
  sql: Sql;
  clock: Clock;
  logger: Logger;
  /** how long a claim on loose messages or a batch's lease lasts (EMAIL_CLAIM_MS) */
  claimMs: number;
}

/**
 * A loose message claimed for sending, with everything it is rendered from (its stored input,
 * current traits, the invoice as it is now). Stored as a batch's render input (persistBatch).
 */
export interface ClaimedMessage {
  id: string;
  contact_id: number | null;
  to_email: string | null;
  template: string;
  subject: string;
  category: string;
  attempts: number;
  contact_traits: Record<string, unknown> | null;
  account_traits: Record<string, unknown> | null;
  options: Record<string, unknown> | null;
  trigger: Record<string, unknown> | null;
  invoice_amount_due: number | null;
  invoice_amount_remaining: number | null;
  invoice_currency: string | null;
  invoice_hosted_url: string | null;
  invoice_next_payment_attempt: Date | null;
  /** the invoice's latest decline advised against retrying (do_not_try_again, or a hard decline) */
  invoice_retry_advised_against?: boolean | null;
}

/** A persisted batch this sender holds under `lease`, with its rendered emails. */
export interface HeldBatch {
  id: string;
  key: string;
  lease: number;
  createdAt: Date;
  attempts: number;
  rateLimited: number;
  emails: OutgoingEmail[];
}

/** A persisted batch as stored (takeOverBatch reads it back to re-send it as formed). */
export interface BatchRow {
  id: string;
  idempotency_key: string;
  message_ids: string[];
  render_inputs: string;
  lease: number;
  attempts: number;
  rate_limited: number;
  created_at: Date;
}

/** A message's outcome to record (its status, why, and the provider's id when sent). */
export type MessageOutcome = { id: string; status: string; reason: string | null; providerId?: string | null };

const lockUntil = (deps: OutboxDeps, now: Date) => new Date(now.getTime() + deps.claimMs);

/** Claims due loose messages (never a member of a batch) under `token`, with their render inputs. */
export async function claimLoose(deps: OutboxDeps, token: string, limit: number): Promise<ClaimedMessage[]> {
  const { sql, clock } = deps;
  const now = clock.now();
  return sql<ClaimedMessage[]>`
    with claimed as (
      update messages m set status = 'sending', claim_token = ${token}, locked_until = ${lockUntil(deps, now)}, attempts = m.attempts + 1, updated_at = ${now}
      where m.id in (
        select id from messages
        where batch_id is null
          and ((status = 'queued' and (next_attempt_at is null or next_attempt_at <= ${now}))
            or (status = 'sending' and locked_until < ${now}))
        -- created_at alone: the pending index's order (messages queued in one transaction share
        -- it, and an id tie-break would sort them all before the first row came out)
        order by created_at limit ${limit}
        for update skip locked)
      returning m.*)
    select c.id, c.contact_id, c.to_email, c.template, c.subject, c.category, c.attempts,
           ct.traits as contact_traits, a.traits as account_traits,
           c.data->'options' as options, c.data->'trigger' as trigger,
           i.amount_due as invoice_amount_due, i.amount_remaining as invoice_amount_remaining, i.currency as invoice_currency,
           i.hosted_invoice_url as invoice_hosted_url, i.next_payment_attempt as invoice_next_payment_attempt,
           (select f.advice_code = 'do_not_try_again' or f.decline_class = 'hard' from payment_failures f
            where f.invoice_id = i.id order by f.occurred_at desc, f.id desc limit 1) as invoice_retry_advised_against
    from claimed c
    left join contacts ct on ct.id = c.contact_id
    left join accounts a on a.id = c.account_id
    -- the invoice a billing email is about, read now (its amount and next attempt as they are
    -- at sending), in the same round trip (not one query per email)
    left join invoices i on i.id = c.data->'trigger'->>'invoiceId'
    order by c.id`;
}

/**
 * The suppression scope of each address (lower-cased) that must not get mail now: checked again
 * at send time, since a bounce may have arrived after the decision to send.
 */
export async function suppressionScopes(sql: Queryable, addresses: string[]): Promise<Map<string, string>> {
  // An erased person's addresses are kept only as hashes (src/contacts/data-rights.ts): never
  // mail them again. Both keys of every address are looked up in one statement.
  const rows = await sql<{ email: string; scope: string }[]>`
    select email, scope from suppressions where email = any(${[...addresses, ...addresses.map(erasedAddressKey)]}::text[])`;
  const found = new Map(rows.map((r) => [r.email, r.scope]));
  const suppressions = new Map<string, string>();
  for (const a of addresses) {
    const scope = found.has(erasedAddressKey(a)) ? 'all' : found.get(a);
    if (scope !== undefined) suppressions.set(a, scope);
  }
  return suppressions;
}

/**
 * Records final outcomes of loose messages (skipped, failed to render, dead) in one statement,
 * only for those this claim still holds (fencing by claim token). Returns how many it recorded.
 */
export async function settleLoose(deps: OutboxDeps, token: string, outcomes: MessageOutcome[]): Promise<number> {
  if (outcomes.length === 0) return 0;
  const { sql, clock } = deps;
  const now = clock.now();
  const rows = await sql`
    with x as (select * from unnest(${outcomes.map((o) => o.id)}::text[], ${outcomes.map((o) => o.status)}::text[], ${outcomes.map((o) => o.reason)}::text[]) as x(id, status, reason)),
    m as (
      update messages m set status = x.status, status_reason = x.reason, claim_token = null, locked_until = null, next_attempt_at = null, updated_at = ${now}
      from x where m.id = x.id and m.claim_token = ${token} and m.status = 'sending' and m.batch_id is null
      returning m.id, x.status, x.reason)
    insert into message_events (message_id, status, at, detail) select id, status, ${now}, reason from m returning id`;
  return rows.length;
}

/** Gives back the loose messages this claim still holds (a batch could not be formed). */
export async function releaseLoose(deps: OutboxDeps, token: string): Promise<void> {
  await deps.sql`
    update messages set status = 'queued', claim_token = null, locked_until = null, updated_at = ${deps.clock.now()}
    where claim_token = ${token} and status = 'sending' and batch_id is null`;
}

/**
 * Persists the batch (step 1 of the argument): in one statement, locks the members, checks this
 * claim still holds every one, inserts the batch and points the members at it. False: some
 * member was taken over, nothing was persisted, nothing may be sent.
 */
export async function persistBatch(deps: OutboxDeps, token: string, rows: ClaimedMessage[], now: Date): Promise<HeldBatch | null> {
  const id = randomUUID();
  // A message sent alone keeps its own id as the key (the provider still knows it after a
  // replay or a restored database); a batch gets a fresh, never reused one.
  const key = rows.length === 1 ? rows[0]!.id : `batch-${id}`;
  const ids = rows.map((r) => r.id);
  // Text, not jsonb: only this code reads it back, and PostgreSQL need not parse 100 rows of it.
  const inputs = JSON.stringify(rows);
  const [result] = await deps.sql<{ n: number }[]>`
    with held as (
      select id from messages
      where id = any(${ids}::text[]) and claim_token = ${token} and status = 'sending' and batch_id is null
      for update),
    ok as (select count(*) = ${ids.length} as ok from held),
    b as (
      insert into email_batches (id, idempotency_key, message_ids, render_inputs, status, lease, locked_until, attempts, rate_limited, created_at, updated_at)
      select ${id}, ${key}, ${ids}::text[], ${inputs}, 'sending', 1, ${lockUntil(deps, now)}, 1, 0, ${now}, ${now} from ok where ok.ok
      returning id),
    m as (
      update messages set batch_id = b.id, claim_token = null, locked_until = null, updated_at = ${now}
      from b where messages.id in (select id from held)
      returning messages.id)
    select count(*)::int as n from m`;
  if (result!.n !== ids.length) return null;
  return { id, key, lease: 1, createdAt: now, attempts: 1, rateLimited: 0, emails: [] };
}

/**
 * Records a batch's outcome (step 5: only under our lease, only while it is `sending`): the
 * batch's status and each member's. Returns false when fenced (another sender holds the batch).
 */
export async function settleBatch(
  deps: OutboxDeps,
  b: HeldBatch,
  batch: { status: 'sent' | 'failed' | 'dead' | 'queued'; reason: string | null; nextAttemptAt?: Date | null },
  members: MessageOutcome[],
): Promise<boolean> {
  const { sql, clock, logger } = deps;
  const now = clock.now();
  const rows = await sql<{ id: string }[]>`
    with b as (
      update email_batches set status = ${batch.status}, status_reason = ${batch.reason}, next_attempt_at = ${batch.nextAttemptAt ?? null},
        locked_until = null, rate_limited = ${b.rateLimited}, updated_at = ${now}
      where id = ${b.id} and lease = ${b.lease} and status = 'sending'
      returning id),
    x as (
      select * from unnest(${members.map((o) => o.id)}::text[], ${members.map((o) => o.status)}::text[],
        ${members.map((o) => o.reason)}::text[], ${members.map((o) => o.providerId ?? null)}::text[]) as x(id, status, reason, provider_id)),
    m as (
      update messages m set status = x.status, status_reason = x.reason, provider_id = coalesce(x.provider_id, m.provider_id),
        sent_at = case when x.status = 'sent' then ${now} else m.sent_at end,
        next_attempt_at = ${batch.nextAttemptAt ?? null}, locked_until = null, updated_at = ${now}
      -- a member something else already ended (an operator, a clean-up) keeps its status
      from x, b where m.id = x.id and m.batch_id = b.id and m.status in ('sending', 'queued')
      returning m.id, x.status, x.reason),
    e as (
      -- a message going back to the queue is not an event of its timeline (as before batches)
      insert into message_events (message_id, status, at, detail) select id, status, ${now}, case when status = 'sent' then null else reason end from m where status <> 'queued')
    select id from b`;
  if (rows.length === 0) {
    logger.warn({ batch: b.id }, 'email batch taken over by another sender: its outcome is theirs to record');
    return false;
  }
  return true;
}

/** The same outcome for every member (dead, failed, requeued). */
export const settleAll = (deps: OutboxDeps, b: HeldBatch, status: 'failed' | 'dead' | 'queued', reason: string, nextAttemptAt: Date | null = null) =>
  settleBatch(deps, b, { status, reason, nextAttemptAt }, b.emails.map((e) => ({ id: e.id, status, reason })));

/**
 * Before a retry of a batch this sender holds: counts the attempt, records the 429s so far and
 * renews the lease (a long retry must not let the batch look abandoned). False when fenced.
 */
export async function beginRetry(deps: OutboxDeps, b: HeldBatch): Promise<boolean> {
  const now = deps.clock.now();
  const rows = await deps.sql<{ attempts: number }[]>`
    update email_batches set attempts = attempts + 1, rate_limited = ${b.rateLimited}, locked_until = ${lockUntil(deps, now)}, updated_at = ${now}
    where id = ${b.id} and lease = ${b.lease} and status = 'sending'
    returning attempts`;
  if (rows.length === 0) return false;
  b.attempts = rows[0]!.attempts;
  return true;
}

/**
 * Takes over one persisted batch that is due again: sent back to the queue after failures and
 * now due, or held by a sender whose lease expired (it died, or is stuck). Bumps the lease
 * (fencing the old holder out) and counts the attempt about to be made.
 */
export async function takeOverBatch(deps: OutboxDeps): Promise<{ row: BatchRow; batch: HeldBatch } | null> {
  const now = deps.clock.now();
  const [row] = await deps.sql<BatchRow[]>`
    with t as (
      update email_batches b set lease = b.lease + 1, status = 'sending', locked_until = ${lockUntil(deps, now)}, next_attempt_at = null,
        attempts = b.attempts + 1, updated_at = ${now}
      where b.id = (
        select id from email_batches
        where (status = 'queued' and next_attempt_at <= ${now}) or (status = 'sending' and locked_until < ${now})
        order by created_at limit 1
        for update skip locked)
      returning b.id, b.idempotency_key, b.message_ids, b.render_inputs, b.lease, b.attempts, b.rate_limited, b.created_at),
    m as (
      update messages set status = 'sending', status_reason = null, next_attempt_at = null, updated_at = ${now}
      from t where messages.id = any(t.message_ids) and messages.batch_id = t.id and messages.status = 'queued')
    select * from t`;
  if (!row) return null;
  const batch: HeldBatch = { id: row.id, key: row.idempotency_key, lease: row.lease, createdAt: row.created_at, attempts: row.attempts, rateLimited: row.rate_limited, emails: [] };
  return { row, batch };
}

export async function recordMessageEvent(db: Queryable, messageId: string, status: string, at: Date, detail: string | null = null, sourceId: string | null = null): Promise<boolean> {
  const rows = await db`
    insert into message_events (message_id, status, at, detail, source_id) values (${messageId}, ${status}, ${at}, ${detail}, ${sourceId})
    on conflict (source_id) do nothing returning id`;
  return rows.length > 0;
}

/**
 * Puts dead messages back in the queue (an operator's decision: the reason says whether the
 * provider may have accepted them already, e.g. after an unanswered request). They leave their
 * dead batch and go out in a new one; a message sent alone uses its id as the key, so a message
 * the provider did accept within the last 24 h is still not sent twice. Returns the ids replayed
 * (only messages that were dead).
 */
export async function replayDeadMessages(sql: Queryable, ids: string[], at: Date | null = null): Promise<string[]> {
  if (ids.length === 0) return [];
  const rows = await sql<{ message_id: string }[]>`
    with m as (
      update messages set status = 'queued', status_reason = null, batch_id = null, claim_token = null, locked_until = null,
        next_attempt_at = null, attempts = 0, updated_at = coalesce(${at}::timestamptz, now())
      where id = any(${ids}::text[]) and status = 'dead'
      returning id)
    insert into message_events (message_id, status, at, detail)
    select id, 'queued', coalesce(${at}::timestamptz, now()), 'replayed after dead' from m
    returning message_id`;
  if (rows.length > 0) await sql`select pg_notify(${OUTBOX_CHANNEL}, '')`;
  return rows.map((r) => r.message_id);
}
