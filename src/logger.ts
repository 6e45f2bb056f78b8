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

export function createLogger(level: LogLevel, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'lifeline' },
      redact: { paths: REDACT, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination,
  );
}
