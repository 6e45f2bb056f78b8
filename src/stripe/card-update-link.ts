// Update-card links that never expire (issue 13). A dunning email links to
// /billing/update/<token>; each visit creates a *fresh* Stripe Billing Portal session
// (flow payment_method_update) and redirects to it: portal session URLs expire after minutes,
// our link does not. Without a Stripe key, or when Stripe fails, the visitor gets a clear page
// with the invoice's hosted page instead (never a 500): they can still pay.
//
// The token is per contact + invoice (tokens.ts, kind 'card-update'): ids only (numeric contact
// id, Stripe invoice id), encrypted. Links already sent in the older signed-only format still
// open (they never expire).
// Every visit is recorded in card_update_sessions; the recovery ledger attributes a recovery to
// `portal_update` when the customer's card changed after such a portal session (reports).
import type { FastifyInstance } from 'fastify';
import type Stripe from 'stripe';
import type { AppDeps } from '../app-deps.ts';
import { tokenCodec, verifyToken, type TokenCodec } from '../email/tokens.ts';
import { stripeClientFromConfig } from './client.ts';
import { escapeHtml, SIMPLE_PAGE_HEADERS, simplePage } from '../http/simple-page.ts';

export const CARD_UPDATE_TOKEN_KIND = 'card-update';

/** i: the invoice (dunning), or k: the Stripe customer (pre-dunning: no invoice yet); c: the contact */
export type CardUpdateToken = { i?: string; k?: string; c: number | null };

const codecOf = (secret: string | TokenCodec) => (typeof secret === 'string' ? tokenCodec(secret) : secret);

/** The never-expiring update-card URL for one contact and invoice (`secret`: the secret, or the sender's codec of it). */
export function cardUpdateUrl(publicUrl: string, secret: string | TokenCodec, invoiceId: string, contactId: number | null): string {
  return `${publicUrl}/billing/update/${codecOf(secret).sign(CARD_UPDATE_TOKEN_KIND, { i: invoiceId, c: contactId } satisfies CardUpdateToken)}`;
}

/** The same link for a customer with no failed invoice (pre-dunning). */
export function customerCardUpdateUrl(publicUrl: string, secret: string | TokenCodec, customerId: string, contactId: number | null): string {
  return `${publicUrl}/billing/update/${codecOf(secret).sign(CARD_UPDATE_TOKEN_KIND, { k: customerId, c: contactId } satisfies CardUpdateToken)}`;
}

/**
 * Templates whose button is the update-card link: every dunning email except the payment
 * confirmation ones (a 3-D Secure confirmation happens on the hosted invoice page, not by
 * changing the card).
 */
export function usesCardUpdateLink(template: string): boolean {
  return (template.startsWith('dunning-') && !template.startsWith('dunning-confirm-payment')) || template.startsWith('pre-dunning-');
}

export interface CardUpdateRouteOptions {
  /** the Stripe client; default: built from the configuration (undefined without STRIPE_SECRET_KEY) */
  stripe?: Stripe | undefined;
}

export async function cardUpdateRoutes(app: FastifyInstance, deps: AppDeps, options: CardUpdateRouteOptions = {}): Promise<void> {
  const secret = deps.secret ?? '';
  // A visitor is waiting: one quick retry, a short timeout, then the fallback page.
  const stripe = 'stripe' in options ? options.stripe : stripeClientFromConfig(deps.config, { maxNetworkRetries: 1, timeoutMs: 8000 });
  const returnUrl = deps.config.recovery.portalReturnUrl ?? deps.config.brand.appUrl;

  app.get(
    '/billing/update/:token',
    {
      helmet: SIMPLE_PAGE_HEADERS,
      schema: {
        summary: 'Update-card link: a fresh Stripe Billing Portal session (payment method update), else the hosted invoice',
        tags: ['billing'],
        params: { type: 'object', properties: { token: { type: 'string', maxLength: 4096 } }, required: ['token'] },
      },
    },
    async (request, reply) => {
      const { token } = request.params as { token: string };
      const payload = verifyToken<CardUpdateToken>(secret, CARD_UPDATE_TOKEN_KIND, token, { acceptLegacy: true });
      if (!payload || (typeof payload.i !== 'string' && typeof payload.k !== 'string')) {
        return simplePage(reply, 400, 'This link is not valid', '<p>The link is incomplete or was changed. Please use the link from the email.</p>');
      }
      const contactId = typeof payload.c === 'number' ? payload.c : null;
      let invoice: { customer_id: string; hosted_invoice_url: string | null; status: string } | undefined;
      try {
        [invoice] =
          typeof payload.i === 'string'
            ? await deps.sql<{ customer_id: string; hosted_invoice_url: string | null; status: string }[]>`
                select customer_id, hosted_invoice_url, status from invoices where id = ${payload.i}`
            : await deps.sql<{ customer_id: string; hosted_invoice_url: string | null; status: string }[]>`
                select id as customer_id, null as hosted_invoice_url, 'none' as status from customers where id = ${payload.k!}`;
      } catch (err) {
        request.log.error({ error: (err as Error).message }, 'card-update link: invoice look-up failed');
        return simplePage(reply, 503, 'Please try again in a moment', '<p>We could not open your billing page just now. Please try the link again in a minute.</p>');
      }
      if (!invoice) return simplePage(reply, 404, 'Invoice not found', '<p>We could not find the invoice this link is about. Please contact us by replying to the email.</p>');

      const record = async (outcome: string, portalSessionId: string | null) => {
        try {
          await deps.sql`
            insert into card_update_sessions (customer_id, invoice_id, contact_id, portal_session_id, outcome, created_at)
            values (${invoice.customer_id}, ${payload.i ?? null}, ${contactId}, ${portalSessionId}, ${outcome}, ${deps.clock.now()})`;
        } catch (err) {
          // The customer must reach the billing page even if we cannot record the visit.
          request.log.error({ error: (err as Error).message }, 'card-update link: could not record the visit');
        }
      };

      const fallback = async (outcome: 'fallback_no_key' | 'fallback_error') => {
        await record(outcome, null);
        const hosted = invoice.hosted_invoice_url;
        if (!hosted || !/^https?:\/\//.test(hosted)) {
          return simplePage(reply, 200, 'Update your payment details', `<p>We could not open the card update page right now. Please sign in to ${escapeHtml(deps.config.brand.productName)} to update your card, or reply to the email and we will help.</p>`);
        }
        return simplePage(
          reply,
          200,
          'Pay your invoice',
          `<p>The card update page is not available right now. You can pay the invoice directly, with the same or a different card, on Stripe's secure invoice page:</p>` +
            `<p><a class="button" href="${escapeHtml(hosted)}">Open your invoice</a></p>`,
        );
      };

      if (!stripe) return fallback('fallback_no_key');
      try {
        const session = await stripe.billingPortal.sessions.create({
          customer: invoice.customer_id,
          return_url: returnUrl,
          flow_data: { type: 'payment_method_update' },
        });
        await record('portal', session.id);
        return reply.code(303).header('location', session.url).header('cache-control', 'no-store').send();
      } catch (err) {
        // Only the error's type and code: messages can echo request data.
        const e = err as { type?: string; code?: string; statusCode?: number };
        request.log.warn({ type: e.type, code: e.code, status: e.statusCode }, 'card-update link: portal session failed, showing the hosted invoice');
        return fallback('fallback_error');
      }
    },
  );
}
