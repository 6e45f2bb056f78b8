/**
 * Sample data (previews, tests and the start-up smoke render): realistic RenderData per template
 * key, so `npm run preview` and GET /v1/templates/:key/preview show a believable email.
 */
import type { RenderData } from './template-render.ts';

const DAY = 24 * 60 * 60 * 1000;

function isoInDays(days: number): string {
  return new Date(Date.now() + days * DAY).toISOString();
}

/** Realistic data for previewing a template; unknown keys get a generic contact. */
export function sampleData(key: string): RenderData {
  const contact = {
    email: 'dana.whitfield@northwind.example',
    firstName: 'Dana',
    traits: { name: 'Dana Whitfield', company: 'Northwind Traders', role: 'Head of Operations', timezone: 'America/New_York' },
  };
  const account = { traits: { name: 'Northwind Traders', plan: 'Team', seats: 12 } };
  const tracked = (target: string) => `https://links.example.com/c/7Hq2Xz?u=${encodeURIComponent(target)}&m=${key}`;
  const unsubscribe = `https://links.example.com/u/7Hq2Xz?m=${key}&sig=9f2c1e`;
  const app = 'https://app.example.com';
  const base: RenderData = {
    contact,
    account,
    links: { action: tracked(`${app}/home`), unsubscribe, app },
    locale: 'en-US',
    options: {},
    trigger: {},
  };

  if (key.startsWith('dunning-')) {
    const hosted = 'https://invoice.stripe.com/i/acct_1PqA2bLkX9/live_YWNjdF8xUHFBMmJMa1g5LF9RbW5vcDEyMw0200';
    const final = key === 'dunning-final';
    const updateCard = key.startsWith('dunning-update-card');
    const sca = key.startsWith('dunning-confirm-payment');
    return {
      ...base,
      invoice: {
        amountDue: 4900,
        amountRemaining: 4900,
        currency: 'usd',
        hostedInvoiceUrl: hosted,
        nextPaymentAttempt: final || updateCard || sca ? null : isoInDays(3),
        dueDate: final ? isoInDays(3) : null,
      },
      links: { action: tracked(updateCard ? `${app}/settings/billing/payment-method` : hosted), unsubscribe, app },
      trigger: {
        name: 'invoice.payment_failed',
        occurredAt: isoInDays(0),
        properties: {
          invoiceId: 'in_1QmnoP2bLkX9abcd',
          declineClass: sca ? 'sca' : updateCard ? 'hard' : 'soft',
          declineCode: sca ? 'authentication_required' : updateCard ? 'expired_card' : 'insufficient_funds',
          attemptCount: key === 'dunning-soft-3' ? 3 : key === 'dunning-soft-2' ? 2 : 1,
        },
      },
    };
  }
  if (key.startsWith('winback-')) {
    const involuntary = key.startsWith('winback-restore');
    return {
      ...base,
      links: {
        action: tracked(
          involuntary
            ? `${app}/settings/billing/restore`
            : key === 'winback-whats-new'
              ? 'https://example.com/changelog'
              : key === 'winback-offer' || key === 'winback-last-chance'
                ? `${app}/settings/billing/plans?coupon=COMEBACK20`
                : `${app}/settings/billing/plans`,
        ),
        unsubscribe,
        app,
      },
      options: { couponCode: 'COMEBACK20', couponDescription: '20% off your first three months' },
      trigger: {
        name: 'subscription.canceled',
        occurredAt: isoInDays(-1),
        properties: {
          reason: involuntary ? 'payment_failed' : 'cancellation_requested',
          feedback: key === 'winback-offer' ? 'too_expensive' : key === 'winback-whats-new' ? 'missing_features' : key === 'winback-reengage' ? 'unused' : null,
          voluntary: !involuntary,
          plan: 'Team',
        },
      },
    };
  }
  if (key.startsWith('expansion-')) {
    return {
      ...base,
      account: {
        traits: {
          name: 'Northwind Traders',
          plan: 'Team',
          next_plan: 'Business',
          usage: 9240,
          usage_limit: 10000,
          usage_pct: 92,
          usage_unit: 'tracked contacts',
          seats: 12,
        },
      },
      links: { action: tracked(`${app}/settings/billing/plans`), unsubscribe, app },
      trigger: { name: 'Paywall Hit', occurredAt: isoInDays(0), properties: { feature: 'SSO' } },
    };
  }
  const deepLinks: Record<string, string> = {
    'activation-create-project': '/projects/new',
    'activation-connect-integration': '/integrations',
    'activation-view-report': '/reports',
    'onboarding-day1': '/home',
    'onboarding-invite-to-project': '/projects/q3-launch/members',
    'onboarding-get-started': '/getting-started',
  };
  return {
    ...base,
    links: { action: tracked(`${app}${deepLinks[key] ?? '/home'}`), unsubscribe, app },
    trigger: { name: 'Signed Up', occurredAt: isoInDays(-1), properties: {} },
  };
}
