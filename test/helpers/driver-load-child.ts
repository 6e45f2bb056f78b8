// Child process for test/db-outage-driver.test.ts: keeps many small queries in flight through
// our postgres.js pool (and reserved connections, the case of porsager/postgres #1208 and #1195)
// while the parent stops and starts PostgreSQL. Query errors are expected and counted; the process
// must not die. It reports a JSON line on stdout when asked (SIGUSR2): pool and reserved queries
// separately, so the test sees each recover. On SIGTERM it waits for every loop to finish (a
// reserve() or query that never settles shows up as a late exit) and exits 0.
import { createSql } from '../../src/db/connection.ts';

const url = process.env.LOAD_DATABASE_URL;
if (!url) throw new Error('LOAD_DATABASE_URL is required');
const sql = createSql(url, { max: 10 });
const counts = { ok: 0, failed: 0, poolOkSinceReport: 0, reservedOkSinceReport: 0 };
let running = true;

async function poolLoop(): Promise<void> {
  while (running) {
    try {
      // Small statements (< 1024 bytes) take postgres.js's deferred-write path (setImmediate).
      await sql`select ${counts.ok}::int as n`;
      counts.ok++;
      counts.poolOkSinceReport++;
    } catch {
      counts.failed++;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

async function reservedLoop(): Promise<void> {
  while (running) {
    try {
      const reserved = await sql.reserve();
      try {
        for (let i = 0; i < 50 && running; i++) {
          await reserved`select 1 as one`;
          counts.ok++;
          counts.reservedOkSinceReport++;
        }
      } finally {
        reserved.release();
      }
    } catch {
      counts.failed++;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

const loops = [...Array.from({ length: 20 }, poolLoop), reservedLoop(), reservedLoop()];
process.on('SIGUSR2', () => {
  process.stdout.write(`${JSON.stringify(counts)}\n`);
  counts.poolOkSinceReport = 0;
  counts.reservedOkSinceReport = 0;
});
process.on('SIGTERM', () => {
  running = false;
  void Promise.allSettled(loops)
    .then(() => sql.end({ timeout: 1 }))
    .finally(() => process.exit(0));
});
process.stdout.write('ready\n');
