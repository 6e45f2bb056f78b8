// The small HTML pages the public links answer with (unsubscribe, update-card fallback): one
// look, escaped titles, never cached.
import { createHash } from 'node:crypto';
import type { FastifyReply } from 'fastify';
import { pageHeaders } from './security-headers.ts';

export const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

const STYLE =
  `body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;color:#1f2937}` +
  `button,a.button{display:inline-block;font-size:1rem;padding:.6rem 1.2rem;border-radius:.4rem;border:0;background:#4f46e5;color:#fff;cursor:pointer;text-decoration:none}`;

/**
 * The headers of every route that answers with simplePage (`helmet: SIMPLE_PAGE_HEADERS` on the
 * route): no script at all, this one style block by its hash, forms only to our origin.
 */
export const SIMPLE_PAGE_HEADERS = pageHeaders({ styleHashes: [`'sha256-${createHash('sha256').update(STYLE).digest('base64')}'`] });

export function simplePage(reply: FastifyReply, status: number, title: string, body: string) {
  return reply
    .code(status)
    .type('text/html; charset=utf-8')
    .header('cache-control', 'no-store')
    .send(
      `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><meta name="robots" content="noindex"><title>${escapeHtml(title)}</title>` +
        `<style>${STYLE}</style>` +
        `</head><body><h1>${escapeHtml(title)}</h1>${body}</body></html>`,
    );
}
