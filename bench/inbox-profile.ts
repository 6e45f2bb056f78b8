// Profiling aid (not a benchmark figure): 20,000 product tracks for 2,000 users in 200 accounts
// stored straight into the inbox, then the inbox lanes and the engine feed timed separately.
//   DATABASE_URL=… node bench/inbox-profile.ts [--slow-ms=10]
import { parseArgs } from 'node:util';
import { createSql, withDatabase } from '../src/db/connection.ts';
import { runMigrations } from '../src/db/migrate.ts';
import { loadConfig } from '../src/config.ts';
import { createLogger } from '../src/logger.ts';
import { startService } from '../src/service.ts';
import { storeProductEvents, type InboxMessage } from '../src/events/event-inbox.ts';
import { storeStripeEvent } from '../src/stripe/event-inbox.ts';
import { stripeDeliveries } from './lib/payloads.ts';

const { values } = parseArgs({ options: { 'slow-ms': { type: 'string' }, 'explain-ms': { type: 'string' }, users: { type: 'string', default: '2000' }, stripe: { type: 'string' } } });
const admin = process.env.DATABASE_URL!;
const name = `lifeline_prof_${process.pid}`;
const a = createSql(admin, { max: 1 });
await a.unsafe(`create database ${name}`);
if (values['slow-ms']) await a.unsafe(`alter database ${name} set log_min_duration_statement = ${Number(values['slow-ms'])}`);
if (values['explain-ms']) {
  await a.unsafe(`alter database ${name} set session_preload_libraries = 'auto_explain'`);
  await a.unsafe(`alter database ${name} set auto_explain.log_min_duration = ${Number(values['explain-ms'])}`);
  await a.unsafe(`alter database ${name} set auto_explain.log_analyze = on`);
}
await a.end();
const url = withDatabase(admin, name);
await runMigrations(url);
const config = loadConfig({ DATABASE_URL: url, LOG_LEVEL: 'warn', LIFELINE_WRITE_KEY: 'wk', STRIPE_WEBHOOK_SECRET: 'whsec_x', DB_POOL_MAX: '10' });
const svc = await startService({ config, logger: createLogger('warn'), manualWorkers: true });
const USERS = Number(values.users);
const msgs: InboxMessage[] = [];
const base = Date.now() - 100_000;
for (let round = 0; round < 10; round++) {
  for (let u = 0; u < USERS; u++) {
    const i = round * USERS + u;
    msgs.push({ messageId: `m${i}`, kind: 'track', userId: `user_${u}`, anonymousId: null, groupId: `acct_${u % 200}`, event: ['Report Exported', 'Dashboard Viewed', 'Seat Added', 'Feature Used'][i % 4]!, properties: { plan: 'growth', seats: (i % 40) + 1, round }, traits: null, context: { groupId: `acct_${u % 200}` }, timestamp: new Date(base + i) });
  }
}
if (values.stripe) {
  // --stripe=N: N first failed payments for N new customers instead of the product events.
  msgs.length = 0;
  const gen = stripeDeliveries({ idPrefix: 'prof' });
  for (let i = 0; i < Number(values.stripe); i++) {
    const body = gen.next().body;
    await storeStripeEvent(svc.sql, JSON.parse(body), body, new Date());
    msgs.push(null as never);
  }
} else {
  for (let i = 0; i < msgs.length; i += 100) await storeProductEvents(svc.sql, msgs.slice(i, i + 100), new Date());
}
let t = performance.now();
const n = await svc.inbox.drain();
const inboxSec = (performance.now() - t) / 1000;
t = performance.now();
const e = await svc.engine.drain();
const engineSec = (performance.now() - t) / 1000;
console.log(`inbox: ${n} in ${inboxSec.toFixed(2)} s = ${(n / inboxSec).toFixed(0)}/s; engine: ${JSON.stringify(e)} in ${engineSec.toFixed(2)} s = ${(msgs.length / engineSec).toFixed(0)}/s`);
await svc.stop();
const b = createSql(admin, { max: 1 });
await b.unsafe(`drop database ${name} with (force)`);
await b.end();
