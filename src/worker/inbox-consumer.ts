// Drains the two inboxes (Stripe events, product events) into domain state. The stored row is
// the work item: workers claim batches with FOR UPDATE SKIP LOCKED, so many instances share
// the work without a queue write in the HTTP path. A NOTIFY from the insert wakes a worker at
// once; a slow poll is the safety net for a missed notification.
import type { Logger } from 'pino';
import type { Clock } from '../clock.ts';
import type { Sql, Tx } from '../db/connection.ts';
import { INBOX_CHANNEL, type StripeEnvelope } from '../stripe/event-inbox.ts';
import { projectStripeEvent } from '../stripe/projector.ts';
import { processProductEvent, type ProductEventRow } from '../events/processor.ts';

export interface InboxConsumerOptions {
  batchSize?: number;
  pollIntervalMs?: number;
  /** retry delay after a failed processing attempt, grows linearly with attempts (capped) */
  retryDelayMs?: number;
  maxAttempts?: number;
  /** batches processed in parallel by this instance (rows are partitioned by SKIP LOCKED) */
  concurrency?: number;
}

export interface InboxConsumer {
  /** Process everything currently due; resolves with the number of rows handled. */
  drain(): Promise<number>;
  start(): Promise<void>;
  stop(): Promise<void>;
}

export function createInboxConsumer(deps: { sql: Sql; clock: Clock; logger: Logger }, options: InboxConsumerOptions = {}): InboxConsumer {
  const batchSize = options.batchSize ?? 100;
  const pollIntervalMs = options.pollIntervalMs ?? 1000;
  const retryDelayMs = options.retryDelayMs ?? 5000;
  const maxAttempts = options.maxAttempts ?? 10;
  const concurrency = options.concurrency ?? 4;
  const { sql, clock, logger } = deps;

  let running = false;
  let stopping = false;
  let draining: Promise<number> | null = null;
  let again = false;
  let timer: NodeJS.Timeout | null = null;
  let unlisten: (() => Promise<void>) | null = null;

  const failure = (err: unknown) => (err instanceof Error ? err.message : String(err)).slice(0, 500);
  const retryAt = (attempts: number) => new Date(clock.now().getTime() + retryDelayMs * Math.min(attempts, 12));

  /**
   * One batch of one inbox, in one transaction: claim rows, process each in a savepoint (a
   * failure keeps the row with its error and a retry time), then mark the successes at once.
   */
  async function processBatch<Row extends { id: string | number; attempts: number }>(inbox: {
    table: 'stripe_events' | 'product_events';
    idType: 'text' | 'bigint';
    claim: (tx: Tx) => Promise<Row[]>;
    process: (tx: Tx, row: Row) => Promise<unknown>;
    describe: (row: Row) => Record<string, unknown>;
  }): Promise<number> {
    return sql.begin(async (tx: Tx) => {
      const rows = await inbox.claim(tx);
      const table = tx(inbox.table);
      const done: string[] = [];
      for (const row of rows) {
        try {
          await tx.savepoint((sp) => inbox.process(sp as Tx, row));
          done.push(String(row.id));
        } catch (err) {
          logger.error({ ...inbox.describe(row), table: inbox.table, error: failure(err) }, 'inbox processing failed; will retry');
          await tx`update ${table} set attempts = attempts + 1, last_error = ${failure(err)}, retry_at = ${retryAt(row.attempts + 1)} where id = ${row.id}`;
        }
      }
      // One statement for the whole batch: round trips, not rows, are what this loop pays for.
      if (done.length > 0) {
        await tx`update ${table} set processed_at = ${clock.now()}, attempts = attempts + 1, last_error = null where id = any(${done}::${tx.unsafe(inbox.idType)}[])`;
      }
      return rows.length;
    });
  }

  const stripeBatch = () =>
    processBatch<{ id: string; payload: StripeEnvelope; attempts: number }>({
      table: 'stripe_events',
      idType: 'text',
      claim: (tx) => tx<{ id: string; payload: StripeEnvelope; attempts: number }[]>`
        select id, payload, attempts from stripe_events
        where processed_at is null and attempts < ${maxAttempts}
          and (retry_at is null or retry_at <= ${clock.now()})
        order by created, id
        limit ${batchSize}
        for update skip locked`,
      process: (tx, row) => projectStripeEvent(tx, row.payload, clock.now()),
      describe: (row) => ({ eventId: row.id }),
    });

  const productBatch = () =>
    processBatch<ProductEventRow & { attempts: number }>({
      table: 'product_events',
      idType: 'bigint',
      claim: (tx) => tx<(ProductEventRow & { attempts: number })[]>`
        select id, message_id, kind, user_id, anonymous_id, group_id, event, properties, traits, timestamp, attempts
        from product_events
        where processed_at is null and attempts < ${maxAttempts}
          and (retry_at is null or retry_at <= ${clock.now()})
        order by id
        limit ${batchSize}
        for update skip locked`,
      process: (tx, row) => processProductEvent(tx, row, clock.now()),
      describe: (row) => ({ messageId: row.message_id }),
    });

  async function drainLane(): Promise<number> {
    let total = 0;
    for (;;) {
      const n = (await stripeBatch()) + (await productBatch());
      total += n;
      // On shutdown, finish only the batch in flight: the rest waits safely in the inbox.
      if (n === 0 || stopping) return total;
    }
  }

  // Projection is order-independent, so lanes may work side by side: each claims its own rows
  // (SKIP LOCKED) and the round trips of one overlap the others'.
  async function drainOnce(): Promise<number> {
    const lanes = await Promise.all(Array.from({ length: concurrency }, () => drainLane()));
    return lanes.reduce((a, b) => a + b, 0);
  }

  // One drain at a time per instance; a wake-up during a drain schedules one more pass.
  function drain(): Promise<number> {
    if (draining) {
      again = true;
      return draining;
    }
    draining = (async () => {
      let total = 0;
      try {
        do {
          again = false;
          total += await drainOnce();
        } while (again && running);
      } finally {
        draining = null;
      }
      return total;
    })();
    return draining;
  }

  const wake = () => {
    drain().catch((err) => logger.error({ error: failure(err) }, 'inbox drain failed'));
  };

  return {
    drain,
    async start() {
      running = true;
      const listener = await sql.listen(INBOX_CHANNEL, wake);
      unlisten = listener.unlisten;
      const tick = () => {
        if (!running) return;
        wake();
        timer = setTimeout(tick, pollIntervalMs);
      };
      tick();
    },
    async stop() {
      running = false;
      stopping = true;
      if (timer) clearTimeout(timer);
      if (unlisten) await unlisten().catch(() => {});
      // Finish the batch in flight: its rows are committed or rolled back, never half-done.
      if (draining) await draining.catch(() => {});
    },
  };
}
