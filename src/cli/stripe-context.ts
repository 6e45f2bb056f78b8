// What the Stripe commands (setup stripe, backfill, replay) need from the environment: the
// configuration, a Stripe client (STRIPE_SECRET_KEY, STRIPE_API_BASE) and, for the ones that
// write state, the database (DATABASE_URL or the embedded one), migrated.
import type Stripe from 'stripe';
import { ConfigError, loadConfig, type Config } from '../config.ts';
import { createSql, type Sql } from '../db/connection.ts';
import { startEmbeddedPostgres } from '../db/embedded.ts';
import { runMigrations } from '../db/migrate.ts';
import { stripeClientFromConfig } from '../stripe/client.ts';
import { CliError } from './cli-error.ts';

export function cliConfig(env: Record<string, string | undefined> = process.env): Config {
  try {
    return loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) throw new CliError(err.message, 1);
    throw err;
  }
}

export function cliStripe(config: Config, options: { maxNetworkRetries?: number } = {}): Stripe {
  const stripe = stripeClientFromConfig(config, options);
  if (!stripe) {
    throw new CliError('STRIPE_SECRET_KEY is not set: create a key at https://dashboard.stripe.com/apikeys (a restricted key with read access to customers, subscriptions, invoices and payment methods, and write access to webhook endpoints is enough) and set STRIPE_SECRET_KEY=sk_… or rk_…', 1);
  }
  return stripe;
}

export interface CliDatabase {
  sql: Sql;
  close(): Promise<void>;
}

/** The service's database, migrated (as `npm run migrate` would), for commands that write state. */
export async function openCliDatabase(config: Config): Promise<CliDatabase> {
  const embedded = config.databaseUrl ? null : await startEmbeddedPostgres(config.embeddedPg);
  const url = config.databaseUrl ?? embedded!.url;
  try {
    await runMigrations(url);
  } catch (err) {
    await embedded?.stop();
    throw new CliError(`database ${config.databaseUrl ? 'at DATABASE_URL' : '(embedded)'} is not usable: ${(err as Error).message}`, 1);
  }
  const sql = createSql(url, { max: 4, applicationName: 'lifeline-cli' });
  return {
    sql,
    async close() {
      await sql.end({ timeout: 5 });
      await embedded?.stop();
    },
  };
}
