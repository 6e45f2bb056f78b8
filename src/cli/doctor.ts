// `lifeline doctor`: a checklist of what a new installation gets wrong, each failure with its fix.
// Every check is a small function over explicit inputs (environment, a DNS resolver, a Stripe
// client) so tests point them at a local DNS server and the fake Stripe API.
import type { promises as dnsPromises } from 'node:dns';
import type Stripe from 'stripe';
import { ConfigError, loadConfig, type Config } from '../config.ts';
import { createSql } from '../db/connection.ts';
import { migrationsApplied } from '../db/migrate.ts';
import { loadTemplates } from '../email/template-catalog.ts';
import { sampleData } from '../email/template-samples.ts';
import { STRIPE_API_VERSION, stripeClientFromConfig } from '../stripe/client.ts';
import { PROJECTED_STRIPE_EVENT_TYPES } from '../stripe/projector.ts';

export type CheckStatus = 'ok' | 'warn' | 'fail' | 'info';

export interface CheckResult {
  name: string;
  status: CheckStatus;
  detail: string;
  /** What to do about a warn or fail. */
  fix?: string;
}

type Env = Record<string, string | undefined>;
type Resolver = Pick<dnsPromises.Resolver, 'resolveTxt'>;

export interface DoctorDeps {
  env: Env;
  resolver: Resolver;
  /** Override the Stripe client (tests); default from STRIPE_SECRET_KEY / STRIPE_API_BASE. */
  stripe?: Stripe;
}

// Defaults that would reach customers in every email (the footer, the sender, the signature).
export const DEFAULT_BRAND = {
  EMAIL_FROM: 'Lifeline <billing@example.com>',
  BRAND_NAME: 'Lifeline',
  BRAND_POSTAL_ADDRESS: '123 Example Street, Springfield, USA',
} as const;

/** Brand settings still at their placeholder default (also used for the start-up warning). */
export function defaultBrandSettings(env: Env): (keyof typeof DEFAULT_BRAND)[] {
  return (Object.keys(DEFAULT_BRAND) as (keyof typeof DEFAULT_BRAND)[]).filter((name) => {
    const value = env[name]?.trim();
    return value === undefined || value === '' || value === DEFAULT_BRAND[name];
  });
}

const SECRETS: { name: string; without: string; fix: string }[] = [
  { name: 'STRIPE_WEBHOOK_SECRET', without: 'POST /webhooks/stripe answers 503', fix: 'run `lifeline setup stripe` and set the whsec_… it prints' },
  { name: 'STRIPE_SECRET_KEY', without: 'no backfill, no update-card links, no Stripe actions', fix: 'create a restricted key at https://dashboard.stripe.com/apikeys' },
  { name: 'RESEND_API_KEY', without: 'emails are written to LIFELINE_OUTBOX_DIR instead of sent', fix: 'create one at https://resend.com/api-keys' },
  { name: 'RESEND_WEBHOOK_SECRET', without: 'bounces and complaints are not received', fix: 'add a webhook at https://resend.com/webhooks for PUBLIC_URL/webhooks/resend and set its signing secret' },
  { name: 'LIFELINE_WRITE_KEY', without: 'the events API answers 503', fix: 'set a long random value, e.g. `openssl rand -hex 32`' },
  { name: 'LIFELINE_ADMIN_TOKEN', without: 'the admin APIs answer 503', fix: 'set a long random value, e.g. `openssl rand -hex 32`' },
  { name: 'LIFELINE_SECRET', without: 'signed links (unsubscribe, update card) cannot be made', fix: 'set a long random value, e.g. `openssl rand -hex 32`' },
];

export function checkSecrets(env: Env): CheckResult[] {
  return SECRETS.map((s) =>
    env[s.name]?.trim()
      ? { name: `secret ${s.name}`, status: 'ok', detail: 'set' }
      : { name: `secret ${s.name}`, status: 'fail', detail: `not set: ${s.without}`, fix: s.fix },
  );
}

export function checkPublicUrl(config: Config, env: Env): CheckResult {
  const production = env.NODE_ENV === 'production';
  if (!env.PUBLIC_URL) {
    return { name: 'PUBLIC_URL', status: production ? 'fail' : 'warn', detail: `not set (defaults to ${config.publicUrl}); links in emails and the Stripe webhook need the public address`, fix: 'set PUBLIC_URL=https://lifeline.your-company.com' };
  }
  if (production && !config.publicUrl.startsWith('https://')) {
    return { name: 'PUBLIC_URL', status: 'fail', detail: `${config.publicUrl} is not https in production`, fix: 'serve Lifeline behind TLS and set PUBLIC_URL=https://…' };
  }
  return { name: 'PUBLIC_URL', status: 'ok', detail: config.publicUrl };
}

export function checkBrand(env: Env): CheckResult[] {
  const defaults = new Set(defaultBrandSettings(env));
  return (Object.keys(DEFAULT_BRAND) as (keyof typeof DEFAULT_BRAND)[]).map((name) =>
    defaults.has(name)
      ? { name: `brand ${name}`, status: 'fail', detail: `still the default "${DEFAULT_BRAND[name]}", which customers would see`, fix: `set ${name} to your company's value` }
      : { name: `brand ${name}`, status: 'ok', detail: 'set' },
  );
}

export async function checkTemplates(config: Config): Promise<CheckResult> {
  try {
    const catalog = await loadTemplates({ brand: config.brand });
    for (const key of catalog.keys()) catalog.render(key, sampleData(key));
    return { name: 'templates', status: 'ok', detail: `${catalog.keys().length} compile and render` };
  } catch (err) {
    return { name: 'templates', status: 'fail', detail: (err as Error).message, fix: 'fix the template named above (`lifeline preview <template>` renders one)' };
  }
}

export async function checkDatabase(config: Config): Promise<CheckResult> {
  if (!config.databaseUrl) {
    return { name: 'database', status: 'info', detail: `embedded PostgreSQL in ${config.embeddedPg.dataDir} (not opened by doctor: the service may hold it)`, fix: 'for production set DATABASE_URL to a managed PostgreSQL' };
  }
  const sql = createSql(config.databaseUrl, { max: 1, applicationName: 'lifeline-doctor' });
  try {
    if (!(await migrationsApplied(sql))) {
      return { name: 'database', status: 'fail', detail: 'reachable but not fully migrated', fix: 'run `npm run migrate`' };
    }
    return { name: 'database', status: 'ok', detail: 'reachable and migrated' };
  } catch (err) {
    return { name: 'database', status: 'fail', detail: `not reachable: ${(err as Error).message}`, fix: 'check DATABASE_URL (host, port, user, password) and that PostgreSQL is running' };
  } finally {
    await sql.end({ timeout: 1 }).catch(() => {});
  }
}

export async function checkStripeEndpoint(config: Config, stripe: Stripe | undefined): Promise<CheckResult> {
  const name = 'Stripe webhook endpoint';
  if (!stripe) return { name, status: 'warn', detail: 'not checked: STRIPE_SECRET_KEY is not set', fix: 'set STRIPE_SECRET_KEY, then run `lifeline setup stripe`' };
  const url = `${config.publicUrl}/webhooks/stripe`;
  try {
    let endpoint: Stripe.WebhookEndpoint | undefined;
    for await (const e of stripe.webhookEndpoints.list({ limit: 100 })) {
      if (e.url === url) {
        endpoint = e;
        break;
      }
    }
    if (!endpoint) return { name, status: 'fail', detail: `no endpoint for ${url}`, fix: 'run `lifeline setup stripe`' };
    const problems: string[] = [];
    if (endpoint.status !== 'enabled') problems.push(`status ${endpoint.status}`);
    const events = new Set(endpoint.enabled_events);
    const missing = events.has('*') ? [] : PROJECTED_STRIPE_EVENT_TYPES.filter((t) => !events.has(t));
    if (missing.length > 0) problems.push(`missing events ${missing.join(', ')}`);
    if (endpoint.api_version && endpoint.api_version !== STRIPE_API_VERSION) problems.push(`API version ${endpoint.api_version}, Lifeline reads ${STRIPE_API_VERSION}`);
    if (problems.length > 0) return { name, status: 'fail', detail: `${endpoint.id}: ${problems.join('; ')}`, fix: endpoint.api_version !== STRIPE_API_VERSION ? 'run `lifeline setup stripe --recreate`' : 'run `lifeline setup stripe`' };
    return { name, status: 'ok', detail: `${endpoint.id} enabled, ${PROJECTED_STRIPE_EVENT_TYPES.length} events, API ${STRIPE_API_VERSION}` };
  } catch (err) {
    return { name, status: 'fail', detail: `Stripe API error: ${(err as Error).message}`, fix: 'check STRIPE_SECRET_KEY (a restricted key needs read access to webhook endpoints)' };
  }
}

/** The domain of EMAIL_FROM ("Acme <billing@acme.com>" -> acme.com). */
export function sendingDomain(from: string): string {
  const address = /<([^<>]+)>/.exec(from)?.[1] ?? from;
  return address.slice(address.lastIndexOf('@') + 1).toLowerCase();
}

async function txt(resolver: Resolver, name: string): Promise<string[] | null> {
  try {
    // Long records arrive as several character-strings: one record is their concatenation.
    return (await resolver.resolveTxt(name)).map((chunks) => chunks.join(''));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOTFOUND' || code === 'ENODATA') return null;
    throw err;
  }
}

// Resend sends through Amazon SES with the bounce (MAIL FROM) domain `send.<domain>`: its SPF
// record must include amazonses.com, and DKIM is the TXT record `resend._domainkey.<domain>`
// (https://resend.com/docs/dashboard/domains/introduction).
export async function checkSendingDns(from: string, resolver: Resolver): Promise<CheckResult[]> {
  const domain = sendingDomain(from);
  const results: CheckResult[] = [];
  const lookup = async (name: string, check: (records: string[] | null) => CheckResult) => {
    try {
      results.push(check(await txt(resolver, name)));
    } catch (err) {
      results.push({ name: `DNS ${name}`, status: 'fail', detail: `lookup failed: ${(err as Error).message}`, fix: 'check the DNS servers this machine uses' });
    }
  };

  const spfName = `send.${domain}`;
  await lookup(spfName, (records) => {
    const name = `SPF ${spfName}`;
    const spf = records?.filter((r) => /^v=spf1(\s|$)/i.test(r)) ?? [];
    const fix = `add TXT ${spfName} "v=spf1 include:amazonses.com ~all" (as shown under Domains in Resend)`;
    if (spf.length === 0) return { name, status: 'fail', detail: 'no SPF record', fix };
    if (spf.length > 1) return { name, status: 'fail', detail: `${spf.length} SPF records (receivers treat that as an error)`, fix: `merge them into one: ${fix}` };
    const record = spf[0]!;
    if (!/\binclude:amazonses\.com\b/i.test(record)) return { name, status: 'fail', detail: `"${record}" does not include amazonses.com (Resend's sender)`, fix };
    if (/(^|\s)[+?]?all\b/i.test(record)) return { name, status: 'fail', detail: `"${record}" ends in a permissive all: anyone may send as ${domain}`, fix: 'end the record with ~all or -all' };
    return { name, status: 'ok', detail: record };
  });

  const dkimName = `resend._domainkey.${domain}`;
  await lookup(dkimName, (records) => {
    const name = `DKIM ${dkimName}`;
    const fix = `add the TXT record ${dkimName} shown under Domains in Resend`;
    const key = records?.find((r) => /(^|;)\s*p=/i.test(r));
    if (!key) return { name, status: 'fail', detail: 'no DKIM key', fix };
    if (/(^|;)\s*p=\s*(;|$)/i.test(key)) return { name, status: 'fail', detail: 'the key is empty (p=): revoked, every signature fails', fix };
    return { name, status: 'ok', detail: 'present' };
  });

  const dmarcName = `_dmarc.${domain}`;
  await lookup(dmarcName, (records) => {
    const name = `DMARC ${dmarcName}`;
    const dmarc = records?.find((r) => /^v=DMARC1\s*(;|$)/i.test(r));
    if (!dmarc) return { name, status: 'fail', detail: 'no DMARC record (Gmail and Yahoo require one of bulk senders)', fix: `add TXT ${dmarcName} "v=DMARC1; p=none; rua=mailto:dmarc@${domain}", then tighten to quarantine` };
    const policy = /(?:^|;)\s*p=\s*([a-z]+)/i.exec(dmarc)?.[1]?.toLowerCase();
    if (policy === 'quarantine' || policy === 'reject') return { name, status: 'ok', detail: `policy ${policy}` };
    if (policy === 'none') return { name, status: 'warn', detail: 'policy none: monitoring only, spoofed mail is still delivered', fix: `once reports show your mail aligns, set p=quarantine in ${dmarcName}` };
    return { name, status: 'fail', detail: `"${dmarc}" has no valid p= policy`, fix: `set p=none, quarantine or reject in ${dmarcName}` };
  });
  return results;
}

export const STRIPE_EMAILS_NOTE: CheckResult = {
  name: "Stripe's own customer emails",
  status: 'info',
  detail: 'Stripe can email customers about failed payments and expiring cards itself; with Lifeline on, customers would get both',
  fix: 'turn off "Send emails when card payments fail" and "Send emails about expiring cards" in Stripe Dashboard -> Settings -> Billing -> Subscriptions and emails (Manage failed payments / Customer emails)',
};

export async function runDoctor(deps: DoctorDeps): Promise<CheckResult[]> {
  let config: Config;
  try {
    config = loadConfig(deps.env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    return [{ name: 'configuration', status: 'fail', detail: err.message, fix: 'fix the variable named above' }];
  }
  const results: CheckResult[] = [{ name: 'configuration', status: 'ok', detail: 'every variable parses' }];
  results.push(await checkDatabase(config));
  results.push(...checkSecrets(deps.env));
  results.push(checkPublicUrl(config, deps.env));
  results.push(await checkTemplates(config));
  results.push(...checkBrand(deps.env));
  results.push(await checkStripeEndpoint(config, deps.stripe ?? stripeClientFromConfig(config, { maxNetworkRetries: 1 })));
  results.push(...(await checkSendingDns(config.email.from, deps.resolver)));
  results.push(STRIPE_EMAILS_NOTE);
  return results;
}

const MARK: Record<CheckStatus, string> = { ok: 'ok  ', warn: 'WARN', fail: 'FAIL', info: 'note' };

export function formatChecks(results: CheckResult[]): string[] {
  const lines: string[] = [];
  for (const r of results) {
    lines.push(`[${MARK[r.status]}] ${r.name}: ${r.detail}`);
    if (r.fix && r.status !== 'ok') lines.push(`       fix: ${r.fix}`);
  }
  const failed = results.filter((r) => r.status === 'fail').length;
  const warned = results.filter((r) => r.status === 'warn').length;
  lines.push(failed === 0 ? `All checks passed${warned ? ` (${warned} warning(s))` : ''}.` : `${failed} check(s) failed${warned ? `, ${warned} warning(s)` : ''}.`);
  return lines;
}
