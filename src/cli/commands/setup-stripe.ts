// `lifeline setup stripe`: create or update the Stripe webhook endpoint (see stripe/webhook-setup.ts).
import type { Command } from 'commander';
import { ensureWebhookEndpoint, type WebhookSetupResult } from '../../stripe/webhook-setup.ts';
import { STRIPE_API_VERSION } from '../../stripe/client.ts';
import { CliError } from '../cli-error.ts';
import { cliConfig, cliStripe } from '../stripe-context.ts';

type Print = (line: string) => void;

export async function setupStripe(options: { recreate?: boolean; env?: Record<string, string | undefined>; print?: Print }): Promise<WebhookSetupResult> {
  const print = options.print ?? ((line: string) => console.log(line));
  const env = options.env ?? process.env;
  const config = cliConfig(env);
  if (!env.PUBLIC_URL?.trim()) {
    throw new CliError('PUBLIC_URL is not set: set it to the address where Stripe can reach this service (e.g. https://lifeline.example.com); for local development use `stripe listen --forward-to localhost:3000/webhooks/stripe` instead of an endpoint', 1);
  }
  const host = new URL(config.publicUrl).hostname;
  if (host === 'localhost' || host === '127.0.0.1' || host === '::1' || host === '[::1]') {
    throw new CliError(`PUBLIC_URL=${config.publicUrl} is not reachable from Stripe: use your public https address, or \`stripe listen --forward-to ${config.publicUrl}/webhooks/stripe\` for local development`, 1);
  }
  const stripe = cliStripe(config);
  const result = await ensureWebhookEndpoint(stripe, { publicUrl: config.publicUrl, ...(options.recreate ? { recreate: true } : {}) });
  const what = { created: 'Created', recreated: 'Re-created', updated: 'Updated', unchanged: 'Already up to date:' }[result.action];
  print(`${what} Stripe webhook endpoint ${result.endpointId} → ${result.url}`);
  print(`  ${result.enabledEvents.length} event types, API version ${result.apiVersion ?? '(account default)'}`);
  if (result.secret) {
    print('');
    print('Signing secret (Stripe shows it only now; it is not stored by Lifeline):');
    print(`  STRIPE_WEBHOOK_SECRET=${result.secret}`);
    print('Set it in the service environment (e.g. in .env) and restart Lifeline.');
  } else {
    print('The signing secret is unchanged: keep STRIPE_WEBHOOK_SECRET as it is (Stripe shows a secret only when an endpoint is created; `--recreate` makes a new one).');
  }
  if (result.apiVersionMismatch) {
    print(`Warning: the endpoint sends events at API version ${result.apiVersion}, Lifeline reads ${STRIPE_API_VERSION}; Stripe cannot change it in place: run \`lifeline setup stripe --recreate\` (new secret) to fix it.`);
  }
  if (result.duplicates.length > 0) {
    print(`Warning: other endpoints with the same URL (${result.duplicates.join(', ')}) deliver every event again; delete them in the Stripe dashboard.`);
  }
  return result;
}

export function registerSetupStripe(program: Command): void {
  const setup = program.command('setup').description('connect Lifeline to outside services');
  setup
    .command('stripe')
    .description(
      'create or update the Stripe webhook endpoint for PUBLIC_URL/webhooks/stripe with the event types and API version Lifeline reads; prints the signing secret when it creates one. Needs STRIPE_SECRET_KEY and PUBLIC_URL. Idempotent (found by URL).',
    )
    .option('--recreate', 'delete and re-create the endpoint (new signing secret; needed to change its API version)')
    .action(async (opts: { recreate?: boolean }) => {
      await setupStripe({ ...(opts.recreate ? { recreate: true } : {}) });
    });
}
