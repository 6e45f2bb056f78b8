// What a verified Stripe payload must be before it is stored, and how its JSON is made
// acceptable to PostgreSQL's jsonb (found by fuzzing, issue 11).
import type { StripeEnvelope } from './event-inbox.ts';

// Stripe timestamps are Unix seconds; anything outside 1970..9999 cannot be a real event and
// overflows to_timestamp()/timestamptz.
const MAX_CREATED = 253_402_300_799;

/** Why `event` cannot be stored as a Stripe event, or null when it can. */
export function stripeEnvelopeProblem(event: unknown): string | null {
  if (typeof event !== 'object' || event === null || Array.isArray(event)) return 'not a JSON object';
  const e = event as Partial<StripeEnvelope> & Record<string, unknown>;
  if (typeof e.id !== 'string' || e.id === '' || e.id.length > 255) return 'id must be a non-empty string';
  if (typeof e.type !== 'string' || e.type === '' || e.type.length > 255) return 'type must be a non-empty string';
  if (typeof e.created !== 'number' || !Number.isInteger(e.created) || e.created < 0 || e.created > MAX_CREATED) {
    return 'created must be Unix seconds';
  }
  if (typeof e.livemode !== 'boolean') return 'livemode must be a boolean';
  const data = e.data as unknown;
  if (typeof data !== 'object' || data === null || Array.isArray(data)) return 'data must be an object';
  const object = (data as { object?: unknown }).object;
  if (typeof object !== 'object' || object === null || Array.isArray(object)) return 'data.object must be an object';
  const objectId = (object as { id?: unknown }).id;
  if (objectId !== undefined && objectId !== null && typeof objectId !== 'string') return 'data.object.id must be a string';
  if (e.api_version !== undefined && e.api_version !== null && typeof e.api_version !== 'string') return 'api_version must be a string';
  for (const text of [e.id, e.type, typeof objectId === 'string' ? objectId : '']) {
    // These go to text columns, where NUL is refused: an id with NUL is not Stripe's.
    if (text.includes('\u0000') || !text.isWellFormed()) return 'ids must not contain NUL or lone surrogates';
  }
  return null;
}

/**
 * The verified body as jsonb accepts it. A real event can carry `\u0000` in customer-provided
 * strings (metadata, names) and, in principle, an escaped lone surrogate; jsonb refuses both
 * (22P05 / 22P02), which made such events 503 forever. Those characters (in keys and values)
 * become U+FFFD; nothing else changes (jsonb does not keep the body's formatting anyway).
 * Bodies without any `\u` escape are returned untouched (the common case, no re-parse).
 */
export function jsonForJsonb(raw: string): string {
  if (!raw.includes('\\u')) return raw;
  return JSON.stringify(JSON.parse(raw), (_key, value: unknown) => {
    if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
      let clean: Record<string, unknown> | null = null;
      for (const key of Object.keys(value)) {
        if (key.includes('\u0000') || !key.isWellFormed()) {
          clean ??= { ...(value as Record<string, unknown>) };
          delete clean[key];
          clean[textForPostgres(key)] = (value as Record<string, unknown>)[key];
        }
      }
      return clean ?? value;
    }
    return typeof value === 'string' ? textForPostgres(value) : value;
  });
}

/** `text` with NUL and lone surrogates replaced by U+FFFD (PostgreSQL text refuses both). */
export function textForPostgres(text: string): string {
  return text.replaceAll('\u0000', '\ufffd').toWellFormed();
}
