// What the HTTP layer needs, passed in explicitly (no module-level singletons). A module of its
// own so routes can name it without importing app.ts (which imports every route: a cycle).
import type { Logger } from 'pino';
import type { PgBoss } from 'pg-boss';
import type { Config } from './config.ts';
import type { Clock } from './clock.ts';
import type { Sql } from './db/connection.ts';
import type { TemplateCatalog } from './email/template-catalog.ts';
import type { InboxNotifier } from './worker/inbox-notifier.ts';
import type { ProviderMetrics } from './observability/provider-metrics.ts';

/** Everything the HTTP layer needs, passed in explicitly (no module-level singletons). */
export interface AppDeps {
  config: Config;
  sql: Sql;
  clock: Clock;
  logger: Logger;
  /** absent in tests that build the app alone */
  boss?: PgBoss;
  templates?: TemplateCatalog;
  /** wakes the inbox consumers after an ingest (coalesced NOTIFY) */
  inboxNotifier?: InboxNotifier;
  /** HMAC secret for email tokens (unsubscribe, click links) */
  secret?: string;
  /** email provider latency and outcomes, shown by GET /metrics */
  providerMetrics?: ProviderMetrics;
}

