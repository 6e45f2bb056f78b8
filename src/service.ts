// Wires one Lifeline instance: database (external or embedded), migrations, pools, pg-boss,
// the HTTP app (api role) and the background consumers (worker role). server.ts owns the
// process; tests and the benchmark start services through this function too.
import type { FastifyInstance } from 'fastify';
import type { PgBoss } from 'pg-boss';
import type { Logger } from 'pino';
import { buildApp } from './app.ts';
import { createProviderMetrics } from './observability/provider-metrics.ts';
import { systemClock, type Clock } from './clock.ts';
import type { Config } from './config.ts';
import { createSql, type Sql } from './db/connection.ts';
import { startEmbeddedPostgres, type EmbeddedDatabase } from './db/embedded.ts';
import { runMigrations } from './db/migrate.ts';
import { startBoss } from './jobs/boss.ts';
import { createInboxConsumer, type InboxConsumer } from './worker/inbox-consumer.ts';
import { loadSigningSecret } from './settings/signing-secret.ts';
import { createInboxNotifier } from './worker/inbox-notifier.ts';
import { builtinDefinitions } from './workflows/builtin/index.ts';
import { createEngine, WEBHOOK_QUEUE, type Engine } from './workflows/engine.ts';
import { deliverWebhook } from './workflows/webhook-delivery.ts';
import { currentDefinitionProblems, seedBuiltins } from './workflows/workflow-store.ts';
import { loadTemplates, type TemplateCatalog } from './email/template-catalog.ts';
import { createEmailSender, type EmailSender } from './email/sender.ts';
import { createLogTransport, createResendTransport, type EmailTransport } from './email/transport.ts';
import { stripeClientFromConfig } from './stripe/client.ts';
import { createCardUpdatePayer } from './stripe/card-update-payments.ts';
import { createSlackNotifier, type SlackNotifier } from './notify/slack-notifier.ts';
import { firePreDunningChecks } from './stripe/pre-dunning.ts';
import { createBackgroundLoop } from './work/background-loop.ts';

export interface Service {
  config: Config;
  databaseUrl: string;
  sql: Sql;
  boss: PgBoss;
  app: FastifyInstance | null;
  inbox: InboxConsumer;
  engine: Engine;
  email: EmailSender;
  templates: TemplateCatalog;
  transport: EmailTransport;
  clock: Clock;
  /** HMAC secret for webhooks and email tokens */
  secret: string;
  /** Slack alerts of workflow notify steps (a work queue) */
  slack: SlackNotifier;
  /** Process everything pending (inbox, timeline, due timers) directly; for tests and tools. */
  drain(): Promise<void>;
  /** Shutdown in phases: stop taking requests, finish in-flight work, stop jobs, close pools, stop the database. */
  stop(): Promise<void>;
}

export async function startService(options: {
  config: Config;
  logger: Logger;
  clock?: Clock;
  /** do not start background loops (tests drive them explicitly) */
  manualWorkers?: boolean;
  /** replaces the transport chosen from configuration (tests, benchmarks) */
  transport?: EmailTransport;
}): Promise<Service> {
  const { config, logger } = options;
  const clock = options.clock ?? systemClock;
  let embedded: EmbeddedDatabase | null = null;
  let databaseUrl = config.databaseUrl;
  if (!databaseUrl) {
    logger.info({ dataDir: config.embeddedPg.dataDir, port: config.embeddedPg.port }, 'DATABASE_URL not set: starting embedded PostgreSQL');
    embedded = await startEmbeddedPostgres({ ...config.embeddedPg, logger });
    databaseUrl = embedded.url;
  }
  try {
    // Templates first: a broken template stops start-up with its file and line.
    const templates = await loadTemplates({ brand: config.brand });
    await runMigrations(databaseUrl);
    const sql = createSql(databaseUrl, { max: config.dbPoolMax });
    await sql.begin((tx) => seedBuiltins(tx, builtinDefinitions, clock.now()));
    // Stored workflows that fail the publishing checks now (e.g. a template since removed): say so at start-up.
    for (const problem of await currentDefinitionProblems(sql, templates)) {
      logger.warn({ workflow: problem.key, version: problem.version, paused: problem.paused, errors: problem.errors }, 'workflow definition fails the publishing checks; its sends may fail');
    }
    const secret = await loadSigningSecret(sql, config.secret, clock.now());
    const boss = await startBoss({ databaseUrl, role: config.role, logger });
    // Pay on card update (issue 13): on by default when there is a Stripe key to pay with.
    const stripeApi = stripeClientFromConfig(config);
    const cardUpdatePayer =
      stripeApi && config.recovery.payOnCardUpdate ? createCardUpdatePayer({ sql, clock, logger, stripe: stripeApi, enabled: true }) : null;
    const inbox = createInboxConsumer({ sql, clock, logger }, { cardUpdatePayments: cardUpdatePayer !== null, preDunningNoticeDays: config.preDunning.noticeDays });
    // Pre-dunning checks due (card expiring before renewal) become timeline facts.
    const preDunningLoop = createBackgroundLoop({ name: 'pre-dunning-checks', sql, logger, pollMs: 60_000, run: () => firePreDunningChecks({ sql, clock }) });
    const cardUpdateLoop = cardUpdatePayer
      ? createBackgroundLoop({ name: 'card-update-payments', sql, logger, pollMs: 5000, run: () => cardUpdatePayer.runOnce() })
      : null;
    const inboxNotifier = createInboxNotifier(sql, logger);
    const slack = createSlackNotifier({ sql, clock, logger, defaultWebhookUrl: config.slackWebhookUrl });
    const slackLoop = createBackgroundLoop({ name: 'slack-notifications', sql, logger, pollMs: 2000, run: () => slack.runOnce() });
    const engine = createEngine({ sql, boss, clock, logger, config });
    const providerMetrics = createProviderMetrics(clock);
    const transport = providerMetrics.instrument(
      options.transport ??
        (config.email.resendApiKey
          ? createResendTransport({ apiKey: config.email.resendApiKey, baseUrl: config.email.resendBaseUrl, timeoutMs: config.email.requestTimeoutMs })
          : createLogTransport({ logger, dir: config.outboxDir })),
    );
    if (transport.name === 'log') logger.warn(`RESEND_API_KEY not set: emails are rendered into ${config.outboxDir} and logged, not sent`);
    const email = createEmailSender({ sql, clock, logger, config, templates, transport, secret });
    const worker = config.role !== 'api';
    if (worker && !options.manualWorkers) {
      // WORKER_TASKS lets a process run only some of them, e.g. the email sender on its own, so
      // a campaign's engine work cannot delay its rate-limited requests (BENCHMARKS.md, finding 6).
      const tasks = config.workerTasks;
      if (tasks.has('inbox')) await inbox.start();
      if (tasks.has('inbox') && cardUpdateLoop) await cardUpdateLoop.start();
      if (tasks.has('inbox')) await preDunningLoop.start();
      if (tasks.has('engine')) await engine.start();
      if (tasks.has('email')) await email.start();
      if (tasks.has('webhooks')) await slackLoop.start();
      if (tasks.has('webhooks')) {
        // notifyPollingIntervalSeconds: retries create no notification; without it pg-boss
        // re-polls a notify-enabled queue only every 30 s.
        await boss.work<{ deliveryId: string }>(WEBHOOK_QUEUE, { batchSize: 5, pollingIntervalSeconds: 1, notifyPollingIntervalSeconds: 1 }, async (jobs) => {
          for (const job of jobs) await deliverWebhook({ sql, clock, logger, secret }, job.data.deliveryId);
        });
      }
    }
    const app = config.role !== 'worker' ? await buildApp({ config, sql, clock, logger, boss, templates, secret, inboxNotifier, providerMetrics }) : null;

    let stopped = false;
    return {
      config,
      databaseUrl,
      sql,
      boss,
      app,
      inbox,
      engine,
      email,
      templates,
      transport,
      clock,
      secret,
      slack,
      async drain() {
        for (let i = 0; i < 100; i++) {
          const n = await inbox.drain();
          if (cardUpdatePayer) await cardUpdatePayer.drain();
          await firePreDunningChecks({ sql, clock });
          await engine.drain();
          const sent = await email.sendPending();
          if (n === 0 && sent.sent + sent.failed + sent.skipped === 0) return;
        }
      },
      async stop() {
        if (stopped) return;
        stopped = true;
        if (app) await app.close(); // 1. stop taking requests, let in-flight ones finish
        inboxNotifier.close();
        await inbox.stop(); // 2. finish the batch in flight
        if (cardUpdateLoop) await cardUpdateLoop.stop();
        await preDunningLoop.stop();
        await slackLoop.stop();
        await engine.stop();
        await email.stop();
        await boss.stop({ graceful: true, timeout: 10_000 }); // 3. finish jobs, stop pg-boss
        await sql.end({ timeout: 5 }); // 4. close our pool
        if (embedded) await embedded.stop(); // 5. stop the embedded database
      },
    };
  } catch (err) {
    if (embedded) await embedded.stop().catch(() => {});
    throw err;
  }
}
