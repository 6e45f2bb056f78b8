// Feeding timeline facts to the engine: a fact advances the runs waiting on it (and the held
// sends it releases) and enters the workflows it triggers. A claimed batch of facts is fed with
// its reads prefetched (feed-batch.ts) and, if one fact fails, one fact per savepoint.
import type { Tx } from '../db/connection.ts';
import { failureText, type BatchReport } from '../work/work-queue.ts';
import { advance, buildScope, dateTriggerDueAt, entryGuardEventNames, runEventNames } from './interpreter.ts';
import { lockContacts } from './contact-locks.ts';
import {
  contactsTouchedBy,
  isTransient,
  knownGuardFacts,
  prefetchFeed,
  relatedGroups,
  RELEASING,
  toFact,
  writeTrace,
  type DomainEventRow,
  type FeedCache,
  type RunRow,
} from './feed-batch.ts';
import { evaluate } from './conditions.ts';
import { loadContact, loadContext } from './context-loader.ts';
import { activeWorkflows } from './workflow-store.ts';
import type { EngineContext } from './engine-context.ts';
import { persistResult } from './run-store.ts';
import { enter } from './run-entry.ts';
import type { EventFact, Fact, WorkflowDefinition } from './types.ts';

/** Advance a locked run with one fact and persist the result. */
export async function feed(ctx: EngineContext, tx: Tx, run: RunRow, fact: Fact, cache?: FeedCache): Promise<void> {
  const { clock, logger, config } = ctx;
  const def = await ctx.definitions.definitionOf(tx, run.workflow_key, run.version);
  const contact = await loadContact(tx, run.contact_id, cache?.context);
  if (!def || !contact) {
    logger.warn({ runId: run.id }, 'run without definition or contact; ending it');
    await tx`update workflow_runs set status = 'exited', due_at = null, ended_at = ${clock.now()} where id = ${run.id}`;
    return;
  }
  const now = clock.now();
  const context = await loadContext(tx, config, {
    definition: def,
    contact,
    accountId: run.account_id,
    subjects: [run.state.vars.trigger, fact.type === 'event' ? fact.event : null],
    at: now,
  }, cache?.context);
  // A goal or exit fact: the recorded goal/exit facts between the trigger and it decide how the
  // run ends if one of them happened first (delivered later); see advance().
  let known: EventFact[] = [];
  const names = entryGuardEventNames(def);
  if (fact.type === 'event' && names.includes(fact.event.name) && run.state?.vars?.trigger) {
    const accountRun = def.audience === 'account_admins' && run.account_id !== null ? Number(run.account_id) : null;
    known = await knownGuardFacts(tx, cache, names, { contactId: Number(run.contact_id), accountId: accountRun }, new Date(run.state.vars.trigger.occurredAt), new Date(fact.event.occurredAt));
  }
  const result = advance(def, run.state, fact, context, now, known);
  await persistResult(ctx, tx, def, run, contact, result, cache);
}

/** A run hears its own contact's facts; an account-level run also its account's, from any member. */
const hearsMembersFacts = (run: RunRow, def: WorkflowDefinition | null | undefined, event: DomainEventRow): boolean =>
  run.contact_id === event.contact_id || def?.audience === 'account_admins';

/** One fact of the timeline: fed to the runs it concerns, then to the triggers of the live workflows. */
export async function handleEvent(ctx: EngineContext, tx: Tx, event: DomainEventRow, live: { version: number; definition: WorkflowDefinition }[], cache?: FeedCache): Promise<void> {
  const { clock, config } = ctx;
  if (event.contact_id === null) return;
  const fact = toFact(event);
  const contact = await loadContact(tx, event.contact_id, cache?.context);
  if (!contact) return;

  // 1. Runs already under way for this contact, and account-level runs (audience
  //    account_admins) of its account: e.g. an expansion run started by one member converts
  //    when the account's subscription (a fact on the billing contact) is upgraded.
  const byContact = cache?.activeByContact.get(Number(event.contact_id));
  const byAccount = event.account_id === null ? [] : cache?.activeByAccount.get(Number(event.account_id));
  const runs = byContact && byAccount
    ? [...new Map([...byContact, ...byAccount].map((r) => [Number(r.id), r])).values()].sort((a, b) => Number(a.id) - Number(b.id))
    : await tx<RunRow[]>`
        select id, workflow_key, version, contact_id, account_id, status, state, due_at
        from workflow_runs
        where status = 'active'
          and (contact_id = ${event.contact_id} or (${event.account_id}::bigint is not null and account_id = ${event.account_id}))
        order by id for update`;
  for (const run of runs) {
    const def = await ctx.definitions.definitionOf(tx, run.workflow_key, run.version);
    if (!def) continue;
    if (!hearsMembersFacts(run, def, event)) continue;
    const names = runEventNames(def);
    if (names !== 'all' && !names.includes(fact.name)) continue;
    await feed(ctx, tx, run, { type: 'event', event: fact }, cache);
  }

  // 1b. Runs of this contact (and account-level runs of its account) that already ended on a
  //     goal or exit fact that happened after this one: fed it, they end on it instead
  //     (advance → reEnd), as in event order.
  const endKeys = live.filter((w) => entryGuardEventNames(w.definition).includes(fact.name)).map((w) => w.definition.key);
  if (endKeys.length > 0) {
    const ended = await tx<RunRow[]>`
      select id, workflow_key, version, contact_id, account_id, status, state, due_at from workflow_runs
      where workflow_key = any(${endKeys}::text[]) and status in ('converted', 'exited')
        and (contact_id = ${event.contact_id} or (${event.account_id}::bigint is not null and account_id = ${event.account_id}))
        and (state->'endedBy'->>'occurredAt')::timestamptz > ${event.occurred_at}
        and (state->'vars'->'trigger'->>'occurredAt')::timestamptz <= ${event.occurred_at}
      order by id for update`;
    for (const run of ended) {
      const def = await ctx.definitions.definitionOf(tx, run.workflow_key, run.version);
      if (!hearsMembersFacts(run, def, event)) continue;
      await feed(ctx, tx, run, { type: 'event', event: fact }, cache);
    }
  }

  // 2. Triggers.
  for (const { version, definition: def } of live) {
    const trigger = def.trigger;
    if (trigger.type === 'event' && trigger.event === fact.name) {
      await enter(ctx, tx, def, version, contact, event.account_id, fact, event.id, cache);
    } else if (trigger.type === 'segment' && (fact.name === 'identify' || fact.name === 'group')) {
      const context = await loadContext(tx, config, { definition: def, contact, accountId: event.account_id, subjects: [], at: clock.now() }, cache?.context);
      const inside = evaluate(trigger.condition, buildScope(def, context, { event: fact, now: clock.now() })).value;
      const [before] = await tx<{ inside: boolean }[]>`
        select inside from segment_memberships where workflow_key = ${def.key} and contact_id = ${contact.id}`;
      await tx`
        insert into segment_memberships (workflow_key, contact_id, inside, changed_at) values (${def.key}, ${contact.id}, ${inside}, ${clock.now()})
        on conflict (workflow_key, contact_id) do update set inside = excluded.inside, changed_at = excluded.changed_at
        where segment_memberships.inside <> excluded.inside`;
      if (inside && !before?.inside) {
        await enter(ctx, tx, def, version, contact, event.account_id, { ...fact, name: `segment:${def.key}` }, event.id, cache);
      }
    } else if (trigger.type === 'date_trait' && fact.name === (trigger.subject === 'account' ? 'group' : 'identify')) {
      // An account-subject date (e.g. the contract's renewal date, a group trait) is scheduled
      // from the account's traits, for the member whose group call set it.
      const accountId = trigger.subject === 'account' ? event.account_id : null;
      if (trigger.subject === 'account' && accountId === null) continue;
      const traits = accountId !== null
        ? ((await tx<{ traits: Record<string, unknown> }[]>`select traits from accounts where id = ${accountId}`)[0]?.traits ?? {})
        : contact.traits;
      const traitValue = traits[trigger.trait];
      const dueAt = dateTriggerDueAt(def, traits);
      const value = traitValue === undefined || traitValue === null ? null : String(traitValue);
      // The trait moved (or was removed): the entry made for the old date is void. The
      // scheduler re-reads the trait at fire time as well (scheduledEntryCurrent).
      await tx`
        update scheduled_entries set done_at = ${clock.now()}
        where workflow_key = ${def.key} and contact_id = ${contact.id} and done_at is null
          and trait_value is distinct from ${dueAt ? value : null}`;
      if (dueAt && value !== null) {
        await tx`
          insert into scheduled_entries (workflow_key, contact_id, trait_value, due_at, account_id)
          values (${def.key}, ${contact.id}, ${value}, ${dueAt}, ${accountId})
          on conflict (workflow_key, contact_id, trait_value) do update set due_at = excluded.due_at, done_at = null
          -- re-armed only if it was voided before it came due (a fired entry stays done)
          where scheduled_entries.done_at < scheduled_entries.due_at`;
      }
    }
  }
}

/**
 * A fact that ends a hold's cause (invoice.paid ends the dunning priority) re-checks the held
 * sends of every member of the accounts involved at once, not at the hold's next timer. The
 * fact's own contact and the account-level runs of its account were fed it already.
 */
export async function releaseHolds(ctx: EngineContext, tx: Tx, event: DomainEventRow, cache?: FeedCache): Promise<void> {
  const reasons = RELEASING.get(event.name);
  if (!reasons || event.contact_id === null) return;
  const runs = await tx<RunRow[]>`
    select id, workflow_key, version, contact_id, account_id, status, state, due_at
    from workflow_runs
    where status = 'active' and state->'wait'->>'kind' = 'hold' and state->'wait'->>'reason' = any(${reasons}::text[])
      and contact_id <> ${event.contact_id}
      and contact_id in (
        select contact_id from account_members
        where account_id = ${event.account_id}::bigint
           or account_id in (select account_id from account_members where contact_id = ${event.contact_id}))
    order by id for update`;
  for (const run of runs) {
    const def = await ctx.definitions.definitionOf(tx, run.workflow_key, run.version);
    if (!def) continue;
    if (def.audience === 'account_admins' && event.account_id !== null && Number(run.account_id) === Number(event.account_id)) continue;
    await feed(ctx, tx, run, { type: 'event', event: toFact(event) }, cache);
  }
}

/**
 * One claimed batch of timeline facts (one lane: the facts of some contacts, in timeline
 * order), in the work queue's transaction. Groups of unrelated facts (no shared contact or
 * account) are fed concurrently, so postgres.js pipelines their queries (one round trip carries
 * many); facts of one group go in order. If that fails (not transiently), it is redone one fact
 * per savepoint: a fact that cannot be applied fails alone — retried with backoff, parked as a
 * dead letter after ENGINE_FEED_QUEUE.maxAttempts — and the others are fed.
 * Transient failures (deadlock, serialization, lost connection) abort the batch; the queue
 * retries it.
 */
export async function feedRows(ctx: EngineContext, tx: Tx, events: DomainEventRow[], report: BatchReport): Promise<void> {
  const { logger, definitions } = ctx;
  if (events.length === 0) return;
  const live = await activeWorkflows(tx);
  await lockContacts(tx, await contactsTouchedBy(tx, events));
  try {
    await tx.savepoint(async (sp) => {
      const { cache, matter } = await prefetchFeed(sp as Tx, definitions.definitionOf, events, live);
      const fed = events.filter((e) => matter.has(Number(e.id)));
      const outcomes = await Promise.allSettled(
        relatedGroups(fed).map(async (group) => {
          for (const event of group) await handleEvent(ctx, sp as Tx, event, live, cache);
        }),
      );
      const failed = outcomes.find((o): o is PromiseRejectedResult => o.status === 'rejected');
      if (failed) throw failed.reason;
      for (const event of fed) await releaseHolds(ctx, sp as Tx, event, cache);
      await writeTrace(sp as Tx, cache.trace);
    });
    return;
  } catch (err) {
    if (isTransient(err)) throw err;
    logger.warn({ facts: events.length, error: failureText(err) }, 'a fact failed in a pipelined batch: feeding the batch one fact at a time');
  }
  for (const event of events) {
    try {
      await tx.savepoint(async (sp) => {
        await handleEvent(ctx, sp as Tx, event, live);
        await releaseHolds(ctx, sp as Tx, event);
      });
    } catch (err) {
      if (isTransient(err)) throw err;
      logger.error({ eventId: event.id, error: failureText(err) }, 'workflow engine could not apply a fact; will retry, then park it as a dead letter');
      report.fail(event.id, err);
    }
  }
}
