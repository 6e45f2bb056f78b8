// npm run bench [-- <scenario>... [--duration=10] [--warmup=2] [--connections=50]
//                  [--batch-connections=10] [--cpu-prof]]
// Benchmarks report ratios to baselines measured in the same run. They are not tests: they
// never fail on a missed target (the exit code is non-zero only if the harness itself broke).
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import postgres from 'postgres';
import { BENCH_DIR, killChildren, startChild } from './lib/child.ts';
import type { BenchContext, BenchOptions, Scenario } from './lib/context.ts';
import { createBenchDatabase, type BenchDatabase } from './lib/database.ts';
import { progress } from './lib/log.ts';
import { ADMIN_TOKEN, WEBHOOK_SECRET, WRITE_KEY } from './lib/payloads.ts';
import { markdownCpuTable, markdownTable, Report, writeJson } from './lib/report.ts';
import { machineBusy, setBenchDatabase } from './lib/cpu.ts';
import { batchIngest } from './scenarios/batch-ingest.ts';
import { campaignSend } from './scenarios/campaign-send.ts';
import { eventLatency } from './scenarios/event-latency.ts';
import { eventsPipeline } from './scenarios/events-pipeline.ts';
import { recoveryReport } from './scenarios/recovery-report.ts';
import { stripePipeline } from './scenarios/stripe-pipeline.ts';
import { waitingRuns } from './scenarios/waiting-runs.ts';
import { templateRender } from './scenarios/template-render.ts';
import { webhookIngest } from './scenarios/webhook-ingest.ts';

const SCENARIOS: Scenario[] = [webhookIngest, batchIngest, eventLatency, templateRender, campaignSend, waitingRuns, recoveryReport, stripePipeline, eventsPipeline];
const RESULTS = path.join(BENCH_DIR, 'results', 'latest.json');

function usage(): string {
  return [
    'usage: npm run bench [-- <scenario>...] [--rounds=N] [--duration=S] [--warmup=S] [--connections=N] [--batch-connections=N] [--drain-limit=S] [--quiet-wait=S] [--diagnose] [--cpu-prof]',
    `scenarios: ${SCENARIOS.map((s) => `\n  ${s.name.padEnd(16)} ${s.description}`).join('')}`,
    'DATABASE_URL set: a fresh database on that server; unset: an embedded PostgreSQL in a temp folder.',
  ].join('\n');
}

let quietWaitSec = 120;

function parseArgs(argv: string[]): { names: string[]; options: BenchOptions } {
  const options: BenchOptions = {
    rounds: 1,
    durationSec: 10,
    warmupSec: 2,
    connections: 50,
    batchConnections: 10,
    batchSize: 100,
    drainLimitSec: 300,
    latencyLoad: 0.15,
    dbPoolMax: 10,
    cpuProfDir: null,
    diagnose: false,
  };
  const names: string[] = [];
  const int = (v: string | undefined, flag: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) throw new Error(`${flag} expects a whole number`);
    return n;
  };
  for (const arg of argv) {
    const [flag, value] = arg.split('=', 2) as [string, string | undefined];
    if (flag === '--help' || flag === '-h') {
      console.log(usage());
      process.exit(0);
    } else if (flag === '--rounds') options.rounds = Math.max(1, int(value, flag));
    else if (flag === '--duration') options.durationSec = Math.max(1, int(value, flag));
    else if (flag === '--warmup') options.warmupSec = int(value, flag);
    else if (flag === '--connections') options.connections = Math.max(1, int(value, flag));
    else if (flag === '--batch-connections') options.batchConnections = Math.max(1, int(value, flag));
    else if (flag === '--drain-limit') options.drainLimitSec = Math.max(1, int(value, flag));
    else if (flag === '--quiet-wait') quietWaitSec = int(value, flag);
    else if (flag === '--diagnose') options.diagnose = true;
    else if (flag === '--cpu-prof') options.cpuProfDir = path.join(BENCH_DIR, 'results', 'profiles');
    else if (flag.startsWith('-')) throw new Error(`unknown option ${flag}\n${usage()}`);
    else if (!SCENARIOS.some((s) => s.name === flag)) throw new Error(`unknown scenario "${flag}"\n${usage()}`);
    else names.push(flag);
  }
  return { names: names.length ? names : SCENARIOS.map((s) => s.name), options };
}

/** Which code was measured: BENCH_COMMIT (set by run-at-head.sh) or the checkout's HEAD and whether it has local changes. */
function codeVersion(): string {
  if (process.env.BENCH_COMMIT) return process.env.BENCH_COMMIT;
  try {
    const git = (...args: string[]) => execFileSync('git', ['--no-optional-locks', ...args], { cwd: path.join(BENCH_DIR, '..'), encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const head = git('rev-parse', '--short', 'HEAD');
    const dirty = git('status', '--porcelain', '--untracked-files=no', '--', 'src', 'migrations', 'package.json') !== '';
    return dirty ? `${head} + uncommitted changes in src/` : head;
  } catch {
    return 'unknown';
  }
}

async function main(): Promise<number> {
  const major = Number(process.versions.node.split('.')[0]);
  if (major < 24) {
    console.error(`bench: Node ${process.versions.node} cannot run TypeScript directly: use npm run bench (Node 24 from node_modules/.bin)`);
    return 2;
  }
  const { names, options } = parseArgs(process.argv.slice(2));
  const report = new Report();
  const started = new Date();
  let db: BenchDatabase | null = null;
  let sql: postgres.Sql | null = null;
  let failed = false;

  const cleanup = async () => {
    killChildren();
    if (sql) await sql.end({ timeout: 5 }).catch(() => {});
    if (db) await db.drop().catch((err: Error) => progress('teardown', err.message));
  };
  let interrupted = false;
  process.once('SIGINT', () => {
    interrupted = true;
    progress('run', 'interrupted: stopping children and dropping the database');
    void cleanup().finally(() => process.exit(130));
  });

  // The machine is shared: wait (bounded) until it is quiet, and record how busy it was.
  let busyBefore = await machineBusy();
  const quietUntil = performance.now() + quietWaitSec * 1000;
  while (busyBefore !== null && busyBefore > 0.3 && performance.now() < quietUntil) {
    progress('setup', `machine busy before the run (${busyBefore.toFixed(2)} cores in use by other processes); waiting up to ${quietWaitSec}s for it to settle`);
    busyBefore = await machineBusy(5000);
  }
  if (busyBefore !== null) progress('setup', `cores in use before the run: ${busyBefore.toFixed(2)}${busyBefore > 0.3 ? ' (NOT quiet: figures will be noisy)' : ''}`);

  try {
    db = await createBenchDatabase();
    setBenchDatabase(db.name);
    progress('setup', `database ${db.name} on ${db.server === 'embedded' ? 'embedded PostgreSQL' : 'DATABASE_URL server'}: ${db.version}`);
    progress('setup', `${os.availableParallelism()} cores; servers run in child processes, the load generator (autocannon) in this process (pid ${process.pid})`);
    const dbUrl = db.url;
    const childEnv = (extra: Record<string, string> = {}) => ({
      DATABASE_URL: dbUrl,
      STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET,
      LIFELINE_WRITE_KEY: WRITE_KEY,
      LIFELINE_ADMIN_TOKEN: ADMIN_TOKEN,
      LOG_LEVEL: 'silent',
      DB_POOL_MAX: String(options.dbPoolMax),
      HOST: '127.0.0.1',
      PORT: '0',
      ...extra,
    });
    const benchDb = db;
    const startLifeline = (role: 'all' | 'api' | 'worker') => startChild({ label: `lifeline ROLE=${role}`, script: 'server-child.ts', env: childEnv({ ROLE: role }), cpuProfDir: options.cpuProfDir });

    for (const [i, name] of names.entries()) {
      if (interrupted) break;
      const scenario = SCENARIOS.find((s) => s.name === name)!;
      // Every scenario starts from an empty, migrated database: what one leaves behind (a
      // ROLE=api phase's unprocessed inbox backlog, 100k campaign runs) would otherwise be
      // worked off by the next one's worker and counted in its figures (a full run once measured
      // waiting-runs' 1k wake-up at 34 s instead of ~1 s: its worker was draining the webhook and
      // batch-ingest backlogs). Migrated before the scenario, so none of them times a migration.
      if (sql) await sql.end({ timeout: 5 });
      sql = null;
      if (i > 0) await benchDb.recreate();
      sql = postgres(dbUrl, { max: 2, onnotice: () => {} });
      const adminSql = sql;
      const ctx: BenchContext = {
        db: benchDb,
        sql,
        report,
        options,
        startLifeline,
        startChild: (label, script, env = {}) => startChild({ label, script, env: childEnv(env), cpuProfDir: options.cpuProfDir }),
        async settle() {
          await adminSql`checkpoint`.catch(() => {});
        },
      };
      const migrated = await startLifeline('api');
      await migrated.stop();
      progress(name, `start: ${scenario.description}`);
      const t0 = performance.now();
      try {
        await scenario.run(ctx);
        progress(name, `done in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
      } catch (err) {
        failed = true;
        killChildren();
        progress(name, `FAILED: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
        report.note(`${name} did not complete: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
  } catch (err) {
    failed = true;
    progress('setup', `FAILED: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
    report.note(`set-up failed: ${err instanceof Error ? err.message : String(err)}`);
  } finally {
    await cleanup();
  }

  const meta = {
    date: started.toISOString(),
    machine: { cores: os.availableParallelism(), cpu: os.cpus()[0]?.model ?? 'unknown', ramGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10, platform: `${os.type()} ${os.release()} ${os.arch()}` },
    code: codeVersion(),
    node: process.version,
    postgres: { server: db?.server, version: db?.version },
    coresBusyBeforeRun: busyBefore,
    setup:
      'Each server under test runs in its own child process; the load generator (autocannon, and the paced latency client) runs in the parent bench process; PostgreSQL runs on the same machine. All three share the cores.',
    settings: options,
  };
  console.log(`\nLifeline benchmarks ${meta.date}`);
  console.log(`code: ${meta.code}`);
  console.log(`machine: ${meta.machine.cores} cores (${meta.machine.cpu}), ${meta.machine.ramGiB} GiB RAM; Node ${meta.node}; ${meta.postgres.version} (${meta.postgres.server})`);
  console.log(`setup: ${meta.setup}`);
  console.log(`settings: ${JSON.stringify(options)}\n`);
  console.log(markdownTable(report.rows));
  console.log('\nCPU during each timed phase (cores in use on average; "other" = processes outside the benchmark):\n');
  console.log(markdownCpuTable(report.phases));
  for (const n of report.notes) console.log(`note: ${n}`);
  await writeJson(RESULTS, { ...meta, rows: report.rows, phases: report.phases, notes: report.notes });
  progress('run', `results written to ${path.relative(process.cwd(), RESULTS)}`);
  return failed ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    killChildren();
    console.error(err instanceof Error ? err.message : err);
    process.exit(2);
  },
);
