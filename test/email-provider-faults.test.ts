// Email provider faults through the real Resend SDK against the fake: 429 with retry-after, 500,
// a request that hangs past our per-request timeout (RESEND_TIMEOUT_MS), a dropped connection,
// and a 200 that arrives after we gave up (the provider sent; we timed out). Every message is
// delivered exactly once (one idempotency key per batch, the fake replays a known key), a
// permanent 4xx fails with its reason, and nothing is retried forever.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ManualClock } from '../src/clock.ts';
import { build, type Built } from './helpers/build.ts';
import { startFakeResend, type FakeResend } from './helpers/fake-resend.ts';

const T = new Date('2026-03-02T10:00:00Z');
const TIMEOUT_MS = 400;

async function setup(t: import('node:test').TestContext): Promise<{ svc: Built; fake: FakeResend; clock: ManualClock }> {
  const fake = await startFakeResend();
  t.after(() => fake.close());
  const svc = await build(t, {
    clock: 'manual',
    env: { RESEND_API_KEY: 're_test_key', RESEND_BASE_URL: fake.url, QUIET_HOURS: 'off', RESEND_TIMEOUT_MS: String(TIMEOUT_MS) },
  });
  const clock = svc.clock as ManualClock;
  clock.set(T);
  return { svc, fake, clock };
}

let n = 0;
async function queue(svc: Built, clock: ManualClock, count: number, domain = 'example.test'): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < count; i++) {
    const id = `fault-${String(++n).padStart(4, '0')}`;
    ids.push(id);
    const at = new Date(clock.now().getTime() - 1000 + i);
    await svc.sql`
      insert into messages (id, to_email, template, subject, category, status, created_at, updated_at)
      values (${id}, ${`${id}@${domain}`}, 'winback-offer', 'Hello', 'marketing', 'queued', ${at}, ${at})`;
  }
  return ids;
}

/** Sends until nothing is pending, moving the clock past each requeue's not-before time. */
async function sendUntilSettled(svc: Built, clock: ManualClock, rounds = 50): Promise<number> {
  for (let round = 1; round <= rounds; round++) {
    await svc.email.sendPending();
    const [pending] = await svc.sql<{ n: number }[]>`select count(*)::int as n from messages where status in ('queued', 'sending')`;
    if (pending!.n === 0) return round;
    clock.set(new Date(clock.now().getTime() + 2 * 3_600_000));
  }
  throw new Error(`messages still pending after ${rounds} rounds`);
}

test('429 + retry-after, 500, hang past the timeout, dropped connection, 200 after we timed out: every message delivered exactly once', async (t) => {
  const { svc, fake, clock } = await setup(t);
  const ids = await queue(svc, clock, 5);
  fake.script(
    { status: 429, headers: { 'retry-after': '1' } },
    { status: 500 },
    { status: 200, hang: true },
    { status: 200, drop: true },
    // the provider accepts (sends) at once and answers after our timeout: the re-send must be
    // answered from the idempotency key, not sent again
    { status: 200, delayMs: TIMEOUT_MS * 3 },
  );
  const started = performance.now();
  const rounds = await sendUntilSettled(svc, clock);
  const elapsed = performance.now() - started;

  const delivered = fake.accepted.map((a) => a.headers['X-Lifeline-Message-Id']);
  assert.deepEqual([...delivered].sort(), ids, 'every message delivered, none twice');
  const byRecipient = new Set(fake.accepted.map((a) => `${a.to}|${a.subject}`));
  assert.equal(byRecipient.size, fake.accepted.length, 'no recipient got the same email twice');
  const keys = new Set(fake.requests.map((r) => r.headers['idempotency-key']));
  assert.equal(keys.size, 1, 'every attempt re-sent the same batch under its one key');
  assert.equal(fake.requests.length, 6, '5 faults, then the replayed answer');
  const statuses = await svc.sql<{ status: string; n: number }[]>`select status, count(*)::int as n from messages group by status`;
  assert.deepEqual(statuses.map((r) => ({ ...r })), [{ status: 'sent', n: 5 }]);
  assert.ok(rounds >= 2, 'three failures in a row handed the batch back to the queue once');
  // The hung request and the late answer cost one timeout each, not the socket's lifetime.
  assert.ok(elapsed < 10_000, `all faults together took ${Math.round(elapsed)} ms`);
  const [batch] = await svc.sql<{ attempts: number; status: string }[]>`select attempts, status from email_batches`;
  assert.equal(batch!.status, 'sent');
  assert.equal(batch!.attempts, 6);
});

test('a hung provider request is cut at RESEND_TIMEOUT_MS (not tens of seconds) and retried', async (t) => {
  const { svc, fake, clock } = await setup(t);
  await queue(svc, clock, 1);
  fake.script({ status: 200, hang: true });
  const started = performance.now();
  await svc.email.sendPending();
  const elapsed = performance.now() - started;
  assert.equal(fake.accepted.length, 1);
  assert.equal(fake.requests.length, 2);
  assert.ok(elapsed >= TIMEOUT_MS && elapsed < TIMEOUT_MS + 3_000, `send with one hung request took ${Math.round(elapsed)} ms`);
  const [m] = await svc.sql<{ status: string }[]>`select status from messages`;
  assert.equal(m!.status, 'sent');
});

test('a permanent 4xx fails the message with its reason; a provider that never recovers ends dead, not retried forever', async (t) => {
  const { svc, fake, clock } = await setup(t);
  const [invalid] = await queue(svc, clock, 1, 'invalid.test');
  await svc.email.sendPending();
  const [failed] = await svc.sql<{ status: string; status_reason: string | null }[]>`select status, status_reason from messages where id = ${invalid!}`;
  assert.equal(failed!.status, 'failed');
  assert.match(failed!.status_reason ?? '', /validation_error/);
  const requestsForInvalid = fake.requests.length;
  assert.equal(requestsForInvalid, 1, 'a permanent error is not retried');

  const [doomed] = await queue(svc, clock, 1);
  fake.script(...Array.from({ length: 100 }, () => ({ status: 500 })));
  await sendUntilSettled(svc, clock);
  fake.clearScript();
  const [dead] = await svc.sql<{ status: string; status_reason: string | null }[]>`select status, status_reason from messages where id = ${doomed!}`;
  assert.equal(dead!.status, 'dead');
  const attempts = fake.requests.length - requestsForInvalid;
  assert.ok(attempts <= 30, `bounded: ${attempts} requests`);
  assert.equal(fake.accepted.length, 0);
});
