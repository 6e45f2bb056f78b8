// Product-event inbox under realistic concurrent load: several lanes in several consumers (as
// two instances against one PostgreSQL would run them), many users per account, identify /
// group / track mixed, sent through /v1/batch. Defect this pins: parallel lanes deadlocked on
// contacts/accounts (`deadlock detected`, hundreds of retries) and collapsed to ~11 events/s.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import { build, postBatches } from './helpers/build.ts';
import { createSql } from '../src/db/connection.ts';
import { createInboxConsumer } from '../src/worker/inbox-consumer.ts';

const USERS = 240;
const ACCOUNTS = 30;
const EVENTS_PER_USER = 6;

function traffic(): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  const base = Date.parse('2026-03-01T10:00:00Z');
  for (let round = 0; round < EVENTS_PER_USER; round++) {
    for (let u = 0; u < USERS; u++) {
      const userId = `u${u}`;
      const groupId = `acct${u % ACCOUNTS}`;
      const timestamp = new Date(base + (round * USERS + u) * 1000).toISOString();
      const messageId = `m-${u}-${round}`;
      if (round === 0) out.push({ type: 'identify', messageId, userId, anonymousId: `anon${u}`, timestamp, traits: { email: `u${u}@example.test`, plan: 'free', round }, context: { groupId } });
      else if (round === 1) out.push({ type: 'group', messageId, userId, groupId, timestamp, traits: { name: `Account ${u % ACCOUNTS}`, seats: u } });
      else if (round === 3) out.push({ type: 'identify', messageId, userId, timestamp, traits: { plan: 'pro', round }, context: { groupId } });
      else out.push({ type: 'track', messageId, userId, event: `Event ${round}`, timestamp, properties: { round }, context: { groupId } });
    }
  }
  return out;
}

test('4 lanes in each of two consumers: no deadlock, no retry, per-contact order kept, every event on the timeline', async (t) => {
  const svc = await build(t);
  const messages = traffic();
  await postBatches(svc, messages);
  const [before] = await svc.sql<{ deadlocks: number }[]>`select deadlocks::int from pg_stat_database where datname = current_database()`;

  // Two consumers with their own pools, 4 lanes each, small batches so lanes interleave a lot.
  const pools = [createSql(svc.databaseUrl, { max: 5 }), createSql(svc.databaseUrl, { max: 5 })];
  const logger = pino({ level: process.env.LANES_LOG ?? 'silent' });
  const consumers = pools.map((sql) => createInboxConsumer({ sql, clock: svc.clock, logger }, { concurrency: 4, batchSize: 25 }));
  await Promise.all(consumers.map((c) => c.drain()));
  await Promise.all(consumers.map((c) => c.drain()));
  // Ending the pools makes their backends exit, which flushes their statistics (deadlock count).
  await Promise.all(pools.map((p) => p.end({ timeout: 5 })));
  await new Promise((r) => setTimeout(r, 300));

  const errors = await svc.sql<{ message_id: string; last_error: string }[]>`select message_id, last_error from product_events where last_error is not null limit 5`;
  assert.deepEqual([...errors], [], 'no product event failed');
  const [counts] = await svc.sql<{ total: number; done: number; retried: number }[]>`
    select count(*)::int as total, count(processed_at)::int as done, count(*) filter (where attempts > 1)::int as retried from product_events`;
  assert.equal(counts!.total, messages.length);
  assert.equal(counts!.done, messages.length, 'every event processed');
  assert.equal(counts!.retried, 0, 'no event needed a retry (a deadlock or conflict would force one)');

  await svc.sql`select pg_stat_clear_snapshot()`;
  const [after] = await svc.sql<{ deadlocks: number }[]>`select deadlocks::int from pg_stat_database where datname = current_database()`;
  assert.equal(after!.deadlocks - before!.deadlocks, 0, 'pg_stat_database.deadlocks did not move');

  // Every event on the timeline, attached to its user's contact, in the order the user sent them.
  const timeline = await svc.sql<{ user_id: string; source_id: string }[]>`
    select c.user_id, d.source_id from domain_events d join contacts c on c.id = d.contact_id
    where d.source = 'product' order by d.id`;
  assert.equal(timeline.length, messages.length);
  const seen = new Map<string, number>();
  for (const row of timeline) {
    const round = Number(row.source_id.split('-')[2]);
    const last = seen.get(row.user_id) ?? -1;
    assert.ok(round > last, `events of ${row.user_id} recorded out of order (${round} after ${last})`);
    seen.set(row.user_id, round);
  }
  assert.equal(seen.size, USERS);

  // Latest traits won; accounts and memberships are all there.
  const [contact] = await svc.sql<{ traits: Record<string, unknown> }[]>`select traits from contacts where user_id = 'u7'`;
  assert.equal(contact!.traits.plan, 'pro');
  assert.equal(contact!.traits.email, 'u7@example.test');
  const [acc] = await svc.sql<{ n: number; members: number }[]>`select (select count(*)::int from accounts) as n, (select count(*)::int from account_members) as members`;
  assert.equal(acc!.n, ACCOUNTS);
  assert.equal(acc!.members, USERS);
  assert.equal((await svc.sql`select id from contacts`).length, USERS, 'one contact per user');
});
