// The one place the service and the CLI build a Stripe API client from configuration.
// STRIPE_API_BASE (optional) points the real SDK at another server, e.g. the local fake Stripe
// API the tests run (test/helpers/fake-stripe-api.ts) or a stripe-mock; unset → api.stripe.com.
import Stripe from 'stripe';

/** The API version every request is made at and webhook endpoints are created with: the SDK's pinned one. */
export const STRIPE_API_VERSION: string = Stripe.API_VERSION;

export interface StripeClientOptions {
  secretKey: string;
  /** e.g. http://127.0.0.1:12111 ; unset → https://api.stripe.com */
  apiBase?: string | undefined;
  /** SDK retries on 429, 5xx (with Stripe-Should-Retry) and dropped connections, with exponential backoff */
  maxNetworkRetries?: number;
  /** per-request timeout, ms */
  timeoutMs?: number;
}

export function createStripeClient(options: StripeClientOptions): Stripe {
  const base = options.apiBase ? new URL(options.apiBase) : undefined;
  const protocol = base?.protocol === 'http:' ? 'http' : 'https';
  return new Stripe(options.secretKey, {
    apiVersion: STRIPE_API_VERSION as Stripe.LatestApiVersion,
    maxNetworkRetries: options.maxNetworkRetries ?? 5,
    timeout: options.timeoutMs ?? 30_000,
    appInfo: { name: 'lifeline' },
    // The SDK's own telemetry header carries timings of earlier requests; not needed.
    telemetry: false,
    ...(base
      ? { host: base.hostname, port: Number(base.port || (protocol === 'http' ? 80 : 443)), protocol }
      : {}),
  });
}

/** A client from the service configuration, or undefined when STRIPE_SECRET_KEY is unset. */
export function stripeClientFromConfig(config: { stripeSecretKey: string | undefined; stripeApiBase: string | undefined }, options: { maxNetworkRetries?: number; timeoutMs?: number } = {}): Stripe | undefined {
  if (!config.stripeSecretKey) return undefined;
  return createStripeClient({ secretKey: config.stripeSecretKey, apiBase: config.stripeApiBase, ...options });
}
