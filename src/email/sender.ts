// Delivers queued messages: claim → render → persist the batch → send (batched, under the
// provider's rate limit) → record. Nothing is dropped silently: every outcome (sent, failed with
// reason, skipped for suppression, dead after bounded retries) is a status with a timeline.
//
// ONCE-ONLY, THE ARGUMENT (design (a): persisted batches).
//  1. A message reaches the provider only inside a persisted batch. A sender claims queued
//     messages under a fresh claim token, renders them, then in ONE statement checks that it
//     still holds every member (same token, still `sending`, no batch: the check locks the rows)
//     and inserts the `email_batches` row (id, idempotency key, member ids in order, the render
//     inputs, created_at) and sets `messages.batch_id`. Only after that commit is the provider
//     called. If any member was taken over meanwhile (our claim expired), nothing is persisted
//     and nothing is sent: the new holder owns those messages.
//  2. A message with a batch_id is never claimed again as a loose message (the claim query and
//     its index require `batch_id is null`), so it can never be recombined into another batch.
//  3. Every later request for a batch — an in-process retry, a re-send after the batch went back
//     to the queue, a take-over of a batch whose sender died (claim expired) — sends exactly
//     that batch: same key, same members in the same order, rendered from the stored inputs with
//     the batch's created_at as "now", so the payload is byte-identical. The provider (Resend
//     remembers a key 24 h) answers a repeat with the first answer and sends nothing again.
//  4. A batch is re-sent only within MAX_AGE (23 h) of its creation, inside the provider's key
//     memory; older, it is `dead` (visible, replayable by a person), never re-sent blindly.
//  5. Fencing: every take-over bumps `email_batches.lease`; every outcome (sent, failed,
//     requeued, dead) is recorded by one statement that updates the batch only
//     `where lease = <ours> and status = 'sending'` and the members only through that update.
//     A sender whose batch was taken over records nothing. Loose claims are fenced the same way
//     by `messages.claim_token`.
//  6. If the provider says the key was used with a DIFFERENT payload (409
//     invalid_idempotent_request: e.g. a template changed between a crash and the re-send), the
//     batch was probably accepted before: the members go `dead` with that reason, not re-sent.
// Hence a message is requested from the provider only under one key, with one payload, and the
// provider sends that key at most once: at most one email per message. Nothing is lost either:
// a message is queued, held by a live claim or batch lease (which expires), or in a final state.
//
// BOUNDED RETRIES (RetryPolicy, defaults below). Per batch, `attempts` counts provider requests
// started (a request whose sender died counts: its take-over finds it unanswered) and
// `rate_limited` the 429 answers among them. Failures (5xx, network errors, no answer) are
// retried in process with a short backoff, and after every `triesBeforeRequeue` failures the
// batch goes back to the queue with a growing not-before time (1 min, doubling, ≤ 1 h). After
// `maxAttempts` failures, `maxRateLimited` 429s, or `maxAgeMs` since the batch was formed, the
// batch and its members are `dead` (status_reason says why, a `dead` message event) instead of
// looping. A loose message claimed `maxAttempts` times without reaching a batch (its sender died
// each time) is dead too. `replayDeadMessages` puts dead messages back in the queue.
import { erasedAddressKey } from '../contacts/data-rights.ts';
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { Clock } from '../clock.ts';
import type { Config } from '../config.ts';
import type { Queryable, Sql } from '../db/connection.ts';
import { reserveSlot } from './rate-limit.ts';
import { tokenCodec } from './tokens.ts';
import { cardUpdateUrl, customerCardUpdateUrl, usesCardUpdateLink } from '../stripe/card-update-link.ts';
import type { EmailTransport, OutgoingEmail, SendOutcome } from './transport.ts';
import type { TemplateCatalog } from './template-catalog.ts';
import type { RenderData } from './template-render.ts';

export const OUTBOX_CHANNEL = 'lifeline_outbox';
/** Resend's batch endpoint takes up to 100 emails per request. */
const MAX_BATCH = 100;
/** A claimed message or batch returns to the pool if its sender dies before recording the outcome. */
const CLAIM_MS = 2 * 60_000;
/**
 * Batches in flight at once when a backlog is due. One batch's own work (claim, render 100
 * emails, record) takes tens of milliseconds on top of the provider's answer; with several in
 * flight, each waiting for its own slot of the shared rate limit, the requests leave at the
 * limit instead of one per round trip. Only a full batch opens another lane (or a wake-up while
 * every lane waits on a slow request: SLOW_REQUEST_MS).
 */
const MAX_LANES = 4;
/**
 * A provider request unanswered this long is slow: its lane waits for the answer or for the
 * per-request limit (RESEND_TIMEOUT_MS, 10 s by default), and mail that becomes due meanwhile
 * would wait behind it. When every lane of the running pass waits on such a request, the next
 * wake-up (new mail's notification, or the 500 ms tick), which would otherwise only mark "run
 * again after this pass", opens another lane in it (up to MAX_LANES) to send what is due. Resend
 * answers in well under a second; a full batch of 100 rarely takes longer. Lanes are independent
 * claimants, like separate processes: the once-only argument above holds for any number of them.
 */
const SLOW_REQUEST_MS = 1_000;
/**
 * How long before its rate-limit slot a batch is topped up and rendered (rendering 100 emails
 * takes ≈ 10 ms; the top-up claim is a round trip that slows down when the database is busy).
 */
const PREPARE_MS = 100;
/**
 * Requests are spaced 3 % wider than the configured limit: a provider counting requests per
 * second rejects the 11th of ten-a-second requests that arrive a few milliseconds early
 * (network jitter), and each 429 costs a second.
 */
const RATE_MARGIN = 1.03;
/** The in-process check's margin over the provider's own rule (see sendWindow). */
const WINDOW_MARGIN = 1.01;

/** How far the sender retries before a batch is `dead` (see the comment at the top). */
export interface RetryPolicy {
  /** failed provider requests per batch (5xx, network error, a sender that died) before it is dead */
  maxAttempts: number;
  /** 429 answers per batch before it is dead (the provider kept saying "too fast") */
  maxRateLimited: number;
  /** a batch not sent this long after it was formed is dead: past Resend's 24 h key memory a re-send is not deduplicated */
  maxAgeMs: number;
  /** failures retried in process before the batch goes back to the queue with a not-before time */
  triesBeforeRequeue: number;
}

/** ≈ 4 h of a provider outage (1, 2, 4 … 60 min between rounds of 3 tries), then dead. */
export const DEFAULT_RETRY: RetryPolicy = { maxAttempts: 30, maxRateLimited: 200, maxAgeMs: 23 * 3_600_000, triesBeforeRequeue: 3 };

interface PendingRow {
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
interface HeldBatch {
  id: string;
  key: string;
  lease: number;
  createdAt: Date;
  attempts: number;
  rateLimited: number;
  emails: OutgoingEmail[];
}

interface BatchRow {
  id: string;
  idempotency_key: string;
  message_ids: string[];
  render_inputs: string;
  lease: number;
  attempts: number;
  rate_limited: number;
  created_at: Date;
}

export interface EmailSenderDeps {
  sql: Sql;
  clock: Clock;
  logger: Logger;
  config: Pick<Config, 'publicUrl' | 'email' | 'brand'>;
  templates: TemplateCatalog;
  transport: EmailTransport;
  secret: string;
  sleep?: (ms: number) => Promise<void>;
  retry?: Partial<RetryPolicy>;
}

export interface EmailSender {
  /** Send everything due now; resolves with counts (`failed` includes messages that went dead). */
  sendPending(): Promise<{ sent: number; failed: number; skipped: number; requeued: number }>;
  start(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * The provider's own rule, checked at the moment of sending: no more than `perSecond` requests
 * in any second. The shared slots space requests evenly, but a request that leaves late (a busy
 * event loop, a slow claim) lets the next ones bunch up behind it, and the provider answers the
 * bunch with 429 and a second's wait. This window holds a request back instead (in this process).
 */
function sendWindow(perSecond: number, clock: Clock, sleep: (ms: number) => Promise<void>) {
  const size = Math.max(1, Math.floor(perSecond));
  // Narrower than the slots' margin: a request that left up to ~20 ms late must not hold back
  // the tenth one after it (on time at its slot), or every late request would cost its lateness.
  const windowMs = Math.ceil((size / perSecond) * 1000 * WINDOW_MARGIN);
  const starts: number[] = [];
  return {
    async admit(): Promise<void> {
      for (;;) {
        const now = clock.now().getTime();
        while (starts.length > 0 && starts[0]! <= now - windowMs) starts.shift();
        if (starts.length < size) {
          starts.push(now);
          return;
        }
        await sleep(starts[0]! + windowMs - now);
      }
    },
  };
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

export function createEmailSender(deps: EmailSenderDeps): EmailSender {
  const { sql, clock, logger, config, templates, transport, secret } = deps;
  const sleep = deps.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const policy: RetryPolicy = { ...DEFAULT_RETRY, ...deps.retry };
  const intervalMs = Math.max(1, Math.ceil((1000 / config.email.rateLimitPerSecond) * RATE_MARGIN));
  // EMAIL_CLAIM_MS: the suites shorten it so a claim orphaned by a kill is taken over sooner.
  const claimMs = deps.config.email.claimMs ?? CLAIM_MS;
  const lockUntil = (now: Date) => new Date(now.getTime() + claimMs);

  /** Claims due loose messages (never a member of a batch) under `token`, with their render inputs. */
  async function claim(token: string, limit: number = MAX_BATCH): Promise<PendingRow[]> {
    const now = clock.now();
    return sql<PendingRow[]>`
      with claimed as (
        update messages m set status = 'sending', claim_token = ${token}, locked_until = ${lockUntil(now)}, attempts = m.attempts + 1, updated_at = ${now}
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

  // Several link tokens per email: their keys are derived once per sender (tokens.ts).
  const links = tokenCodec(secret);
  const trackedLink = (messageId: string, url: string) => `${config.publicUrl}/r/${links.sign('click', { m: messageId, u: url })}`;

  /** `now` is the batch's creation time, so a re-send renders the same bytes as the first request. */
  function renderRow(row: PendingRow, now: Date): OutgoingEmail {
    const trigger = row.trigger ?? {};
    const invoice =
      row.invoice_currency !== null
        ? {
            amount_due: row.invoice_amount_due!,
            amount_remaining: row.invoice_amount_remaining!,
            currency: row.invoice_currency,
            hosted_invoice_url: row.invoice_hosted_url,
            next_payment_attempt: row.invoice_next_payment_attempt,
          }
        : null;
    const traits = row.contact_traits ?? {};
    const marketing = row.category !== 'transactional';
    // Only the message id: the unsubscribe route reads the address from the message row, so the
    // link carries no personal data even encrypted.
    const unsubscribe = marketing
      ? `${config.publicUrl}/unsubscribe/${links.sign('unsubscribe', { m: row.id })}`
      : null;
    // Dunning emails fix the card through our never-expiring update-card link (a fresh Billing
    // Portal session per click); payment confirmation (3-D Secure) needs the hosted invoice page.
    const invoiceId = typeof trigger.invoiceId === 'string' ? trigger.invoiceId : null;
    const contactId = row.contact_id === null ? null : Number(row.contact_id);
    const customerId = typeof trigger.customerId === 'string' ? trigger.customerId : null;
    const cardUpdate = !usesCardUpdateLink(row.template)
      ? null
      : invoice && invoiceId
        ? cardUpdateUrl(config.publicUrl, links, invoiceId, contactId)
        : customerId
          ? customerCardUpdateUrl(config.publicUrl, links, customerId, contactId)
          : null;
    const actionTarget = cardUpdate ?? invoice?.hosted_invoice_url ?? config.brand.appUrl;
    const data: RenderData = {
      contact: { email: row.to_email, firstName: typeof traits.firstName === 'string' ? traits.firstName : typeof traits.name === 'string' ? String(traits.name).split(' ')[0] : null, traits },
      account: row.account_traits ? { traits: row.account_traits } : null,
      invoice: invoice
        ? {
            amountDue: invoice.amount_due,
            amountRemaining: invoice.amount_remaining,
            currency: invoice.currency,
            hostedInvoiceUrl: invoice.hosted_invoice_url ? trackedLink(row.id, invoice.hosted_invoice_url) : null,
            nextPaymentAttempt: invoice.next_payment_attempt?.toISOString() ?? null,
            // Truthful copy: promise another try only when Stripe has one scheduled and the decline
            // did not advise against it (the final attempt has next_payment_attempt null).
            retryPlanned: invoice.next_payment_attempt !== null && row.invoice_retry_advised_against !== true,
          }
        : null,
      links: { action: trackedLink(row.id, actionTarget), unsubscribe, app: trackedLink(row.id, config.brand.appUrl) },
      subject: row.subject,
      locale: typeof traits.locale === 'string' ? traits.locale : config.brand.locale,
      options: row.options ?? {},
      trigger,
      now,
    };
    const rendered = templates.render(row.template, data);
    const headers: Record<string, string> = { 'X-Lifeline-Message-Id': row.id };
    if (unsubscribe) {
      // RFC 8058 one-click unsubscribe (Gmail/Yahoo bulk-sender rules); mailto optional.
      headers['List-Unsubscribe'] = config.email.unsubscribeMailto
        ? `<${unsubscribe}>, <mailto:${config.email.unsubscribeMailto.replace(/^.*<|>$/g, '')}?subject=unsubscribe>`
        : `<${unsubscribe}>`;
      headers['List-Unsubscribe-Post'] = 'List-Unsubscribe=One-Click';
    }
    return {
      id: row.id,
      from: config.email.from,
      to: row.to_email!,
      replyTo: config.email.replyTo,
      subject: rendered.subject,
      html: rendered.html,
      text: rendered.text,
      headers,
      template: row.template,
    };
  }

  type Outcome = { id: string; status: string; reason: string | null; providerId?: string | null };

  /**
   * Records final outcomes of loose messages (skipped, failed to render, dead) in one statement,
   * only for those this claim still holds (fencing by claim token). Returns how many it recorded.
   */
  async function settleLoose(token: string, outcomes: Outcome[]): Promise<number> {
    if (outcomes.length === 0) return 0;
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
  async function release(token: string): Promise<void> {
    await sql`
      update messages set status = 'queued', claim_token = null, locked_until = null, updated_at = ${clock.now()}
      where claim_token = ${token} and status = 'sending' and batch_id is null`;
  }

  /**
   * Persists the batch (step 1 of the argument): in one statement, locks the members, checks this
   * claim still holds every one, inserts the batch and points the members at it. False: some
   * member was taken over, nothing was persisted, nothing may be sent.
   */
  async function persist(token: string, rows: PendingRow[], now: Date): Promise<HeldBatch | null> {
    const id = randomUUID();
    // A message sent alone keeps its own id as the key (the provider still knows it after a
    // replay or a restored database); a batch gets a fresh, never reused one.
    const key = rows.length === 1 ? rows[0]!.id : `batch-${id}`;
    const ids = rows.map((r) => r.id);
    // Text, not jsonb: only this code reads it back, and PostgreSQL need not parse 100 rows of it.
    const inputs = JSON.stringify(rows);
    const [result] = await sql<{ n: number }[]>`
      with held as (
        select id from messages
        where id = any(${ids}::text[]) and claim_token = ${token} and status = 'sending' and batch_id is null
        for update),
      ok as (select count(*) = ${ids.length} as ok from held),
      b as (
        insert into email_batches (id, idempotency_key, message_ids, render_inputs, status, lease, locked_until, attempts, rate_limited, created_at, updated_at)
        select ${id}, ${key}, ${ids}::text[], ${inputs}, 'sending', 1, ${lockUntil(now)}, 1, 0, ${now}, ${now} from ok where ok.ok
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
  async function settleBatch(
    b: HeldBatch,
    batch: { status: 'sent' | 'failed' | 'dead' | 'queued'; reason: string | null; nextAttemptAt?: Date | null },
    members: Outcome[],
  ): Promise<boolean> {
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
  const settleAll = (b: HeldBatch, status: 'failed' | 'dead' | 'queued', reason: string, nextAttemptAt: Date | null = null) =>
    settleBatch(b, { status, reason, nextAttemptAt }, b.emails.map((e) => ({ id: e.id, status, reason })));

  /**
   * Before a retry of a batch this sender holds: counts the attempt, records the 429s so far and
   * renews the lease (a long retry must not let the batch look abandoned). False when fenced.
   */
  async function beginRetry(b: HeldBatch): Promise<boolean> {
    const now = clock.now();
    const rows = await sql<{ attempts: number }[]>`
      update email_batches set attempts = attempts + 1, rate_limited = ${b.rateLimited}, locked_until = ${lockUntil(now)}, updated_at = ${now}
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
  async function takeOver(): Promise<{ row: BatchRow; batch: HeldBatch } | null> {
    const now = clock.now();
    const [row] = await sql<BatchRow[]>`
      with t as (
        update email_batches b set lease = b.lease + 1, status = 'sending', locked_until = ${lockUntil(now)}, next_attempt_at = null,
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

  /** The pass in progress: a wake-up during it may add a lane (openIfStuck). */
  let current: { openIfStuck(): void } | null = null;

  const recentSends = sendWindow(config.email.rateLimitPerSecond, clock, sleep);

  /** Reserves the next request slot of the shared rate limit: when (ms epoch) it starts. */
  const reserve = () => reserveSlot(sql, `email:${transport.name}`, intervalMs, clock.now());
  /** Sleeps until `at` (ms epoch) less `early` ms; true if it slept. */
  async function sleepUntil(at: number, early = 0): Promise<boolean> {
    const wait = at - early - clock.now().getTime();
    if (wait <= 0) return false;
    await sleep(wait);
    return true;
  }

  type Totals = { sent: number; failed: number; skipped: number; requeued: number };
  /** Waits for a provider request on behalf of its lane (see SLOW_REQUEST_MS). */
  type Watch = (request: Promise<SendOutcome>) => Promise<SendOutcome>;

  /**
   * Sends a persisted batch this sender holds, with its bounded retries, and records the outcome.
   * Every request carries the batch's key and the same emails (step 3).
   */
  async function deliver(b: HeldBatch, firstSlot: number, totals: Totals, watch: Watch): Promise<void> {
    const n = b.emails.length;
    const dead = async (reason: string) => {
      logger.error({ batch: b.id, messages: n, reason }, 'email batch dead: not retried (replayable)');
      if (await settleAll(b, 'dead', reason)) totals.failed += n;
    };
    let slot = firstSlot;
    for (;;) {
      // The first attempt's slot was reserved by the caller before it topped up the batch;
      // retries reserve their own. The request leaves at its slot, not later: a provider that
      // counts requests per second would see a late one and its successor as one too many.
      await sleepUntil(slot);
      await recentSends.admit();
      let outcome: SendOutcome;
      try {
        outcome = await watch(transport.send(b.emails, b.key));
      } catch (err) {
        outcome = { ok: false, status: null, retryAfterMs: null, permanent: false, message: (err as Error).message };
      }
      if (outcome.ok) {
        const members: Outcome[] = outcome.results.map((result, i) =>
          'providerId' in result ? { id: b.emails[i]!.id, status: 'sent', reason: null, providerId: result.providerId } : { id: b.emails[i]!.id, status: 'failed', reason: result.error },
        );
        if (await settleBatch(b, { status: 'sent', reason: null }, members)) {
          const sent = members.filter((m) => m.status === 'sent').length;
          totals.sent += sent;
          totals.failed += n - sent;
        }
        return;
      }
      if (outcome.code === 'invalid_idempotent_request') {
        // Step 6: the provider accepted this key before, with another payload. Re-sending under
        // a new key could be a second email: stop here, visibly.
        return dead(`provider already accepted this batch's idempotency key with a different payload (probably sent; ${outcome.message})`);
      }
      if (outcome.permanent) {
        // The whole request was refused as invalid: record why on every message.
        if (await settleAll(b, 'failed', `${outcome.status ?? ''} ${outcome.message}`.trim())) totals.failed += n;
        return;
      }
      if (outcome.status === 429) {
        b.rateLimited++;
        if (b.rateLimited >= policy.maxRateLimited) return dead(`rate limited ${b.rateLimited} times by the provider`);
        logger.warn({ retryAfterMs: outcome.retryAfterMs }, 'email provider rate limit: waiting');
        await sleep(outcome.retryAfterMs ?? 1000);
      } else {
        const failures = b.attempts - b.rateLimited;
        logger.warn({ status: outcome.status, attempt: failures, error: outcome.message }, 'email provider error: retrying');
        if (failures >= policy.maxAttempts) return dead(`${failures} failed attempts; last: ${`${outcome.status ?? ''} ${outcome.message}`.trim()}`);
        if (failures % policy.triesBeforeRequeue === 0) {
          // Give the batch back with a later not-before time: it stays queued (as this batch), not lost.
          const round = failures / policy.triesBeforeRequeue;
          const retryAt = new Date(clock.now().getTime() + Math.min(3_600_000, 60_000 * 2 ** (round - 1)));
          if (await settleAll(b, 'queued', `retrying after: ${outcome.message}`, retryAt)) totals.requeued += n;
          return;
        }
        await sleep(Math.min(30_000, 250 * 2 ** (failures % policy.triesBeforeRequeue)));
      }
      if (clock.now().getTime() - b.createdAt.getTime() >= policy.maxAgeMs) return dead('not sent within the provider idempotency window (batch too old to re-send safely)');
      if (!(await beginRetry(b))) {
        logger.warn({ batch: b.id }, 'email batch taken over by another sender: not retrying');
        return;
      }
      slot = await reserve();
    }
  }

  /** Skips, renders, persists and delivers a claimed set of loose messages; its first request slot is already taken. */
  async function sendBatch(token: string, rows: PendingRow[], totals: Totals, slot: number, watch: Watch): Promise<void> {
    // The batch's "now": rendered with it, stored with it, so a re-send renders the same bytes.
    const formedAt = clock.now();
    const ready: { row: PendingRow; email: OutgoingEmail }[] = [];
    const early: Outcome[] = [];
    // Suppression is checked again at send time: a bounce may have arrived since the decision.
    const addresses = rows.map((r) => r.to_email?.toLowerCase()).filter((e): e is string => !!e);
    const suppressions = new Map(
      (await sql<{ email: string; scope: string }[]>`select email, scope from suppressions where email = any(${addresses}::text[])`).map((r) => [r.email, r.scope]),
    );
    // An erased person's addresses are kept only as hashes (src/contacts/data-rights.ts): never mail them again.
    const erased = new Set(
      (await sql<{ email: string }[]>`select email from suppressions where email = any(${addresses.map(erasedAddressKey)}::text[])`).map((r) => r.email),
    );
    for (const a of addresses) if (erased.has(erasedAddressKey(a))) suppressions.set(a, 'all');
    for (const row of rows) {
      if (row.attempts > policy.maxAttempts) {
        early.push({ id: row.id, status: 'dead', reason: `claimed ${row.attempts} times without reaching the provider (the sender stopped each time)` });
        continue;
      }
      if (!row.to_email) {
        early.push({ id: row.id, status: 'skipped', reason: 'no email address' });
        continue;
      }
      const scope = suppressions.get(row.to_email.toLowerCase());
      if (scope && (scope === 'all' || row.category !== 'transactional')) {
        early.push({ id: row.id, status: 'skipped', reason: `suppressed (${scope})` });
        continue;
      }
      try {
        ready.push({ row, email: renderRow(row, formedAt) });
      } catch (err) {
        early.push({ id: row.id, status: 'failed', reason: `render: ${(err as Error).message}` });
      }
    }
    if (early.length > 0) {
      await settleLoose(token, early);
      for (const o of early) {
        if (o.status === 'skipped') totals.skipped++;
        else totals.failed++;
      }
    }
    if (ready.length === 0) return;
    const batch = await persist(token, ready.map((r) => r.row), formedAt);
    if (!batch) {
      // Some member's claim expired and another sender took it: send nothing; give back the rest.
      logger.warn({ messages: ready.length }, 'email claim lost before the batch was formed: released');
      await release(token);
      return;
    }
    batch.emails = ready.map((r) => r.email);
    await deliver(batch, slot, totals, watch);
  }

  /** Re-sends a taken-over batch exactly as it was (step 3), or ends it when past its bounds. */
  async function resend(row: BatchRow, b: HeldBatch, totals: Totals, watch: Watch): Promise<void> {
    const inputs = JSON.parse(row.render_inputs) as PendingRow[];
    b.emails = [];
    const failures = b.attempts - 1 - b.rateLimited;
    const reason =
      failures >= policy.maxAttempts
        ? `${failures} failed attempts (the last ones unanswered: the sender stopped)`
        : clock.now().getTime() - b.createdAt.getTime() >= policy.maxAgeMs
          ? 'not sent within the provider idempotency window (batch too old to re-send safely)'
          : null;
    try {
      for (const input of inputs) {
        const at = input.invoice_next_payment_attempt;
        b.emails.push(renderRow({ ...input, invoice_next_payment_attempt: at === null ? null : new Date(at) }, b.createdAt));
      }
    } catch (err) {
      // Without the original payload the key cannot be re-sent safely (step 6's reasoning).
      b.emails = inputs.map((r) => ({ id: r.id }) as OutgoingEmail);
      if (await settleAll(b, 'dead', `render for re-send: ${(err as Error).message}`)) totals.failed += inputs.length;
      return;
    }
    if (reason) {
      logger.error({ batch: b.id, reason }, 'email batch dead: not retried (replayable)');
      if (await settleAll(b, 'dead', reason)) totals.failed += inputs.length;
      return;
    }
    logger.info({ batch: b.id, messages: inputs.length, attempt: b.attempts }, 'email batch re-sent as formed (same key, same payload)');
    await deliver(b, await reserve(), totals, watch);
  }

  async function sendPending(): Promise<Totals> {
    const totals: Totals = { sent: 0, failed: 0, skipped: 0, requeued: 0 };
    // Lanes running now, and how many of them are waiting on a slow provider request.
    let active = 0;
    let slow = 0;
    const running: Promise<void>[] = [];
    const open = () => {
      active++;
      running.push(lane().finally(() => active--));
    };
    /** A wake-up's lane for mail due now, unless a lane is free to claim it or MAX_LANES are busy. */
    const openIfStuck = () => {
      if (active - slow === 0 && active < MAX_LANES) open();
    };
    const watch: Watch = async (request) => {
      // Real time, like the request's own limit (RESEND_TIMEOUT_MS): it watches a socket.
      let isSlow = false;
      const timer = setTimeout(() => {
        isSlow = true;
        slow++;
      }, SLOW_REQUEST_MS);
      try {
        return await request;
      } finally {
        clearTimeout(timer);
        if (isSlow) slow--;
      }
    };
    const lane = async (): Promise<void> => {
      // Stop at an empty claim, or once the provider keeps failing (the batch went back to the
      // queue with a not-before time; the next wake-up tries again).
      while (totals.requeued === 0) {
        // Persisted batches first: a re-send of an existing batch, never a new mix (step 2).
        const taken = await takeOver();
        if (taken) {
          await resend(taken.row, taken.batch, totals, watch);
          continue;
        }
        const token = randomUUID();
        const rows = await claim(token);
        if (rows.length === 0) return;
        // A full batch means a backlog: let another lane work on it while this one sends.
        if (rows.length === MAX_BATCH && active < MAX_LANES) open();
        // Sends trickling in (a campaign's runs being woken one by one) must not spend a request
        // of the rate limit each: whoever has to wait for its slot fills the batch up with what
        // became due meanwhile, shortly before the slot (time to claim and render), and sends at
        // the slot. An idle sender sends at once. (The top-up is a claim like the first: the
        // batch is formed, and persisted, only after it.)
        const slot = await reserve();
        if (await sleepUntil(slot, PREPARE_MS)) {
          if (rows.length < MAX_BATCH) rows.push(...(await claim(token, MAX_BATCH - rows.length)));
        }
        await sendBatch(token, rows, totals, slot, watch);
      }
    };
    const pass = { openIfStuck };
    current = pass;
    open();
    // Lanes add themselves to `running` while it is awaited: wait until none is left, and for
    // all of them even when one fails (a rejection must not go unobserved).
    let failure: unknown = null;
    for (let done = 0; done < running.length; done++) await running[done]!.catch((err: unknown) => (failure ??= err));
    // In the same turn as the last check above: a wake-up cannot add a lane nobody awaits.
    if (current === pass) current = null;
    if (failure) throw failure;
    return totals;
  }

  let running = false;
  let loop: Promise<void> | null = null;
  let again = false;
  let timer: NodeJS.Timeout | null = null;
  let unlisten: (() => Promise<void>) | null = null;
  const wake = () => {
    if (loop) {
      again = true;
      // Mail queued while every lane waits on a slow request is sent now, by another lane.
      current?.openIfStuck();
      return;
    }
    loop = (async () => {
      do {
        again = false;
        await sendPending().catch((err) => logger.error({ error: (err as Error).message }, 'email sender failed'));
      } while (again && running);
      loop = null;
    })();
  };

  return {
    sendPending,
    async start() {
      running = true;
      unlisten = (await sql.listen(OUTBOX_CHANNEL, wake)).unlisten;
      const tick = () => {
        if (!running) return;
        wake();
        timer = setTimeout(tick, 500);
      };
      tick();
    },
    async stop() {
      running = false;
      if (timer) clearTimeout(timer);
      if (unlisten) await unlisten().catch(() => {});
      if (loop) await loop;
    },
  };
}
