// Security headers (@fastify/helmet) for the HTML pages and the scripts we serve; the JSON API
// gets none (a CSP means nothing to a JSON client, and CORS-enabled API answers must stay plain).
//
// Registered once, not globally: each page route names its options (`helmet: …` on the route).
// Every page gets a CSP that allows nothing it does not use (`default-src 'none'`, styles by
// hash, scripts only from our origin, forms only to our origin, no framing), plus nosniff,
// frame denial, COOP/CORP and, when PUBLIC_URL is https, HSTS (never on plain http: a
// development instance on localhost must not pin https on other local ports).
import helmet from '@fastify/helmet';
import type { FastifyInstance } from 'fastify';
import type { FastifyHelmetOptions } from '@fastify/helmet';

type RouteHelmet = Omit<FastifyHelmetOptions, 'global'>;

export async function installSecurityHeaders(app: FastifyInstance, publicUrl: string): Promise<void> {
  await app.register(helmet, {
    global: false,
    // One year, this host only (no includeSubDomains: PUBLIC_URL's parent domain is not ours).
    hsts: publicUrl.startsWith('https:') ? { maxAge: 31_536_000, includeSubDomains: false } : false,
    frameguard: { action: 'deny' },
    // Public pages carry a token in their URL: never send it on to a linked site (the invoice page).
    referrerPolicy: { policy: 'no-referrer' },
  });
}

/** A strict CSP for a server-rendered page: its own inline <style> blocks by hash, nothing inline else. */
export function pageHeaders(options: { styleHashes: string[]; scripts?: boolean; referrer?: 'no-referrer' | 'same-origin' }): RouteHelmet {
  return {
    contentSecurityPolicy: {
      useDefaults: false,
      directives: {
        defaultSrc: ["'none'"],
        scriptSrc: options.scripts ? ["'self'"] : ["'none'"],
        styleSrc: options.styleHashes,
        imgSrc: ["'self'", 'data:'],
        connectSrc: options.scripts ? ["'self'"] : ["'none'"],
        formAction: ["'self'"],
        frameAncestors: ["'none'"],
        baseUri: ["'none'"],
      },
    },
    ...(options.referrer ? { referrerPolicy: { policy: options.referrer } } : {}),
  };
}

/** Our own scripts (the dashboard's): same-origin only. */
export const ownScriptHeaders: RouteHelmet = { contentSecurityPolicy: false, crossOriginResourcePolicy: { policy: 'same-origin' } };

/**
 * The embeddable billing notice (`<script src>` on customers' apps, another origin): CORP must
 * let other origins load it, and a page CSP means nothing on a script.
 */
export const embedScriptHeaders: RouteHelmet = { contentSecurityPolicy: false, crossOriginResourcePolicy: { policy: 'cross-origin' }, crossOriginOpenerPolicy: false };
