// Shared set-up for engine scenario tests on real Postgres: a service on a ManualClock at a fixed
// Monday morning, custom definitions published the way the API checks them, and product calls
// made through the HTTP API with the write key.
import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import type { ManualClock } from '../../src/clock.ts';
import type { Service } from '../../src/service.ts';
import { validateDefinition } from '../../src/workflows/definition-schema.ts';
import { putWorkflow } from '../../src/workflows/workflow-store.ts';
import type { WorkflowDefinition } from '../../src/workflows/types.ts';
import { build, WRITE_KEY } from './build.ts';

export const T = new Date('2026-03-02T10:00:00Z'); // a Monday, 10:00 UTC (05:00 in New York, EST)
export const MIN = 60_000;
export const HOUR = 60 * MIN;
export const DAY = 24 * HOUR;
export const at = (ms: number) => new Date(T.getTime() + ms);

/** A service on a ManualClock set to T; quiet hours off unless `env` turns them on. */
export async function setup(t: TestContext, env: Record<string, string> = {}) {
  const svc = await build(t, { clock: 'manual', env: { QUIET_HOURS: 'off', ...env } });
  const clock = svc.clock as ManualClock;
  clock.set(T);
  return { svc, clock };
}

/** A custom definition, checked the way the API would check it, stored as the next version. */
export async function publish(svc: Pick<Service, 'sql'>, definition: WorkflowDefinition, now: Date): Promise<number> {
  const checked = validateDefinition(definition);
  assert.ok(checked.ok, `invalid test definition: ${JSON.stringify(!checked.ok && checked.errors)}`);
  return (await svc.sql.begin((tx) => putWorkflow(tx, definition, now))).version;
}

/** A Segment-style call with the write key, timestamped by the service clock; must answer 200. */
export async function post(svc: Pick<Service, 'clock'> & { app: NonNullable<Service['app']> }, url: string, body: Record<string, unknown>) {
  const res = await svc.app.inject({
    method: 'POST',
    url,
    headers: { authorization: `Bearer ${WRITE_KEY}` },
    payload: { timestamp: svc.clock.now().toISOString(), ...body },
  });
  assert.equal(res.statusCode, 200, res.body);
}
