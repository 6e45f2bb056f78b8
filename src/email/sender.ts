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
//
// LAYOUT. The outbox's statements (claim, persist, settle, release, take over, retry
// bookkeeping) are in outbox-store.ts and rendering a claimed message is outgoing-email.ts, each
// a function over explicit dependencies. Here: delivery (rate-limit slots, retries, lanes) as
// functions over a SenderContext built once per sender, and createEmailSender, which builds it
// and runs the background loop.
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { Clock } from '../clock.ts';
import type { Config } from '../config.ts';
import type { Sql } from '../db/connection.ts';
import {
  beginRetry,
  claimLoose,
  OUTBOX_CHANNEL,
  persistBatch,
  releaseLoose,
  settleAll,
  settleBatch,
  settleLoose,
  suppressionScopes,
  takeOverBatch,
  type BatchRow,
  type ClaimedMessage,
  type HeldBatch,
  type MessageOutcome,
  type OutboxDeps,
} from './outbox-store.ts';
import { renderOutgoingEmail, type OutgoingEmailDeps } from './outgoing-email.ts';
import { reserveSlot } from './rate-limit.ts';
import { tokenCodec } from './tokens.ts';
import type { EmailTransport, OutgoingEmail, SendOutcome } from './transport.ts';
import type { TemplateCatalog } from './template-catalog.ts';

export { OUTBOX_CHANNEL, recordMessageEvent, replayDeadMessages } from './outbox-store.ts';

/** Resend's batch endpoint takes up to 100 emails per request. */
const MAX_BATCH = 100;
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

/** What a pass sent (`failed` includes messages that went dead). */
export type SendTotals = { sent: number; failed: number; skipped: number; requeued: number };

export interface EmailSender {
  /** Send everything due now; resolves with counts (`failed` includes messages that went dead). */
  sendPending(): Promise<SendTotals>;
  start(): Promise<void>;
  stop(): Promise<void>;
}

/** Holds a request back until it keeps to the provider's per-second rule (sendWindow). */
export interface SendWindow {
  admit(): Promise<void>;
}

/**
 * The provider's own rule, checked at the moment of sending: no more than `perSecond` requests
 * in any second. The shared slots space requests evenly, but a request that leaves late (a busy
 * event loop, a slow claim) lets the next ones bunch up behind it, and the provider answers the
 * bunch with 429 and a second's wait. This window holds a request back instead (in this process).
 */
function sendWindow(perSecond: number, clock: Clock, sleep: (ms: number) => Promise<void>): SendWindow {
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

/**
 * What delivery needs, built once per sender (createSenderContext). It is the outbox's
 * OutboxDeps too (sql, clock, logger, claimMs): the store's functions take it as it is.
 */
export interface SenderContext extends OutboxDeps {
  render: OutgoingEmailDeps;
  transport: EmailTransport;
  sleep: (ms: number) => Promise<void>;
  policy: RetryPolicy;
  /** ms between two requests' slots of the shared rate limit (the configured limit, RATE_MARGIN wider) */
  intervalMs: number;
  /** this sender's in-process check of the provider's per-second rule */
  recentSends: SendWindow;
}

export function createSenderContext(deps: EmailSenderDeps): SenderContext {
  const { sql, clock, logger, config, templates, transport, secret } = deps;
  const sleep = deps.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  return {
    sql,
    clock,
    logger,
    // EMAIL_CLAIM_MS: the suites shorten it so a claim orphaned by a kill is taken over sooner.
    claimMs: config.email.claimMs,
    // Several link tokens per email: their keys are derived once per sender (tokens.ts).
    render: { config, templates, links: tokenCodec(secret) },
    transport,
    sleep,
    policy: { ...DEFAULT_RETRY, ...deps.retry },
    intervalMs: Math.max(1, Math.ceil((1000 / config.email.rateLimitPerSecond) * RATE_MARGIN)),
    recentSends: sendWindow(config.email.rateLimitPerSecond, clock, sleep),
  };
}

/**
 * One sendPending pass: what it sent so far, and its lanes (independent claimants, like separate
 * processes): how many run now and how many of them wait on a slow provider request.
 */
export interface SendPass {
  totals: SendTotals;
  active: number;
  slow: number;
  /** every lane the pass opened; lanes add themselves while sendPending awaits them */
  running: Promise<void>[];
}

/** The pass in progress of one sender, if any: a wake-up during it may add a lane (openLaneIfStuck). */
export interface PassInProgress {
  current: SendPass | null;
}

/** Reserves the next request slot of the shared rate limit: when (ms epoch) it starts. */
const reserveRequestSlot = (ctx: SenderContext) => reserveSlot(ctx.sql, `email:${ctx.transport.name}`, ctx.intervalMs, ctx.clock.now());

/** Sleeps until `at` (ms epoch) less `early` ms; true if it slept. */
async function sleepUntil(ctx: SenderContext, at: number, early = 0): Promise<boolean> {
  const wait = at - early - ctx.clock.now().getTime();
  if (wait <= 0) return false;
  await ctx.sleep(wait);
  return true;
}

/** Waits for a provider request on behalf of its lane (see SLOW_REQUEST_MS). */
async function watchRequest(pass: SendPass, request: Promise<SendOutcome>): Promise<SendOutcome> {
  // Real time, like the request's own limit (RESEND_TIMEOUT_MS): it watches a socket.
  let isSlow = false;
  const timer = setTimeout(() => {
    isSlow = true;
    pass.slow++;
  }, SLOW_REQUEST_MS);
  try {
    return await request;
  } finally {
    clearTimeout(timer);
    if (isSlow) pass.slow--;
  }
}

/**
 * Sends a persisted batch this sender holds, with its bounded retries, and records the outcome.
 * Every request carries the batch's key and the same emails (step 3).
 */
export async function deliverBatch(ctx: SenderContext, b: HeldBatch, firstSlot: number, pass: SendPass): Promise<void> {
  const { clock, logger, transport, sleep, policy } = ctx;
  const { totals } = pass;
  const n = b.emails.length;
  const dead = async (reason: string) => {
    logger.error({ batch: b.id, messages: n, reason }, 'email batch dead: not retried (replayable)');
    if (await settleAll(ctx, b, 'dead', reason)) totals.failed += n;
  };
  let slot = firstSlot;
  for (;;) {
    // The first attempt's slot was reserved by the caller before it topped up the batch;
    // retries reserve their own. The request leaves at its slot, not later: a provider that
    // counts requests per second would see a late one and its successor as one too many.
    await sleepUntil(ctx, slot);
    await ctx.recentSends.admit();
    let outcome: SendOutcome;
    try {
      outcome = await watchRequest(pass, transport.send(b.emails, b.key));
    } catch (err) {
      outcome = { ok: false, status: null, retryAfterMs: null, permanent: false, message: (err as Error).message };
    }
    if (outcome.ok) {
      const members: MessageOutcome[] = outcome.results.map((result, i) =>
        'providerId' in result ? { id: b.emails[i]!.id, status: 'sent', reason: null, providerId: result.providerId } : { id: b.emails[i]!.id, status: 'failed', reason: result.error },
      );
      if (await settleBatch(ctx, b, { status: 'sent', reason: null }, members)) {
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
      if (await settleAll(ctx, b, 'failed', `${outcome.status ?? ''} ${outcome.message}`.trim())) totals.failed += n;
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
        if (await settleAll(ctx, b, 'queued', `retrying after: ${outcome.message}`, retryAt)) totals.requeued += n;
        return;
      }
      await sleep(Math.min(30_000, 250 * 2 ** (failures % policy.triesBeforeRequeue)));
    }
    if (clock.now().getTime() - b.createdAt.getTime() >= policy.maxAgeMs) return dead('not sent within the provider idempotency window (batch too old to re-send safely)');
    if (!(await beginRetry(ctx, b))) {
      logger.warn({ batch: b.id }, 'email batch taken over by another sender: not retrying');
      return;
    }
    slot = await reserveRequestSlot(ctx);
  }
}

/** Skips, renders, persists and delivers a claimed set of loose messages; its first request slot is already taken. */
export async function sendClaimedBatch(ctx: SenderContext, token: string, rows: ClaimedMessage[], slot: number, pass: SendPass): Promise<void> {
  const { clock, logger, policy } = ctx;
  const { totals } = pass;
  // The batch's "now": rendered with it, stored with it, so a re-send renders the same bytes.
  const formedAt = clock.now();
  const ready: { row: ClaimedMessage; email: OutgoingEmail }[] = [];
  const early: MessageOutcome[] = [];
  // Suppression is checked again at send time: a bounce may have arrived since the decision.
  const addresses = rows.map((r) => r.to_email?.toLowerCase()).filter((e): e is string => !!e);
  const suppressions = await suppressionScopes(ctx.sql, addresses);
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
      ready.push({ row, email: renderOutgoingEmail(ctx.render, row, formedAt) });
    } catch (err) {
      early.push({ id: row.id, status: 'failed', reason: `render: ${(err as Error).message}` });
    }
  }
  if (early.length > 0) {
    await settleLoose(ctx, token, early);
    for (const o of early) {
      if (o.status === 'skipped') totals.skipped++;
      else totals.failed++;
    }
  }
  if (ready.length === 0) return;
  const batch = await persistBatch(ctx, token, ready.map((r) => r.row), formedAt);
  if (!batch) {
    // Some member's claim expired and another sender took it: send nothing; give back the rest.
    logger.warn({ messages: ready.length }, 'email claim lost before the batch was formed: released');
    await releaseLoose(ctx, token);
    return;
  }
  batch.emails = ready.map((r) => r.email);
  await deliverBatch(ctx, batch, slot, pass);
}

/** Re-sends a taken-over batch exactly as it was (step 3), or ends it when past its bounds. */
export async function resendBatch(ctx: SenderContext, row: BatchRow, b: HeldBatch, pass: SendPass): Promise<void> {
  const { clock, logger, policy } = ctx;
  const { totals } = pass;
  let inputs: ClaimedMessage[];
  try {
    inputs = JSON.parse(row.render_inputs) as ClaimedMessage[];
  } catch (err) {
    // Unreadable stored inputs can never be re-sent as formed. Dead at once (replayable): left
    // held, the batch would be taken over at every claim expiry without reaching a dead check.
    b.emails = row.message_ids.map((id) => ({ id }) as OutgoingEmail);
    const reason = `stored batch unreadable: ${(err as Error).message}`;
    logger.error({ batch: b.id, reason }, 'email batch dead: not retried (replayable)');
    if (await settleAll(ctx, b, 'dead', reason)) totals.failed += b.emails.length;
    return;
  }
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
      b.emails.push(renderOutgoingEmail(ctx.render, { ...input, invoice_next_payment_attempt: at === null ? null : new Date(at) }, b.createdAt));
    }
  } catch (err) {
    // Without the original payload the key cannot be re-sent safely (step 6's reasoning).
    b.emails = inputs.map((r) => ({ id: r.id }) as OutgoingEmail);
    if (await settleAll(ctx, b, 'dead', `render for re-send: ${(err as Error).message}`)) totals.failed += inputs.length;
    return;
  }
  if (reason) {
    logger.error({ batch: b.id, reason }, 'email batch dead: not retried (replayable)');
    if (await settleAll(ctx, b, 'dead', reason)) totals.failed += inputs.length;
    return;
  }
  logger.info({ batch: b.id, messages: inputs.length, attempt: b.attempts }, 'email batch re-sent as formed (same key, same payload)');
  await deliverBatch(ctx, b, await reserveRequestSlot(ctx), pass);
}

/** Opens another lane in the pass; sendPending awaits it with the others. */
function openLane(ctx: SenderContext, pass: SendPass): void {
  pass.active++;
  pass.running.push(runLane(ctx, pass).finally(() => pass.active--));
}

/** A wake-up's lane for mail due now, unless a lane is free to claim it or MAX_LANES are busy. */
function openLaneIfStuck(ctx: SenderContext, pass: SendPass): void {
  if (pass.active - pass.slow === 0 && pass.active < MAX_LANES) openLane(ctx, pass);
}

async function runLane(ctx: SenderContext, pass: SendPass): Promise<void> {
  // Stop at an empty claim, or once the provider keeps failing (the batch went back to the
  // queue with a not-before time; the next wake-up tries again).
  while (pass.totals.requeued === 0) {
    // Persisted batches first: a re-send of an existing batch, never a new mix (step 2).
    const taken = await takeOverBatch(ctx);
    if (taken) {
      await resendBatch(ctx, taken.row, taken.batch, pass);
      continue;
    }
    const token = randomUUID();
    const rows = await claimLoose(ctx, token, MAX_BATCH);
    if (rows.length === 0) return;
    // A full batch means a backlog: let another lane work on it while this one sends.
    if (rows.length === MAX_BATCH && pass.active < MAX_LANES) openLane(ctx, pass);
    // Sends trickling in (a campaign's runs being woken one by one) must not spend a request
    // of the rate limit each: whoever has to wait for its slot fills the batch up with what
    // became due meanwhile, shortly before the slot (time to claim and render), and sends at
    // the slot. An idle sender sends at once. (The top-up is a claim like the first: the
    // batch is formed, and persisted, only after it.)
    const slot = await reserveRequestSlot(ctx);
    if (await sleepUntil(ctx, slot, PREPARE_MS)) {
      if (rows.length < MAX_BATCH) rows.push(...(await claimLoose(ctx, token, MAX_BATCH - rows.length)));
    }
    await sendClaimedBatch(ctx, token, rows, slot, pass);
  }
}

/** Sends everything due now, in lanes (MAX_LANES); `passes.current` is this pass while it runs. */
export async function sendPending(ctx: SenderContext, passes: PassInProgress): Promise<SendTotals> {
  const pass: SendPass = { totals: { sent: 0, failed: 0, skipped: 0, requeued: 0 }, active: 0, slow: 0, running: [] };
  passes.current = pass;
  openLane(ctx, pass);
  // Lanes add themselves to `running` while it is awaited: wait until none is left, and for
  // all of them even when one fails (a rejection must not go unobserved).
  let failure: unknown = null;
  for (let done = 0; done < pass.running.length; done++) await pass.running[done]!.catch((err: unknown) => (failure ??= err));
  // In the same turn as the last check above: a wake-up cannot add a lane nobody awaits.
  if (passes.current === pass) passes.current = null;
  if (failure) throw failure;
  return pass.totals;
}

/**
 * The sender: sendPending over one SenderContext, and the background loop (start/stop) that
 * runs a pass on every outbox notification and every 500 ms. The loop's state (running, the
 * pass in progress, a wake-up during it) is this sender's own, held here.
 */
export function createEmailSender(deps: EmailSenderDeps): EmailSender {
  const ctx = createSenderContext(deps);
  const { sql, logger } = ctx;
  const passes: PassInProgress = { current: null };
  const sendPendingNow = () => sendPending(ctx, passes);

  let running = false;
  let loop: Promise<void> | null = null;
  let again = false;
  let timer: NodeJS.Timeout | null = null;
  let unlisten: (() => Promise<void>) | null = null;
  const wake = () => {
    if (loop) {
      again = true;
      // Mail queued while every lane waits on a slow request is sent now, by another lane.
      if (passes.current) openLaneIfStuck(ctx, passes.current);
      return;
    }
    loop = (async () => {
      do {
        again = false;
        await sendPendingNow().catch((err) => logger.error({ error: (err as Error).message }, 'email sender failed'));
      } while (again && running);
      loop = null;
    })();
  };

  return {
    sendPending: sendPendingNow,
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
