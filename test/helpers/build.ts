// build(t): a whole Lifeline service (real Postgres, real pg-boss, the Fastify app) on a fresh
// database, closed after the test. Background loops are off by default: tests drive the
// consumers explicitly (e.g. `await svc.inbox.drain()`), which keeps them deterministic.
import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ManualClock, systemClock, type Clock } from '../../src/clock.ts';
import { loadConfig, type Config } from '../../src/config.ts';
import { createLogger } from '../../src/logger.ts';
import { startService, type Service } from '../../src/service.ts';
import { createTestDatabase } from './database.ts';

export const WEBHOOK_SECRET = 'whsec_test_secret';
export const WRITE_KEY = 'wk_test_write_key';
export const ADMIN_TOKEN = 'admin_test_token';

export interface Built extends Service {
  app: NonNullable<Service['app']>;
  clock: Clock;
}

export async function build(
  t: TestContext,
  options: { env?: Record<string, string | undefined>; clock?: Clock | 'manual'; manualWorkers?: boolean; transport?: import('../../src/email/transport.ts').EmailTransport } = {},
): Promise<Built & { clock: Clock }> {
  const db = await createTestDatabase();
  const config: Config = loadConfig({
    DATABASE_URL: db.url,
    STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET,
    LIFELINE_WRITE_KEY: WRITE_KEY,
    LIFELINE_ADMIN_TOKEN: ADMIN_TOKEN,
    LOG_LEVEL: process.env.LOG_LEVEL ?? 'silent',
    DB_POOL_MAX: '5',
    // The log transport writes rendered emails here; keep test runs out of the project folder.
    LIFELINE_OUTBOX_DIR: path.join(tmpdir(), 'lifeline-test-outbox', db.name),
    // Sends are rate-limited by real waits; tests that measure the limit set their own.
    RESEND_RATE_LIMIT: '1000',
    ...options.env,
  });
  const clock = options.clock === 'manual' ? new ManualClock() : (options.clock ?? systemClock);
  const service = await startService({
    config,
    logger: createLogger(config.logLevel),
    clock,
    manualWorkers: options.manualWorkers ?? true,
    ...(options.transport ? { transport: options.transport } : {}),
  });
  t.after(async () => {
    await service.stop();
    await db.drop();
  });
  if (!service.app) throw new Error('build() needs the api role');
  return { ...service, app: service.app, clock };
}

/** Post Segment-style messages through /v1/batch, 100 per request, each answered 200. */
export async function postBatches(svc: Pick<Built, 'app'>, messages: Record<string, unknown>[]): Promise<void> {
  for (let i = 0; i < messages.length; i += 100) {
    const res = await svc.app.inject({
      method: 'POST',
      url: '/v1/batch',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${WRITE_KEY}` },
      payload: JSON.stringify({ batch: messages.slice(i, i + 100) }),
    });
    assert.equal(res.statusCode, 200, res.body);
  }
}
