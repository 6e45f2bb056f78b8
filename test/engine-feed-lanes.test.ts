// The engine's timeline feed runs in lanes (ENGINE_FEED_QUEUE: facts partitioned by contact):
// several lanes in two engines (as two worker instances against one PostgreSQL) feed a burst of
// product facts of many users sharing accounts. Pins: no deadlock, no retry, every fact consumed
// once, and each user's facts reach the runs in order — "Project Created" fed before "Signed Up"
// would find no waiting run, and that user's email would be missing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import { build, ADMIN_TOKEN, postBatches } from './helpers/build.ts';
import { createSql } from '../src/db/connection.ts';
import { createEngine } from '../src/workflows/engine.ts';

const USERS = 160;
const ACCOUNTS = 16;

test('feed lanes in two engines: no deadlock, no retry, per-contact order kept, every fact consumed once', async (t) => {
  const svc = await build(t, { env: { FREQUENCY_CAP: 'off', QUIET_HOURS: 'off' } });
  const put = await svc.app.inject({
    method: 'PUT',
    url: '/v1/workflows/lanes-activation',
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    payload: {
      key: 'lanes-activation',
      name: 'Lanes activation',
      category: 'lifecycle',
      trigger: { type: 'event', event: 'Signed Up' },
      entry: { mode: 'once' },
      steps: [{ id: 'w', type: 'wait_for_event', event: 'Project Created', timeout: 'P2D', onEvent: [{ id: 'yay', type: 'send_email', template: 'onboarding-day1', subject: 'Nice project' }], onTimeout: [] }],
    },
  });
  assert.ok(put.statusCode < 300, put.body);

  const base = Date.parse('2026-03-01T10:00:00Z');
  const messages: Record<string, unknown>[] = [];
  const steps = ['identify', 'group', 'Signed Up', 'Page Viewed', 'Project Created'] as const;
  steps.forEach((step, round) => {
    for (let u = 0; u < USERS; u++) {
      const common = { messageId: `m-${u}-${round}`, userId: `u${u}`, timestamp: new Date(base + (round * USERS + u) * 1000).toISOString(), context: { groupId: `acct${u % ACCOUNTS}` } };
      if (step === 'identify') messages.push({ ...common, type: 'identify', traits: { email: `u${u}@example.test` } });
      else if (step === 'group') messages.push({ ...common, type: 'group', groupId: `acct${u % ACCOUNTS}`, traits: { name: `Account ${u % ACCOUNTS}`, usage_pct: u % 100 } });
      else messages.push({ ...common, type: 'track', event: step });
    }
  });
  await postBatches(svc, messages);
  await svc.inbox.drain();
  const [facts] = await svc.sql<{ n: number; lanes: number }[]>`select count(*)::int as n, count(distinct engine_lane)::int as lanes from domain_events where engine_processed_at is null`;
  assert.ok(facts!.n >= USERS * 3, `the burst is on the timeline, unconsumed (${facts!.n})`);
  assert.equal(facts!.lanes, 8, 'the facts spread over every lane');
  const [before] = await svc.sql<{ deadlocks: number }[]>`select deadlocks::int from pg_stat_database where datname = current_database()`;

  // Two engines with their own pools, three lanes each, all feeding at once.
  const pools = [createSql(svc.databaseUrl, { max: 5 }), createSql(svc.databaseUrl, { max: 5 })];
  const logger = pino({ level: process.env.LANES_LOG ?? 'silent' });
  const engines = pools.map((sql) => createEngine({ sql, boss: svc.boss, clock: svc.clock, logger, config: svc.config }));
  const fed = await Promise.all(engines.flatMap((engine) => [engine.processEvents(), engine.processEvents(), engine.processEvents()]));
  assert.ok(fed.filter((n) => n > 0).length >= 2, `more than one lane fed facts (${fed.join(', ')})`);
  await Promise.all(pools.map((p) => p.end({ timeout: 5 })));
  await new Promise((r) => setTimeout(r, 300));

  const [counts] = await svc.sql<{ total: number; done: number; retried: number; failed: number; skipped: number; skippedViews: number }[]>`
    select count(*)::int as total, count(engine_processed_at)::int as done,
           count(*) filter (where not engine_skipped and engine_attempts <> 1)::int as retried, count(engine_error)::int as failed,
           count(*) filter (where engine_skipped)::int as skipped,
           count(*) filter (where engine_skipped and name = 'Page Viewed' and engine_attempts = 0)::int as "skippedViews"
    from domain_events`;
  assert.equal(counts!.done, counts!.total, 'every fact consumed');
  // no workflow hears Page Viewed: recorded consumed, never claimed by a lane (fact-listeners.ts)
  assert.equal(counts!.skipped, USERS);
  assert.equal(counts!.skippedViews, USERS);
  assert.equal(counts!.failed, 0, 'no fact failed');
  assert.equal(counts!.retried, 0, 'each fact consumed in one attempt (a deadlock or a lost lease would force a retry)');
  await svc.sql`select pg_stat_clear_snapshot()`;
  const [after] = await svc.sql<{ deadlocks: number }[]>`select deadlocks::int from pg_stat_database where datname = current_database()`;
  assert.equal(after!.deadlocks - before!.deadlocks, 0, 'pg_stat_database.deadlocks did not move');

  // In order per user: every user's run saw Project Created after Signed Up and queued one email.
  const runs = await svc.sql<{ n: number; converted: number }[]>`
    select count(*)::int as n, count(*) filter (where status <> 'active')::int as converted from workflow_runs where workflow_key = 'lanes-activation'`;
  assert.equal(runs[0]!.n, USERS, 'one run per user');
  const emails = await svc.sql<{ to_email: string; n: number }[]>`
    select m.to_email, count(*)::int as n from messages m join workflow_runs r on r.id = m.run_id
    where r.workflow_key = 'lanes-activation' group by m.to_email`;
  assert.equal(emails.length, USERS, 'every user got the email: their Project Created reached the waiting run');
  assert.ok(emails.every((e) => e.n === 1), 'never twice');
});
