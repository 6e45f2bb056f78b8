// A local fake of the Stripe HTTP API for tests: the real `stripe` SDK is pointed at it
// (`fake.client()`, or STRIPE_API_BASE=fake.url with src/stripe/client.ts), so requests go through
// the SDK's real form encoding, auto-pagination, retries and error classes.
//
// What it does:
// - list endpoints over in-memory collections (`fake.add('/v1/invoices', objects)`): newest first
//   (by `created`, then id), `limit` (default 10, max 100), `starting_after`/`ending_before`,
//   `has_more`, `created[gte|gt|lte|lt]`, equality filters on top-level fields (`customer`,
//   `status`, ...; subscriptions hide `canceled` unless `status=canceled|all`, as Stripe does);
//   GET /v1/<collection>/<id> retrieves one object;
// - webhook endpoints (create returns `secret` once, update, list, retrieve, delete) in memory;
// - fault injection: `failNext({ status: 429 })` (with Retry-After and Stripe-Should-Retry),
//   `dropNext()` (connection destroyed before any response), `rateLimit(perSecond)` (a token
//   bucket answering 429 when exceeded, like Stripe's per-account limit);
// - records every request (method, path, query, decoded form body, Idempotency-Key);
// - `route(method, path, handler)` adds or overrides an endpoint; `:param` segments match ids.
//
// Object shapes follow Stripe's (see test/fixtures/stripe, MIT-licensed samples); builders for
// invoices/subscriptions are in ./stripe.ts.
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import type Stripe from 'stripe';
import { createStripeClient } from '../../src/stripe/client.ts';

type Obj = Record<string, unknown>;

export interface FakeStripeRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  /** the form body, decoded into nested objects/arrays (`enabled_events[0]=a` → { enabled_events: ['a'] }) */
  body: Obj;
  idempotencyKey: string | undefined;
  headers: http.IncomingHttpHeaders;
  /** values of `:param` segments of the matched route */
  params: Record<string, string>;
}

export interface FakeStripeResponse {
  status?: number;
  body: unknown;
  headers?: Record<string, string>;
}

export type FakeStripeHandler = (request: FakeStripeRequest, fake: FakeStripeApi) => FakeStripeResponse | Promise<FakeStripeResponse>;

interface Route {
  method: string;
  pattern: RegExp;
  names: string[];
  handler: FakeStripeHandler;
}

interface Fault {
  kind: 'status' | 'drop';
  /** only requests whose path starts with this */
  path?: string | undefined;
  /** only the request that comes after `after` matching requests have passed */
  after: number;
  status?: number;
  retryAfter?: number;
}

export const FAKE_STRIPE_KEY = 'sk_test_fake_stripe_api';

export class FakeStripeApi {
  readonly requests: FakeStripeRequest[] = [];
  readonly collections = new Map<string, Obj[]>();
  readonly webhookEndpoints: Obj[] = [];
  /** counts of answered faults, for tests to assert that the fault really happened */
  readonly faultsServed = { status: 0, drop: 0, rateLimited: 0 };
  private readonly routes: Route[] = [];
  private readonly faults: Fault[] = [];
  private bucket: { perSecond: number; tokens: number; at: number } | undefined;
  private readonly sockets = new Set<Socket>();
  private server: http.Server | undefined;
  private idSeq = 0;
  url = '';
  port = 0;

  constructor() {
    this.installDefaultRoutes();
  }

  static async start(): Promise<FakeStripeApi> {
    const fake = new FakeStripeApi();
    await fake.listen();
    return fake;
  }

  async listen(): Promise<void> {
    this.server = http.createServer((req, res) => void this.handle(req, res));
    this.server.on('connection', (socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
    this.url = `http://127.0.0.1:${this.port}`;
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  /** The real SDK pointed at this server (fast retries so tests do not wait long). */
  client(options: { maxNetworkRetries?: number; key?: string } = {}): Stripe {
    return createStripeClient({ secretKey: options.key ?? FAKE_STRIPE_KEY, apiBase: this.url, maxNetworkRetries: options.maxNetworkRetries ?? 3, timeoutMs: 10_000 });
  }

  /** Add objects to a list endpoint's collection (e.g. '/v1/customers'). */
  add(collectionPath: string, objects: Obj[]): void {
    const list = this.collections.get(collectionPath) ?? [];
    list.push(...objects);
    this.collections.set(collectionPath, list);
  }

  /** Add or override an endpoint. Later routes win over earlier ones (and over the defaults). */
  route(method: string, path: string, handler: FakeStripeHandler): void {
    const names: string[] = [];
    const pattern = new RegExp('^' + path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&').replace(/:(\w+)/g, (_m, name: string) => (names.push(name), '([^/]+)')) + '$');
    this.routes.unshift({ method: method.toUpperCase(), pattern, names, handler });
  }

  /** The next matching request (after `after` others) is answered with `status` (default 429). */
  failNext(options: { status?: number; path?: string; after?: number; retryAfter?: number } = {}): void {
    this.faults.push({ kind: 'status', status: options.status ?? 429, path: options.path, after: options.after ?? 0, retryAfter: options.retryAfter ?? 0 });
  }

  /** The next matching request (after `after` others) has its connection destroyed without a response. */
  dropNext(options: { path?: string; after?: number } = {}): void {
    this.faults.push({ kind: 'drop', path: options.path, after: options.after ?? 0 });
  }

  /** At most `perSecond` requests a second (token bucket, burst = perSecond); beyond: 429. undefined → off. */
  rateLimit(perSecond: number | undefined): void {
    this.bucket = perSecond === undefined ? undefined : { perSecond, tokens: perSecond, at: performance.now() };
  }

  newId(prefix: string): string {
    return `${prefix}_fake${(++this.idSeq).toString().padStart(6, '0')}`;
  }

  requestsTo(method: string, pathPrefix: string): FakeStripeRequest[] {
    return this.requests.filter((r) => r.method === method && r.path.startsWith(pathPrefix));
  }

  private takeFault(path: string): Fault | undefined {
    for (let i = 0; i < this.faults.length; i++) {
      const fault = this.faults[i]!;
      if (fault.path && !path.startsWith(fault.path)) continue;
      if (fault.after > 0) {
        fault.after--;
        return undefined;
      }
      this.faults.splice(i, 1);
      return fault;
    }
    return undefined;
  }

  private rateLimited(): boolean {
    const bucket = this.bucket;
    if (!bucket) return false;
    const now = performance.now();
    bucket.tokens = Math.min(bucket.perSecond, bucket.tokens + ((now - bucket.at) / 1000) * bucket.perSecond);
    bucket.at = now;
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return false;
    }
    return true;
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const raw = Buffer.concat(chunks).toString('utf8');
    const url = new URL(req.url ?? '/', 'http://fake');
    const method = (req.method ?? 'GET').toUpperCase();
    // GET/DELETE parameters come in the query string, POST ones in the body; decode both the same way.
    const body = decodeForm(new URLSearchParams(raw));
    const idem = req.headers['idempotency-key'];
    const request: FakeStripeRequest = {
      method,
      path: url.pathname,
      query: url.searchParams,
      body,
      idempotencyKey: typeof idem === 'string' ? idem : undefined,
      headers: req.headers,
      params: {},
    };
    this.requests.push(request);

    const send = (status: number, payload: unknown, headers: Record<string, string> = {}) => {
      const text = JSON.stringify(payload);
      res.writeHead(status, { 'content-type': 'application/json', 'request-id': `req_${randomBytes(6).toString('hex')}`, ...headers });
      res.end(text);
    };

    if (!String(req.headers.authorization ?? '').startsWith('Bearer ')) {
      return send(401, { error: { type: 'invalid_request_error', message: 'You did not provide an API key.' } });
    }
    const fault = this.takeFault(url.pathname);
    if (fault?.kind === 'drop') {
      this.faultsServed.drop++;
      req.socket.destroy();
      return;
    }
    if (fault?.kind === 'status') {
      this.faultsServed.status++;
      return send(fault.status!, errorBody(fault.status!), { 'retry-after': String(fault.retryAfter ?? 0), 'stripe-should-retry': 'true' });
    }
    if (this.rateLimited()) {
      this.faultsServed.rateLimited++;
      return send(429, errorBody(429), { 'stripe-should-retry': 'true' });
    }

    for (const route of this.routes) {
      if (route.method !== method) continue;
      const m = route.pattern.exec(url.pathname);
      if (!m) continue;
      route.names.forEach((name, i) => (request.params[name] = decodeURIComponent(m[i + 1]!)));
      try {
        const out = await route.handler(request, this);
        return send(out.status ?? 200, out.body, out.headers);
      } catch (err) {
        return send(500, { error: { type: 'api_error', message: `fake handler failed: ${(err as Error).message}` } });
      }
    }
    send(404, { error: { type: 'invalid_request_error', message: `Unrecognized request URL (${method}: ${url.pathname}).` } });
  }

  private installDefaultRoutes(): void {
    // Generic routes first: routes added later take precedence over them.
    // Any collection added with add(): list and retrieve.
    this.route('GET', '/v1/:collection', (req) => {
      const key = `/v1/${req.params.collection}`;
      // A collection nothing was added to is an empty list, as for a new Stripe account.
      return { body: this.page(key, this.collections.get(key) ?? [], req.query) };
    });
    this.route('GET', '/v1/:collection/:id', (req) => {
      const found = this.collections.get(`/v1/${req.params.collection}`)?.find((o) => o.id === req.params.id);
      return found ? { body: found } : notFound(req.params.id!);
    });
    this.route('GET', '/v1/customers/:customer/payment_methods', (req) => {
      const all = (this.collections.get('/v1/payment_methods') ?? []).filter((pm) => pm.customer === req.params.customer);
      return { body: this.page(req.path, all, req.query) };
    });
    // Webhook endpoints: the secret is only in the create response, as at Stripe.
    this.route('GET', '/v1/webhook_endpoints', (req) => ({ body: this.page('/v1/webhook_endpoints', this.webhookEndpoints, req.query) }));
    this.route('POST', '/v1/webhook_endpoints', (req) => {
      const b = req.body;
      if (typeof b.url !== 'string' || !Array.isArray(b.enabled_events)) return { status: 400, body: errorBody(400, 'url and enabled_events are required') };
      const endpoint: Obj = {
        id: this.newId('we'),
        object: 'webhook_endpoint',
        api_version: typeof b.api_version === 'string' ? b.api_version : null,
        application: null,
        created: Math.floor(Date.now() / 1000) - this.webhookEndpoints.length,
        description: b.description ?? null,
        enabled_events: b.enabled_events,
        livemode: false,
        metadata: b.metadata ?? {},
        status: 'enabled',
        url: b.url,
      };
      this.webhookEndpoints.unshift(endpoint);
      return { body: { ...endpoint, secret: `whsec_${randomBytes(16).toString('hex')}` } };
    });
    this.route('GET', '/v1/webhook_endpoints/:id', (req) => {
      const endpoint = this.webhookEndpoints.find((e) => e.id === req.params.id);
      return endpoint ? { body: endpoint } : notFound(req.params.id!);
    });
    this.route('POST', '/v1/webhook_endpoints/:id', (req) => {
      const endpoint = this.webhookEndpoints.find((e) => e.id === req.params.id);
      if (!endpoint) return notFound(req.params.id!);
      for (const key of ['url', 'enabled_events', 'description', 'metadata'] as const) if (key in req.body) endpoint[key] = req.body[key];
      if (req.body.disabled === 'false') endpoint.status = 'enabled';
      if (req.body.disabled === 'true') endpoint.status = 'disabled';
      return { body: endpoint };
    });
    this.route('DELETE', '/v1/webhook_endpoints/:id', (req) => {
      const i = this.webhookEndpoints.findIndex((e) => e.id === req.params.id);
      if (i < 0) return notFound(req.params.id!);
      this.webhookEndpoints.splice(i, 1);
      return { body: { id: req.params.id, object: 'webhook_endpoint', deleted: true } };
    });
  }

  /** One page of a list, the way Stripe answers it. */
  page(listPath: string, items: Obj[], query: URLSearchParams): Obj {
    const params = decodeForm(query);
    const limit = Math.min(100, Math.max(1, Number(params.limit ?? 10)));
    let selected = items.filter((item) => matches(listPath, item, params));
    selected = [...selected].sort((a, b) => Number(b.created ?? 0) - Number(a.created ?? 0) || String(b.id).localeCompare(String(a.id)));
    let start = 0;
    if (typeof params.starting_after === 'string') {
      const i = selected.findIndex((o) => o.id === params.starting_after);
      if (i < 0) throw new Error(`starting_after ${params.starting_after} not found`);
      start = i + 1;
    }
    let end = selected.length;
    if (typeof params.ending_before === 'string') {
      end = selected.findIndex((o) => o.id === params.ending_before);
      start = Math.max(0, end - limit);
    }
    const data = selected.slice(start, Math.min(end, start + limit));
    return { object: 'list', url: listPath, has_more: start + data.length < end, data };
  }
}

const RESERVED = new Set(['limit', 'starting_after', 'ending_before', 'expand', 'created']);

function matches(listPath: string, item: Obj, params: Obj): boolean {
  if (listPath === '/v1/subscriptions') {
    const status = params.status;
    if (status === undefined && item.status === 'canceled') return false;
    if (status === 'all' || status === undefined) {
      // no status filter beyond hiding canceled
    } else if (item.status !== status) return false;
  }
  for (const [key, value] of Object.entries(params)) {
    if (RESERVED.has(key) || (listPath === '/v1/subscriptions' && key === 'status')) continue;
    if (typeof value === 'string' && String(item[key] ?? '') !== value) return false;
  }
  const created = params.created;
  if (created !== undefined) {
    const at = Number(item.created ?? 0);
    if (typeof created === 'string') return at === Number(created);
    const range = created as Record<string, string>;
    if (range.gte !== undefined && !(at >= Number(range.gte))) return false;
    if (range.gt !== undefined && !(at > Number(range.gt))) return false;
    if (range.lte !== undefined && !(at <= Number(range.lte))) return false;
    if (range.lt !== undefined && !(at < Number(range.lt))) return false;
  }
  // Stripe filters canceled subscriptions by when they ended with `created` too; tests use created.
  return true;
}

/** Stripe's form encoding (`a[b][0]=x`) decoded into nested objects; numeric keys make arrays. */
export function decodeForm(params: URLSearchParams): Obj {
  const root: Obj = {};
  for (const [fullKey, value] of params) {
    const parts = fullKey.replace(/\]/g, '').split('[');
    let node: Obj = root;
    parts.forEach((part, i) => {
      if (i === parts.length - 1) {
        node[part] = value;
        return;
      }
      const nextIsIndex = /^\d+$/.test(parts[i + 1]!);
      node[part] ??= nextIsIndex ? [] : {};
      node = node[part] as Obj;
    });
  }
  return arraysFromIndexObjects(root) as Obj;
}

function arraysFromIndexObjects(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(arraysFromIndexObjects);
  if (value && typeof value === 'object') {
    const out: Obj = {};
    for (const [k, v] of Object.entries(value)) out[k] = arraysFromIndexObjects(v);
    return out;
  }
  return value;
}

function errorBody(status: number, message?: string): Obj {
  if (status === 429) return { error: { type: 'rate_limit_error', code: 'rate_limit', message: message ?? 'Too many requests hit the API too quickly.' } };
  if (status >= 500) return { error: { type: 'api_error', message: message ?? 'An unknown error occurred (fake).' } };
  return { error: { type: 'invalid_request_error', message: message ?? 'Invalid request (fake).' } };
}

function notFound(id: string): FakeStripeResponse {
  return { status: 404, body: { error: { type: 'invalid_request_error', code: 'resource_missing', message: `No such object: '${id}'` } } };
}

/** A Stripe customer object (current shape, trimmed to what Lifeline reads plus the usual fields). */
export function fakeCustomer(fields: Partial<{ id: string; email: string | null; name: string | null; created: number; default_payment_method: string | null }> = {}): Obj {
  return {
    id: fields.id ?? 'cus_fake_1',
    object: 'customer',
    email: fields.email === undefined ? 'owner@example.test' : fields.email,
    name: fields.name === undefined ? 'Example Co' : fields.name,
    created: fields.created ?? 1_750_000_000,
    currency: 'usd',
    delinquent: false,
    livemode: false,
    metadata: {},
    invoice_settings: { default_payment_method: fields.default_payment_method ?? null, custom_fields: null, footer: null, rendering_options: null },
  };
}
