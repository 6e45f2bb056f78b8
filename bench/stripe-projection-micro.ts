// Micro benchmark of the Stripe projection alone (no HTTP, no inbox claim, no engine):
// 3,000 invoice.payment_failed events for 3,000 distinct customers (each a first failure: the
// customer, contact, invoice, payment failure and timeline fact are all new), projected
//   - one event per savepoint, 100 per transaction (the inbox consumer's way), with the
//     projector of another checkout (--legacy=<dir>, e.g. the code before projectStripeBatch),
//   - the same with this checkout's projectStripeEvent,
//   - projectStripeBatch with 100 and 500 events per transaction,
// each on one connection, then the legacy and batch-100 variants with 4 lanes side by side.
// Prints events/s and statements per event (counted with postgres.js's debug hook).
//
//   ./node_modules/.bin/node bench/stripe-projection-micro.ts [--legacy=/tmp/lifeline-legacy] [--events=3000]
// DATABASE_URL: the server to create a scratch database on (dropped at the end).
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import postgres from 'postgres';
import { createBenchDatabase } from './lib/database.ts';
import { runMigrations } from '../src/db/migrate.ts';
import type { Sql, Tx } from '../src/db/connection.ts';
import type { StripeEnvelope } from '../src/stripe/event-inbox.ts';
import { projectStripeBatch, projectStripeEvent } from '../src/stripe/projector.ts';
import { readFileSync } from 'node:fs';

type Project = (db: Tx, e: StripeEnvelope, now: Date) => Promise<unknown>;

const args = Object.fromEntries(process.argv.slice(2).map((a) => a.replace(/^--/, '').split('=', 2) as [string, string]));
const N = Number(args.events ?? 3000);

const fixture = JSON.parse(readFileSync(path.join(import.meta.dirname, '..', 'test', 'fixtures', 'stripe', 'pay-rails', 'invoice.payment_failed.json'), 'utf8')) as { object: Record<string, unknown> };
function events(prefix: string): StripeEnvelope[] {
  const created = Math.floor(Date.now() / 1000);
  return Array.from({ length: N }, (_, i) => ({
    id: `evt_${prefix}_${i}`,
    type: 'invoice.payment_failed',
    api_version: '2026-10-28.endive',
    created,
    livemode: false,
    request: { id: null, idempotency_key: null },
    data: { object: { ...fixture.object, id: `in_${prefix}_${i}`, customer: `cus_${prefix}_${i}`, customer_email: `cus_${prefix}_${i}@example.org`, customer_name: `Customer ${i}` } },
  })) as StripeEnvelope[];
}

const chunks = <T>(xs: T[], n: number) => Array.from({ length: Math.ceil(xs.length / n) }, (_, i) => xs.slice(i * n, (i + 1) * n));

async function main() {
  const db = await createBenchDatabase();
  await runMigrations(db.url);
  let statements = 0;
  const sql = postgres(db.url, {
    max: 8,
    onnotice: () => {},
    types: { bigint: { to: 20, from: [20], serialize: (x: number) => String(x), parse: (x: string) => Number(x) } },
    debug: () => statements++,
  }) as unknown as Sql;
  const now = new Date();
  const rows: string[] = [];
  const measure = async (label: string, lanes: number, run: (evs: StripeEnvelope[]) => Promise<void>) => {
    const evs = events(label.replace(/[^a-z0-9]/gi, '').slice(0, 20) + Math.random().toString(36).slice(2, 6));
    await sql`checkpoint`;
    statements = 0;
    const t0 = performance.now();
    const perLane = chunks(evs, Math.ceil(evs.length / lanes));
    await Promise.all(perLane.map((part) => run(part)));
    const sec = (performance.now() - t0) / 1000;
    const [check] = await sql<{ n: number }[]>`select count(*)::int as n from domain_events where source_id = any(${evs.map((e) => e.id)}::text[])`;
    if (check!.n !== evs.length) throw new Error(`${label}: ${check!.n} facts for ${evs.length} events`);
    const line = `${label.padEnd(58)} ${String(Math.round(evs.length / sec)).padStart(6)} events/s  ${(statements / evs.length).toFixed(2).padStart(6)} statements/event`;
    rows.push(line);
    console.error(line);
  };
  const perEvent = (project: Project) => async (evs: StripeEnvelope[]) => {
    for (const part of chunks(evs, 100)) {
      await sql.begin(async (tx: Tx) => {
        for (const e of part) await tx.savepoint((sp) => project(sp as Tx, e, now));
      });
    }
  };
  const batch = (size: number) => async (evs: StripeEnvelope[]) => {
    for (const part of chunks(evs, size)) await sql.begin((tx: Tx) => projectStripeBatch(tx, part, now));
  };
  try {
    let legacy: Project | null = null;
    if (args.legacy) {
      const mod = (await import(pathToFileURL(path.join(args.legacy, 'src', 'stripe', 'projector.ts')).href)) as { projectStripeEvent: Project };
      legacy = mod.projectStripeEvent;
    }
    for (let round = 1; round <= 2; round++) {
      console.error(`round ${round}`);
      if (legacy) await measure(`legacy projector, 1 event per savepoint, 100/tx, 1 lane`, 1, perEvent(legacy));
      await measure(`projectStripeEvent, 1 event per savepoint, 100/tx, 1 lane`, 1, perEvent(projectStripeEvent));
      await measure(`projectStripeBatch, 100 per batch, 1 lane`, 1, batch(100));
      await measure(`projectStripeBatch, 500 per batch, 1 lane`, 1, batch(500));
      if (legacy) await measure(`legacy projector, 1 event per savepoint, 100/tx, 4 lanes`, 4, perEvent(legacy));
      await measure(`projectStripeBatch, 100 per batch, 4 lanes`, 4, batch(100));
    }
    console.log(`\n${N} invoice.payment_failed events, ${N} distinct new customers each; statements include begin/savepoint/release/commit\n`);
    console.log(rows.join('\n'));
  } finally {
    await sql.end();
    await db.drop();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
