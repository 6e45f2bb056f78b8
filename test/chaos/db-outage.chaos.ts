// PostgreSQL stops in the middle of a run (fast shutdown, as a restart or failover does) while
// Stripe webhooks, product events and Resend webhooks arrive over HTTP at `node src/server.ts`:
// every ingest route answers 503 with retry-after (never 2xx for what was not stored, never a
// 500, never a crash), /readyz fails while /healthz answers, background workers back off without
// flooding the log; after PostgreSQL is back every acknowledged event is processed and every
// email goes out once.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createSql, withDatabase } from '../../src/db/connection.ts';
import { chaosWorkload, deliverPhase, newStats, outcome, waitSettled } from '../helpers/chaos-workload.ts';
import { startFakeResend } from '../helpers/fake-resend.ts';
import { postProduct, postResendWebhook, postStripe, serviceProcess } from '../helpers/service-process.ts';
import { envelope, invoice } from '../helpers/stripe.ts';
import { startStoppablePostgres } from '../helpers/stoppable-postgres.ts';

const OUTAGE_MS = 6_000;
/**
 * Each probe during the outage must be answered well within a webhook sender's timeout. Before
 * the pool's reconnect back-off was capped (src/db/connection.ts) they took 13–44 s each.
 */
const PROBE_LIMIT_MS = 10_000;

test('a PostgreSQL outage mid-run: 503 + retry-after on every ingest route, /readyz fails, no crash, quiet logs; after restart nothing lost, no email twice', async (t) => {
  const t0 = performance.now();
  const stages: Record<string, number> = {};
  const stamp = (name: string) => (stages[name] = Math.round(performance.now() - t0));
  const pg = await startStoppablePostgres();
  stamp('postgres');
  t.after(() => pg.destroy());
  const admin = createSql(pg.url, { max: 1 });
  await admin.unsafe('create database lifeline');
  await admin.end();
  const databaseUrl = withDatabase(pg.url, 'lifeline');
  const fake = await startFakeResend({ keepBodies: false });
  t.after(() => fake.close());
  const svc = serviceProcess({ databaseUrl, resendUrl: fake.url });
  t.after(() => svc.kill9());
  await svc.start();
  stamp('service');
  const sql = createSql(databaseUrl, { max: 2 });
  t.after(() => sql.end({ timeout: 1 }));

  const workload = chaosWorkload(20, 11, Math.floor(Date.now() / 1000) - 3_600);
  const stats = newStats();
  await deliverPhase(() => svc.url, workload.phases[0]!, stats);
  // What unsettled work is waiting for: a partition lease (a batch cut by the outage could not
  // record its failure, so its lease runs out by itself) or an item's retry time.
  const slow = (d: Record<string, number>) =>
    void sql<{ queue: string; leased: number; lease_left_s: number | null }[]>`
      select queue, count(*) filter (where lease_until > now())::int as leased,
        round(extract(epoch from max(lease_until) - now()))::int as lease_left_s
      from work_partitions group by queue order by queue`
      .then(async (leases) => {
        const retries = await sql<{ n: number; retry_in_s: number | null }[]>`
          select count(*)::int as n, round(extract(epoch from max(retry_at) - now()))::int as retry_in_s
          from (select retry_at from stripe_events where processed_at is null and retry_at > now()
                union all select retry_at from product_events where processed_at is null and retry_at > now()) r`;
        console.log(`not settled yet: ${JSON.stringify(d)}; leases ${JSON.stringify(leases.map((r) => ({ ...r })))}; inbox items waiting for a retry ${JSON.stringify({ ...retries[0] })}`);
      })
      .catch((err: unknown) => console.log(`not settled yet: ${JSON.stringify(d)} (${(err as Error).message})`));
  const settleMs: number[] = [];
  settleMs.push(await waitSettled(sql, 60_000, slow));

  stamp('phase1');
  // Phase 2 (the payment failures) is being delivered when PostgreSQL goes away: paced over ~3 s,
  // so that on a fast, quiet machine it is not all delivered before the stop (it then met no
  // outage at all and the test failed its own precondition).
  const phase2 = workload.phases[1]!;
  const delivering = deliverPhase(() => svc.url, phase2, stats, { concurrency: 2, gapMs: Math.ceil((3_000 * 2) / Math.max(1, phase2.length)) });
  await sleep(150);
  await pg.stop();
  stamp('stopped');
  const outageStartedAt = svc.logs.length;
  await sleep(500);

  // What each sender sees during the outage, and how long it waits for it.
  const probeMs: Record<string, number> = {};
  const timed = async <T>(name: string, f: () => Promise<T>): Promise<T> => {
    const s = performance.now();
    const result = await f();
    probeMs[name] = Math.round(performance.now() - s);
    return result;
  };
  const stripeProbe = await timed('stripe', () => postStripe(svc.url, envelope('invoice.payment_failed', invoice({ id: 'in_probe', customer: 'cus_probe' }), { id: 'evt_outage_probe' })));
  assert.equal(stripeProbe.status, 503, await stripeProbe.text());
  assert.ok(Number(stripeProbe.headers.get('retry-after')) > 0, 'Stripe webhook: retry-after');
  stamp('stripeProbe');
  const eventsProbe = await timed('track', () => postProduct(svc.url, '/v1/track', { userId: 'probe', event: 'Probe', messageId: 'msg_outage_probe' }));
  assert.equal(eventsProbe.status, 503, await eventsProbe.text());
  assert.ok(Number(eventsProbe.headers.get('retry-after')) > 0, 'events API: retry-after');
  const batchProbe = await timed('batch', () => postProduct(svc.url, '/v1/batch', { batch: [{ type: 'track', userId: 'probe', event: 'Probe', messageId: 'msg_outage_probe_2' }] }));
  assert.equal(batchProbe.status, 503, await batchProbe.text());
  stamp('eventProbes');
  const resendProbe = await timed('resend', () => postResendWebhook(svc.url, { type: 'email.delivered', created_at: new Date().toISOString(), data: { email_id: 'em_probe' } }, 'msg_resend_probe'));
  assert.equal(resendProbe.status, 503, `Resend webhook during the outage: ${resendProbe.status} ${await resendProbe.text()}`);
  assert.ok(Number(resendProbe.headers.get('retry-after')) > 0, 'Resend webhook: retry-after');
  stamp('resendProbe');
  const ready = await timed('readyz', () => fetch(`${svc.url}/readyz`));
  assert.equal(ready.status, 503, '/readyz fails while the database is down');
  stamp('readyz');
  assert.equal((await fetch(`${svc.url}/healthz`)).status, 200, '/healthz: the process is up');
  for (const [name, ms] of Object.entries(probeMs)) assert.ok(ms < PROBE_LIMIT_MS, `${name} answered after ${ms} ms during the outage: ${JSON.stringify(probeMs)}`);

  await sleep(OUTAGE_MS - 500);
  assert.equal(svc.exit(), null, `the service died during the outage: ${svc.stderr.join('').slice(-2000)}`);
  const outageLogs = svc.logs.slice(outageStartedAt);
  stamp('outage');
  await pg.start();
  stamp('restarted');
  const restartedAt = performance.now();
  const restartedWall = Date.now();
  const restartLog = svc.logs.length;
  await delivering;
  stamp('phase2Delivered');
  await waitSettled(sql, 150_000, slow);
  stamp('phase2Settled');
  const recoveredMs = Math.round(performance.now() - restartedAt);
  // Where the recovery's time goes: what the service logged after the restart (message, count,
  // first and last time in ms after PostgreSQL was back).
  const recoveryLog = new Map<string, { n: number; first: number; last: number }>();
  for (const l of svc.logs.slice(restartLog)) {
    const at = Date.parse(String(l.time)) - restartedWall;
    const key = `${l.level} ${String(l.msg)}`;
    const e = recoveryLog.get(key);
    if (e) Object.assign(e, { n: e.n + 1, last: at });
    else recoveryLog.set(key, { n: 1, first: at, last: at });
  }
  console.log(`db-outage recovery log: ${JSON.stringify([...recoveryLog])}`);
  for (const phase of workload.phases.slice(2)) {
    await deliverPhase(() => svc.url, phase, stats);
    settleMs.push(await waitSettled(sql, 90_000, slow));
  }
  stamp('rest');
  assert.equal(svc.exit(), null, `the service died: ${svc.stderr.join('').slice(-2000)}`);
  assert.equal((await fetch(`${svc.url}/readyz`)).status, 200, '/readyz ready again');

  // Never a 2xx for what was not stored, never a 500.
  assert.deepEqual([...stats.refused.keys()].filter((s) => s !== 503 && s !== 0), [], `answers during the outage: ${JSON.stringify([...stats.refused])}`);
  assert.ok((stats.refused.get(503) ?? 0) > 0, 'the deliveries met the outage');
  assert.deepEqual(stats.unexpected, []);
  // Every acknowledged delivery is stored and processed; the probes refused were not stored.
  const stripeIds = workload.phases.flat().filter((d) => d.kind === 'stripe').map((d) => d.id);
  const stored = await sql<{ id: string; processed: boolean }[]>`select id, processed_at is not null as processed from stripe_events`;
  assert.deepEqual(stored.map((r) => r.id).sort(), stripeIds.sort());
  assert.ok(stored.every((r) => r.processed));
  const productIds = workload.phases.flat().filter((d) => d.kind === 'product').map((d) => d.id);
  const [products] = await sql<{ n: number; done: number }[]>`select count(*)::int as n, count(processed_at)::int as done from product_events`;
  assert.equal(products!.n, productIds.length);
  assert.equal(products!.done, productIds.length);
  const [dead] = await sql<{ n: number }[]>`select (select count(*) from stripe_events where dead_at is not null) + (select count(*) from product_events where dead_at is not null) as n`;
  assert.equal(Number(dead!.n), 0, 'no dead letters');
  // Emails: every message sent once, by idempotency key and by recipient + template.
  const sent = await sql<{ id: string }[]>`select id from messages where status = 'sent'`;
  assert.ok(sent.length > 0, 'the run sent dunning emails');
  const delivered = fake.accepted.map((a) => a.headers['X-Lifeline-Message-Id']);
  assert.deepEqual([...delivered].sort(), sent.map((m) => m.id).sort(), 'each sent message reached the provider exactly once');
  const keys = fake.accepted.map((a) => `${a.to}|${a.template}`);
  assert.equal(new Set(keys).size, keys.length, 'no recipient got one template twice');
  const final = await outcome(sql);
  assert.ok(final.runs.length > 0);

  // Quiet logs: background lines (no request id) during the outage, bounded.
  const background = outageLogs.filter((l) => !l.reqId);
  const errorsLogged = outageLogs.filter((l) => l.level >= 50);
  const summary = { outageMs: OUTAGE_MS, deliveries: workload.total, acknowledged: stats.acknowledged.size, refused503: stats.refused.get(503) ?? 0, logLines: outageLogs.length, backgroundLines: background.length, errorLines: errorsLogged.length, emails: sent.length, probeMs, recoveredMs, settleMs, stages };
  t.diagnostic(JSON.stringify(summary));
  const byMessage = new Map<string, number>();
  for (const l of background) byMessage.set(String(l.msg), (byMessage.get(String(l.msg)) ?? 0) + 1);
  assert.ok(background.length <= 60, `background log lines during a ${OUTAGE_MS / 1000} s outage: ${background.length} ${JSON.stringify([...byMessage])}`);
});
