// Dead letters of every queue of work we own, in one admin API: items parked after their
// bounded retries, listed with why, and replayable (back in their queue with fresh attempts).
//   GET  /v1/admin/dead-letters[?queue=…&limit=…]  → { items: [{ queue, id, attempts, last_error, dead_at }] }
//   POST /v1/admin/dead-letters/replay {queue, ids} → { queue, replayed: [ids that were dead] }
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { AppDeps } from '../app-deps.ts';
import type { Queryable } from '../db/connection.ts';
import { requireKey } from '../http/auth.ts';
import { ErrorSchema, HttpError } from '../http/errors.ts';
import { replayDeadMessages } from '../email/sender.ts';
import { adminActor, recordAudit } from '../admin/audit-log.ts';
import { listDeadFacts, listDeadRuns, replayDeadFacts, replayDeadRuns } from '../workflows/engine-dead-letters.ts';
import { PRODUCT_QUEUE } from '../events/event-inbox.ts';
import { STRIPE_QUEUE } from '../stripe/event-inbox.ts';
import { CARD_UPDATE_PAYMENTS_QUEUE } from '../stripe/card-update-payments.ts';
import { SLACK_NOTIFICATIONS_QUEUE } from '../notify/slack-notifier.ts';
import { createWorkQueue, type DeadLetter } from './work-queue.ts';

interface DeadQueue {
  list(limit: number): Promise<DeadLetter[]>;
  replay(ids: string[]): Promise<string[]>;
}

const MAX_LIMIT = 1000;

function queues(deps: AppDeps): Record<string, DeadQueue> {
  const { sql, clock } = deps;
  const inbox = (spec: typeof STRIPE_QUEUE | typeof PRODUCT_QUEUE): DeadQueue => {
    const q = createWorkQueue({ sql, clock }, spec);
    return { list: (limit) => q.dead(limit), replay: (ids) => q.replay(ids) };
  };
  const numeric = (ids: string[]) => ids.filter((id) => /^\d{1,18}$/.test(id)).map(Number);
  return {
    [STRIPE_QUEUE.name]: inbox(STRIPE_QUEUE),
    [PRODUCT_QUEUE.name]: inbox(PRODUCT_QUEUE),
    // Pay on card update (src/stripe/card-update-payments.ts): Stripe calls that kept failing.
    [CARD_UPDATE_PAYMENTS_QUEUE.name]: (() => {
      const q = createWorkQueue({ sql, clock }, CARD_UPDATE_PAYMENTS_QUEUE);
      return { list: (limit: number) => q.dead(limit), replay: (ids: string[]) => q.replay(ids) };
    })(),
    // Slack alerts (src/notify/slack-notifier.ts): alerts Slack kept refusing.
    [SLACK_NOTIFICATIONS_QUEUE.name]: (() => {
      const q = createWorkQueue({ sql, clock }, SLACK_NOTIFICATIONS_QUEUE);
      return { list: (limit: number) => q.dead(limit), replay: (ids: string[]) => q.replay(ids) };
    })(),
    // Emails (src/email/sender.ts): messages in status `dead`.
    messages: {
      list: (limit) => listDeadMessages(sql, limit),
      replay: (ids) => replayDeadMessages(sql, ids, clock.now()),
    },
    // Workflow engine (src/workflows/engine-dead-letters.ts): due runs and timeline facts.
    workflow_runs: {
      list: async (limit) =>
        (await listDeadRuns(sql, limit)).map((r) => ({ queue: 'workflow_runs', id: String(r.id), attempts: r.failures, last_error: r.lastError, dead_at: r.deadAt })),
      replay: async (ids) => {
        const wanted = numeric(ids);
        const dead = new Set((await sql<{ id: number }[]>`select id from workflow_runs where id = any(${wanted}::bigint[]) and dead_at is not null and status = 'active'`).map((r) => r.id));
        await replayDeadRuns(sql, [...dead], clock.now());
        return [...dead].map(String);
      },
    },
    domain_events: {
      list: async (limit) =>
        (await listDeadFacts(sql, limit)).map((f) => ({ queue: 'domain_events', id: String(f.id), attempts: f.attempts, last_error: f.error, dead_at: f.deadAt })),
      replay: async (ids) => {
        const wanted = numeric(ids);
        const dead = (await sql<{ id: number }[]>`select id from domain_events where id = any(${wanted}::bigint[]) and engine_dead_at is not null`).map((r) => r.id);
        await replayDeadFacts(sql, dead);
        return dead.map(String);
      },
    },
  };
}

async function listDeadMessages(db: Queryable, limit: number): Promise<DeadLetter[]> {
  return db<DeadLetter[]>`
    select 'messages' as queue, id, attempts, status_reason as last_error, updated_at as dead_at
    from messages where status = 'dead' order by updated_at desc, id limit ${limit}`;
}

const DeadLetterSchema = {
  type: 'object',
  required: ['queue', 'id', 'attempts', 'last_error', 'dead_at'],
  properties: {
    queue: { type: 'string' },
    id: { type: 'string' },
    attempts: { type: 'integer' },
    last_error: { type: ['string', 'null'] },
    dead_at: { type: 'string', format: 'date-time' },
  },
} as const;

export async function deadLetterRoutes(app: FastifyInstance, deps: AppDeps): Promise<void> {
  app.addHook('onRequest', async (request: FastifyRequest) => {
    requireKey(request, deps.config.adminTokens, 'LIFELINE_ADMIN_TOKEN', 'The admin API');
  });
  const registry = queues(deps);
  const names = Object.keys(registry);
  const security = [{ adminToken: [] }];

  const queueNamed = (name: unknown): DeadQueue => {
    const q = typeof name === 'string' ? registry[name] : undefined;
    if (!q) throw new HttpError(400, 'unknown_queue', `queue must be one of ${names.join(', ')}`);
    return q;
  };

  app.get(
    '/v1/admin/dead-letters',
    {
      schema: {
        summary: 'Work items parked after their bounded retries (every queue, or one), newest first',
        tags: ['admin'],
        security,
        querystring: {
          type: 'object',
          properties: { queue: { type: 'string', enum: names }, limit: { type: 'string', pattern: '^[0-9]{1,4}$' } },
          additionalProperties: false,
        },
        response: { 200: { type: 'object', required: ['items'], properties: { items: { type: 'array', items: DeadLetterSchema } } }, 400: ErrorSchema, 401: ErrorSchema, 503: ErrorSchema },
      },
    },
    async (request) => {
      const query = request.query as { queue?: string; limit?: string };
      const limit = Math.min(MAX_LIMIT, Math.max(1, Number(query.limit ?? 100)));
      const chosen = query.queue ? [queueNamed(query.queue)] : Object.values(registry);
      const items = (await Promise.all(chosen.map((q) => q.list(limit)))).flat();
      items.sort((a, b) => b.dead_at.getTime() - a.dead_at.getTime());
      return { items: items.slice(0, limit).map((i) => ({ ...i, dead_at: i.dead_at.toISOString() })) };
    },
  );

  app.post(
    '/v1/admin/dead-letters/replay',
    {
      schema: {
        summary: 'Put dead items back in their queue with fresh attempts; answers the ids that were dead',
        tags: ['admin'],
        security,
        body: {
          type: 'object',
          required: ['queue', 'ids'],
          properties: { queue: { type: 'string', enum: names }, ids: { type: 'array', items: { type: 'string', minLength: 1, maxLength: 300 }, minItems: 1, maxItems: MAX_LIMIT } },
          additionalProperties: false,
        },
        response: { 200: { type: 'object', required: ['queue', 'replayed'], properties: { queue: { type: 'string' }, replayed: { type: 'array', items: { type: 'string' } } } }, 400: ErrorSchema, 401: ErrorSchema, 503: ErrorSchema },
      },
    },
    async (request) => {
      const body = request.body as { queue: string; ids: string[] };
      const replayed = await queueNamed(body.queue).replay(body.ids);
      if (replayed.length > 0) {
        await recordAudit(deps.sql, { at: deps.clock.now(), actor: adminActor(request), action: 'dead_letter.replayed', target: body.queue, diff: { replayed } });
      }
      return { queue: body.queue, replayed };
    },
  );
}

/** How many items each queue has parked (for the dashboard; each count reads a partial index). */
export async function countDeadLetters(sql: Queryable): Promise<{ queue: string; count: number }[]> {
  return [...await sql<{ queue: string; count: number }[]>`
    select 'stripe_events' as queue, count(*)::int as count from stripe_events where dead_at is not null
    union all select 'product_events', count(*)::int from product_events where dead_at is not null
    union all select 'messages', count(*)::int from messages where status = 'dead'
    union all select 'workflow_runs', count(*)::int from workflow_runs where dead_at is not null
    union all select 'domain_events', count(*)::int from domain_events where engine_dead_at is not null`];
}
