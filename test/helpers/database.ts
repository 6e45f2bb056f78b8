// Each test gets its own database, cloned from the migrated template that the global setup
// prepared, so test files run in parallel without seeing each other's rows or pg-boss jobs.
import { randomBytes } from 'node:crypto';
import { createSql, withDatabase } from '../../src/db/connection.ts';
import { runMigrations } from '../../src/db/migrate.ts';

export interface TestDatabase {
  url: string;
  name: string;
  drop(): Promise<void>;
}

export async function createTestDatabase(): Promise<TestDatabase> {
  const adminUrl = process.env.LIFELINE_TEST_ADMIN_URL ?? process.env.DATABASE_URL;
  if (!adminUrl) {
    throw new Error('No test database: run tests with `npm test` (its global setup starts PostgreSQL) or set DATABASE_URL');
  }
  const template = process.env.LIFELINE_TEST_TEMPLATE;
  const name = `lifeline_t_${randomBytes(6).toString('hex')}`;
  const admin = createSql(adminUrl, { max: 1 });
  try {
    await admin.unsafe(template ? `create database ${name} template ${template}` : `create database ${name}`);
  } finally {
    await admin.end();
  }
  const url = withDatabase(adminUrl, name);
  if (!template) await runMigrations(url);
  return {
    url,
    name,
    async drop() {
      const a = createSql(adminUrl, { max: 1 });
      await a.unsafe(`drop database if exists ${name} with (force)`).catch(() => {});
      await a.end();
    },
  };
}
