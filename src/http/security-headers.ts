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

/**
 * The API docs (@fastify/swagger-ui under /docs) are a page too. The plugin's own CSP lists the
 * hashes of Swagger UI's inline script and style; kept, but without `upgrade-insecure-requests`
 * (on a plain-http instance such as localhost it sent the page's own assets to https) and with
 * no framing at all. The headers helmet gives our other pages are set by a hook.
 */
// The one <style> element swagger-ui-bundle.js inserts at start-up, allowed by its hash (not by
// 'unsafe-inline'); test/e2e/docs.e2e.ts fails on any violation, e.g. after an upgrade changes it.
const SWAGGER_UI_INLINE_STYLE = "'sha256-RL3ie0nH+Lzz2YNqQN83mnU0J1ot4QL7b99vMdIX99w='";

export const docsSecurityHeaders = {
  staticCSP: true,
  transformStaticCSP: (header: string) =>
    header
      .replace(/\s*upgrade-insecure-requests;?/, '')
      .replace(/frame-ancestors [^;]*;/, "frame-ancestors 'none';")
      .replace(/style-src ([^;]*);/, (_all, sources: string) => `style-src ${sources.trim()} ${SWAGGER_UI_INLINE_STYLE};`)
      .trim(),
  uiHooks: {
    onRequest: (_request: unknown, reply: { header(name: string, value: string): unknown }, done: () => void) => {
      reply.header('x-content-type-options', 'nosniff');
      reply.header('x-frame-options', 'DENY');
      reply.header('referrer-policy', 'no-referrer');
      reply.header('cross-origin-opener-policy', 'same-origin');
      reply.header('cross-origin-resource-policy', 'same-origin');
      done();
    },
  },
};
