// Dashboard authentication: `Authorization: Bearer <admin token>` (scripts, curl), or a session
// cookie set by the login form (browsers). Any admin token works (LIFELINE_ADMIN_TOKENS, for
// rotation). The cookie holds an opaque token (src/email/tokens.ts, its own kind) carrying an
// expiry, sealed with a key derived from the service secret AND the admin token that signed in.
// So a rotation keeps the sessions of the tokens still configured, and ends those of a removed
// token (its key is gone): removing a leaked token signs its browsers out.
import { createHash } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import type { Clock } from '../clock.ts';
import { matchKey, presentedKey, tokenId } from '../http/auth.ts';
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

/** One admin token's session key, and the token's id (what the audit log names). */
export interface SessionKey {
  tokenId: string;
  key: string;
}

export function sessionKey(secret: string | undefined, adminToken: string): string {
  return createHash('sha256').update(`lifeline-dashboard\n${secret ?? ''}\n${adminToken}`).digest('base64url');
}

/** The session keys of every configured admin token. */
export function sessionKeys(secret: string | undefined, adminTokens: readonly string[]): SessionKey[] {
  return adminTokens.filter((t) => t !== '').map((t) => ({ tokenId: tokenId(t), key: sessionKey(secret, t) }));
}

export function issueSession(key: string, clock: Clock): string {
  const now = Math.floor(clock.now().getTime() / 1000);
  return signToken(key, SESSION_KIND, { iat: now, exp: now + SESSION_TTL_SECONDS } satisfies SessionPayload);
}

/** The id of the admin token whose session this is, when the token is ours, untampered and not expired. */
export function validSession(keys: readonly SessionKey[], token: string | undefined, clock: Clock): string | undefined {
  if (!token) return undefined;
  const now = clock.now().getTime() / 1000;
  for (const { tokenId: id, key } of keys) {
    // A key that did not seal it fails GCM's tag check: no payload, try the next.
    const payload = verifyToken<SessionPayload>(key, SESSION_KIND, token);
    if (!payload || typeof payload.exp !== 'number' || typeof payload.iat !== 'number') continue;
    return payload.exp > now && payload.iat <= now + 300 ? id : undefined;
  }
  return undefined;
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

export type AuthResult = { kind: 'bearer' | 'session'; tokenId: string } | { kind: 'bad-bearer' | 'none' };

/**
 * How a request is authenticated. A wrong bearer key is reported as such (never falls back to
 * the cookie). Any configured admin token is accepted, compared as digests in constant time.
 */
export function authenticate(request: FastifyRequest, adminTokens: readonly string[], keys: readonly SessionKey[], clock: Clock): AuthResult {
  if (request.headers.authorization) {
    const presented = presentedKey(request);
    const matched = presented === undefined ? undefined : matchKey(presented, adminTokens);
    return matched === undefined ? { kind: 'bad-bearer' } : { kind: 'bearer', tokenId: tokenId(matched) };
  }
  const id = validSession(keys, parseCookies(request.headers.cookie).get(SESSION_COOKIE), clock);
  return id === undefined ? { kind: 'none' } : { kind: 'session', tokenId: id };
}
