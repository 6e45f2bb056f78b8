// The crash suite (`npm run test:chaos`): Lifeline runs as a child process (`node src/server.ts`)
// and is killed with SIGKILL — its whole process group — at seeded random moments while a dunning
// timeline (subscriptions, payment failures, retries, recoveries, card updates, cancellations,
// write-offs, product events; some deliveries duplicated on purpose) is delivered over HTTP; it is
// restarted on the same database each time. A second service on its own database receives the
// same timeline with no kills: the clean run. Afterwards:
//   - every acknowledged delivery was stored and processed (none lost, none dead),
//   - no email was sent twice, by idempotency key (our message id) nor by recipient + template,
//   - invoices, subscriptions, workflow runs, emails and facts end exactly as in the clean run.
// Reproduce a run with SEED=<printed seed>; scale with CUSTOMERS and KILLS.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createSql } from '../../src/db/connection.ts';
import { chaosWorkload, deliverPhase, newStats, outcome, prng, waitSettled, type DeliveryStats } from '../helpers/chaos-workload.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { startFakeResend, type FakeResend } from '../helpers/fake-resend.ts';
import { serviceProcess, type ServiceProcess } from '../helpers/service-process.ts';

const SEED = Number(process.env.SEED ?? Math.floor(Math.random() * 2 ** 31));
// CI (2 cores, a 12-minute budget for this suite) runs fewer customers but never fewer kills.
const CUSTOMERS = Number(process.env.CUSTOMERS ?? (process.env.CI ? 100 : 300));
const KILLS = Number(process.env.KILLS ?? 20);
/** Pause between kills: long enough for work to happen, short enough to hit every stage. */
const KILL_GAP_MS: [number, number] = [800, 3_500];
const SETTLE_MS = 300_000;

/** The chaos service's warnings and errors: counts by message, and the last ones in full. */
function logTrail(svc: ServiceProcess): void {
  const bad = svc.logs.filter((l) => l.level >= 40);
  const byMessage = new Map<string, number>();
  for (const l of bad) byMessage.set(String(l.msg), (byMessage.get(String(l.msg)) ?? 0) + 1);
  console.log(`chaos service warnings/errors by message: ${JSON.stringify([...byMessage])}`);
  for (const l of bad.slice(-20)) console.log(`chaos service log: ${JSON.stringify(l).slice(0, 600)}`);
  console.log(`chaos service stderr (end): ${svc.stderr.join('').slice(-1500)}`);
}

test(`kill -9 at random moments (seed ${SEED}, ${CUSTOMERS} customers, ≥ ${KILLS} kills): nothing lost, no email twice, same end as a clean run`, async (t) => {
  console.log(`chaos seed: ${SEED} (rerun with SEED=${SEED} npm run test:chaos)`);
  const started = performance.now();
  const random = prng(SEED);
  const setup = async (): Promise<{ svc: ServiceProcess; fake: FakeResend; sql: ReturnType<typeof createSql> }> => {
    const db = await createTestDatabase();
    const fake = await startFakeResend({ keepBodies: false });
    const svc = serviceProcess({ databaseUrl: db.url, resendUrl: fake.url });
    const sql = createSql(db.url, { max: 2 });
    t.after(async () => {
      await svc.kill9();
      await sql.end({ timeout: 1 });
      await fake.close();
      await db.drop();
    });
    await svc.start();
    return { svc, fake, sql };
  };
  const [clean, chaos] = await Promise.all([setup(), setup()]);
  const workload = chaosWorkload(CUSTOMERS, SEED, Math.floor(Date.now() / 1000) - 3_600);

  const runPhases = async (name: string, target: { svc: ServiceProcess; sql: ReturnType<typeof createSql> }, stats: DeliveryStats, duplicateRate: number) => {
    const dupRandom = prng(SEED + 1);
    for (const [i, phase] of workload.phases.entries()) {
      await deliverPhase(() => target.svc.url, phase, stats, { duplicateRate, random: dupRandom, deadlineMs: SETTLE_MS });
      const delivered = Math.round((performance.now() - started) / 1000);
      const settledIn = await waitSettled(target.sql, SETTLE_MS, (detail) => {
        console.log(`chaos ${name}: phase ${i + 1} not settled yet: ${JSON.stringify(detail)}`);
        // Long transactions on the database (a killed incarnation's backend still running a
        // statement holds its locks until the statement ends), and the work queues' live leases.
        void Promise.all([
          target.sql`
            select application_name as app, state, wait_event_type as wait_type, wait_event as wait, round(extract(epoch from now() - xact_start))::int as xact_s,
              round(extract(epoch from now() - query_start))::int as query_s, left(query, 120) as query
            from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid() and xact_start < now() - interval '10 seconds'`,
          target.sql`select queue, count(*)::int as leased from work_partitions where lease_until > now() group by queue`,
        ])
          .then(([long, leases]) => console.log(`chaos ${name}: long transactions ${JSON.stringify(long)}; leased partitions ${JSON.stringify(leases)}`))
          .catch(() => {});
      });
      console.log(`chaos ${name}: phase ${i + 1} (${phase.length} deliveries) delivered at ${delivered} s, settled ${Math.round(settledIn / 1000)} s later`);
    }
  };

  // The killer: SIGKILL the process group, restart on the same database, until enough kills
  // happened and the timeline is delivered.
  let kills = 0;
  let delivered = false;
  let failed = false;
  const killMoments: number[] = [];
  const killer = (async () => {
    while ((!delivered || kills < KILLS) && !failed) {
      await sleep(KILL_GAP_MS[0] + Math.floor(random() * (KILL_GAP_MS[1] - KILL_GAP_MS[0])));
      killMoments.push(Math.round(performance.now() - started));
      await chaos.svc.kill9();
      assert.notEqual(chaos.svc.exit()?.signal, null, 'killed by a signal');
      kills++;
      // sometimes the supervisor restarts at once, sometimes after a pause
      await sleep(Math.floor(random() * 400));
      await chaos.svc.start();
    }
  })();

  const cleanStats = newStats();
  const chaosStats = newStats();
  // A progress line every 20 s: where a slow or stuck run is (and a live timer, so a promise that
  // can never settle ends as a test timeout with this trail, not as a silent empty event loop).
  const progress = setInterval(() => {
    console.log(`chaos progress: ${JSON.stringify({ s: Math.round((performance.now() - started) / 1000), kills, delivered, acknowledged: chaosStats.acknowledged.size, cleanAcknowledged: cleanStats.acknowledged.size, of: workload.total, serviceExit: chaos.svc.exit() })}`);
  }, 20_000);
  t.after(() => clearInterval(progress));
  const cleanRun = runPhases('clean', clean, cleanStats, 0);
  const chaosRun = runPhases('chaos', chaos, chaosStats, 0.05).finally(() => (delivered = true));
  try {
    await Promise.all([cleanRun, chaosRun, killer]);
    // After the last restart: everything still pending completes.
    await waitSettled(chaos.sql, SETTLE_MS);
    await waitSettled(clean.sql, SETTLE_MS);
  } catch (err) {
    // Stop the killer (else this process never ends) and leave a trail: what the service logged.
    failed = true;
    logTrail(chaos.svc);
    throw err;
  }

  // Nothing lost: every delivery acknowledged, stored once, processed, none dead.
  assert.equal(chaosStats.acknowledged.size, workload.total);
  assert.deepEqual(chaosStats.unexpected, []);
  assert.deepEqual([...chaosStats.refused.keys()].filter((s) => s !== 0 && s !== 503), [], `answers: ${JSON.stringify([...chaosStats.refused])}`);
  const stripeIds = workload.phases.flat().filter((d) => d.kind === 'stripe').map((d) => d.id).sort();
  const stored = await chaos.sql<{ id: string; processed: boolean }[]>`select id, processed_at is not null as processed from stripe_events order by id`;
  assert.deepEqual(stored.map((r) => r.id), stripeIds, 'every Stripe event stored once');
  assert.ok(stored.every((r) => r.processed), 'every Stripe event processed');
  const [products] = await chaos.sql<{ n: number; done: number }[]>`select count(*)::int as n, count(processed_at)::int as done from product_events`;
  const productCount = workload.phases.flat().filter((d) => d.kind === 'product').length;
  assert.deepEqual({ ...products! }, { n: productCount, done: productCount }, 'every product event stored once and processed');
  const [dead] = await chaos.sql<{ n: number }[]>`
    select ((select count(*) from stripe_events where dead_at is not null) + (select count(*) from product_events where dead_at is not null))::int as n`;
  assert.equal(dead!.n, 0, 'no dead letters');

  // No email twice: by our message id (the idempotency key's subject) and by recipient + template.
  const ids = chaos.fake.accepted.map((a) => a.headers['X-Lifeline-Message-Id']);
  const duplicateIds = ids.filter((id, i) => ids.indexOf(id) !== i);
  assert.deepEqual(duplicateIds, [], 'a message delivered twice by the provider');
  const tally = (fake: FakeResend) => {
    const m = new Map<string, number>();
    for (const a of fake.accepted) m.set(`${a.to}|${a.template}`, (m.get(`${a.to}|${a.template}`) ?? 0) + 1);
    return m;
  };
  const cleanTally = tally(clean.fake);
  const chaosTally = tally(chaos.fake);
  const twice = [...chaosTally].filter(([k, n]) => n > (cleanTally.get(k) ?? 0));
  assert.deepEqual(twice, [], 'recipient + template sent more often than in the clean run');
  const keys = new Set(chaos.fake.requests.map((r) => r.headers['idempotency-key']));
  const [sentRows] = await chaos.sql<{ n: number }[]>`select count(*)::int as n from messages where status = 'sent'`;
  assert.equal(chaos.fake.accepted.length, sentRows!.n, 'provider deliveries = messages recorded as sent');

  // The same end as the clean run.
  const [expected, actual] = await Promise.all([outcome(clean.sql), outcome(chaos.sql)]);
  assert.deepEqual(actual.invoices, expected.invoices, 'invoices');
  assert.deepEqual(actual.subscriptions, expected.subscriptions, 'subscriptions');
  assert.deepEqual(actual.runs, expected.runs, 'workflow runs (workflow, contact, status)');
  assert.deepEqual(actual.emails, expected.emails, 'messages (recipient, template, status)');
  assert.deepEqual(actual.facts, expected.facts, 'timeline facts by name');
  assert.equal(chaos.fake.accepted.length, clean.fake.accepted.length, 'emails sent: chaos run vs clean run');

  const figures = {
    seed: SEED,
    customers: CUSTOMERS,
    deliveries: workload.total,
    duplicatesInjected: chaosStats.duplicates,
    requests: chaosStats.requests,
    refusedOrUnanswered: Object.fromEntries(chaosStats.refused),
    kills,
    killMomentsMs: killMoments,
    emailsExpected: clean.fake.accepted.length,
    emailsSent: chaos.fake.accepted.length,
    providerRequests: chaos.fake.requests.length,
    batches: keys.size,
    runs: actual.runs.reduce((n: number, r) => n + Number((r as { n: number }).n), 0),
    seconds: Math.round((performance.now() - started) / 1000),
  };
  console.log(`chaos figures: ${JSON.stringify(figures)}`);
  t.diagnostic(JSON.stringify(figures));
  assert.ok(kills >= KILLS);
  assert.equal(chaos.svc.stderr.join('').match(/TypeError|uncaught/gi), null, chaos.svc.stderr.join('').slice(-2000));
});
