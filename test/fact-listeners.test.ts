// Product facts no workflow hears are recorded as already consumed (src/workflows/fact-listeners.ts):
// which names are heard, that skipped facts never reach the engine's queue, that publishing a
// version that hears a skipped name puts back the facts the engine had not reached (and only
// those), and that publishing waits for a product batch recording facts under the old set.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { builtinDefinitions } from '../src/workflows/builtin/index.ts';
import { factListeners, listenedFactNames, skippable } from '../src/workflows/fact-listeners.ts';
import { putWorkflow } from '../src/workflows/workflow-store.ts';
import { recordDomainEvents } from '../src/timeline/domain-event-store.ts';
import type { WorkflowDefinition } from '../src/workflows/types.ts';
import { post, publish, setup } from './helpers/engine-scenario.ts';

const beta = (key: string): WorkflowDefinition => ({
  key,
  name: 'Beta welcome',
  category: 'lifecycle',
  trigger: { type: 'event', event: 'Beta Joined' },
  entry: { mode: 'once' },
  steps: [{ id: 'hello', type: 'send_email', template: 'onboarding-day1', subject: 'Welcome to the beta' }],
});

test('the heard names: triggers, waits, goals and exits of every version, identify, group and hold releases', () => {
  const names = listenedFactNames(builtinDefinitions);
  assert.notEqual(names, 'all');
  const heard = names as ReadonlySet<string>;
  for (const name of ['invoice.payment_failed', 'invoice.paid', 'Project Created', 'Signed Up', 'identify', 'group', 'subscription.canceled']) {
    assert.ok(heard.has(name), `${name} is heard`);
  }
  for (const name of ['Dashboard Viewed', 'Feature Used', 'Beta Joined']) assert.ok(!heard.has(name), `${name} is not heard`);

  const withBeta = listenedFactNames([...builtinDefinitions, beta('beta')]) as ReadonlySet<string>;
  assert.ok(withBeta.has('Beta Joined'));
  const waiting: WorkflowDefinition = {
    ...beta('waits'),
    trigger: { type: 'event', event: 'Signed Up' },
    steps: [{ id: 'w', type: 'wait_for_event', event: 'Invite Sent', timeout: 'P2D', onEvent: [], onTimeout: [] }],
  };
  assert.ok((listenedFactNames([waiting]) as ReadonlySet<string>).has('Invite Sent'), 'a wait_for_event name is heard');
  // a goal written as a condition can be reached by any fact: nothing may be skipped
  assert.equal(listenedFactNames([...builtinDefinitions, { ...beta('cond'), goal: { condition: { path: 'contact.traits.plan', op: 'eq', value: 'pro' } } } as WorkflowDefinition]), 'all');

  assert.equal(skippable(heard, 'Dashboard Viewed', 7), true);
  assert.equal(skippable(heard, 'Project Created', 7), false);
  assert.equal(skippable(heard, 'Project Created', null), true, 'the engine ignores a fact without a contact');
  assert.equal(skippable('all', 'Dashboard Viewed', 7), false);
});

test('an unheard product event is recorded as consumed and never queued for the engine; a heard one is queued', async (t) => {
  const { svc } = await setup(t);
  await post(svc, '/v1/track', { userId: 'u1', event: 'Dashboard Viewed', properties: { page: 'home' } });
  await post(svc, '/v1/track', { userId: 'u1', event: 'Project Created', properties: {} });
  await svc.inbox.drain();
  const rows = await svc.sql<{ name: string; engine_skipped: boolean; engine_processed_at: Date | null; recorded_at: Date }[]>`
    select name, engine_skipped, engine_processed_at, recorded_at from domain_events where name in ('Dashboard Viewed', 'Project Created') order by id`;
  assert.deepEqual(rows.map((r) => [r.name, r.engine_skipped, r.engine_processed_at !== null]), [
    ['Dashboard Viewed', true, true],
    ['Project Created', false, false],
  ]);
  assert.equal(rows[0]!.engine_processed_at!.getTime(), rows[0]!.recorded_at.getTime());
  // the skipped fact still counts where facts are read (timeline, conditions): it is on the timeline
  const [queued] = await svc.sql<{ n: number }[]>`select count(*)::int as n from domain_events where engine_processed_at is null`;
  assert.equal(queued!.n, 1);
});

test('recordDomainEvents records a batch with some facts skipped in one statement (the set-based path, not a fallback)', async (t) => {
  const { svc, clock } = await setup(t);
  const [contact] = await svc.sql<{ id: number }[]>`insert into contacts (user_id, traits, created_at, updated_at) values ('u1', '{}', ${clock.now()}, ${clock.now()}) returning id`;
  const fact = (name: string, n: number) => ({
    name, source: 'product' as const, sourceId: `m${n}`, dedupeKey: `product:m${n}`, contactId: contact!.id, accountId: null,
    stripeCustomerId: null, subjectId: null, properties: { n }, occurredAt: clock.now(),
  });
  const listened = listenedFactNames(builtinDefinitions);
  const fresh = await recordDomainEvents(svc.sql, [fact('Dashboard Viewed', 1), fact('Project Created', 2), fact('Feature Used', 3)], clock.now(), listened);
  assert.equal(fresh.size, 3);
  const rows = await svc.sql<{ name: string; engine_skipped: boolean; done: boolean }[]>`
    select name, engine_skipped, engine_processed_at is not null as done from domain_events order by id`;
  assert.deepEqual(rows.map((r) => [r.name, r.engine_skipped, r.done]), [
    ['Dashboard Viewed', true, true], ['Project Created', false, false], ['Feature Used', true, true],
  ]);
  // without a set (Stripe facts, pre-dunning): nothing is skipped
  await recordDomainEvents(svc.sql, [fact('Dashboard Viewed', 4)], clock.now());
  const [last] = await svc.sql<{ engine_skipped: boolean }[]>`select engine_skipped from domain_events order by id desc limit 1`;
  assert.equal(last!.engine_skipped, false);
});

test('publishing a version that hears a skipped name re-queues the skipped facts the engine had not reached, and only those', async (t) => {
  const { svc, clock } = await setup(t);
  // u2's fact: recorded and skipped while the engine had nothing left to do — without skipping,
  // the engine would have consumed it before the workflow existed.
  await post(svc, '/v1/identify', { userId: 'u2', traits: { email: 'u2@example.test' } });
  await post(svc, '/v1/track', { userId: 'u2', event: 'Beta Joined', properties: {} });
  await svc.drain();
  // u1's: skipped behind a fact of u1 the engine has not worked yet (its lane is behind).
  await post(svc, '/v1/identify', { userId: 'u1', traits: { email: 'u1@example.test' } });
  await post(svc, '/v1/track', { userId: 'u1', event: 'Beta Joined', properties: {} });
  await svc.inbox.drain();
  const skipped = await svc.sql<{ email: string; engine_skipped: boolean }[]>`
    select c.email, d.engine_skipped from domain_events d join contacts c on c.id = d.contact_id where d.name = 'Beta Joined' order by d.id`;
  assert.deepEqual(skipped.map((r) => [r.email, r.engine_skipped]), [['u2@example.test', true], ['u1@example.test', true]]);

  await publish(svc, beta('beta'), clock.now());
  const after = await svc.sql<{ email: string; engine_skipped: boolean; pending: boolean }[]>`
    select c.email, d.engine_skipped, d.engine_processed_at is null as pending
    from domain_events d join contacts c on c.id = d.contact_id where d.name = 'Beta Joined' order by d.id`;
  assert.deepEqual(after.map((r) => [r.email, r.engine_skipped, r.pending]), [['u2@example.test', true, false], ['u1@example.test', false, true]]);

  await svc.drain();
  const runs = await svc.sql<{ email: string }[]>`
    select c.email from workflow_runs r join contacts c on c.id = r.contact_id where r.workflow_key = 'beta' order by r.id`;
  assert.deepEqual(runs.map((r) => r.email), ['u1@example.test']);
  // from now on the name is heard: a new Beta Joined is queued, not skipped
  await post(svc, '/v1/track', { userId: 'u2', event: 'Beta Joined', properties: { again: true } });
  await svc.inbox.drain();
  const [latest] = await svc.sql<{ engine_skipped: boolean }[]>`select engine_skipped from domain_events where name = 'Beta Joined' order by id desc limit 1`;
  assert.equal(latest!.engine_skipped, false);
});

test('a version waits for a product batch that read the heard names before it, and batches after it read the new names', async (t) => {
  const { svc, clock } = await setup(t);
  const listeners = factListeners();
  let publishedAt = 0;
  let batchEndedAt = 0;
  let publishing: Promise<unknown> | null = null;
  await svc.sql.begin(async (tx) => {
    const before = await listeners.current(tx);
    assert.ok(before !== 'all' && !before.has('Beta Joined'));
    publishing = svc.sql.begin((p) => putWorkflow(p, beta('beta'), clock.now())).then(() => (publishedAt = performance.now()));
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(publishedAt, 0, 'the version did not commit while the batch holds the shared lock');
    batchEndedAt = performance.now();
  });
  await publishing;
  assert.ok(publishedAt >= batchEndedAt, 'the version committed after the batch');
  const next = await svc.sql.begin((tx) => listeners.current(tx));
  assert.ok(next !== 'all' && next.has('Beta Joined'), 'a later batch reads the new version (the cache follows the version count)');
});
