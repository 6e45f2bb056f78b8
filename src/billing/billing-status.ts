// In-product billing status (issue 13): what the product shows a user about their account's
// billing. GET /v1/billing-status?userId=… answers from the projected Stripe state (customers,
// subscriptions, invoices, payment_failures), never from Stripe directly: it is called on page
// loads and must be cheap.
//
// Which Stripe customers belong to a user: the customers linked to the user's contact
// (customers.contact_id, contacts.stripe_customer_id; see src/stripe/customer-contacts.ts for how
// those links are made) and the customers of every account (Segment group) the user is a member of.
//
// Several currencies: amounts are never added across currencies. The top-level amountDue/currency
// are those of the currency of the OLDEST unpaid failed invoice (the one closest to cancellation);
// `dues` lists every currency separately.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import cors from '@fastify/cors';
import type { AppDeps } from '../app-deps.ts';
import type { Queryable } from '../db/connection.ts';
import { embedScriptHeaders } from '../http/security-headers.ts';
import { signToken, verifyToken } from '../email/tokens.ts';
import { HttpError } from '../http/errors.ts';
import { presentedKey } from '../http/auth.ts';
import { cardUpdateUrl } from '../stripe/card-update-link.ts';
import { billingNoticeScript } from './billing-notice-script.ts';

export const BILLING_STATUS_TOKEN_KIND = 'billing-status';

export type BillingState = 'ok' | 'past_due' | 'action_required' | 'canceled';

export interface BillingStatus {
  state: BillingState;
  /** minor units of `currency`; 0 when nothing is due */
  amountDue: number;
  /** lower-case ISO 4217, null when nothing is due */
  currency: string | null;
  /** the never-expiring update-card link (or null when nothing is due) */
  updateUrl: string | null;
  /** whole days until Stripe cancels, by RECOVERY_CANCEL_AFTER_DAYS from the first failure; null when nothing is due */
  daysUntilCancel: number | null;
  /** whole days since the oldest unpaid failure; null when nothing is due */
  daysPastDue: number | null;
  /** every currency with something due, never added together */
  dues: Array<{ currency: string; amountDue: number; invoices: number }>;
}

interface FailedInvoiceRow {
  id: string;
  customer_id: string;
  currency: string;
  amount_remaining: number;
  hosted_invoice_url: string | null;
  first_failed_at: Date;
  decline_class: string | null;
  contact_id: number | null;
}

/** The Stripe customer ids of a user: their own and those of their accounts. */
async function customersOfUser(db: Queryable, userId: string): Promise<{ contactId: number | null; customerIds: string[] }> {
  const rows = await db<{ contact_id: number | null; customer_id: string | null }[]>`
    with c as (select id, stripe_customer_id from contacts where user_id = ${userId})
    select c.id as contact_id, cu.id as customer_id from c join customers cu on cu.contact_id = c.id
    union select c.id, c.stripe_customer_id from c where c.stripe_customer_id is not null
    union select c.id, a.stripe_customer_id from c join account_members m on m.contact_id = c.id join accounts a on a.id = m.account_id
      where a.stripe_customer_id is not null
    union select c.id, null from c`.execute();
  const customerIds = [...new Set(rows.map((r) => r.customer_id).filter((id): id is string => id !== null))].sort();
  return { contactId: rows[0]?.contact_id ?? null, customerIds };
}

/**
 * The update-card link for one failed invoice. The one place to change it: today the
 * never-expiring /billing/update/<token> link of the Stripe-actions work (src/stripe/card-update-link.ts),
 * which itself falls back to the hosted invoice page without a Stripe key.
 */
export function billingStatusUpdateUrl(deps: AppDeps, invoice: FailedInvoiceRow, contactId: number | null): string | null {
  if (!deps.secret) return invoice.hosted_invoice_url;
  return cardUpdateUrl(deps.config.publicUrl, deps.secret, invoice.id, contactId);
}

const DAY_MS = 86_400_000;

export async function billingStatusOfUser(deps: AppDeps, userId: string): Promise<BillingStatus> {
  const { contactId, customerIds } = await customersOfUser(deps.sql, userId);
  const none: BillingStatus = { state: 'ok', amountDue: 0, currency: null, updateUrl: null, daysUntilCancel: null, daysPastDue: null, dues: [] };
  if (customerIds.length === 0) return none;
  // Open invoices with at least one failed attempt: what the customer owes after a failure.
  const failed = await deps.sql<FailedInvoiceRow[]>`
    select i.id, i.customer_id, i.currency, i.amount_remaining, i.hosted_invoice_url,
      coalesce(pf.first_failed_at, i.stripe_created, i.updated_at) as first_failed_at,
      pf.decline_class, cu.contact_id
    from invoices i
    left join customers cu on cu.id = i.customer_id
    left join lateral (
      select min(occurred_at) as first_failed_at,
        (array_agg(decline_class order by occurred_at desc))[1] as decline_class
      from payment_failures where invoice_id = i.id) pf on true
    where i.customer_id = any(${customerIds}::text[]) and i.status = 'open' and i.amount_remaining > 0
      and (i.attempt_count > 0 or pf.first_failed_at is not null)
    order by first_failed_at, i.id`.execute();
  const now = deps.clock.now().getTime();
  if (failed.length > 0) {
    const oldest = failed[0]!;
    const dues = new Map<string, { currency: string; amountDue: number; invoices: number }>();
    for (const row of failed) {
      const due = dues.get(row.currency) ?? { currency: row.currency, amountDue: 0, invoices: 0 };
      due.amountDue += Number(row.amount_remaining);
      due.invoices += 1;
      dues.set(row.currency, due);
    }
    const pastDueMs = Math.max(0, now - new Date(oldest.first_failed_at).getTime());
    const daysPastDue = Math.floor(pastDueMs / DAY_MS);
    // 3-D Secure / authentication needed: the customer must act, a retry alone cannot succeed.
    const actionRequired = failed.some((r) => r.decline_class === 'sca');
    return {
      state: actionRequired ? 'action_required' : 'past_due',
      amountDue: dues.get(oldest.currency)!.amountDue,
      currency: oldest.currency,
      updateUrl: billingStatusUpdateUrl(deps, oldest, oldest.contact_id ?? contactId),
      daysUntilCancel: Math.max(0, deps.config.billingStatus.cancelAfterDays - Math.ceil(pastDueMs / DAY_MS)),
      daysPastDue,
      dues: [...dues.values()],
    };
  }
  // Nothing owed: canceled when the user has subscriptions and none of them is alive any more.
  const [subs] = await deps.sql<{ alive: number; ended: number }[]>`
    select count(*) filter (where status in ('active', 'trialing', 'past_due', 'unpaid', 'incomplete', 'paused'))::int as alive,
      count(*) filter (where status in ('canceled', 'incomplete_expired'))::int as ended
    from subscriptions where customer_id = any(${customerIds}::text[])`.execute();
  if (subs && subs.alive === 0 && subs.ended > 0) return { ...none, state: 'canceled' };
  return none;
}

type BillingStatusToken = { u: string; x: number };

/** A browser token for one user, valid until `expiresAt`. */
export function mintBillingStatusToken(secret: string, userId: string, expiresAt: Date): string {
  return signToken(secret, BILLING_STATUS_TOKEN_KIND, { u: userId, x: expiresAt.getTime() } satisfies BillingStatusToken);
}

function sameSecret(a: string, b: string): boolean {
  // hashed first so the comparison takes the same time whatever the lengths
  const x = createHash('sha256').update(a).digest();
  const y = createHash('sha256').update(b).digest();
  return timingSafeEqual(x, y);
}

/** The user the request may read: any with the write key, only the token's with a token. */
function authorizedUser(deps: AppDeps, request: FastifyRequest, askedUserId: string | undefined): string {
  const writeKey = deps.config.writeKey;
  if (!writeKey || !deps.secret) throw new HttpError(503, 'not_configured', 'Billing status is disabled: set LIFELINE_WRITE_KEY to enable it');
  const presented = presentedKey(request) ?? (request.query as { token?: string }).token;
  if (!presented) throw new HttpError(401, 'unauthorized', 'Missing credentials: send "Authorization: Bearer <write key or billing-status token>"');
  if (sameSecret(presented, writeKey)) {
    if (!askedUserId) throw new HttpError(400, 'invalid_request', 'userId is required');
    return askedUserId;
  }
  const token = verifyToken<BillingStatusToken>(deps.secret, BILLING_STATUS_TOKEN_KIND, presented);
  if (!token || typeof token.u !== 'string' || typeof token.x !== 'number') throw new HttpError(401, 'unauthorized', 'Invalid credentials');
  if (token.x <= deps.clock.now().getTime()) throw new HttpError(401, 'token_expired', 'The billing-status token has expired: mint a new one');
  if (askedUserId !== undefined && askedUserId !== token.u) throw new HttpError(403, 'forbidden', 'This token is for another user');
  return token.u;
}

export async function billingStatusRoutes(app: FastifyInstance, deps: AppDeps): Promise<void> {
  const origins = new Set(deps.config.billingStatus.allowedOrigins);
  // CORS only for the browser path (this scope): the token travels in Authorization, never a cookie.
  await app.register(cors, {
    origin: (origin, callback) => callback(null, origin !== undefined && origins.has(origin)),
    methods: ['GET'],
    allowedHeaders: ['authorization'],
    credentials: false,
    maxAge: 600,
  });

  app.post(
    '/v1/billing-status/token',
    {
      schema: {
        summary: 'Mint a short-lived browser token for one user’s billing status (write key)',
        tags: ['billing'],
        security: [{ writeKey: [] }],
        body: { type: 'object', properties: { userId: { type: 'string', minLength: 1, maxLength: 512 } }, required: ['userId'], additionalProperties: false },
      },
    },
    async (request) => {
      const writeKey = deps.config.writeKey;
      if (!writeKey || !deps.secret) throw new HttpError(503, 'not_configured', 'Billing status is disabled: set LIFELINE_WRITE_KEY to enable it');
      const presented = presentedKey(request);
      if (!presented) throw new HttpError(401, 'unauthorized', 'Missing credentials: send "Authorization: Bearer <LIFELINE_WRITE_KEY>"');
      if (!sameSecret(presented, writeKey)) throw new HttpError(401, 'unauthorized', 'Invalid credentials');
      const { userId } = request.body as { userId: string };
      const expiresAt = new Date(deps.clock.now().getTime() + deps.config.billingStatus.tokenTtlSeconds * 1000);
      return { token: mintBillingStatusToken(deps.secret, userId, expiresAt), expiresAt: expiresAt.toISOString() };
    },
  );

  app.get(
    '/v1/billing-status',
    {
      schema: {
        summary: 'A user’s billing status: ok | past_due | action_required | canceled, amount due, update-card link',
        tags: ['billing'],
        querystring: {
          type: 'object',
          properties: { userId: { type: 'string', minLength: 1, maxLength: 512 }, token: { type: 'string', maxLength: 4096 } },
          additionalProperties: false,
        },
      },
    },
    async (request, reply) => {
      const { userId } = request.query as { userId?: string };
      const user = authorizedUser(deps, request, userId);
      reply.header('cache-control', 'no-store');
      return billingStatusOfUser(deps, user);
    },
  );

  // Loaded by <script src> from customers' apps (other origins): cross-origin CORP, nosniff.
  app.get('/embed/billing-notice.js', { helmet: embedScriptHeaders, schema: { hide: true } }, async (_request, reply) => {
    return reply
      .type('text/javascript; charset=utf-8')
      .header('cache-control', 'public, max-age=300')
      .send(billingNoticeScript(deps.config.brand.primaryColor, deps.config.brand.locale));
  });
}
