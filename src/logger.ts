import pino, { type Logger } from 'pino';
import type { LogLevel } from './config.ts';

// Paths that may carry secrets or personal data. Fastify's default request serializer logs
// method/url only; these cover anything that logs headers, bodies or our own objects.
const REDACT = [
  'req.headers.authorization',
  'req.headers.cookie',
  'req.headers["stripe-signature"]',
  'req.headers["svix-signature"]',
  'headers.authorization',
  'headers["stripe-signature"]',
  '*.email',
  '*.password',
  '*.apiKey',
  '*.secret',
  '*.html',
  '*.text',
  'body',
  'payload',
];

/**
 * A request as logged: the route pattern (`/v1/contacts/:id`, `/unsubscribe/:token`), never the
 * concrete URL, whose path parameters and query strings carry email addresses and tokens. An
 * unmatched URL (404) keeps only its first segment.
 */
export function requestForLog(req: { method?: string; url?: string; routeOptions?: { url?: string }; id?: string; ip?: string }): Record<string, unknown> {
  const pattern = req.routeOptions?.url;
  const path = (req.url ?? '').split('?')[0] ?? '';
  const url = pattern || (path === '/' ? '/' : `/${path.split('/')[1] ?? ''}/[redacted]`);
  return { method: req.method, url, hasQuery: (req.url ?? '').includes('?'), ...(req.id ? { id: req.id } : {}) };
}

export function createLogger(level: LogLevel, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'lifeline' },
      serializers: { req: requestForLog as pino.SerializerFn },
      redact: { paths: REDACT, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination,
  );
}
