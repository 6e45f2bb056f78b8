// Wakes the inbox consumers after the HTTP path stored something. One NOTIFY per short window
// instead of one per INSERT: NOTIFY takes a cluster-wide lock at commit, and putting it in every
// ingest statement halved webhook throughput in the benchmark (BENCHMARKS.md). A consumer that
// misses a wake-up still finds the rows on its next poll; nothing depends on the notification.
import type { Logger } from 'pino';
import type { Sql } from '../db/connection.ts';
import { INBOX_CHANNEL } from '../stripe/event-inbox.ts';

export interface InboxNotifier {
  /** Call after a new row is committed; coalesces calls within `delayMs`. */
  poke(): void;
  close(): void;
}

export function createInboxNotifier(sql: Sql, logger: Pick<Logger, 'warn'>, delayMs = 5): InboxNotifier {
  let timer: NodeJS.Timeout | null = null;
  return {
    poke() {
      if (timer) return;
      timer = setTimeout(() => {
        timer = null;
        sql`select pg_notify(${INBOX_CHANNEL}, '')`.catch((err: Error) => logger.warn({ error: err.message }, 'inbox notify failed'));
      }, delayMs);
      timer.unref();
    },
    close() {
      if (timer) clearTimeout(timer);
      timer = null;
    },
  };
}
