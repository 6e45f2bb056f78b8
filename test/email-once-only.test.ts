// Once-only email sends: a batch, once formed, is persisted before the provider call and every
// re-send (retry, reclaim after a crash or an expired claim) repeats exactly that batch under the
// same idempotency key; a sender whose claim was taken over cannot record over the new holder;
// retries are bounded and end in a visible, replayable `dead` state.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ManualClock } from '../src/clock.ts';
import { createEmailSender, replayDeadMessages, type EmailSender, type RetryPolicy } from '../src/email/sender.ts';
import { createResendTransport, type EmailTransport } from '../src/email/transport.ts';
import { createLogger } from '../src/logger.ts';
import { build, type Built } from './helpers/build.ts';
import { startFakeResend, type FakeResend } from './helpers/fake-resend.ts';

const T = new Date('2026-03-02T10:00:00Z');
/** Longer than the sender's claim (2 minutes). */
const PAST_CLAIM_MS = 2 * 60_000 + 1_000;

async function setup(t: import('node:test').TestContext): Promise<{ svc: Built; fake: FakeResend; clock: ManualClock }> {
  const fake = await startFakeResend();
  t.after(() => fake.close());
  const svc = await build(t, { clock: 'manual', env: { RESEND_API_KEY: 're_test_key', RESEND_BASE_URL: fake.url, QUIET_HOURS: 'off' } });
  const clock = svc.clock as ManualClock;
  clock.set(T);
  return { svc, fake, clock };
}

let queued = 0;
/** Queues `count` marketing messages directly (the engine's part is not under test here). */
async function queue(svc: Built, count: number, clock: ManualClock): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < count; i++) {
    const id = `once-${++queued}`;
    ids.push(id);
    // Distinct created_at, in queue order: the claim takes the oldest first.
    const at = new Date(clock.now().getTime() - 1000 + ids.length);
    await svc.sql`
      insert into messages (id, to_email, template, subject, category, status, created_at, updated_at)
      values (${id}, ${`${id}@example.test`}, 'winback-offer', 'Hello', 'marketing', 'queued', ${at}, ${at})`;
  }
  return ids;
}

/** The real Resend SDK transport, with fault points a test controls. */
function faultyTransport(fake: FakeResend) {
  const real = createResendTransport({ apiKey: 're_test_key', baseUrl: fake.url });
  const faults: ('crash-before' | 'crash-after')[] = [];
  let calls = 0;
  const transport: EmailTransport = {
    name: 'resend',
    async send(emails, key) {
      calls++;
      const fault = faults.shift();
      // A crash: this sender never hears back and never records anything (kill -9). The promise
      // stays pending, as the dead process's work would.
      if (fault === 'crash-before') return new Promise(() => {});
      const outcome = await real.send(emails, key);
      if (fault === 'crash-after') return new Promise(() => {});
      return outcome;
    },
  };
  return { transport, faults, calls: () => calls };
}

function sender(svc: Built, transport: EmailTransport, clock: ManualClock, retry?: Partial<RetryPolicy>): EmailSender {
  return createEmailSender({
    sql: svc.sql,
    clock,
    logger: createLogger('silent'),
    config: svc.config,
    templates: svc.templates,
    transport,
    secret: 'test-secret',
    // Virtual time: a wait moves the manual clock instead of sleeping.
    sleep: async (ms) => {
      clock.advance(ms);
      await new Promise((r) => setImmediate(r));
    },
    ...(retry ? { retry } : {}),
  });
}

/** How many times the fake delivered each message (a deduplicated replay delivers nothing). */
function deliveries(fake: FakeResend): Map<string, number> {
  const counts = new Map<string, number>();
  for (const a of fake.accepted) {
    const id = a.headers['X-Lifeline-Message-Id'] ?? '';
    counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  return counts;
}

/** Waits (real time) until the fake has seen `n` requests: a crashed sender's request got there. */
async function requestsReached(fake: FakeResend, n: number): Promise<void> {
  for (let i = 0; fake.requests.length < n; i++) {
    if (i > 500) throw new Error(`the fake saw ${fake.requests.length} requests, expected ${n}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

test('regression: a batch whose sender died after the provider accepted it is re-sent as the same batch, not recombined with new mail', async (t) => {
  const { svc, fake, clock } = await setup(t);
  const first = await queue(svc, 2, clock);
  const a = faultyTransport(fake);
  a.faults.push('crash-after');
  void sender(svc, a.transport, clock).sendPending(); // dies after the provider accepted m1, m2
  await requestsReached(fake, 1);
  assert.equal(fake.accepted.length, 2);

  // Newly due mail, and the dead sender's claim expires; another sender (the restarted service) runs.
  const later = await queue(svc, 1, clock);
  clock.advance(PAST_CLAIM_MS);
  const b = sender(svc, createResendTransport({ apiKey: 're_test_key', baseUrl: fake.url }), clock);
  await b.sendPending();

  const counts = deliveries(fake);
  for (const id of [...first, ...later]) assert.equal(counts.get(id), 1, `${id} delivered ${counts.get(id) ?? 0} times: ${JSON.stringify([...counts])}`);
  assert.equal(fake.accepted.length, 3);
  // The re-send repeated the first request: same key, same members (the provider deduplicated it).
  const firstKey = fake.requests[0]!.headers['idempotency-key'];
  const again = fake.requests.filter((r) => r.headers['idempotency-key'] === firstKey);
  assert.equal(again.length, 2, 'the batch was re-sent once under its own key');
  assert.deepEqual(again[1]!.body, again[0]!.body, 'identical payload (recipients and render)');
  const rows = await svc.sql<{ id: string; status: string }[]>`select id, status from messages order by id`;
  assert.deepEqual(rows.map((r) => r.status), ['sent', 'sent', 'sent']);
  const events = await svc.sql<{ n: number }[]>`select count(*)::int as n from message_events where status = 'sent'`;
  assert.equal(events[0]!.n, 3, 'one sent event per message');
});
