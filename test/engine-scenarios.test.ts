// Workflow engine scenarios on real Postgres: cross-workflow policy (dunning priority, frequency
// cap, quiet hours), wait_for_event, version pinning, restart with real pg-boss workers, and the
// webhook step with retries. Most tests use a ManualClock and drive the engine with svc.drain();
// the restart and webhook tests run the background workers on the system clock.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { ManualClock } from '../src/clock.ts';
import { loadConfig } from '../src/config.ts';
import { createSql } from '../src/db/connection.ts';
import { createLogger } from '../src/logger.ts';
import { startService, type Service } from '../src/service.ts';
import { signPayload } from '../src/workflows/webhook-delivery.ts';
import type { WorkflowDefinition } from '../src/workflows/types.ts';
import { build, WEBHOOK_SECRET, WRITE_KEY, type Built } from './helpers/build.ts';
import { createTestDatabase } from './helpers/database.ts';
import { deliver, envelope, invoice, subscription } from './helpers/stripe.ts';
import { at, DAY, HOUR, MIN, post, publish, setup, T } from './helpers/engine-scenario.ts';


type Svc = Pick<Service, 'sql' | 'clock'> & { app: NonNullable<Service['app']> };


interface MessageRow {
  run_id: number;
  step_id: string;
  workflow_key: string;
  template: string;
  to_email: string | null;
  created_at: Date;
}

async function messages(svc: Pick<Service, 'sql'>, workflow?: string): Promise<MessageRow[]> {
  // Spread: postgres.js results are an Array subclass, which deepStrictEqual tells apart from [].
  return [...await svc.sql<MessageRow[]>`
    select run_id, step_id, workflow_key, template, to_email, created_at from messages
    where ${workflow ?? null}::text is null or workflow_key = ${workflow ?? null} order by created_at, id`];
}

const sent = (rows: MessageRow[]) => rows.map((m) => [m.to_email, m.template, m.created_at.toISOString()]);

async function trace(svc: Pick<Service, 'sql'>, workflow: string) {
  return svc.sql<{ run_id: number; step_id: string | null; kind: string; reason: string | null; until: string | null; at: Date }[]>`
    select t.run_id, t.step_id, t.kind, t.data->>'reason' as reason, t.data->'wait'->>'until' as until, t.at
    from run_trace t join workflow_runs r on r.id = t.run_id
    where r.workflow_key = ${workflow} order by t.id`;
}

const track = (svc: Svc, body: Record<string, unknown>) => post(svc, '/v1/track', body);
const identify = (svc: Svc, body: Record<string, unknown>) => post(svc, '/v1/identify', body);
const group = (svc: Svc, body: Record<string, unknown>) => post(svc, '/v1/group', body);

async function until<T>(what: string, timeoutMs: number, probe: () => Promise<T | null | undefined | false>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

// ---------------------------------------------------------------------------------------------
// 1. Dunning priority

/**
 * An account (group acme, paid by Stripe customer cus_acme) with an admin and a plain member, a
 * subscription, and a failed open invoice.
 */
async function accountInDunning(svc: Built) {
  await identify(svc, { userId: 'u_admin', traits: { email: 'admin@acme.test', role: 'admin' } });
  await identify(svc, { userId: 'u_member', traits: { email: 'member@acme.test', role: 'member' } });
  await group(svc, { userId: 'u_admin', groupId: 'acme', traits: { name: 'Acme', stripeCustomerId: 'cus_acme', usage_pct: 40 } });
  await group(svc, { userId: 'u_member', groupId: 'acme', traits: {} });
  await svc.drain();
  const customer = { id: 'cus_acme', object: 'customer', email: 'billing@acme.test', name: 'Acme Billing', livemode: false, metadata: {} };
  await deliver(svc.app, envelope('customer.created', customer, { created: at(-DAY - HOUR) }));
  await deliver(svc.app, envelope('customer.subscription.created', subscription({ id: 'sub_acme', customer: 'cus_acme', unit_amount: 4900 }), { created: at(-DAY) }));
  await svc.drain();
  await deliver(svc.app, envelope('invoice.payment_failed', invoice({ id: 'in_acme', customer: 'cus_acme', customer_email: 'billing@acme.test' }), { created: T }));
  await svc.drain();
  // The dunning email goes out at once (transactional: no policy holds it).
  assert.deepEqual(sent(await messages(svc, 'billing-recovery')), [['billing@acme.test', 'dunning-soft-1', T.toISOString()]]);
}

/** Holds the expansion send while in_acme is open, then sends it once invoice.paid has arrived. */
async function assertHeldUntilPaid(svc: Built, clock: ManualClock, workflow: string, template: string, enteredAt: Date) {
  const holdEnd = new Date(enteredAt.getTime() + HOUR);
  const held = (await trace(svc, workflow)).filter((e) => e.kind === 'send_held');
  assert.equal(held.length, 1, 'the expansion send is held on entry');
  assert.equal(held[0]!.reason, 'dunning_priority');
  assert.equal(held[0]!.until, holdEnd.toISOString());
  assert.deepEqual(await messages(svc, workflow), [], 'no expansion email while the invoice is open');

  // The hold ends but the invoice is still open: held again, still nothing sent.
  clock.set(holdEnd);
  await svc.drain();
  const reheld = (await trace(svc, workflow)).filter((e) => e.kind === 'send_held');
  assert.equal(reheld.length, 2);
  assert.equal(reheld[1]!.reason, 'dunning_priority');
  assert.deepEqual(await messages(svc, workflow), []);

  // The customer pays: invoice.paid ends the dunning priority, so the held send is re-checked
  // at once (not at the hold's next hourly timer) and goes out to the account's admin.
  const paidAt = new Date(holdEnd.getTime() + 15 * MIN);
  clock.set(paidAt);
  await deliver(svc.app, envelope('invoice.paid', invoice({ id: 'in_acme', customer: 'cus_acme', status: 'paid', attempt_count: 2 }), { created: paidAt }));
  await svc.drain();
  const [recovery] = await svc.sql<{ status: string }[]>`select status from workflow_runs where workflow_key = 'billing-recovery'`;
  assert.equal(recovery!.status, 'converted');
  const sendAt = paidAt;
  assert.deepEqual(sent(await messages(svc, workflow)), [['admin@acme.test', template, sendAt.toISOString()]]);
  const released = (await trace(svc, workflow)).filter((e) => e.kind === 'woke');
  assert.ok(released.length >= 1, 'the trace says the hold was released');
  // Dunning: exactly the one email (converted before day 3).
  assert.equal((await messages(svc, 'billing-recovery')).length, 1);

  // The account upgrades (a fact on the Stripe customer's contact, not on the member who
  // triggered the run): the account-level expansion run converts.
  const upgradeAt = new Date(sendAt.getTime() + DAY);
  clock.set(upgradeAt);
  await deliver(svc.app, envelope('customer.subscription.updated', subscription({ id: 'sub_acme', customer: 'cus_acme', unit_amount: 9900 }), { created: upgradeAt, previous: { items: {} } }));
  await svc.drain();
  const [converted] = await svc.sql<{ status: string; converted_at: Date | null }[]>`select status, converted_at from workflow_runs where workflow_key = ${workflow}`;
  assert.equal(converted!.status, 'converted');
  assert.equal(converted!.converted_at?.toISOString(), upgradeAt.toISOString());
  clock.set(new Date(upgradeAt.getTime() + 10 * DAY));
  await svc.drain();
  assert.equal((await messages(svc, workflow)).length, 1, 'no upgrade reminder after the upgrade');
}

test('dunning priority: paywall-hit expansion is held while the account has a failed open invoice, then sent', async (t) => {
  const { svc, clock } = await setup(t);
  await accountInDunning(svc);

  // Paywall hits by both members count for the account; the third starts the expansion run.
  for (const [minutes, user] of [[5, 'u_member'], [10, 'u_admin'], [15, 'u_member']] as const) {
    clock.set(at(minutes * MIN));
    await track(svc, { userId: user, event: 'Paywall Hit', properties: { feature: 'sso' }, context: { groupId: 'acme' } });
    await svc.drain();
  }
  // A fourth hit, by the other member, does not start a second run for the same account.
  clock.set(at(20 * MIN));
  await track(svc, { userId: 'u_admin', event: 'Paywall Hit', properties: { feature: 'audit-log' }, context: { groupId: 'acme' } });
  await svc.drain();
  const expansionRuns = await svc.sql<{ email: string; account_id: number | null }[]>`
    select c.email, r.account_id from workflow_runs r join contacts c on c.id = r.contact_id where r.workflow_key = 'expansion'`;
  assert.deepEqual(expansionRuns.map((r) => r.email), ['member@acme.test'], 'one expansion run for the account');
  assert.notEqual(expansionRuns[0]!.account_id, null);
  await assertHeldUntilPaid(svc, clock, 'expansion', 'expansion-paywall', at(15 * MIN));
});

test('dunning priority: usage-limit expansion (group call to usage_pct 95) is held while in dunning, then sent', async (t) => {
  const { svc, clock } = await setup(t);
  await accountInDunning(svc);

  clock.set(at(15 * MIN));
  await group(svc, { userId: 'u_member', groupId: 'acme', traits: { usage_pct: 95 } });
  await svc.drain();
  // The other member's next call sees the account inside the segment too: still one run.
  clock.set(at(20 * MIN));
  await group(svc, { userId: 'u_admin', groupId: 'acme', traits: { usage_pct: 96 } });
  await svc.drain();
  assert.equal((await svc.sql`select 1 from workflow_runs where workflow_key = 'expansion-usage'`).length, 1, 'one run for the account');
  await assertHeldUntilPaid(svc, clock, 'expansion-usage', 'expansion-usage-limit', at(15 * MIN));
});

// ---------------------------------------------------------------------------------------------
// 2. wait_for_event

test('wait_for_event: wakes on the event (its properties reach later steps) and times out without it', async (t) => {
  const { svc, clock } = await setup(t, { FREQUENCY_CAP: 'off' });
  await publish(svc, {
    key: 'project-nudge',
    name: 'Project nudge',
    category: 'lifecycle',
    trigger: { type: 'event', event: 'Signed Up' },
    entry: { mode: 'once' },
    steps: [
      {
        id: 'wait_project',
        type: 'wait_for_event',
        event: 'Project Created',
        timeout: 'P2D',
        onEvent: [{ id: 'a', type: 'send_email', template: 'a', subject: 'Nice project' }],
        onTimeout: [{ id: 'b', type: 'send_email', template: 'b', subject: 'Create a project' }],
      },
      {
        id: 'by_source',
        type: 'branch',
        branches: [
          {
            label: 'started from a template',
            when: { path: 'steps.wait_project.event.properties.source', op: 'eq', value: 'template' },
            steps: [{ id: 'template_tips', type: 'send_email', template: 'template-tips', subject: 'Make the template yours' }],
          },
        ],
        otherwise: [],
      },
    ],
  }, T);

  for (const user of ['fast', 'blank', 'slow']) {
    await identify(svc, { userId: user, traits: { email: `${user}@example.test` } });
    await track(svc, { userId: user, event: 'Signed Up' });
  }
  await svc.drain();
  assert.deepEqual(await messages(svc, 'project-nudge'), []);

  clock.set(at(HOUR));
  await track(svc, { userId: 'fast', event: 'Project Created', properties: { source: 'template' } });
  await track(svc, { userId: 'blank', event: 'Project Created', properties: { source: 'blank' } });
  await svc.drain(); // no clock movement: the event itself wakes the runs
  // Contacts are processed in parallel (their relative order is not defined); compare as sets.
  assert.deepEqual(sent(await messages(svc, 'project-nudge')).sort(), [
    ['blank@example.test', 'a', at(HOUR).toISOString()],
    ['fast@example.test', 'a', at(HOUR).toISOString()],
    ['fast@example.test', 'template-tips', at(HOUR).toISOString()],
  ]);

  clock.set(at(2 * DAY - MIN));
  await svc.drain();
  assert.equal((await messages(svc, 'project-nudge')).length, 3, 'no timeout before 2 days');

  clock.set(at(2 * DAY));
  await svc.drain();
  assert.deepEqual(sent(await messages(svc, 'project-nudge')).slice(3), [['slow@example.test', 'b', at(2 * DAY).toISOString()]]);

  const runs = await svc.sql<{ email: string; status: string; kinds: string[] }[]>`
    select c.email, r.status, array(select kind from run_trace where run_id = r.id order by id) as kinds
    from workflow_runs r join contacts c on c.id = r.contact_id where r.workflow_key = 'project-nudge' order by c.email`;
  assert.deepEqual(runs.map((r) => [r.email, r.status]), [
    ['blank@example.test', 'completed'],
    ['fast@example.test', 'completed'],
    ['slow@example.test', 'completed'],
  ]);
  assert.ok(runs[1]!.kinds.includes('event_matched') && !runs[1]!.kinds.includes('timeout'));
  assert.ok(runs[2]!.kinds.includes('timeout') && !runs[2]!.kinds.includes('event_matched'));

  // A late Project Created (after the timeout) changes nothing.
  clock.set(at(3 * DAY));
  await track(svc, { userId: 'slow', event: 'Project Created', properties: { source: 'template' } });
  await svc.drain();
  assert.equal((await messages(svc, 'project-nudge')).length, 4);
});

// ---------------------------------------------------------------------------------------------
// 3. Version pinning

test('a run pinned to v1 continues on v1 after v2 is published; new runs get v2', async (t) => {
  const { svc, clock } = await setup(t);
  const definition = (template: string): WorkflowDefinition => ({
    key: 'plan-followup',
    name: 'Plan follow-up',
    category: 'lifecycle',
    trigger: { type: 'event', event: 'Plan Chosen' },
    entry: { mode: 'once' },
    steps: [
      { id: 'pause', type: 'wait', duration: 'P1D' },
      { id: 'mail', type: 'send_email', template, subject: 'How is your plan?' },
    ],
  });
  assert.equal(await publish(svc, definition('v1-mail'), T), 1);

  await identify(svc, { userId: 'early', traits: { email: 'early@example.test' } });
  await track(svc, { userId: 'early', event: 'Plan Chosen' });
  await svc.drain();

  clock.set(at(HOUR));
  assert.equal(await publish(svc, definition('v2-mail'), at(HOUR)), 2);

  clock.set(at(DAY));
  await svc.drain();
  assert.deepEqual(sent(await messages(svc, 'plan-followup')), [['early@example.test', 'v1-mail', at(DAY).toISOString()]]);

  await identify(svc, { userId: 'late', traits: { email: 'late@example.test' } });
  await track(svc, { userId: 'late', event: 'Plan Chosen' });
  await svc.drain();
  clock.set(at(2 * DAY));
  await svc.drain();
  assert.deepEqual(sent(await messages(svc, 'plan-followup')), [
    ['early@example.test', 'v1-mail', at(DAY).toISOString()],
    ['late@example.test', 'v2-mail', at(2 * DAY).toISOString()],
  ]);
  const versions = await svc.sql<{ version: number; status: string }[]>`
    select version, status from workflow_runs where workflow_key = 'plan-followup' order by id`;
  assert.deepEqual(versions.map((r) => [r.version, r.status]), [[1, 'completed'], [2, 'completed']]);
});

// ---------------------------------------------------------------------------------------------
// 4. Restart with real workers

test('restart: runs continue on a new instance (real tick → pg-boss → advanceDue), every step exactly once', async (t) => {
  const db = await createTestDatabase();
  const services: Service[] = [];
  // Looks at the database independently of either instance's pool.
  const inspect = createSql(db.url, { max: 2 });
  t.after(async () => {
    for (const s of services) await s.stop().catch(() => {});
    await inspect.end();
    await db.drop();
  });
  const config = loadConfig({
    DATABASE_URL: db.url,
    STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET,
    LIFELINE_WRITE_KEY: WRITE_KEY,
    LOG_LEVEL: process.env.LOG_LEVEL ?? 'silent',
    DB_POOL_MAX: '5',
    QUIET_HOURS: 'off',
    FREQUENCY_CAP: 'off',
    ENGINE_TICK_MS: '200',
    // Keep rendered emails (log transport) out of the project folder; no real send-rate waits.
    LIFELINE_OUTBOX_DIR: path.join(tmpdir(), 'lifeline-test-outbox', db.name),
    RESEND_RATE_LIMIT: '1000',
  });
  const start = async () => {
    const s = await startService({ config, logger: createLogger(config.logLevel), manualWorkers: false });
    services.push(s);
    return s as Service & Svc;
  };

  const a = await start();
  await publish(a, {
    key: 'three-step',
    name: 'Three steps',
    category: 'lifecycle',
    trigger: { type: 'event', event: 'Sequence Started' },
    entry: { mode: 'once' },
    steps: [
      { id: 'first', type: 'send_email', template: 'first', subject: 'One' },
      { id: 'pause_1', type: 'wait', duration: 'PT5S' },
      { id: 'second', type: 'send_email', template: 'second', subject: 'Two' },
      { id: 'pause_2', type: 'wait', duration: 'PT5S' },
      { id: 'third', type: 'send_email', template: 'third', subject: 'Three' },
    ],
  }, new Date());

  const users = ['r1', 'r2', 'r3', 'r4', 'r5'];
  for (const user of users) {
    await identify(a, { userId: user, traits: { email: `${user}@example.test` } });
    await track(a, { userId: user, event: 'Sequence Started' });
  }
  const perRun = async () => inspect<{ id: number; status: string; n: number }[]>`
    select r.id, r.status, (select count(*)::int from messages m where m.run_id = r.id) as n
    from workflow_runs r where r.workflow_key = 'three-step' order by r.id`;
  // The background loops (inbox consumer, LISTEN-driven event feed) start the runs and send 'first'.
  await until('the first sends', 15_000, async () => {
    const rows = await perRun();
    return rows.length === users.length && rows.every((r) => r.n >= 1);
  });
  // Stop instance A mid-sequence, around the moment the first 5 s waits fall due.
  await until('the first waits to fall due', 10_000, async () => {
    const [row] = await inspect<{ due: number }[]>`
      select count(*)::int as due from workflow_runs where workflow_key = 'three-step' and (due_at <= now() or queued_at is not null)`;
    return row!.due > 0;
  });
  await a.stop();
  const atStop = await perRun();
  assert.ok(atStop.every((r) => r.n >= 1 && r.n < 3 && r.status === 'active'), `instance A stopped mid-sequence: ${JSON.stringify(atStop)}`);

  const b = await start();
  const final = await until('every run to complete on instance B', 30_000, async () => {
    const rows = await perRun();
    return rows.every((r) => r.status === 'completed') && rows;
  });
  assert.equal(final.length, users.length);
  for (const run of final) assert.equal(run.n, 3, `run ${run.id} has exactly 3 messages`);

  const msgs = await b.sql<{ run_id: number; step_id: string; n: number; first: Date; last: Date }[]>`
    select run_id, step_id, count(*)::int as n, min(created_at) as first, max(created_at) as last
    from messages where workflow_key = 'three-step' group by run_id, step_id order by run_id, min(created_at)`;
  for (const run of final) {
    const steps = msgs.filter((m) => m.run_id === run.id);
    assert.deepEqual(steps.map((m) => [m.step_id, m.n]), [['first', 1], ['second', 1], ['third', 1]]);
    // Each wait really waited (5 s between sends, less the few ms between a step and its row).
    assert.ok(steps[1]!.first.getTime() - steps[0]!.first.getTime() >= 4_900);
    assert.ok(steps[2]!.first.getTime() - steps[1]!.first.getTime() >= 4_900);
  }
  const repeated = await b.sql<{ run_id: number; step_id: string | null; kind: string; n: number }[]>`
    select t.run_id, t.step_id, t.kind, count(*)::int as n from run_trace t join workflow_runs r on r.id = t.run_id
    where r.workflow_key = 'three-step' and t.kind in ('entered', 'send', 'wait', 'woke', 'completed')
    group by t.run_id, t.step_id, t.kind having count(*) > 1`;
  assert.deepEqual([...repeated], [], 'no step executed twice');
  const kinds = await b.sql<{ kinds: string[] }[]>`
    select array_agg(t.kind || ':' || coalesce(t.step_id, '-') order by t.id) as kinds
    from run_trace t join workflow_runs r on r.id = t.run_id where r.workflow_key = 'three-step' group by t.run_id`;
  for (const row of kinds) {
    assert.deepEqual(row.kinds, [
      'entered:-', 'send:first', 'wait:pause_1', 'woke:pause_1', 'send:second', 'wait:pause_2', 'woke:pause_2', 'send:third', 'completed:-',
    ]);
  }
});

// ---------------------------------------------------------------------------------------------
// 5. The webhook step

test('webhook step: a 500 is retried by pg-boss; delivered on attempt 2, signed, with an idempotency key', async (t) => {
  const requests: { headers: IncomingHttpHeaders; body: string }[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => (body += chunk));
    req.on('end', () => {
      requests.push({ headers: req.headers, body });
      res.statusCode = requests.length === 1 ? 500 : 200;
      res.end(requests.length === 1 ? 'try again' : 'ok');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const { port } = server.address() as AddressInfo;

  const svc = await build(t, { manualWorkers: false, env: { QUIET_HOURS: 'off', ENGINE_TICK_MS: '200' } });
  await publish(svc, {
    key: 'crm-sync',
    name: 'CRM sync',
    category: 'transactional',
    trigger: { type: 'event', event: 'Deal Won' },
    entry: { mode: 'once' },
    steps: [{ id: 'notify_crm', type: 'webhook', url: `http://127.0.0.1:${port}/hooks/lifeline`, body: { stage: 'won' } }],
  }, new Date());
  await identify(svc, { userId: 'deal', traits: { email: 'deal@example.test' } });
  await track(svc, { userId: 'deal', event: 'Deal Won', properties: { amount: 1200 } });

  const delivery = await until('the webhook to be delivered', 45_000, async () => {
    const [d] = await svc.sql<{ id: string; run_id: number; status: string; attempts: number; last_error: string | null; delivered_at: Date | null }[]>`
      select id, run_id, status, attempts, last_error, delivered_at from webhook_deliveries`;
    return d?.status === 'delivered' && d;
  });
  assert.equal(delivery.attempts, 2);
  assert.equal(delivery.last_error, null);
  assert.ok(delivery.delivered_at);
  assert.equal(delivery.id, `${delivery.run_id}:notify_crm`);
  assert.equal(requests.length, 2, 'one failed attempt, one successful retry');

  for (const request of requests) {
    assert.equal(request.headers['idempotency-key'], delivery.id);
    assert.equal(request.headers['content-type'], 'application/json');
    const signature = String(request.headers['lifeline-signature']);
    const m = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(signature);
    assert.ok(m, `signature header ${signature}`);
    assert.equal(signPayload(svc.secret, request.body, new Date(Number(m[1]) * 1000)), signature);
    assert.notEqual(signPayload('some-other-secret', request.body, new Date(Number(m[1]) * 1000)), signature);
    assert.ok(Math.abs(Number(m[1]) * 1000 - Date.now()) < 120_000, 'signature timestamp is current');
    assert.deepEqual(JSON.parse(request.body), { id: delivery.id, runId: delivery.run_id, stepId: 'notify_crm', data: { stage: 'won' } });
  }
  assert.equal(requests[0]!.body, requests[1]!.body, 'a retry sends the same payload');
});

// ---------------------------------------------------------------------------------------------
// 6. Frequency cap

test('frequency cap: the second lifecycle email of the day is held, not lost, and sent 24 h after the first', async (t) => {
  const { svc, clock } = await setup(t, { FREQUENCY_CAP: 'PT24H' });
  await publish(svc, {
    key: 'welcome-tips',
    name: 'Welcome tips',
    category: 'lifecycle',
    trigger: { type: 'event', event: 'Signed Up' },
    entry: { mode: 'once' },
    steps: [
      { id: 'pause', type: 'wait', duration: 'P1DT1H' },
      { id: 'tips', type: 'send_email', template: 'welcome-tips', subject: 'Three tips' },
    ],
  }, T);
  await identify(svc, { userId: 'capped', traits: { email: 'capped@example.test' } });
  await track(svc, { userId: 'capped', event: 'Signed Up' });
  await svc.drain();

  // Day 1, 10:00: activation's create-project email (no project after a day).
  clock.set(at(DAY));
  await svc.drain();
  assert.deepEqual(sent(await messages(svc)), [['capped@example.test', 'activation-create-project', at(DAY).toISOString()]]);

  // Day 1, 11:00: the tips email wants out too, but the cap holds it until day 2, 10:00.
  clock.set(at(DAY + HOUR));
  await svc.drain();
  const held = (await trace(svc, 'welcome-tips')).filter((e) => e.kind === 'send_held');
  assert.equal(held.length, 1);
  assert.equal(held[0]!.reason, 'frequency_cap');
  assert.equal(held[0]!.until, at(2 * DAY).toISOString());
  assert.deepEqual(await messages(svc, 'welcome-tips'), []);

  clock.set(at(2 * DAY - MIN));
  await svc.drain();
  assert.deepEqual(await messages(svc, 'welcome-tips'), []);

  clock.set(at(2 * DAY));
  await svc.drain();
  assert.deepEqual(sent(await messages(svc, 'welcome-tips')), [['capped@example.test', 'welcome-tips', at(2 * DAY).toISOString()]]);
  const [run] = await svc.sql<{ status: string }[]>`select status from workflow_runs where workflow_key = 'welcome-tips'`;
  assert.equal(run!.status, 'completed');

  // Activation's next email (day 3) is 24 h after the tips: not held again.
  clock.set(at(3 * DAY));
  await svc.drain();
  assert.deepEqual(sent(await messages(svc)).map((m) => m[1]), ['activation-create-project', 'welcome-tips', 'activation-connect-integration']);
});

test('due runs advance in one batch: different contacts all move; two sends of one contact still respect the cap', async (t) => {
  const { svc, clock } = await setup(t, { FREQUENCY_CAP: 'PT24H' });
  for (const key of ['beta-a', 'beta-b']) {
    await publish(svc, {
      key,
      name: key,
      category: 'lifecycle',
      trigger: { type: 'event', event: 'Joined Beta' },
      entry: { mode: 'once' },
      steps: [
        { id: 'pause', type: 'wait', duration: 'P1D' },
        { id: 'hello', type: 'send_email', template: 'welcome-tips', subject: `Hello from ${key}` },
      ],
    }, T);
  }
  for (const user of ['u1', 'u2', 'u3', 'u4', 'u5']) {
    await identify(svc, { userId: user, traits: { email: `${user}@example.test` } });
    await track(svc, { userId: user, event: 'Joined Beta' });
  }
  await svc.drain();
  const due = await svc.sql<{ id: number }[]>`select id from workflow_runs where workflow_key in ('beta-a', 'beta-b') order by id`;
  assert.equal(due.length, 10);

  clock.set(at(DAY));
  assert.equal(await svc.engine.advanceDueBatch(due.map((r) => r.id)), 10);
  const sentTo = await svc.sql<{ to_email: string; n: number }[]>`
    select to_email, count(*)::int as n from messages where workflow_key in ('beta-a', 'beta-b') group by to_email order by to_email`;
  // every contact got exactly one of its two emails; the other is held by the cap, not lost
  assert.deepEqual(sentTo.map((r) => [r.to_email, r.n]), ['u1', 'u2', 'u3', 'u4', 'u5'].map((u) => [`${u}@example.test`, 1]));
  const held = await svc.sql<{ n: number }[]>`
    select count(*)::int as n from run_trace tr join workflow_runs r on r.id = tr.run_id
    where r.workflow_key in ('beta-a', 'beta-b') and tr.kind = 'send_held'`;
  assert.equal(held[0]!.n, 5);
  // a second look at the same (now moved-on) runs is a no-op
  assert.equal(await svc.engine.advanceDueBatch(due.map((r) => r.id)), 0);
});

test('a campaign of due runs is handed to pg-boss as a bounded stream, not all at once', async (t) => {
  const { svc, clock } = await setup(t, { FREQUENCY_CAP: 'off' });
  const version = await publish(svc, {
    key: 'mass',
    name: 'mass',
    category: 'marketing',
    trigger: { type: 'event', event: 'Mass' },
    entry: { mode: 'once' },
    steps: [
      { id: 'pause', type: 'wait', duration: 'PT1H' },
      { id: 'hello', type: 'send_email', template: 'winback-offer', subject: 'Hello' },
    ],
  }, T);
  // 2,500 runs whose wait ends at T + 1 h, made the way a bulk import would.
  await svc.sql`
    insert into contacts (user_id, email, created_at, updated_at)
    select 'mass-' || i, 'mass' || i || '@example.test', ${T}, ${T} from generate_series(1, 2500) i`;
  await svc.sql`
    insert into workflow_runs (workflow_key, version, contact_id, run_key, status, state, due_at, started_at, updated_at)
    select 'mass', ${version}, c.id, 'once', 'active',
      jsonb_build_object('status', 'active', 'stepId', 'pause', 'wait', jsonb_build_object('kind', 'time', 'until', ${at(HOUR).toISOString()}::text),
        'variants', '{}'::jsonb, 'holdout', false,
        'vars', jsonb_build_object('trigger', jsonb_build_object('name', 'Mass', 'properties', '{}'::jsonb, 'occurredAt', ${T.toISOString()}::text), 'matched', '{}'::jsonb),
        'startedAt', ${T.toISOString()}::text, 'endedAt', null, 'endReason', null, 'convertedAt', null),
      ${at(HOUR)}, ${T}, ${T}
    from contacts c where c.user_id like 'mass-%'`;
  const jobs = async () => (await svc.sql<{ n: number }[]>`select count(*)::int as n from pgboss.job where name = 'workflow.due'`)[0]!.n;

  assert.equal(await svc.engine.tick(), 0, 'nothing due yet');
  clock.set(at(HOUR));
  assert.equal(await svc.engine.tick(), 1000);
  assert.equal(await svc.engine.tick(), 1000);
  assert.equal(await svc.engine.tick(), 0, 'at most 2,000 handed over and not yet advanced');
  assert.equal(await jobs(), 2000);

  // The worker advances a batch: room for as many more.
  const handed = await svc.sql<{ id: number }[]>`select id from workflow_runs where queued_at is not null order by id limit 300`;
  assert.equal(await svc.engine.advanceDueBatch(handed.map((r) => r.id)), 300);
  assert.equal(await svc.engine.tick(), 300);
  // A job lost for 5 minutes is handed over again (and the cap counts only recent hand-overs).
  clock.set(at(HOUR + 5 * MIN + 1000));
  assert.equal(await svc.engine.tick(), 1000);
});

// ---------------------------------------------------------------------------------------------
// 7. Quiet hours

test('quiet hours: a send due at 23:00 New York time waits until 08:00 New York time', async (t) => {
  const { svc, clock } = await setup(t, { QUIET_HOURS: '21:00-08:00', FREQUENCY_CAP: 'off' });
  await publish(svc, {
    key: 'evening-digest',
    name: 'Evening digest',
    category: 'lifecycle',
    trigger: { type: 'event', event: 'Report Scheduled' },
    entry: { mode: 'once' },
    // Entered Monday 10:00 UTC; due Tuesday 04:00 UTC = Monday 23:00 in New York (EST, UTC-5).
    steps: [
      { id: 'pause', type: 'wait', duration: 'PT18H' },
      { id: 'digest', type: 'send_email', template: 'digest', subject: 'Your digest' },
    ],
  }, T);
  await identify(svc, { userId: 'ny', traits: { email: 'ny@example.test', timezone: 'America/New_York' } });
  await track(svc, { userId: 'ny', event: 'Report Scheduled' });
  await svc.drain();

  const due = new Date('2026-03-03T04:00:00Z');
  const morning = new Date('2026-03-03T13:00:00Z'); // 08:00 in New York
  clock.set(due);
  await svc.drain();
  const held = (await trace(svc, 'evening-digest')).filter((e) => e.kind === 'send_held');
  assert.equal(held.length, 1);
  assert.equal(held[0]!.reason, 'quiet_hours');
  assert.equal(held[0]!.until, morning.toISOString());
  assert.deepEqual(await messages(svc, 'evening-digest'), []);

  clock.set(new Date(morning.getTime() - MIN));
  await svc.drain();
  assert.deepEqual(await messages(svc, 'evening-digest'), []);

  clock.set(morning);
  await svc.drain();
  assert.deepEqual(sent(await messages(svc, 'evening-digest')), [['ny@example.test', 'digest', morning.toISOString()]]);

  // Across the DST change: due Saturday 23:00 EST (Sunday 04:00 UTC); 08:00 on Sunday 8 March
  // is already EDT (UTC-4), i.e. 12:00 UTC, not 13:00.
  clock.set(new Date('2026-03-07T10:00:00Z'));
  await identify(svc, { userId: 'ny2', traits: { email: 'ny2@example.test', timezone: 'America/New_York' } });
  await track(svc, { userId: 'ny2', event: 'Report Scheduled' });
  await svc.drain();
  clock.set(new Date('2026-03-08T04:00:00Z'));
  await svc.drain();
  const dstHold = (await trace(svc, 'evening-digest')).filter((e) => e.kind === 'send_held').at(-1)!;
  assert.equal(dstHold.reason, 'quiet_hours');
  assert.equal(dstHold.until, '2026-03-08T12:00:00.000Z');
  clock.set(new Date('2026-03-08T12:00:00Z'));
  await svc.drain();
  assert.deepEqual(sent(await messages(svc, 'evening-digest')).at(-1), ['ny2@example.test', 'digest', '2026-03-08T12:00:00.000Z']);
});
