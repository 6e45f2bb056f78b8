// Credentials (issue 11): admin token rotation, hashed constant-time comparison, the token id
// the audit log records, and a walk of the route table: every route is authenticated or
// listed here as public on purpose.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { build, ADMIN_TOKEN, WRITE_KEY } from './helpers/build.ts';
import { tokenId } from '../src/http/auth.ts';

const NEW_TOKEN = 'admin_rotated_token_2';

test('admin tokens rotate: LIFELINE_ADMIN_TOKEN and every LIFELINE_ADMIN_TOKENS entry work, others do not; the token id is sha256[:12]', async (t) => {
  const svc = await build(t, { env: { LIFELINE_ADMIN_TOKENS: ` ${NEW_TOKEN} ,other_token_3` } });
  assert.deepEqual(svc.config.adminTokens, [ADMIN_TOKEN, NEW_TOKEN, 'other_token_3']);
  const seen: Array<string | undefined> = [];
  svc.app.addHook('onResponse', async (request) => { seen.push(request.adminTokenId); });
  for (const token of [ADMIN_TOKEN, NEW_TOKEN, 'other_token_3']) {
    const res = await svc.app.inject({ method: 'GET', url: '/v1/workflows', headers: { authorization: `Bearer ${token}` } });
    assert.equal(res.statusCode, 200, res.body);
  }
  for (const token of [`${ADMIN_TOKEN}x`, ADMIN_TOKEN.slice(0, -1), WRITE_KEY, '', 'a'.repeat(4096)]) {
    const res = await svc.app.inject({ method: 'GET', url: '/v1/workflows', headers: { authorization: `Bearer ${token}` } });
    assert.equal(res.statusCode, 401, `token ${JSON.stringify(token.slice(0, 20))}`);
  }
  assert.equal(tokenId(NEW_TOKEN), createHash('sha256').update(NEW_TOKEN).digest('hex').slice(0, 12));
  assert.deepEqual(seen.slice(0, 3), [tokenId(ADMIN_TOKEN), tokenId(NEW_TOKEN), tokenId('other_token_3')]);
  assert.equal(seen[3], undefined, 'a rejected request has no token id');
});

test('only LIFELINE_ADMIN_TOKENS (no single token) is enough', async (t) => {
  const svc = await build(t, { env: { LIFELINE_ADMIN_TOKEN: undefined, LIFELINE_ADMIN_TOKENS: NEW_TOKEN } });
  const res = await svc.app.inject({ method: 'GET', url: '/v1/workflows', headers: { authorization: `Bearer ${NEW_TOKEN}` } });
  assert.equal(res.statusCode, 200);
});

// Public on purpose, each with its reason. Anything else must answer 401 without credentials.
const PUBLIC = new Map<string, string>([
  ['GET /healthz', 'liveness probe'],
  ['GET /readyz', 'readiness probe'],
  ['POST /webhooks/stripe', 'Stripe signature'],
  ['POST /webhooks/resend', 'Svix signature'],
  ['GET /unsubscribe/:token', 'signed token in an email link'],
  ['POST /unsubscribe/:token', 'signed token (one-click unsubscribe)'],
  ['GET /r/:token', 'signed click-tracking token'],
  ['GET /billing/update/:token', 'signed update-card token'],
  ['GET /dashboard', 'login form or session cookie'],
  ['GET /dashboard/', 'login form or session cookie'],
  ['GET /dashboard/login', 'login form'],
  ['POST /dashboard/login', 'the login itself (throttled)'],
  ['POST /dashboard/logout', 'clears the cookie'],
  ['GET /dashboard/assets/:file', 'static script/style'],
  ['GET /embed/billing-notice.js', 'static script for customer apps'],
  ['GET /v1/billing-status', 'signed customer token'],
]);

const LATE_AUTH = new Set(['POST /v1/billing-status/token']);

test('route table: every route is authenticated (401 without credentials) or public on purpose', async (t) => {
  const svc = await build(t);
  // printRoutes draws a radix tree ("│   └── /:key (GET, PUT)"): a node's path is its
  // ancestors' segments joined; the indent (4 columns per level) gives the depth.
  const routes: string[] = [];
  const stack: string[] = [];
  for (const line of svc.app.printRoutes({ commonPrefix: false }).split('\n')) {
    const m = /^([│├└─ ]*?)(?:[├└]── )(.*?)(?: \(([A-Z, ]+)\))?$/.exec(line);
    if (!m) continue;
    const depth = m[1]!.length / 4;
    stack.length = depth;
    stack[depth] = m[2]!;
    if (!m[3]) continue;
    for (const method of m[3].split(', ')) if (method !== 'HEAD' && method !== 'OPTIONS') routes.push(`${method} ${stack.join('')}`);
  }
  assert.ok(routes.length > 20, `parsed the route table (${routes.length} routes)`);
  const open: string[] = [];
  for (const route of routes) {
    if (PUBLIC.has(route) || route.includes(' /docs')) continue;
    const [method, path] = route.split(' ') as [string, string];
    const url = path.replace(/:[A-Za-z_]+/g, 'x1').replace(/\*$/, 'x');
    const res = await svc.app.inject({ method: method as 'GET', url, headers: { 'content-type': 'application/json' }, payload: method === 'GET' || method === 'DELETE' ? undefined : '{}' });
    // Authenticated in the handler, after body validation: a bad body is a 400 before the 401.
    if (LATE_AUTH.has(route) && res.statusCode >= 400 && res.statusCode < 500) continue;
    if (res.statusCode !== 401) open.push(`${route} -> ${res.statusCode}`);
  }
  assert.deepEqual(open, [], 'routes that answer without credentials and are not listed as public');
});
