// Audit log: every admin action (workflow published / paused / resumed, contact exported /
// erased, dead letter replayed) leaves one row with the actor (admin token id, never the token),
// the time from the service clock and a diff; GET /v1/admin/audit filters and pages them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import type { ManualClock } from '../src/clock.ts';
import { ADMIN_TOKEN, WRITE_KEY, build } from './helpers/build.ts';

const auth = { authorization: `Bearer ${ADMIN_TOKEN}` };
const T = new Date('2026-03-02T10:00:00Z');
const definition = (subject: string) => ({
  key: 'welcome-tour',
  name: 'Welcome tour',
  category: 'lifecycle',
  trigger: { type: 'event', event: 'Signed Up' },
  entry: { mode: 'once' },
  steps: [
    { id: 'wait_a_bit', type: 'wait', duration: 'PT5S' },
    { id: 'hello', type: 'send_email', template: 'onboarding-day1', subject },
  ],
});

interface Entry { id: string; at: string; actor: string; action: string; target: string | null; diff: Record<string, unknown> | null }

test('each admin action is audited with actor, time and diff; the log filters by action and time and pages', async (t) => {
  const svc = await build(t, { clock: 'manual' });
  const clock = svc.clock as ManualClock;
  clock.set(T);
  const call = async (method: 'GET' | 'PUT' | 'POST' | 'DELETE', url: string, payload?: object) => {
    const res = await svc.app.inject({ method, url, headers: auth, ...(payload ? { payload } : {}) });
    assert.ok(res.statusCode < 300, `${method} ${url}: ${res.statusCode} ${res.body}`);
    return res;
  };

  await call('PUT', '/v1/workflows/welcome-tour', definition('Hello'));
  clock.set(new Date(T.getTime() + 60_000));
  await call('PUT', '/v1/workflows/welcome-tour', definition('Hello again'));
  await call('POST', '/v1/workflows/welcome-tour/pause');
  await call('POST', '/v1/workflows/welcome-tour/resume');
  const identify = await svc.app.inject({
    method: 'POST', url: '/v1/identify', headers: { authorization: `Bearer ${WRITE_KEY}` },
    payload: { messageId: 'a-1', userId: 'u_audit', traits: { email: 'audit.person@x.test' } },
  });
  assert.equal(identify.statusCode, 200);
  await svc.inbox.drain();
  clock.set(new Date(T.getTime() + 2 * 60_000));
  await call('GET', '/v1/contacts/u_audit/export');
  // A dead product event to replay (parked the way the queue parks one after its retries).
  await svc.app.inject({ method: 'POST', url: '/v1/track', headers: { authorization: `Bearer ${WRITE_KEY}` }, payload: { messageId: 'dead-1', userId: 'u_x', event: 'E' } });
  const [dead] = await svc.sql`update product_events set dead_at = ${clock.now()}, last_error = 'boom' where message_id = 'dead-1' returning id::text as id`;
  assert.ok(dead);
  await call('POST', '/v1/admin/dead-letters/replay', { queue: 'product_events', ids: [dead.id] });
  await call('DELETE', '/v1/contacts/u_audit');
  // A failed action (404) is not audited.
  assert.equal((await svc.app.inject({ method: 'POST', url: '/v1/workflows/nope/pause', headers: auth })).statusCode, 404);

  const all = (await call('GET', '/v1/admin/audit')).json() as { entries: Entry[]; next: string | null };
  assert.deepEqual(all.entries.map((e) => e.action).reverse(), [
    'workflow.published', 'workflow.published', 'workflow.paused', 'workflow.resumed', 'contact.exported', 'dead_letter.replayed', 'contact.erased',
  ]);
  const tokenId = createHash('sha256').update(ADMIN_TOKEN).digest('hex').slice(0, 12);
  for (const e of all.entries) assert.equal(e.actor, `token:${tokenId}`);
  assert.ok(!JSON.stringify(all).includes(ADMIN_TOKEN), 'the token itself is never stored');
  const published = all.entries.filter((e) => e.action === 'workflow.published').reverse();
  assert.deepEqual(published[0]!.diff!.version, { from: null, to: 1 });
  assert.deepEqual(published[1]!.diff, { version: { from: 1, to: 2 }, changed: ['steps'] });
  assert.equal(published[0]!.at, T.toISOString());
  assert.deepEqual(all.entries.find((e) => e.action === 'dead_letter.replayed')!.diff, { replayed: [dead.id] });
  const erased = all.entries.find((e) => e.action === 'contact.erased')!;
  assert.ok(!JSON.stringify(erased).includes('audit.person@x.test'), 'the erase audit row holds no PII');
  assert.ok((erased.diff!.addressesSuppressed as number) >= 1);

  const onlyPaused = (await call('GET', '/v1/admin/audit?action=workflow.paused')).json() as { entries: Entry[] };
  assert.deepEqual(onlyPaused.entries.map((e) => e.action), ['workflow.paused']);
  const since = (await call('GET', `/v1/admin/audit?from=${encodeURIComponent(new Date(T.getTime() + 90_000).toISOString())}`)).json() as { entries: Entry[] };
  assert.deepEqual(since.entries.map((e) => e.action).reverse(), ['contact.exported', 'dead_letter.replayed', 'contact.erased']);
  const untilFirst = (await call('GET', `/v1/admin/audit?to=${encodeURIComponent(new Date(T.getTime() + 1).toISOString())}`)).json() as { entries: Entry[] };
  assert.equal(untilFirst.entries.length, 1);

  // Paging: 3 per page, following `next`, gives every entry once, newest first.
  const seen: string[] = [];
  let before: string | null = null;
  do {
    const page = (await call('GET', `/v1/admin/audit?limit=3${before ? `&before=${before}` : ''}`)).json() as { entries: Entry[]; next: string | null };
    seen.push(...page.entries.map((e) => e.id));
    before = page.next;
  } while (before);
  assert.deepEqual(seen, all.entries.map((e) => e.id));

  assert.equal((await svc.app.inject({ url: '/v1/admin/audit' })).statusCode, 401);
  const bad = await svc.app.inject({ url: '/v1/admin/audit?limit=0', headers: auth });
  assert.equal(bad.statusCode, 400);
  assert.equal((await svc.app.inject({ url: '/v1/admin/audit?from=yesterday', headers: auth })).statusCode, 400);
});
