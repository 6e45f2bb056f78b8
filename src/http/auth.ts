import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { HttpError } from './errors.ts';

// Hash both sides, then compare the fixed-length digests in constant time: comparing lengths
// first (as before) told an attacker the key's length by timing.
function digest(value: string): Buffer {
  return createHash('sha256').update(value, 'utf8').digest();
}

function same(presented: Buffer, expected: string): boolean {
  return timingSafeEqual(presented, digest(expected));
}

/** What the audit log records as the actor: the first 12 hex chars of sha256(token), never the token. */
export function tokenId(token: string): string {
  return digest(token).toString('hex').slice(0, 12);
}

declare module 'fastify' {
  interface FastifyRequest {
    /** set when an admin token authenticated the request (see tokenId) */
    adminTokenId?: string;
  }
}

/**
 * The candidate equal to `presented`, or undefined. Every candidate is compared (as SHA-256
 * digests, in constant time), so the time depends neither on which one matched nor on lengths.
 */
export function matchKey(presented: string, candidates: readonly string[]): string | undefined {
  const given = digest(presented);
  let matched: string | undefined;
  for (const candidate of candidates) {
    if (candidate !== '' && same(given, candidate) && matched === undefined) matched = candidate;
  }
  return matched;
}

/** The credential a request presents: `Bearer <key>` or HTTP Basic with the key as user name. */
export function presentedKey(request: FastifyRequest): string | undefined {
  const header = request.headers.authorization;
  if (!header) return undefined;
  const [scheme, value] = header.split(' ', 2);
  if (!scheme || !value) return undefined;
  if (scheme.toLowerCase() === 'bearer') return value.trim();
  if (scheme.toLowerCase() === 'basic') {
    // Segment's write-key style: base64("<writeKey>:") — the key is the user name.
    const decoded = Buffer.from(value, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    return colon === -1 ? decoded : decoded.slice(0, colon);
  }
  return undefined;
}

/**
 * Throws the right 401/503 unless the request carries one of `expected` (several admin tokens
 * are accepted during a rotation). Every candidate is compared, so the time does not depend on
 * which one matched. For LIFELINE_ADMIN_TOKEN, sets `request.adminTokenId`.
 */
export function requireKey(request: FastifyRequest, expected: string | readonly string[] | undefined, envName: string, what: string): void {
  const candidates = (typeof expected === 'string' ? [expected] : (expected ?? [])).filter((k) => k !== '');
  if (candidates.length === 0) {
    throw new HttpError(503, 'not_configured', `${what} is disabled: set ${envName} to enable it`);
  }
  const key = presentedKey(request);
  if (!key) {
    throw new HttpError(401, 'unauthorized', `Missing credentials: send "Authorization: Bearer <${envName}>"`);
  }
  if (matchKey(key, candidates) === undefined) {
    throw new HttpError(401, 'unauthorized', 'Invalid credentials');
  }
  if (envName === 'LIFELINE_ADMIN_TOKEN') request.adminTokenId = tokenId(key);
}
