// `lifeline replay --from <time> [--type <event>] [--dry-run]`: see stripe/replay.ts.
import type { Command } from 'commander';
import { cliActor, recordAudit } from '../../admin/audit-log.ts';
import { systemClock } from '../../clock.ts';
import { replayStripeEvents, type ReplaySummary } from '../../stripe/replay.ts';
import { CliError } from '../cli-error.ts';
import { cliConfig, openCliDatabase } from '../stripe-context.ts';
import { parseSince } from './backfill.ts';

export function describeReplay(summary: ReplaySummary): string {
  const facts = Object.entries(summary.newFacts).map(([name, n]) => `${name} ${n}`).join(', ');
  const verb = summary.dryRun ? 'would record' : 'recorded';
  return `${summary.dryRun ? 'Dry run: ' : ''}replayed ${summary.events} stored Stripe event(s); ${facts ? `${verb} new facts: ${facts}` : `${verb} no new facts (already projected: state and sends unchanged)`}`;
}

export function registerReplay(program: Command): void {
  program
    .command('replay')
    .description('run stored (already processed) Stripe events through the projection again, oldest first; idempotent: events already projected change nothing and send nothing')
    .requiredOption('--from <time>', 'events created at or after this time (a date, ISO time, or an age like 7d or 12h)')
    .option('--type <event>', 'only this event type, e.g. invoice.payment_failed')
    .option('--dry-run', 'project inside a transaction that is rolled back, and report what would be added')
    .action(async (opts: { from: string; type?: string; dryRun?: boolean }) => {
      const from = parseSince(opts.from);
      if (opts.type !== undefined && !/^[a-z_]+(\.[a-z_]+)+$/.test(opts.type)) throw new CliError(`invalid --type ${JSON.stringify(opts.type)}: expected a Stripe event type like invoice.payment_failed`, 2);
      const db = await openCliDatabase(cliConfig());
      try {
        // A progress line at most every 2 s (a replay of months of events takes a while).
        let lastLine = performance.now();
        const onProgress = (done: number) => {
          if (performance.now() - lastLine < 2_000) return;
          lastLine = performance.now();
          process.stderr.write(`replay: ${done} events\n`);
        };
        const summary = await replayStripeEvents({ sql: db.sql, clock: systemClock }, { from, type: opts.type, dryRun: opts.dryRun === true, onProgress });
        if (!summary.dryRun) {
          await recordAudit(db.sql, { at: systemClock.now(), actor: cliActor(), action: 'stripe.replayed', target: opts.type ?? null, diff: { from: from.toISOString(), events: summary.events, newFacts: summary.newFacts } });
        }
        console.log(describeReplay(summary));
      } finally {
        await db.close();
      }
    });
}
