// One work mechanism for every queue of work we own (the Stripe and product inboxes first).
//
// The stored row is the work item (no job row in the ingest path). Each item carries a
// partition number ("lane"), computed by PostgreSQL at insert from the item's ordering key (a
// generated column: user id, Stripe customer id, …), so the ingest INSERT stays one statement.
//
// Partitions, not items, are leased: one row per (queue, partition) in `work_partitions`. A
// claim takes a free or expired partition that has due items (FOR UPDATE SKIP LOCKED, so many
// lanes and instances share the work), stamps it with a new fencing token from a sequence and a
// lease time, and records which items it took. The holder then works the items in a transaction
// that first locks the partition row again *only if the token is still its own* (`hold`):
//   - items of one key are worked in order, never by two lanes at once (across instances too);
//   - a holder paused past its lease finds its token replaced and cannot complete anything: its
//     transaction aborts, the items are done once, by the new holder;
//   - while a holder's transaction runs, the partition row is locked, so no one can take it over.
// Completion, failure bookkeeping and the release commit together with the work itself.
//
// Failures: attempts + 1, last_error, retry_at with exponential backoff (or when the peer said to
// come back: a handler's retryAfterMs, e.g. HTTP 429 Retry-After); at maxAttempts the item
// is parked (dead_at) and listed by GET /v1/admin/dead-letters until replayed. A lease that
// expired (holder crashed or hung) counts as a failed attempt for the items it had taken, so an
// item that kills its worker still ends in the dead letter instead of looping.
import type { Clock } from '../clock.ts';
import type { Queryable, Sql, Tx } from '../db/connection.ts';

export interface QueueSpec {
  /** queue name: the key in work_partitions and in the dead-letter API */
  name: string;
  /** item table: needs lane, attempts, retry_at, last_error, dead_at (or the `columnNames` given) and the done column */
  table: string;
  /**
   * Other names for the bookkeeping columns, for a table whose own columns already use these
   * names or that is more than a queue (the timeline: domain_events.engine_*).
   */
  columnNames?: { lane?: string; attempts?: string; retryAt?: string; lastError?: string; deadAt?: string };
  idType: 'text' | 'bigint';
  /** order of items within a partition (SQL, e.g. 'created, id') */
  order: string;
  /** columns the handler gets (SQL list) */
  columns: string;
  /** timestamp column set when an item is done */
  doneColumn: string;
  /** number of partitions; must match the lane column's range (0 … partitions-1) */
  partitions: number;
  maxAttempts: number;
  /** retry delay after the n-th failure: min(maxMs, baseMs · 2^(n-1)) */
  backoff: { baseMs: number; maxMs: number };
  /** how long a claim is exclusive without being held by a transaction */
  leaseMs: number;
  /** NOTIFY channel woken after a replay, if any */
  channel?: string;
  /** ANALYZE the item table after this many items (default 10,000; 0: never) */
  analyzeEvery?: number;
  /**
   * Commit batch transactions without waiting for the WAL flush (synchronous_commit = off),
   * for queues whose work has no effect outside the database (the argument follows).
   */
  asyncCommit?: boolean;
}

/**
 * Why work with no outside effect may commit asynchronously. An asynchronous commit is atomic
 * and visible at once; a PostgreSQL crash may lose the last ~0.6 s of such commits (never part
 * of one), which puts the items back in the queue as they were: they are worked again, and
 * working them is idempotent (dedupe keys, upserts). Nothing outside the database can have seen
 * a lost commit: every effect outside it (an email, a Stripe call, a webhook) is made by a worker
 * that first commits a claim or a batch synchronously, and a synchronous commit flushes the WAL
 * up to itself, so every commit it could have read (an earlier LSN) is durable before the effect.
 * The ingest path (acknowledging what Stripe and product backends send us) stays synchronous.
 */

export interface Lease {
  queue: string;
  partition: number;
  /** fencing token: only the holder of this token may complete the items */
  token: number;
  ids: string[];
  until: Date;
}

export interface DeadLetter {
  queue: string;
  id: string;
  attempts: number;
  last_error: string | null;
  dead_at: Date;
}

/** The partition was reclaimed by someone else: the holder must not touch its items. */
export class LeaseLostError extends Error {
  constructor(lease: Lease) {
    super(`lease on ${lease.queue}#${lease.partition} (token ${lease.token}) was lost`);
    this.name = 'LeaseLostError';
  }
}

export interface BatchReport {
  /**
   * mark one item failed (it is retried with backoff, or parked once out of attempts);
   * `retryAfterMs`: the peer said when to come back (HTTP Retry-After) — used instead of the backoff
   */
  fail(id: string | number, error: unknown, retryAfterMs?: number): void;
}

export interface RunBatchOptions {
  /**
   * Idempotent set-up outside the batch transaction, after the claim (e.g. creating shared rows
   * such as accounts with autocommit statements): rows every lane may need are then committed
   * at once instead of being held, uncommitted, by one lane's long transaction while the
   * others wait on them.
   */
  beforeTransaction?: (ids: string[]) => Promise<void>;
}

export interface WorkQueue {
  readonly spec: QueueSpec;
  /** Create the partition rows of this queue (idempotent; migrations seed the inboxes'). */
  ensurePartitions(): Promise<void>;
  /** Lease one partition with due items and take up to `limit` of them; null when none is free. */
  claim(limit: number): Promise<Lease | null>;
  /** In the worker's transaction: lock the partition iff the lease is still ours; else throws LeaseLostError. */
  hold(tx: Tx, lease: Lease): Promise<void>;
  /** Push the lease end out (long work outside a transaction); false if the lease was lost. */
  extend(lease: Lease): Promise<boolean>;
  /** After hold(), in the same transaction: mark done, record failures, free the partition. */
  finish(tx: Tx, lease: Lease, done: string[], failures: { id: string; error: string; retryAfterMs?: number | null }[]): Promise<void>;
  /** Free the partition without completing (e.g. the handler gave up); fenced. */
  release(lease: Lease): Promise<void>;
  /**
   * The whole cycle: claim, then in one transaction hold, fetch the items (`columns`, in order,
   * still pending), run `handler`, finish. Returns the number of items taken (0: nothing due).
   */
  runBatch<Row extends object>(limit: number, handler: (tx: Tx, rows: Row[], report: BatchReport) => Promise<void>, options?: RunBatchOptions): Promise<number>;
  /** Dead letters, newest first. */
  dead(limit: number): Promise<DeadLetter[]>;
  /** Re-queue dead items (fresh attempts); returns the ids that were dead. */
  replay(ids: string[]): Promise<string[]>;
}

export const failureText = (err: unknown): string => (err instanceof Error ? err.message : String(err)).slice(0, 500);

export function createWorkQueue(deps: { sql: Sql; clock: Clock }, spec: QueueSpec): WorkQueue {
  const { sql, clock } = deps;
  const table = sql(spec.table);
  const done = sql(spec.doneColumn);
  const idType = sql.unsafe(spec.idType);
  const order = sql.unsafe(spec.order);
  const columns = sql.unsafe(spec.columns);
  // Bookkeeping column names: code constants (QueueSpec), quoted as identifiers.
  const quoted = (name: string) => `"${name.replaceAll('"', '""')}"`;
  const ident = (name: string) => sql.unsafe(quoted(name));
  const names = spec.columnNames ?? {};
  const lane = ident(names.lane ?? 'lane');
  const attemptsName = quoted(names.attempts ?? 'attempts');
  const attempts = sql.unsafe(attemptsName);
  const retryAtCol = ident(names.retryAt ?? 'retry_at');
  const lastError = ident(names.lastError ?? 'last_error');
  const deadAt = ident(names.deadAt ?? 'dead_at');
  const pending = (now: Date) => sql`${done} is null and ${deadAt} is null and (${retryAtCol} is null or ${retryAtCol} <= ${now})`;
  /** SQL for the retry time after the attempt that makes `attempts` (the new count) */
  const retryAt = (db: Queryable, now: Date, attempts: ReturnType<Queryable['unsafe']>) =>
    db`${now}::timestamptz + make_interval(secs => least(${spec.backoff.maxMs}::float8, ${spec.backoff.baseMs}::float8 * power(2, greatest(${attempts} - 1, 0))) / 1000.0)`;

  async function chargeExpired(oldIds: string[], now: Date): Promise<void> {
    // The previous holder never finished: its items used up an attempt (no backoff: the lease
    // time was the wait), and the last allowed one parks them.
    await sql`
      update ${table} set ${attempts} = ${attempts} + 1,
        ${lastError} = 'lease expired: the worker holding this item stopped or hung',
        ${deadAt} = case when ${attempts} + 1 >= ${spec.maxAttempts} then ${now}::timestamptz end
      where id = any(${oldIds}::${idType}[]) and ${done} is null and ${deadAt} is null`;
  }

  // Which partitions have due items: one probe per partition with the partition number as a
  // literal, so every probe is an index lookup on (lane, …) whatever the statistics say. (A join
  // on the lane let the planner, with statistics from when the table was small, scan the whole
  // index once per partition: 50 ms per claim instead of < 1 ms.)
  // The probe asks for the lane's first item in the due index's order (a scalar subquery keeps
  // ORDER BY … LIMIT 1, which EXISTS would drop): with `exists`, statistics that said "many
  // pending items" led the planner to seq-scan for one, through every item already done at the
  // head of the table (60–90 ms per claim 10,000 items into a burst).
  const probes = (now: Date) =>
    Array.from({ length: spec.partitions }, (_, p) => sql`select ${sql.unsafe(String(p))}::int as partition where (select e.id from ${table} e where e.${lane} = ${sql.unsafe(String(p))} and ${pending(now)} order by e.${lane}, ${order} limit 1) is not null`)
      .reduce((all, probe) => sql`${all} union all ${probe}`);

  // Leases this process could not give back because the database went away mid-claim or
  // mid-batch (neither the batch nor its failure bookkeeping could commit). Without this, their partitions stayed
  // leased until the lease ran out after the database came back (measured in the db-outage
  // chaos suite: a 60 s stall for the inbox and engine-feed partitions that were in flight).
  // Released, fenced by token, before the next claim; nothing is charged to their items (the
  // database, not the items, failed).
  const stranded: Lease[] = [];
  async function releaseStranded(): Promise<void> {
    while (stranded.length > 0) {
      const lease = stranded[0]!;
      try {
        await release(lease);
      } catch {
        return; // still away: try again before the next claim
      }
      stranded.shift();
    }
  }

  async function claim(limit: number): Promise<Lease | null> {
    const now = clock.now();
    const until = new Date(now.getTime() + spec.leaseMs);
    // 1. Lease the least recently served free partition with due work (row locked with SKIP
    //    LOCKED while stamping it, so two lanes never take the same one), with a new token.
    const [row] = await sql<{ partition: number; token: number; old_until: Date | null; old_claimed: string[] | null }[]>`
      with due as (${probes(now)}), p as (
        select w.partition, w.lease_until as old_until, w.claimed as old_claimed from work_partitions w join due using (partition)
        where w.queue = ${spec.name} and (w.lease_until is null or w.lease_until <= ${now})
        order by w.served_at nulls first, w.partition
        limit 1
        for update of w skip locked
      )
      update work_partitions w set token = nextval('work_lease_token'), lease_until = ${until}, served_at = ${now}, claimed = '{}'
      from p where w.queue = ${spec.name} and w.partition = p.partition
      returning w.partition, w.token, p.old_until, p.old_claimed`;
    if (!row) return null;
    if (row.old_until && row.old_claimed && row.old_claimed.length > 0) await chargeExpired(row.old_claimed, now);
    // 2. Its first due items, in order, remembered with the lease (an expired lease charges them).
    //    If this fails (the database went away between the two statements), the partition is
    //    ours with nothing taken yet: given back before the next claim.
    const leased: Lease = { queue: spec.name, partition: row.partition, token: row.token, ids: [], until };
    const [taken] = await sql<{ claimed: string[] | null }[]>`
      update work_partitions set claimed = (
        select coalesce(array_agg(item::text), '{}') from (
          select e.id as item from ${table} e where e.${lane} = ${row.partition} and ${pending(now)}
          order by ${order} limit ${limit}) i)
      where queue = ${spec.name} and partition = ${row.partition} and token = ${row.token}
      returning claimed`.catch((err: unknown) => {
      stranded.push(leased);
      throw err;
    });
    return { ...leased, ids: taken?.claimed ?? [] };
  }

  async function hold(tx: Tx, lease: Lease): Promise<void> {
    const rows = await tx`
      select 1 from work_partitions where queue = ${spec.name} and partition = ${lease.partition} and token = ${lease.token}
      for update`;
    if (rows.length === 0) throw new LeaseLostError(lease);
  }

  async function finish(tx: Tx, lease: Lease, ok: string[], failures: { id: string; error: string; retryAfterMs?: number | null }[]): Promise<void> {
    const now = clock.now();
    if (ok.length > 0) {
      await tx`update ${table} set ${done} = ${now}, ${attempts} = ${attempts} + 1, ${lastError} = null, ${retryAtCol} = null
               where id = any(${ok}::${idType}[]) and ${done} is null`;
    }
    if (failures.length > 0) {
      const next = tx.unsafe(`${attemptsName} + 1`);
      await tx`
        update ${table} t set ${attempts} = t.${attempts} + 1, ${lastError} = f.error,
          ${deadAt} = case when t.${attempts} + 1 >= ${spec.maxAttempts} then ${now}::timestamptz end,
          ${retryAtCol} = coalesce(${now}::timestamptz + make_interval(secs => f.retry_ms / 1000.0), ${retryAt(tx, now, next)})
        from unnest(${failures.map((f) => f.id)}::text[], ${failures.map((f) => f.error)}::text[],
                    ${failures.map((f) => (f.retryAfterMs === undefined || f.retryAfterMs === null ? null : Math.max(0, Math.round(f.retryAfterMs))))}::float8[]) as f(id, error, retry_ms)
        where t.id = f.id::${idType} and t.${done} is null`;
    }
    await tx`update work_partitions set lease_until = null, claimed = null
             where queue = ${spec.name} and partition = ${lease.partition} and token = ${lease.token}`;
  }

  async function release(lease: Lease): Promise<void> {
    await sql`update work_partitions set lease_until = null, claimed = null
              where queue = ${spec.name} and partition = ${lease.partition} and token = ${lease.token}`;
  }

  // A queue that grows by tens of thousands of rows within autovacuum's naptime keeps the
  // statistics of when it was small, and the planner then scans instead of seeking (see the
  // engineering notes): the worker analyzes its table itself every `analyzeEvery` items.
  // Only the columns the claim's plans depend on: ANALYZE of the whole table also built
  // statistics of its jsonb payloads, detoasting a 30,000-row sample (0.3–0.5 s of PostgreSQL
  // CPU per run on the product inbox, ~15 % of its database time in a 20,000-event burst);
  // the row count (reltuples) is refreshed either way.
  const analyzeColumns = [names.lane ?? 'lane', spec.doneColumn, names.retryAt ?? 'retry_at', names.deadAt ?? 'dead_at', ...(/^\w+$/.test(spec.order) ? [spec.order] : [])]
    .map(quoted)
    .join(', ');
  let sinceAnalyze = 0;
  let analyzing = false;
  function countForAnalyze(n: number): void {
    const every = spec.analyzeEvery ?? 10_000;
    sinceAnalyze += n;
    if (every <= 0 || sinceAnalyze < every || analyzing) return;
    sinceAnalyze = 0;
    analyzing = true;
    sql.unsafe(`analyze ${quoted(spec.table)} (${analyzeColumns})`).catch(() => {}).finally(() => {
      analyzing = false;
    });
  }

  async function runBatch<Row extends object>(limit: number, handler: (tx: Tx, rows: Row[], report: BatchReport) => Promise<void>, options: RunBatchOptions = {}): Promise<number> {
    await releaseStranded();
    const lease = await claim(limit);
    if (!lease) return 0;
    if (lease.ids.length === 0) {
      await release(lease);
      return 0;
    }
    try {
      await options.beforeTransaction?.(lease.ids);
      await sql.begin(async (tx: Tx) => {
        if (spec.asyncCommit) await tx`set local synchronous_commit = off`;
        await hold(tx, lease);
        // Fetched by primary key, then filtered: written as one WHERE, the planner prefers the
        // partial due index (its predicate matches) and scans every pending item of the lane
        // for the 100 it wants — 10–20 ms per batch once the backlog is 20,000 deep.
        const rows = await tx<Row[]>`
          with leased as materialized (select * from ${table} where id = any(${lease.ids}::${idType}[]))
          select ${columns} from leased
          where ${done} is null and ${deadAt} is null
          order by ${order}`;
        const failed = new Map<string, { error: string; retryAfterMs: number | null }>();
        await handler(tx, [...rows], { fail: (id, error, retryAfterMs) => failed.set(String(id), { error: failureText(error), retryAfterMs: retryAfterMs ?? null }) });
        const ok = rows.map((r: Row) => String((r as { id?: unknown }).id)).filter((id: string) => !failed.has(id));
        await finish(tx, lease, ok, [...failed].map(([id, f]) => ({ id, ...f })));
      });
    } catch (err) {
      if (err instanceof LeaseLostError) throw err;
      // The batch transaction failed as a whole (connection lost, the handler threw): every
      // item used an attempt. Fenced: if the lease is gone, the new holder owns the items.
      try {
        await sql.begin(async (tx: Tx) => {
          await hold(tx, lease);
          await finish(tx, lease, [], lease.ids.map((id) => ({ id, error: failureText(err) })));
        });
      } catch (bookkeeping) {
        if (!(bookkeeping instanceof LeaseLostError)) stranded.push(lease);
      }
      throw err;
    }
    countForAnalyze(lease.ids.length);
    return lease.ids.length;
  }

  return {
    spec,
    async ensurePartitions() {
      await sql`insert into work_partitions (queue, partition)
                select ${spec.name}, p from generate_series(0, ${spec.partitions - 1}::int) p on conflict do nothing`;
    },
    claim,
    hold,
    async extend(lease) {
      const until = new Date(clock.now().getTime() + spec.leaseMs);
      const rows = await sql`update work_partitions set lease_until = ${until}
                             where queue = ${spec.name} and partition = ${lease.partition} and token = ${lease.token} returning 1`;
      if (rows.length > 0) lease.until = until;
      return rows.length > 0;
    },
    finish,
    release,
    runBatch,
    async dead(limit) {
      return sql<DeadLetter[]>`
        select ${spec.name} as queue, id::text as id, ${attempts} as attempts, ${lastError} as last_error, ${deadAt} as dead_at from ${table}
        where ${deadAt} is not null order by ${deadAt} desc, id limit ${limit}`;
    },
    async replay(ids) {
      if (ids.length === 0) return [];
      const rows = await sql<{ id: string }[]>`
        update ${table} set ${deadAt} = null, ${attempts} = 0, ${retryAtCol} = null
        where id::text = any(${ids}::text[]) and ${deadAt} is not null and ${done} is null
        returning id::text as id`;
      if (rows.length > 0 && spec.channel) await sql`select pg_notify(${spec.channel}, '')`;
      return rows.map((r) => r.id);
    },
  };
}

/** Run a queue's batches until one finds nothing due (bounded: tests and tools call this). */
export async function drainBatches(runOnce: () => Promise<number>, maxBatches = 1000): Promise<number> {
  let total = 0;
  for (let i = 0; i < maxBatches; i++) {
    const n = await runOnce();
    if (n === 0) return total;
    total += n;
  }
  return total;
}
