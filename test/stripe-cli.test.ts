// The Stripe commands of the CLI: `setup stripe` (against the fake Stripe API), `replay`
// (idempotence on real Postgres), and the CLI itself run as a child process (help, exit codes,
// a backfill end to end with plain progress lines).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import path from 'node:path';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { PROJECTED_STRIPE_EVENT_TYPES } from '../src/stripe/projector.ts';
import { STRIPE_API_VERSION } from '../src/stripe/client.ts';
import { storeStripeEvent } from '../src/stripe/event-inbox.ts';
import { replayStripeEvents } from '../src/stripe/replay.ts';
import { setupStripe } from '../src/cli/commands/setup-stripe.ts';
import { registerCommands } from '../src/cli/commands/index.ts';
import { Command } from 'commander';
import { FakeStripeApi, FAKE_STRIPE_KEY, fakeCustomer } from './helpers/fake-stripe-api.ts';
import { deliver, envelope, invoice, subscription } from './helpers/stripe.ts';
import { setup, T, DAY, HOUR, at } from './helpers/engine-scenario.ts';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const NODE = path.join(ROOT, 'node_modules', '.bin', 'node');

function runCli(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(NODE, ['src/cli/main.ts', ...args], { cwd: ROOT, env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env }, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

test('setup stripe creates the endpoint once (secret printed once), then updates the same endpoint', async (t) => {
  const fake = await FakeStripeApi.start();
  t.after(() => fake.close());
  const env = { STRIPE_SECRET_KEY: FAKE_STRIPE_KEY, STRIPE_API_BASE: fake.url, PUBLIC_URL: 'https://lifeline.example.test/' };
  const lines: string[] = [];
  const created = await setupStripe({ env, print: (l) => lines.push(l) });
  assert.equal(created.action, 'created');
  assert.match(created.secret ?? '', /^whsec_/);
  assert.ok(lines.some((l) => l === `  STRIPE_WEBHOOK_SECRET=${created.secret}`), 'tells the user what to set');
  const [create] = fake.requestsTo('POST', '/v1/webhook_endpoints');
  assert.equal(create!.body.url, 'https://lifeline.example.test/webhooks/stripe');
  assert.deepEqual(create!.body.enabled_events, [...PROJECTED_STRIPE_EVENT_TYPES], 'exactly the types the projection reads');
  assert.equal(create!.body.api_version, STRIPE_API_VERSION);
  assert.ok(create!.idempotencyKey, 'the SDK sends an idempotency key on create');

  // Run again: found by URL, nothing to change, no second endpoint, no secret.
  const again = await setupStripe({ env, print: () => {} });
  assert.equal(again.action, 'unchanged');
  assert.equal(again.secret, undefined);

  // Someone narrowed the events and disabled it in the dashboard: setup puts it back.
  Object.assign(fake.webhookEndpoints[0]!, { enabled_events: ['invoice.paid'], status: 'disabled' });
  const out: string[] = [];
  const updated = await setupStripe({ env, print: (l) => out.push(l) });
  assert.equal(updated.action, 'updated');
  assert.equal(updated.endpointId, created.endpointId);
  assert.equal(updated.secret, undefined);
  assert.ok(!out.join('\n').includes('whsec_'), 'the secret is printed only on create');
  assert.equal(fake.webhookEndpoints.length, 1, 'one endpoint');
  assert.deepEqual(fake.webhookEndpoints[0]!.enabled_events, [...PROJECTED_STRIPE_EVENT_TYPES]);
  assert.equal(fake.webhookEndpoints[0]!.status, 'enabled');

  // A localhost PUBLIC_URL cannot receive Stripe's webhooks: refused with the local alternative.
  await assert.rejects(setupStripe({ env: { ...env, PUBLIC_URL: 'http://localhost:3000' }, print: () => {} }), /stripe listen --forward-to/);

  // An endpoint at another API version cannot be changed in place: warn; --recreate replaces it.
  fake.webhookEndpoints[0]!.api_version = '2024-06-20';
  const warned: string[] = [];
  assert.equal((await setupStripe({ env, print: (l) => warned.push(l) })).apiVersionMismatch, true);
  assert.ok(warned.some((l) => l.includes('--recreate')));
  const recreated = await setupStripe({ env, recreate: true, print: () => {} });
  assert.equal(recreated.action, 'recreated');
  assert.match(recreated.secret ?? '', /^whsec_/);
  assert.equal(fake.webhookEndpoints.length, 1);
  assert.equal(fake.webhookEndpoints[0]!.api_version, STRIPE_API_VERSION);
});

test('replay of processed events changes no state and sends nothing; it adds only what was never projected', async (t) => {
  const { svc, clock } = await setup(t);
  await deliver(svc.app, envelope('customer.created', fakeCustomer({ id: 'cus_r1', email: 'rae@example.test' }), { created: at(-DAY) }));
  await deliver(svc.app, envelope('customer.subscription.created', subscription({ id: 'sub_r1', customer: 'cus_r1' }), { created: at(-DAY) }));
  await deliver(svc.app, envelope('invoice.payment_failed', invoice({ id: 'in_r1', customer: 'cus_r1', subscription: 'sub_r1', attempt_count: 1, customer_email: 'rae@example.test' }), { created: T }));
  await deliver(svc.app, envelope('invoice.payment_failed', invoice({ id: 'in_r1', customer: 'cus_r1', subscription: 'sub_r1', attempt_count: 2, customer_email: 'rae@example.test' }), { created: at(3 * DAY) }));
  clock.set(at(3 * DAY + HOUR));
  await svc.drain();
  const snapshot = async () => ({
    state: await svc.sql`select id, status, attempt_count, version_event_id from invoices union all select id, status, 0, version_event_id from subscriptions order by 1`,
    facts: await svc.sql`select name, dedupe_key from domain_events order by id`,
    runs: await svc.sql`select workflow_key, run_key, status, state from workflow_runs order by id`,
    messages: await svc.sql`select template, to_email, created_at from messages order by id`,
    failures: await svc.sql`select stripe_event_id from payment_failures order by 1`,
  });
  const before = await snapshot();
  assert.ok(before.messages.length >= 1, 'the scenario sent dunning');

  const dry = await replayStripeEvents({ sql: svc.sql, clock }, { from: at(-2 * DAY), dryRun: true });
  assert.deepEqual(dry, { events: 4, newFacts: {}, dryRun: true });
  const real = await replayStripeEvents({ sql: svc.sql, clock }, { from: at(-2 * DAY), batchSize: 3 });
  assert.deepEqual(real, { events: 4, newFacts: {}, dryRun: false });
  await svc.drain();
  const after = await snapshot();
  assert.deepEqual(after.state, before.state);
  assert.deepEqual(after.facts, before.facts);
  assert.deepEqual(after.failures, before.failures);
  assert.deepEqual(after.runs, before.runs);
  assert.deepEqual(after.messages, before.messages, 'no email sent again');

  // An event stored and marked processed but never projected (e.g. by a projection bug): the
  // dry run reports it and writes nothing, the replay adds it, a second replay adds nothing.
  const paid = envelope('invoice.paid', invoice({ id: 'in_r1', customer: 'cus_r1', subscription: 'sub_r1', status: 'paid', attempt_count: 2 }), { created: at(3 * DAY + 2 * HOUR) });
  await storeStripeEvent(svc.sql, paid, JSON.stringify(paid), clock.now());
  await svc.sql`update stripe_events set processed_at = ${clock.now()} where id = ${paid.id}`;
  const dryPaid = await replayStripeEvents({ sql: svc.sql, clock }, { from: at(3 * DAY), type: 'invoice.paid', dryRun: true });
  assert.deepEqual(dryPaid, { events: 1, newFacts: { 'invoice.paid': 1 }, dryRun: true });
  const [stillOpen] = await svc.sql<{ status: string }[]>`select status from invoices where id = 'in_r1'`;
  assert.equal(stillOpen!.status, 'open', 'dry run wrote nothing');
  assert.deepEqual((await replayStripeEvents({ sql: svc.sql, clock }, { from: at(-2 * DAY) })).newFacts, { 'invoice.paid': 1 });
  assert.deepEqual((await replayStripeEvents({ sql: svc.sql, clock }, { from: at(-2 * DAY) })).newFacts, {});
  const [nowPaid] = await svc.sql<{ status: string }[]>`select status from invoices where id = 'in_r1'`;
  assert.equal(nowPaid!.status, 'paid');
});

/** A command's --help, in-process (the program main.ts builds: same registrations). */
async function helpOf(args: string[]): Promise<string> {
  let out = '';
  const program = new Command('lifeline').exitOverride().configureOutput({ writeOut: (text) => (out += text), writeErr: (text) => (out += text) });
  registerCommands(program);
  await assert.rejects(program.parseAsync([...args, '--help'], { from: 'user' }), (err: { code?: string; exitCode?: number }) => err.code === 'commander.helpDisplayed' && err.exitCode === 0);
  return out;
}

test('--help of the Stripe commands lists their options', async () => {
  assert.match(await helpOf(['setup', 'stripe']), /--recreate/);
  const backfill = await helpOf(['backfill']);
  for (const option of ['--since <date>', '--enroll', '--restart']) assert.ok(backfill.includes(option), option);
  const replay = await helpOf(['replay']);
  for (const option of ['--from <time>', '--type <event>', '--dry-run']) assert.ok(replay.includes(option), option);
});

test('CLI in child processes: --help exits 0, usage errors exit 2, failures exit 1 with one line', async () => {
  const [root, noFrom, badSince, noKey] = await Promise.all([
    runCli(['--help']),
    runCli(['replay']),
    runCli(['backfill', '--since', 'yesterday-ish']),
    runCli(['setup', 'stripe'], { PUBLIC_URL: 'https://lifeline.example.test' }),
  ]);
  assert.equal(root.code, 0);
  for (const name of ['setup', 'backfill', 'replay']) assert.match(root.stdout, new RegExp(`\\n  ${name}\\b`));
  assert.equal(noFrom.code, 2);
  assert.match(noFrom.stderr, /--from/);
  assert.equal(badSince.code, 2);
  assert.match(badSince.stderr, /invalid --since/);
  assert.equal(noKey.code, 1);
  assert.equal(noKey.stderr.trim().split('\n').length, 1, 'one line');
  assert.match(noKey.stderr, /STRIPE_SECRET_KEY is not set/);
});

test('CLI in a child process: setup stripe and backfill against the fake Stripe API (plain progress when not a TTY)', async (t) => {
  const fake = await FakeStripeApi.start();
  t.after(() => fake.close());
  const { svc } = await setup(t);
  fake.add('/v1/customers', Array.from({ length: 30 }, (_, i) => fakeCustomer({ id: `cus_c${i}`, email: `c${i}@example.test`, created: 1_750_000_000 + i })));
  const env = { STRIPE_SECRET_KEY: FAKE_STRIPE_KEY, STRIPE_API_BASE: fake.url, PUBLIC_URL: 'https://lifeline.example.test', DATABASE_URL: svc.databaseUrl };

  const first = await runCli(['setup', 'stripe'], env);
  assert.equal(first.code, 0, first.stderr);
  assert.match(first.stdout, /Created Stripe webhook endpoint we_/);
  assert.match(first.stdout, /STRIPE_WEBHOOK_SECRET=whsec_/);

  const backfill = await runCli(['backfill'], env);
  assert.equal(backfill.code, 0, backfill.stderr);
  assert.match(backfill.stderr, /^backfill: customers 30 read/m, 'plain progress lines on a pipe');
  assert.match(backfill.stdout, /Backfill finished: 30 Stripe objects/);
  const [n] = await svc.sql<{ n: number }[]>`select count(*)::int as n from customers`;
  assert.equal(n!.n, 30);

  await deliver(svc.app, envelope('invoice.payment_failed', invoice({ id: 'in_c1', customer: 'cus_c1', attempt_count: 1 }), { created: T }));
  await svc.drain();
  const replay = await runCli(['replay', '--from', '2026-03-01', '--type', 'invoice.payment_failed', '--dry-run'], env);
  assert.equal(replay.code, 0, replay.stderr);
  assert.match(replay.stdout, /Dry run: replayed 1 stored Stripe event\(s\); would record no new facts/);
  const realReplay = await runCli(['replay', '--from', '2026-03-01', '--type', 'invoice.payment_failed'], env);
  assert.equal(realReplay.code, 0, realReplay.stderr);

  // Operator actions from the CLI are in the audit log (a dry run changes nothing: not recorded).
  const dir = await mkdtemp(path.join(tmpdir(), 'lifeline-cli-audit-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  assert.equal((await runCli(['workflows', 'export', dir], env)).code, 0);
  const file = path.join(dir, 'onboarding.json');
  await writeFile(file, JSON.stringify({ ...JSON.parse(await readFile(file, 'utf8')), name: 'Onboarding, edited' }, null, 2));
  const imported = await runCli(['workflows', 'import', dir], env);
  assert.equal(imported.code, 0, imported.stderr);
  const audit = await svc.sql<{ actor: string; action: string; target: string | null; diff: Record<string, unknown> }[]>`
    select actor, action, target, diff from audit_log order by id`;
  assert.deepEqual(audit.map((a) => [a.action, a.target]), [['stripe.backfilled', null], ['stripe.replayed', 'invoice.payment_failed'], ['workflow.published', 'onboarding']]);
  assert.ok(audit.every((a) => /^cli:.+/.test(a.actor)), `actor is the OS user: ${audit.map((a) => a.actor).join(', ')}`);
  assert.equal((audit[0]!.diff.items as Record<string, number>).customers, 30);
  assert.equal(audit[1]!.diff.events, 1);
  assert.equal((audit[2]!.diff.version as { to: number }).to, 2);
});

test('CLI: Ctrl-C (SIGINT) stops a backfill after the page in flight, exit 1; the next run resumes and finishes', async (t) => {
  const fake = await FakeStripeApi.start();
  t.after(() => fake.close());
  const { svc } = await setup(t);
  fake.add('/v1/customers', Array.from({ length: 500 }, (_, i) => fakeCustomer({ id: `cus_s${String(i).padStart(3, '0')}`, email: `s${i}@example.test`, created: 1_750_000_000 + i })));
  // Slow enough to interrupt: 2 requests a second (pages of 100).
  fake.rateLimit(2);
  const env = { STRIPE_SECRET_KEY: FAKE_STRIPE_KEY, STRIPE_API_BASE: fake.url, DATABASE_URL: svc.databaseUrl };
  const child = spawn(NODE, ['src/cli/main.ts', 'backfill'], { cwd: ROOT, env: { PATH: process.env.PATH ?? '', ...env } });
  let stderr = '';
  let stdout = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d));
  const interrupted = new Promise<void>((resolve) =>
    child.stderr.on('data', (d: Buffer) => {
      stderr += d;
      if (/customers \d+ read/.test(stderr) && !child.killed) {
        child.kill('SIGINT');
        resolve();
      }
    }),
  );
  await interrupted;
  const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
  assert.equal(code, 1, stderr);
  assert.match(stderr, /stopping after the page in flight/);
  assert.match(stdout, /Backfill interrupted/);
  const [saved] = await svc.sql<{ items: number; completed_at: Date | null }[]>`select items, completed_at from stripe_backfill_cursors where stream = 'customers'`;
  assert.ok(saved!.items >= 100 && saved!.items < 500 && saved!.completed_at === null, `saved cursor: ${JSON.stringify(saved)}`);

  fake.rateLimit(undefined);
  const resumed = await runCli(['backfill'], env);
  assert.equal(resumed.code, 0, resumed.stderr);
  assert.match(resumed.stdout, new RegExp(`Backfill resumed and finished: ${500 - saved!.items} Stripe objects`));
  const [n] = await svc.sql<{ n: number }[]>`select count(*)::int as n from customers`;
  assert.equal(n!.n, 500);
});
