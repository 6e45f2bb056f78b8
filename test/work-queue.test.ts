// The shared work queue (src/work/work-queue.ts) on the product inbox: leases and fencing
// tokens, an expired lease taken over, bounded retries ending in a dead letter that the admin
// API lists and replays.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ManualClock } from '../src/clock.ts';
import type { Tx } from '../src/db/connection.ts';
import { LeaseLostError } from '../src/work/work-queue.ts';
import { ADMIN_TOKEN, build, WRITE_KEY, type Built } from './helpers/build.ts';

async function send(svc: Built, message: Record<string, unknown>) {
  const res = await svc.app.inject({
    method: 'POST',
    url: '/v1/batch',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${WRITE_KEY}` },
    payload: JSON.stringify({ batch: [message] }),
  });
  assert.equal(res.statusCode, 200, res.body);
}

test('a worker paused past its lease cannot complete: the new holder does the item, once', async (t) => {
  const svc = await build(t, { clock: 'manual' });
  const clock = svc.clock as ManualClock;
  const queue = svc.inbox.queues.product;
  await send(svc, { type: 'track', userId: 'u1', messageId: 'm1', event: 'Clicked' });

  const paused = await queue.claim(100);
  assert.ok(paused);
  assert.equal(paused.ids.length, 1);
  // While the lease runs, nobody else gets the partition.
  assert.equal(await queue.claim(100), null);

  clock.advance(queue.spec.leaseMs + 1);
  assert.equal(await svc.inbox.drain(), 1, 'the item is taken over and processed');
  const [row] = await svc.sql<{ processed: boolean; attempts: number }[]>`select processed_at is not null as processed, attempts from product_events`;
  assert.equal(row!.processed, true);
  assert.equal(row!.attempts, 2, 'the expired lease counted as a failed attempt');

  // The paused worker wakes up: its token is stale, it cannot hold the partition or finish.
  await assert.rejects(
    svc.sql.begin(async (tx: Tx) => {
      await queue.hold(tx, paused);
      await queue.finish(tx, paused, paused.ids, []);
    }),
    LeaseLostError,
  );
  assert.equal(await queue.extend(paused), false);
  const facts = await svc.sql`select id from domain_events where source_id = 'm1'`;
  assert.equal(facts.length, 1, 'one fact: the item was done once');
});

test('a holder inside its transaction keeps the partition even past the lease end', async (t) => {
  const svc = await build(t, { clock: 'manual' });
  const clock = svc.clock as ManualClock;
  const queue = svc.inbox.queues.product;
  await send(svc, { type: 'track', userId: 'u1', messageId: 'm1', event: 'Clicked' });
  const lease = (await queue.claim(100))!;
  await svc.sql.begin(async (tx: Tx) => {
    await queue.hold(tx, lease);
    clock.advance(queue.spec.leaseMs * 2);
    // Another lane (another connection) skips the locked partition instead of taking it over.
    assert.equal(await queue.claim(100), null);
    await queue.finish(tx, lease, lease.ids, []);
  });
  const [row] = await svc.sql<{ processed: boolean; attempts: number }[]>`select processed_at is not null as processed, attempts from product_events`;
  assert.deepEqual({ ...row }, { processed: true, attempts: 1 });
});

test('a worker that dies on an item every time: the item is parked after the bounded attempts', async (t) => {
  const svc = await build(t, { clock: 'manual' });
  const clock = svc.clock as ManualClock;
  const queue = svc.inbox.queues.product;
  await send(svc, { type: 'track', userId: 'u1', messageId: 'm1', event: 'Clicked' });
  // Each takeover charges the previous holder's attempt; the one after the last allowed parks it.
  for (let i = 0; i <= queue.spec.maxAttempts; i++) {
    assert.ok(await queue.claim(100), `claim ${i + 1}`);
    clock.advance(60 * 60_000); // past the lease and any backoff; the holder never came back
  }
  assert.equal(await queue.claim(100), null, 'nothing left to claim: the item is parked');
  const [row] = await svc.sql<{ attempts: number; dead: boolean; last_error: string }[]>`select attempts, dead_at is not null as dead, last_error from product_events`;
  assert.equal(row!.attempts, queue.spec.maxAttempts);
  assert.equal(row!.dead, true);
  assert.match(row!.last_error, /lease expired/);
});

test('an item failing every attempt becomes a dead letter: listed by the admin API, replayed, then done', async (t) => {
  const svc = await build(t, { clock: 'manual' });
  const clock = svc.clock as ManualClock;
  await send(svc, { type: 'group', userId: 'u1', messageId: 'g1', groupId: 'acct_1', traits: { name: 'Acme' } });
  await send(svc, { type: 'track', userId: 'u2', messageId: 't1', event: 'Clicked' });
  await svc.sql`alter table accounts rename to accounts_away`;
  const max = svc.inbox.queues.product.spec.maxAttempts;
  for (let i = 0; i < max + 2; i++) {
    await svc.inbox.drain();
    clock.advance(60 * 60_000);
  }
  const [row] = await svc.sql<{ id: number; attempts: number; dead: boolean; processed: boolean }[]>`
    select id, attempts, dead_at is not null as dead, processed_at is not null as processed from product_events where message_id = 'g1'`;
  assert.equal(row!.attempts, max, 'no attempt after the limit');
  assert.equal(row!.dead, true);
  assert.equal(row!.processed, false);

  const auth = { authorization: `Bearer ${ADMIN_TOKEN}` };
  assert.equal((await svc.app.inject({ method: 'GET', url: '/v1/admin/dead-letters' })).statusCode, 401);
  const listed = await svc.app.inject({ method: 'GET', url: '/v1/admin/dead-letters', headers: auth });
  assert.equal(listed.statusCode, 200, listed.body);
  const items = (listed.json() as { items: { queue: string; id: string; attempts: number; last_error: string; dead_at: string }[] }).items;
  assert.equal(items.length, 1, listed.body);
  assert.equal(items[0]!.queue, 'product_events');
  assert.equal(items[0]!.id, String(row!.id));
  assert.equal(items[0]!.attempts, max);
  assert.match(items[0]!.last_error, /accounts/);
  assert.ok(!Number.isNaN(Date.parse(items[0]!.dead_at)));
  const one = await svc.app.inject({ method: 'GET', url: '/v1/admin/dead-letters?queue=stripe_events', headers: auth });
  assert.deepEqual(one.json(), { items: [] });
  const bad = await svc.app.inject({ method: 'POST', url: '/v1/admin/dead-letters/replay', headers: auth, payload: { queue: 'nope', ids: ['1'] } });
  assert.equal(bad.statusCode, 400);
  assert.ok((bad.json() as { error: string }).error);

  await svc.sql`alter table accounts_away rename to accounts`;
  const replay = await svc.app.inject({ method: 'POST', url: '/v1/admin/dead-letters/replay', headers: auth, payload: { queue: 'product_events', ids: [String(row!.id), '999999'] } });
  assert.equal(replay.statusCode, 200, replay.body);
  assert.deepEqual(replay.json(), { queue: 'product_events', replayed: [String(row!.id)] });
  assert.equal(await svc.inbox.drain(), 1);
  const [after] = await svc.sql<{ processed: boolean; dead: boolean }[]>`select processed_at is not null as processed, dead_at is not null as dead from product_events where message_id = 'g1'`;
  assert.deepEqual({ ...after }, { processed: true, dead: false });
  const [account] = await svc.sql<{ traits: Record<string, unknown> }[]>`select traits from accounts where group_id = 'acct_1'`;
  assert.deepEqual(account!.traits, { name: 'Acme' });
  const empty = await svc.app.inject({ method: 'GET', url: '/v1/admin/dead-letters', headers: auth });
  assert.deepEqual(empty.json(), { items: [] });
});

test('the queue refreshes its table statistics itself, for the columns its claims read (not the payloads)', async (t) => {
  const svc = await build(t, { clock: 'manual' });
  const { createWorkQueue } = await import('../src/work/work-queue.ts');
  // The product inbox's queue, analyzing after every 2 items instead of 10,000.
  const queue = createWorkQueue({ sql: svc.sql, clock: svc.clock }, { ...svc.inbox.queues.product.spec, name: 'analyze_probe', analyzeEvery: 2 });
  await queue.ensurePartitions();
  const stats = async () =>
    (await svc.sql<{ attname: string }[]>`select attname from pg_stats where schemaname = current_schema() and tablename = 'product_events' order by attname`).map((r) => r.attname);
  assert.deepEqual(await stats(), [], 'no statistics before');
  for (let i = 0; i < 3; i++) await send(svc, { type: 'track', userId: `u${i}`, messageId: `m${i}`, event: 'Clicked', properties: { n: i } });
  let done = 0;
  while (done < 3) {
    const n = await queue.runBatch(100, async () => {});
    if (n === 0) break;
    done += n;
  }
  assert.equal(done, 3);
  // ANALYZE runs in the background after the batch that crossed `analyzeEvery`.
  const deadline = Date.now() + 10_000;
  let columns = await stats();
  while (columns.length === 0 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    columns = await stats();
  }
  assert.ok(columns.includes('lane') && columns.includes('processed_at') && columns.includes('id'), `analyzed: ${columns.join(', ')}`);
  for (const payload of ['properties', 'traits', 'context', 'message_id']) assert.ok(!columns.includes(payload), `${payload} not analyzed`);
});
