// Once-only email sends: a batch, once formed, is persisted before the provider call and every
// re-send (retry, reclaim after a crash or an expired claim) repeats exactly that batch under the
// same idempotency key; a sender whose claim was taken over cannot record over the new holder;
// retries are bounded and end in a visible, replayable `dead` state.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
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
    const id = `once-${String(++queued).padStart(5, "0")}`;
    ids.push(id);
    // Distinct created_at, in queue order: the claim takes the oldest first.
    const at = new Date(clock.now().getTime() - 1000 + ids.length);
    await svc.sql`
      insert into messages (id, to_email, template, subject, category, status, created_at, updated_at)
      values (${id}, ${`${id}@example.test`}, 'winback-offer', 'Hello', 'marketing', 'queued', ${at}, ${at})`;
  }
  return ids;
}

type Fault = 'crash-before' | 'crash-after' | 'hold';

/**
 * The real Resend SDK transport, with fault points a test controls: `crash-before` (the sender
 * dies before its request leaves), `crash-after` (the provider accepted, the sender died before
 * recording), `hold` (the request waits until `release()`, then goes: a stalled sender).
 * `stopped` resolves when a fault took effect, so a test knows this "process" is gone or stuck.
 */
function faultyTransport(fake: FakeResend, ...initial: Fault[]) {
  const real = createResendTransport({ apiKey: 're_test_key', baseUrl: fake.url });
  const faults: Fault[] = [...initial];
  let calls = 0;
  let signal: () => void = () => {};
  const stopped = new Promise<void>((r) => (signal = r));
  let release: () => void = () => {};
  const released = new Promise<void>((r) => (release = r));
  const transport: EmailTransport = {
    name: 'resend',
    async send(emails, key) {
      calls++;
      const fault = faults.shift();
      // A crash: this sender never hears back and never records anything (kill -9). The promise
      // stays pending, as the dead process's work would.
      if (fault === 'crash-before') {
        signal();
        return new Promise(() => {});
      }
      if (fault === 'hold') {
        signal();
        await released;
      }
      const outcome = await real.send(emails, key);
      if (fault === 'crash-after') {
        signal();
        return new Promise(() => {});
      }
      return outcome;
    },
  };
  return { transport, faults, calls: () => calls, stopped, release: () => release() };
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

const resendTransport = (fake: FakeResend) => createResendTransport({ apiKey: 're_test_key', baseUrl: fake.url });
const idsIn = (body: unknown) => (body as { headers: Record<string, string> }[]).map((e) => e.headers['X-Lifeline-Message-Id']);

async function statuses(svc: Built, ids: string[]) {
  const rows = await svc.sql<{ id: string; status: string; status_reason: string | null }[]>`select id, status, status_reason from messages where id = any(${ids}::text[]) order by id`;
  return rows;
}
async function timeline(svc: Built, id: string): Promise<string[]> {
  return (await svc.sql<{ status: string }[]>`select status from message_events where message_id = ${id} order by id`).map((e) => e.status);
}

test('a sender that died before its request left: the persisted batch is re-sent as it was, new mail goes in a batch of its own', async (t) => {
  const { svc, fake, clock } = await setup(t);
  const first = await queue(svc, 2, clock);
  const a = faultyTransport(fake, 'crash-before');
  void sender(svc, a.transport, clock).sendPending();
  await a.stopped;
  assert.equal(fake.requests.length, 0);
  const [persisted] = await svc.sql<{ idempotency_key: string; message_ids: string[] }[]>`select idempotency_key, message_ids from email_batches`;
  assert.deepEqual(persisted!.message_ids, first, 'the batch was persisted before the provider call');

  const later = await queue(svc, 1, clock);
  clock.advance(PAST_CLAIM_MS);
  await sender(svc, resendTransport(fake), clock).sendPending();
  assert.equal(fake.requests.length, 2);
  assert.equal(fake.requests[0]!.headers['idempotency-key'], persisted!.idempotency_key);
  assert.deepEqual(idsIn(fake.requests[0]!.body), first, 'same members, same order');
  assert.equal(fake.requests[1]!.headers['idempotency-key'], later[0], 'the new message alone, keyed by its id');
  const counts = deliveries(fake);
  for (const id of [...first, ...later]) assert.equal(counts.get(id), 1);
  const [batch] = await svc.sql`select status, lease, attempts from email_batches where idempotency_key = ${persisted!.idempotency_key}`;
  assert.deepEqual({ ...batch }, { status: 'sent', lease: 2, attempts: 2 }, 'taken over once; the unanswered attempt counts');
});

test('fencing: a stalled sender whose batch was taken over cannot record its (different) outcome over the new holder', async (t) => {
  const { svc, fake, clock } = await setup(t);
  const ids = await queue(svc, 2, clock);
  const a = faultyTransport(fake, 'hold');
  const stalled = sender(svc, a.transport, clock).sendPending();
  await a.stopped;
  clock.advance(PAST_CLAIM_MS);
  await sender(svc, resendTransport(fake), clock).sendPending();
  assert.deepEqual((await statuses(svc, ids)).map((r) => r.status), ['sent', 'sent']);

  // The stalled request finally leaves and is refused; its sender would mark both failed.
  fake.script({ status: 422 });
  a.release();
  await stalled;
  assert.deepEqual((await statuses(svc, ids)).map((r) => r.status), ['sent', 'sent'], 'the old holder recorded nothing');
  for (const id of ids) assert.deepEqual(await timeline(svc, id), ['sent']);
  const [batch] = await svc.sql`select status, lease from email_batches`;
  assert.deepEqual({ ...batch }, { status: 'sent', lease: 2 });
  for (const id of ids) assert.equal(deliveries(fake).get(id), 1);
});

test('bounded failures: after maxAttempts failed requests the batch is dead (reason, event), not retried; replay sends it once', async (t) => {
  const { svc, fake, clock } = await setup(t);
  const ids = await queue(svc, 2, clock);
  fake.script({ status: 500 }, { status: 500 }, { status: 500 });
  const s = sender(svc, resendTransport(fake), clock, { maxAttempts: 3 });
  const totals = await s.sendPending();
  assert.deepEqual(totals, { sent: 0, failed: 2, skipped: 0, requeued: 0 });
  const rows = await statuses(svc, ids);
  assert.deepEqual(rows.map((r) => r.status), ['dead', 'dead']);
  assert.match(rows[0]!.status_reason ?? '', /3 failed attempts/);
  assert.deepEqual(await timeline(svc, ids[0]!), ['dead']);
  const [batch] = await svc.sql`select status, attempts from email_batches`;
  assert.deepEqual({ ...batch }, { status: 'dead', attempts: 3 });
  clock.advance(3 * 3_600_000);
  await s.sendPending();
  assert.equal(fake.requests.length, 3, 'a dead batch is not retried');

  assert.deepEqual((await replayDeadMessages(svc.sql, [...ids, 'not-a-message'], clock.now())).sort(), [...ids].sort());
  assert.deepEqual(await replayDeadMessages(svc.sql, ids, clock.now()), [], 'only dead messages are replayed');
  await s.sendPending();
  assert.deepEqual((await statuses(svc, ids)).map((r) => r.status), ['sent', 'sent']);
  assert.deepEqual(await timeline(svc, ids[0]!), ['dead', 'queued', 'sent']);
  for (const id of ids) assert.equal(deliveries(fake).get(id), 1);
});

test('bounded 429s: a batch the provider keeps rate-limiting goes dead after maxRateLimited answers', async (t) => {
  const { svc, fake, clock } = await setup(t);
  const ids = await queue(svc, 1, clock);
  fake.script({ status: 429, headers: { 'retry-after': '1' } }, { status: 429, headers: { 'retry-after': '1' } });
  await sender(svc, resendTransport(fake), clock, { maxRateLimited: 2 }).sendPending();
  const [row] = await statuses(svc, ids);
  assert.equal(row!.status, 'dead');
  assert.match(row!.status_reason ?? '', /rate limited 2 times/);
  assert.equal(fake.requests.length, 2);
  const [batch] = await svc.sql`select status, attempts, rate_limited from email_batches`;
  assert.deepEqual({ ...batch }, { status: 'dead', attempts: 2, rate_limited: 2 });
});

test('a batch handed back after failures waits for its not-before time, then goes again as the same batch', async (t) => {
  const { svc, fake, clock } = await setup(t);
  const ids = await queue(svc, 2, clock);
  fake.script({ status: 500 }, { status: 500 });
  const s = sender(svc, resendTransport(fake), clock, { triesBeforeRequeue: 2 });
  assert.equal((await s.sendPending()).requeued, 2);
  const rows = await statuses(svc, ids);
  assert.deepEqual(rows.map((r) => r.status), ['queued', 'queued']);
  assert.match(rows[0]!.status_reason ?? '', /retrying after/);
  const more = await queue(svc, 1, clock);
  await s.sendPending(); // not due yet: only the new message goes (alone: never mixed into the batch)
  assert.equal(fake.requests.length, 3);
  assert.deepEqual(idsIn([fake.requests[2]!.body]), more);
  clock.advance(61_000);
  await s.sendPending();
  assert.equal(fake.requests.length, 4);
  assert.equal(new Set([0, 1, 3].map((i) => fake.requests[i]!.headers['idempotency-key'])).size, 1, 'one key for every try of the batch');
  assert.deepEqual(idsIn(fake.requests[3]!.body), ids);
  for (const id of [...ids, ...more]) assert.equal(deliveries(fake).get(id), 1);
});

test('the provider says the key was used with another payload: dead (probably sent), never re-sent under a new key', async (t) => {
  const { svc, fake, clock } = await setup(t);
  const ids = await queue(svc, 2, clock);
  fake.script({ status: 409, body: { statusCode: 409, name: 'invalid_idempotent_request', message: 'Same idempotency key used with a different request payload.' } });
  await sender(svc, resendTransport(fake), clock).sendPending();
  const rows = await statuses(svc, ids);
  assert.deepEqual(rows.map((r) => r.status), ['dead', 'dead']);
  assert.match(rows[0]!.status_reason ?? '', /different payload/);
  assert.equal(fake.requests.length, 1);
});

test('a batch older than the provider idempotency window is not re-sent blindly: dead', async (t) => {
  const { svc, fake, clock } = await setup(t);
  const ids = await queue(svc, 2, clock);
  const a = faultyTransport(fake, 'crash-before');
  void sender(svc, a.transport, clock).sendPending();
  await a.stopped;
  clock.advance(24 * 3_600_000);
  await sender(svc, resendTransport(fake), clock).sendPending();
  assert.equal(fake.requests.length, 0);
  const rows = await statuses(svc, ids);
  assert.deepEqual(rows.map((r) => r.status), ['dead', 'dead']);
  assert.match(rows[0]!.status_reason ?? '', /idempotency window/);
});

test('a held batch whose stored inputs cannot be read goes dead when taken over, not taken over forever', async (t) => {
  const { svc, fake, clock } = await setup(t);
  const ids = await queue(svc, 2, clock);
  const a = faultyTransport(fake, 'crash-before');
  void sender(svc, a.transport, clock).sendPending();
  await a.stopped;
  await svc.sql`update email_batches set render_inputs = '{not json'`;
  clock.advance(10 * 60_000);
  await sender(svc, resendTransport(fake), clock).sendPending();
  assert.equal(fake.requests.length, 0, 'nothing sent from an unreadable batch');
  const rows = await statuses(svc, ids);
  assert.deepEqual(rows.map((r) => r.status), ['dead', 'dead']);
  assert.match(rows[0]!.status_reason ?? '', /stored batch unreadable/);
  const [batch] = await svc.sql<{ status: string }[]>`select status from email_batches`;
  assert.equal(batch!.status, 'dead');
});

test('a message whose senders keep dying before a batch is formed goes dead instead of being claimed forever', async (t) => {
  const { svc, fake, clock } = await setup(t);
  const ids = await queue(svc, 1, clock);
  await svc.sql`update messages set attempts = 3`; // claimed three times already, never batched
  await sender(svc, resendTransport(fake), clock, { maxAttempts: 3 }).sendPending();
  const [row] = await statuses(svc, ids);
  assert.equal(row!.status, 'dead');
  assert.match(row!.status_reason ?? '', /claimed 4 times/);
  assert.equal(fake.requests.length, 0);
});

// ---------------------------------------------------------------------------------------------
// Property: whatever happens, every queued message reaches the provider exactly once.

type Command =
  | { kind: 'queue'; n: number }
  | { kind: 'send' | 'crash-after' | 'crash-before' | 'hold' | 'crash-before-batch' | 'expire' | '429' | '500' };

const commandArb: fc.Arbitrary<Command> = fc.oneof(
  fc.record({ kind: fc.constant('queue' as const), n: fc.integer({ min: 1, max: 4 }) }),
  fc.constantFrom<Command>(
    { kind: 'send' },
    { kind: 'crash-after' },
    { kind: 'crash-before' },
    { kind: 'hold' },
    { kind: 'crash-before-batch' },
    { kind: 'expire' },
    { kind: '429' },
    { kind: '500' },
  ),
);

/** Plays one sequence against a clean slate; returns the ids it queued. */
async function play(svc: Built, fake: FakeResend, clock: ManualClock, commands: Command[]): Promise<string[]> {
  await svc.sql`truncate messages, message_events, email_batches`;
  fake.clearScript();
  const ids: string[] = [];
  const stalled: { release: () => void; done: Promise<unknown> }[] = [];
  const fresh = () => sender(svc, resendTransport(fake), clock);
  for (const c of commands) {
    switch (c.kind) {
      case 'queue':
        ids.push(...(await queue(svc, c.n, clock)));
        break;
      case 'send':
        await fresh().sendPending();
        break;
      case 'crash-after':
      case 'crash-before':
      case 'hold': {
        // A process that dies (or stalls) at its first provider request; the next command is
        // another process. With nothing to send it just finishes.
        const f = faultyTransport(fake, c.kind);
        const done = sender(svc, f.transport, clock).sendPending();
        const how = await Promise.race([done.then(() => 'finished'), f.stopped.then(() => 'stopped')]);
        if (c.kind === 'hold' && how === 'stopped') stalled.push({ release: f.release, done });
        break;
      }
      case 'crash-before-batch': {
        // A process that claimed due messages and died before it formed (persisted) a batch.
        const now = clock.now();
        await svc.sql`
          update messages set status = 'sending', claim_token = 'died', locked_until = ${new Date(now.getTime() + 120_000)}, attempts = attempts + 1
          where batch_id is null and (status = 'queued' or (status = 'sending' and locked_until < ${now}))`;
        break;
      }
      case 'expire':
        clock.advance(PAST_CLAIM_MS);
        break;
      case '429':
        fake.script({ status: 429, headers: { 'retry-after': '1' } });
        await fresh().sendPending();
        break;
      case '500':
        fake.script({ status: 500 });
        await fresh().sendPending();
        break;
    }
  }
  // Stalled senders wake up (their batch may have been taken over meanwhile)…
  for (const s of stalled) s.release();
  await Promise.all(stalled.map((s) => s.done));
  // …and the service keeps running until nothing is left to do.
  for (let round = 0; round < 80; round++) {
    const [left] = await svc.sql<{ n: number }[]>`select count(*)::int as n from messages where status in ('queued', 'sending')`;
    if (left!.n === 0) break;
    clock.advance(PAST_CLAIM_MS);
    await fresh().sendPending();
  }
  return ids;
}

async function checkExactlyOnce(svc: Built, fake: FakeResend, ids: string[]): Promise<void> {
  const counts = deliveries(fake);
  for (const id of ids) assert.equal(counts.get(id) ?? 0, 1, `${id} delivered ${counts.get(id) ?? 0} times`);
  const rows = await svc.sql<{ id: string; status: string; status_reason: string | null; sent: number }[]>`
    select m.id, m.status, m.status_reason, (select count(*)::int from message_events e where e.message_id = m.id and e.status = 'sent') as sent
    from messages m where m.id = any(${ids}::text[])`;
  assert.equal(rows.length, ids.length);
  for (const r of rows) assert.deepEqual({ id: r.id, status: r.status, sent: r.sent }, { id: r.id, status: 'sent', sent: 1 }, `${r.id}: ${r.status_reason}`);
}

test('property: queue, crashes before/after the provider call or before a batch is formed, stalls, claim expiry, 429, 500 → every message delivered exactly once, none lost', async (t) => {
  const { svc, fake, clock } = await setup(t);
  await fc.assert(
    fc.asyncProperty(fc.array(commandArb, { minLength: 1, maxLength: 16 }), async (commands) => {
      const ids = await play(svc, fake, clock, commands);
      await checkExactlyOnce(svc, fake, ids);
    }),
    { numRuns: Number(process.env.EMAIL_PROPERTY_RUNS ?? 40) },
  );
});

test('property regressions: shrunk counter-examples kept as fixed sequences', async (t) => {
  const { svc, fake, clock } = await setup(t);
  const kept: Command[][] = [
    // Shrunk by the property from a sender that re-sent a taken-over batch under a new key.
    [{ kind: 'queue', n: 1 }, { kind: 'crash-after' }, { kind: 'queue', n: 1 }],
    // The production defect: a claimed batch expires and is recombined with newly due mail.
    [{ kind: 'queue', n: 2 }, { kind: 'crash-after' }, { kind: 'queue', n: 1 }, { kind: 'expire' }, { kind: 'send' }],
    // A stalled sender's batch is taken over; the stall ends after the new holder recorded.
    [{ kind: 'queue', n: 3 }, { kind: 'hold' }, { kind: 'expire' }, { kind: '500' }, { kind: 'queue', n: 1 }, { kind: 'send' }],
  ];
  for (const commands of kept) await checkExactlyOnce(svc, fake, await play(svc, fake, clock, commands));
});

test('a re-send renders from the stored inputs: a message changed after the first request does not change the payload', async (t) => {
  const { svc, fake, clock } = await setup(t);
  const ids = await queue(svc, 2, clock);
  const a = faultyTransport(fake, 'crash-after');
  void sender(svc, a.transport, clock).sendPending();
  await a.stopped;
  await svc.sql`update messages set subject = 'Changed meanwhile', to_email = 'someone-else@example.test'`;
  clock.advance(PAST_CLAIM_MS);
  await sender(svc, resendTransport(fake), clock).sendPending();
  assert.equal(fake.requests.length, 2);
  assert.deepEqual(fake.requests[1]!.body, fake.requests[0]!.body, 'byte-identical re-send (the provider replays, no 409)');
  assert.deepEqual((await statuses(svc, ids)).map((r) => r.status), ['sent', 'sent']);
  assert.equal(fake.accepted.length, 2);
});
