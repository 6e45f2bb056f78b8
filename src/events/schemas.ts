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

export const PageSchema = Type.Object({
  ...Common,
  type: Type.Union([Type.Literal('page'), Type.Literal('screen')]),
  name: Type.Optional(Type.String({ maxLength: 200 })),
  properties: Type.Optional(Json),
});

export const BatchSchema = Type.Object({
  batch: Type.Array(Type.Record(Type.String(), Type.Unknown()), { minItems: 1, maxItems: 2500 }),
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
