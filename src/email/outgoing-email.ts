// A claimed message rendered into the email that goes to the provider: its template with the
// message's stored input, the contact's and account's traits and the invoice as read at claim
// time; signed links (tracked clicks, one-click unsubscribe, the card-update link) and headers.
// Deterministic for a given row and `now`: a re-send of a persisted batch renders the same bytes.
import type { Config } from '../config.ts';
import { cardUpdateUrl, customerCardUpdateUrl, usesCardUpdateLink } from '../stripe/card-update-link.ts';
import type { ClaimedMessage } from './outbox-store.ts';
import type { TemplateCatalog } from './template-catalog.ts';
import type { RenderData } from './template-render.ts';
import type { TokenCodec } from './tokens.ts';
import type { OutgoingEmail } from './transport.ts';

export interface OutgoingEmailDeps {
  config: Pick<Config, 'publicUrl' | 'email' | 'brand'>;
  templates: TemplateCatalog;
  /** Several link tokens per email: hold one codec per sender, its keys derived once (tokens.ts). */
  links: TokenCodec;
}

/** A click-tracking redirect to `url` for the message. */
function trackedLink(deps: OutgoingEmailDeps, messageId: string, url: string): string {
  return `${deps.config.publicUrl}/r/${deps.links.sign('click', { m: messageId, u: url })}`;
}

/** `now` is the batch's creation time, so a re-send renders the same bytes as the first request. */
export function renderOutgoingEmail(deps: OutgoingEmailDeps, row: ClaimedMessage, now: Date): OutgoingEmail {
  const { config, templates, links } = deps;
  const trigger = row.trigger ?? {};
  const invoice =
    row.invoice_currency !== null
      ? {
          amount_due: row.invoice_amount_due!,
          amount_remaining: row.invoice_amount_remaining!,
          currency: row.invoice_currency,
          hosted_invoice_url: row.invoice_hosted_url,
          next_payment_attempt: row.invoice_next_payment_attempt,
        }
      : null;
  const traits = row.contact_traits ?? {};
  const marketing = row.category !== 'transactional';
  // Only the message id: the unsubscribe route reads the address from the message row, so the
  // link carries no personal data even encrypted.
  const unsubscribe = marketing
    ? `${config.publicUrl}/unsubscribe/${links.sign('unsubscribe', { m: row.id })}`
    : null;
  // Dunning emails fix the card through our never-expiring update-card link (a fresh Billing
  // Portal session per click); payment confirmation (3-D Secure) needs the hosted invoice page.
  const invoiceId = typeof trigger.invoiceId === 'string' ? trigger.invoiceId : null;
  const contactId = row.contact_id === null ? null : Number(row.contact_id);
  const customerId = typeof trigger.customerId === 'string' ? trigger.customerId : null;
  const cardUpdate = !usesCardUpdateLink(row.template)
    ? null
    : invoice && invoiceId
      ? cardUpdateUrl(config.publicUrl, links, invoiceId, contactId)
      : customerId
        ? customerCardUpdateUrl(config.publicUrl, links, customerId, contactId)
        : null;
  const actionTarget = cardUpdate ?? invoice?.hosted_invoice_url ?? config.brand.appUrl;
  const data: RenderData = {
    contact: { email: row.to_email, firstName: typeof traits.firstName === 'string' ? traits.firstName : typeof traits.name === 'string' ? String(traits.name).split(' ')[0] : null, traits },
    account: row.account_traits ? { traits: row.account_traits } : null,
    invoice: invoice
      ? {
          amountDue: invoice.amount_due,
          amountRemaining: invoice.amount_remaining,
          currency: invoice.currency,
          hostedInvoiceUrl: invoice.hosted_invoice_url ? trackedLink(deps, row.id, invoice.hosted_invoice_url) : null,
          nextPaymentAttempt: invoice.next_payment_attempt?.toISOString() ?? null,
          // Truthful copy: promise another try only when Stripe has one scheduled and the decline
          // did not advise against it (the final attempt has next_payment_attempt null).
          retryPlanned: invoice.next_payment_attempt !== null && row.invoice_retry_advised_against !== true,
        }
      : null,
    links: { action: trackedLink(deps, row.id, actionTarget), unsubscribe, app: trackedLink(deps, row.id, config.brand.appUrl) },
    subject: row.subject,
    locale: typeof traits.locale === 'string' ? traits.locale : config.brand.locale,
    options: row.options ?? {},
    trigger,
    now,
  };
  const rendered = templates.render(row.template, data);
  const headers: Record<string, string> = { 'X-Lifeline-Message-Id': row.id };
  if (unsubscribe) {
    // RFC 8058 one-click unsubscribe (Gmail/Yahoo bulk-sender rules); mailto optional.
    headers['List-Unsubscribe'] = config.email.unsubscribeMailto
      ? `<${unsubscribe}>, <mailto:${config.email.unsubscribeMailto.replace(/^.*<|>$/g, '')}?subject=unsubscribe>`
      : `<${unsubscribe}>`;
    headers['List-Unsubscribe-Post'] = 'List-Unsubscribe=One-Click';
  }
  return {
    id: row.id,
    from: config.email.from,
    to: row.to_email!,
    replyTo: config.email.replyTo,
    subject: rendered.subject,
    html: rendered.html,
    text: rendered.text,
    headers,
    template: row.template,
  };
}
