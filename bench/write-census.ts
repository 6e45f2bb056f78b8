// Profiling aid (not a benchmark figure): what the database writes for one first failed payment,
// stage by stage, next to what the stripe-pipeline baseline writes (one INSERT of the event).
//   DATABASE_URL=… node bench/write-census.ts [--events=2000]
//
// N first failed payments (the stripe-pipeline's deliveries) are stored with the API's own
// statement, then the worker's stages run one after another in this process (inbox → engine →
// sender, the sender against an in-process transport that accepts every email). Per stage: WAL
// bytes per event (pg_current_wal_lsn, exact). For the whole pipeline: rows inserted and updated
// per event, per table, and how many of the updates were HOT (pg_stat_user_tables; its counters
// reach the view when a backend has been idle for up to 10 s, hence the wait at the end).
// The baseline: the same payloads inserted into bench_baseline_stripe_events's shape.
import { parseArgs } from 'node:util';
import { createSql, withDatabase, type Sql } from '../src/db/connection.ts';
import { runMigrations } from '../src/db/migrate.ts';
import { loadConfig } from '../src/config.ts';
import { createLogger } from '../src/logger.ts';
import { startService } from '../src/service.ts';
import { storeStripeEvent } from '../src/stripe/event-inbox.ts';
import type { EmailTransport, OutgoingEmail } from '../src/email/transport.ts';
import { stripeDeliveries } from './lib/payloads.ts';

const { values } = parseArgs({ options: { events: { type: 'string', default: '2000' } } });
const N = Number(values.events);
const admin = process.env.DATABASE_URL;
if (!admin) throw new Error('set DATABASE_URL (a server where a scratch database may be created)');
const name = `lifeline_census_${process.pid}`;
const a = createSql(admin, { max: 1 });
await a.unsafe(`create database ${name}`);
try {
  const url = withDatabase(admin, name);
  await runMigrations(url);
  let emailed = 0;
  const transport: EmailTransport = {
    name: 'resend',
    async send(emails: OutgoingEmail[]) {
      emailed += emails.length;
      return { ok: true, results: emails.map((e) => ({ providerId: `census_${e.id}` })) };
    },
  };
  const config = loadConfig({ DATABASE_URL: url, LOG_LEVEL: 'warn', LIFELINE_WRITE_KEY: 'wk', STRIPE_WEBHOOK_SECRET: 'whsec_census', DB_POOL_MAX: '10', RESEND_RATE_LIMIT: '1000' });
  const svc = await startService({ config, logger: createLogger('warn'), manualWorkers: true, transport });
  const sql = svc.sql;
  const lsn = async () => (await sql<{ l: string }[]>`select pg_current_wal_lsn()::text as l`)[0]!.l;
  const walSince = async (from: string) => Number((await sql<{ b: string }[]>`select pg_wal_lsn_diff(pg_current_wal_lsn(), ${from}::pg_lsn)::bigint::text as b`)[0]!.b);
  const tables = async (db: Sql) =>
    new Map((await db<{ relname: string; ins: number; upd: number; hot: number }[]>`
      select relname, n_tup_ins::int as ins, n_tup_upd::int as upd, n_tup_hot_upd::int as hot from pg_stat_user_tables`).map((r) => [r.relname, r]));
  const flushWait = () => new Promise((r) => setTimeout(r, 11_000));

  await flushWait();
  const before = await tables(sql);
  const stages: [string, number][] = [];
  const gen = stripeDeliveries({ idPrefix: 'census' });
  const bodies = Array.from({ length: N }, () => gen.next().body);
  let from = await lsn();
  for (const body of bodies) await storeStripeEvent(sql, JSON.parse(body), body, svc.clock.now());
  stages.push(['ingest (the API: store the verified event)', await walSince(from)]);
  from = await lsn();
  await svc.inbox.drain();
  stages.push(['inbox (project: customer, contact, invoice, failure, fact)', await walSince(from)]);
  from = await lsn();
  await svc.engine.drain();
  stages.push(['engine (run, trace, first message)', await walSince(from)]);
  from = await lsn();
  while ((await svc.email.sendPending()).sent > 0);
  stages.push(['sender (claim, batch, send, record)', await walSince(from)]);
  if (emailed !== N) throw new Error(`expected ${N} emails, the transport got ${emailed}`);

  // The baseline's row: the same payload into a table shaped like bench_baseline_stripe_events.
  await sql`create table census_baseline (id text primary key, type text not null, payload jsonb not null)`;
  from = await lsn();
  for (const body of bodies) {
    const e = JSON.parse(body) as { id: string; type: string };
    await sql`insert into census_baseline (id, type, payload) values (${`${e.id}_b`}, ${e.type}, ${body}::text::jsonb)`;
  }
  const baselineWal = await walSince(from);
  await flushWait();
  const after = await tables(sql);

  const per = (n: number) => (n / N).toFixed(2);
  console.log(`${N} first failed payments, ${emailed} emails; WAL bytes per event:`);
  let total = 0;
  for (const [stage, bytes] of stages) {
    total += bytes;
    console.log(`  ${stage.padEnd(60)} ${Math.round(bytes / N).toLocaleString('en-US').padStart(7)}`);
  }
  console.log(`  ${'whole pipeline'.padEnd(60)} ${Math.round(total / N).toLocaleString('en-US').padStart(7)}`);
  console.log(`  ${'baseline (one INSERT of the event)'.padEnd(60)} ${Math.round(baselineWal / N).toLocaleString('en-US').padStart(7)}`);
  console.log('rows written per event (whole pipeline):');
  let inserts = 0;
  let updates = 0;
  let hot = 0;
  for (const [table, r] of after) {
    if (table === 'census_baseline') continue;
    const b = before.get(table) ?? { ins: 0, upd: 0, hot: 0 };
    const d = { ins: r.ins - b.ins, upd: r.upd - b.upd, hot: r.hot - b.hot };
    if (d.ins + d.upd < N / 100) continue; // bookkeeping rows (leases, rate-limit slots) shared by many events
    inserts += d.ins;
    updates += d.upd;
    hot += d.hot;
    console.log(`  ${table.padEnd(24)} inserted ${per(d.ins)}, updated ${per(d.upd)} (HOT ${per(d.hot)})`);
  }
  console.log(`  ${'total'.padEnd(24)} inserted ${per(inserts)}, updated ${per(updates)} (HOT ${per(hot)}); baseline: inserted 1.00`);
  await svc.stop();
} finally {
  await a.unsafe(`drop database if exists ${name} with (force)`);
  await a.end();
}
