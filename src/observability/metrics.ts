// GET /metrics in the Prometheus text format (prom-client). One Registry per app instance (never
// prom-client's global default registry: two services in one process, as in tests, must not share
// counters). HTTP counters are kept in memory by an onResponse hook; everything about work in
// the database (queue depths and ages, dead letters, runs, emails) is computed at scrape time by
// cheap SQL, so every instance reports the same truth. Auth: the admin token or METRICS_TOKEN.
import { timingSafeEqual, createHash } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { AppDeps } from '../app-deps.ts';
import { presentedKey } from '../http/auth.ts';
import { HttpError } from '../http/errors.ts';
import { countDeadLetters } from '../work/dead-letters.ts';

function sameSecret(a: string, b: string): boolean {
  // Hash first so the comparison does not leak the length.
  return timingSafeEqual(createHash('sha256').update(a).digest(), createHash('sha256').update(b).digest());
}

/** Registers the HTTP instrumentation hook (on the root instance) and the /metrics route. */
export function installMetrics(app: FastifyInstance, deps: AppDeps): Registry {
  const registry = new Registry();
  const { sql, clock } = deps;

  const requests = new Counter({
    name: 'lifeline_http_requests_total',
    help: 'HTTP requests by method, route pattern and status code',
    labelNames: ['method', 'route', 'status'] as const,
    registers: [registry],
  });
  const duration = new Histogram({
    name: 'lifeline_http_request_duration_seconds',
    help: 'HTTP request duration by method and route pattern',
    labelNames: ['method', 'route'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [registry],
  });
  // A callback hook, not an async one: it runs on every request, and an async hook costs a
  // promise and a microtask turn per request for work that never waits.
  app.addHook('onResponse', (request, reply, done) => {
    // The route pattern (`/v1/contacts/:id`), never the URL: URLs can hold emails and tokens.
    const route = request.routeOptions.url ?? 'unmatched';
    requests.inc({ method: request.method, route, status: String(reply.statusCode) });
    duration.observe({ method: request.method, route }, reply.elapsedTime / 1000);
    done();
  });

  const queueDepth = new Gauge({ name: 'lifeline_queue_depth', help: 'Items waiting in each work queue (not done, not dead)', labelNames: ['queue'] as const, registers: [registry] });
  const queueAge = new Gauge({
    name: 'lifeline_queue_oldest_age_seconds',
    help: 'Age of the oldest waiting item of each work queue (0 when empty)',
    labelNames: ['queue'] as const,
    registers: [registry],
  });
  const projectionLag = new Gauge({
    name: 'lifeline_projection_lag_seconds',
    help: 'Age of the oldest Stripe event stored but not yet projected (0 when caught up)',
    registers: [registry],
  });
  const engineLag = new Gauge({
    name: 'lifeline_engine_feed_lag_seconds',
    help: 'Age of the oldest timeline fact not yet fed to the workflow engine (0 when caught up)',
    registers: [registry],
  });
  const deadLetters = new Gauge({ name: 'lifeline_dead_letters', help: 'Items parked after their bounded retries, per queue', labelNames: ['queue'] as const, registers: [registry] });
  const runs = new Gauge({ name: 'lifeline_workflow_runs', help: 'Workflow runs by workflow and status', labelNames: ['workflow', 'status'] as const, registers: [registry] });
  const emails = new Gauge({ name: 'lifeline_emails', help: 'Messages by status', labelNames: ['status'] as const, registers: [registry] });

  // One collect for all the SQL gauges, run once per scrape (prom-client awaits collect()).
  let collecting: Promise<void> | null = null;
  async function collectFromDatabase(): Promise<void> {
    const now = clock.now();
    const queues = await sql<{ queue: string; depth: number; oldest: Date | null }[]>`
      select 'stripe_events' as queue, count(*)::int as depth, min(received_at) as oldest from stripe_events where processed_at is null and dead_at is null
      union all select 'product_events', count(*)::int, min(received_at) from product_events where processed_at is null and dead_at is null
      union all select 'card-update-payments', count(*)::int, min(created) from card_update_payments where done_at is null and dead_at is null
      union all select 'engine_feed', count(*)::int, min(recorded_at) from domain_events where engine_processed_at is null and engine_dead_at is null
      union all select 'due_runs', count(*)::int, min(due_at) from workflow_runs where status = 'active' and due_at <= ${now} and dead_at is null
      union all select 'outbox', count(*)::int, min(created_at) from messages where status in ('queued', 'sending')`;
    queueDepth.reset();
    queueAge.reset();
    for (const q of queues) {
      const age = q.oldest ? Math.max(0, (now.getTime() - q.oldest.getTime()) / 1000) : 0;
      queueDepth.set({ queue: q.queue }, q.depth);
      queueAge.set({ queue: q.queue }, age);
      if (q.queue === 'stripe_events') projectionLag.set(age);
      if (q.queue === 'engine_feed') engineLag.set(age);
    }
    deadLetters.reset();
    for (const d of await countDeadLetters(sql)) deadLetters.set({ queue: d.queue }, d.count);
    runs.reset();
    for (const r of await sql<{ workflow: string; status: string; n: number }[]>`
      select workflow_key as workflow, status, count(*)::int as n from workflow_runs group by 1, 2`) runs.set({ workflow: r.workflow, status: r.status }, r.n);
    emails.reset();
    for (const e of await sql<{ status: string; n: number }[]>`select status, count(*)::int as n from messages group by 1`) emails.set({ status: e.status }, e.n);
  }

  app.get('/metrics', { schema: { summary: 'Prometheus metrics (admin token or METRICS_TOKEN)', tags: ['operations'], security: [{ adminToken: [] }] } }, async (request: FastifyRequest, reply) => {
    const key = presentedKey(request);
    const allowed = [...deps.config.adminTokens, deps.config.metricsToken].filter((k): k is string => !!k);
    if (allowed.length === 0) throw new HttpError(503, 'not_configured', 'Metrics are disabled: set METRICS_TOKEN or LIFELINE_ADMIN_TOKEN');
    if (!key) throw new HttpError(401, 'unauthorized', 'Missing credentials: send "Authorization: Bearer <METRICS_TOKEN>"');
    if (!allowed.some((k) => sameSecret(k, key))) throw new HttpError(401, 'unauthorized', 'Invalid credentials');
    collecting ??= collectFromDatabase().finally(() => (collecting = null));
    await collecting;
    const provider = deps.providerMetrics ? `\n${await deps.providerMetrics.registry.metrics()}` : '';
    return reply.header('content-type', registry.contentType).send((await registry.metrics()) + provider);
  });
  return registry;
}
