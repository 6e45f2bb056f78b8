// Runs once before all test files (node --test --test-global-setup). Gives every test process a
// PostgreSQL: DATABASE_URL when set (CI has PostgreSQL 15 on 127.0.0.1:5432), otherwise an
// embedded one in a temporary folder, so `npm test` passes on a machine with no database.
// A migrated template database is prepared once; each test clones it (CREATE DATABASE … TEMPLATE).
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createSql, withDatabase } from '../src/db/connection.ts';
import { startEmbeddedPostgres, type EmbeddedDatabase } from '../src/db/embedded.ts';
import { runMigrations } from '../src/db/migrate.ts';

let embedded: EmbeddedDatabase | null = null;
let dataRoot: string | null = null;
let templateName: string | null = null;
let adminUrl: string | null = null;

export async function globalSetup(): Promise<void> {
  adminUrl = process.env.DATABASE_URL ?? null;
  if (!adminUrl) {
    dataRoot = await mkdtemp(path.join(tmpdir(), 'lifeline-test-'));
    // mkdtemp makes the folder private; as root, PostgreSQL runs as `postgres` and must enter it.
    await chmod(dataRoot, 0o755);
    const port = 55000 + (process.pid % 5000);
    embedded = await startEmbeddedPostgres({ dataDir: path.join(dataRoot, 'pgdata'), port });
    adminUrl = embedded.url;
  }
  templateName = `lifeline_tpl_${process.pid}`;
  const admin = createSql(adminUrl, { max: 1 });
  await admin.unsafe(`drop database if exists ${templateName}`);
  await admin.unsafe(`create database ${templateName}`);
  await runMigrations(withDatabase(adminUrl, templateName));
  await admin.end();
  process.env.LIFELINE_TEST_ADMIN_URL = adminUrl;
  process.env.LIFELINE_TEST_TEMPLATE = templateName;
}

export async function globalTeardown(): Promise<void> {
  if (adminUrl && templateName) {
    const admin = createSql(adminUrl, { max: 1 });
    await admin.unsafe(`drop database if exists ${templateName} with (force)`).catch(() => {});
    await admin.end();
  }
  if (embedded) await embedded.stop();
  if (dataRoot) await rm(dataRoot, { recursive: true, force: true });
}
