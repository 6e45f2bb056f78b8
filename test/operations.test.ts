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
