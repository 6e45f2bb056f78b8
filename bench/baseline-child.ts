// The webhook baseline: the least a correct Stripe webhook endpoint has to do, in its own
// process. A bare Fastify route that keeps the raw body, verifies the signature with
// Stripe.webhooks.constructEvent and stores the event with one INSERT (raw postgres.js,
// a plain table with the essential columns of stripe_events: id, type, payload jsonb).
// No logging, no schemas, no NOTIFY, no extra columns or indexes.
//
// BASELINE_NOTIFY (diagnostics only, `npm run bench -- --diagnose`):
//   inline    — the same INSERT plus pg_notify in the same statement (as Lifeline's inbox does)
//   coalesced — the INSERT, then at most one pg_notify in flight at a time, sent outside the
//               insert's transaction with synchronous_commit off (a prototype of the fix)
import type { AddressInfo } from 'node:net';
import Fastify from 'fastify';
import postgres from 'postgres';
import Stripe from 'stripe';
import { onStopRequest } from './lib/child.ts';

try {
  const secret = process.env.STRIPE_WEBHOOK_SECRET!;
  const sql = postgres(process.env.DATABASE_URL!, { max: Number(process.env.DB_POOL_MAX ?? 10), onnotice: () => {} });
  await sql`create table if not exists bench_baseline_stripe_events (id text primary key, type text not null, payload jsonb not null)`;
  const notifyMode = process.env.BASELINE_NOTIFY ?? 'none';
  // Coalesced wake-ups: one NOTIFY covers every row committed before it is sent.
  let inFlight = false;
  let pending = false;
  const poke = () => {
    if (inFlight) {
      pending = true;
      return;
    }
    inFlight = true;
    pending = false;
    sql
      .begin(async (tx) => {
        await tx`set local synchronous_commit = off`;
        await tx`select pg_notify('bench_inbox', 'stripe')`;
      })
      .catch(() => {})
      .finally(() => {
        inFlight = false;
        if (pending) poke();
      });
  };
  const app = Fastify({ logger: false });
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
  app.post('/webhooks/stripe', async (request, reply) => {
    const raw = request.body as Buffer;
    let event: { id: string; type: string };
    try {
      event = Stripe.webhooks.constructEvent(raw, request.headers['stripe-signature'] as string, secret) as unknown as { id: string; type: string };
    } catch {
      return reply.code(400).send({ error: 'invalid_signature' });
    }
    if (notifyMode === 'inline') {
      await sql`with ins as (insert into bench_baseline_stripe_events (id, type, payload) values (${event.id}, ${event.type}, ${raw.toString('utf8')}::text::jsonb) returning 1)
        select pg_notify('bench_inbox', 'stripe') from ins`;
    } else {
      await sql`insert into bench_baseline_stripe_events (id, type, payload) values (${event.id}, ${event.type}, ${raw.toString('utf8')}::text::jsonb)`;
      if (notifyMode === 'coalesced') poke();
    }
    return { received: true };
  });
  onStopRequest(async () => {
    await app.close();
    await sql.end({ timeout: 5 });
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  process.send!({ type: 'ready', port: (app.server.address() as AddressInfo).port });
} catch (err) {
  process.send!({ type: 'error', error: err instanceof Error ? err.stack ?? err.message : String(err) });
  process.exit(1);
}
