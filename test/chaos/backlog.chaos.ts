// After an outage, senders flush what they buffered all at once. Defect this keeps from
// returning: 1,200 buffered product events for 10 users, flushed when PostgreSQL came back,
// stalled (856 unprocessed after 60 s, 64 `deadlock detected` on contacts ... for update).
// Here: Lifeline as a process, PostgreSQL stopped (every ingest call refused with 503 +
// retry-after, as a buffering sender would see), started again, the backlog flushed by 8
// concurrent senders through /v1/batch → every event stored once and processed within 60 s,
// no deadlock in PostgreSQL's statistics.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createSql, withDatabase } from '../../src/db/connection.ts';
import { waitSettled } from '../helpers/chaos-workload.ts';
import { startFakeResend } from '../helpers/fake-resend.ts';
import { postProduct, serviceProcess } from '../helpers/service-process.ts';
import { startStoppablePostgres } from '../helpers/stoppable-postgres.ts';

const EVENTS = 1_200;
const USERS = 10;

test(`after an outage, a flushed backlog of ${EVENTS} product events for ${USERS} users drains within 60 s without deadlocks`, async (t) => {
  const pg = await startStoppablePostgres();
  t.after(() => pg.destroy());
  const admin = createSql(pg.url, { max: 1 });
  await admin.unsafe('create database lifeline');
  await admin.end({ timeout: 1 });
  const databaseUrl = withDatabase(pg.url, 'lifeline');
  const fake = await startFakeResend({ keepBodies: false });
  t.after(() => fake.close());
  const svc = serviceProcess({ databaseUrl, resendUrl: fake.url });
  t.after(() => svc.kill9());
  await svc.start();

  const events = Array.from({ length: EVENTS }, (_, i) => {
    const userId = `backlog_user_${i % USERS}`;
    if (i < USERS) return { type: 'identify', userId, messageId: `msg_backlog_${i}`, traits: { plan: 'pro', seats: i } };
    return { type: 'track', userId, event: i % 7 === 0 ? 'Teammate Invited' : 'Project Created', messageId: `msg_backlog_${i}`, properties: { i } };
  });

  await pg.stop();
  const refused = await postProduct(svc.url, '/v1/batch', { batch: events.slice(0, 50) });
  assert.equal(refused.status, 503, 'refused while the database is down');
  assert.ok(Number(refused.headers.get('retry-after')) > 0, 'retry-after');
  await sleep(2_000);
  await pg.start();
  // The senders retry until the service answers again, then flush everything at once.
  for (let i = 0; ; i++) {
    if ((await fetch(`${svc.url}/readyz`)).status === 200) break;
    assert.ok(i < 300, '/readyz ready again within 30 s');
    await sleep(100);
  }
  const sql = createSql(databaseUrl, { max: 2 });
  t.after(() => sql.end({ timeout: 1 }));
  const [before] = await sql<{ deadlocks: number }[]>`select deadlocks::int from pg_stat_database where datname = current_database()`;
  const flushStarted = performance.now();
  const batches: object[][] = [];
  for (let i = 0; i < events.length; i += 50) batches.push(events.slice(i, i + 50));
  const sender = async () => {
    for (let b = batches.shift(); b; b = batches.shift()) {
      const res = await postProduct(svc.url, '/v1/batch', { batch: b });
      assert.equal(res.status, 200, await res.text());
    }
  };
  await Promise.all(Array.from({ length: 8 }, sender));
  const drainMs = await waitSettled(sql, 60_000);
  const totalMs = Math.round(performance.now() - flushStarted);

  const [stored] = await sql<{ n: number; done: number; dead: number }[]>`
    select count(*)::int as n, count(processed_at)::int as done, count(dead_at)::int as dead from product_events`;
  assert.deepEqual({ ...stored! }, { n: EVENTS, done: EVENTS, dead: 0 }, 'every event stored once and processed');
  // Statistics reach pg_stat_database when backends report; a fresh connection sees the counts
  // of the service's sessions up to its last report (PostgreSQL reports at least once a second).
  await sleep(1_500);
  const [after] = await sql<{ deadlocks: number }[]>`select deadlocks::int from pg_stat_database where datname = current_database()`;
  const retried = svc.logs.filter((l) => /deadlock/i.test(JSON.stringify(l))).length;
  t.diagnostic(JSON.stringify({ events: EVENTS, users: USERS, flushAndDrainMs: totalMs, drainAfterFlushMs: drainMs, deadlocks: after!.deadlocks - before!.deadlocks, deadlockLogLines: retried }));
  assert.equal(after!.deadlocks - before!.deadlocks, 0, 'no deadlock while draining');
  assert.equal(retried, 0, 'no deadlock in the logs');
  assert.equal(svc.exit(), null, 'the service is running');
});
