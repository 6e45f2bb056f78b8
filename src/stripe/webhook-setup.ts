// `lifeline setup stripe`: make the Stripe webhook endpoint for PUBLIC_URL/webhooks/stripe exist,
// enabled, listening to exactly the event types the projection reads, at the API version the SDK
// (and so the projection's parsers) is pinned to. Idempotent: the endpoint is found by its URL.
import type Stripe from 'stripe';
import { STRIPE_API_VERSION } from './client.ts';
import { PROJECTED_STRIPE_EVENT_TYPES } from './projector.ts';

export const WEBHOOK_PATH = '/webhooks/stripe';

export interface WebhookSetupResult {
  action: 'created' | 'updated' | 'unchanged' | 'recreated';
  endpointId: string;
  url: string;
  enabledEvents: string[];
  apiVersion: string | null;
  /** whsec_…: only when the endpoint was (re)created; Stripe returns it only then */
  secret: string | undefined;
  /** an existing endpoint's API version differs from ours (Stripe cannot change it in place) */
  apiVersionMismatch: boolean;
  /** other endpoints with the same URL (left alone; each would deliver every event again) */
  duplicates: string[];
}

export function webhookUrl(publicUrl: string): string {
  return publicUrl.replace(/\/$/, '') + WEBHOOK_PATH;
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && [...a].sort().join() === [...b].sort().join();
}

export async function ensureWebhookEndpoint(stripe: Stripe, options: { publicUrl: string; recreate?: boolean }): Promise<WebhookSetupResult> {
  const url = webhookUrl(options.publicUrl);
  const events = [...PROJECTED_STRIPE_EVENT_TYPES];
  const matching: Stripe.WebhookEndpoint[] = [];
  for await (const endpoint of stripe.webhookEndpoints.list({ limit: 100 })) {
    if (endpoint.url === url) matching.push(endpoint);
  }
  const [existing, ...duplicates] = matching;
  const base = { url, enabledEvents: events, duplicates: duplicates.map((d) => d.id) };

  if (existing && options.recreate) {
    await stripe.webhookEndpoints.del(existing.id);
  } else if (existing) {
    const mismatch = existing.api_version !== null && existing.api_version !== STRIPE_API_VERSION;
    const upToDate = sameSet(existing.enabled_events, events) && existing.status === 'enabled';
    if (upToDate) {
      return { ...base, action: 'unchanged', endpointId: existing.id, apiVersion: existing.api_version, secret: undefined, apiVersionMismatch: mismatch };
    }
    const updated = await stripe.webhookEndpoints.update(existing.id, {
      enabled_events: events as Stripe.WebhookEndpointUpdateParams.EnabledEvent[],
      disabled: false,
    });
    return { ...base, action: 'updated', endpointId: updated.id, apiVersion: updated.api_version, secret: undefined, apiVersionMismatch: mismatch };
  }

  const created = await stripe.webhookEndpoints.create({
    url,
    enabled_events: events as Stripe.WebhookEndpointCreateParams.EnabledEvent[],
    api_version: STRIPE_API_VERSION as Stripe.WebhookEndpointCreateParams.ApiVersion,
    description: 'Lifeline (created by `lifeline setup stripe`)',
  });
  return {
    ...base,
    action: existing ? 'recreated' : 'created',
    endpointId: created.id,
    apiVersion: created.api_version,
    secret: created.secret,
    apiVersionMismatch: false,
  };
}
