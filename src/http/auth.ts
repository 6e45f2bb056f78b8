import { timingSafeEqual } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { HttpError } from './errors.ts';

function same(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
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

/** Throws the right 401/503 unless the request carries `expected`. */
export function requireKey(request: FastifyRequest, expected: string | undefined, envName: string, what: string): void {
  if (!expected) {
    throw new HttpError(503, 'not_configured', `${what} is disabled: set ${envName} to enable it`);
  }
  const key = presentedKey(request);
  if (!key) {
    throw new HttpError(401, 'unauthorized', `Missing credentials: send "Authorization: Bearer <${envName}>"`);
  }
  if (!same(key, expected)) {
    throw new HttpError(401, 'unauthorized', 'Invalid credentials');
  }
}
