// `lifeline replay --from <time> [--type <event>] [--dry-run]`: run stored Stripe events through
// the projection again, e.g. after a projection bug was fixed. Idempotent by the projection's
// own keys: a snapshot replaces state only if its version key is greater (it is not: the same
// event already put it there), facts are deduplicated by the change they name, failures by
// event id; so for events already processed nothing changes and no workflow starts or sends.
// Only what an earlier projection missed is added. --dry-run projects each batch inside a
// transaction that is rolled back, and reports what a real replay would add.
//
// Events still waiting in the inbox are left to it (and dead letters to the dead-letter
// replay): only processed events are re-run. Batches lock their identities first, as the inbox
// consumer does, so a replay next to a running service cannot deadlock with it.
import type { Clock } from '../clock.ts';
import { lockIdentities } from '../contacts/contact-store.ts';
import type { Sql } from '../db/connection.ts';
import { stripeIdentityKeys, type StripeInboxRow } from './event-inbox.ts';
import { projectStripeBatch } from './projector.ts';

export interface ReplayOptions {
  from: Date;
  /** only events of this type (e.g. invoice.payment_failed) */
  type?: string | undefined;
  dryRun?: boolean;
  batchSize?: number;
  onProgress?: (done: number) => void;
}

export interface ReplaySummary {
  events: number;
  /** timeline facts the replay recorded (dry run: would record), by name */
  newFacts: Record<string, number>;
  dryRun: boolean;
}

class DryRunRollback extends Error {}

export async function replayStripeEvents(deps: { sql: Sql; clock: Clock }, options: ReplayOptions): Promise<ReplaySummary> {
  const batchSize = options.batchSize ?? 200;
  const summary: ReplaySummary = { events: 0, newFacts: {}, dryRun: options.dryRun === true };
  let after: { created: Date; id: string } | null = null;
  for (;;) {
    const rows: (StripeInboxRow & { created: Date })[] = await deps.sql<(StripeInboxRow & { created: Date })[]>`
      select id, payload, attempts, customer_id, created from stripe_events
      where processed_at is not null and created >= ${options.from}
        ${options.type ? deps.sql`and type = ${options.type}` : deps.sql``}
        ${after ? deps.sql`and (created, id) > (${after.created}, ${after.id})` : deps.sql``}
      order by created, id
      limit ${batchSize}`;
    if (rows.length === 0) break;
    const now = deps.clock.now();
    try {
      await deps.sql.begin(async (tx) => {
        await lockIdentities(tx, await stripeIdentityKeys(tx, rows));
        const results = await projectStripeBatch(tx, rows.map((r) => r.payload), now);
        for (const result of results) for (const fact of result.facts) summary.newFacts[fact] = (summary.newFacts[fact] ?? 0) + 1;
        if (options.dryRun) throw new DryRunRollback();
      });
    } catch (err) {
      if (!(err instanceof DryRunRollback)) throw err;
    }
    summary.events += rows.length;
    options.onProgress?.(summary.events);
    const last = rows.at(-1)!;
    after = { created: last.created, id: last.id };
  }
  return summary;
}
