// A fresh database for one benchmark run: on DATABASE_URL's server when set, otherwise on an
// embedded PostgreSQL started in a temporary folder. Dropped (and the embedded server stopped)
// at the end of the run.
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import postgres from 'postgres';
import { withDatabase } from '../../src/db/connection.ts';
import { startEmbeddedPostgres, type EmbeddedDatabase } from '../../src/db/embedded.ts';
import { progress } from './log.ts';

export interface BenchDatabase {
  /** URL of the bench database */
  url: string;
  name: string;
  server: 'DATABASE_URL' | 'embedded';
  /** select version() */
  version: string;
  /** Drop the database and create it again, empty (same name and URL): a scenario's clean slate. */
  recreate(): Promise<void>;
  drop(): Promise<void>;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

export async function createBenchDatabase(): Promise<BenchDatabase> {
  let adminUrl = process.env.DATABASE_URL;
  let embedded: EmbeddedDatabase | null = null;
  let dataRoot: string | null = null;
  if (!adminUrl) {
    dataRoot = await mkdtemp(path.join(tmpdir(), 'lifeline-bench-'));
    // mkdtemp makes the folder private; as root, PostgreSQL runs as `postgres` and must enter it.
    await chmod(dataRoot, 0o755);
    const port = await freePort();
    progress('setup', `DATABASE_URL not set: starting embedded PostgreSQL in ${dataRoot} on port ${port}`);
    embedded = await startEmbeddedPostgres({ dataDir: path.join(dataRoot, 'pgdata'), port });
    adminUrl = embedded.url;
  }
  const name = `bench_${randomBytes(5).toString('hex')}`;
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
  let version: string;
  try {
    await admin.unsafe(`create database ${name}`);
    const [row] = await admin<{ version: string }[]>`select version()`;
    version = row!.version;
  } finally {
    await admin.end();
  }
  const finalAdminUrl = adminUrl;
  return {
    url: withDatabase(adminUrl, name),
    name,
    server: embedded ? 'embedded' : 'DATABASE_URL',
    version,
    async recreate() {
      const a = postgres(finalAdminUrl, { max: 1, onnotice: () => {} });
      try {
        await a.unsafe(`drop database if exists ${name} with (force)`);
        await a.unsafe(`create database ${name}`);
      } finally {
        await a.end();
      }
    },
    async drop() {
      const a = postgres(finalAdminUrl, { max: 1, onnotice: () => {} });
      await a.unsafe(`drop database if exists ${name} with (force)`).catch((err: Error) => progress('teardown', `drop database failed: ${err.message}`));
      await a.end();
      if (embedded) await embedded.stop();
      if (dataRoot) await rm(dataRoot, { recursive: true, force: true });
    },
  };
}
