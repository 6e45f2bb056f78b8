// Cross-site request refusal for cookie-authenticated state changes (the dashboard's forms).
// The session cookie is SameSite=Strict already, so a cross-site POST arrives without it; this is
// the second lock, for browsers or set-ups where SameSite does not hold (an old browser, a
// sibling subdomain counted as "same site"). Browsers label every request: Sec-Fetch-Site
// (Chromium, Firefox, Safari since 2023) and Origin on every POST; a request is refused when
// either names another origin. A request with neither comes from a non-browser client (curl, a
// script with the bearer token), which a forged page cannot make a browser send.
//
// Not for routes authenticated by a token in the URL or header: RFC 8058 one-click unsubscribe is
// POSTed by mail providers (no Origin) and by webmail pages (another origin) on purpose.
import type { FastifyRequest } from 'fastify';

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

function originOf(value: string): string | null {
  try {
    const url = new URL(value);
    return url.protocol === 'http:' || url.protocol === 'https:' ? url.origin : null;
  } catch {
    return null;
  }
}

/**
 * Why this request is refused as cross-site, or null when it may go on. Our own origin is the
 * request's (protocol and Host, as Fastify sees them: behind a proxy see TRUST_PROXY) or
 * PUBLIC_URL's.
 */
export function crossSiteRefusal(request: FastifyRequest, publicUrl: string): string | null {
  if (SAFE_METHODS.has(request.method)) return null;
  const site = request.headers['sec-fetch-site'];
  // 'none': typed or bookmarked navigation (never a form POST); 'same-site' is refused, since a
  // sibling subdomain may be someone else's.
  if (typeof site === 'string' && site !== 'same-origin' && site !== 'none') return `Sec-Fetch-Site: ${site}`;
  const origin = request.headers.origin;
  if (origin === undefined) return null;
  const given = typeof origin === 'string' ? originOf(origin) : null;
  if (given === null) return 'an opaque or malformed Origin';
  const own = new Set([originOf(`${request.protocol}://${request.host}`), originOf(publicUrl)]);
  return own.has(given) ? null : 'a foreign Origin';
}
