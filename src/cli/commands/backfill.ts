// `lifeline backfill [--since <date>] [--enroll] [--restart]`: see stripe/backfill.ts.
import type { Command } from 'commander';
import cliProgress from 'cli-progress';
import { cliActor, recordAudit } from '../../admin/audit-log.ts';
import { systemClock } from '../../clock.ts';
import { BackfillBusyError, runBackfill, type BackfillProgress, type BackfillSummary } from '../../stripe/backfill.ts';
import { CliError } from '../cli-error.ts';
import { cliConfig, cliStripe, openCliDatabase } from '../stripe-context.ts';

export function parseSince(value: string): Date {
  // A date (2026-01-31), a timestamp, or a relative age (90d, 12h).
  const relative = /^(\d+)([dh])$/.exec(value.trim());
  if (relative) return new Date(systemClock.now().getTime() - Number(relative[1]) * (relative[2] === 'd' ? 86_400_000 : 3_600_000));
  const date = new Date(value);
  if (!/^\d{4}-\d{2}-\d{2}/.test(value.trim()) || Number.isNaN(date.getTime())) {
    throw new CliError(`invalid --since ${JSON.stringify(value)}: expected a date (2026-01-31), an ISO timestamp, or an age like 90d or 12h`, 2);
  }
  return date;
}

/** Progress on a terminal: one bar line (items, items/s, stream); plain lines otherwise (logs, CI). */
function progressReporter(stream: NodeJS.WriteStream): { update(p: BackfillProgress): void; stop(): void } {
  if (stream.isTTY) {
    // Stripe lists carry no totals (and the count of objects to read is unknown up front), so
    // the bar counts streams and there is no honest ETA: elapsed time is shown instead.
    const bar = new cliProgress.SingleBar(
      {
        format: 'backfill [{bar}] stream {streamNo}/{value_total} {stream} | {items} items | {rate} items/s | {duration_formatted} elapsed',
        stream,
        hideCursor: true,
        etaBuffer: 3,
      },
      cliProgress.Presets.shades_classic,
    );
    let startedBar = false;
    return {
      update(p) {
        const payload = { stream: p.stream, streamNo: p.streamIndex + 1, items: p.items, rate: p.itemsPerSecond.toFixed(0), value_total: p.streamCount };
        if (!startedBar) {
          bar.start(p.streamCount, p.streamIndex, payload);
          startedBar = true;
        }
        bar.update(p.streamIndex, payload);
      },
      stop: () => startedBar && bar.stop(),
    };
  }
  // A line per stream's first page, then at most one every 2 s.
  let lastLine = 0;
  let lastStream = '';
  return {
    update(p) {
      const now = performance.now();
      if (p.stream === lastStream && now - lastLine < 2_000) return;
      lastLine = now;
      lastStream = p.stream;
      stream.write(`backfill: ${p.stream} ${p.streamItems} read; ${p.items} in total, ${p.itemsPerSecond.toFixed(0)} items/s${p.pauseMs > 0 ? `, pausing ${p.pauseMs} ms between pages (Stripe rate limit)` : ''}\n`);
    },
    stop() {},
  };
}

export function describeSummary(summary: BackfillSummary): string[] {
  const lines: string[] = [];
  const per = Object.entries(summary.items).map(([stream, n]) => `${stream} ${n}`).join(', ');
  const rate = summary.elapsedMs > 0 ? (summary.total / (summary.elapsedMs / 1000)).toFixed(0) : '0';
  lines.push(`${summary.interrupted ? 'Backfill interrupted' : summary.resumed ? 'Backfill resumed and finished' : 'Backfill finished'}: ${summary.total} Stripe objects (${per || 'nothing left to read'}) in ${(summary.elapsedMs / 1000).toFixed(1)} s, ${rate}/s`);
  if (summary.retried > 0) lines.push(`Stripe throttled, failed or dropped ${summary.retried} request(s); all were retried.`);
  if (summary.interrupted) lines.push('Run `lifeline backfill` again to resume after the last saved page.');
  if (summary.enrolled.length > 0) lines.push(`Enrolled ${summary.enrolled.length} open failed invoice(s): their failure is recorded now, and billing recovery starts for each its workflow accepts (e.g. not first invoices of a subscription).`);
  return lines;
}

export function registerBackfill(program: Command): void {
  program
    .command('backfill')
    .description(
      'read existing customers, subscriptions (live and recently canceled) and open/uncollectible invoices from Stripe and project them like webhooks. Resumes an interrupted backfill from its saved cursor. Needs STRIPE_SECRET_KEY and the database.',
    )
    .option('--since <date>', 'bound history: invoices created and subscriptions canceled since then (a date, ISO time, or an age like 90d; default: all open invoices, cancellations of the last 90 days)')
    .option('--enroll', 'start billing recovery for open failed invoices that have no run yet (once per invoice)')
    .option('--restart', 'start over instead of resuming an interrupted backfill')
    .action(async (opts: { since?: string; enroll?: boolean; restart?: boolean }) => {
      const since = opts.since === undefined ? undefined : parseSince(opts.since);
      const config = cliConfig();
      const stripe = cliStripe(config, { maxNetworkRetries: 6 });
      const db = await openCliDatabase(config);
      const abort = new AbortController();
      const onSignal = () => {
        if (abort.signal.aborted) process.exit(130);
        process.stderr.write('\nbackfill: stopping after the page in flight (Ctrl-C again to quit now; the last saved page is kept)\n');
        abort.abort();
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      const progress = progressReporter(process.stderr);
      try {
        const summary = await runBackfill(
          { sql: db.sql, stripe, clock: systemClock },
          { since, enroll: opts.enroll === true, restart: opts.restart === true, signal: abort.signal, onProgress: (p) => progress.update(p) },
        );
        progress.stop();
        await recordAudit(db.sql, {
          at: systemClock.now(), actor: cliActor(), action: 'stripe.backfilled', target: null,
          diff: { items: summary.items, enrolled: summary.enrolled.length, interrupted: summary.interrupted, resumed: summary.resumed, since: summary.since?.toISOString() ?? null },
        });
        for (const line of describeSummary(summary)) console.log(line);
        if (summary.resumed && since) console.log('Note: the interrupted backfill was resumed with the --since it started with; `--restart` applies a new one.');
        if (summary.interrupted) throw new CliError('backfill interrupted; run it again to resume', 1);
      } catch (err) {
        progress.stop();
        if (err instanceof CliError) throw err;
        if (err instanceof BackfillBusyError) throw new CliError(err.message, 1);
        throw new CliError(`backfill stopped: ${(err as Error).message}. Progress is saved: run \`lifeline backfill\` again to resume.`, 1);
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
        await db.close();
      }
    });
}
