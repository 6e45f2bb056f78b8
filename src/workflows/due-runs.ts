// Timers: runs whose due_at has come are handed to the pg-boss queue DUE_QUEUE by the tick and
// advanced in batches by its workers; a run that keeps failing is retried with backoff, then
// parked. Date-trait triggers come due as scheduled entries, entered by the tick as well.
import type { Sql, Tx } from '../db/connection.ts';
import { bossDb } from '../jobs/boss-db.ts';
import { failureText } from '../work/work-queue.ts';
import { scheduledEntryCurrent } from './interpreter.ts';
import { lockContacts } from './contact-locks.ts';
import { isTransient, type RunRow } from './feed-batch.ts';
import { loadContact } from './context-loader.ts';
import { activeWorkflows } from './workflow-store.ts';
import type { EngineContext } from './engine-context.ts';
import { feed } from './fact-feed.ts';
import { enter } from './run-entry.ts';
import type { EventFact } from './types.ts';

export const DUE_QUEUE = 'workflow.due';
/** Due runs one tick hands to pg-boss at most, and at most this many waiting in pg-boss at once. */
const DUE_TICK_LIMIT = 1000;
const MAX_IN_FLIGHT = 2000;
/** Failed advances of one run before it is parked as a dead letter, and the retry backoff. */
const MAX_RUN_FAILURES = 5;
const RUN_RETRY_BASE_MS = 60_000;
const RUN_RETRY_MAX_MS = 60 * 60_000;
/** A handed-over run not advanced after this long (its job was lost) is handed over again. */
const REHAND_AFTER_MS = 5 * 60_000;

/** One due run: a batch of one (a failure is thrown, not retried). */
export async function advanceDue(ctx: EngineContext, sql: Sql, runId: number): Promise<boolean> {
  return (await advanceDueBatch(ctx, sql, [runId])) > 0;
}

/**
 * Advances a batch of due runs in one transaction: a campaign wakes thousands of runs at once,
 * and one transaction per run (a commit and a dozen round trips each) capped it at ~135 runs/s.
 * Runs of different contacts advance concurrently, so postgres.js pipelines their queries
 * (several per network write); runs of one contact go one after another, since the policy
 * (frequency cap) reads what the previous one queued. If any run fails, the transaction is
 * gone for all of them: the batch is redone one run per transaction, so one bad run cannot
 * hold up the others (and is logged; it stays due and the tick hands it over again later).
 */
export async function advanceDueBatch(ctx: EngineContext, sql: Sql, runIds: number[]): Promise<number> {
  const { clock, logger } = ctx;
  try {
    return await sql.begin(async (tx: Tx) => {
      // Contacts first (all at once, in order), then their run rows: see contact-locks.ts.
      const owners = await tx<{ contact_id: number }[]>`select distinct contact_id from workflow_runs where id = any(${runIds}::bigint[])`;
      await lockContacts(tx, owners.map((o) => o.contact_id));
      const runs = await tx<RunRow[]>`
        select id, workflow_key, version, contact_id, account_id, status, state, due_at
        from workflow_runs where id = any(${runIds}::bigint[]) order by id for update`;
      const now = clock.now().getTime();
      const chains = new Map<number, RunRow[]>();
      for (const run of runs) {
        // Stale job (the run moved on, ended, or is not due yet): nothing to do.
        if (run.status !== 'active' || !run.due_at || run.due_at.getTime() > now) continue;
        const chain = chains.get(run.contact_id);
        if (chain) chain.push(run);
        else chains.set(run.contact_id, [run]);
      }
      const outcomes = await Promise.allSettled(
        [...chains.values()].map(async (chain) => {
          for (const run of chain) await feed(ctx, tx, run, { type: 'timer' });
        }),
      );
      const failed = outcomes.find((o): o is PromiseRejectedResult => o.status === 'rejected');
      if (failed) throw failed.reason;
      let advanced = 0;
      for (const chain of chains.values()) advanced += chain.length;
      return advanced;
    });
  } catch (err) {
    if (runIds.length === 1) {
      if (!isTransient(err)) await recordRunFailure(ctx, sql, runIds[0]!, err);
      throw err;
    }
    logger.warn({ runs: runIds.length, error: failureText(err) }, 'a due run failed in a batch: advancing the batch one run at a time');
    let advanced = 0;
    for (const runId of runIds) {
      try {
        if (await advanceDue(ctx, sql, runId)) advanced++;
      } catch (error) {
        logger.error({ runId, error: (error as Error).message }, 'workflow engine could not advance a due run');
      }
    }
    return advanced;
  }
}

/**
 * A due run that failed to advance is retried with backoff (its timer moves later; the wait's
 * own time is kept in its state) and, after MAX_RUN_FAILURES in a row, parked: no timer, listed
 * as a dead letter (deadLetterRuns) until someone replays it. Without the bound, a run that
 * always fails was handed over every five minutes forever.
 */
export async function recordRunFailure(ctx: EngineContext, sql: Sql, runId: number, err: unknown): Promise<void> {
  const { clock, logger } = ctx;
  const message = (err instanceof Error ? err.message : String(err)).slice(0, 500);
  const now = clock.now();
  const [row] = await sql<{ failures: number; dead: boolean }[]>`
    update workflow_runs set
      failures = failures + 1, last_error = ${message}, queued_at = null,
      due_at = case when failures + 1 >= ${MAX_RUN_FAILURES} then null
                    else ${now}::timestamptz + least(${RUN_RETRY_BASE_MS}::bigint * (1::bigint << least(failures, 20)), ${RUN_RETRY_MAX_MS}::bigint) * interval '1 millisecond' end,
      dead_at = case when failures + 1 >= ${MAX_RUN_FAILURES} then ${now}::timestamptz end
    where id = ${runId} and status = 'active'
    returning failures, dead_at is not null as dead`;
  if (row?.dead) logger.error({ runId, failures: row.failures, error: message }, 'workflow run parked as a dead letter after repeated failures');
  else logger.error({ runId, failures: row?.failures, error: message }, 'workflow engine could not advance a due run; will retry');
}

/** Enters the date-trait triggers whose scheduled entries have come due; returns how many entries it handled. */
export async function enterScheduled(ctx: EngineContext, sql: Sql): Promise<number> {
  const { clock, logger } = ctx;
  return sql.begin(async (tx: Tx) => {
    const due = await tx<{ workflow_key: string; contact_id: number; trait_value: string; due_at: Date; account_id: number | null }[]>`
      select workflow_key, contact_id, trait_value, due_at, account_id from scheduled_entries
      where done_at is null and due_at <= ${clock.now()}
      order by due_at limit 500 for update skip locked`;
    if (due.length === 0) return 0;
    await lockContacts(tx, due.map((e) => e.contact_id));
    const live = new Map((await activeWorkflows(tx)).map((w) => [w.definition.key, w]));
    for (const entry of due) {
      const workflow = live.get(entry.workflow_key);
      const contact = await loadContact(tx, entry.contact_id);
      if (workflow && contact && workflow.definition.trigger.type === 'date_trait') {
        const accountId = workflow.definition.trigger.subject === 'account' ? entry.account_id : null;
        const traits = accountId !== null
          ? ((await tx<{ traits: Record<string, unknown> }[]>`select traits from accounts where id = ${accountId}`)[0]?.traits ?? {})
          : contact.traits;
        const current = scheduledEntryCurrent(workflow.definition, traits, { traitValue: entry.trait_value, dueAt: entry.due_at });
        if (!current.current) {
          logger.debug({ workflow: entry.workflow_key, contactId: entry.contact_id, reason: current.explain }, 'scheduled entry is stale; not entered');
        } else {
          const trigger: EventFact = {
            name: `date:${workflow.definition.trigger.trait}`,
            properties: { trait: workflow.definition.trigger.trait, value: entry.trait_value },
            occurredAt: entry.due_at.toISOString(),
          };
          await tx.savepoint((sp) => enter(ctx, sp as Tx, workflow.definition, workflow.version, contact, accountId, trigger, null));
        }
      }
      await tx`update scheduled_entries set done_at = ${clock.now()}
               where workflow_key = ${entry.workflow_key} and contact_id = ${entry.contact_id} and trait_value = ${entry.trait_value}`;
    }
    return due.length;
  });
}

/** What a tick tells the loop that runs it. */
export interface TickPace {
  /** Set by a tick that left due work behind: the loop ticks again soon instead of in a second. */
  backlog: boolean;
}

/** Hands due runs to pg-boss (and enters due date-trait triggers); returns how many. */
export async function tick(ctx: EngineContext, sql: Sql, pace: TickPace): Promise<number> {
  const { boss, clock } = ctx;
  const entered = await enterScheduled(ctx, sql);
  const queued = await sql.begin(async (tx: Tx) => {
    const now = clock.now();
    const lost = new Date(now.getTime() - REHAND_AFTER_MS);
    // Handed over but not advanced yet: keep that bounded, so a campaign that makes 100k runs
    // due at once becomes a steady stream of jobs, not 100k jobs in pg-boss at once (whose
    // fetch slows down on a queue that grew before autovacuum saw it; and jobs still queued
    // after REHAND_AFTER_MS would be handed over twice).
    const [inFlight] = await tx<{ n: number }[]>`
      select count(*)::int as n from workflow_runs
      where status = 'active' and due_at <= ${now} and queued_at >= ${lost}`;
    const limit = Math.max(0, Math.min(DUE_TICK_LIMIT, MAX_IN_FLIGHT - inFlight!.n));
    pace.backlog = limit < DUE_TICK_LIMIT;
    if (limit === 0) return 0;
    // Re-hand a run whose job got lost (e.g. the queue was purged) after REHAND_AFTER_MS.
    const due = await tx<{ id: number; due_at: Date }[]>`
      with due as (
        select id from workflow_runs
        where status = 'active' and due_at <= ${now} and (queued_at is null or queued_at < ${lost})
        order by due_at limit ${limit} for update skip locked)
      update workflow_runs r set queued_at = ${now} from due where r.id = due.id
      returning r.id, r.due_at`;
    if (due.length === limit) pace.backlog = true;
    if (due.length > 0) {
      // In the same transaction: the mark and the jobs commit together.
      await boss.insert(DUE_QUEUE, due.map((r) => ({ data: { runId: r.id, dueAt: r.due_at.toISOString() } })), { db: bossDb(tx) });
    }
    return due.length;
  });
  return entered + queued;
}
