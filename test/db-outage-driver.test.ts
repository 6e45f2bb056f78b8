// postgres.js 3.4.9 crashes the process when PostgreSQL goes away under load: a deferred small
// write (setImmediate(nextWrite)) runs after the connection nulled its socket and throws an
// uncatchable TypeError (porsager/postgres #1154, #1208). patches/postgres+3.4.9.patch (applied by
// patch-package on npm install) settles those queries with CONNECTION_CLOSED instead. This test
// stops and starts a PostgreSQL of its own under load from a child process: unpatched, the child
// died in the first or second outage; patched, it survives every outage and queries again.
// The same patch fixes the pool stalls these outages exposed (about 1 run in 3 failed before):
// a released reserved connection that had closed went back into the pool with no socket and never
// reconnected (failing every query; as outages went by they filled the pool and queries waited
// forever), a queued reserve() handed to a reconnect was dropped and never settled (#1195), and a
// type fetch cut by a reset was an unhandled rejection that killed the process. So after each
// restart both pool and reserved queries must succeed, and on SIGTERM every loop must finish.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { startStoppablePostgres } from './helpers/stoppable-postgres.ts';

const OUTAGES = 5;

/**
 * Each step gets its own deadline, so a step that never finishes fails with its name (and the
 * child's stderr) instead of the whole test hanging until the runner's 180 s timeout, which
 * says nothing about where it stuck.
 */
async function within<T>(ms: number, step: string, work: Promise<T>, detail: () => string = () => ''): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${step}: not done within ${ms} ms ${detail()}`)), ms);
  });
  try {
    return await Promise.race([work, late]);
  } finally {
    clearTimeout(timer);
  }
}

test(`the postgres.js pool survives ${OUTAGES} PostgreSQL fast shutdowns under load and recovers`, async (t) => {
  const pg = await within(60_000, 'starting the test PostgreSQL', startStoppablePostgres());
  t.after(() => pg.destroy());
  const child = spawn(process.execPath, ['test/helpers/driver-load-child.ts'], {
    env: { ...process.env, LOAD_DATABASE_URL: pg.url },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += String(d)));
  let exited: { code: number | null; signal: string | null } | null = null;
  child.on('exit', (code, signal) => (exited = { code, signal }));
  t.after(() => {
    if (!exited) child.kill('SIGKILL');
  });
  const lines = createInterface({ input: child.stdout });
  const childGone = once(child, 'exit').then(() => {
    throw new Error(`load process exited: ${JSON.stringify(exited)} ${stderr.slice(-2000)}`);
  });
  childGone.catch(() => {});
  const tail = () => `(child stderr: ${stderr.slice(-1000) || 'empty'})`;
  const nextLine = async (): Promise<string> => {
    const [line] = (await within(10_000, 'a line from the load process', Promise.race([once(lines, 'line'), childGone]), tail)) as [string];
    return line;
  };
  assert.equal(await nextLine(), 'ready');
  const report = async (): Promise<{ ok: number; failed: number; poolOkSinceReport: number; reservedOkSinceReport: number }> => {
    const line = nextLine();
    child.kill('SIGUSR2');
    return JSON.parse(await line);
  };

  let failuresSeen = 0;
  for (let outage = 1; outage <= OUTAGES; outage++) {
    await sleep(400);
    await report(); // resets the *SinceReport counts: later reports count queries after the restart
    await within(30_000, `stopping PostgreSQL (outage ${outage})`, pg.stop());
    await sleep(300);
    assert.equal(exited, null, `load process died during outage ${outage}: ${stderr.slice(-2000)}`);
    await within(30_000, `starting PostgreSQL again (outage ${outage})`, pg.start());
    // Pool and reserved queries succeed again within a few seconds of the restart (no poisoned
    // connections, no reserve() left waiting).
    const deadline = Date.now() + 15_000;
    let poolRecovered = false;
    let reservedRecovered = false;
    while (!(poolRecovered && reservedRecovered) && Date.now() < deadline) {
      await sleep(200);
      assert.equal(exited, null, `load process died after outage ${outage}: ${stderr.slice(-2000)}`);
      const r = await report();
      failuresSeen = r.failed;
      poolRecovered ||= r.poolOkSinceReport > 0;
      reservedRecovered ||= r.reservedOkSinceReport > 0;
    }
    assert.ok(poolRecovered, `no pool query succeeded within 15 s after restart ${outage}`);
    assert.ok(reservedRecovered, `no reserved-connection query succeeded within 15 s after restart ${outage}`);
  }
  // The outages did interrupt queries (the load was real), and no error escaped as a crash.
  assert.ok(failuresSeen > 0, 'the outages failed no query: the load did not reach the driver');
  child.kill('SIGTERM');
  const [code] = await within(15_000, 'the load process exiting on SIGTERM', once(child, 'exit'), tail);
  assert.equal(code, 0, stderr.slice(-2000));
  assert.doesNotMatch(stderr, /TypeError|uncaught/i);
});
