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
import type { Config } from '../config.ts';
import type { Queryable, Sql, Tx } from '../db/connection.ts';
import { DOMAIN_EVENT_CHANNEL } from '../timeline/domain-event-store.ts';
import { bossDb } from '../jobs/boss-db.ts';
import { isDatabaseConnectionError, outageAwareLogger } from '../process-errors.ts';
import { createBackgroundLoop } from '../work/background-loop.ts';
import { createWorkQueue, failureText, LeaseLostError, type BatchReport, type QueueSpec } from '../work/work-queue.ts';
import { OUTBOX_CHANNEL } from '../email/sender.ts';
import { buildScope } from './interpreter.ts';
import {
  advance,
  dateTriggerDueAt,
  entryDecision,
  entryGuardEventNames,
  matchesTrigger,
  runEventNames,
  scheduledEntryCurrent,
  startRun,
  supersededEntry,
  type ExistingRun,
} from './interpreter.ts';
import { lockContacts } from './contact-locks.ts';
import {
  contactsTouchedBy,
  isTransient,
  prefetchFeed,
  relatedGroups,
  RELEASING,
  toFact,
  existingRunColumns,
  touched,
  writeTrace,
  type DomainEventRow,
  type FeedCache,
  type RunRow,
} from './feed-batch.ts';
import { evaluate } from './conditions.ts';
import { forgetContact, loadContact, loadContext, type ContactRecord } from './context-loader.ts';
import { activeWorkflows, definitionVersion } from './workflow-store.ts';
import type { AdvanceResult, EventFact, Fact, RunState, TraceEntry, WorkflowDefinition } from './types.ts';

export const DUE_QUEUE = 'workflow.due';
export const WEBHOOK_QUEUE = 'workflow.webhook';
/** Due runs advanced per transaction (one pg-boss fetch). */
const DUE_BATCH = 50;
/** Due runs one tick hands to pg-boss at most, and at most this many waiting in pg-boss at once. */
const DUE_TICK_LIMIT = 1000;
const MAX_IN_FLIGHT = 2000;
/** With due work left behind, the next tick comes this soon (else after ENGINE_TICK_MS). */
const BACKLOG_TICK_MS = 100;
/** Timeline facts fed per transaction (their reads are prefetched set-based, see FeedCache). */
const FEED_BATCH = 250;
/** Feed lanes per instance (each holds one of ENGINE_FEED_QUEUE's partitions at a time). */
const FEED_LANES = 3;
/** Failed advances of one run before it is parked as a dead letter, and the retry backoff. */
const MAX_RUN_FAILURES = 5;
const RUN_RETRY_BASE_MS = 60_000;
const RUN_RETRY_MAX_MS = 60 * 60_000;
/** A handed-over run not advanced after this long (its job was lost) is handed over again. */
const REHAND_AFTER_MS = 5 * 60_000;

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
  /** recovery, slackWebhookUrl: the run settings conditions and notify steps read (context-loader.ts runSettings) */
  config: Pick<Config, 'policy' | 'engineTickMs' | 'recovery' | 'slackWebhookUrl'>;
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

export function createEngine(deps: EngineDeps): Engine {
  const { sql, boss, clock, logger, config } = deps;
  const logOutage = outageAwareLogger(logger);
  // Versions are immutable, so a definition once read never changes.
  const versions = new Map<string, WorkflowDefinition>();

  async function definitionOf(db: Queryable, key: string, version: number): Promise<WorkflowDefinition | null> {
    const id = `${key}@${version}`;
    let def = versions.get(id);
    if (!def) {
      const loaded = await definitionVersion(db, key, version);
      if (!loaded) return null;
      versions.set(id, loaded);
      def = loaded;
    }
    return def;
  }

  // -------------------------------------------------------------------------------------------
  // Persisting an interpreter result

  async function recipients(db: Queryable, def: WorkflowDefinition, run: { contact_id: number; account_id: number | null }, contact: ContactRecord) {
    if (def.audience === 'account_admins' && run.account_id !== null) {
      const admins = await db<{ id: number; email: string | null }[]>`
        select c.id, c.email from contacts c join account_members m on m.contact_id = c.id
        where m.account_id = ${run.account_id} and c.email is not null
          and (c.traits->>'role' in ('admin', 'owner') or c.traits->>'isAdmin' = 'true')
        order by c.id`;
      if (admins.length > 0) return admins;
    }
    return [{ id: contact.id, email: contact.email }];
  }

  /** Transactions that already woke the sender (one NOTIFY per transaction is enough). */
  const notified = new WeakSet<object>();

  /** The run columns an interpreter state sets. */
  function runColumns(state: RunState) {
    const variants = Object.values(state.variants);
    return {
      state: JSON.stringify(state),
      status: state.status,
      dueAt: state.status === 'active' && state.wait ? new Date(state.wait.until) : null,
      endedAt: state.endedAt ? new Date(state.endedAt) : null,
      convertedAt: state.convertedAt ? new Date(state.convertedAt) : null,
      holdout: state.holdout,
      variant: variants.length ? variants[variants.length - 1]! : null,
    };
  }

  /**
   * Stores an interpreter result: the run's new state (unless `stored`: a new run inserted with
   * it), its trace and side effects.
   */
  async function persist(tx: Tx, def: WorkflowDefinition, run: RunRow, contact: ContactRecord, result: AdvanceResult, cache?: FeedCache, stored = false): Promise<void> {
    const now = clock.now();
    touched(cache, run.contact_id, run.account_id);
    const state = result.state;
    const c = runColumns(state);
    if (!stored) {
      await tx`
        update workflow_runs set
          state = ${c.state}::text::jsonb, status = ${c.status}, due_at = ${c.dueAt}, queued_at = null,
          ended_at = ${c.endedAt}, converted_at = ${c.convertedAt}, holdout = ${c.holdout}, variant = ${c.variant},
          updated_at = ${now}, failures = 0, last_error = null
        where id = ${run.id}`;
    }
    if (cache) {
      for (const entry of result.trace) cache.trace.push({ runId: run.id, entry });
    } else if (result.trace.length > 0) {
      await tx`
        insert into run_trace (run_id, at, step_id, kind, detail, data)
        select ${run.id}, at, step_id, kind, detail, data::jsonb
        from unnest(${result.trace.map((e) => e.at)}::timestamptz[], ${result.trace.map((e) => e.stepId)}::text[],
                    ${result.trace.map((e) => e.kind)}::text[], ${result.trace.map((e) => e.detail)}::text[],
                    ${result.trace.map((e) => (e.data ? JSON.stringify(e.data) : null))}::text[]) as t(at, step_id, kind, detail, data)`;
    }
    let queuedEmail = false;
    for (const action of result.actions) {
      const key = `${run.id}:${action.stepId}`;
      switch (action.type) {
        case 'send_email': {
          const to = await recipients(tx, def, run, contact);
          // The message carries its render input (the trigger's properties, the definition's
          // options), so the sender renders it without reading workflow JSON or run state.
          for (const r of to) {
            if (cache) forgetContact(cache.context, r.id);
            if (r.email) queuedEmail = true;
            const id = to.length > 1 ? `${key}:${r.id}` : key;
            await tx`
              insert into messages (id, run_id, step_id, workflow_key, contact_id, account_id, to_email, template, subject,
                                    category, variant, data, status, status_reason, created_at, updated_at)
              values (${id}, ${run.id}, ${action.stepId}, ${run.workflow_key}, ${r.id}, ${run.account_id}, ${r.email},
                      ${action.template}, ${action.subject}, ${action.category}, ${action.variant},
                      ${JSON.stringify({ trigger: state.vars.trigger.properties, options: def.options ?? null })}::text::jsonb,
                      ${r.email ? 'queued' : 'skipped'}, ${r.email ? null : 'contact has no email address'}, ${now}, ${now})
              on conflict (id) do nothing`;
          }
          break;
        }
        case 'webhook': {
          const inserted = await tx`
            insert into webhook_deliveries (id, run_id, step_id, url, body, status, created_at)
            values (${key}, ${run.id}, ${action.stepId}, ${action.url}, ${JSON.stringify(action.body)}::text::jsonb, 'pending', ${now})
            on conflict (id) do nothing returning id`;
          if (inserted.length > 0) await boss.send(WEBHOOK_QUEUE, { deliveryId: key }, { db: bossDb(tx) });
          break;
        }
        case 'update_contact':
          await tx`update contacts set traits = traits || ${JSON.stringify(action.traits)}::text::jsonb, updated_at = ${now} where id = ${run.contact_id}`;
          break;
        case 'notify':
          // Delivered by the slack-notifications work queue (src/notify/slack-notifier.ts); the
          // key makes a re-run of the step a no-op.
          await tx`
            insert into slack_notifications (id, run_id, step_id, webhook_url, text, created)
            values (${key}, ${run.id}, ${action.stepId}, ${action.webhookUrl}, ${action.text}, ${now})
            on conflict (id) do nothing`;
          break;
      }
    }
    // Wake the email sender when this transaction commits (it listens on the outbox channel;
    // without this it only finds the message on its next poll, up to 500 ms later). A constant
    // payload: PostgreSQL folds identical notifications of one transaction, so a batch of facts
    // that queues many emails costs one NOTIFY at commit.
    if (queuedEmail && !notified.has(tx)) {
      notified.add(tx);
      await tx`select pg_notify(${OUTBOX_CHANNEL}, '')`;
    }
  }

  /** Advance a locked run with one fact and persist the result. */
  async function feed(tx: Tx, run: RunRow, fact: Fact, cache?: FeedCache): Promise<void> {
    const def = await definitionOf(tx, run.workflow_key, run.version);
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
      const from = new Date(run.state.vars.trigger.occurredAt);
      const to = new Date(fact.event.occurredAt);
      const cached = cache && names.every((n) => cache.guardNames.has(n)) ? cache.guardFacts.get(Number(run.contact_id)) ?? [] : null;
      known = cached
        ? cached.filter((f) => names.includes(f.name) && f.occurred_at >= from && f.occurred_at < to).map(toFact)
        : (await tx<DomainEventRow[]>`
            select id, name, contact_id, account_id, properties, occurred_at from domain_events
            where contact_id = ${run.contact_id} and name = any(${names}::text[]) and occurred_at >= ${from} and occurred_at < ${to}
            order by occurred_at, id`).map(toFact);
    }
    const result = advance(def, run.state, fact, context, now, known);
    await persist(tx, def, run, contact, result, cache);
  }

  async function enter(
    tx: Tx,
    def: WorkflowDefinition,
    version: number,
    contact: ContactRecord,
    accountId: number | null,
    trigger: EventFact,
    triggerEventId: number | null,
    cache?: FeedCache,
  ): Promise<boolean> {
    const now = clock.now();
    const context = await loadContext(tx, config, { definition: def, contact, accountId, subjects: [trigger], at: new Date(trigger.occurredAt) }, cache?.context);
    if (def.trigger.type === 'event') {
      const match = matchesTrigger(def, trigger, context);
      if (!match.match) return false;
    }
    const resolvedAccount = accountId ?? (context.account ? Number(context.account.id) : null);
    // A workflow for the account's admins is about the account: its entry rule (once, active
    // run, cooldown) counts the account's runs, whichever member triggered them; otherwise every
    // member hitting the trigger would send the same admins the same email again.
    const perAccount = def.audience === 'account_admins' && resolvedAccount !== null;
    const cachedRuns = perAccount ? cache?.runsByAccount.get(resolvedAccount!) : cache?.runsByContact.get(Number(contact.id));
    const existing = cachedRuns
      ? cachedRuns.filter((r) => r.workflow_key === def.key)
      : await tx<ExistingRun[]>`
          select ${existingRunColumns(tx)}
          from workflow_runs
          where workflow_key = ${def.key} and ${perAccount ? tx`account_id = ${resolvedAccount}` : tx`contact_id = ${contact.id}`}`;
    // Facts that would end the run, already recorded (delivered before the trigger): the
    // interpreter refuses entry when one happened at or after the trigger.
    const guardNames = entryGuardEventNames(def);
    const triggerAt = new Date(trigger.occurredAt);
    const cachedFacts = cache && guardNames.every((n) => cache.guardNames.has(n)) ? cache.guardFacts.get(Number(contact.id)) ?? [] : null;
    const known = guardNames.length === 0
      ? []
      : cachedFacts
        ? cachedFacts.filter((f) => guardNames.includes(f.name) && f.occurred_at.getTime() >= triggerAt.getTime()).map(toFact)
        : (await tx<DomainEventRow[]>`
            select id, name, contact_id, account_id, properties, occurred_at from domain_events
            where contact_id = ${contact.id} and name = any(${guardNames}::text[]) and occurred_at >= ${triggerAt}
            order by occurred_at, id`).map(toFact);
    const decision = entryDecision(def, trigger, context, existing, now, known);
    if (!decision.enter) {
      logger.debug({ workflow: def.key, contactId: contact.id, reason: decision.reason }, 'not entered');
      if (decision.superseded) {
        // Recorded as the run it would have been in event order (ended at once: no steps, no
        // emails, not in reports), so the entry rules count it; see EntryDecision.superseded.
        const state = supersededEntry(trigger, now, decision.reason);
        touched(cache, contact.id, resolvedAccount);
        const [row] = await tx<{ id: number }[]>`
          insert into workflow_runs (workflow_key, version, contact_id, account_id, run_key, status, state, due_at, ended_at,
                                     trigger_event_id, started_at, updated_at)
          values (${def.key}, ${version}, ${contact.id}, ${resolvedAccount}, ${decision.key}, 'superseded', ${JSON.stringify(state)}::text::jsonb,
                  null, ${now}, ${triggerEventId}, ${now}, ${now})
          on conflict (workflow_key, contact_id, run_key) do nothing
          returning id`;
        const entry: TraceEntry = { at: now.toISOString(), stepId: null, kind: 'superseded', detail: decision.reason };
        if (row && cache) cache.trace.push({ runId: row.id, entry });
        else if (row) await writeTrace(tx, [{ runId: row.id, entry }]);
        if (row && decision.withdraw) await withdraw(tx, def, perAccount ? { accountId: resolvedAccount! } : { contactId: contact.id }, decision.withdraw, trigger, now, cache);
      }
      return false;
    }
    // The first steps are computed before the insert (they do not depend on the run's id), so
    // the run is stored with its state in one statement, not inserted and then updated.
    const result = startRun(def, trigger, context, now);
    const c = runColumns(result.state);
    const [row] = await tx<RunRow[]>`
      insert into workflow_runs (workflow_key, version, contact_id, account_id, run_key, status, state, due_at, ended_at, converted_at,
                                 holdout, variant, trigger_event_id, started_at, updated_at)
      values (${def.key}, ${version}, ${contact.id}, ${resolvedAccount}, ${decision.key}, ${c.status}, ${c.state}::text::jsonb, ${c.dueAt},
              ${c.endedAt}, ${c.convertedAt}, ${c.holdout}, ${c.variant}, ${triggerEventId}, ${now}, ${now})
      on conflict (workflow_key, contact_id, run_key) do nothing
      returning id, workflow_key, version, contact_id, account_id, status, state, due_at`;
    if (!row) return false; // entered concurrently for the same key: once only
    if (decision.withdraw) await withdraw(tx, def, perAccount ? { accountId: resolvedAccount! } : { contactId: contact.id }, decision.withdraw, trigger, now, cache);
    await persist(tx, def, row, contact, result, cache, true);
    return true;
  }

  /**
   * Withdraws the runs a late entry's cooldown covers (EntryDecision.withdraw): their triggers
   * came after this entry's but were delivered first, so they started although event order
   * refuses them. Each becomes `superseded` (no more steps, out of reports, not an entry for the
   * rules) with `withdrawnBy` in its state and the reason in its trace; its emails still waiting
   * in the outbox are skipped. Emails it already sent cannot be called back: the README says so.
   */
  async function withdraw(
    tx: Tx,
    def: WorkflowDefinition,
    scope: { contactId: number } | { accountId: number },
    keys: readonly string[],
    trigger: EventFact,
    now: Date,
    cache?: FeedCache,
  ): Promise<void> {
    const cooldown = def.entry.mode === 'every_time' ? def.entry.cooldown : undefined;
    const reason = `withdrawn: an entry triggered earlier (${trigger.name} at ${trigger.occurredAt}) was delivered after this run started; in event order it came first and its cooldown ${cooldown} refuses this run`;
    const by = JSON.stringify({ triggerId: trigger.id ?? null, triggerAt: trigger.occurredAt, at: now.toISOString() });
    const runs = await tx<{ id: number; contact_id: number; account_id: number | null; was: string }[]>`
      update workflow_runs r set status = 'superseded', due_at = null, ended_at = coalesce(r.ended_at, ${now}), updated_at = ${now},
        state = r.state || jsonb_build_object('status', 'superseded', 'wait', null, 'endReason', ${reason}::text,
          'endedAt', coalesce(r.state->'endedAt', to_jsonb(${now.toISOString()}::text)),
          'withdrawnBy', ${by}::jsonb || jsonb_build_object('status', r.status))
      from workflow_runs old
      where old.id = r.id and r.workflow_key = ${def.key} and r.run_key = any(${keys}::text[])
        and ${'contactId' in scope ? tx`r.contact_id = ${scope.contactId}` : tx`r.account_id = ${scope.accountId}`}
        and not (r.state ? 'withdrawnBy')
      returning r.id, r.contact_id, r.account_id, old.status as was`;
    if (runs.length === 0) return;
    for (const run of runs) touched(cache, run.contact_id, run.account_id);
    const ids = runs.map((r) => r.id);
    // Only mail nobody has claimed: a message in a batch being sent keeps its batch's fate (the
    // batch's members and idempotency key are fixed once claimed).
    await tx`
      with skipped as (
        update messages set status = 'skipped', status_reason = ${'run withdrawn (an earlier entry delivered late)'}, updated_at = ${now}
        where run_id = any(${ids}::bigint[]) and status = 'queued' and batch_id is null
        returning id)
      insert into message_events (message_id, status, at, detail) select id, 'skipped', ${now}, 'run withdrawn' from skipped`;
    const entries = runs.map((run) => ({ runId: run.id, entry: { at: now.toISOString(), stepId: null, kind: 'superseded' as const, detail: `${reason} (was ${run.was})` } }));
    if (cache) cache.trace.push(...entries);
    else await writeTrace(tx, entries);
    logger.info({ workflow: def.key, runs: ids, triggerAt: trigger.occurredAt }, 'runs withdrawn by a late earlier entry');
  }

  // -------------------------------------------------------------------------------------------
  // Timeline facts

  async function handleEvent(tx: Tx, event: DomainEventRow, live: { version: number; definition: WorkflowDefinition }[], cache?: FeedCache): Promise<void> {
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
      const def = await definitionOf(tx, run.workflow_key, run.version);
      if (!def) continue;
      if (run.contact_id !== event.contact_id && def.audience !== 'account_admins') continue;
      const names = runEventNames(def);
      if (names !== 'all' && !names.includes(fact.name)) continue;
      await feed(tx, run, { type: 'event', event: fact }, cache);
    }

    // 1b. Runs of this contact that already ended on a goal or exit fact that happened after
    //     this one: fed it, they end on it instead (advance → reEnd), as in event order.
    const endKeys = live.filter((w) => entryGuardEventNames(w.definition).includes(fact.name)).map((w) => w.definition.key);
    if (endKeys.length > 0) {
      const ended = await tx<RunRow[]>`
        select id, workflow_key, version, contact_id, account_id, status, state, due_at from workflow_runs
        where workflow_key = any(${endKeys}::text[]) and contact_id = ${event.contact_id} and status in ('converted', 'exited')
          and (state->'endedBy'->>'occurredAt')::timestamptz > ${event.occurred_at}
          and (state->'vars'->'trigger'->>'occurredAt')::timestamptz <= ${event.occurred_at}
        order by id for update`;
      for (const run of ended) await feed(tx, run, { type: 'event', event: fact }, cache);
    }

    // 2. Triggers.
    for (const { version, definition: def } of live) {
      const trigger = def.trigger;
      if (trigger.type === 'event' && trigger.event === fact.name) {
        await enter(tx, def, version, contact, event.account_id, fact, event.id, cache);
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
          await enter(tx, def, version, contact, event.account_id, { ...fact, name: `segment:${def.key}` }, event.id, cache);
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
  async function releaseHolds(tx: Tx, event: DomainEventRow, cache?: FeedCache): Promise<void> {
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
      const def = await definitionOf(tx, run.workflow_key, run.version);
      if (!def) continue;
      if (def.audience === 'account_admins' && event.account_id !== null && Number(run.account_id) === Number(event.account_id)) continue;
      await feed(tx, run, { type: 'event', event: toFact(event) }, cache);
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
  async function feedRows(tx: Tx, events: DomainEventRow[], report: BatchReport): Promise<void> {
    if (events.length === 0) return;
    const live = await activeWorkflows(tx);
    await lockContacts(tx, await contactsTouchedBy(tx, events));
    try {
      await tx.savepoint(async (sp) => {
        const { cache, matter } = await prefetchFeed(sp as Tx, definitionOf, events, live);
        const fed = events.filter((e) => matter.has(Number(e.id)));
        const outcomes = await Promise.allSettled(
          relatedGroups(fed).map(async (group) => {
            for (const event of group) await handleEvent(sp as Tx, event, live, cache);
          }),
        );
        const failed = outcomes.find((o): o is PromiseRejectedResult => o.status === 'rejected');
        if (failed) throw failed.reason;
        for (const event of fed) await releaseHolds(sp as Tx, event, cache);
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
          await handleEvent(sp as Tx, event, live);
          await releaseHolds(sp as Tx, event);
        });
      } catch (err) {
        if (isTransient(err)) throw err;
        logger.error({ eventId: event.id, error: failureText(err) }, 'workflow engine could not apply a fact; will retry, then park it as a dead letter');
        report.fail(event.id, err);
      }
    }
  }

  const feedQueue = createWorkQueue({ sql, clock }, ENGINE_FEED_QUEUE);
  const feedOnce = () => feedQueue.runBatch<DomainEventRow>(FEED_BATCH, feedRows);

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

  // -------------------------------------------------------------------------------------------
  // Timers

  /** One due run: a batch of one (a failure is thrown, not retried). */
  async function advanceDue(runId: number): Promise<boolean> {
    return (await advanceDueBatch([runId])) > 0;
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
  async function advanceDueBatch(runIds: number[]): Promise<number> {
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
            for (const run of chain) await feed(tx, run, { type: 'timer' });
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
        if (!isTransient(err)) await recordRunFailure(runIds[0]!, err);
        throw err;
      }
      logger.warn({ runs: runIds.length, error: (err as Error).message }, 'a due run failed in a batch: advancing the batch one run at a time');
      let advanced = 0;
      for (const runId of runIds) {
        try {
          if (await advanceDue(runId)) advanced++;
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
  async function recordRunFailure(runId: number, err: unknown): Promise<void> {
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

  async function enterScheduled(): Promise<number> {
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
            await tx.savepoint((sp) => enter(sp as Tx, workflow.definition, workflow.version, contact, accountId, trigger, null));
          }
        }
        await tx`update scheduled_entries set done_at = ${clock.now()}
                 where workflow_key = ${entry.workflow_key} and contact_id = ${entry.contact_id} and trait_value = ${entry.trait_value}`;
      }
      return due.length;
    });
  }

  /** Set by a tick that left due work behind: the loop ticks again soon instead of in a second. */
  let backlog = false;

  async function tick(): Promise<number> {
    const entered = await enterScheduled();
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
      backlog = limit < DUE_TICK_LIMIT;
      if (limit === 0) return 0;
      // Re-hand a run whose job got lost (e.g. the queue was purged) after REHAND_AFTER_MS.
      const due = await tx<{ id: number; due_at: Date }[]>`
        with due as (
          select id from workflow_runs
          where status = 'active' and due_at <= ${now} and (queued_at is null or queued_at < ${lost})
          order by due_at limit ${limit} for update skip locked)
        update workflow_runs r set queued_at = ${now} from due where r.id = due.id
        returning r.id, r.due_at`;
      if (due.length === limit) backlog = true;
      if (due.length > 0) {
        // In the same transaction: the mark and the jobs commit together.
        await boss.insert(DUE_QUEUE, due.map((r) => ({ data: { runId: r.id, dueAt: r.due_at.toISOString() } })), { db: bossDb(tx) });
      }
      return due.length;
    });
    return entered + queued;
  }

  async function drain(): Promise<void> {
    for (let round = 0; round < 1000; round++) {
      const events = await processEvents();
      const entered = await enterScheduled();
      const due = await sql<{ id: number }[]>`
        select id from workflow_runs where status = 'active' and due_at <= ${clock.now()} order by due_at, id limit 1000`;
      // The same path as the workflow.due worker: batches of runs in one transaction each.
      for (let i = 0; i < due.length; i += DUE_BATCH) await advanceDueBatch(due.slice(i, i + DUE_BATCH).map((r) => r.id));
      if (events === 0 && entered === 0 && due.length === 0) return;
    }
    throw new Error('engine drain did not settle after 1000 rounds');
  }

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
    tick,
    advanceDue,
    advanceDueBatch,
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
          await advanceDueBatch(jobs.map((job) => job.data.runId));
        },
      );
      await feedLoop.start();
      const loop = () => {
        if (!running) return;
        tick()
          .catch((err) => logger.error({ error: (err as Error).message }, 'engine tick failed'))
          .finally(() => {
            if (running) timer = setTimeout(loop, backlog ? BACKLOG_TICK_MS : config.engineTickMs);
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
