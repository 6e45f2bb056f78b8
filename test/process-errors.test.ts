// Which escaped errors the process survives (database connection failures, logged once per
// quiet period) and which stop it (everything else: a bug of ours).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { installProcessErrorHandlers, isDatabaseConnectionError, outageAwareLogger } from '../src/process-errors.ts';

test('database connection errors are recognised; other errors are not', () => {
  const withCode = (code: string) => Object.assign(new Error('x'), { code });
  for (const code of ['CONNECTION_CLOSED', 'CONNECTION_DESTROYED', 'CONNECT_TIMEOUT', 'ECONNREFUSED', 'ECONNRESET', '57P01', '08006']) {
    assert.ok(isDatabaseConnectionError(withCode(code)), code);
  }
  assert.ok(isDatabaseConnectionError(new Error('Connection terminated unexpectedly')));
  assert.ok(isDatabaseConnectionError(new AggregateError([withCode('ECONNREFUSED')], 'connect failed')));
  // The unpatched postgres.js crash: a TypeError whose top frame is in the driver.
  const driverTypeError = new TypeError("Cannot read properties of null (reading 'write')");
  driverTypeError.stack = `TypeError: Cannot read properties of null (reading 'write')\n    at Immediate.nextWrite (file:///app/node_modules/postgres/src/connection.js:255:22)\n    at process.processImmediate (node:internal/timers:485:21)`;
  assert.ok(isDatabaseConnectionError(driverTypeError));

  assert.equal(isDatabaseConnectionError(new TypeError("Cannot read properties of undefined (reading 'id')")), false);
  assert.equal(isDatabaseConnectionError(withCode('23505')), false, 'a unique violation is a bug, not an outage');
  // Our bug that passed through a driver callback: top frame is ours.
  const ours = new TypeError('boom');
  ours.stack = `TypeError: boom\n    at handler (file:///app/src/email/sender.ts:10:1)\n    at file:///app/node_modules/postgres/src/index.js:1:1`;
  assert.equal(isDatabaseConnectionError(ours), false);
  assert.equal(isDatabaseConnectionError(null), false);
  assert.equal(isDatabaseConnectionError('CONNECTION_CLOSED'), false);
});

test('escaped connection errors are survived and logged once per quiet period; others are fatal', (t) => {
  const warnings: Array<Record<string, unknown>> = [];
  const fatal: unknown[] = [];
  let clock = 0;
  const handlers = installProcessErrorHandlers({
    logger: { warn: (obj: Record<string, unknown>) => warnings.push(obj), error: () => {} } as never,
    onFatal: (err) => fatal.push(err),
    quietMs: 60_000,
    now: () => clock,
  });
  t.after(() => handlers.uninstall());
  const closed = Object.assign(new Error('write CONNECTION_CLOSED 127.0.0.1:5432'), { code: 'CONNECTION_CLOSED' });
  for (let i = 0; i < 500; i++) handlers.handle(closed, 'uncaughtException');
  for (let i = 0; i < 500; i++) handlers.handle(closed, 'unhandledRejection');
  assert.equal(handlers.survived(), 1000);
  assert.equal(warnings.length, 1, 'a thousand errors of one outage log one line');
  clock += 61_000;
  handlers.handle(closed, 'uncaughtException');
  assert.equal(warnings.length, 2);
  assert.equal(warnings[1]?.suppressedSinceLastLog, 999);
  assert.equal(fatal.length, 0);
  const bug = new TypeError('a bug of ours');
  handlers.handle(bug, 'uncaughtException');
  assert.deepEqual(fatal, [bug]);
});

test('background loops: connection errors logged once per quiet period per message, other errors every time', () => {
  const lines: Array<{ level: string; obj: Record<string, unknown>; msg: string }> = [];
  let clock = 0;
  const log = outageAwareLogger(
    { warn: (obj: Record<string, unknown>, msg: string) => lines.push({ level: 'warn', obj, msg }), error: (obj: Record<string, unknown>, msg: string) => lines.push({ level: 'error', obj, msg }) } as never,
    30_000,
    () => clock,
  );
  const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });
  for (let i = 0; i < 300; i++) log(refused, {}, 'pg-boss error');
  for (let i = 0; i < 20; i++) log(refused, { queue: 'stripe' }, 'inbox batch failed');
  assert.equal(lines.length, 2, 'one line per message per quiet period');
  clock += 31_000;
  log(refused, {}, 'pg-boss error');
  assert.equal(lines.length, 3);
  assert.equal(lines[2]!.obj.suppressedSinceLastLog, 299);
  log(new Error('relation "x" does not exist'), {}, 'pg-boss error');
  log(new Error('relation "x" does not exist'), {}, 'pg-boss error');
  assert.deepEqual(lines.slice(3).map((l) => l.level), ['error', 'error'], 'a non-connection error is never suppressed');
});
