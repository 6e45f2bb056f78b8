// HTTP behaviour of the Segment-compatible product events API (/v1/track, /v1/identify,
// /v1/group, /v1/page, /v1/screen, /v1/batch): auth, validation, dedupe, batches, size limits,
// storage failures. What the worker makes of the stored messages is in contacts.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../src/app.ts';
import { ManualClock, systemClock } from '../src/clock.ts';
import { loadConfig } from '../src/config.ts';
import { createSql } from '../src/db/connection.ts';
import { createLogger } from '../src/logger.ts';
import { build, WRITE_KEY, type Built } from './helpers/build.ts';

const BEARER = { authorization: `Bearer ${WRITE_KEY}` };
const basic = (user: string, password = '') => ({ authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` });

function post(app: FastifyInstance, url: string, body: unknown, headers: Record<string, string> = BEARER) {
  return app.inject({
    method: 'POST',
    url,
    headers: { 'content-type': 'application/json', ...headers },
    payload: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

async function count(svc: Built, table = 'product_events'): Promise<number> {
  const [row] = await svc.sql.unsafe<{ n: number }[]>(`select count(*)::int as n from ${table}`);
  return row!.n;
}

/** A 4xx/5xx answer is `{ error, message }` JSON, whatever else it carries. */
function assertErrorBody(res: { statusCode: number; headers: Record<string, unknown>; json(): unknown }, status: number, error: string): { error: string; message: string } {
  assert.equal(res.statusCode, status);
  assert.match(String(res.headers['content-type']), /^application\/json/);
  const body = res.json() as { error: string; message: string };
  assert.equal(body.error, error);
  assert.equal(typeof body.message, 'string');
  assert.ok(body.message.length > 0);
  return body;
}

const track = (fields: Record<string, unknown> = {}) => ({ userId: 'user_1', event: 'Report Exported', ...fields });

// ---------------------------------------------------------------------------------------------
// Auth

test('auth: a request without Authorization is refused with 401 unauthorized and nothing is stored', async (t) => {
  const svc = await build(t);
  for (const url of ['/v1/track', '/v1/identify', '/v1/group', '/v1/page', '/v1/screen', '/v1/batch']) {
    const res = await post(svc.app, url, url === '/v1/batch' ? { batch: [{ type: 'track', ...track() }] } : track(), {});
    const body = assertErrorBody(res, 401, 'unauthorized');
    assert.match(body.message, /LIFELINE_WRITE_KEY/, `${url}: the message says which credential to send`);
  }
  assert.equal(await count(svc), 0);
});

test('auth: a wrong key is refused with 401, as Bearer, as Basic, or with an unknown scheme', async (t) => {
  const svc = await build(t);
  const attempts: Record<string, string>[] = [
    { authorization: 'Bearer wk_not_the_key' },
    { authorization: `Bearer ${WRITE_KEY}x` },
    { authorization: `Bearer ${WRITE_KEY.slice(0, -1)}` },
    basic('wk_not_the_key'),
    basic('', WRITE_KEY), // the key as password, not as user name
    { authorization: `Token ${WRITE_KEY}` },
    { authorization: 'Bearer' },
    { authorization: WRITE_KEY },
  ];
  for (const headers of attempts) {
    const res = await post(svc.app, '/v1/track', track(), headers);
    assertErrorBody(res, 401, 'unauthorized');
  }
  assert.equal(await count(svc), 0);
});

test('auth: Bearer <write key> is accepted', async (t) => {
  const svc = await build(t);
  const res = await post(svc.app, '/v1/track', track(), BEARER);
  assert.equal(res.statusCode, 200);
  assert.deepEqual(res.json(), { success: true, duplicate: false });
  // the scheme is case-insensitive
  const lower = await post(svc.app, '/v1/track', track(), { authorization: `bearer ${WRITE_KEY}` });
  assert.equal(lower.statusCode, 200);
  assert.equal(await count(svc), 2);
});

test('auth: HTTP Basic with the key as user name and an empty password (Segment style) is accepted', async (t) => {
  const svc = await build(t);
  const headers = { authorization: `Basic ${Buffer.from(`${WRITE_KEY}:`).toString('base64')}` };
  const res = await post(svc.app, '/v1/track', track(), headers);
  assert.equal(res.statusCode, 200);
  assert.deepEqual(res.json(), { success: true, duplicate: false });
  const batch = await post(svc.app, '/v1/batch', { batch: [{ type: 'identify', userId: 'user_1' }] }, headers);
  assert.equal(batch.statusCode, 200);
  assert.equal(await count(svc), 2);
});

test('auth: without LIFELINE_WRITE_KEY every events route answers 503 not_configured naming the variable', async (t) => {
  const svc = await build(t, { env: { LIFELINE_WRITE_KEY: undefined } });
  for (const url of ['/v1/track', '/v1/identify', '/v1/group', '/v1/page', '/v1/batch']) {
    for (const headers of [BEARER, {}]) {
      const res = await post(svc.app, url, url === '/v1/batch' ? { batch: [{ type: 'track', ...track() }] } : track(), headers);
      const body = assertErrorBody(res, 503, 'not_configured');
      assert.match(body.message, /LIFELINE_WRITE_KEY/);
    }
  }
  assert.equal(await count(svc), 0);
});

// ---------------------------------------------------------------------------------------------
// Validation

test('validation: a track without event is 400 and the message names the field', async (t) => {
  const svc = await build(t);
  const res = await post(svc.app, '/v1/track', { userId: 'user_1', properties: {} });
  const body = assertErrorBody(res, 400, 'validation_failed');
  assert.match(body.message, /\bevent\b/);
  // an empty event name is not a name either
  const empty = await post(svc.app, '/v1/track', track({ event: '' }));
  assert.match(assertErrorBody(empty, 400, 'validation_failed').message, /\bevent\b/);
  assert.equal(await count(svc), 0);
});

test('validation: a message with neither userId nor anonymousId is 400 naming both', async (t) => {
  const svc = await build(t);
  for (const [url, body] of [
    ['/v1/track', { event: 'Signed Up' }],
    ['/v1/identify', { traits: { email: 'a@b.test' } }],
    ['/v1/group', { groupId: 'acct_1' }],
    ['/v1/page', { name: 'Home' }],
  ] as const) {
    const res = await post(svc.app, url, body);
    const err = assertErrorBody(res, 400, 'validation_failed');
    assert.match(err.message, /userId/, url);
    assert.match(err.message, /anonymousId/, url);
  }
  // empty strings are not identities
  const empty = await post(svc.app, '/v1/track', { event: 'x', userId: '', anonymousId: '' });
  assert.equal(empty.statusCode, 400);
  assert.equal(await count(svc), 0);
});

test('validation: a timestamp that is not an ISO-8601 date-time is 400 naming timestamp', async (t) => {
  const svc = await build(t);
  for (const timestamp of ['yesterday', '2026-13-45T00:00:00Z', 1_760_000_000]) {
    const res = await post(svc.app, '/v1/track', track({ timestamp }));
    const err = assertErrorBody(res, 400, 'validation_failed');
    assert.match(err.message, /timestamp/, String(timestamp));
  }
  assert.equal(await count(svc), 0);
});

test('validation: properties, traits and context must be objects', async (t) => {
  const svc = await build(t);
  for (const properties of [[1, 2], 'clicked', 42, null]) {
    const res = await post(svc.app, '/v1/track', track({ properties }));
    assert.match(assertErrorBody(res, 400, 'validation_failed').message, /properties/, JSON.stringify(properties));
  }
  const traits = await post(svc.app, '/v1/identify', { userId: 'user_1', traits: ['a'] });
  assert.match(assertErrorBody(traits, 400, 'validation_failed').message, /traits/);
  const context = await post(svc.app, '/v1/track', track({ context: 'web' }));
  assert.match(assertErrorBody(context, 400, 'validation_failed').message, /context/);
  assert.equal(await count(svc), 0);
});

test('validation: a group without groupId is 400 naming groupId', async (t) => {
  const svc = await build(t);
  const res = await post(svc.app, '/v1/group', { userId: 'user_1', traits: { name: 'Acme' } });
  assert.match(assertErrorBody(res, 400, 'validation_failed').message, /groupId/);
  assert.equal(await count(svc), 0);
});

test('validation: malformed requests are 4xx with {error, message}, never 5xx', async (t) => {
  const svc = await build(t);
  const cases: [string, string | unknown, Record<string, string>?][] = [
    ['/v1/track', '{not json'],
    ['/v1/track', ''],
    ['/v1/track', [track()]],
    ['/v1/track', 'null'],
    ['/v1/track', track({ userId: 42 })],
    ['/v1/track', track({ type: 'identify' })],
    ['/v1/track', track({ messageId: '' })],
    ['/v1/track', track({ userId: 'u'.repeat(300) })],
    ['/v1/batch', '{not json'],
    ['/v1/batch', {}],
    ['/v1/batch', { batch: [] }],
    ['/v1/batch', { batch: 'nope' }],
    ['/v1/batch', { batch: [1, 'two', null, []] }],
    ['/v1/batch', { batch: [{ type: 'track' }], context: 'web' }],
    ['/v1/track', 'event=x', { 'content-type': 'application/x-www-form-urlencoded' }],
  ];
  for (const [url, body, headers] of cases) {
    const res = await svc.app.inject({
      method: 'POST',
      url,
      headers: { 'content-type': 'application/json', ...BEARER, ...headers },
      payload: typeof body === 'string' ? body : JSON.stringify(body),
    });
    const label = `${url} ${typeof body === 'string' ? body : JSON.stringify(body)}`;
    assert.ok(res.statusCode >= 400 && res.statusCode < 500, `${label}: ${res.statusCode} ${res.body}`);
    const json = res.json() as { error?: unknown; message?: unknown };
    assert.equal(typeof json.error, 'string', label);
    assert.equal(typeof json.message, 'string', label);
  }
  assert.equal(await count(svc), 0);
});

test('validation: the batch item message names the missing property (TypeBox requiredProperties)', async (t) => {
  const svc = await build(t);
  const res = await post(svc.app, '/v1/batch', {
    batch: [
      { type: 'track', userId: 'user_1' },
      { type: 'group', userId: 'user_1' },
      { type: 'track', event: 'x' },
      { type: 'track', userId: 'user_1', event: 'x', timestamp: 'soon' },
      { type: 'track', userId: 'user_1', event: 'x', properties: [1] },
    ],
  });
  assert.equal(res.statusCode, 400);
  const rejected = (res.json() as { rejected: { index: number; message: string }[] }).rejected;
  assert.deepEqual(rejected.map((r) => r.index), [0, 1, 2, 3, 4]);
  assert.equal(rejected[0]!.message, 'event is required');
  assert.equal(rejected[1]!.message, 'groupId is required');
  assert.match(rejected[2]!.message, /userId or anonymousId/);
  assert.match(rejected[3]!.message, /^timestamp /);
  assert.match(rejected[4]!.message, /^properties /);
});

test('text PostgreSQL cannot store (NUL, lone surrogates, very deep nesting) is a 400, not a 503 the sender retries forever', async (t) => {
  const svc = await build(t);
  const bad: [string, string][] = [
    ['NUL in event', JSON.stringify(track({ event: 'a\u0000b' }))],
    ['NUL in a property', JSON.stringify(track({ properties: { note: 'x\u0000y' } }))],
    ['NUL in a property name', JSON.stringify(track({ properties: { 'k\u0000': 1 } }))],
    ['lone surrogate in a property', '{"userId":"user_1","event":"x","properties":{"s":"\\ud800"}}'],
    ['lone surrogate in userId', '{"userId":"u\\udfff","event":"x"}'],
    ['nesting 5000 deep', `{"userId":"user_1","event":"x","properties":{"a":${'['.repeat(5000)}${']'.repeat(5000)}}}`],
  ];
  for (const [label, body] of bad) {
    const res = await post(svc.app, '/v1/track', body);
    assertErrorBody(res, 400, 'validation_failed');
    assert.ok(res.statusCode < 500, label);
  }
  assert.equal(await count(svc), 0);

  // Odd but valid text round-trips exactly.
  const odd = { q: 'he said "hi" \\ {a,b} NULL \'x\'', emoji: '🚀 ünïcødé', nested: { list: [1, null, 'two', { deep: true }] }, empty: '' };
  const ok = await post(svc.app, '/v1/track', track({ messageId: 'odd-1', properties: odd }));
  assert.equal(ok.statusCode, 200);
  const [row] = await svc.sql`select properties from product_events where message_id = 'odd-1'`;
  assert.deepEqual(row!.properties, odd);

  // In a batch the bad item is rejected alone.
  const batch = await post(
    svc.app,
    '/v1/batch',
    `{"batch":[{"type":"track","userId":"user_1","event":"fine","messageId":"b-ok"},{"type":"track","userId":"user_1","event":"x","messageId":"b-bad","properties":{"s":"\\u0000"}},{"type":"track","userId":"user_1","event":"x","messageId":"b-deep","properties":{"a":${'['.repeat(200_000)}${']'.repeat(200_000)}}}]}`,
  );
  assert.equal(batch.statusCode, 200, batch.body);
  const result = batch.json() as { accepted: number; rejected: { index: number; messageId: string; error: string }[] };
  assert.equal(result.accepted, 1);
  assert.deepEqual(result.rejected.map((r) => [r.index, r.messageId, r.error]), [[1, 'b-bad', 'validation_failed'], [2, 'b-deep', 'validation_failed']]);
  const ids = await svc.sql`select message_id from product_events order by id`;
  assert.deepEqual(ids.map((r) => r.message_id), ['odd-1', 'b-ok']);
});

// ---------------------------------------------------------------------------------------------
// What is stored

test('a track is stored with its identity, event, properties, context and timestamp', async (t) => {
  const svc = await build(t, { clock: 'manual' });
  const res = await post(svc.app, '/v1/track', {
    userId: 'user_1',
    anonymousId: 'anon_1',
    messageId: 'msg-track-1',
    event: 'Report Exported',
    properties: { format: 'csv', rows: 120 },
    context: { groupId: 'acct_1', ip: '203.0.113.9' },
    timestamp: '2025-12-31T10:00:00.123Z',
    integrations: { All: true },
  });
  assert.equal(res.statusCode, 200);
  const [row] = await svc.sql`select * from product_events where message_id = 'msg-track-1'`;
  assert.ok(row);
  assert.equal(row.kind, 'track');
  assert.equal(row.user_id, 'user_1');
  assert.equal(row.anonymous_id, 'anon_1');
  assert.equal(row.event, 'Report Exported');
  assert.equal(row.group_id, 'acct_1', 'context.groupId is the B2B account');
  assert.deepEqual(row.properties, { format: 'csv', rows: 120 });
  assert.deepEqual(row.context, { groupId: 'acct_1', ip: '203.0.113.9' });
  assert.equal((row.timestamp as Date).toISOString(), '2025-12-31T10:00:00.123Z');
  assert.equal((row.received_at as Date).toISOString(), '2026-01-01T00:00:00.000Z');
  assert.equal(row.traits, null);
  assert.equal(row.processed_at, null);
});

test('without timestamp: the time received, or originalTimestamp corrected for client clock skew', async (t) => {
  const clock = new ManualClock('2026-01-01T12:00:00Z');
  const svc = await build(t, { clock });
  await post(svc.app, '/v1/track', track({ messageId: 'no-ts' }));
  // analytics.js style: no timestamp; the client clock is 1 hour fast (sentAt 13:00 while we receive at 12:00).
  await post(svc.app, '/v1/track', track({ messageId: 'skewed', originalTimestamp: '2026-01-01T12:59:30Z', sentAt: '2026-01-01T13:00:00Z' }));
  await post(svc.app, '/v1/track', track({ messageId: 'original-only', originalTimestamp: '2025-12-31T08:00:00Z' }));
  await post(svc.app, '/v1/batch', { sentAt: '2026-01-01T13:00:00Z', batch: [{ type: 'track', ...track({ messageId: 'batch-skewed', originalTimestamp: '2026-01-01T12:58:00Z' }) }] });
  const rows = await svc.sql<{ message_id: string; timestamp: Date }[]>`select message_id, timestamp from product_events`;
  const at = Object.fromEntries(rows.map((r) => [r.message_id, r.timestamp.toISOString()]));
  assert.deepEqual(at, {
    'no-ts': '2026-01-01T12:00:00.000Z',
    skewed: '2026-01-01T11:59:30.000Z',
    'original-only': '2025-12-31T08:00:00.000Z',
    'batch-skewed': '2026-01-01T11:58:00.000Z',
  });
});

test('a message without messageId gets a generated one, so it is never mistaken for a duplicate', async (t) => {
  const svc = await build(t);
  const a = await post(svc.app, '/v1/track', track());
  const b = await post(svc.app, '/v1/track', track());
  assert.deepEqual([a.json(), b.json()], [{ success: true, duplicate: false }, { success: true, duplicate: false }]);
  const rows = await svc.sql<{ message_id: string }[]>`select message_id from product_events`;
  assert.equal(rows.length, 2);
  assert.notEqual(rows[0]!.message_id, rows[1]!.message_id);
});

test('identify and group store traits; page and screen become Page Viewed / Screen Viewed track events', async (t) => {
  const svc = await build(t);
  assert.equal((await post(svc.app, '/v1/identify', { userId: 'user_1', messageId: 'i1', traits: { email: 'ada@acme.test', plan: 'pro' }, context: { groupId: 'acct_1' } })).statusCode, 200);
  assert.equal((await post(svc.app, '/v1/group', { userId: 'user_1', messageId: 'g1', groupId: 'acct_1', traits: { name: 'Acme' } })).statusCode, 200);
  // Segment's /v1/page and /v1/screen do not require `type`.
  assert.equal((await post(svc.app, '/v1/page', { userId: 'user_1', messageId: 'p1', name: 'Pricing', category: 'Marketing', properties: { path: '/pricing' } })).statusCode, 200);
  assert.equal((await post(svc.app, '/v1/page', { type: 'page', anonymousId: 'anon_1', messageId: 'p2' })).statusCode, 200);
  assert.equal((await post(svc.app, '/v1/screen', { userId: 'user_1', messageId: 's1', name: 'Settings' })).statusCode, 200);
  const rows = await svc.sql`select message_id, kind, event, group_id, properties, traits from product_events order by id`;
  assert.deepEqual(
    rows.map((r) => ({ ...r })),
    [
      { message_id: 'i1', kind: 'identify', event: null, group_id: 'acct_1', properties: null, traits: { email: 'ada@acme.test', plan: 'pro' } },
      { message_id: 'g1', kind: 'group', event: null, group_id: 'acct_1', properties: null, traits: { name: 'Acme' } },
      { message_id: 'p1', kind: 'track', event: 'Page Viewed', group_id: null, properties: { path: '/pricing', name: 'Pricing', category: 'Marketing' }, traits: null },
      { message_id: 'p2', kind: 'track', event: 'Page Viewed', group_id: null, properties: {}, traits: null },
      { message_id: 's1', kind: 'track', event: 'Screen Viewed', group_id: null, properties: { name: 'Settings' }, traits: null },
    ],
  );
});

// ---------------------------------------------------------------------------------------------
// messageId dedupe

test('the same messageId twice: the second answer says duplicate, one row is stored and one fact recorded', async (t) => {
  const svc = await build(t);
  const message = track({ messageId: 'dup-1', properties: { n: 1 } });
  const first = await post(svc.app, '/v1/track', message);
  const second = await post(svc.app, '/v1/track', { ...message, properties: { n: 2 } });
  assert.deepEqual(first.json(), { success: true, duplicate: false });
  assert.equal(second.statusCode, 200);
  assert.deepEqual(second.json(), { success: true, duplicate: true });
  // and concurrently, as a retrying client might
  const racing = await Promise.all([post(svc.app, '/v1/track', message), post(svc.app, '/v1/track', message)]);
  assert.deepEqual(racing.map((r) => r.json().duplicate), [true, true]);
  // across endpoints too: the batch sees the same id as a duplicate
  const batch = await post(svc.app, '/v1/batch', { batch: [{ type: 'track', ...message }] });
  assert.deepEqual(batch.json(), { success: true, accepted: 1, duplicates: 1, rejected: [] });

  const rows = await svc.sql`select properties from product_events where message_id = 'dup-1'`;
  assert.equal(rows.length, 1);
  assert.deepEqual(rows[0]!.properties, { n: 1 }, 'the first delivery wins');
  assert.equal(await svc.inbox.drain(), 1);
  const facts = await svc.sql`select name, source_id from domain_events`;
  assert.deepEqual(facts.map((f) => ({ ...f })), [{ name: 'Report Exported', source_id: 'dup-1' }]);
});

test('two concurrent first deliveries of one messageId: exactly one is not a duplicate', async (t) => {
  const svc = await build(t);
  const message = track({ messageId: 'race-1' });
  const answers = await Promise.all(Array.from({ length: 6 }, () => post(svc.app, '/v1/track', message)));
  assert.deepEqual(answers.map((r) => r.statusCode), [200, 200, 200, 200, 200, 200]);
  assert.equal(answers.filter((r) => r.json().duplicate === false).length, 1);
  assert.equal(await count(svc), 1);
});

// ---------------------------------------------------------------------------------------------
// Batch

test('batch: valid items are kept and invalid ones listed with index, messageId, error and message', async (t) => {
  const svc = await build(t);
  const res = await post(svc.app, '/v1/batch', {
    batch: [
      { type: 'identify', userId: 'user_1', messageId: 'b1', traits: { email: 'ada@acme.test' } },
      { type: 'track', userId: 'user_1', messageId: 'b2' }, // no event
      { type: 'track', userId: 'user_1', messageId: 'b3', event: 'Invited Teammate' },
      { type: 'alias', userId: 'user_1', previousId: 'anon_1', messageId: 'b4' },
      { userId: 'user_1', event: 'No Type', messageId: 'b5' },
      { type: 'group', anonymousId: 'anon_9', groupId: 'acct_1', messageId: 'b6' },
      { type: 'track', event: 'Nobody', messageId: 'b7' },
      { type: 'constructor', userId: 'user_1', messageId: 'b8' },
      { type: 'track', userId: 'user_1', event: 'x', messageId: 42 },
    ],
  });
  assert.equal(res.statusCode, 200, res.body);
  const body = res.json() as { success: boolean; accepted: number; duplicates: number; rejected: { index: number; messageId: string | null; error: string; message: string }[] };
  assert.equal(body.success, true);
  assert.equal(body.accepted, 3);
  assert.equal(body.duplicates, 0);
  assert.deepEqual(
    body.rejected.map((r) => [r.index, r.messageId, r.error]),
    [
      [1, 'b2', 'validation_failed'],
      [3, 'b4', 'unsupported_type'],
      [4, 'b5', 'unsupported_type'],
      [6, 'b7', 'validation_failed'],
      [7, 'b8', 'unsupported_type'],
      [8, null, 'validation_failed'],
    ],
  );
  for (const r of body.rejected) assert.ok(r.message.length > 0);
  assert.match(body.rejected[0]!.message, /event/);
  assert.match(body.rejected[1]!.message, /alias/);
  assert.match(body.rejected[5]!.message, /messageId/);
  const rows = await svc.sql`select message_id, kind from product_events order by id`;
  assert.deepEqual(rows.map((r) => [r.message_id, r.kind]), [['b1', 'identify'], ['b3', 'track'], ['b6', 'group']]);
});

test('batch: when every item is invalid the answer is 400 with error, message and the rejections', async (t) => {
  const svc = await build(t);
  const res = await post(svc.app, '/v1/batch', {
    batch: [{ type: 'track', userId: 'user_1' }, { type: 'alias', userId: 'user_1' }, null],
  });
  const body = assertErrorBody(res, 400, 'validation_failed') as unknown as { success: boolean; accepted: number; rejected: { index: number; error: string }[] };
  assert.equal(body.success, false);
  assert.equal(body.accepted, 0);
  assert.deepEqual(body.rejected.map((r) => [r.index, r.error]), [[0, 'validation_failed'], [1, 'unsupported_type'], [2, 'validation_failed']]);
  // one kind of problem: that is the error code
  const aliasOnly = await post(svc.app, '/v1/batch', { batch: [{ type: 'alias', userId: 'u', previousId: 'a' }] });
  assertErrorBody(aliasOnly, 400, 'unsupported_type');
  assert.equal(await count(svc), 0);
});

test('batch: duplicate messageIds within one batch are stored once and counted in duplicates', async (t) => {
  const svc = await build(t);
  const item = { type: 'track', userId: 'user_1', event: 'Clicked', messageId: 'same' };
  const res = await post(svc.app, '/v1/batch', { batch: [item, { ...item, event: 'Clicked Again' }, { ...item, messageId: 'other' }, item] });
  assert.equal(res.statusCode, 200);
  assert.deepEqual(res.json(), { success: true, accepted: 4, duplicates: 2, rejected: [] });
  const rows = await svc.sql`select message_id, event from product_events order by id`;
  assert.deepEqual(rows.map((r) => [r.message_id, r.event]), [['same', 'Clicked'], ['other', 'Clicked']]);
  // sending the whole batch again: all duplicates
  const again = await post(svc.app, '/v1/batch', { batch: [item, { ...item, messageId: 'other' }] });
  assert.deepEqual(again.json(), { success: true, accepted: 2, duplicates: 2, rejected: [] });
  assert.equal(await svc.inbox.drain(), 2);
  assert.equal(await count(svc, 'domain_events'), 2);
});

test('batch: page and screen items are stored as Page Viewed / Screen Viewed track events, in order', async (t) => {
  const svc = await build(t);
  const res = await post(svc.app, '/v1/batch', {
    batch: [
      { type: 'page', userId: 'user_1', messageId: 'p', name: 'Pricing', properties: { url: 'https://acme.test/pricing' } },
      { type: 'screen', userId: 'user_1', messageId: 's', name: 'Dashboard' },
      { type: 'track', userId: 'user_1', messageId: 't', event: 'Upgraded' },
    ],
  });
  assert.equal(res.statusCode, 200);
  const rows = await svc.sql`select message_id, kind, event, properties from product_events order by id`;
  assert.deepEqual(rows.map((r) => ({ ...r })), [
    { message_id: 'p', kind: 'track', event: 'Page Viewed', properties: { url: 'https://acme.test/pricing', name: 'Pricing' } },
    { message_id: 's', kind: 'track', event: 'Screen Viewed', properties: { name: 'Dashboard' } },
    { message_id: 't', kind: 'track', event: 'Upgraded', properties: {} },
  ]);
});

test("batch: the batch's context is merged into each item's context (the item's own keys win)", async (t) => {
  const svc = await build(t);
  const res = await post(svc.app, '/v1/batch', {
    context: { library: { name: 'analytics-node' }, groupId: 'acct_batch' },
    batch: [
      { type: 'track', userId: 'user_1', messageId: 'c1', event: 'A' },
      { type: 'track', userId: 'user_1', messageId: 'c2', event: 'B', context: { groupId: 'acct_own', ip: '198.51.100.1' } },
    ],
  });
  assert.equal(res.statusCode, 200);
  const rows = await svc.sql`select message_id, group_id, context from product_events order by id`;
  assert.deepEqual(rows.map((r) => ({ ...r })), [
    { message_id: 'c1', group_id: 'acct_batch', context: { library: { name: 'analytics-node' }, groupId: 'acct_batch' } },
    { message_id: 'c2', group_id: 'acct_own', context: { library: { name: 'analytics-node' }, groupId: 'acct_own', ip: '198.51.100.1' } },
  ]);
});

// ---------------------------------------------------------------------------------------------
// Size limits

test('size: a single call over 32 KB is 413 payload_too_large; just under is accepted', async (t) => {
  const svc = await build(t);
  const overhead = Buffer.byteLength(JSON.stringify(track({ properties: { blob: '' } })));
  const under = JSON.stringify(track({ properties: { blob: 'x'.repeat(32 * 1024 - overhead) } }));
  assert.equal(Buffer.byteLength(under), 32 * 1024);
  assert.equal((await post(svc.app, '/v1/track', under)).statusCode, 200);
  const over = JSON.stringify(track({ properties: { blob: 'x'.repeat(32 * 1024 - overhead + 1) } }));
  assertErrorBody(await post(svc.app, '/v1/track', over), 413, 'payload_too_large');
  assertErrorBody(await post(svc.app, '/v1/identify', { userId: 'u', traits: { blob: 'x'.repeat(40_000) } }), 413, 'payload_too_large');
  assert.equal(await count(svc), 1);
});

test('size: a batch body over 500 KB is 413 payload_too_large and nothing is stored', async (t) => {
  const svc = await build(t);
  // 20 items of ~26 KB: each under the per-message limit, ~520 KB in all.
  const batch = Array.from({ length: 20 }, (_, i) => ({ type: 'track', userId: 'user_1', event: 'Big', messageId: `big-${i}`, properties: { blob: 'x'.repeat(26_000) } }));
  const body = JSON.stringify({ batch });
  assert.ok(Buffer.byteLength(body) > 500 * 1024);
  assertErrorBody(await post(svc.app, '/v1/batch', body), 413, 'payload_too_large');
  assert.equal(await count(svc), 0);
  // 18 of them (~470 KB) are fine
  const ok = await post(svc.app, '/v1/batch', { batch: batch.slice(0, 18) });
  assert.equal(ok.statusCode, 200);
  assert.equal(ok.json().accepted, 18);
});

test('size: a batch item over 32 KB is rejected as payload_too_large, the others are kept', async (t) => {
  const svc = await build(t);
  const res = await post(svc.app, '/v1/batch', {
    batch: [
      { type: 'track', userId: 'user_1', event: 'Small', messageId: 'small-1' },
      { type: 'track', userId: 'user_1', event: 'Huge', messageId: 'huge', properties: { blob: 'x'.repeat(33 * 1024) } },
      { type: 'identify', userId: 'user_1', messageId: 'small-2', traits: { plan: 'pro' } },
    ],
  });
  assert.equal(res.statusCode, 200);
  const body = res.json() as { accepted: number; rejected: { index: number; messageId: string; error: string; message: string }[] };
  assert.equal(body.accepted, 2);
  assert.equal(body.rejected.length, 1);
  assert.equal(body.rejected[0]!.index, 1);
  assert.equal(body.rejected[0]!.messageId, 'huge');
  assert.equal(body.rejected[0]!.error, 'payload_too_large');
  assert.match(body.rejected[0]!.message, /32 KB/);
  const rows = await svc.sql`select message_id from product_events order by id`;
  assert.deepEqual(rows.map((r) => r.message_id), ['small-1', 'small-2']);
});

// ---------------------------------------------------------------------------------------------
// Storage failure

test('database unavailable: the events API answers 503 storage_unavailable with Retry-After, never 200', async (t) => {
  const logger = createLogger('silent');
  const sql = createSql('postgres://postgres@127.0.0.1:9/lifeline', { max: 1 });
  const config = loadConfig({ LIFELINE_WRITE_KEY: WRITE_KEY, LOG_LEVEL: 'silent' });
  const app = await buildApp({ config, sql, clock: systemClock, logger });
  t.after(async () => {
    await app.close();
    await sql.end({ timeout: 1 });
  });
  for (const [url, body] of [
    ['/v1/track', track()],
    ['/v1/identify', { userId: 'user_1', traits: {} }],
    ['/v1/batch', { batch: [{ type: 'track', ...track() }, { type: 'alias' }] }],
  ] as const) {
    const res = await post(app, url, body);
    const err = assertErrorBody(res, 503, 'storage_unavailable');
    assert.match(err.message, /retry/i);
    assert.equal(res.headers['retry-after'], '5', url);
  }
  // validation still answers 400 without touching the database
  assert.equal((await post(app, '/v1/track', { userId: 'user_1' })).statusCode, 400);
});
