// Signed, unforgeable tokens for links in emails (unsubscribe, click tracking):
// base64url(JSON payload) + "." + base64url(HMAC-SHA256(secret, kind + "." + payload)).
// The kind is part of the MAC, so a click token can never be replayed as an unsubscribe token.
import { createHmac, timingSafeEqual } from 'node:crypto';

function mac(secret: string, kind: string, body: string): string {
  return createHmac('sha256', secret).update(`${kind}.${body}`).digest('base64url');
}

export function signToken(secret: string, kind: string, payload: Record<string, unknown>): string {
  const body = Buffer.from(JSON.stringify(payload)).toString('base64url');
  return `${body}.${mac(secret, kind, body)}`;
}

/** The payload, or null when the token is malformed, tampered with, or of another kind. */
export function verifyToken<T extends Record<string, unknown>>(secret: string, kind: string, token: string): T | null {
  const dot = token.indexOf('.');
  if (dot <= 0 || dot !== token.lastIndexOf('.') || token.length > 4096) return null;
  const body = token.slice(0, dot);
  const given = Buffer.from(token.slice(dot + 1), 'base64url');
  const expected = Buffer.from(mac(secret, kind, body), 'base64url');
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null;
  try {
    const payload = JSON.parse(Buffer.from(body, 'base64url').toString('utf8')) as unknown;
    return payload && typeof payload === 'object' && !Array.isArray(payload) ? (payload as T) : null;
  } catch {
    return null;
  }
}
