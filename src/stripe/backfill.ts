// `lifeline backfill`: bring in what Stripe already knows (webhooks only tell us about the
// future). Each Stripe object read becomes a snapshot envelope fed through the SAME projection
// as webhooks (projectStripeBatch), so the same version keys decide which snapshot wins:
//
// - A snapshot's time is when the page holding it was requested (the SDK's `request` event, on
//   our clock), in whole seconds like Stripe's `created`. A webhook event created after that
//   request describes a later state and wins; one created before it loses to the snapshot, which
//   already contains its change. Within the same second the webhook wins the tie: snapshot ids
//   start with `bf_`, which sorts before Stripe's `evt_`.
// - Snapshots use snapshot-only event types (`customer.updated` without previous_attributes,
//   `invoice.updated`, `customer.subscription.updated`): they update state and record no
//   timeline facts, so history does not start workflows or send emails. `--enroll` is the one
//   exception, on purpose: see enrollOpenFailures.
//
// Resumable: each stream pages with the SDK's auto-pagination from its saved cursor (migration
// 0011); every page is projected and its cursor saved in one transaction, so an interrupted run
// (Ctrl-C, crash, Stripe failing beyond retries) resumes after the last committed page and a
// page is never half applied. Re-projecting a page is harmless (version keys), so nothing is
// duplicated either way.
//
// Pacing: the SDK retries 429, 5xx and dropped connections itself (maxNetworkRetries, with its
// exponential backoff and Stripe-Should-Retry); on top, every throttled or failed response seen
// doubles a pause between pages (up to 5 s) that decays again while pages come back clean.
import type Stripe from 'stripe';
import type { Clock } from '../clock.ts';
import type { Sql, Tx } from '../db/connection.ts';
import { BILLING_RECOVERY_KEY } from '../workflows/publish-contracts.ts';
import { STRIPE_API_VERSION } from './client.ts';
import { lockIdentities } from '../contacts/contact-store.ts';
import { stripeCustomerOf, stripeIdentityKeys, type StripeEnvelope } from './event-inbox.ts';
import { projectStripeBatch } from './projector.ts';

type Obj = Record<string, unknown> & { id: string; object: string; created?: number };

export interface BackfillStream {
  name: string;
  /** the snapshot event type its objects are projected as */
  type: string;
  list(stripe: Stripe, params: { limit: number; starting_after?: string; since: Date | null }): AsyncIterable<Obj>;
  /** client-side filter (Stripe cannot filter canceled subscriptions by end time) */
  keep?(object: Obj, since: Date | null): boolean;
}

const seconds = (d: Date) => Math.floor(d.getTime() / 1000);
const createdSince = (since: Date | null) => (since ? { created: { gte: seconds(since) } } : {});
const cursor = (startingAfter: string | undefined) => (startingAfter ? { starting_after: startingAfter } : {});

/** How far back canceled subscriptions are read when --since is not given. */
export const DEFAULT_CANCELED_WINDOW_DAYS = 90;

/**
 * What a backfill reads, in this order (customers first, so invoices and subscriptions find
 * their customer's email). `--since` bounds history: invoices created and subscriptions ended
 * since then; customers and live subscriptions are current state and always read whole.
 */
export const BACKFILL_STREAMS: readonly BackfillStream[] = [
  {
    name: 'customers',
    type: 'customer.updated',
    list: (stripe, p) => stripe.customers.list({ limit: p.limit, ...cursor(p.starting_after) }) as unknown as AsyncIterable<Obj>,
  },
  {
    // Stripe's default list: every status but canceled (active, past_due, unpaid, trialing, paused, incomplete).
    name: 'subscriptions',
    type: 'customer.subscription.updated',
    list: (stripe, p) => stripe.subscriptions.list({ limit: p.limit, ...cursor(p.starting_after) }) as unknown as AsyncIterable<Obj>,
  },
  {
    name: 'canceled_subscriptions',
    type: 'customer.subscription.updated',
    list: (stripe, p) => stripe.subscriptions.list({ status: 'canceled', limit: p.limit, ...cursor(p.starting_after) }) as unknown as AsyncIterable<Obj>,
    keep: (object, since) => {
      const ended = Number(object.ended_at ?? object.canceled_at ?? object.created ?? 0);
      return since === null || ended >= seconds(since);
    },
  },
  {
    // Open invoices include the past-due ones (a failed attempt, Stripe retrying).
    name: 'open_invoices',
    type: 'invoice.updated',
    list: (stripe, p) => stripe.invoices.list({ status: 'open', limit: p.limit, ...createdSince(p.since), ...cursor(p.starting_after) }) as unknown as AsyncIterable<Obj>,
  },
  {
    name: 'uncollectible_invoices',
    type: 'invoice.updated',
    list: (stripe, p) => stripe.invoices.list({ status: 'uncollectible', limit: p.limit, ...createdSince(p.since), ...cursor(p.starting_after) }) as unknown as AsyncIterable<Obj>,
  },
];

export interface BackfillProgress {
  stream: string;
  /** objects read in this stream (this run and the interrupted ones before it) */
  streamItems: number;
  /** objects read by this invocation, all streams */
  items: number;
  /** this invocation's rate */
  itemsPerSecond: number;
  streamIndex: number;
  streamCount: number;
  /** current pause between pages (our pacing), ms */
  pauseMs: number;
}

export interface BackfillOptions {
  since?: Date | undefined;
  enroll?: boolean;
  /** objects per page and per transaction (Stripe's maximum is 100) */
  pageSize?: number;
  onProgress?: (progress: BackfillProgress) => void;
  /** stops after the page in flight is committed (Ctrl-C) */
  signal?: AbortSignal;
  /** start over even if an earlier backfill was interrupted */
  restart?: boolean;
}

export interface BackfillSummary {
  resumed: boolean;
  interrupted: boolean;
  /** objects read and projected, per stream, by this invocation */
  items: Record<string, number>;
  total: number;
  elapsedMs: number;
  /** invoices for which --enroll recorded the failure that starts billing recovery */
  enrolled: string[];
  /** requests the SDK had to repeat (429, 5xx, dropped connections) */
  retried: number;
  since: Date | null;
}

interface CursorRow {
  stream: string;
  starting_after: string | null;
  items: number;
  since: Date | null;
  completed_at: Date | null;
}

export class BackfillBusyError extends Error {
  override name = 'BackfillBusyError';
}

/** Session advisory lock key: one backfill at a time per database (they share the cursors). */
const BACKFILL_LOCK = 'lifeline:stripe-backfill';

export async function runBackfill(deps: { sql: Sql; stripe: Stripe; clock: Clock }, options: BackfillOptions = {}): Promise<BackfillSummary> {
  const lockConnection = await deps.sql.reserve();
  try {
    const [lock] = await lockConnection<{ locked: boolean }[]>`select pg_try_advisory_lock(hashtext(${BACKFILL_LOCK})) as locked`;
    if (!lock?.locked) throw new BackfillBusyError('another backfill is running against this database (it holds the backfill lock); wait for it to finish, or stop it with Ctrl-C');
    try {
      return await backfillLocked(deps, options);
    } finally {
      await lockConnection`select pg_advisory_unlock(hashtext(${BACKFILL_LOCK}))`;
    }
  } finally {
    lockConnection.release();
  }
}

async function backfillLocked(deps: { sql: Sql; stripe: Stripe; clock: Clock }, options: BackfillOptions): Promise<BackfillSummary> {
  const { sql, stripe, clock } = deps;
  const pageSize = options.pageSize ?? 100;
  const started = performance.now();

  // Resume an interrupted backfill (with the bound it started with), else start a new one.
  let rows = await sql<CursorRow[]>`select stream, starting_after, items, since, completed_at from stripe_backfill_cursors`;
  const resumable = !options.restart && rows.some((r) => r.completed_at === null);
  let since: Date | null;
  if (resumable) {
    since = rows[0]!.since;
  } else {
    const now = clock.now();
    since = options.since ?? null;
    await sql.begin(async (tx) => {
      await tx`delete from stripe_backfill_cursors`;
      for (const stream of BACKFILL_STREAMS) {
        await tx`insert into stripe_backfill_cursors (stream, items, since, started_at, updated_at) values (${stream.name}, 0, ${since}, ${now}, ${now})`;
      }
    });
    rows = await sql<CursorRow[]>`select stream, starting_after, items, since, completed_at from stripe_backfill_cursors`;
  }
  const canceledSince = since ?? new Date(clock.now().getTime() - DEFAULT_CANCELED_WINDOW_DAYS * 86_400_000);

  // The snapshot time: when the page being read was requested. The SDK emits `request` for
  // every attempt (its retries included) and `response` only for the last, so more than one
  // request for a page means Stripe throttled, failed or dropped the ones before.
  let requestedAt = clock.now();
  let requestsThisPage = 0;
  let retried = 0;
  let pauseMs = 0;
  const onRequest = () => {
    requestedAt = clock.now();
    requestsThisPage++;
  };
  stripe.on('request', onRequest);

  const summary: BackfillSummary = { resumed: resumable, interrupted: false, items: {}, total: 0, elapsedMs: 0, enrolled: [], retried: 0, since };
  try {
    for (const [index, stream] of BACKFILL_STREAMS.entries()) {
      const row = rows.find((r) => r.stream === stream.name);
      if (!row || row.completed_at) continue;
      summary.items[stream.name] = 0;
      let streamItems = row.items;
      const streamSince = stream.name === 'canceled_subscriptions' ? canceledSince : since;
      const iterator = stream.list(stripe, { limit: pageSize, since: streamSince, ...(row.starting_after ? { starting_after: row.starting_after } : {}) })[Symbol.asyncIterator]();
      let page: { object: Obj; at: number }[] = [];
      let done = false;
      while (!done) {
        const next = await iterator.next();
        if (next.done) done = true;
        else page.push({ object: next.value, at: seconds(requestedAt) });
        if (page.length < pageSize && !done) continue;

        const kept = page.filter((p) => !stream.keep || stream.keep(p.object, streamSince));
        const envelopes = kept.map((p) => snapshotEnvelope(stream.type, p.object, p.at));
        const last = page.at(-1)?.object.id ?? null;
        const now = clock.now();
        await sql.begin(async (tx) => {
          if (envelopes.length > 0) await projectLikeTheInbox(tx, envelopes, now);
          await tx`
            update stripe_backfill_cursors set
              starting_after = coalesce(${last}, starting_after), items = items + ${page.length},
              completed_at = ${done ? now : null}, updated_at = ${now}
            where stream = ${stream.name}`;
        });
        streamItems += page.length;
        summary.items[stream.name]! += page.length;
        summary.total += page.length;
        page = [];

        // Our own pacing on top of the SDK's retries.
        const retriesThisPage = Math.max(0, requestsThisPage - 1);
        requestsThisPage = 0;
        retried += retriesThisPage;
        pauseMs = retriesThisPage > 0 ? Math.min(5_000, Math.max(250, pauseMs * 2)) : pauseMs < 20 ? 0 : Math.floor(pauseMs * 0.7);
        const elapsed = (performance.now() - started) / 1000;
        options.onProgress?.({
          stream: stream.name,
          streamItems,
          items: summary.total,
          itemsPerSecond: elapsed > 0 ? summary.total / elapsed : 0,
          streamIndex: index,
          streamCount: BACKFILL_STREAMS.length,
          pauseMs,
        });
        // Stop on Ctrl-C unless this was the last page of all: then nothing is left to resume
        // (a resumed run would find every stream complete and start a new backfill).
        if (options.signal?.aborted && !(done && index === BACKFILL_STREAMS.length - 1)) {
          summary.interrupted = true;
          return summary;
        }
        if (pauseMs > 0 && !done) await new Promise((resolve) => setTimeout(resolve, pauseMs));
      }
    }
    if (options.enroll) summary.enrolled = await enrollOpenFailures(deps, since);
    return summary;
  } finally {
    stripe.off('request', onRequest);
    summary.retried = retried;
    summary.elapsedMs = performance.now() - started;
  }
}

/** As the inbox consumer does: lock the batch's identities first, so we never deadlock with a running service. */
async function projectLikeTheInbox(tx: Tx, envelopes: StripeEnvelope[], now: Date) {
  const rows = envelopes.map((e) => ({ id: e.id, payload: e, attempts: 0, customer_id: stripeCustomerOf(e.data.object) }));
  await lockIdentities(tx, await stripeIdentityKeys(tx, rows));
  return projectStripeBatch(tx, envelopes, now);
}

function snapshotEnvelope(type: string, object: Obj, at: number): StripeEnvelope {
  return {
    // Deterministic: the same object read at the same second is the same snapshot.
    id: `bf_${at}_${object.id}`,
    type,
    api_version: STRIPE_API_VERSION,
    created: at,
    livemode: object.livemode === true,
    request: { id: null, idempotency_key: null },
    data: { object },
  };
}

/**
 * `--enroll`: open invoices with a failed attempt and no billing-recovery run (and whose
 * subscription is not canceled) get the failure projected as if its webhook had arrived: an
 * `invoice.payment_failed` fact, which starts the billing-recovery workflow like any failure.
 * Once: the fact is deduplicated by invoice and attempt (the same key a webhook's fact has) and
 * the workflow runs once per invoice, so a second --enroll, or the webhook of that attempt,
 * adds nothing. The invoice is re-read from Stripe so the failure is its current state.
 */
export async function enrollOpenFailures(deps: { sql: Sql; stripe: Stripe; clock: Clock }, since: Date | null): Promise<string[]> {
  const candidates = await deps.sql<{ id: string }[]>`
    select i.id from invoices i
    left join subscriptions s on s.id = i.subscription_id
    where i.status = 'open' and i.attempt_count > 0 and i.amount_remaining > 0
      and (s.status is null or s.status <> 'canceled')
      and (${since}::timestamptz is null or i.stripe_created >= ${since})
      and not exists (select 1 from workflow_runs r where r.workflow_key = ${BILLING_RECOVERY_KEY} and r.run_key = i.id)
    order by i.id`;
  const enrolled: string[] = [];
  for (const { id } of candidates) {
    const at = seconds(deps.clock.now());
    const invoice = (await deps.stripe.invoices.retrieve(id)) as unknown as Obj;
    if (invoice.status !== 'open' || !(Number(invoice.attempt_count) > 0)) continue;
    const envelope: StripeEnvelope = {
      // Per invoice and attempt: re-running --enroll projects the same event again (no new row).
      id: `bf_enroll_${id}_${String(invoice.attempt_count)}`,
      type: 'invoice.payment_failed',
      api_version: STRIPE_API_VERSION,
      created: at,
      livemode: invoice.livemode === true,
      request: { id: null, idempotency_key: null },
      data: { object: invoice },
    };
    const [result] = await deps.sql.begin((tx) => projectLikeTheInbox(tx, [envelope], deps.clock.now()));
    if (result?.facts.includes('invoice.payment_failed')) enrolled.push(id);
  }
  return enrolled;
}
