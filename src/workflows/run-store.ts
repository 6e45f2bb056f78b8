// Stores what the interpreter decided for a run: its new state (the run columns), its trace and
// its side effects (messages, webhook deliveries, trait updates, Slack notifications), in the
// caller's transaction, keyed by run and step so that a retry never does a step twice.
import type { Queryable, Tx } from '../db/connection.ts';
import { bossDb } from '../jobs/boss-db.ts';
import { OUTBOX_CHANNEL } from '../email/sender.ts';
import { touched, type FeedCache, type RunRow } from './feed-batch.ts';
import { forgetContact, type ContactRecord } from './context-loader.ts';
import type { EngineContext } from './engine-context.ts';
import type { AdvanceResult, RunState, WorkflowDefinition } from './types.ts';

export const WEBHOOK_QUEUE = 'workflow.webhook';

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

/** The run columns an interpreter state sets. */
export function runColumns(state: RunState) {
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

/** Whether a definition's emails go to the run's own contact (no recipients query needed). */
export const mailsOwnContact = (def: WorkflowDefinition): boolean => def.audience !== 'account_admins';

/** The render input a message of the run carries (see persistResult's send_email). */
const renderInput = (def: WorkflowDefinition, state: RunState) => JSON.stringify({ trigger: state.vars.trigger.properties, options: def.options ?? null });

/** The columns both message inserts write, in this order. */
const MESSAGE_COLUMNS = 'id, run_id, step_id, workflow_key, contact_id, account_id, to_email, template, subject, category, variant, data, status, status_reason, created_at, updated_at';

/** A message to a recipient without an address is recorded as skipped, with the reason. */
const addressStatus = (email: string | null) => (email ? { status: 'queued', reason: null } : { status: 'skipped', reason: 'contact has no email address' });

/**
 * The parts of a new run's insert that also queue its first emails, for a definition that mails
 * its own contact (`mailsOwnContact`): a CTE inserting the messages from the inserted run's id,
 * the same rows persistResult's send_email would insert. One statement per entered run instead
 * of two (the feed's cost is its statement count: each is a socket write and a parse/bind).
 */
export function firstEmails(tx: Tx, def: WorkflowDefinition, contact: ContactRecord, result: AdvanceResult, now: Date) {
  const sends = result.actions.flatMap((a) => (a.type === 'send_email' ? [a] : []));
  if (sends.length === 0) return null;
  const { status, reason } = addressStatus(contact.email);
  return tx`
    , first_emails as (
      insert into messages (${tx.unsafe(MESSAGE_COLUMNS)})
      select run.id || ':' || e.step_id, run.id, e.step_id, run.workflow_key, run.contact_id, run.account_id, ${contact.email},
             e.template, e.subject, e.category, e.variant, ${renderInput(def, result.state)}::text::jsonb,
             ${status}, ${reason}, ${now}, ${now}
      from run, unnest(${sends.map((a) => a.stepId)}::text[], ${sends.map((a) => a.template)}::text[], ${sends.map((a) => a.subject)}::text[],
                       ${sends.map((a) => a.category)}::text[], ${sends.map((a) => a.variant)}::text[])
        with ordinality as e(step_id, template, subject, category, variant, n)
      order by e.n
      on conflict (id) do nothing)`;
}

/**
 * Stores an interpreter result: the run's new state (unless `stored`: a new run inserted with
 * it), its trace and side effects (unless `emailsStored`: a new run's emails to its own contact
 * inserted with it, see firstEmails).
 */
export async function persistResult(ctx: EngineContext, tx: Tx, def: WorkflowDefinition, run: RunRow, contact: ContactRecord, result: AdvanceResult, cache?: FeedCache, stored = false, emailsStored = false): Promise<void> {
  const { boss, clock, notified } = ctx;
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
        if (emailsStored && mailsOwnContact(def)) {
          if (cache) forgetContact(cache.context, contact.id);
          if (contact.email) queuedEmail = true;
          break;
        }
        const to = await recipients(tx, def, run, contact);
        // The message carries its render input (the trigger's properties, the definition's
        // options), so the sender renders it without reading workflow JSON or run state.
        for (const r of to) {
          if (cache) forgetContact(cache.context, r.id);
          if (r.email) queuedEmail = true;
          const id = to.length > 1 ? `${key}:${r.id}` : key;
          const { status, reason } = addressStatus(r.email);
          await tx`
            insert into messages (${tx.unsafe(MESSAGE_COLUMNS)})
            values (${id}, ${run.id}, ${action.stepId}, ${run.workflow_key}, ${r.id}, ${run.account_id}, ${r.email},
                    ${action.template}, ${action.subject}, ${action.category}, ${action.variant},
                    ${renderInput(def, state)}::text::jsonb, ${status}, ${reason}, ${now}, ${now})
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
