// pg-boss owns its own `pg` pool (never our postgres.js client: see engineering notes).
import { PgBoss } from 'pg-boss';
import type { Logger } from 'pino';
import type { Role } from '../config.ts';
import { outageAwareLogger } from '../process-errors.ts';

/** Queues Lifeline uses; created (idempotently) at start-up before anything sends to them. */
export const QUEUES: { name: string; options: Record<string, unknown> }[] = [
  // Jobs that exhausted their retries land here, for inspection; nothing is dropped silently.
  { name: 'lifeline.dead', options: { policy: 'standard', retentionSeconds: 14 * 86_400 } },
  // Due workflow runs, handed over by the engine tick. NOTIFY wakes a worker at once.
  { name: 'workflow.due', options: { policy: 'standard', retryLimit: 5, retryDelay: 5, retryBackoff: true, deadLetter: 'lifeline.dead', notify: true } },
  // Outgoing workflow webhooks: retried with exponential backoff (~5 s … ~20 min).
  { name: 'workflow.webhook', options: { policy: 'standard', retryLimit: 8, retryDelay: 5, retryBackoff: true, deadLetter: 'lifeline.dead', notify: true } },
];

export async function startBoss(options: { databaseUrl: string; role: Role; logger: Logger; max?: number }): Promise<PgBoss> {
  const worker = options.role !== 'api';
  const boss = new PgBoss({
    connectionString: options.databaseUrl,
    schema: 'pgboss',
    max: options.max ?? 4,
    application_name: 'lifeline-boss',
    // Maintenance and cron belong to worker instances; API instances only send.
    supervise: worker,
    schedule: worker,
    useListenNotify: worker,
  });
  // Without an error listener an error event would crash the process.
  // During a database outage pg-boss fails every poll (hundreds of lines in seconds): one line per outage period.
  const logBossError = outageAwareLogger(options.logger);
  boss.on('error', (err: Error) => logBossError(err, {}, 'pg-boss error'));
  await boss.start();
  for (const q of QUEUES) {
    await boss.createQueue(q.name, q.options);
  }
  return boss;
}
