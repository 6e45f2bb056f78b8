// Configuration is read once, at start-up, from environment variables into a typed object.
// A malformed value stops start-up with one line naming the variable and what it expects.
// A missing *secret* does not: the route that needs it answers 503 explaining what to set.

import { isIP } from 'node:net';

export const ROLES = ['all', 'api', 'worker'] as const;
export type Role = (typeof ROLES)[number];
/** What a worker (ROLE=worker or all) runs; WORKER_TASKS picks a subset (default: all of them). */
export const WORKER_TASKS = ['inbox', 'engine', 'email', 'webhooks'] as const;
export type WorkerTask = (typeof WORKER_TASKS)[number];

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface Config {
  port: number;
  host: string;
  /** undefined → start embedded PostgreSQL */
  databaseUrl: string | undefined;
  embeddedPg: { dataDir: string; port: number };
  stripeWebhookSecret: string | undefined;
  stripeSecretKey: string | undefined;
  /** STRIPE_API_BASE: another Stripe API server (tests' fake Stripe, stripe-mock); unset → api.stripe.com */
  stripeApiBase: string | undefined;
  /** Stripe actions (issue 13): update-card links and paying when the card is fixed */
  recovery: {
    /** RECOVERY_PORTAL_RETURN_URL: where the Billing Portal sends the customer back; default APP_URL */
    portalReturnUrl: string | undefined;
    /** RECOVERY_PAY_ON_CARD_UPDATE=on|off: pay open failed invoices when the card changes (default on; needs STRIPE_SECRET_KEY) */
    payOnCardUpdate: boolean;
    /**
     * RECOVERY_ALERT_MRR: MRR thresholds per currency (lower-case ISO 4217 → minor units), e.g.
     * "100000 usd, 90000 eur"; the built-in billing-recovery alerts when a failing customer's MRR
     * in the invoice's currency is at or above that currency's threshold. Empty: no MRR alert.
     */
    alertMrr: Readonly<Record<string, number>>;
  };
  /** Pre-dunning (issue 13): expiring cards checked before the renewal */
  preDunning: {
    /** PRE_DUNNING_NOTICE_DAYS: days before the renewal the check runs and the email goes out (default 7) */
    noticeDays: number;
  };
  /** SLACK_WEBHOOK_URL: Slack incoming webhook for workflow `notify` steps without their own URL (a secret: never logged) */
  slackWebhookUrl: string | undefined;
  /** In-product billing status (issue 13): GET /v1/billing-status and /embed/billing-notice.js */
  billingStatus: {
    /** BILLING_STATUS_ORIGINS: comma-separated browser origins allowed to call the API with a token (CORS); empty = none */
    allowedOrigins: string[];
    /** BILLING_STATUS_TOKEN_TTL: seconds a browser token lives (default 900) */
    tokenTtlSeconds: number;
    /** RECOVERY_CANCEL_AFTER_DAYS: days from the first failure until Stripe cancels (match your Stripe retry settings; default 14) */
    cancelAfterDays: number;
  };
  writeKey: string | undefined;
  adminToken: string | undefined;
  /**
   * every accepted admin token: LIFELINE_ADMIN_TOKENS (comma-separated, for rotation: add the new
   * one, move clients, remove the old) plus LIFELINE_ADMIN_TOKEN; `adminToken` is the first
   */
  adminTokens: string[];
  /** @fastify/rate-limit budgets (src/http/rate-limits.ts) */
  rateLimit: { perMinute: number; anonymousPerMinute: number; loginPerMinute: number };
  /**
   * TRUST_PROXY: Fastify's trustProxy. false (default): the client is the TCP peer and
   * X-Forwarded-* are ignored; true: trust every hop; a number: trust that many hops; addresses /
   * CIDRs: trust those proxies. Decides request.ip (rate limits, login throttling) and
   * request.protocol / host (the Secure cookie, the dashboard's same-origin check).
   */
  trustProxy: boolean | number | string[];
  /** a scrape-only credential for GET /metrics (the admin token works too) */
  metricsToken: string | undefined;
  publicUrl: string;
  role: Role;
  /** the background tasks this process runs when its role includes the worker */
  workerTasks: ReadonlySet<WorkerTask>;
  logLevel: LogLevel;
  /** Max connections of our own postgres.js pool (pg-boss has its own). */
  dbPoolMax: number;
  /** HMAC secret for outgoing webhooks and email tokens; unset → generated once, kept in the database */
  secret: string | undefined;
  policy: {
    /** ISO-8601 duration: at most one lifecycle/marketing email per contact per this window; null = off */
    frequencyCap: string | null;
    /** local "HH:MM-HH:MM" window in the contact's timezone when lifecycle/marketing sends wait; null = off */
    quietHours: { start: string; end: string } | null;
  };
  /** how often the engine looks for due work (ms) */
  engineTickMs: number;
  email: {
    /** unset → log transport: messages are rendered and logged, not sent */
    resendApiKey: string | undefined;
    resendBaseUrl: string | undefined;
    resendWebhookSecret: string | undefined;
    from: string;
    replyTo: string | undefined;
    /** Resend requests per second for this service (Resend's default team limit is 2) */
    rateLimitPerSecond: number;
    /** one provider request's time limit (ms): a hung request fails and its batch is re-sent under the same idempotency key */
    requestTimeoutMs: number;
    /** how long a sender's claim on messages/batches lasts: after a crash or an outage, held mail waits this long to be taken over */
    claimMs: number;
    /** mailto: address for List-Unsubscribe (optional, besides the one-click URL) */
    unsubscribeMailto: string | undefined;
  };
  brand: {
    productName: string;
    logoUrl: string | undefined;
    primaryColor: string;
    postalAddress: string;
    locale: string;
    /** where "open the app" buttons point (your product), default PUBLIC_URL */
    appUrl: string;
  };
  /** folder where the log transport writes rendered emails */
  outboxDir: string;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

type Env = Record<string, string | undefined>;

function str(env: Env, name: string): string | undefined {
  const v = env[name];
  return v === undefined || v.trim() === '' ? undefined : v.trim();
}

function int(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = str(env, name);
  if (raw === undefined) return fallback;
  if (!/^\d+$/.test(raw) || Number(raw) < min || Number(raw) > max) {
    throw new ConfigError(`${name}=${JSON.stringify(raw)} is invalid: expected an integer from ${min} to ${max}`);
  }
  return Number(raw);
}

function oneOf<T extends string>(env: Env, name: string, allowed: readonly T[], fallback: T): T {
  const raw = str(env, name);
  if (raw === undefined) return fallback;
  if (!(allowed as readonly string[]).includes(raw)) {
    throw new ConfigError(`${name}=${JSON.stringify(raw)} is invalid: expected one of ${allowed.join(' | ')}`);
  }
  return raw as T;
}

/** A comma-separated subset of `allowed` (unset: all of them). */
function someOf<T extends string>(env: Env, name: string, allowed: readonly T[]): ReadonlySet<T> {
  const raw = str(env, name);
  if (raw === undefined) return new Set(allowed);
  const picked = raw.split(',').map((p) => p.trim()).filter((p) => p !== '');
  const unknown = picked.filter((p) => !(allowed as readonly string[]).includes(p));
  if (picked.length === 0 || unknown.length > 0) {
    throw new ConfigError(`${name}=${JSON.stringify(raw)} is invalid: expected a comma-separated list of ${allowed.join(', ')}`);
  }
  return new Set(picked as T[]);
}

function url(env: Env, name: string, protocols: string[]): string | undefined {
  const raw = str(env, name);
  if (raw === undefined) return undefined;
  let parsed: URL;
  try {
    parsed = new URL(raw);
  } catch {
    throw new ConfigError(`${name} is invalid: expected a URL like ${protocols[0]}//host/…`);
  }
  if (!protocols.includes(parsed.protocol)) {
    throw new ConfigError(`${name} is invalid: expected a ${protocols.join(' or ')} URL, got ${parsed.protocol}`);
  }
  return raw;
}

function adminTokenList(env: Env): string[] {
  const listed = (str(env, 'LIFELINE_ADMIN_TOKENS') ?? '').split(',').map((t) => t.trim()).filter((t) => t !== '');
  const single = secret(env, 'LIFELINE_ADMIN_TOKEN');
  return [...new Set(single ? [single, ...listed] : listed)];
}

function secret(env: Env, name: string, prefix?: string): string | undefined {
  const raw = str(env, name);
  if (raw === undefined) return undefined;
  // Never echo the value: it is a secret.
  if (prefix && !raw.startsWith(prefix)) {
    throw new ConfigError(`${name} is invalid: expected a value starting with "${prefix}"`);
  }
  return raw;
}

export function loadConfig(env: Env = process.env): Config {
  const port = int(env, 'PORT', 3000, 0, 65535);
  return {
    port,
    // Loopback unless told otherwise: a development instance is not reachable from the network.
    // Containers set HOST=0.0.0.0 (the Dockerfile does).
    host: str(env, 'HOST') ?? '127.0.0.1',
    databaseUrl: url(env, 'DATABASE_URL', ['postgres:', 'postgresql:']),
    embeddedPg: {
      dataDir: str(env, 'LIFELINE_DATA_DIR') ?? '.lifeline/pgdata',
      port: int(env, 'EMBEDDED_PG_PORT', 54329, 1, 65535),
    },
    stripeWebhookSecret: secret(env, 'STRIPE_WEBHOOK_SECRET', 'whsec_'),
    stripeSecretKey: secret(env, 'STRIPE_SECRET_KEY', 's'), // sk_… or rk_… (restricted) keys
    stripeApiBase: url(env, 'STRIPE_API_BASE', ['http:', 'https:']),
    recovery: {
      portalReturnUrl: url(env, 'RECOVERY_PORTAL_RETURN_URL', ['http:', 'https:']),
      payOnCardUpdate: oneOf(env, 'RECOVERY_PAY_ON_CARD_UPDATE', ['on', 'off'] as const, 'on') === 'on',
      alertMrr: moneyThresholds(env, 'RECOVERY_ALERT_MRR'),
    },
    preDunning: {
      noticeDays: int(env, 'PRE_DUNNING_NOTICE_DAYS', 7, 1, 60),
    },
    slackWebhookUrl: url(env, 'SLACK_WEBHOOK_URL', ['https:', 'http:']),
    billingStatus: {
      allowedOrigins: (str(env, 'BILLING_STATUS_ORIGINS') ?? '').split(',').map((o) => o.trim().replace(/\/$/, '')).filter((o) => o !== ''),
      tokenTtlSeconds: int(env, 'BILLING_STATUS_TOKEN_TTL', 900, 30, 86_400),
      cancelAfterDays: int(env, 'RECOVERY_CANCEL_AFTER_DAYS', 14, 1, 365),
    },
    writeKey: secret(env, 'LIFELINE_WRITE_KEY'),
    adminToken: adminTokenList(env)[0],
    adminTokens: adminTokenList(env),
    rateLimit: {
      // Per credential: far above the measured ingest saturation (~2,700 req/s), so only a
      // runaway client is stopped, never a bench or a backlog flush.
      perMinute: number(env, 'RATE_LIMIT_PER_MINUTE', 600_000, 1, 100_000_000),
      // Per address without credentials (unsubscribe, click redirects, token pages).
      anonymousPerMinute: number(env, 'ANON_RATE_LIMIT_PER_MINUTE', 6_000, 1, 100_000_000),
      // All login posts per address; failed ones are also throttled by the dashboard itself.
      loginPerMinute: number(env, 'LOGIN_RATE_LIMIT_PER_MINUTE', 60, 1, 10_000),
    },
    trustProxy: trustProxy(env, 'TRUST_PROXY'),
    metricsToken: secret(env, 'METRICS_TOKEN'),
    publicUrl: (url(env, 'PUBLIC_URL', ['http:', 'https:']) ?? `http://localhost:${port}`).replace(/\/$/, ''),
    role: oneOf(env, 'ROLE', ROLES, 'all'),
    workerTasks: someOf(env, 'WORKER_TASKS', WORKER_TASKS),
    logLevel: oneOf(env, 'LOG_LEVEL', LOG_LEVELS, 'info'),
    dbPoolMax: int(env, 'DB_POOL_MAX', 10, 1, 200),
    secret: secret(env, 'LIFELINE_SECRET'),
    policy: {
      frequencyCap: durationOrOff(env, 'FREQUENCY_CAP', 'PT24H'),
      quietHours: window(env, 'QUIET_HOURS', '21:00-08:00'),
    },
    engineTickMs: int(env, 'ENGINE_TICK_MS', 1000, 50, 60_000),
    email: {
      resendApiKey: secret(env, 'RESEND_API_KEY', 're_'),
      resendBaseUrl: url(env, 'RESEND_BASE_URL', ['http:', 'https:']),
      resendWebhookSecret: secret(env, 'RESEND_WEBHOOK_SECRET', 'whsec_'),
      from: email(env, 'EMAIL_FROM', 'Lifeline <billing@example.com>'),
      replyTo: str(env, 'EMAIL_REPLY_TO') === undefined ? undefined : email(env, 'EMAIL_REPLY_TO', ''),
      rateLimitPerSecond: number(env, 'RESEND_RATE_LIMIT', 2, 0.1, 1000),
      requestTimeoutMs: int(env, 'RESEND_TIMEOUT_MS', 10_000, 100, 120_000),
      claimMs: int(env, 'EMAIL_CLAIM_MS', 120_000, 5_000, 3_600_000),
      unsubscribeMailto: str(env, 'UNSUBSCRIBE_MAILTO') === undefined ? undefined : email(env, 'UNSUBSCRIBE_MAILTO', ''),
    },
    brand: {
      productName: str(env, 'BRAND_NAME') ?? 'Lifeline',
      logoUrl: url(env, 'BRAND_LOGO_URL', ['http:', 'https:']),
      primaryColor: color(env, 'BRAND_COLOR', '#4f46e5'),
      postalAddress: str(env, 'BRAND_POSTAL_ADDRESS') ?? '123 Example Street, Springfield, USA',
      locale: str(env, 'BRAND_LOCALE') ?? 'en-US',
      appUrl: url(env, 'APP_URL', ['http:', 'https:']) ?? `http://localhost:${port}`,
    },
    outboxDir: str(env, 'LIFELINE_OUTBOX_DIR') ?? '.lifeline/outbox',
  };
}

function number(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = str(env, name);
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < min || n > max) {
    throw new ConfigError(`${name}=${JSON.stringify(raw)} is invalid: expected a number from ${min} to ${max}`);
  }
  return n;
}

/**
 * Amounts per currency: "<minor units> <currency>" entries, comma-separated ("100000 usd, 90000 eur").
 * The currency is required: a bare number would compare cents with yen.
 */
function moneyThresholds(env: Env, name: string): Readonly<Record<string, number>> {
  const raw = str(env, name);
  if (raw === undefined) return {};
  const thresholds: Record<string, number> = {};
  for (const entry of raw.split(',').map((e) => e.trim())) {
    const m = /^(\d{1,15})\s+([a-zA-Z]{3})$/.exec(entry);
    const currency = m?.[2]?.toLowerCase();
    if (!m || currency === undefined || Object.hasOwn(thresholds, currency)) {
      throw new ConfigError(`${name}=${JSON.stringify(raw)} is invalid: expected "<amount in minor units> <currency>" entries, comma-separated, one per currency, e.g. "100000 usd, 90000 eur"`);
    }
    thresholds[currency] = Number(m[1]);
  }
  return Object.freeze(thresholds);
}

/** "false" | "true" | a hop count | comma-separated IP addresses or CIDR ranges (see Config.trustProxy). */
function trustProxy(env: Env, name: string): boolean | number | string[] {
  const raw = str(env, name);
  if (raw === undefined || /^(false|off|no|0)$/i.test(raw)) return false;
  if (/^(true|on|yes)$/i.test(raw)) return true;
  if (/^\d+$/.test(raw)) {
    const hops = Number(raw);
    if (hops <= 100) return hops;
  }
  const entries = raw.split(',').map((e) => e.trim()).filter((e) => e !== '');
  const valid = (entry: string) => {
    const [address, bits, extra] = entry.split('/');
    const family = isIP(address ?? '');
    if (family === 0 || extra !== undefined) return false;
    return bits === undefined || (/^\d{1,3}$/.test(bits) && Number(bits) <= (family === 4 ? 32 : 128));
  };
  if (entries.length === 0 || !entries.every(valid)) {
    throw new ConfigError(`${name}=${JSON.stringify(raw)} is invalid: expected true, false, a hop count (1-100), or comma-separated proxy addresses / CIDR ranges (e.g. 10.0.0.0/8,127.0.0.1)`);
  }
  return entries;
}

// "Name <addr@host>" or "addr@host".
function email(env: Env, name: string, fallback: string): string {
  const raw = str(env, name) ?? fallback;
  if (!/^(?:[^<>]*<[^<>@\s]+@[^<>@\s]+>|[^<>@\s]+@[^<>@\s]+)$/.test(raw)) {
    throw new ConfigError(`${name}=${JSON.stringify(raw)} is invalid: expected an email address, e.g. "Acme Billing <billing@acme.com>"`);
  }
  return raw;
}

function color(env: Env, name: string, fallback: string): string {
  const raw = str(env, name) ?? fallback;
  if (!/^#[0-9a-fA-F]{6}$/.test(raw)) throw new ConfigError(`${name}=${JSON.stringify(raw)} is invalid: expected a hex color like #4f46e5`);
  return raw;
}

function durationOrOff(env: Env, name: string, fallback: string): string | null {
  const raw = str(env, name) ?? fallback;
  if (raw === 'off') return null;
  if (!/^P(?!$)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+S)?)?$/.test(raw)) {
    throw new ConfigError(`${name}=${JSON.stringify(raw)} is invalid: expected an ISO-8601 duration like PT24H, or "off"`);
  }
  return raw;
}

function window(env: Env, name: string, fallback: string): { start: string; end: string } | null {
  const raw = str(env, name) ?? fallback;
  if (raw === 'off') return null;
  const m = /^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$/.exec(raw);
  if (!m) throw new ConfigError(`${name}=${JSON.stringify(raw)} is invalid: expected HH:MM-HH:MM (24 h, e.g. 21:00-08:00), or "off"`);
  return { start: `${m[1]}:${m[2]}`, end: `${m[3]}:${m[4]}` };
}

/** Which optional features are off, for one start-up warning line. */
export function missingSecrets(config: Config): string[] {
  const missing: string[] = [];
  if (!config.stripeWebhookSecret) missing.push('STRIPE_WEBHOOK_SECRET (POST /webhooks/stripe answers 503)');
  if (!config.writeKey) missing.push('LIFELINE_WRITE_KEY (events API answers 503)');
  if (!config.adminToken) missing.push('LIFELINE_ADMIN_TOKEN (admin APIs answer 503)');
  return missing;
}
