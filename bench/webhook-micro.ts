// Profiling aid for issue 10's webhook-ingest figure (not a benchmark row): the CPU one
// POST /webhooks/stripe costs inside the server, Lifeline's app against the bare baseline
// (Fastify + constructEvent + 1 INSERT, as bench/baseline-child.ts), both in this process over
// real HTTP on loopback, on one fresh database. A third server, "store", is the baseline with
// Lifeline's storeStripeEvent instead of its INSERT: lifeline - store is the cost of the app
// (hooks, logging, checks), store - baseline the cost of the stripe_events row in PostgreSQL.
// Phases alternate (baseline, store, lifeline, …) so a burst of outside load hits all; the
// figures are this process's CPU (user+sys) per request, which the client's share inflates
// equally on every side (requests are signed before a phase starts), and the CPU of this
// database's PostgreSQL backends per request (/proc; the server's shared WAL writer and
// checkpointer are left out: other databases on the shared server use them too).
//   DATABASE_URL=… node bench/webhook-micro.ts [--requests=4000] [--connections=20] [--rounds=3]
//        [--profile=DIR] [--log-level=silent] [--variants]
// --profile writes a V8 CPU profile of each server's last phase (node:inspector), without start-up.
// --variants adds Lifeline's app without the inbox wake-up (NOTIFY).
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { Session } from 'node:inspector/promises';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { parseArgs } from 'node:util';
import Fastify, { type FastifyInstance } from 'fastify';
import postgres from 'postgres';
import Stripe from 'stripe';
import { loadConfig } from '../src/config.ts';
import { createLogger } from '../src/logger.ts';
import { storeStripeEvent, type StripeEnvelope } from '../src/stripe/event-inbox.ts';
import { startService } from '../src/service.ts';
import { buildApp } from '../src/app.ts';
import { createBenchDatabase } from './lib/database.ts';
import { stripeDeliveries, WEBHOOK_SECRET, type HttpRequestSpec } from './lib/payloads.ts';

const { values } = parseArgs({
  options: {
    requests: { type: 'string', default: '4000' },
    connections: { type: 'string', default: '20' },
    rounds: { type: 'string', default: '3' },
    profile: { type: 'string' },
    'log-level': { type: 'string', default: 'silent' },
    variants: { type: 'boolean', default: false },
  },
});
const N = Number(values.requests);
const C = Number(values.connections);
const ROUNDS = Number(values.rounds);

const db = await createBenchDatabase();
const logLevel = values['log-level'] as 'silent';
const config = loadConfig({ DATABASE_URL: db.url, ROLE: 'api', STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET, LIFELINE_WRITE_KEY: 'wk_micro', LOG_LEVEL: logLevel, DB_POOL_MAX: '10' });
const service = await startService({ config, logger: createLogger(config.logLevel), manualWorkers: true });
const lifeline = service.app!;
await lifeline.listen({ host: '127.0.0.1', port: 0 });
// --variants: Lifeline's app without the inbox wake-up (NOTIFY), to size it.
const quiet = values.variants ? await buildApp({ config, sql: service.sql, clock: service.clock, logger: createLogger(config.logLevel) }) : null;
if (quiet) await quiet.listen({ host: '127.0.0.1', port: 0 });

const sql = postgres(db.url, { max: 10, onnotice: () => {} });
await sql`create table if not exists bench_baseline_stripe_events (id text primary key, type text not null, payload jsonb not null)`;
const baseline: FastifyInstance = Fastify({ logger: false });
baseline.removeAllContentTypeParsers();
baseline.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
baseline.post('/webhooks/stripe', async (request, reply) => {
  const raw = request.body as Buffer;
  let event: { id: string; type: string };
  try {
    event = Stripe.webhooks.constructEvent(raw, request.headers['stripe-signature'] as string, WEBHOOK_SECRET) as unknown as { id: string; type: string };
  } catch {
    return reply.code(400).send({ error: 'invalid_signature' });
  }
  await sql`insert into bench_baseline_stripe_events (id, type, payload) values (${event.id}, ${event.type}, ${raw.toString('utf8')}::text::jsonb)`;
  return { received: true };
});
await baseline.listen({ host: '127.0.0.1', port: 0 });

const store: FastifyInstance = Fastify({ logger: false });
store.removeAllContentTypeParsers();
store.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
store.post('/webhooks/stripe', async (request, reply) => {
  const raw = request.body as Buffer;
  let event: StripeEnvelope;
  try {
    event = Stripe.webhooks.constructEvent(raw, request.headers['stripe-signature'] as string, WEBHOOK_SECRET) as unknown as StripeEnvelope;
  } catch {
    return reply.code(400).send({ error: 'invalid_signature' });
  }
  const inserted = await storeStripeEvent(service.sql, event, raw.toString('utf8'), new Date());
  return { received: true, duplicate: !inserted };
});
await store.listen({ host: '127.0.0.1', port: 0 });

/** CPU ticks (1/100 s) of the PostgreSQL backends connected to the bench database. */
function postgresTicks(): Map<string, number> {
  const out = new Map<string, number>();
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const title = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
      if (!title.startsWith('postgres: ') || !title.includes(` ${db.name} `)) continue;
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out.set(pid, Number(f[11]) + Number(f[12]));
    } catch {
      /* gone */
    }
  }
  return out;
}

const deliveries = stripeDeliveries({ idPrefix: 'micro' });
const agent = new http.Agent({ keepAlive: true, maxSockets: C });

function send(port: number, spec: HttpRequestSpec): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method: spec.method, path: spec.path, headers: { ...spec.headers, 'content-length': Buffer.byteLength(spec.body) }, agent }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error('no answer in 10 s')));
    req.end(spec.body);
  });
}

async function phase(label: string, app: FastifyInstance, profile: boolean): Promise<{ cpuUs: number; pgUs: number; rps: number }> {
  const port = (app.server.address() as AddressInfo).port;
  const specs = Array.from({ length: N }, () => deliveries.next());
  for (const s of specs.splice(0, 200)) await send(port, s); // warm-up
  let session: Session | null = null;
  if (profile) {
    session = new Session();
    session.connect();
    await session.post('Profiler.enable');
    await session.post('Profiler.setSamplingInterval', { interval: 200 });
    await session.post('Profiler.start');
  }
  const pg0 = postgresTicks();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  let next = 0;
  const bad: Record<number, number> = {};
  await Promise.all(
    Array.from({ length: C }, async () => {
      while (next < specs.length) {
        const status = await send(port, specs[next++]!);
        if (status !== 200) bad[status] = (bad[status] ?? 0) + 1;
      }
    }),
  );
  const sec = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const pg1 = postgresTicks();
  let pgTicks = 0;
  for (const [pid, t] of pg1) pgTicks += t - (pg0.get(pid) ?? 0);
  if (session) {
    const { profile: p } = await session.post('Profiler.stop');
    session.disconnect();
    mkdirSync(values.profile!, { recursive: true });
    const file = path.join(values.profile!, `${label}-${Date.now()}.cpuprofile`);
    writeFileSync(file, JSON.stringify(p));
    console.log(`profile: ${file}`);
  }
  if (Object.keys(bad).length) console.log(`${label}: non-200 answers ${JSON.stringify(bad)}`);
  const cpuUs = (cpu.user + cpu.system) / specs.length;
  const pgUs = (pgTicks * 10_000) / specs.length;
  console.log(`${label.padEnd(10)} ${specs.length} req in ${sec.toFixed(2)} s = ${(specs.length / sec).toFixed(0).padStart(5)} req/s; process CPU ${cpuUs.toFixed(0).padStart(5)} µs/req, postgres backends ${pgUs.toFixed(0).padStart(5)} µs/req`);
  return { cpuUs, pgUs, rps: specs.length / sec };
}

const servers: Record<string, FastifyInstance> = { baseline, store, lifeline, ...(quiet ? { 'no-notify': quiet } : {}) };
const results: Record<string, { cpuUs: number[]; pgUs: number[] }> = {};
for (let r = 1; r <= ROUNDS; r++) {
  for (const [label, app] of Object.entries(servers)) {
    const m = await phase(label, app, !!values.profile && r === ROUNDS);
    results[label] ??= { cpuUs: [], pgUs: [] };
    results[label].cpuUs.push(m.cpuUs);
    results[label].pgUs.push(m.pgUs);
  }
}
const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
console.log('median per request (this process / postgres backends):');
for (const [label, m] of Object.entries(results)) console.log(`  ${label.padEnd(10)} ${med(m.cpuUs).toFixed(0).padStart(5)} µs / ${med(m.pgUs).toFixed(0).padStart(5)} µs`);

agent.destroy();
await baseline.close();
await store.close();
await quiet?.close();
await sql.end();
await service.stop();
await db.drop();
