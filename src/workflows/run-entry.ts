// Entering a workflow: the entry decision for a contact (or an account's admins) and a trigger,
// the new run stored with its first steps, a refused late entry recorded as a superseded run, and
// the runs a late earlier entry withdraws.
import type { Tx } from '../db/connection.ts';
import { entryDecision, entryGuardEventNames, matchesTrigger, startRun, supersededEntry, type ExistingRun } from './interpreter.ts';
import { existingRunColumns, knownGuardFacts, touched, writeTrace, type FeedCache, type RunRow } from './feed-batch.ts';
import { loadContext, type ContactRecord } from './context-loader.ts';
import type { EngineContext } from './engine-context.ts';
import { firstEmails, mailsOwnContact, persistResult, runColumns } from './run-store.ts';
import type { EventFact, TraceEntry, WorkflowDefinition } from './types.ts';

/**
 * Enters `def` for a contact on a trigger fact if its trigger matches and its entry rules allow;
 * returns whether a run started.
 */
export async function enter(
  ctx: EngineContext,
  tx: Tx,
  def: WorkflowDefinition,
  version: number,
  contact: ContactRecord,
  accountId: number | null,
  trigger: EventFact,
  triggerEventId: number | null,
  cache?: FeedCache,
): Promise<boolean> {
  const { clock, logger, config } = ctx;
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
  // interpreter refuses entry when one happened at or after the trigger. An account-level run
  // hears every member's facts about its account (handleEvent), so its guard reads those too.
  const triggerAt = new Date(trigger.occurredAt);
  const known = await knownGuardFacts(tx, cache, entryGuardEventNames(def), { contactId: Number(contact.id), accountId: perAccount ? resolvedAccount : null }, triggerAt);
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
      if (row && decision.withdraw) await withdraw(ctx, tx, def, perAccount ? { accountId: resolvedAccount! } : { contactId: contact.id }, decision.withdraw, trigger, now, cache);
    }
    return false;
  }
  // The first steps are computed before the insert (they do not depend on the run's id), so
  // the run is stored with its state in one statement, not inserted and then updated.
  const result = startRun(def, trigger, context, now);
  const c = runColumns(result.state);
  // Its first emails to its own contact go in the same statement (firstEmails); the messages
  // a withdrawal skips are other runs', so inserting these before withdraw() changes nothing.
  const emails = mailsOwnContact(def) ? firstEmails(tx, def, contact, result, now) : null;
  const [inserted] = await tx<Omit<RunRow, 'state'>[]>`
    with run as (
      insert into workflow_runs (workflow_key, version, contact_id, account_id, run_key, status, state, due_at, ended_at, converted_at,
                                 holdout, variant, trigger_event_id, started_at, updated_at)
      values (${def.key}, ${version}, ${contact.id}, ${resolvedAccount}, ${decision.key}, ${c.status}, ${c.state}::text::jsonb, ${c.dueAt},
              ${c.endedAt}, ${c.convertedAt}, ${c.holdout}, ${c.variant}, ${triggerEventId}, ${now}, ${now})
      on conflict (workflow_key, contact_id, run_key) do nothing
      returning id, workflow_key, version, contact_id, account_id, status, due_at)
    ${emails ?? tx``}
    select id, workflow_key, version, contact_id, account_id, status, due_at from run`;
  if (!inserted) return false; // entered concurrently for the same key: once only
  // The state just stored, not parsed back from the row.
  const row: RunRow = { ...inserted, state: result.state };
  if (decision.withdraw) await withdraw(ctx, tx, def, perAccount ? { accountId: resolvedAccount! } : { contactId: contact.id }, decision.withdraw, trigger, now, cache);
  await persistResult(ctx, tx, def, row, contact, result, cache, true, emails !== null);
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
  ctx: EngineContext,
  tx: Tx,
  def: WorkflowDefinition,
  scope: { contactId: number } | { accountId: number },
  keys: readonly string[],
  trigger: EventFact,
  now: Date,
  cache?: FeedCache,
): Promise<void> {
  const { logger } = ctx;
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
