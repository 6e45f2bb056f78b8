// Drives a real Lifeline service (build(t): Postgres, Fastify app, inboxes, engine, sender)
// through a generated timeline for the order-independence property, and reads back everything
// that must not depend on delivery order.
//
// One service is reused across the runs of a property: between runs every data table is emptied
// while the workflow definitions and the signing secret stay. Building a service costs ~1 s
// (template compilation, pg-boss start); a reset costs tens of milliseconds.
// Each run starts later than the previous one ended (the clock never goes back: the sender's
// in-process send window keeps send times and would wait for a clock that went back).
import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import type { ManualClock } from '../../src/clock.ts';
import { builtinDefinitions } from '../../src/workflows/builtin/index.ts';
import { build, ADMIN_TOKEN, WRITE_KEY, type Built } from './build.ts';
import { deliver, envelope } from './stripe.ts';
import { inOrder, type Delivery, type ProductStep, type StripeStep, type Timeline, type TimelineStep } from './timeline-generator.ts';
import { expectedStripeFacts } from './fact-model.ts';

const DAY = 86_400_000;
/** After delivery the clock walks through the dunning schedule and beyond: 40 days. */
export const FOLLOW_DAYS = 40;

/** Tables that keep their rows between runs: configuration, not data. */
const KEEP = new Set(['settings', 'workflows', 'workflow_versions']);

export interface Harness {
  svc: Built;
  clock: ManualClock;
  /** empty every data table (and pg-boss's jobs) */
  reset(): Promise<void>;
}

export async function harness(t: TestContext, env: Record<string, string> = {}): Promise<Harness> {
  const svc = await build(t, { clock: 'manual', env });
  const clock = svc.clock as ManualClock;
  // Tables a migration seeded are configuration too: keep whatever was there at start.
  const tables = await svc.sql<{ name: string }[]>`
    select tablename as name from pg_tables where schemaname = 'public' order by tablename`;
  const data: string[] = [];
  for (const { name } of tables) {
    if (KEEP.has(name) || name.startsWith('__drizzle')) continue;
    const [row] = await svc.sql<{ any: boolean }[]>`select exists(select 1 from ${svc.sql(name)}) as any`;
    if (!row!.any) data.push(name);
  }
  const [boss] = await svc.sql<{ present: boolean }[]>`select to_regclass('pgboss.job') is not null as present`;
  return {
    svc,
    clock,
    async reset() {
      // DELETE, not TRUNCATE: these tables hold a few dozen rows, and TRUNCATE pays file
      // operations per table and index (~1 s for all of them on a busy machine). Replica mode
      // skips foreign-key and rollup triggers: every table involved is emptied anyway.
      await svc.sql.begin(async (tx) => {
        await tx`set local session_replication_role = replica`;
        for (const name of data) await tx`delete from ${tx(name)}`;
        if (boss!.present) await tx`delete from pgboss.job`;
      });
    },
  };
}

// -----------------------------------------------------------------------------------------------
// Delivery

const iso = (ms: number) => new Date(ms).toISOString();

function stripeEvent(step: StripeStep, startSec: number) {
  return envelope(step.type, step.object(startSec), { id: step.eventId, created: startSec + step.at, ...(step.previous ? { previous: step.previous } : {}) });
}

function productMessage(step: ProductStep, startSec: number) {
  return { ...step.body, messageId: step.messageId, timestamp: iso((startSec + step.at) * 1000) };
}

async function post(h: Harness, url: string, payload: object): Promise<void> {
  const res = await h.svc.app.inject({ method: 'POST', url, headers: { authorization: `Bearer ${WRITE_KEY}` }, payload });
  assert.equal(res.statusCode, 200, `${url}: ${res.body}`);
  const body = JSON.parse(res.body) as { rejected?: unknown[] };
  assert.deepEqual(body.rejected ?? [], [], `${url} rejected items: ${res.body}`);
}

/**
 * Delivers the timeline (start: unix seconds of its first event) in the given arrival order at
 * one moment (the clock stands one minute after the last event: the events all happened, and
 * now reach Lifeline in this order), processing where the plan says, and at the end.
 */
export async function deliverAll(h: Harness, timeline: Timeline, deliveries: readonly Delivery[], startSec: number): Promise<void> {
  h.clock.set(new Date((startSec + timeline.deliverAt) * 1000));
  let batch: ProductStep[] = [];
  const flush = async () => {
    if (batch.length === 0) return;
    await post(h, '/v1/batch', { batch: batch.map((s) => ({ type: s.call, ...productMessage(s, startSec) })) });
    batch = [];
  };
  for (const d of deliveries) {
    const step: TimelineStep = d.step;
    if (step.kind === 'product' && d.inBatch) {
      batch.push(step);
    } else {
      await flush();
      if (step.kind === 'stripe') {
        const res = await deliver(h.svc.app, stripeEvent(step, startSec), { timestamp: Math.floor(h.clock.now().getTime() / 1000) });
        assert.equal(res.statusCode, 200, `${step.eventId}: ${res.body}`);
      } else {
        await post(h, `/v1/${step.call}`, productMessage(step, startSec));
      }
    }
    if (d.drainAfter) {
      await flush();
      await h.svc.drain();
    }
  }
  await flush();
  await h.svc.drain();
}

/**
 * Walks the clock through the following days the way a live service lives them: straight to the
 * next moment something is due (a run's timer, a scheduled entry, a send's retry), processing
 * there, until nothing is due before the end. Cheaper than fixed steps, and every send happens
 * exactly when it falls due.
 */
export async function follow(h: Harness, days = FOLLOW_DAYS): Promise<void> {
  const end = h.clock.now().getTime() + days * DAY;
  for (let i = 0; i < 1_000; i++) {
    const now = h.clock.now();
    const [row] = await h.svc.sql<{ next: Date | null }[]>`
      select least(
        (select min(due_at) from workflow_runs where status = 'active'),
        (select min(due_at) from scheduled_entries where done_at is null),
        (select min(next_attempt_at) from messages where status = 'queued' and next_attempt_at > ${now})) as next`;
    const next = row?.next?.getTime();
    if (next === undefined || next > end) break;
    h.clock.set(new Date(Math.max(next, now.getTime())));
    await h.svc.drain();
  }
  h.clock.set(new Date(end));
  await h.svc.drain();
}
// -----------------------------------------------------------------------------------------------
// What must not depend on delivery order

const plain = <T>(rows: readonly T[]): T[] => rows.map((r) => ({ ...r }) as T);
const isoOrNull = (d: Date | null) => (d ? d.toISOString() : null);

/** How a contact is named across services (ids differ): its user id, else email, else customer. */
const CONTACT_KEY = `coalesce(c.user_id, 'email:' || c.email, 'cus:' || c.stripe_customer_id, 'anon:' || c.anonymous_id, 'contact?')`;

export async function stripeState(h: Harness) {
  const sql = h.svc.sql;
  const invoices = await sql<{ id: string; status: string; amount_due: number; amount_paid: number; amount_remaining: number; attempt_count: number; paid_at: Date | null; subscription_id: string | null }[]>`
    select id, status, amount_due, amount_paid, amount_remaining, attempt_count, paid_at, subscription_id from invoices order by id`;
  const subscriptions = await sql`
    select id, status, mrr_minor, cancellation_reason, cancellation_feedback from subscriptions order by id`;
  const customers = await sql`select id, email, default_payment_method from customers order by id`;
  return {
    invoices: invoices.map((r) => ({ ...r, paid_at: isoOrNull(r.paid_at) })),
    subscriptions: plain(subscriptions),
    customers: plain(customers),
  };
}

export async function facts(h: Harness, source?: 'stripe' | 'product') {
  const rows = await h.svc.sql<{ name: string; subject_id: string | null; occurred_at: Date; contact: string | null; properties: unknown }[]>`
    select e.name, e.subject_id, e.occurred_at, ${h.svc.sql.unsafe(CONTACT_KEY)} as contact, e.properties
    from domain_events e left join contacts c on c.id = e.contact_id
    where ${source ?? null}::text is null or e.source = ${source ?? null}
    order by e.occurred_at, e.name, e.subject_id`;
  return rows.map((r) => ({ name: r.name, subject: r.subject_id, at: r.occurred_at.toISOString(), contact: r.contact, properties: r.properties }));
}

export async function people(h: Harness) {
  const sql = h.svc.sql;
  const contacts = await sql.unsafe<{ key: string; email: string | null; stripe_customer_id: string | null; traits: Record<string, unknown> }[]>(`
    select ${CONTACT_KEY} as key, c.email, c.stripe_customer_id, c.traits from contacts c order by 1`);
  const accounts = await sql<{ group_id: string; stripe_customer_id: string | null; traits: Record<string, unknown>; members: string[] }[]>`
    select a.group_id, a.stripe_customer_id, a.traits,
      array(select ${sql.unsafe(CONTACT_KEY)} from account_members m join contacts c on c.id = m.contact_id where m.account_id = a.id order by 1) as members
    from accounts a order by a.group_id`;
  return { contacts: plain(contacts), accounts: plain(accounts) };
}

export async function runs(h: Harness) {
  // every_time runs are keyed by the id of the fact that started them, which differs between
  // services: name them by what that fact describes instead. Entries recorded as superseded
  // (refused because the fact that ends the run was delivered first) are not runs: no step ran,
  // no email went out; in order they are runs that ended on that fact, which may be missing.
  const rows = await h.svc.sql.unsafe<{ workflow: string; key: string; contact: string; status: string }[]>(`
    select r.workflow_key as workflow,
      case when r.trigger_event_id is not null and r.run_key = r.trigger_event_id::text then 'fact:' || te.dedupe_key else r.run_key end as key,
      ${CONTACT_KEY} as contact, r.status
    from workflow_runs r join contacts c on c.id = r.contact_id left join domain_events te on te.id = r.trigger_event_id
    where r.status <> 'superseded'
    order by 1, 2, 3`);
  // A run entered on a state (a segment) is keyed by the fact during which the engine saw the
  // state hold, which is whichever fact it processed first once the inbox had projected the
  // change: a group call putting the account at 92 % and an identify of a member, delivered
  // together identify first, enter on the identify (seed -1045211684). The state, not the fact,
  // is what such a run is about: compare it by workflow, contact and status.
  return plain(rows.map((r) => (STATE_TRIGGERED.has(r.workflow) ? { ...r, key: 'state' } : r)));
}

/** Emails queued or sent, per (workflow, template, recipient), with the final status of their run. */
export async function emails(h: Harness) {
  const rows = await h.svc.sql<{ workflow: string; template: string; to: string; run: string; n: number }[]>`
    select m.workflow_key as workflow, m.template, m.to_email as "to", r.status as run, count(*)::int as n
    from messages m join workflow_runs r on r.id = m.run_id
    where m.status in ('queued', 'sent') group by 1, 2, 3, 4 order by 1, 2, 3, 4`;
  return plain(rows);
}

type EmailCount = { workflow: string; template: string; to: string; n: number };
const emailKey = (e: EmailCount) => `${e.workflow}|${e.template}|${e.to}`;
const tally = (rows: readonly EmailCount[]) => {
  const out = new Map<string, number>();
  for (const r of rows) out.set(emailKey(r), (out.get(emailKey(r)) ?? 0) + r.n);
  return out;
};

/** Emails (workflow, template, recipient) sent more often in `actual` than in `allowed`. */
export function extraEmails(actual: readonly EmailCount[], allowed: readonly EmailCount[]) {
  const want = tally(allowed);
  return [...tally(actual)].filter(([k, n]) => n > (want.get(k) ?? 0)).map(([k, n]) => ({ email: k, sent: n, inOrder: want.get(k) ?? 0 }));
}

export async function recoveryReport(h: Harness, startSec: number): Promise<unknown> {
  const day = (ms: number) => new Date(ms).toISOString().slice(0, 10);
  const from = day(startSec * 1000 - DAY);
  const to = day(h.clock.now().getTime() + 2 * DAY);
  const res = await h.svc.app.inject({ method: 'GET', url: `/v1/reports/recovery?from=${from}&to=${to}`, headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
  assert.equal(res.statusCode, 200, res.body);
  // The hold-out comparison counts cases with and without a billing-recovery run: whether a run
  // exists legitimately depends on what was known when the failure arrived (see assertSameOutcome).
  const report = JSON.parse(res.body) as { currencies: { holdout?: unknown }[] };
  for (const c of report.currencies) delete c.holdout;
  return report;
}

// -----------------------------------------------------------------------------------------------
// One case: the in-order reference and another delivery of the same timeline

// Each run starts 70 days after the previous one (the services' clocks only move forward).
const BASE = Date.parse('2026-03-02T09:00:00Z') / 1000;
let runNumber = 0;
export const nextStart = () => BASE + runNumber++ * 70 * 86_400;

/**
 * Delivers the timeline in order to `ref` and as `deliveries` say to `other` (concurrently: the
 * two services share nothing), then, with `follow`, walks both through the next 40 days.
 * Returns the timeline's start (unix seconds).
 */
export async function runCase(ref: Harness, other: Harness, timeline: Timeline, deliveries: readonly Delivery[], options: { follow: boolean }): Promise<number> {
  const start = nextStart();
  await Promise.all([ref.reset(), other.reset()]);
  await Promise.all(
    ([[ref, inOrder(timeline)], [other, deliveries]] as const).map(async ([h, list]) => {
      await deliverAll(h, timeline, list, start);
      if (options.follow) await follow(h);
    }),
  );
  return start;
}

/**
 * Workflows entered on a state (a segment), not on a fact: the engine enters them only if the
 * state holds when it learns of the change (re-read, not replayed). A state that held in event
 * order but had already passed when an out-of-order delivery told us (usage at 92 %, then 40 %,
 * delivered newest first) rightly starts nothing: their runs may be missing, never extra.
 */
const STATE_TRIGGERED = new Set(builtinDefinitions.filter((d) => d.trigger.type === 'segment').map((d) => d.key));

/**
 * An email step that runs while its contact has no address yet is skipped ("contact has no email
 * address") and not sent again when an address arrives later. Which Stripe event first tells us
 * the address can depend on delivery order: a subscription cancellation delivered before the
 * invoice that carries the customer's email makes a contact without one, and win-back's restore
 * email, due at once, is skipped; in order it goes out. Such an email may be missing after
 * out-of-order delivery when that delivery skipped that step of that workflow for that contact
 * for want of an address. The other way round too: when the in-order delivery skipped it (a
 * group call putting the account near its limit before the identify that gives the address,
 * delivered identify first: seed -1045211684), the out-of-order one, which knew the address when
 * the step ran, may send it. The run and its decision to send are the same in both; only what we
 * knew about the contact at that moment differs.
 */
async function skippedForNoAddress(h: Harness): Promise<Set<string>> {
  const rows = await h.svc.sql.unsafe<{ k: string }[]>(`
    select m.workflow_key || '|' || m.template || '|' || ${CONTACT_KEY} as k
    from messages m join contacts c on c.id = m.contact_id
    where m.status = 'skipped' and m.status_reason = 'contact has no email address'`);
  return new Set(rows.map((r) => r.k));
}

/** Emails (as emails() counts them) named by contact instead of address, for skippedForNoAddress. */
async function emailsByContact(h: Harness): Promise<{ email: string; k: string }[]> {
  return h.svc.sql.unsafe<{ email: string; k: string }[]>(`
    select m.workflow_key || '|' || m.template || '|' || m.to_email as email, m.workflow_key || '|' || m.template || '|' || ${CONTACT_KEY} as k
    from messages m join contacts c on c.id = m.contact_id where m.status in ('queued', 'sent')`);
}

export type Aspect = 'emails' | 'runs' | 'stripe' | 'people' | 'facts' | 'stripe-facts' | 'report';

/** Asserts that `other` ended where the in-order `ref` did, aspect by aspect (first difference throws). */
export async function assertSameOutcome(ref: Harness, other: Harness, start: number, aspects: readonly Aspect[]): Promise<void> {
  for (const aspect of aspects) {
    switch (aspect) {
      case 'emails': {
        // Not equality: the in-order service learns of each event before the next arrives and
        // sends what it should at that moment (e.g. the first dunning email for a failure whose
        // invoice.paid comes next). A service that learns of the payment first may rightly send
        // less — never more. Emails of runs that nothing ended (completed or still active in
        // order) must go out either way.
        const [expected, actual] = await Promise.all([emails(ref), emails(other)]);
        // A run withdrawn by an earlier entry delivered late (its cooldown covers the run; see
        // EntryDecision.withdraw) may have sent before that entry arrived: nothing can call an
        // email back. What it had not sent yet was skipped (not counted here). Its run status
        // is `superseded`, which an entry refused on a known fact never sends from.
        const sendable = actual.filter((e) => e.run !== 'superseded');
        const [skippedInOrder, sentNamed] = await Promise.all([skippedForNoAddress(ref), emailsByContact(other)]);
        const addressLearnedFirst = new Set(sentNamed.filter((n) => skippedInOrder.has(n.k)).map((n) => n.email));
        const extra = extraEmails(sendable, expected).filter((e) => !addressLearnedFirst.has(e.email));
        assert.deepEqual(extra, [], 'emails sent after out-of-order delivery that the in-order delivery does not send');
        const unended = expected.filter((e) => (e.run === 'completed' || e.run === 'active') && !STATE_TRIGGERED.has(e.workflow));
        const [skipped, named] = await Promise.all([skippedForNoAddress(other), emailsByContact(ref)]);
        const excused = new Set(named.filter((n) => skipped.has(n.k)).map((n) => n.email));
        const missing = extraEmails(unended, actual).filter((m) => !excused.has(m.email));
        assert.deepEqual(missing, [], 'emails of runs that nothing ended in order, missing after out-of-order delivery');
        break;
      }
      case 'runs': {
        // Likewise: every run of the out-of-order service exists in order with the same outcome;
        // runs that nothing ended in order (completed, active) exist in both.
        const [expected, actual] = await Promise.all([runs(ref), runs(other)]);
        const known = new Set(expected.map((r) => JSON.stringify(r)));
        const found = new Set(actual.map((r) => JSON.stringify(r)));
        assert.deepEqual(actual.filter((r) => !known.has(JSON.stringify(r))), [], 'workflow runs (workflow, key, contact, status) after out-of-order delivery that the in-order delivery does not have');
        assert.deepEqual(expected.filter((r) => (r.status === 'completed' || r.status === 'active') && !STATE_TRIGGERED.has(r.workflow) && !found.has(JSON.stringify(r))), [], 'runs that nothing ended in order, missing after out-of-order delivery');
        break;
      }
      case 'stripe':
        assert.deepEqual(await stripeState(other), await stripeState(ref), 'domain state (invoices, subscriptions, customers) differs from the in-order delivery');
        break;
      case 'people':
        assert.deepEqual(await people(other), await people(ref), 'contacts/accounts differ from the in-order delivery');
        break;
      case 'facts':
        assert.deepEqual(await facts(other), await facts(ref), 'timeline facts differ from the in-order delivery');
        break;
      case 'stripe-facts':
        assert.deepEqual(await facts(other, 'stripe'), await facts(ref, 'stripe'), 'Stripe timeline facts differ from the in-order delivery');
        break;
      case 'report':
        assert.deepEqual(await recoveryReport(other, start), await recoveryReport(ref, start), 'recovery report differs from the in-order delivery');
        break;
    }
  }
}

/** Asserts one timeline fact per Stripe transition (see fact-model.ts). */
export async function assertOneFactPerTransition(h: Harness, timeline: Timeline): Promise<void> {
  const recorded = (await facts(h, 'stripe')).map((f) => `${f.name} ${f.subject}`).filter((f) => expectedStripeFacts.names.has(f.split(' ')[0]!));
  assert.deepEqual(recorded.sort(), expectedStripeFacts(timeline).sort(), 'one timeline fact per Stripe transition');
}
