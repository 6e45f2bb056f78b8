// Dashboard authentication: `Authorization: Bearer <LIFELINE_ADMIN_TOKEN>` (scripts, curl), or a
// session cookie set by the login form (browsers). The cookie holds a signed token (the email
// token format of src/email/tokens.ts, with its own kind) carrying an expiry. The signing key is
// derived from the service secret AND the admin token, so rotating LIFELINE_ADMIN_TOKEN signs
// every browser out.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import type { Clock } from '../clock.ts';
import { presentedKey } from '../http/auth.ts';
import { signToken, verifyToken } from '../email/tokens.ts';

export const SESSION_COOKIE = 'lifeline_dashboard';
export const SESSION_KIND = 'dashboard-session';
/** How long a login lasts. */
export const SESSION_TTL_SECONDS = 12 * 3600;
/** The cookie is only sent to the dashboard's own routes. */
export const COOKIE_PATH = '/dashboard';

interface SessionPayload extends Record<string, unknown> {
  /** expiry, unix seconds */
  exp: number;
  /** issued at, unix seconds */
  iat: number;
}

export function sameSecret(given: string, expected: string): boolean {
  // Hash first so that the comparison takes the same time whatever the lengths.
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b) && given.length === expected.length;
}

export function sessionKey(secret: string | undefined, adminToken: string): string {
  return createHash('sha256').update(`lifeline-dashboard\n${secret ?? ''}\n${adminToken}`).digest('base64url');
}

export function issueSession(key: string, clock: Clock): string {
  const now = Math.floor(clock.now().getTime() / 1000);
  return signToken(key, SESSION_KIND, { iat: now, exp: now + SESSION_TTL_SECONDS } satisfies SessionPayload);
}

/** True when the token is ours, untampered and not expired. */
export function validSession(key: string, token: string | undefined, clock: Clock): boolean {
  if (!token) return false;
  const payload = verifyToken<SessionPayload>(key, SESSION_KIND, token);
  if (!payload || typeof payload.exp !== 'number' || typeof payload.iat !== 'number') return false;
  const now = clock.now().getTime() / 1000;
  return payload.exp > now && payload.iat <= now + 300;
}

/** Cookie header → name/value pairs (RFC 6265: `a=b; c=d`; the first occurrence of a name wins). */
export function parseCookies(header: string | undefined): Map<string, string> {
  const out = new Map<string, string>();
  if (!header) return out;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq <= 0) continue;
    const name = part.slice(0, eq).trim();
    let value = part.slice(eq + 1).trim();
    if (value.startsWith('"') && value.endsWith('"') && value.length >= 2) value = value.slice(1, -1);
    if (!out.has(name)) out.set(name, value);
  }
  return out;
}

export function sessionCookie(token: string, secure: boolean): string {
  return `${SESSION_COOKIE}=${token}; Path=${COOKIE_PATH}; Max-Age=${SESSION_TTL_SECONDS}; HttpOnly; SameSite=Strict${secure ? '; Secure' : ''}`;
}

export function clearedCookie(secure: boolean): string {
  return `${SESSION_COOKIE}=; Path=${COOKIE_PATH}; Max-Age=0; HttpOnly; SameSite=Strict${secure ? '; Secure' : ''}`;
}

export type AuthResult = 'bearer' | 'session' | 'bad-bearer' | 'none';

/** How a request is authenticated. A wrong bearer key is reported as such (never falls back to the cookie). */
export function authenticate(request: FastifyRequest, adminToken: string, key: string, clock: Clock): AuthResult {
  if (request.headers.authorization) {
    const presented = presentedKey(request);
    return presented !== undefined && sameSecret(presented, adminToken) ? 'bearer' : 'bad-bearer';
  }
  const token = parseCookies(request.headers.cookie).get(SESSION_COOKIE);
  return validSession(key, token, clock) ? 'session' : 'none';
}
