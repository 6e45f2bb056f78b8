// Segment tracking-spec messages we accept (https://segment.com/docs/connections/spec/).
// These TypeBox schemas are JSON Schema: Fastify validates single calls with them, the batch
// route validates each item with the compiled checker, and /docs publishes them.
import { Type, type Static } from 'typebox';
import { Compile } from 'typebox/compile';

const Id = Type.String({ minLength: 1, maxLength: 256 });
const Json = Type.Record(Type.String(), Type.Unknown());

const Common = {
  userId: Type.Optional(Id),
  anonymousId: Type.Optional(Id),
  messageId: Type.Optional(Id),
  timestamp: Type.Optional(Type.String({ format: 'date-time', description: 'ISO-8601; defaults to the time received' })),
  sentAt: Type.Optional(Type.String()),
  originalTimestamp: Type.Optional(Type.String()),
  context: Type.Optional(Json),
  integrations: Type.Optional(Json),
};

export const TrackSchema = Type.Object({
  ...Common,
  type: Type.Optional(Type.Literal('track')),
  event: Type.String({ minLength: 1, maxLength: 200 }),
  properties: Type.Optional(Json),
});

export const IdentifySchema = Type.Object({
  ...Common,
  type: Type.Optional(Type.Literal('identify')),
  traits: Type.Optional(Json),
});

export const GroupSchema = Type.Object({
  ...Common,
  type: Type.Optional(Type.Literal('group')),
  groupId: Id,
  traits: Type.Optional(Json),
});

// `type` is optional: Segment's /v1/page and /v1/screen endpoints do not require it.
export const PageSchema = Type.Object({
  ...Common,
  type: Type.Optional(Type.Union([Type.Literal('page'), Type.Literal('screen')])),
  name: Type.Optional(Type.String({ maxLength: 200 })),
  category: Type.Optional(Type.String({ maxLength: 200 })),
  properties: Type.Optional(Json),
});

export const BatchSchema = Type.Object({
  // Items are checked one by one (a malformed item is rejected alone, not the whole batch).
  batch: Type.Array(Type.Unknown(), { minItems: 1, maxItems: 2500 }),
  context: Type.Optional(Json),
  sentAt: Type.Optional(Type.String()),
});

export type TrackMessage = Static<typeof TrackSchema>;
export type IdentifyMessage = Static<typeof IdentifySchema>;
export type GroupMessage = Static<typeof GroupSchema>;
export type PageMessage = Static<typeof PageSchema>;

export const AcceptedSchema = Type.Object({ success: Type.Boolean(), duplicate: Type.Boolean() });
export const BatchResultSchema = Type.Object({
  success: Type.Boolean(),
  accepted: Type.Integer(),
  duplicates: Type.Integer(),
  rejected: Type.Array(
    Type.Object({
      index: Type.Integer(),
      messageId: Type.Union([Type.String(), Type.Null()]),
      error: Type.String(),
      message: Type.String(),
    }),
  ),
});

/**
 * 400 from /v1/batch: either every item was rejected (the batch result plus error/message), or
 * the request itself was malformed (invalid JSON, no `batch` array: just error/message).
 */
export const BatchErrorSchema = Type.Object({
  error: Type.String({ description: 'stable machine-readable code' }),
  message: Type.String(),
  details: Type.Optional(Type.Unknown()),
  success: Type.Optional(Type.Boolean()),
  accepted: Type.Optional(Type.Integer()),
  duplicates: Type.Optional(Type.Integer()),
  rejected: Type.Optional(BatchResultSchema.properties.rejected),
});

export const checkers = {
  track: Compile(TrackSchema),
  identify: Compile(IdentifySchema),
  group: Compile(GroupSchema),
  page: Compile(PageSchema),
  screen: Compile(PageSchema),
};

/** Segment's per-message limit. */
export const MAX_EVENT_BYTES = 32 * 1024;
/** Segment's per-batch-request limit. */
export const MAX_BATCH_BYTES = 500 * 1024;
