// The durable edge around the pure interpreter. Facts come from the timeline (domain_events):
// they start runs (triggers) and advance waiting ones (goal, exit, wait_for_event) at once.
// Timers live in workflow_runs.due_at (an indexed column, not millions of delayed jobs); a short
// tick hands due runs to the pg-boss queue `workflow.due`, whose workers advance them. Every
// advance happens in one transaction with the run row locked: new state, trace and side effects
// (messages, webhook deliveries, trait updates, keyed by run and step) commit together or not at
// all, so a crash or a retry never does a step twice.
import type { PgBoss } from 'pg-boss';
import type { Logger } from 'pino';
import type { Clock } from '../clock.ts';
import type { Sql } from '../db/connection.ts';
import { DOMAIN_EVENT_CHANNEL } from '../timeline/domain-event-store.ts';
import { isDatabaseConnectionError, outageAwareLogger } from '../process-errors.ts';
import { createBackgroundLoop } from '../work/background-loop.ts';
import { createWorkQueue, failureText, LeaseLostError, type QueueSpec } from '../work/work-queue.ts';
import type { DomainEventRow } from './feed-batch.ts';
import { createEngineContext, type EngineConfig } from './engine-context.ts';
import { feedRows } from './fact-feed.ts';
import { advanceDue, advanceDueBatch, DUE_QUEUE, enterScheduled, tick, type TickPace } from './due-runs.ts';

export { DUE_QUEUE } from './due-runs.ts';
export { WEBHOOK_QUEUE } from './run-store.ts';

/** Due runs advanced per transaction (one pg-boss fetch). */
const DUE_BATCH = 50;
/** With due work left behind, the next tick comes this soon (else after ENGINE_TICK_MS). */
const BACKLOG_TICK_MS = 100;
/** Timeline facts fed per transaction (their reads are prefetched set-based, see FeedCache). */
const FEED_BATCH = 250;
/** Feed lanes per instance (each holds one of ENGINE_FEED_QUEUE's partitions at a time). */
const FEED_LANES = 3;

/**
 * The timeline as a work queue (migration 0012): facts are partitioned by contact, so the facts
 * of one contact reach its runs in timeline order and never through two feeders at once (across
 * instances too), while different contacts are fed in parallel. Runs of one contact touched by
 * facts of several lanes (an account's runs, teammates' held sends) are serialized by the
 * per-contact locks every feed transaction takes up front (contact-locks.ts), so lanes cannot
 * deadlock. The feed only writes our tables: asynchronous commit (the argument is in
 * work/work-queue.ts; emails it queues go out after the sender's synchronous commit).
 */
export const ENGINE_FEED_QUEUE: QueueSpec = {
  name: 'engine_feed',
  table: 'domain_events',
  idType: 'bigint',
  order: 'id',
  columns: 'id, name, contact_id, account_id, properties, occurred_at',
  doneColumn: 'engine_processed_at',
  columnNames: { lane: 'engine_lane', attempts: 'engine_attempts', retryAt: 'engine_retry_at', lastError: 'engine_error', deadAt: 'engine_dead_at' },
  partitions: 8,
  // A lease expiry (the holder was killed or hung) costs the facts it held an attempt: ten, as
  // the inboxes, so that repeated crashes of the service do not park facts that are fine.
  maxAttempts: 10,
  backoff: { baseMs: 5_000, maxMs: 15 * 60_000 },
  // The lease only covers the moment between the claim and the batch transaction locking the
  // partition row (a holder inside its transaction keeps the partition however long it takes),
  // so it can be short: after a crash, the partitions the dead process held are free again
  // within 15 s instead of a minute.
  leaseMs: 15_000,
  channel: DOMAIN_EVENT_CHANNEL,
  asyncCommit: true,
};

export interface EngineDeps {
  sql: Sql;
  boss: PgBoss;
  clock: Clock;
  logger: Logger;
  config: EngineConfig;
}

export interface Engine {
  /** Feed pending timeline facts to triggers and runs; returns how many facts were handled. */
  processEvents(): Promise<number>;
  /** Hand due runs to pg-boss (and enter due date-trait triggers); returns how many. */
  tick(): Promise<number>;
  /** Advance one run whose timer is due. */
  advanceDue(runId: number): Promise<boolean>;
  /** Advance a batch of due runs (what the `workflow.due` worker does with a batch of jobs); returns how many moved. */
  advanceDueBatch(runIds: number[]): Promise<number>;
  /** Tests and tools: process facts and due timers directly (no queue) until nothing is left. */
  drain(): Promise<void>;
  start(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * The engine of one process: the functions of fact-feed.ts, run-entry.ts, run-store.ts and
 * due-runs.ts over one context (its own definitions cache), the timeline's work queue, the feed
 * lanes and the tick loop.
 */
export function createEngine(deps: EngineDeps): Engine {
  const { sql, boss, clock, logger, config } = deps;
  const logOutage = outageAwareLogger(logger);
  const ctx = createEngineContext({ boss, clock, logger, config });

  const feedQueue = createWorkQueue({ sql, clock }, ENGINE_FEED_QUEUE);
  const feedOnce = () => feedQueue.runBatch<DomainEventRow>(FEED_BATCH, (tx, events, report) => feedRows(ctx, tx, events, report));

  /** One lane: batches until its partitions have nothing due (or the database is away). */
  async function feedLane(signal?: AbortSignal): Promise<number> {
    let total = 0;
    while (!signal?.aborted) {
      let handled: number;
      try {
        handled = await feedOnce();
      } catch (err) {
        // A lost lease: another lane took the partition over; anything else was charged to the
        // batch's facts by the queue (they come back after their backoff).
        if (err instanceof LeaseLostError) logger.warn({ error: err.message }, 'engine feed lease lost; another lane took the partition over');
        else if (isDatabaseConnectionError(err)) logOutage(err, {}, 'engine feed batch failed');
        else logger.error({ error: failureText(err) }, 'engine feed batch failed');
        return total;
      }
      total += handled;
      if (handled === 0) return total;
    }
    return total;
  }

  async function processEvents(): Promise<number> {
    return feedLane();
  }

  async function drain(): Promise<void> {
    for (let round = 0; round < 1000; round++) {
      const events = await processEvents();
      const entered = await enterScheduled(ctx, sql);
      const due = await sql<{ id: number }[]>`
        select id from workflow_runs where status = 'active' and due_at <= ${clock.now()} order by due_at, id limit 1000`;
      // The same path as the workflow.due worker: batches of runs in one transaction each.
      for (let i = 0; i < due.length; i += DUE_BATCH) await advanceDueBatch(ctx, sql, due.slice(i, i + DUE_BATCH).map((r) => r.id));
      if (events === 0 && entered === 0 && due.length === 0) return;
    }
    throw new Error('engine drain did not settle after 1000 rounds');
  }

  const pace: TickPace = { backlog: false };
  let running = false;
  let timer: NodeJS.Timeout | null = null;
  // FEED_LANES lanes of this instance, each holding one partition of the timeline at a time;
  // NOTIFY on the timeline channel wakes them, a poll is the safety net.
  const feedLoop = createBackgroundLoop({
    name: 'engine-feed',
    sql,
    logger,
    channels: [DOMAIN_EVENT_CHANNEL],
    pollMs: 1000,
    async run(signal) {
      const lanes = await Promise.all(Array.from({ length: FEED_LANES }, () => feedLane(signal)));
      return lanes.reduce((a, b) => a + b, 0);
    },
  });

  return {
    processEvents,
    tick: () => tick(ctx, sql, pace),
    advanceDue: (runId) => advanceDue(ctx, sql, runId),
    advanceDueBatch: (runIds) => advanceDueBatch(ctx, sql, runIds),
    drain,
    async start() {
      running = true;
      // burstWhenBatchFull: after a full batch, fetch the next one at once. Without it pg-boss
      // waits a polling interval (1 s with NOTIFY) after every fetch, so a tick that hands over
      // 1,000 due runs took 50 s to work through them (20 runs/s, the worker nearly idle).
      // Two batches in flight: one computes while the other waits on the database.
      await boss.work<{ runId: number }>(
        DUE_QUEUE,
        { batchSize: DUE_BATCH, localConcurrency: 2, pollingIntervalSeconds: 0.5, notifyPollingIntervalSeconds: 1, burstWhenBatchFull: true },
        async (jobs) => {
          await advanceDueBatch(ctx, sql, jobs.map((job) => job.data.runId));
        },
      );
      await feedLoop.start();
      const loop = () => {
        if (!running) return;
        tick(ctx, sql, pace)
          .catch((err) => logger.error({ error: failureText(err) }, 'engine tick failed'))
          .finally(() => {
            if (running) timer = setTimeout(loop, pace.backlog ? BACKLOG_TICK_MS : config.engineTickMs);
          });
      };
      loop();
    },
    async stop() {
      running = false;
      if (timer) clearTimeout(timer);
      await feedLoop.stop();
    },
  };
}
