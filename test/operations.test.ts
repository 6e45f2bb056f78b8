import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createSql } from '../src/db/connection.ts';
import { migrationsApplied, runMigrations } from '../src/db/migrate.ts';
import { build } from './helpers/build.ts';
import { createTestDatabase } from './helpers/database.ts';

test('healthz, readyz and the OpenAPI document', async (t) => {
  const svc = await build(t);
  assert.deepEqual((await svc.app.inject('/healthz')).json(), { status: 'ok' });
  const ready = await svc.app.inject('/readyz');
  assert.equal(ready.statusCode, 200);
  const doc = (await svc.app.inject('/docs/json')).json();
  assert.equal(doc.openapi, '3.1.0');
  for (const path of ['/webhooks/stripe', '/v1/track', '/v1/identify', '/v1/group', '/v1/batch']) {
    assert.ok(doc.paths[path], `${path} is documented`);
  }
  assert.equal((await svc.app.inject('/docs')).statusCode < 400, true);
});

test('unknown routes answer a JSON 404', async (t) => {
  const svc = await build(t);
  const res = await svc.app.inject('/nope');
  assert.equal(res.statusCode, 404);
  assert.equal(res.json().error, 'not_found');
});

test('readyz is 503 on a database without migrations', async (t) => {
  const db = await createTestDatabase();
  t.after(() => db.drop());
  const sql = createSql(db.url, { max: 1 });
  t.after(() => sql.end());
  await sql`drop schema drizzle cascade`;
  assert.equal(await migrationsApplied(sql), false);
});

test('several instances migrating one fresh database at once all succeed, once', async (t) => {
  const db = await createTestDatabase();
  t.after(() => db.drop());
  const sql = createSql(db.url, { max: 1 });
  t.after(() => sql.end());
  // Start from an empty database (the test template is already migrated).
  await sql`drop schema public cascade`;
  await sql`create schema public`;
  await sql`drop schema drizzle cascade`;
  await Promise.all([runMigrations(db.url), runMigrations(db.url), runMigrations(db.url), runMigrations(db.url)]);
  assert.equal(await migrationsApplied(sql), true);
  const [row] = await sql<{ n: number }[]>`select count(*)::int as n from drizzle.__drizzle_migrations`;
  const n = row!.n;
  const journal = (await import('../migrations/meta/_journal.json', { with: { type: 'json' } })).default as { entries: unknown[] };
  assert.equal(n, journal.entries.length);
});

test('WORKER_TASKS=email: the process sends queued email and leaves the inbox to other workers', async (t) => {
  const { startFakeResend } = await import('./helpers/fake-resend.ts');
  const { WRITE_KEY } = await import('./helpers/build.ts');
  const fake = await startFakeResend();
  t.after(() => fake.close());
  const svc = await build(t, {
    manualWorkers: false,
    env: { WORKER_TASKS: 'email', RESEND_API_KEY: 're_test_key', RESEND_BASE_URL: fake.url, QUIET_HOURS: 'off' },
  });
  const track = await svc.app.inject({ method: 'POST', url: '/v1/track', headers: { authorization: `Bearer ${WRITE_KEY}` }, payload: { userId: 'u1', event: 'Signed Up' } });
  assert.equal(track.statusCode, 200);
  await svc.sql`
    insert into messages (id, to_email, template, subject, category, status, created_at, updated_at)
    values ('tasks-1', 'tasks@example.test', 'winback-offer', 'Hello', 'marketing', 'queued', now(), now())`;
  await svc.sql`select pg_notify('lifeline_outbox', '')`;
  for (let i = 0; i < 100 && fake.accepted.length === 0; i++) await new Promise((r) => setTimeout(r, 50));
  assert.equal(fake.accepted.length, 1, 'the sender ran');
  // The inbox consumer polls every second: after two, the event is still unprocessed here.
  await new Promise((r) => setTimeout(r, 2000));
  const [event] = await svc.sql<{ processed: boolean }[]>`select processed_at is not null as processed from product_events`;
  assert.equal(event!.processed, false, 'no inbox consumer in this process');
});
