// The engine's dead letters: due runs parked after repeated failures (workflow_runs.dead_at) and
// timeline facts it could not apply (domain_events.engine_dead_at). Listed for operators and
// replayable: a replayed run is due at once with a clean failure count; a replayed fact is fed to
// the engine again (entries are keyed, so a fact that did start a run cannot start a second one).
import type { Queryable } from '../db/connection.ts';
import { DOMAIN_EVENT_CHANNEL } from '../timeline/domain-event-store.ts';

export interface DeadRun {
  id: number;
  workflowKey: string;
  contactId: number;
  failures: number;
  lastError: string | null;
  deadAt: Date;
}

export interface DeadFact {
  id: number;
  name: string;
  contactId: number | null;
  error: string | null;
  attempts: number;
  deadAt: Date;
}

export async function listDeadRuns(db: Queryable, limit = 100): Promise<DeadRun[]> {
  return [...await db<DeadRun[]>`
    select id, workflow_key as "workflowKey", contact_id as "contactId", failures, last_error as "lastError", dead_at as "deadAt"
    from workflow_runs where dead_at is not null order by dead_at, id limit ${limit}`];
}

export async function replayDeadRuns(db: Queryable, ids: number[], now: Date): Promise<number> {
  const rows = await db`
    update workflow_runs set dead_at = null, failures = 0, last_error = null, due_at = ${now}, queued_at = null
    where id = any(${ids}::bigint[]) and dead_at is not null and status = 'active'
    returning id`;
  return rows.length;
}

export async function listDeadFacts(db: Queryable, limit = 100): Promise<DeadFact[]> {
  return [...await db<DeadFact[]>`
    select id, name, contact_id as "contactId", engine_error as error, engine_attempts as attempts, engine_dead_at as "deadAt"
    from domain_events where engine_dead_at is not null order by engine_dead_at, id limit ${limit}`];
}

export async function replayDeadFacts(db: Queryable, ids: number[]): Promise<number> {
  const rows = await db`
    update domain_events set engine_processed_at = null, engine_error = null, engine_dead_at = null, engine_attempts = 0, engine_retry_at = null
    where id = any(${ids}::bigint[]) and engine_dead_at is not null
    returning id`;
  if (rows.length > 0) await db`select pg_notify(${DOMAIN_EVENT_CHANNEL}, '')`;
  return rows.length;
}
