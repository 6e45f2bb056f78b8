// One hung (or very slow) provider request must not hold back the rest of the outbox: while it
// is open, mail that becomes due meanwhile is claimed and sent by another lane, promptly (well
// under the per-request timeout), and the slow message itself is delivered exactly once
// afterwards (its batch's idempotency key: a hung request is re-sent under the same key; a slow
// 200 is not re-sent at all). The sender runs as in production (start(): LISTEN + tick), the
// provider is the fake Resend through the real SDK. Times are real (the request timeout is a
// real-time limit); the bounds leave seconds of margin for a busy 2-core machine.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { OUTBOX_CHANNEL } from '../src/email/sender.ts';
import { build, type Built } from './helpers/build.ts';
import { startFakeResend, type FakeResend, type ScriptedAnswer } from './helpers/fake-resend.ts';

/** RESEND_TIMEOUT_MS for these tests: long enough that "promptly" and "after the timeout" differ clearly. */
const TIMEOUT_MS = 8_000;
/** Every other message must reach the provider within this long of being queued (< TIMEOUT_MS / 2). */
const PROMPT_MS = 3_500;
const OTHERS = 8;

let n = 0;
async function queueOne(svc: Built, tag: string): Promise<string> {
  const id = `hung-${tag}-${String(++n).padStart(3, '0')}`;
  const at = new Date(Date.now() - 1000);
  await svc.sql.begin(async (tx) => {
    await tx`
      insert into messages (id, to_email, template, subject, category, status, created_at, updated_at)
      values (${id}, ${`${id}@example.test`}, 'winback-offer', 'Hello', 'marketing', 'queued', ${at}, ${at})`;
    // as the engine does when it queues mail
    await tx`select pg_notify(${OUTBOX_CHANNEL}, '')`;
  });
  return id;
}

const acceptedAt = (fake: FakeResend, id: string) => fake.accepted.findIndex((a) => a.headers['X-Lifeline-Message-Id'] === id);

async function waitFor(what: string, check: () => boolean | Promise<boolean>, timeoutMs: number): Promise<void> {
  const until = performance.now() + timeoutMs;
  while (!(await check())) {
    if (performance.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

async function scenario(t: import('node:test').TestContext, slow: ScriptedAnswer) {
  const fake = await startFakeResend();
  t.after(() => fake.close());
  const svc = await build(t, { env: { RESEND_API_KEY: 're_test_key', RESEND_BASE_URL: fake.url, QUIET_HOURS: 'off', RESEND_TIMEOUT_MS: String(TIMEOUT_MS) } });
  fake.script(slow);
  await svc.email.start();
  t.after(() => svc.email.stop());

  const first = await queueOne(svc, 'slow');
  await waitFor('the first request', () => fake.requests.length >= 1, 5_000);
  const slowSince = performance.now();

  // Other mail becomes due while that request is open, one message every 150 ms.
  const others: { id: string; queuedAt: number }[] = [];
  const latencies = new Map<string, number>();
  const watch = setInterval(() => {
    for (const o of others) if (!latencies.has(o.id) && acceptedAt(fake, o.id) >= 0) latencies.set(o.id, performance.now() - o.queuedAt);
  }, 10);
  t.after(() => clearInterval(watch));
  for (let i = 0; i < OTHERS; i++) {
    const queuedAt = performance.now();
    others.push({ id: await queueOne(svc, 'other'), queuedAt });
    await sleep(150);
  }
  await waitFor('the other messages', () => latencies.size === OTHERS, TIMEOUT_MS * 2);
  const allOthersAt = performance.now() - slowSince;
  clearInterval(watch);
  const worst = Math.max(...latencies.values());
  t.diagnostic(`others: slowest ${Math.round(worst)} ms from queued to the provider, all ${OTHERS} out ${Math.round(performance.now() - slowSince)} ms into the slow request`);
  return { svc, fake, first, others, worst, allOthersAt, slowSince };
}

async function assertExactlyOnce(svc: Built, fake: FakeResend, ids: string[]) {
  const delivered = fake.accepted.map((a) => a.headers['X-Lifeline-Message-Id']);
  assert.deepEqual([...delivered].sort(), [...ids].sort(), 'every message delivered, none twice');
  const statuses = await svc.sql<{ status: string; n: number }[]>`select status, count(*)::int as n from messages group by status`;
  assert.deepEqual(statuses.map((r) => ({ ...r })), [{ status: 'sent', n: ids.length }]);
}

test('a request hanging past RESEND_TIMEOUT_MS: mail due meanwhile is sent within seconds by another lane; the hung message is re-sent under its key and delivered once', async (t) => {
  const { svc, fake, first, others, worst, allOthersAt, slowSince } = await scenario(t, { status: 200, hang: true });
  assert.ok(worst < PROMPT_MS, `slowest other message reached the provider ${Math.round(worst)} ms after it was queued (timeout ${TIMEOUT_MS} ms)`);
  assert.ok(allOthersAt < TIMEOUT_MS, `all others delivered ${Math.round(allOthersAt)} ms into the hang, before it timed out`);
  assert.equal(acceptedAt(fake, first), -1, 'the hung request was still open while the others went out');

  await waitFor('the hung message', () => acceptedAt(fake, first) >= 0, TIMEOUT_MS * 3);
  const recovered = performance.now() - slowSince;
  assert.ok(recovered >= TIMEOUT_MS - 100, `the hung message was re-sent after the timeout (${Math.round(recovered)} ms)`);
  await waitFor('its outcome recorded', async () => (await svc.sql`select 1 from messages where id = ${first} and status = 'sent'`).length === 1, 5_000);
  await assertExactlyOnce(svc, fake, [first, ...others.map((o) => o.id)]);
  // The hung message's requests: the hung one and its re-send, both under its one key.
  const firstKeys = fake.requests.filter((r) => JSON.stringify(r.body).includes(first)).map((r) => r.headers['idempotency-key']);
  assert.equal(firstKeys.length, 2);
  assert.equal(new Set(firstKeys).size, 1, 'the re-send used the same idempotency key');
});

test('a request answered just below RESEND_TIMEOUT_MS: mail due meanwhile is not held back; the slow message is recorded sent, requested once', async (t) => {
  const { svc, fake, first, others, worst, allOthersAt } = await scenario(t, { status: 200, delayMs: TIMEOUT_MS - 1_500 });
  assert.ok(worst < PROMPT_MS, `slowest other message reached the provider ${Math.round(worst)} ms after it was queued (timeout ${TIMEOUT_MS} ms)`);
  assert.ok(allOthersAt < TIMEOUT_MS - 1_500, `all others delivered ${Math.round(allOthersAt)} ms into the slow request, before its answer`);

  await waitFor('the slow message recorded sent', async () => (await svc.sql`select 1 from messages where id = ${first} and status = 'sent'`).length === 1, TIMEOUT_MS * 2);
  await assertExactlyOnce(svc, fake, [first, ...others.map((o) => o.id)]);
  const firstRequests = fake.requests.filter((r) => JSON.stringify(r.body).includes(first));
  assert.equal(firstRequests.length, 1, 'a slow success is not re-sent');
});
