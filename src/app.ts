import { randomUUID } from 'node:crypto';
import Fastify, { type FastifyInstance } from 'fastify';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { Logger } from 'pino';
import type { PgBoss } from 'pg-boss';
import type { Config } from './config.ts';
import type { Clock } from './clock.ts';
import type { Sql } from './db/connection.ts';
import { installErrorHandler } from './http/errors.ts';
import { healthRoutes } from './http/health-routes.ts';
import { installRateLimits } from './http/rate-limits.ts';
import { docsSecurityHeaders, installSecurityHeaders } from './http/security-headers.ts';
import { stripeWebhookRoutes } from './stripe/webhook-route.ts';
import { productEventRoutes } from './events/routes.ts';
import { definitionOpenApiComponents, workflowRoutes } from './workflows/routes.ts';
import { contactRoutes } from './contacts/routes.ts';
import { emailRoutes } from './email/routes.ts';
import { cardUpdateRoutes } from './stripe/card-update-link.ts';
import { billingStatusRoutes } from './billing/billing-status.ts';
import type { TemplateCatalog } from './email/template-catalog.ts';
import { reportRoutes } from './reports/routes.ts';
import { dashboardRoutes } from './dashboard/routes.ts';
import { deadLetterRoutes } from './work/dead-letters.ts';
import { auditRoutes } from './admin/audit-log.ts';
import { installMetrics } from './observability/metrics.ts';
import type { AppDeps } from './app-deps.ts';

export type { AppDeps };

/** Trust the nearest `hops` proxies (Fastify's numeric trustProxy, which its types omit). */
function trustHops(hops: number): (address: string, hop: number) => boolean {
  return (_address, hop) => hop < hops;
}

/** Builds the Fastify app; `server.ts` owns the process (listening, workers, shutdown). */
export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  // Cast: Fastify infers its type from the pino Logger, which is wider than FastifyBaseLogger.
  const app = Fastify({
    loggerInstance: deps.logger,
    // Segment allows 500 KB per batch request; single calls are far smaller (32 KB per event).
    bodyLimit: 512 * 1024,
    requestIdHeader: 'x-request-id',
    genReqId: () => randomUUID(),
    // Stripe payloads and Segment batches can nest deeply; AJV coercion would hide bad input.
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, allErrors: false, allowUnionTypes: true } },
    return503OnClosing: true,
    // Behind a reverse proxy (TRUST_PROXY): the client address and protocol come from
    // X-Forwarded-For / -Proto, for rate limits and the Secure cookie. Off by default, since
    // otherwise anyone could pick their own address by sending the header.
    trustProxy: typeof deps.config.trustProxy === 'number' ? trustHops(deps.config.trustProxy) : deps.config.trustProxy,
    // Signed tokens in email links (unsubscribe, click tracking) are longer than the default 100.
    routerOptions: { maxParamLength: 2048 },
  }) as unknown as FastifyInstance;

  installErrorHandler(app);
  await installRateLimits(app, deps.config.rateLimit);
  // Before the routes: page routes name their headers (src/http/security-headers.ts).
  await installSecurityHeaders(app, deps.config.publicUrl);

  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Lifeline API',
        version: '0.1.0',
        description:
          'Stripe webhooks and Segment-style product events in; lifecycle workflows, emails and recovery reports out.',
      },
      components: {
        securitySchemes: {
          writeKey: { type: 'http', scheme: 'bearer', description: 'LIFELINE_WRITE_KEY (or HTTP Basic with the key as user name)' },
          adminToken: { type: 'http', scheme: 'bearer', description: 'LIFELINE_ADMIN_TOKEN' },
        },
        // The workflow definition schema, published for editors and validators.
        schemas: definitionOpenApiComponents(),
      },
    },
  });
  await app.register(swaggerUi, { routePrefix: '/docs', ...docsSecurityHeaders });
  // Before every route plugin: its onResponse hook counts the requests of all of them.
  installMetrics(app, deps);

  await app.register(healthRoutes, deps);
  await app.register(async (scope) => stripeWebhookRoutes(scope, deps));
  await app.register(async (scope) => productEventRoutes(scope, deps));
  await app.register(async (scope) => workflowRoutes(scope, deps));
  await app.register(async (scope) => contactRoutes(scope, deps));
  await app.register(async (scope) => emailRoutes(scope, deps));
  await app.register(async (scope) => cardUpdateRoutes(scope, deps));
  await app.register(async (scope) => billingStatusRoutes(scope, deps));
  await app.register(async (scope) => reportRoutes(scope, deps));
  await app.register(async (scope) => dashboardRoutes(scope, deps));
  await app.register(async (scope) => deadLetterRoutes(scope, deps));
  await app.register(async (scope) => auditRoutes(scope, deps));

  return app;
}
