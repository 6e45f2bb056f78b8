// Delivers queued messages: claim → render → send (batched, under the provider's rate limit) →
// record. Once-only: the message id is the provider idempotency key (Resend remembers it 24 h)
// and our own log never sends a message marked sent again. Nothing is dropped silently: every
// outcome (sent, failed with reason, skipped for suppression) is a status with a timeline.
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import type { Clock } from '../clock.ts';
import type { Config } from '../config.ts';
import type { Queryable, Sql, Tx } from '../db/connection.ts';
import { reserveSlot } from './rate-limit.ts';
import { signToken } from './tokens.ts';
import type { EmailTransport, OutgoingEmail } from './transport.ts';
import type { RenderData, TemplateCatalog } from './templates.ts';

export const OUTBOX_CHANNEL = 'lifeline_outbox';
/** Resend's batch endpoint takes up to 100 emails per request. */
const MAX_BATCH = 100;
/** A claimed message returns to the pool if its sender dies before recording the outcome. */
const CLAIM_MS = 2 * 60_000;
const MAX_TRANSIENT_TRIES = 6;
/**
 * Batches in flight at once when a backlog is due. One batch's own work (claim, render 100
 * emails, record) takes tens of milliseconds on top of the provider's answer; with several in
 * flight, each waiting for its own slot of the shared rate limit, the requests leave at the
 * limit instead of one per round trip. Only a full batch opens another lane.
 */
const MAX_LANES = 4;
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
}

export interface EmailSender {
  /** Send everything due now; resolves with counts. */
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

export function createEmailSender(deps: EmailSenderDeps): EmailSender {
  const { sql, clock, logger, config, templates, transport, secret } = deps;
  const sleep = deps.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const intervalMs = Math.max(1, Math.ceil((1000 / config.email.rateLimitPerSecond) * RATE_MARGIN));

  async function claim(limit: number = MAX_BATCH): Promise<PendingRow[]> {
    const now = clock.now();
    return sql<PendingRow[]>`
      with claimed as (
        update messages m set status = 'sending', locked_until = ${new Date(now.getTime() + CLAIM_MS)}, attempts = m.attempts + 1, updated_at = ${now}
        where m.id in (
          select id from messages
          where (status = 'queued' and (next_attempt_at is null or next_attempt_at <= ${now}))
             or (status = 'sending' and locked_until < ${now})
          -- created_at alone: the pending index's order (messages queued in one transaction share
          -- it, and an id tie-break would sort them all before the first row came out)
          order by created_at limit ${limit}
          for update skip locked)
        returning m.*)
      select c.id, c.contact_id, c.to_email, c.template, c.subject, c.category, c.attempts,
             ct.traits as contact_traits, a.traits as account_traits,
             v.definition->'options' as options, r.state->'vars'->'trigger'->'properties' as trigger,
             i.amount_due as invoice_amount_due, i.amount_remaining as invoice_amount_remaining, i.currency as invoice_currency,
             i.hosted_invoice_url as invoice_hosted_url, i.next_payment_attempt as invoice_next_payment_attempt
      from claimed c
      left join contacts ct on ct.id = c.contact_id
      left join accounts a on a.id = c.account_id
      left join workflow_runs r on r.id = c.run_id
      left join workflow_versions v on v.key = r.workflow_key and v.version = r.version
      -- the invoice a billing email is about, in the same round trip (not one query per email)
      left join invoices i on i.id = r.state->'vars'->'trigger'->'properties'->>'invoiceId'
      order by c.id`;
  }

  const trackedLink = (messageId: string, url: string) => `${config.publicUrl}/r/${signToken(secret, 'click', { m: messageId, u: url })}`;

  function renderRow(row: PendingRow): OutgoingEmail {
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
    const unsubscribe = marketing
      ? `${config.publicUrl}/unsubscribe/${signToken(secret, 'unsubscribe', { e: row.to_email, c: row.contact_id, m: row.id })}`
      : null;
    const actionTarget = invoice?.hosted_invoice_url ?? config.brand.appUrl;
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
          }
        : null,
      links: { action: trackedLink(row.id, actionTarget), unsubscribe, app: trackedLink(row.id, config.brand.appUrl) },
      subject: row.subject,
      locale: typeof traits.locale === 'string' ? traits.locale : config.brand.locale,
      options: row.options ?? {},
      trigger,
      now: clock.now(),
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

  async function mark(id: string, status: string, fields: { reason?: string | null; providerId?: string | null; retryAt?: Date | null } = {}): Promise<void> {
    const now = clock.now();
    await sql.begin(async (tx: Tx) => {
      await tx`
        update messages set status = ${status}, status_reason = ${fields.reason ?? null}, provider_id = coalesce(${fields.providerId ?? null}, provider_id),
          sent_at = case when ${status} = 'sent' then ${now} else sent_at end,
          next_attempt_at = ${fields.retryAt ?? null}, locked_until = null, updated_at = ${now}
        where id = ${id}`;
      if (status !== 'queued') await recordMessageEvent(tx, id, status, now, fields.reason ?? null);
    });
  }

  /** Record a whole accepted batch in two statements (round trips, not rows, cost here). */
  async function markSent(sent: { id: string; providerId: string }[]): Promise<void> {
    if (sent.length === 0) return;
    const now = clock.now();
    const ids = sent.map((e) => e.id);
    await sql.begin(async (tx: Tx) => {
      await tx`
        update messages m set status = 'sent', status_reason = null, provider_id = x.provider_id, sent_at = ${now},
          next_attempt_at = null, locked_until = null, updated_at = ${now}
        from unnest(${ids}::text[], ${sent.map((e) => e.providerId)}::text[]) as x(id, provider_id)
        where m.id = x.id`;
      await tx`insert into message_events (message_id, status, at) select id, 'sent', ${now} from unnest(${ids}::text[]) as id`;
    });
  }

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

  /** One provider request with its retries; returns how each email ended. */
  async function deliver(batch: OutgoingEmail[], firstSlot: number): Promise<{ sent: number; failed: number; requeued: number }> {
    const key = batch.length === 1 ? batch[0]!.id : `batch-${createHash('sha256').update(batch.map((e) => e.id).join(',')).digest('hex')}`;
    let transient = 0;
    for (let attempt = 0; ; attempt++) {
      // The first attempt's slot was reserved by the caller before it topped up the batch;
      // retries reserve their own. The request leaves at its slot, not later: a provider that
      // counts requests per second would see a late one and its successor as one too many.
      await sleepUntil(attempt === 0 ? firstSlot : await reserve());
      await recentSends.admit();
      let outcome;
      try {
        outcome = await transport.send(batch, key);
      } catch (err) {
        outcome = { ok: false as const, status: null, retryAfterMs: null, permanent: false, message: (err as Error).message };
      }
      if (outcome.ok) {
        const sent: { id: string; providerId: string }[] = [];
        let failed = 0;
        for (const [i, result] of outcome.results.entries()) {
          const email = batch[i]!;
          if ('providerId' in result) sent.push({ id: email.id, providerId: result.providerId });
          else {
            await mark(email.id, 'failed', { reason: result.error });
            failed++;
          }
        }
        await markSent(sent);
        return { sent: sent.length, failed, requeued: 0 };
      }
      if (outcome.permanent) {
        // The whole request was refused as invalid: record why on every message.
        for (const email of batch) await mark(email.id, 'failed', { reason: `${outcome.status ?? ''} ${outcome.message}`.trim() });
        return { sent: 0, failed: batch.length, requeued: 0 };
      }
      if (outcome.status === 429) {
        logger.warn({ retryAfterMs: outcome.retryAfterMs }, 'email provider rate limit: waiting');
        await sleep(outcome.retryAfterMs ?? 1000);
        continue; // 429 does not count as a failure: we were too fast, not wrong
      }
      transient++;
      logger.warn({ status: outcome.status, attempt: transient, error: outcome.message }, 'email provider error: retrying');
      if (transient >= MAX_TRANSIENT_TRIES) {
        // Give the messages back with a later not-before time: they stay queued, not lost.
        const retryAt = new Date(clock.now().getTime() + 60_000);
        for (const email of batch) await mark(email.id, 'queued', { reason: `retrying after: ${outcome.message}`, retryAt });
        return { sent: 0, failed: 0, requeued: batch.length };
      }
      await sleep(Math.min(30_000, 250 * 2 ** transient));
    }
  }

  type Totals = { sent: number; failed: number; skipped: number; requeued: number };

  /** Skips, renders and delivers a claimed batch; its first request slot is already taken. */
  async function sendBatch(rows: PendingRow[], totals: Totals, slot: number): Promise<void> {
    const ready: OutgoingEmail[] = [];
    // Suppression is checked again at send time: a bounce may have arrived since the decision.
    const addresses = rows.map((r) => r.to_email?.toLowerCase()).filter((e): e is string => !!e);
    const suppressions = new Map(
      (await sql<{ email: string; scope: string }[]>`select email, scope from suppressions where email = any(${addresses}::text[])`).map((r) => [r.email, r.scope]),
    );
    for (const row of rows) {
      if (!row.to_email) {
        await mark(row.id, 'skipped', { reason: 'no email address' });
        totals.skipped++;
        continue;
      }
      const scope = suppressions.get(row.to_email.toLowerCase());
      if (scope && (scope === 'all' || row.category !== 'transactional')) {
        await mark(row.id, 'skipped', { reason: `suppressed (${scope})` });
        totals.skipped++;
        continue;
      }
      try {
        ready.push(renderRow(row));
      } catch (err) {
        await mark(row.id, 'failed', { reason: `render: ${(err as Error).message}` });
        totals.failed++;
      }
    }
    if (ready.length === 0) return;
    const result = await deliver(ready, slot);
    totals.sent += result.sent;
    totals.failed += result.failed;
    totals.requeued += result.requeued;
  }

  async function sendPending(): Promise<Totals> {
    const totals: Totals = { sent: 0, failed: 0, skipped: 0, requeued: 0 };
    let lanes = 0;
    const running: Promise<void>[] = [];
    const lane = async (): Promise<void> => {
      // Stop at an empty claim, or once the provider keeps failing (the batch went back to the
      // queue with a not-before time; the next wake-up tries again).
      while (totals.requeued === 0) {
        const rows = await claim();
        if (rows.length === 0) return;
        // A full batch means a backlog: let another lane work on it while this one sends.
        if (rows.length === MAX_BATCH && lanes < MAX_LANES) {
          lanes++;
          running.push(lane());
        }
        // Sends trickling in (a campaign's runs being woken one by one) must not spend a request
        // of the rate limit each: whoever has to wait for its slot fills the batch up with what
        // became due meanwhile, shortly before the slot (time to claim and render), and sends at
        // the slot. An idle sender sends at once.
        const slot = await reserve();
        if (await sleepUntil(slot, PREPARE_MS)) {
          if (rows.length < MAX_BATCH) rows.push(...(await claim(MAX_BATCH - rows.length)));
        }
        await sendBatch(rows, totals, slot);
      }
    };
    lanes = 1;
    running.push(lane());
    // Lanes add themselves to `running` while it is awaited: wait until none is left, and for
    // all of them even when one fails (a rejection must not go unobserved).
    let failure: unknown = null;
    for (let done = 0; done < running.length; done++) await running[done]!.catch((err: unknown) => (failure ??= err));
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
