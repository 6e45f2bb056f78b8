// The service as a daemon, in child processes on an embedded PostgreSQL in a temporary folder:
// a second user of the data folder (`npm run migrate`) gets one clear line and exit 1; SIGTERM
// stops within a bound without error-level lines; `npm start` passes signals to the service and
// leaves no orphan when npm itself is killed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createServer } from 'node:net';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const NODE = path.join(ROOT, 'node_modules', '.bin', 'node');
const STOP_BOUND_MS = 10_000;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function waitFor(predicate: () => boolean, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (predicate()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return predicate();
}

interface Running {
  child: ChildProcess;
  out: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function run(command: string, args: string[], env: Record<string, string>, detached = false): Running {
  const child = spawn(command, args, { cwd: ROOT, detached, env: { PATH: `${path.dirname(NODE)}:${process.env.PATH ?? ''}`, HOME: process.env.HOME ?? '/tmp', ...env } });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  return { child, out: () => out, exited };
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

async function tempEnv(t: import('node:test').TestContext, offset: number): Promise<Record<string, string>> {
  const root = await mkdtemp(path.join(tmpdir(), 'lifeline-daemon-'));
  await chmod(root, 0o755); // as root, PostgreSQL runs as `postgres` and must enter it
  t.after(() => rm(root, { recursive: true, force: true }));
  // Below the kernel's ephemeral range (32768+ here): a port in it can be taken at any moment by
  // an outgoing connection (the suite holds hundreds to PostgreSQL), and the embedded PostgreSQL
  // then fails to start (CI: "did not start … port 39856"). Probed free as well (both ports).
  let base = 20_000 + ((process.pid * 7 + offset * 101) % 12_000);
  while (!((await portFree(base)) && (await portFree(base + 1)))) base = 20_000 + ((base - 20_000 + 2) % 12_000);
  return { LIFELINE_DATA_DIR: path.join(root, 'pgdata'), EMBEDDED_PG_PORT: String(base), PORT: String(base + 1), HOST: '127.0.0.1', LIFELINE_OUTBOX_DIR: path.join(root, 'outbox'), ENGINE_TICK_MS: '200' };
}

/** The service's pid: the parent of the PostgreSQL named in postmaster.pid (Linux /proc). */
async function servicePid(dataDir: string): Promise<number> {
  const postmaster = Number((await readFile(path.join(dataDir, 'postmaster.pid'), 'utf8')).split('\n')[0]);
  const stat = await readFile(`/proc/${postmaster}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
}

const errorLines = (out: string) => out.split('\n').filter((l) => /"level":(50|60)\b/.test(l) || /\bERROR\b|\bFATAL\b/.test(l));

test('second user of the data folder: one clear line, exit 1; SIGTERM then stops within the bound, no error lines', async (t) => {
  const env = await tempEnv(t, 1);
  const service = run(NODE, ['src/server.ts'], env);
  t.after(() => service.child.kill('SIGKILL'));
  assert.ok(await waitFor(() => /listening on/.test(service.out()), 90_000), `service started:\n${service.out()}`);
  assert.match(service.out(), /BRAND_POSTAL_ADDRESS is the default placeholder/);
  assert.equal(service.out().split('\n').filter((l) => l.includes('BRAND_NAME is the default placeholder')).length, 1, 'warned once');

  const migrate = await new Promise<{ code: number; stderr: string }>((resolve) =>
    execFile(NODE, ['src/migrate-cli.ts'], { cwd: ROOT, env: { PATH: process.env.PATH ?? '', ...env }, timeout: 60_000 }, (err, _stdout, stderr) => resolve({ code: err ? Number(err.code) : 0, stderr })),
  );
  assert.equal(migrate.code, 1);
  const lines = migrate.stderr.trim().split('\n');
  assert.equal(lines.length, 1, migrate.stderr);
  assert.match(lines[0]!, /in use by PostgreSQL pid \d+ \(started by pid \d+\).*postmaster\.pid.*stop the Lifeline service/);
  assert.ok(!/undefined/.test(lines[0]!));

  const second = run(NODE, ['src/server.ts'], { ...env, PORT: String(Number(env.PORT) + 2) });
  const secondExit = await second.exited;
  assert.equal(secondExit.code, 1);
  assert.match(second.out(), /lifeline: cannot start: the embedded database folder .* is in use by PostgreSQL pid/);

  const before = service.out().length;
  const t0 = performance.now();
  service.child.kill('SIGTERM');
  const exit = await service.exited;
  const stopMs = performance.now() - t0;
  t.diagnostic(`SIGTERM stop of node src/server.ts: ${Math.round(stopMs)} ms`);
  assert.ok(stopMs < STOP_BOUND_MS, `stopped in ${stopMs} ms`);
  assert.equal(exit.code, 0);
  assert.deepEqual(errorLines(service.out().slice(before)), []);
});

test('npm start: SIGINT reaches the service (bounded, no error lines); killing npm leaves no orphan', async (t) => {
  const env = await tempEnv(t, 2);
  const npm = run('npm', ['start', '--silent'], env);
  t.after(() => npm.child.kill('SIGKILL'));
  assert.ok(await waitFor(() => /listening on/.test(npm.out()), 90_000), npm.out());
  const pid = await servicePid(env.LIFELINE_DATA_DIR!);
  assert.ok(pid > 0 && pid !== npm.child.pid, 'service pid from its log');
  t.after(() => {
    if (alive(pid)) process.kill(pid, 'SIGKILL');
  });

  const t0 = performance.now();
  npm.child.kill('SIGKILL'); // the worst case: npm cannot forward anything
  assert.ok(await waitFor(() => !alive(pid), STOP_BOUND_MS), 'the service noticed its parent died and stopped');
  t.diagnostic(`service gone ${Math.round(performance.now() - t0)} ms after npm was killed`);
  assert.deepEqual(errorLines(npm.out()), []);

  // Ctrl-C on a terminal sends SIGINT to npm and the service alike; sent to npm only here.
  const again = run('npm', ['start', '--silent'], env);
  t.after(() => again.child.kill('SIGKILL'));
  assert.ok(await waitFor(() => /listening on/.test(again.out()), 90_000), again.out());
  const pid2 = await servicePid(env.LIFELINE_DATA_DIR!);
  t.after(() => {
    if (alive(pid2)) process.kill(pid2, 'SIGKILL');
  });
  const postmaster2 = await postmasterPid(env.LIFELINE_DATA_DIR!);
  const t1 = performance.now();
  again.child.kill('SIGINT');
  assert.ok(await waitFor(() => !alive(pid2), STOP_BOUND_MS), 'SIGINT to npm stopped the service');
  t.diagnostic(`npm start SIGINT stop: ${Math.round(performance.now() - t1)} ms`);
  await again.exited;
  assert.deepEqual(errorLines(again.out()), []);
  assert.ok(await waitFor(() => !alive(postmaster2), STOP_BOUND_MS), 'the embedded PostgreSQL stopped too (no orphan holding the data folder)');

  // Ctrl-C on a terminal under npm start: the whole foreground group gets SIGINT, and npm also
  // forwards its copy, so the service gets it twice at once. That used to be close-with-grace's
  // "second SIGINT, exiting" (exit 1, no phased stop, the embedded PostgreSQL left running).
  const third = run('npm', ['start', '--silent'], env, true);
  t.after(() => {
    try {
      process.kill(-third.child.pid!, 'SIGKILL');
    } catch {}
  });
  assert.ok(await waitFor(() => /listening on/.test(third.out()), 90_000), third.out());
  const pid3 = await servicePid(env.LIFELINE_DATA_DIR!);
  const postmaster3 = await postmasterPid(env.LIFELINE_DATA_DIR!);
  t.after(() => {
    if (alive(pid3)) process.kill(pid3, 'SIGKILL');
  });
  const before = third.out().length;
  process.kill(-third.child.pid!, 'SIGINT');
  assert.ok(await waitFor(() => !alive(pid3), STOP_BOUND_MS), 'Ctrl-C under npm start stopped the service');
  assert.ok(await waitFor(() => !alive(postmaster3), STOP_BOUND_MS), 'and its embedded PostgreSQL');
  await third.exited;
  assert.deepEqual(errorLines(third.out().slice(before)), [], 'an orderly stop: no "second SIGINT, exiting"');
});

async function postmasterPid(dataDir: string): Promise<number> {
  return Number((await readFile(path.join(dataDir, 'postmaster.pid'), 'utf8')).split('\n')[0]);
}

test('Ctrl-C on a terminal (SIGINT to the whole process group): the embedded PostgreSQL is not hit, orderly stop without error lines', async (t) => {
  const env = await tempEnv(t, 3);
  // detached: its own process group, like a shell's foreground job; -pid signals all of it.
  const service = run(NODE, ['src/server.ts'], env, true);
  t.after(() => {
    try {
      process.kill(-service.child.pid!, 'SIGKILL');
    } catch {}
  });
  assert.ok(await waitFor(() => /listening on/.test(service.out()), 90_000), service.out());
  const before = service.out().length;
  const t0 = performance.now();
  process.kill(-service.child.pid!, 'SIGINT');
  const exit = await service.exited;
  const stopMs = performance.now() - t0;
  t.diagnostic(`Ctrl-C (process group) stop: ${Math.round(stopMs)} ms`);
  assert.equal(exit.code, 0, service.out().slice(before));
  assert.ok(stopMs < STOP_BOUND_MS, `stopped in ${stopMs} ms`);
  assert.deepEqual(errorLines(service.out().slice(before)), []);
  assert.ok(!/database system is shutting down|CONNECTION_CLOSED/.test(service.out().slice(before)));
});
