// Stripe test helpers: envelopes around fixture objects, signed with the real SDK.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Stripe from 'stripe';
import type { FastifyInstance } from 'fastify';
import { WEBHOOK_SECRET } from './build.ts';

const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'stripe');

type Obj = Record<string, unknown>;

/** A fixture file's Stripe object (pay-rails files wrap it in `{ object, previous_attributes }`). */
export function fixture(name: string): { object: Obj; previous_attributes?: Obj } {
  const data = JSON.parse(readFileSync(path.join(FIXTURES, name), 'utf8')) as Obj;
  if (typeof data.object === 'object' && data.object !== null) return data as { object: Obj; previous_attributes?: Obj };
  return { object: data };
}

let seq = 0;
export function envelope(type: string, object: Obj, options: { id?: string; created?: number | Date; previous?: Obj; requestId?: string | null } = {}) {
  const created = options.created instanceof Date ? Math.floor(options.created.getTime() / 1000) : (options.created ?? 1_760_000_000);
  return {
    id: options.id ?? `evt_test_${process.pid}_${++seq}`,
    object: 'event',
    api_version: '2026-10-28.endive',
    created,
    data: { object, ...(options.previous ? { previous_attributes: options.previous } : {}) },
    livemode: false,
    pending_webhooks: 1,
    request: { id: options.requestId === undefined ? 'req_test' : options.requestId, idempotency_key: options.requestId ? `idem_${options.requestId}` : null },
    type,
  };
}

export function sign(payload: string, options: { secret?: string; timestamp?: number } = {}): string {
  return Stripe.webhooks.generateTestHeaderString({ payload, secret: options.secret ?? WEBHOOK_SECRET, ...(options.timestamp ? { timestamp: options.timestamp } : {}) });
}

/** POST a signed event the way Stripe does (raw JSON body, Stripe-Signature header). */
export async function deliver(app: FastifyInstance, event: object, options: { secret?: string; timestamp?: number; tamper?: (s: string) => string } = {}) {
  const payload = JSON.stringify(event);
  const header = sign(payload, options);
  return app.inject({
    method: 'POST',
    url: '/webhooks/stripe',
    headers: { 'content-type': 'application/json; charset=utf-8', 'stripe-signature': header },
    payload: options.tamper ? options.tamper(payload) : payload,
  });
}

/** A current-shape invoice (subscription under parent.subscription_details). */
export function invoice(fields: Partial<{
  id: string; customer: string; subscription: string | null; status: string; currency: string; amount_due: number;
  amount_paid: number; attempt_count: number; next_payment_attempt: number | null; billing_reason: string; paid_at: number | null;
  customer_email: string; created: number;
}> = {}): Obj {
  const amountDue = fields.amount_due ?? 4900;
  const status = fields.status ?? 'open';
  const amountPaid = fields.amount_paid ?? (status === 'paid' ? amountDue : 0);
  return {
    id: fields.id ?? 'in_test_1',
    object: 'invoice',
    customer: fields.customer ?? 'cus_test_1',
    customer_email: fields.customer_email ?? 'billing@acme.test',
    customer_name: 'Acme Billing',
    status,
    currency: fields.currency ?? 'usd',
    amount_due: amountDue,
    amount_paid: amountPaid,
    amount_remaining: amountDue - amountPaid,
    attempt_count: fields.attempt_count ?? 1,
    attempted: true,
    next_payment_attempt: fields.next_payment_attempt === undefined ? 1_760_300_000 : fields.next_payment_attempt,
    billing_reason: fields.billing_reason ?? 'subscription_cycle',
    hosted_invoice_url: `https://invoice.stripe.com/i/${fields.id ?? 'in_test_1'}`,
    created: fields.created ?? 1_759_990_000,
    livemode: false,
    parent: fields.subscription === null ? null : { type: 'subscription_details', subscription_details: { subscription: fields.subscription ?? 'sub_test_1', metadata: {} } },
    status_transitions: { paid_at: fields.paid_at ?? (status === 'paid' ? 1_760_400_000 : null) },
  };
}

export function subscription(fields: Partial<{
  id: string; customer: string; status: string; unit_amount: number; quantity: number; interval: string; currency: string;
  cancellation_reason: string | null; feedback: string | null; cancel_at_period_end: boolean;
}> = {}): Obj {
  const currency = fields.currency ?? 'usd';
  return {
    id: fields.id ?? 'sub_test_1',
    object: 'subscription',
    customer: fields.customer ?? 'cus_test_1',
    status: fields.status ?? 'active',
    currency,
    cancel_at_period_end: fields.cancel_at_period_end ?? false,
    cancellation_details: { reason: fields.cancellation_reason ?? null, feedback: fields.feedback ?? null, comment: null },
    created: 1_750_000_000,
    trial_start: null,
    trial_end: null,
    items: {
      object: 'list',
      data: [
        {
          id: 'si_test_1',
          object: 'subscription_item',
          quantity: fields.quantity ?? 1,
          current_period_end: 1_762_000_000,
          price: { id: 'price_test_1', object: 'price', product: 'prod_test_1', currency, unit_amount: fields.unit_amount ?? 4900, recurring: { interval: fields.interval ?? 'month', interval_count: 1 } },
        },
      ],
    },
  };
}
