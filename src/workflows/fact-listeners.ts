// Which fact names any workflow can react to, so the product inbox can record the others (most
// product events: page views, feature use) as already consumed: the engine never claims, locks,
// reads or marks them. Measured in the events pipeline: the engine feed was a second pass over
// every tracked event (claim, contact locks, a run lookup, a non-HOT update of the fact's row),
// costing as much PostgreSQL time as the inbox that recorded it (BENCHMARKS.md, issue 10).
//
// Why a skipped fact can never be one a run needed (the argument; test/fact-listeners.test.ts):
//  1. The set is the union over *every stored version* of every workflow (paused ones and old
//     versions with runs still on them included), so a run of any version hears every name it
//     can wait for; a goal written as a condition (any fact may reach it) makes the set 'all'.
//  2. Versions are append-only, so the set only grows, and it grows only when a version is
//     inserted. A trigger on workflow_versions (migration 0017) takes FACT_LISTENERS_LOCK
//     exclusively for the inserting transaction; the inbox takes it shared in each batch
//     transaction before it reads the set (`current`) and holds it until its facts commit. So a
//     batch records its facts entirely before or entirely after a publish: never skipped under
//     a set older than a version that committed before those facts did.
//  3. A new version can still need facts recorded (and skipped) before it was published: facts
//     the engine had not yet reached when it was published would, without skipping, have been
//     fed to it. The publishing transaction puts those back in the engine's queue
//     (requeueSkippedFacts): the skipped facts of the names the new version hears that come
//     after the oldest fact still pending in their lane. Facts of a lane the engine had fully
//     worked were fed to the old versions only, with or without skipping.
//  The one boundary this moves: a skipped fact whose lane had nothing else pending counts as
//  worked, although without skipping it would itself have been pending for the few
//  milliseconds until the engine took it. So a fact recorded before a version was published
//  starts or advances that version's runs only if its lane still had earlier facts to work
//  through — before, that depended on the engine's lag alone. Facts recorded after the publish
//  are never skipped for the names it hears (the lock, point 2).
// Stripe facts are not skipped: the built-in billing recovery hears nearly all of them.
import type { Queryable, Tx } from '../db/connection.ts';
import { entryEventNames, HOLD_RELEASES, runEventNames } from './interpreter.ts';
import type { WorkflowDefinition } from './types.ts';

/** Advisory lock (one bigint key) between publishing a version and recording product facts. */
export const FACT_LISTENERS_LOCK = 0x11fe1f;

export type ListenedNames = ReadonlySet<string> | 'all';

/** Every fact name a version can react to: trigger, waits, goal and exits, hold releases. */
export function namesHeardBy(definition: WorkflowDefinition): string[] | 'all' {
  const run = runEventNames(definition);
  if (run === 'all') return 'all';
  return [...new Set([...run, ...entryEventNames(definition)])];
}

/**
 * The names any of `definitions` hears, plus what the engine reacts to whatever is published:
 * identify and group (segment and date-trait triggers re-evaluate on them) and the facts that
 * release holds (the engine re-checks the held sends of the account's other members).
 */
export function listenedFactNames(definitions: readonly WorkflowDefinition[]): ListenedNames {
  const names = new Set<string>(['identify', 'group', ...Object.values(HOLD_RELEASES).flat()]);
  for (const definition of definitions) {
    const heard = namesHeardBy(definition);
    if (heard === 'all') return 'all';
    for (const name of heard) names.add(name);
  }
  return names;
}

/**
 * Whether the engine may skip a fact: it has no contact (the engine ignores those) or no one
 * hears it. Without a set (Stripe facts, pre-dunning) nothing is skipped.
 */
export function skippable(listened: ListenedNames | undefined, name: string, contactId: number | null): boolean {
  if (listened === undefined) return false;
  if (contactId === null) return true;
  return listened !== 'all' && !listened.has(name);
}

export interface FactListeners {
  /**
   * The names heard now, in a batch transaction that will record facts: takes the shared lock
   * (held until `tx` ends) and re-reads the definitions only when a version was added.
   */
  current(tx: Tx): Promise<ListenedNames>;
}

/** One per process: the last computed set, keyed by how many versions are stored. */
export function factListeners(): FactListeners {
  let cached: { versions: number; names: ListenedNames } | null = null;
  return {
    async current(tx) {
      // Two statements, pipelined (one round trip): a statement reads the snapshot taken when
      // it began, so a count in the locking statement itself could predate a version that
      // committed while it waited for the lock.
      const [, [row]] = await Promise.all([
        tx`select pg_advisory_xact_lock_shared(${FACT_LISTENERS_LOCK})`,
        tx<{ versions: number }[]>`select count(*)::int as versions from workflow_versions`,
      ]);
      if (cached?.versions !== row!.versions) {
        const rows = await tx<{ definition: WorkflowDefinition }[]>`select definition from workflow_versions`;
        cached = { versions: rows.length, names: listenedFactNames(rows.map((r) => r.definition)) };
      }
      return cached.names;
    },
  };
}

/**
 * Puts back in the engine's queue the skipped facts `definition` hears that the engine has not
 * reached yet (after the oldest pending fact of their lane), as if they had never been skipped.
 * Call in the transaction that inserts the version (which holds FACT_LISTENERS_LOCK).
 */
export async function requeueSkippedFacts(db: Queryable, definition: WorkflowDefinition): Promise<number> {
  const heard = namesHeardBy(definition);
  const result = await db`
    with floor as (
      select engine_lane as lane, min(id) as first_pending from domain_events
      where engine_processed_at is null and engine_dead_at is null
      group by engine_lane)
    update domain_events d set engine_processed_at = null, engine_skipped = false
    from floor
    where d.engine_skipped and d.engine_lane = floor.lane and d.id > floor.first_pending
      and d.contact_id is not null
      and (${heard === 'all'} or d.name = any(${heard === 'all' ? [] : heard}::text[]))`;
  return result.count;
}
