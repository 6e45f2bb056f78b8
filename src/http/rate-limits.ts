// Request rate limits (@fastify/rate-limit): 429 + retry-after. Webhooks are exempt (Stripe and
// Resend retry on their own schedule, and refusing them would only delay money events); health
// probes and metrics too. Keyed by the presented credential's hash when there is one (a customer's
// whole fleet shares one write key), else by client address; the dashboard login has its own,
// much smaller budget per address (password guessing).
import { createHash } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import rateLimit from '@fastify/rate-limit';
import { HttpError } from './errors.ts';

export interface RateLimitSettings {
  /** requests per minute per credential or address (generous: the benches post /v1/batch flat out) */
  perMinute: number;
  /** requests per minute per client address without credentials (unsubscribe, redirects, token pages) */
  anonymousPerMinute: number;
  /** dashboard login attempts per minute per address */
  loginPerMinute: number;
}

const EXEMPT = /^\/(webhooks\/|healthz|readyz|metrics)/;

function isLogin(request: FastifyRequest): boolean {
  return request.method === 'POST' && request.url.split('?')[0] === '/dashboard/login';
}

export async function installRateLimits(app: FastifyInstance, settings: RateLimitSettings): Promise<void> {
  await app.register(rateLimit, {
    global: true,
    timeWindow: 60_000,
    allowList: (request) => EXEMPT.test(request.url),
    max: (request) => (isLogin(request) ? settings.loginPerMinute : request.headers.authorization ? settings.perMinute : settings.anonymousPerMinute),
    keyGenerator: (request) => {
      if (isLogin(request)) return `login:${request.ip}`;
      const auth = request.headers.authorization;
      return auth ? `key:${createHash('sha256').update(auth).digest('hex').slice(0, 24)}` : `ip:${request.ip}`;
    },
    errorResponseBuilder: (_request, context) =>
      new HttpError(429, 'rate_limited', `Too many requests; retry in ${Math.ceil(context.ttl / 1000)} s`, undefined, {
        'retry-after': String(Math.max(1, Math.ceil(context.ttl / 1000))),
      }),
  });
}
