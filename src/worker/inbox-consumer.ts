// Drains the two inboxes (Stripe events, product events) into domain state, through the shared
// work queue (src/work/work-queue.ts): each lane leases one partition (the events of some Stripe
// customers, or of some users) at a time, so the events of one key are processed in order and
// never by two lanes at once, across instances too; different partitions run in parallel. A
// batch takes the advisory keys of every identity it may touch first (sorted), then works
// set-based, so lanes cannot deadlock. NOTIFY wakes the loop at once; a 1 s poll is the net.
import type { Logger } from 'pino';
import type { Clock } from '../clock.ts';
import type { Sql, Tx } from '../db/connection.ts';
import { lockIdentities } from '../contacts/contact-store.ts';
import { INBOX_CHANNEL, STRIPE_QUEUE, stripeIdentityKeys, type StripeInboxRow } from '../stripe/event-inbox.ts';
import { projectStripeBatch, projectStripeEvent } from '../stripe/projector.ts';
import { enqueueCardUpdatePayments } from '../stripe/card-update-payments.ts';
import { schedulePreDunningChecks } from '../stripe/pre-dunning.ts';
import { PRODUCT_QUEUE } from '../events/event-inbox.ts';
import { factListeners } from '../workflows/fact-listeners.ts';
import { ensureProductAccounts, processProductBatch, processProductEvent, productIdentityKeys, type ProductEventRow } from '../events/processor.ts';
import { createBackgroundLoop } from '../work/background-loop.ts';
import { isDatabaseConnectionError, outageAwareLogger } from '../process-errors.ts';
import { createWorkQueue, failureText, LeaseLostError, type BatchReport, type WorkQueue } from '../work/work-queue.ts';

export interface InboxConsumerOptions {
  /** Stripe events per batch (default 100) */
  batchSize?: number;
  /**
   * Product messages per batch (default 500). A product batch is a fixed handful of set-based
   * statements plus a claim and a commit, whatever its size, so the per-batch cost dominates
   * small batches: 20,000 tracks of 2,000 users went through the inbox at ~6,000/s in batches of
   * 100 and ~10,000/s in batches of 500 (bench/inbox-profile.ts), and the events-pipeline
   * benchmark went from 3,015 to 4,551 events/s end to end (BENCHMARKS.md, session 8). Under a
   * light load a batch is whatever is due, so this does not delay a lone event.
   */
  productBatchSize?: number;
  pollIntervalMs?: number;
  /** first retry delay after a failed attempt; doubles per attempt (capped at 15 min) */
  retryDelayMs?: number;
  /** attempts before an event is parked as a dead letter */
  maxAttempts?: number;
  /** lanes of this instance (each holds one partition at a time) */
  concurrency?: number;
  /** how long a lane's claim on a partition lasts without a transaction holding it */
  leaseMs?: number;
  /** turn card-change events into pay-on-card-update work items (RECOVERY_PAY_ON_CARD_UPDATE with a Stripe key) */
  cardUpdatePayments?: boolean;
  /** PRE_DUNNING_NOTICE_DAYS: how many days before a renewal an expiring card is checked (default 7) */
  preDunningNoticeDays?: number;
}

export interface InboxConsumer {
  /** Process everything currently due; resolves with the number of rows handled. */
  drain(): Promise<number>;
  start(): Promise<void>;
  stop(): Promise<void>;
  readonly queues: { stripe: WorkQueue; product: WorkQueue };
}

export function createInboxConsumer(deps: { sql: Sql; clock: Clock; logger: Logger }, options: InboxConsumerOptions = {}): InboxConsumer {
  const batchSize = options.batchSize ?? 100;
  const productBatchSize = options.productBatchSize ?? options.batchSize ?? 500;
  const concurrency = options.concurrency ?? 4;
  const { sql, clock, logger } = deps;
  const listeners = factListeners();
  const logOutage = outageAwareLogger(logger);
  const tune = <S extends typeof STRIPE_QUEUE | typeof PRODUCT_QUEUE>(spec: S) => ({
    ...spec,
    maxAttempts: options.maxAttempts ?? spec.maxAttempts,
    backoff: { baseMs: options.retryDelayMs ?? spec.backoff.baseMs, maxMs: spec.backoff.maxMs },
    leaseMs: options.leaseMs ?? spec.leaseMs,
  });
  const stripe = createWorkQueue({ sql, clock }, tune(STRIPE_QUEUE));
  const product = createWorkQueue({ sql, clock }, tune(PRODUCT_QUEUE));

  /**
   * The batch set-based in a savepoint; if it fails, one event at a time, each in its own
   * savepoint, so one bad event is retried (and eventually parked) while the others commit.
   */
  async function batchOrEach<Row>(tx: Tx, rows: Row[], report: BatchReport, all: (db: Tx) => Promise<unknown>, one: (db: Tx, row: Row) => Promise<unknown>, describe: (row: Row) => Record<string, unknown>) {
    try {
      await tx.savepoint((sp) => all(sp as Tx));
      return;
    } catch (err) {
      logger.warn({ rows: rows.length, error: failureText(err) }, 'inbox batch failed as a whole; processing its events one at a time');
    }
    for (const row of rows) {
      try {
        await tx.savepoint((sp) => one(sp as Tx, row));
      } catch (err) {
        logger.error({ ...describe(row), error: failureText(err) }, 'inbox processing failed; will retry');
        report.fail((row as { id: string | number }).id, err);
      }
    }
  }

  const stripeBatch = () =>
    stripe.runBatch<StripeInboxRow>(batchSize, async (tx, rows, report) => {
      await lockIdentities(tx, await stripeIdentityKeys(tx, rows));
      const now = clock.now();
      // Card changes become pay-on-card-update work in the projection's transaction (after it, so
      // the customer's default payment method is the one this batch leaves).
      const payOnCardUpdate = options.cardUpdatePayments === true;
      await batchOrEach(
        tx,
        rows,
        report,
        async (db) => {
          const results = await projectStripeBatch(db, rows.map((r) => r.payload), now);
          if (payOnCardUpdate) await enqueueCardUpdatePayments(db, rows.map((r) => r.payload));
          await schedulePreDunningChecks(db, rows.map((r) => r.payload), now, options.preDunningNoticeDays);
          return results;
        },
        async (db, row) => {
          const result = await projectStripeEvent(db, row.payload, now);
          if (payOnCardUpdate) await enqueueCardUpdatePayments(db, [row.payload]);
          await schedulePreDunningChecks(db, [row.payload], now, options.preDunningNoticeDays);
          return result;
        },
        (row) => ({ eventId: row.id }),
      );
    });

  const productBatch = () =>
    product.runBatch<ProductEventRow>(
      productBatchSize,
      async (tx, rows, report) => {
        await lockIdentities(tx, await productIdentityKeys(tx, rows));
        // after the identity locks: the shared lock is held from here until the facts commit
        const listened = await listeners.current(tx);
        const now = clock.now();
        await batchOrEach(tx, rows, report, (db) => processProductBatch(db, rows, now, listened), (db, row) => processProductEvent(db, row, now, listened), (row) => ({ messageId: row.message_id }));
      },
      // Accounts are shared by the users of many partitions: created by the batch transaction,
      // a new account would be held uncommitted by one lane while every other lane with a
      // member of it waited (measured: the largest wait of the product pipeline).
      // Only a head start: if it fails, the batch creates its accounts itself (and a message
      // that cannot be processed fails on its own there, with its error).
      { beforeTransaction: (ids) => ensureProductAccounts(sql, ids, clock.now()).catch(() => {}) },
    );

  async function safely(batch: () => Promise<number>, name: string): Promise<number | null> {
    try {
      return await batch();
    } catch (err) {
      if (err instanceof LeaseLostError) logger.warn({ queue: name, error: err.message }, 'lease lost; another lane took the partition over');
      else if (isDatabaseConnectionError(err)) logOutage(err, { queue: name }, 'inbox batch failed');
      else logger.error({ queue: name, error: failureText(err) }, 'inbox batch failed');
      return null;
    }
  }

  async function drainLane(signal: AbortSignal): Promise<number> {
    let total = 0;
    let failures = 0;
    while (!signal.aborted) {
      const s = await safely(stripeBatch, 'stripe_events');
      const p = await safely(productBatch, 'product_events');
      total += (s ?? 0) + (p ?? 0);
      if (s === null || p === null) {
        // The database may be away: let the next pass (poll or wake-up) try again.
        if (++failures >= 3) return total;
        continue;
      }
      if (s + p === 0) return total;
    }
    return total;
  }

  const loop = createBackgroundLoop({
    name: 'inbox',
    sql,
    logger,
    channels: [INBOX_CHANNEL],
    pollMs: options.pollIntervalMs ?? 1000,
    async run(signal) {
      const lanes = await Promise.all(Array.from({ length: concurrency }, () => drainLane(signal)));
      return lanes.reduce((a, b) => a + b, 0);
    },
  });

  return {
    drain: () => loop.wake(),
    start: () => loop.start(),
    stop: () => loop.stop(),
    queues: { stripe, product },
  };
}
