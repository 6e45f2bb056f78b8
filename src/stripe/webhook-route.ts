import Stripe from 'stripe';
import type { FastifyInstance } from 'fastify';
import type { AppDeps } from '../app-deps.ts';
import { HttpError, ErrorSchema } from '../http/errors.ts';
import { storeStripeEvent, type StripeEnvelope } from './event-inbox.ts';
import { jsonForJsonb, stripeEnvelopeProblem } from './envelope-check.ts';

const AckSchema = {
  type: 'object',
  properties: { received: { type: 'boolean' }, duplicate: { type: 'boolean' } },
  required: ['received', 'duplicate'],
} as const;

/**
 * POST /webhooks/stripe. Registered in its own scope so the JSON parser here keeps the raw
 * bytes: the signature is computed over them, and re-serialized JSON would not verify.
 */
export async function stripeWebhookRoutes(app: FastifyInstance, deps: AppDeps): Promise<void> {
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));

  app.post(
    '/webhooks/stripe',
    {
      // Exempt from rate limits (Stripe retries on its own schedule). Said here rather than only
      // by the global allowList, so the route gets no rate-limit hook at all: that hook would
      // compute a key (and test the allowList) on every delivery just to let it through.
      config: { rateLimit: false },
      schema: {
        summary: 'Receive a Stripe webhook event',
        description:
          'Verifies the Stripe-Signature header against the raw body, stores the event once (keyed by event id) and acknowledges; processing is asynchronous. 400 on a missing or bad signature, 503 when STRIPE_WEBHOOK_SECRET is unset or the event could not be stored (Stripe retries).',
        tags: ['webhooks'],
        headers: { type: 'object', properties: { 'stripe-signature': { type: 'string' } } },
        response: { 200: AckSchema, 400: ErrorSchema, 503: ErrorSchema },
      },
    },
    async (request) => {
      const secret = deps.config.stripeWebhookSecret;
      if (!secret) {
        throw new HttpError(503, 'not_configured', 'Stripe webhooks are disabled: set STRIPE_WEBHOOK_SECRET (whsec_…) to enable them');
      }
      const signature = request.headers['stripe-signature'];
      if (typeof signature !== 'string' || signature === '') {
        throw new HttpError(400, 'missing_signature', 'Missing Stripe-Signature header');
      }
      const raw = request.body;
      if (!Buffer.isBuffer(raw) || raw.length === 0) {
        throw new HttpError(400, 'empty_body', 'Empty request body');
      }
      let event: StripeEnvelope;
      try {
        // receivedAt (ms) from our clock: the 300 s tolerance is judged against injectable time.
        event = Stripe.webhooks.constructEvent(raw, signature, secret, undefined, undefined, deps.clock.now().getTime()) as unknown as StripeEnvelope;
      } catch (err) {
        // The SDK's message can quote the payload: log only the kind of failure.
        request.log.info({ reason: (err as { type?: string }).type ?? 'parse_error' }, 'stripe signature rejected');
        throw new HttpError(400, 'invalid_signature', 'Stripe signature verification failed (wrong secret, modified body or timestamp outside the tolerance)');
      }
      // A signed payload that is not an event can never be stored: retrying it for 3 days helps
      // no one, so it is a 400 (visible as failed in Stripe's dashboard), never a 503 or a 500.
      const problem = stripeEnvelopeProblem(event);
      if (problem) {
        throw new HttpError(400, 'invalid_event', `Signed payload is not a storable Stripe event: ${problem}`);
      }
      let inserted: boolean;
      try {
        inserted = await storeStripeEvent(deps.sql, event, jsonForJsonb(raw.toString('utf8')), deps.clock.now());
        if (inserted) deps.inboxNotifier?.poke();
      } catch (err) {
        request.log.error({ err: { message: (err as Error).message, code: (err as { code?: string }).code }, eventId: event.id }, 'could not store stripe event');
        // Never acknowledge an event we did not keep: Stripe retries on 5xx.
        throw new HttpError(503, 'storage_unavailable', 'The event could not be stored; retry later', undefined, { 'retry-after': '5' });
      }
      request.log.info({ eventId: event.id, type: event.type, duplicate: !inserted }, 'stripe event stored');
      return { received: true, duplicate: !inserted };
    },
  );
}
