import { randomUUID } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { AppDeps } from '../app.ts';
import { requireKey } from '../http/auth.ts';
import { ErrorSchema, HttpError } from '../http/errors.ts';
import { storeProductEvents, type InboxMessage } from './event-inbox.ts';
import {
  AcceptedSchema,
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

/** Turn one validated Segment message into an inbox row, or explain why it is refused. */
function toInboxMessage(kind: Kind, raw: Record<string, unknown>, now: Date, batchContext?: Record<string, unknown>):
  | { ok: true; message: InboxMessage }
  | { ok: false; error: string; message: string } {
  const checker = checkers[kind];
  if (!checker.Check(raw as unknown)) {
    const first = [...checker.Errors(raw)][0];
    const field = first?.instancePath ? first.instancePath.slice(1).replaceAll('/', '.') : '';
    const missing = first && 'requiredProperties' in first.params ? String((first.params as { requiredProperties: string[] }).requiredProperties[0]) : '';
    return { ok: false, error: 'validation_failed', message: `${field || missing || kind} ${first?.message ?? 'is invalid'}`.trim() };
  }
  const userId = typeof raw.userId === 'string' ? raw.userId : null;
  const anonymousId = typeof raw.anonymousId === 'string' ? raw.anonymousId : null;
  if (!userId && !anonymousId) {
    return { ok: false, error: 'validation_failed', message: 'userId or anonymousId is required' };
  }
  let timestamp = now;
  if (typeof raw.timestamp === 'string') {
    timestamp = new Date(raw.timestamp);
    if (Number.isNaN(timestamp.getTime())) return { ok: false, error: 'validation_failed', message: 'timestamp must be an ISO-8601 date-time' };
  }
  const context = (raw.context as Record<string, unknown> | undefined) ?? batchContext ?? null;
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
      const properties = { ...((raw.properties as Record<string, unknown>) ?? {}), ...(raw.name ? { name: raw.name } : {}) };
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
  const authenticate = async (request: FastifyRequest) => {
    requireKey(request, deps.config.writeKey, 'LIFELINE_WRITE_KEY', 'The events API');
  };

  const store = async (messages: InboxMessage[], request: FastifyRequest): Promise<Set<string>> => {
    try {
      return await storeProductEvents(deps.sql, messages, deps.clock.now());
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
        response: { 200: BatchResultSchema, 400: BatchResultSchema, 401: ErrorSchema, 413: ErrorSchema, 503: ErrorSchema },
      },
    },
    async (request, reply) => {
      const body = request.body as { batch: Record<string, unknown>[]; context?: Record<string, unknown> };
      const now = deps.clock.now();
      const rejected: Rejection[] = [];
      const accepted: InboxMessage[] = [];
      body.batch.forEach((item, index) => {
        const messageId = typeof item.messageId === 'string' ? item.messageId : null;
        const type = item.type;
        if (typeof type !== 'string' || !(type in checkers)) {
          rejected.push({ index, messageId, error: 'unsupported_type', message: `type must be one of track, identify, group, page, screen (got ${JSON.stringify(type ?? null)})` });
          return;
        }
        if (byteLength(item) > MAX_EVENT_BYTES) {
          rejected.push({ index, messageId, error: 'payload_too_large', message: `message is larger than ${MAX_EVENT_BYTES / 1024} KB` });
          return;
        }
        const result = toInboxMessage(type as Kind, item, now, body.context);
        if (result.ok) accepted.push(result.message);
        else rejected.push({ index, messageId, error: result.error, message: result.message });
      });
      const inserted = await store(accepted, request);
      const duplicates = accepted.length - inserted.size;
      const allRejected = accepted.length === 0;
      return reply.code(allRejected ? 400 : 200).send({ success: !allRejected, accepted: accepted.length, duplicates, rejected });
    },
  );
}
