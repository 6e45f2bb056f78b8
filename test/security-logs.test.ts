// No secrets or personal data in logs (issue 11): a scenario at LOG_LEVEL=trace, its log lines
// captured, searched for every configured secret and the scenario's emails and names.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadConfig } from '../src/config.ts';
import { createLogger } from '../src/logger.ts';
import { startService } from '../src/service.ts';
import { createTestDatabase } from './helpers/database.ts';
import { WEBHOOK_SECRET, WRITE_KEY, ADMIN_TOKEN } from './helpers/build.ts';
import { sign, envelope, invoice } from './helpers/stripe.ts';

const EMAIL = 'Pat.Secret-Person@example.org';
const NAME = 'Patricia Secretperson';

test('a scenario at trace level logs no secret, token, email address or name', async (t) => {
  const db = await createTestDatabase();
  const lines: string[] = [];
  const sink = new Writable({ write(chunk, _enc, done) { lines.push(String(chunk)); done(); } });
  const config = loadConfig({
    DATABASE_URL: db.url, STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET, LIFELINE_WRITE_KEY: WRITE_KEY, LIFELINE_ADMIN_TOKEN: ADMIN_TOKEN,
    LOG_LEVEL: 'trace', DB_POOL_MAX: '5', LIFELINE_OUTBOX_DIR: path.join(tmpdir(), 'lifeline-test-outbox', db.name), RESEND_RATE_LIMIT: '1000',
  });
  const svc = await startService({ config, logger: createLogger('trace', sink), manualWorkers: true });
  t.after(async () => { await svc.stop(); await db.drop(); });
  const app = svc.app!;
  const auth = { authorization: `Bearer ${WRITE_KEY}`, 'content-type': 'application/json' };
  assert.equal((await app.inject({ method: 'POST', url: '/v1/identify', headers: auth, payload: { userId: 'u_log_1', traits: { email: EMAIL, name: NAME } } })).statusCode, 200);
  assert.equal((await app.inject({ method: 'POST', url: '/v1/track', headers: auth, payload: { userId: 'u_log_1', event: 'Signed Up', properties: { email: EMAIL } } })).statusCode, 200);
  const event = envelope('customer.created', { id: 'cus_log_1', object: 'customer', email: EMAIL, name: NAME });
  const payload = JSON.stringify(event);
  assert.equal((await app.inject({ method: 'POST', url: '/webhooks/stripe', headers: { 'content-type': 'application/json', 'stripe-signature': sign(payload) }, payload })).statusCode, 200);
  assert.equal((await app.inject({ method: 'POST', url: '/webhooks/stripe', headers: { 'content-type': 'application/json', 'stripe-signature': sign(JSON.stringify(envelope('invoice.payment_failed', invoice({ customer: 'cus_log_1', customer_email: EMAIL })))) }, payload: JSON.stringify(envelope('invoice.payment_failed', invoice({ customer: 'cus_log_1', customer_email: EMAIL }))) })).statusCode < 500, true);
  await svc.inbox.drain();
  const admin = { authorization: `Bearer ${ADMIN_TOKEN}` };
  await app.inject({ method: 'GET', url: `/v1/contacts/${encodeURIComponent(EMAIL)}`, headers: admin });
  await app.inject({ method: 'GET', url: `/v1/contacts/${encodeURIComponent(EMAIL)}?email=${encodeURIComponent(EMAIL)}`, headers: admin });
  await app.inject({ method: 'GET', url: `/nowhere/${encodeURIComponent(EMAIL)}` });
  await app.inject({ method: 'GET', url: '/v1/workflows', headers: { authorization: `Bearer ${ADMIN_TOKEN}x` } });

  const log = lines.join('');
  assert.ok(lines.length > 10, `captured ${lines.length} lines`);
  assert.match(log, /\/v1\/contacts\/:id/, 'requests are logged by route pattern');
  const forbidden = [WEBHOOK_SECRET, WRITE_KEY, ADMIN_TOKEN, EMAIL, EMAIL.toLowerCase(), encodeURIComponent(EMAIL), encodeURIComponent(EMAIL.toLowerCase()), NAME];
  for (const secret of forbidden) {
    const at = log.indexOf(secret);
    assert.equal(at, -1, `found ${JSON.stringify(secret)} in: ${log.slice(Math.max(0, at - 200), at + 100)}`);
  }
});
