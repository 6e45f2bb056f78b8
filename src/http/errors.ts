import type { FastifyError, FastifyInstance } from 'fastify';
import { isDatabaseConnectionError } from '../process-errors.ts';

/** An error that becomes a 4xx/5xx JSON answer `{ error: code, message }`. */
export class HttpError extends Error {
  statusCode: number;
  code: string;
  details: unknown;
  headers: Record<string, string>;
  constructor(statusCode: number, code: string, message: string, details?: unknown, headers: Record<string, string> = {}) {
    super(message);
    this.name = 'HttpError';
    this.statusCode = statusCode;
    this.code = code;
    this.details = details;
    this.headers = headers;
  }
}

export interface ErrorBody {
  error: string;
  message: string;
  details?: unknown;
}

// Fastify's own error codes mapped to stable, documented codes of ours.
const FASTIFY_CODES: Record<string, { status: number; code: string }> = {
  FST_ERR_CTP_BODY_TOO_LARGE: { status: 413, code: 'payload_too_large' },
  FST_ERR_CTP_INVALID_MEDIA_TYPE: { status: 415, code: 'unsupported_media_type' },
  FST_ERR_CTP_EMPTY_JSON_BODY: { status: 400, code: 'invalid_json' },
  FST_ERR_CTP_INVALID_JSON_BODY: { status: 400, code: 'invalid_json' },
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: { status: 400, code: 'invalid_content_length' },
};

/**
 * Client mistakes become 4xx with a code and a message; anything else is logged in full and
 * answered with a 500 that hides internals.
 */
export function installErrorHandler(app: FastifyInstance): void {
  app.setErrorHandler((err: FastifyError | HttpError, request, reply) => {
    if (err instanceof HttpError) {
      if (err.statusCode >= 500) request.log.warn({ code: err.code }, err.message);
      const body: ErrorBody = { error: err.code, message: err.message };
      if (err.details !== undefined) body.details = err.details;
      return reply.code(err.statusCode).headers(err.headers).send(body);
    }
    if (err.validation) {
      const context = err.validationContext ?? 'body';
      const details = err.validation.map((v) => ({
        field: `${context}${v.instancePath ? v.instancePath.replaceAll('/', '.') : ''}`,
        message: v.message ?? 'is invalid',
        ...(v.params && 'missingProperty' in v.params ? { missing: v.params.missingProperty } : {}),
      }));
      const first = details[0];
      const message = first
        ? `${first.field}${first.missing ? `.${String(first.missing)}` : ''} ${first.message}`
        : 'request is invalid';
      return reply.code(400).send({ error: 'validation_failed', message, details });
    }
    const mapped = err.code ? FASTIFY_CODES[err.code] : undefined;
    if (mapped) {
      return reply.code(mapped.status).send({ error: mapped.code, message: err.message });
    }
    if (typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500) {
      return reply.code(err.statusCode).send({ error: err.code ?? 'bad_request', message: err.message });
    }
    // PostgreSQL class 22 "data exception" (22021 NUL in text, 22P02 bad text representation,
    // 22003 out of range, 22007/22008 bad dates...): the request carried a value the database
    // cannot hold, e.g. /v1/contacts/%00 (found by fuzzing). The client's mistake: 400.
    if (isPostgresDataException(err)) {
      request.log.info({ code: (err as { code?: string }).code }, 'request value refused by the database');
      return reply.code(400).send({ error: 'invalid_input', message: 'A value in the request cannot be stored or searched (NUL byte, malformed text or out-of-range number or date)' });
    }
    // The database is down or restarting (any route): 503 + retry-after, one warning line, not a
    // 500 with a stack per request.
    if (isDatabaseConnectionError(err)) {
      request.log.warn({ code: err.code }, 'database unavailable');
      return reply.code(503).header('retry-after', '5').send({ error: 'database_unavailable', message: 'The database is unavailable; retry later' });
    }
    request.log.error({ err }, 'unhandled error');
    return reply.code(500).send({ error: 'internal_error', message: 'Internal server error' });
  });

  app.setNotFoundHandler((request, reply) => {
    reply.code(404).send({ error: 'not_found', message: `No route for ${request.method} ${request.url.split('?')[0]}` });
  });
}

export const ErrorSchema = {
  type: 'object',
  properties: {
    error: { type: 'string', description: 'stable machine-readable code' },
    message: { type: 'string' },
    details: {},
  },
  required: ['error', 'message'],
} as const;

function isPostgresDataException(err: unknown): boolean {
  const e = err as { code?: unknown; severity?: unknown; name?: unknown };
  // postgres.js errors are PostgresError with `severity`; our own codes never look like 22xxx.
  return typeof e.code === 'string' && /^22[0-9A-Z]{3}$/.test(e.code) && (e.name === 'PostgresError' || typeof e.severity === 'string');
}
