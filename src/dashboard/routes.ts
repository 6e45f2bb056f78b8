// The finance dashboard: server-rendered HTML over the report functions (the numbers of
// GET /v1/reports/recovery and /v1/reports/workflows/:key), with a login form for browsers.
//
//   GET  /dashboard                     the dashboard (?from&to, UTC dates, "to" exclusive; default: last 12 months)
//   GET  /dashboard/login               sign-in form          POST /dashboard/login   token → session cookie
//   POST /dashboard/logout              clears the cookie
//   GET  /dashboard/export/recovery.csv the recovery ledger CSV (same as /v1/reports/recovery?format=csv), cookie-authenticated
//   GET  /dashboard/assets/:file        Chart.js and the page script, from our origin
//
// Auth: `Authorization: Bearer <admin token>` (any of LIFELINE_ADMIN_TOKENS), or the HttpOnly,
// SameSite=Strict session cookie set by the login form (an opaque token with an expiry; see
// session.ts). POSTs from another site are refused (src/http/csrf.ts).
import { Readable } from 'node:stream';
import formbody from '@fastify/formbody';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { AppDeps } from '../app-deps.ts';
import { HttpError } from '../http/errors.ts';
import { parseCurrency, parseRange } from '../reports/params.ts';
import { refreshRecoveryCases } from '../reports/recovery-cases.ts';
import { recoveryLedgerCsv } from '../reports/recovery-report.ts';
import { loadAssets } from './assets.ts';
import { loadDashboard } from './data.ts';
import { DASHBOARD_PAGE_HEADERS, dashboardPage, defaultRange, loginPage, messagePage } from './page.ts';
import { matchKey, tokenId } from '../http/auth.ts';
import { crossSiteRefusal } from '../http/csrf.ts';
import { ownScriptHeaders } from '../http/security-headers.ts';
import { authenticate, clearedCookie, issueSession, sessionCookie, sessionKey, sessionKeys } from './session.ts';

/** Failed logins allowed per client address and window before answering 429. */
const LOGIN_FAILURES_ALLOWED = 10;
const LOGIN_WINDOW_MS = 15 * 60_000;

const hidden = { hide: true } as const;
// Every dashboard route: hidden from the API docs, with the page's security headers (CSP etc.).
const page = { schema: hidden, helmet: DASHBOARD_PAGE_HEADERS };

function html(reply: FastifyReply, status: number, body: string): FastifyReply {
  return reply
    .code(status)
    .type('text/html; charset=utf-8')
    .header('cache-control', 'no-store')
    .send(body);
}

/** A `next` target after login: only a dashboard path of ours. */
function safeNext(value: unknown): string {
  if (typeof value !== 'string' || value.length > 2048) return '/dashboard';
  if (!/^\/dashboard(?:[/?#]|$)/.test(value) || value.includes('//') || value.includes('\\') || /(^|\/)\.\.?(\/|$|\?|#)/.test(value) || /%2e/i.test(value)) return '/dashboard';
  return value;
}

function wantsHtml(request: FastifyRequest): boolean {
  return /text\/html/i.test(request.headers.accept ?? '');
}

export async function dashboardRoutes(app: FastifyInstance, deps: AppDeps): Promise<void> {
  await app.register(formbody);
  const assets = loadAssets();
  // Every admin token signs in (rotation); each has its own session key (session.ts).
  const adminTokens = deps.config.adminTokens;
  const enabled = adminTokens.length > 0;
  const keys = sessionKeys(deps.secret, adminTokens);
  const secureCookie = (request: FastifyRequest) => request.protocol === 'https' || deps.config.publicUrl.startsWith('https:');

  // --- static assets (no auth: public library code and our page script) ----------------------
  const byUrl = new Map<string, { asset: (typeof assets.all)[number]; immutable: boolean }>();
  for (const a of assets.all) {
    byUrl.set(a.url, { asset: a, immutable: true });
    byUrl.set(a.plainUrl, { asset: a, immutable: false });
  }
  app.get('/dashboard/assets/:file', { schema: hidden, helmet: ownScriptHeaders }, async (request, reply) => {
    const found = byUrl.get(`/dashboard/assets/${(request.params as { file: string }).file}`);
    if (!found) return reply.code(404).type('text/plain; charset=utf-8').send('Not found');
    const { asset, immutable } = found;
    reply
      .type(asset.contentType)
      .header('cache-control', immutable ? 'public, max-age=31536000, immutable' : 'public, max-age=300')
      .header('etag', asset.etag)
      .header('x-content-type-options', 'nosniff');
    if (request.headers['if-none-match'] === asset.etag) return reply.code(304).send();
    return reply.send(asset.body);
  });

  // --- authentication ------------------------------------------------------------------------
  /** Answers the request (503 / 401 / redirect) unless it is authenticated; returns whether it may go on. */
  function guard(request: FastifyRequest, reply: FastifyReply): boolean {
    if (!enabled) {
      html(reply, 503, messagePage('Dashboard disabled', 'Set LIFELINE_ADMIN_TOKEN to enable the dashboard.'));
      return false;
    }
    const auth = authenticate(request, adminTokens, keys, deps.clock);
    if (auth.kind === 'bearer' || auth.kind === 'session') {
      request.adminTokenId = auth.tokenId;
      return true;
    }
    if (auth.kind === 'none' && request.method === 'GET' && wantsHtml(request)) {
      reply.redirect(`/dashboard/login?${new URLSearchParams({ next: request.url }).toString()}`, 303);
      return false;
    }
    reply.header('www-authenticate', 'Bearer realm="lifeline-dashboard"');
    html(reply, 401, messagePage('Sign-in required', auth.kind === 'bad-bearer' ? 'Invalid credentials.' : 'Sign in, or send "Authorization: Bearer <LIFELINE_ADMIN_TOKEN>".'));
    return false;
  }

  // Every state-changing request of the dashboard (sign-in, sign-out, any later action) must come
  // from our own pages: 403, HTML for a form post, JSON for anything else (src/http/csrf.ts).
  app.addHook('onRequest', async (request, reply) => {
    const refusal = crossSiteRefusal(request, deps.config.publicUrl);
    if (refusal === null) return;
    request.log.warn({ reason: refusal }, 'cross-site dashboard request refused');
    if (wantsHtml(request)) return html(reply, 403, messagePage('Forbidden', 'This request came from another site and was refused. Use the dashboard itself.'));
    return reply.code(403).send({ error: 'cross_site_request', message: `Refused: ${refusal} (state changes must come from the dashboard's own pages)` });
  });

  const failures = new Map<string, { n: number; until: number }>();
  function tooManyFailures(ip: string): boolean {
    const f = failures.get(ip);
    return !!f && f.until > deps.clock.now().getTime() && f.n >= LOGIN_FAILURES_ALLOWED;
  }
  function noteFailure(ip: string): void {
    const now = deps.clock.now().getTime();
    if (failures.size > 10_000) failures.clear();
    const f = failures.get(ip);
    if (!f || f.until <= now) failures.set(ip, { n: 1, until: now + LOGIN_WINDOW_MS });
    else f.n++;
  }

  app.get('/dashboard/login', page, async (request, reply) => {
    const next = safeNext((request.query as Record<string, unknown>).next);
    if (!enabled) return html(reply, 503, loginPage({ next, disabled: true, error: 'The dashboard is disabled: set LIFELINE_ADMIN_TOKEN to enable it.' }));
    const auth = authenticate(request, adminTokens, keys, deps.clock);
    if (auth.kind === 'session' || auth.kind === 'bearer') return reply.redirect(next, 303);
    return html(reply, 200, loginPage({ next }));
  });

  app.post('/dashboard/login', page, async (request, reply) => {
    const body = (request.body ?? {}) as Record<string, unknown>;
    const next = safeNext(body.next);
    if (!enabled) return html(reply, 503, loginPage({ next, disabled: true, error: 'The dashboard is disabled: set LIFELINE_ADMIN_TOKEN to enable it.' }));
    if (tooManyFailures(request.ip)) {
      return html(reply.header('retry-after', String(LOGIN_WINDOW_MS / 1000)), 429, loginPage({ next, error: 'Too many failed attempts. Try again later.' }));
    }
    const token = typeof body.token === 'string' ? body.token.trim() : '';
    const matched = token ? matchKey(token, adminTokens) : undefined;
    if (matched === undefined) {
      noteFailure(request.ip);
      request.log.warn({ ip: request.ip }, 'dashboard login failed');
      return html(reply, 401, loginPage({ next, error: 'That token is not correct.' }));
    }
    failures.delete(request.ip);
    request.log.info({ ip: request.ip, adminTokenId: tokenId(matched) }, 'dashboard login');
    // Sealed with the key of the token that signed in: the session ends when that token is removed.
    return reply.header('set-cookie', sessionCookie(issueSession(sessionKey(deps.secret, matched), deps.clock), secureCookie(request))).header('cache-control', 'no-store').redirect(next, 303);
  });

  app.post('/dashboard/logout', page, async (request, reply) => {
    return reply.header('set-cookie', clearedCookie(secureCookie(request))).header('cache-control', 'no-store').redirect('/dashboard/login', 303);
  });

  // --- the dashboard -------------------------------------------------------------------------
  const dashboard = async (request: FastifyRequest, reply: FastifyReply) => {
    if (!guard(request, reply)) return reply;
    const query = (request.query ?? {}) as Record<string, unknown>;
    const defaults = defaultRange(deps.clock.now());
    const fromText = query.from === undefined || query.from === '' ? defaults.from : query.from;
    const toText = query.to === undefined || query.to === '' ? defaults.to : query.to;
    let range;
    try {
      range = parseRange({ from: fromText, to: toText });
    } catch (err) {
      if (!(err instanceof HttpError)) throw err;
      const shown = (v: unknown) => (typeof v === 'string' ? v : '');
      return html(reply, 400, dashboardPage({ data: null, from: shown(fromText), to: shown(toText), quick: defaults.quick, error: err.message }, assets));
    }
    const data = await loadDashboard(deps.sql, range);
    return html(reply, 200, dashboardPage({ data, from: range.fromText, to: range.toText, quick: defaults.quick }, assets));
  };
  app.get('/dashboard', page, dashboard);
  app.get('/dashboard/', page, dashboard);

  // --- CSV export (the ledger, as /v1/reports/recovery?format=csv, for the session cookie) ----
  app.get('/dashboard/export/recovery.csv', page, async (request, reply) => {
    if (!guard(request, reply)) return reply;
    const query = (request.query ?? {}) as Record<string, unknown>;
    let range;
    let currency;
    try {
      range = parseRange(query);
      currency = parseCurrency(query.currency);
    } catch (err) {
      if (!(err instanceof HttpError)) throw err;
      return html(reply, 400, messagePage('Bad request', err.message));
    }
    await refreshRecoveryCases(deps.sql);
    const name = `recovery-ledger_${range.fromText}_${range.toText}${currency ? `_${currency}` : ''}.csv`;
    return reply
      .header('content-type', 'text/csv; charset=utf-8')
      .header('content-disposition', `attachment; filename="${name}"`)
      .header('cache-control', 'no-store')
      .header('x-content-type-options', 'nosniff')
      .send(Readable.from(recoveryLedgerCsv(deps.sql, { from: range.from, to: range.to, currency })));
  });
}
