import { randomUUID } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { AppDeps } from '../app-deps.ts';
import { requireKey } from '../http/auth.ts';
import { ErrorSchema, HttpError } from '../http/errors.ts';
import { storeProductEvents, type InboxMessage } from './event-inbox.ts';
import {
  AcceptedSchema,
  BatchErrorSchema,
  BatchResultSchema,
  BatchSchema,
  GroupSchema,
  IdentifySchema,
  MAX_BATCH_BYTES,
  MAX_EVENT_BYTES,
  PageSchema,
  TrackSchema,
  checkers,
} from './schemas.ts';

type Kind = keyof typeof checkers;
type Rejection = { index: number; messageId: string | null; error: string; message: string };
/** What a batch request says for all its items (Segment merges `context`, uses `sentAt` for clock skew). */
type BatchEnvelope = { context?: Record<string, unknown>; sentAt?: string };

/** Deeper JSON than this is refused: PostgreSQL's jsonb parser runs out of stack a few thousand levels down. */
export const MAX_JSON_DEPTH = 64;

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Human message for the first schema error, naming the offending field. */
function describeSchemaError(kind: Kind, error: { instancePath?: string; params?: unknown; message?: string } | undefined): string {
  if (!error) return `${kind} message is invalid`;
  const field = error.instancePath ? error.instancePath.slice(1).replaceAll('/', '.') : '';
  // TypeBox reports a missing required property as params.requiredProperties (an array), at the
  // path of the object that lacks it (AJV's equivalent is params.missingProperty).
  const params = (error.params ?? {}) as { requiredProperties?: unknown; missingProperty?: unknown };
  const missing = Array.isArray(params.requiredProperties)
    ? params.requiredProperties.map(String)
    : typeof params.missingProperty === 'string'
      ? [params.missingProperty]
      : [];
  if (missing.length > 0) {
    const names = missing.map((m) => (field ? `${field}.${m}` : m));
    return `${names.join(', ')} ${names.length === 1 ? 'is' : 'are'} required`;
  }
  return `${field || kind} ${error.message ?? 'is invalid'}`;
}

/**
 * Why a value cannot be stored as text/jsonb in PostgreSQL, or null when it can: NUL characters
 * and lone UTF-16 surrogates are refused by PostgreSQL (they would fail the whole INSERT, and a
 * retrying sender would be stuck on a 503 forever), and very deep nesting exhausts its parser.
 */
function unstorable(value: unknown, path: string): string | null {
  // The common case (nothing wrong) without building a path string for every property; the
  // path is worked out only for the message that says what is wrong.
  return storable(value, 0) ? null : whyUnstorable(value, path);
}

function storable(value: unknown, depth: number): boolean {
  if (typeof value === 'string') return !value.includes('\u0000') && value.isWellFormed();
  if (typeof value !== 'object' || value === null) return true;
  if (depth >= MAX_JSON_DEPTH) return false;
  if (Array.isArray(value)) {
    for (const v of value) if (!storable(v, depth + 1)) return false;
    return true;
  }
  for (const key in value) {
    if (!Object.hasOwn(value, key)) continue;
    if (!storable(key, 0) || !storable((value as Record<string, unknown>)[key], depth + 1)) return false;
  }
  return true;
}

function whyUnstorable(value: unknown, path: string, depth = 0): string | null {
  if (typeof value === 'string') {
    if (value.includes('\u0000')) return `${path || 'message'} must not contain NUL (\\u0000) characters`;
    if (!value.isWellFormed()) return `${path || 'message'} must be valid Unicode (it contains a lone surrogate)`;
    return null;
  }
  if (typeof value !== 'object' || value === null) return null;
  if (depth >= MAX_JSON_DEPTH) return `${path || 'message'} is nested more than ${MAX_JSON_DEPTH} levels deep`;
  // Name the path precisely near the top; deep down, name where the problem starts.
  const at = (step: string) => (depth < 4 ? `${path}${step}` : path);
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const why = whyUnstorable(value[i], at(`[${i}]`), depth + 1);
      if (why) return why;
    }
    return null;
  }
  for (const [key, v] of Object.entries(value)) {
    if (whyUnstorable(key, '')) return `${path || 'message'} has a property name that is not valid text (NUL character or lone surrogate)`;
    const why = whyUnstorable(v, at(path ? `.${key}` : key), depth + 1);
    if (why) return why;
  }
  return null;
}

function parseDate(value: unknown): Date | null {
  if (typeof value !== 'string') return null;
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? null : d;
}

/**
 * When the event happened. Segment semantics: `timestamp` when given; otherwise the client's
 * `originalTimestamp` corrected for its clock skew (receivedAt - (sentAt - originalTimestamp)),
 * as analytics.js sends no `timestamp`; otherwise the time received.
 */
function eventTime(raw: Record<string, unknown>, now: Date, batchSentAt: unknown): Date {
  const original = parseDate(raw.originalTimestamp);
  if (!original) return now;
  const sentAt = parseDate(raw.sentAt) ?? parseDate(batchSentAt);
  if (!sentAt) return original;
  return new Date(now.getTime() - (sentAt.getTime() - original.getTime()));
}

/** Turn one validated Segment message into an inbox row, or explain why it is refused. */
function toInboxMessage(kind: Kind, raw: Record<string, unknown>, now: Date, batch: BatchEnvelope = {}):
  | { ok: true; message: InboxMessage }
  | { ok: false; error: string; message: string } {
  const checker = checkers[kind];
  if (!checker.Check(raw as unknown)) {
    const first = [...checker.Errors(raw)][0];
    return { ok: false, error: 'validation_failed', message: describeSchemaError(kind, first) };
  }
  const userId = typeof raw.userId === 'string' ? raw.userId : null;
  const anonymousId = typeof raw.anonymousId === 'string' ? raw.anonymousId : null;
  if (!userId && !anonymousId) {
    return { ok: false, error: 'validation_failed', message: 'userId or anonymousId is required' };
  }
  const problem = unstorable(raw, '');
  if (problem) return { ok: false, error: 'validation_failed', message: problem };
  let timestamp: Date;
  if (typeof raw.timestamp === 'string') {
    const parsed = parseDate(raw.timestamp);
    if (!parsed) return { ok: false, error: 'validation_failed', message: 'timestamp must be an ISO-8601 date-time' };
    timestamp = parsed;
  } else {
    timestamp = eventTime(raw, now, batch.sentAt);
  }
  // Segment: the batch's context is merged with each item's own (the item wins).
  const own = isObject(raw.context) ? raw.context : undefined;
  const context = own || batch.context ? { ...batch.context, ...own } : null;
  const base = {
    messageId: typeof raw.messageId === 'string' ? raw.messageId : `lifeline-${randomUUID()}`,
    userId,
    anonymousId,
    context,
    timestamp,
  };
  switch (kind) {
    case 'track':
      return { ok: true, message: { ...base, kind: 'track', event: raw.event as string, properties: (raw.properties as Record<string, unknown>) ?? {}, traits: null, groupId: groupOf(context) } };
    case 'page':
    case 'screen': {
      // Page/screen views become track events so workflows can use them like any other event.
      const name = kind === 'page' ? 'Page Viewed' : 'Screen Viewed';
      const properties = {
        ...((raw.properties as Record<string, unknown>) ?? {}),
        ...(typeof raw.name === 'string' && raw.name !== '' ? { name: raw.name } : {}),
        ...(typeof raw.category === 'string' && raw.category !== '' ? { category: raw.category } : {}),
      };
      return { ok: true, message: { ...base, kind: 'track', event: name, properties, traits: null, groupId: groupOf(context) } };
    }
    case 'identify':
      return { ok: true, message: { ...base, kind: 'identify', event: null, properties: null, traits: (raw.traits as Record<string, unknown>) ?? {}, groupId: groupOf(context) } };
    case 'group':
      return { ok: true, message: { ...base, kind: 'group', event: null, properties: null, traits: (raw.traits as Record<string, unknown>) ?? {}, groupId: raw.groupId as string } };
  }
}

// B2B: Segment puts the account of a track/identify call in context.groupId.
function groupOf(context: Record<string, unknown> | null): string | null {
  const g = context?.groupId;
  return typeof g === 'string' && g !== '' ? g : null;
}

function byteLength(value: unknown): number {
  return Buffer.byteLength(JSON.stringify(value));
}

export async function productEventRoutes(app: FastifyInstance, deps: AppDeps): Promise<void> {
  // Browser analytics libraries (sendBeacon, Segment's analytics.js) post JSON as text/plain to
  // avoid a CORS preflight: parse it as JSON here (this scope only), same limits and errors.
  app.removeContentTypeParser('text/plain');
  app.addContentTypeParser('text/plain', { parseAs: 'string' }, app.getDefaultJsonParser('error', 'error'));
  const authenticate = async (request: FastifyRequest) => {
    requireKey(request, deps.config.writeKey, 'LIFELINE_WRITE_KEY', 'The events API');
  };

  const store = async (messages: InboxMessage[], request: FastifyRequest): Promise<Set<string>> => {
    try {
      const stored = await storeProductEvents(deps.sql, messages, deps.clock.now());
      if (stored.size > 0) deps.inboxNotifier?.poke();
      return stored;
    } catch (err) {
      request.log.error({ err: { message: (err as Error).message, code: (err as { code?: string }).code } }, 'could not store product events');
      throw new HttpError(503, 'storage_unavailable', 'The events could not be stored; retry later', undefined, { 'retry-after': '5' });
    }
  };

  const single = (kind: Kind, path: string, schema: object, summary: string) => {
    app.post(
      path,
      {
        onRequest: authenticate,
        bodyLimit: MAX_EVENT_BYTES,
        schema: {
          summary,
          tags: ['events'],
          security: [{ writeKey: [] }],
          body: schema,
          response: { 200: AcceptedSchema, 400: ErrorSchema, 401: ErrorSchema, 413: ErrorSchema, 503: ErrorSchema },
        },
      },
      async (request) => {
        const result = toInboxMessage(kind, request.body as Record<string, unknown>, deps.clock.now());
        if (!result.ok) throw new HttpError(400, result.error, result.message);
        const inserted = await store([result.message], request);
        return { success: true, duplicate: !inserted.has(result.message.messageId) };
      },
    );
  };

  single('track', '/v1/track', TrackSchema, 'Record an action a user performed (Segment track)');
  single('identify', '/v1/identify', IdentifySchema, 'Create or update a contact and its traits (Segment identify)');
  single('group', '/v1/group', GroupSchema, 'Associate a contact with an account and set account traits (Segment group)');
  single('page', '/v1/page', PageSchema, 'Record a page view (stored as a "Page Viewed" track event)');
  single('screen', '/v1/screen', PageSchema, 'Record a mobile screen view (stored as a "Screen Viewed" track event)');

  app.post(
    '/v1/batch',
    {
      onRequest: authenticate,
      bodyLimit: MAX_BATCH_BYTES,
      schema: {
        summary: 'Send many track/identify/group/page messages at once (Segment batch)',
        description: `Up to 500 KB per request and 32 KB per message. Valid items are kept even when others are rejected; rejected items are listed with their index. Items deduplicate by messageId.`,
        tags: ['events'],
        security: [{ writeKey: [] }],
        body: BatchSchema,
        response: { 200: BatchResultSchema, 400: BatchErrorSchema, 401: ErrorSchema, 413: ErrorSchema, 503: ErrorSchema },
      },
    },
    async (request, reply) => {
      const body = request.body as { batch: unknown[] } & BatchEnvelope;
      const now = deps.clock.now();
      const rejected: Rejection[] = [];
      const accepted: InboxMessage[] = [];
      body.batch.forEach((item, index) => {
        if (!isObject(item)) {
          rejected.push({ index, messageId: null, error: 'validation_failed', message: 'message must be an object' });
          return;
        }
        const messageId = typeof item.messageId === 'string' ? item.messageId : null;
        const type = item.type;
        // Own properties only: `'toString' in checkers` is true.
        if (typeof type !== 'string' || !Object.hasOwn(checkers, type)) {
          rejected.push({ index, messageId, error: 'unsupported_type', message: `type must be one of track, identify, group, page, screen (got ${JSON.stringify(type ?? null)})` });
          return;
        }
        // Validated first: it bounds the nesting depth, so measuring (JSON.stringify) is safe.
        const result = toInboxMessage(type as Kind, item, now, body);
        if (!result.ok) {
          rejected.push({ index, messageId, error: result.error, message: result.message });
          return;
        }
        if (byteLength(item) > MAX_EVENT_BYTES) {
          rejected.push({ index, messageId, error: 'payload_too_large', message: `message is larger than ${MAX_EVENT_BYTES / 1024} KB` });
          return;
        }
        accepted.push(result.message);
      });
      if (accepted.length === 0) {
        const codes = new Set(rejected.map((r) => r.error));
        const [code] = codes.size === 1 ? codes : ['validation_failed'];
        const first = rejected[0];
        return reply.code(400).send({
          error: code ?? 'validation_failed',
          message: `No message in the batch was accepted${first ? ` (first: index ${first.index}: ${first.message})` : ''}`,
          success: false,
          accepted: 0,
          duplicates: 0,
          rejected,
        });
      }
      const inserted = await store(accepted, request);
      const duplicates = accepted.length - inserted.size;
      return reply.code(200).send({ success: true, accepted: accepted.length, duplicates, rejected });
    },
  );
}
