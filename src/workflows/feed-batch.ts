// One feed batch of the workflow engine, the parts that only read or book-keep: which facts
// matter, which contacts a batch must lock, the set-based prefetch of runs and contexts
// (FeedCache), groups of unrelated facts that can be fed concurrently, and the batch's trace
// write. Plain functions over a transaction; the engine (fact-feed.ts, run-entry.ts,
// run-store.ts) owns the decisions' effects.
import type { Queryable, Tx } from '../db/connection.ts';
import { emptyPrefetch, forgetContact, prefetchContexts, type ContextPrefetch } from './context-loader.ts';
import { entryEventNames, entryGuardEventNames, HOLD_RELEASES, runEventNames } from './interpreter.ts';
import type { EventFact, RunState, TraceEntry, WorkflowDefinition } from './types.ts';

/** A workflow version by key and version (the engine caches them: versions never change). */
export type DefinitionLookup = (db: Queryable, key: string, version: number) => Promise<WorkflowDefinition | null>;

export interface RunRow {
  id: number;
  workflow_key: string;
  version: number;
  contact_id: number;
  account_id: number | null;
  status: string;
  state: RunState;
  due_at: Date | null;
}

export interface DomainEventRow {
  id: number;
  name: string;
  contact_id: number | null;
  account_id: number | null;
  properties: Record<string, unknown>;
  occurred_at: Date;
}

export interface ExistingRunRow {
  workflow_key: string;
  contact_id: number;
  account_id: number | null;
  key: string;
  status: RunState['status'];
  startedAt: string;
  triggerAt: string;
  withdrawn: boolean;
}

/**
 * Reads for a batch of timeline facts, made with a few set-based queries up front (see
 * ContextPrefetch). A contact's or account's entries are dropped as soon as the engine writes
 * about it (`touched`), so a later fact of the same contact in the batch reads the database and
 * sees the runs and messages the earlier one made.
 */
export interface FeedCache {
  context: ContextPrefetch;
  /** active runs (locked FOR UPDATE when prefetched) */
  activeByContact: Map<number, RunRow[]>;
  activeByAccount: Map<number, RunRow[]>;
  /** every run, any status, for entry rules */
  runsByContact: Map<number, ExistingRunRow[]>;
  runsByAccount: Map<number, ExistingRunRow[]>;
  /** recorded facts the live definitions' goals and exits listen to (written by the inbox only) */
  guardFacts: Map<number, DomainEventRow[]>;
  guardNames: Set<string>;
  /** decision traces of the batch, written in one statement at its end (nothing reads them before) */
  trace: { runId: number; entry: TraceEntry }[];
}

/**
 * The columns of an ExistingRun (interpreter.ts) as the entry rules read them: the trigger's time
 * from the run's state (every run and recorded entry keeps its trigger there), the start time as
 * a fallback, and whether the run was withdrawn.
 */
export const existingRunColumns = (tx: Tx) => tx`
  run_key as key, status,
  to_char(started_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') as "startedAt",
  coalesce(state->'vars'->'trigger'->>'occurredAt', to_char(started_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')) as "triggerAt",
  (state ? 'withdrawnBy') as withdrawn`;

export function touched(cache: FeedCache | undefined, contactId: number, accountId: number | null): void {
  if (!cache) return;
  forgetContact(cache.context, contactId);
  cache.activeByContact.delete(Number(contactId));
  cache.runsByContact.delete(Number(contactId));
  if (accountId !== null) {
    cache.activeByAccount.delete(Number(accountId));
    cache.runsByAccount.delete(Number(accountId));
  }
}

export const toFact = (row: DomainEventRow): EventFact => ({
  id: String(row.id),
  name: row.name,
  properties: row.properties,
  occurredAt: row.occurred_at.toISOString(),
});

/** fact name → the hold reasons it ends (HOLD_RELEASES inverted) */
export const RELEASING = new Map<string, string[]>();
for (const [reason, names] of Object.entries(HOLD_RELEASES)) {
  for (const name of names) RELEASING.set(name, [...(RELEASING.get(name) ?? []), reason]);
}

/**
 * The contacts whose runs a batch of facts may touch, to lock up front (contact-locks.ts): the
 * facts' contacts, the contacts of active account-level runs of their accounts, and, for facts
 * that release holds, every member of the accounts involved.
 */
export async function contactsTouchedBy(tx: Tx, events: DomainEventRow[]): Promise<number[]> {
  const contactIds = events.flatMap((e) => (e.contact_id === null ? [] : [e.contact_id]));
  const accountIds = events.flatMap((e) => (e.account_id === null ? [] : [e.account_id]));
  const releasing = events.filter((e) => e.contact_id !== null && RELEASING.has(e.name));
  const rows = await tx<{ id: number }[]>`
    select distinct id from (
      select unnest(${contactIds}::bigint[]) as id
      union
      select contact_id from workflow_runs where status = 'active' and account_id = any(${accountIds}::bigint[])
      union
      select contact_id from account_members
      where account_id = any(${releasing.flatMap((e) => (e.account_id === null ? [] : [e.account_id]))}::bigint[])
         or account_id in (select account_id from account_members where contact_id = any(${releasing.map((e) => e.contact_id!)}::bigint[]))
    ) as touched where id is not null`;
  return rows.map((r) => Number(r.id));
}

/**
 * The recorded goal and exit facts (`names`, from `from` on, before `to` when given) that a run
 * hears: its contact's, and for an account-level run (`accountId`) every member's facts about
 * its account, as handleEvent feeds them. A Stripe fact is about an account when the projection
 * attributed it there, or when it is about the account's Stripe customer (the account's own, or
 * the customer whose contact's first account it is): the projection attributes a fact to the
 * account linked when it is recorded, and a link delivered after the fact (a group call that
 * happened before it) would otherwise hide from a run entered on that link a goal that came
 * after its trigger. Contact-level look-ups come from the batch's cache when it holds them.
 */
export async function knownGuardFacts(
  tx: Tx,
  cache: FeedCache | undefined,
  names: readonly string[],
  who: { contactId: number; accountId: number | null },
  from: Date,
  to: Date | null = null,
): Promise<EventFact[]> {
  if (names.length === 0) return [];
  if (who.accountId === null && cache && names.every((n) => cache.guardNames.has(n))) {
    return (cache.guardFacts.get(who.contactId) ?? [])
      .filter((f) => names.includes(f.name) && f.occurred_at.getTime() >= from.getTime() && (to === null || f.occurred_at.getTime() < to.getTime()))
      .map(toFact);
  }
  // One index look-up per way a fact can be about the run (contact, account, the account's
  // customers), not one OR over them: an OR with the customer sub-select would scan the timeline.
  const window = (db: Tx) => db`name = any(${[...names]}::text[]) and occurred_at >= ${from} and (${to}::timestamptz is null or occurred_at < ${to})`;
  const columns = 'id, name, contact_id, account_id, properties, occurred_at';
  const rows = who.accountId === null
    ? await tx<DomainEventRow[]>`
        select ${tx.unsafe(columns)} from domain_events where contact_id = ${who.contactId} and ${window(tx)}
        order by occurred_at, id`
    : await tx<DomainEventRow[]>`
        select ${tx.unsafe(columns)} from domain_events where contact_id = ${who.contactId} and ${window(tx)}
        union
        select ${tx.unsafe(columns)} from domain_events where account_id = ${who.accountId} and ${window(tx)}
        union
        select ${tx.unsafe(columns)} from domain_events
        where stripe_customer_id = any(array(
            select a.stripe_customer_id from accounts a where a.id = ${who.accountId} and a.stripe_customer_id is not null
            union select cu.id from account_members am join customers cu on cu.contact_id = am.contact_id
            where am.account_id = ${who.accountId}
              and (select m.account_id from account_members m where m.contact_id = cu.contact_id order by m.joined_at limit 1) = ${who.accountId}))
          and ${window(tx)}
        order by occurred_at, id`;
  return rows.map(toFact);
}

/** The decision traces of a batch, in one statement at its end. */
export async function writeTrace(tx: Tx, rows: { runId: number; entry: TraceEntry }[]): Promise<void> {
  if (rows.length === 0) return;
  await tx`
    insert into run_trace (run_id, at, step_id, kind, detail, data)
    select run_id, at, step_id, kind, detail, data::jsonb
    from unnest(${rows.map((r) => r.runId)}::bigint[], ${rows.map((r) => r.entry.at)}::timestamptz[], ${rows.map((r) => r.entry.stepId)}::text[],
                ${rows.map((r) => r.entry.kind)}::text[], ${rows.map((r) => r.entry.detail)}::text[],
                ${rows.map((r) => (r.entry.data ? JSON.stringify(r.entry.data) : null))}::text[]) with ordinality as t(run_id, at, step_id, kind, detail, data, n)
    order by n`;
}

/**
 * The facts of a batch that can change anything: a live trigger listens to the fact's name
 * (segment and date-trait triggers: identify and group), it releases holds, or an active run
 * of its contact (or an account-level run of its account) waits for that name. The others
 * (most product events: page views, feature use) are only marked consumed, without reading
 * any context for them.
 */
export async function factsThatMatter(tx: Tx, definitionOf: DefinitionLookup, events: DomainEventRow[], live: { definition: WorkflowDefinition }[], active: RunRow[]): Promise<Set<number>> {
  const triggered = new Set<string>(RELEASING.keys());
  // goal and exit facts may re-end a finished run (handleEvent, 1b)
  for (const { definition } of live) for (const name of entryEventNames(definition)) triggered.add(name);
  const listening = new Map<string, Set<string> | 'all'>();
  const listen = (key: string, names: string[] | 'all') => {
    const had = listening.get(key);
    if (had === 'all') return;
    if (names === 'all') listening.set(key, 'all');
    else listening.set(key, new Set([...(had ?? []), ...names]));
  };
  for (const run of active) {
    const def = await definitionOf(tx, run.workflow_key, run.version);
    if (!def) continue;
    const names = runEventNames(def);
    listen(`c${run.contact_id}`, names);
    if (def.audience === 'account_admins' && run.account_id !== null) listen(`a${run.account_id}`, names);
  }
  const hears = (key: string, name: string) => {
    const names = listening.get(key);
    return names !== undefined && (names === 'all' || names.has(name));
  };
  const matter = new Set<number>();
  for (const e of events) {
    if (e.contact_id === null) continue;
    if (triggered.has(e.name) || hears(`c${e.contact_id}`, e.name) || (e.account_id !== null && hears(`a${e.account_id}`, e.name))) matter.add(Number(e.id));
  }
  return matter;
}

/** The reads a batch of facts needs, in three round trips (runs, then contexts), for the facts that matter. */
export async function prefetchFeed(tx: Tx, definitionOf: DefinitionLookup, batch: DomainEventRow[], live: { definition: WorkflowDefinition }[]): Promise<{ cache: FeedCache; matter: Set<number> }> {
  const batchContacts = [...new Set(batch.flatMap((e) => (e.contact_id === null ? [] : [Number(e.contact_id)])))];
  const batchAccounts = [...new Set(batch.flatMap((e) => (e.account_id === null ? [] : [Number(e.account_id)])))];
  const active = await tx<RunRow[]>`
    select id, workflow_key, version, contact_id, account_id, status, state, due_at from workflow_runs
    where status = 'active' and (contact_id = any(${batchContacts}::bigint[]) or account_id = any(${batchAccounts}::bigint[]))
    order by id for update`;
  const matter = await factsThatMatter(tx, definitionOf, batch, live, active);
  const events = batch.filter((e) => matter.has(Number(e.id)));
  const contactIds = [...new Set(events.flatMap((e) => (e.contact_id === null ? [] : [Number(e.contact_id)])))];
  const accountIds = [...new Set(events.flatMap((e) => (e.account_id === null ? [] : [Number(e.account_id)])))];
  const guardNames = new Set(live.flatMap((w) => entryGuardEventNames(w.definition)));
  const [all, facts] = await Promise.all([
    tx<ExistingRunRow[]>`
      select workflow_key, contact_id, account_id, ${existingRunColumns(tx)}
      from workflow_runs where contact_id = any(${contactIds}::bigint[]) or account_id = any(${accountIds}::bigint[])`,
    tx<DomainEventRow[]>`
      select id, name, contact_id, account_id, properties, occurred_at from domain_events
      where contact_id = any(${contactIds}::bigint[]) and name = any(${[...guardNames]}::text[])
      order by occurred_at, id`,
  ]);
  const cache: FeedCache = {
    context: emptyPrefetch(),
    activeByContact: new Map(contactIds.map((id) => [id, []])),
    activeByAccount: new Map(accountIds.map((id) => [id, []])),
    runsByContact: new Map(contactIds.map((id) => [id, []])),
    runsByAccount: new Map(accountIds.map((id) => [id, []])),
    guardFacts: new Map(),
    guardNames,
    trace: [],
  };
  for (const run of active) {
    if (!cache.activeByContact.has(Number(run.contact_id)) && !(run.account_id !== null && cache.activeByAccount.has(Number(run.account_id)))) continue;
    cache.activeByContact.get(Number(run.contact_id))?.push(run);
    if (run.account_id !== null) cache.activeByAccount.get(Number(run.account_id))?.push(run);
  }
  for (const run of all) {
    cache.runsByContact.get(Number(run.contact_id))?.push(run);
    if (run.account_id !== null) cache.runsByAccount.get(Number(run.account_id))?.push(run);
  }
  for (const fact of facts) {
    const list = cache.guardFacts.get(Number(fact.contact_id));
    if (list) list.push(fact);
    else cache.guardFacts.set(Number(fact.contact_id), [fact]);
  }
  const str = (v: unknown) => (typeof v === 'string' && v !== '' ? [v] : []);
  const subjects = [...events.map((e) => e.properties), ...active.map((r) => r.state?.vars?.trigger?.properties ?? {})];
  await prefetchContexts(tx, cache.context, {
    contactIds,
    accountIds,
    invoiceIds: subjects.flatMap((p) => str(p.invoiceId)),
    subscriptionIds: subjects.flatMap((p) => str(p.subscriptionId)),
  });
  return { cache, matter };
}

/** Facts that share a contact or an account, in timeline order; unrelated groups are independent. */
export function relatedGroups(events: DomainEventRow[]): DomainEventRow[][] {
  const parent = new Map<string, string>();
  const find = (k: string): string => {
    let root = k;
    while (parent.get(root) !== root) root = parent.get(root)!;
    parent.set(k, root);
    return root;
  };
  const add = (k: string) => {
    if (!parent.has(k)) parent.set(k, k);
  };
  for (const e of events) {
    const keys = [`c${e.contact_id}`, ...(e.account_id === null ? [] : [`a${e.account_id}`])];
    keys.forEach(add);
    for (const k of keys.slice(1)) parent.set(find(k), find(keys[0]!));
  }
  const groups = new Map<string, DomainEventRow[]>();
  for (const e of events) {
    const root = find(`c${e.contact_id}`);
    const group = groups.get(root);
    if (group) group.push(e);
    else groups.set(root, [e]);
  }
  return [...groups.values()];
}

/** Errors worth retrying the whole batch for: serialization/deadlock (40…), connection (08…), admin shutdown. */
export const isTransient = (err: unknown): boolean => {
  const code = String((err as { code?: string }).code ?? '');
  return code.startsWith('40') || code.startsWith('08') || code === '57P01';
};
