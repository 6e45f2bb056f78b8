// The one background-loop shape every worker uses: run at start, wake on NOTIFY (channel), poll
// as a safety net (a missed notification costs at most one poll interval), run again at once
// while a pass found work, one pass at a time per loop (a wake-up during a pass schedules one
// more), stop with an AbortSignal: no new pass starts, the pass in flight finishes.
import type { Logger } from 'pino';
import type { Sql } from '../db/connection.ts';
import { failureText } from './work-queue.ts';

export interface BackgroundLoop {
  /** Listen and start polling. */
  start(): Promise<void>;
  /** Run a pass now (or one more after the pass in flight); resolves when that pass is done. */
  wake(): Promise<number>;
  /** Stop: abort the signal, stop listening, wait for the pass in flight. */
  stop(): Promise<void>;
}

export function createBackgroundLoop(options: {
  name: string;
  sql: Sql;
  logger: Pick<Logger, 'error'>;
  /** NOTIFY channels that wake the loop */
  channels?: string[];
  pollMs: number;
  /** a pass: returns how much work it did (> 0 runs another pass at once) */
  run: (signal: AbortSignal) => Promise<number>;
  /** when the pass found work, wait this long before the next one (default 0) */
  burstDelayMs?: number;
}): BackgroundLoop {
  const { sql, logger } = options;
  const controller = new AbortController();
  const signal = controller.signal;
  let inFlight: Promise<number> | null = null;
  let again = false;
  let timer: NodeJS.Timeout | null = null;
  const unlisteners: (() => Promise<void>)[] = [];

  function pass(): Promise<number> {
    if (inFlight) {
      again = true;
      return inFlight;
    }
    inFlight = (async () => {
      let total = 0;
      try {
        do {
          again = false;
          let n = 0;
          try {
            n = await options.run(signal);
          } catch (err) {
            logger.error({ loop: options.name, error: failureText(err) }, 'background pass failed');
          }
          total += n;
          if (n > 0 && !signal.aborted) {
            again = true;
            if (options.burstDelayMs) await new Promise((r) => setTimeout(r, options.burstDelayMs));
          }
        } while (again && !signal.aborted);
      } finally {
        inFlight = null;
      }
      return total;
    })();
    return inFlight;
  }

  const schedule = () => {
    if (signal.aborted) return;
    timer = setTimeout(() => {
      void pass().finally(schedule);
    }, options.pollMs);
    timer.unref?.();
  };

  return {
    async start() {
      for (const channel of options.channels ?? []) {
        const listener = await sql.listen(channel, () => void pass());
        unlisteners.push(listener.unlisten);
      }
      void pass().finally(schedule);
    },
    wake: pass,
    async stop() {
      controller.abort();
      if (timer) clearTimeout(timer);
      for (const unlisten of unlisteners) await unlisten().catch(() => {});
      if (inFlight) await inFlight.catch(() => 0);
    },
  };
}
