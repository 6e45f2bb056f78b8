// What the load generator sends: signed Stripe invoice.payment_failed deliveries (unique event
// id, varied invoice/customer) and Segment batches of track events (unique messageIds).
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import Stripe from 'stripe';
import { BENCH_DIR } from './child.ts';

export const WEBHOOK_SECRET = 'whsec_bench_secret';
export const WRITE_KEY = 'wk_bench_write_key';
export const ADMIN_TOKEN = 'admin_bench_token';

export const BASELINE_STRIPE_TABLE = 'bench_baseline_stripe_events';
export const BASELINE_PRODUCT_TABLE = 'bench_baseline_product_events';

/** Unique per run: ids never collide with an earlier run against the same server. */
const RUN = randomBytes(4).toString('hex');

export interface HttpRequestSpec {
  method: 'POST';
  path: string;
  headers: Record<string, string>;
  body: string;
}

/**
 * A realistic invoice.payment_failed delivery (the pay-rails fixture, ~3.5 KB of JSON) in an
 * event envelope. Each call gives a new event id, invoice id and customer id (every event is a
 * customer's first failed payment: the worker creates the customer, contact, invoice, failure,
 * timeline fact and workflow run), signed at call time with Stripe.webhooks.generateTestHeaderString.
 * The email varies with the customer too: the fixture's single address would make every
 * customer resolve to one contact (contacts are matched by email), piling every workflow run
 * onto it, which real traffic does not do and which makes the worker's drain look quadratic.
 */
export function stripeDeliveries(options: { idPrefix?: string } = {}): {
  next(): HttpRequestSpec;
  count(): number;
  bytes: number;
  /** the ids and email of delivery `i` (1-based, as counted by count()) */
  ids(i: number): { eventId: string; invoiceId: string; customerId: string; email: string };
} {
  // idPrefix keeps ids apart from another generator's in the same run (same database).
  const prefix = options.idPrefix ?? 'bench';
  const fixture = JSON.parse(readFileSync(path.join(BENCH_DIR, '..', 'test', 'fixtures', 'stripe', 'pay-rails', 'invoice.payment_failed.json'), 'utf8')) as { object: Record<string, unknown> };
  const envelope = {
    id: '@@EVT@@',
    object: 'event',
    api_version: '2026-10-28.endive',
    created: Math.floor(Date.now() / 1000),
    data: { object: { ...fixture.object, id: '@@INV@@', customer: '@@CUS@@', customer_email: '@@CUS@@@example.org', customer_name: 'Customer @@CUS@@', livemode: false } },
    livemode: false,
    pending_webhooks: 1,
    request: { id: null, idempotency_key: null },
    type: 'invoice.payment_failed',
  };
  // Split once around the placeholders; each delivery is a join plus an HMAC.
  const parts = JSON.stringify(envelope).split(/@@(EVT|INV|CUS)@@/);
  let n = 0;
  const build = (i: number) => {
    let out = '';
    for (let k = 0; k < parts.length; k++) {
      if (k % 2 === 0) out += parts[k];
      else if (parts[k] === 'EVT') out += `evt_${prefix}_${RUN}_${i}`;
      else if (parts[k] === 'INV') out += `in_${prefix}_${RUN}_${i}`;
      else out += `cus_${prefix}_${RUN}_${i}`;
    }
    return out;
  };
  return {
    bytes: Buffer.byteLength(build(0)),
    count: () => n,
    ids: (i) => ({ eventId: `evt_${prefix}_${RUN}_${i}`, invoiceId: `in_${prefix}_${RUN}_${i}`, customerId: `cus_${prefix}_${RUN}_${i}`, email: `cus_${prefix}_${RUN}_${i}@example.org` }),
    next() {
      const body = build(++n);
      return {
        method: 'POST',
        path: '/webhooks/stripe',
        headers: {
          'content-type': 'application/json; charset=utf-8',
          'stripe-signature': Stripe.webhooks.generateTestHeaderString({ payload: body, secret: WEBHOOK_SECRET }),
          'user-agent': 'Stripe/1.0 (+https://stripe.com/docs/webhooks)',
        },
        body,
      };
    },
  };
}

const EVENTS = ['Report Exported', 'Dashboard Viewed', 'Seat Added', 'Integration Connected', 'Feature Used'];

export interface TrackMessage {
  type: 'track';
  messageId: string;
  userId: string;
  event: string;
  properties: Record<string, unknown>;
  context: Record<string, unknown>;
  timestamp: string;
}

/** Track events as analytics-node would send them: B2B context.groupId, a few properties (~450 B each). */
export function trackMessages(): { next(count: number): TrackMessage[]; bytesPerMessage: number } {
  let n = 0;
  const one = (): TrackMessage => {
    const i = ++n;
    const user = i % 5000;
    return {
      type: 'track',
      messageId: `msg_bench_${RUN}_${i}`,
      userId: `user_${user}`,
      event: EVENTS[i % EVENTS.length]!,
      properties: { plan: 'growth', seats: (i % 40) + 1, format: 'csv', durationMs: i % 1500, source: 'web' },
      context: {
        groupId: `acct_${user % 500}`,
        library: { name: 'analytics-node', version: '2.1.0' },
        ip: '203.0.113.7',
        userAgent: 'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15',
      },
      timestamp: new Date().toISOString(),
    };
  };
  const sample = JSON.stringify(one());
  n = 0;
  return {
    bytesPerMessage: Buffer.byteLength(sample),
    next(count) {
      return Array.from({ length: count }, one);
    },
  };
}

/** POST /v1/batch requests of `size` track messages each. */
export function batchRequests(size: number): { next(): HttpRequestSpec; bytes: number } {
  const messages = trackMessages();
  const bytes = Buffer.byteLength(JSON.stringify({ batch: messages.next(size) }));
  return {
    bytes,
    next() {
      return {
        method: 'POST',
        path: '/v1/batch',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${WRITE_KEY}` },
        body: JSON.stringify({ batch: messages.next(size), sentAt: new Date().toISOString() }),
      };
    },
  };
}
