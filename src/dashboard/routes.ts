// The finance dashboard: server-rendered HTML over the report functions (the numbers of
// GET /v1/reports/recovery and /v1/reports/workflows/:key), with a login form for browsers.
//
//   GET  /dashboard                     the dashboard (?from&to, UTC dates, "to" exclusive; default: last 12 months)
//   GET  /dashboard/login               sign-in form          POST /dashboard/login   token → session cookie
//   POST /dashboard/logout              clears the cookie
//   GET  /dashboard/export/recovery.csv the recovery ledger CSV (same as /v1/reports/recovery?format=csv), cookie-authenticated
//   GET  /dashboard/assets/:file        Chart.js and the page script, from our origin
//
// Auth: `Authorization: Bearer <LIFELINE_ADMIN_TOKEN>`, or the HttpOnly, SameSite=Strict session
// cookie set by the login form (a signed token with an expiry; see session.ts).
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
import { CSP, dashboardPage, defaultRange, loginPage, messagePage } from './page.ts';
import { authenticate, clearedCookie, issueSession, sameSecret, sessionCookie, sessionKey } from './session.ts';

/** Failed logins allowed per client address and window before answering 429. */
const LOGIN_FAILURES_ALLOWED = 10;
const LOGIN_WINDOW_MS = 15 * 60_000;

const hidden = { hide: true } as const;

function html(reply: FastifyReply, status: number, body: string): FastifyReply {
  return reply
    .code(status)
    .type('text/html; charset=utf-8')
    .header('content-security-policy', CSP)
    .header('cache-control', 'no-store')
    .header('x-content-type-options', 'nosniff')
    .header('x-frame-options', 'DENY')
    .header('referrer-policy', 'same-origin')
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
  const adminToken = deps.config.adminToken;
  const key = adminToken ? sessionKey(deps.secret, adminToken) : '';
  const secureCookie = (request: FastifyRequest) => request.protocol === 'https' || deps.config.publicUrl.startsWith('https:');

  // --- static assets (no auth: public library code and our page script) ----------------------
  const byUrl = new Map<string, { asset: (typeof assets.all)[number]; immutable: boolean }>();
  for (const a of assets.all) {
    byUrl.set(a.url, { asset: a, immutable: true });
    byUrl.set(a.plainUrl, { asset: a, immutable: false });
  }
  app.get('/dashboard/assets/:file', { schema: hidden }, async (request, reply) => {
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
    if (!adminToken) {
      html(reply, 503, messagePage('Dashboard disabled', 'Set LIFELINE_ADMIN_TOKEN to enable the dashboard.'));
      return false;
    }
    const auth = authenticate(request, adminToken, key, deps.clock);
    if (auth === 'bearer' || auth === 'session') return true;
    if (auth === 'none' && request.method === 'GET' && wantsHtml(request)) {
      reply.redirect(`/dashboard/login?${new URLSearchParams({ next: request.url }).toString()}`, 303);
      return false;
    }
    reply.header('www-authenticate', 'Bearer realm="lifeline-dashboard"');
    html(reply, 401, messagePage('Sign-in required', auth === 'bad-bearer' ? 'Invalid credentials.' : 'Sign in, or send "Authorization: Bearer <LIFELINE_ADMIN_TOKEN>".'));
    return false;
  }

  /** POSTs must come from our own pages (defence in depth over SameSite=Strict). */
  function sameOrigin(request: FastifyRequest): boolean {
    const origin = request.headers.origin;
    if (!origin) return true;
    try {
      const host = new URL(origin).host;
      return host === request.headers.host || origin === new URL(deps.config.publicUrl).origin;
    } catch {
      return false;
    }
  }

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

  app.get('/dashboard/login', { schema: hidden }, async (request, reply) => {
    const next = safeNext((request.query as Record<string, unknown>).next);
    if (!adminToken) return html(reply, 503, loginPage({ next, disabled: true, error: 'The dashboard is disabled: set LIFELINE_ADMIN_TOKEN to enable it.' }));
    const auth = authenticate(request, adminToken, key, deps.clock);
    if (auth === 'session' || auth === 'bearer') return reply.redirect(next, 303);
    return html(reply, 200, loginPage({ next }));
  });

  app.post('/dashboard/login', { schema: hidden }, async (request, reply) => {
    const body = (request.body ?? {}) as Record<string, unknown>;
    const next = safeNext(body.next);
    if (!adminToken) return html(reply, 503, loginPage({ next, disabled: true, error: 'The dashboard is disabled: set LIFELINE_ADMIN_TOKEN to enable it.' }));
    if (!sameOrigin(request)) return html(reply, 403, messagePage('Forbidden', 'Cross-site sign-in refused.'));
    if (tooManyFailures(request.ip)) {
      return html(reply.header('retry-after', String(LOGIN_WINDOW_MS / 1000)), 429, loginPage({ next, error: 'Too many failed attempts. Try again later.' }));
    }
    const token = typeof body.token === 'string' ? body.token.trim() : '';
    if (!token || !sameSecret(token, adminToken)) {
      noteFailure(request.ip);
      request.log.warn({ ip: request.ip }, 'dashboard login failed');
      return html(reply, 401, loginPage({ next, error: 'That token is not correct.' }));
    }
    failures.delete(request.ip);
    request.log.info({ ip: request.ip }, 'dashboard login');
    return reply.header('set-cookie', sessionCookie(issueSession(key, deps.clock), secureCookie(request))).header('cache-control', 'no-store').redirect(next, 303);
  });

  app.post('/dashboard/logout', { schema: hidden }, async (request, reply) => {
    if (!sameOrigin(request)) return html(reply, 403, messagePage('Forbidden', 'Cross-site sign-out refused.'));
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
  app.get('/dashboard', { schema: hidden }, dashboard);
  app.get('/dashboard/', { schema: hidden }, dashboard);

  // --- CSV export (the ledger, as /v1/reports/recovery?format=csv, for the session cookie) ----
  app.get('/dashboard/export/recovery.csv', { schema: hidden }, async (request, reply) => {
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
