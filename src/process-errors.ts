// What an error that escapes every handler does to the process. A database outage must not take
// the service down: requests answer 503 and workers back off until PostgreSQL is back. Drivers
// (postgres.js for our pool, pg for pg-boss's) can still raise a connection error from a socket or
// timer callback that no request or job can catch (postgres.js #1154/#1208 is patched, but the
// promise is "no driver error can take the process down", not "this bug is fixed"). Those are
// logged — once per outage, not once per error — and the process keeps running; anything else
// is a bug of ours, and the process stops so a supervisor restarts it clean.
import type { Logger } from 'pino';

// postgres.js connection codes, Node socket codes, and PostgreSQL SQLSTATEs of class 08
// (connection exception) and 57P01–57P03 (admin/crash shutdown, cannot connect now).
const CONNECTION_CODES = new Set([
  'CONNECTION_CLOSED',
  'CONNECTION_DESTROYED',
  'CONNECTION_ENDED',
  'CONNECT_TIMEOUT',
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
  '57P01',
  '57P02',
  '57P03',
]);
// Errors raised inside the database drivers themselves (their stack is in their own files).
const DRIVER_FRAME = /node_modules[\\/](postgres|pg|pg-pool|pg-protocol|pg-boss)[\\/]/;
const CONNECTION_MESSAGE = /Connection terminated|terminating connection|the database system is (shutting down|starting up|in recovery mode)|Client has encountered a connection error|connect ECONNREFUSED/i;

/** True for an error that means "the database connection failed", wherever it surfaced. */
export function isDatabaseConnectionError(err: unknown): boolean {
  if (!err || typeof err !== 'object') return false;
  const e = err as { code?: unknown; message?: unknown; stack?: unknown; errors?: unknown; cause?: unknown };
  if (typeof e.code === 'string' && (CONNECTION_CODES.has(e.code) || e.code.startsWith('08'))) return true;
  if (typeof e.message === 'string' && CONNECTION_MESSAGE.test(e.message)) return true;
  // Thrown by the driver's own code (top stack frame), e.g. from a socket or immediate callback;
  // not an error of ours that merely passed through a driver callback.
  if (typeof e.stack === 'string') {
    const topFrame = e.stack.split('\n').find((line) => line.trimStart().startsWith('at '));
    if (topFrame && DRIVER_FRAME.test(topFrame)) return true;
  }
  // AggregateError (a connect attempt to several addresses) and wrapped causes
  if (Array.isArray(e.errors) && e.errors.some(isDatabaseConnectionError)) return true;
  if (e.cause && e.cause !== err) return isDatabaseConnectionError(e.cause);
  return false;
}

export interface ProcessErrorHandlers {
  /** what the process listeners call (tests call it directly) */
  handle(err: unknown, origin: string): void;
  /** number of connection errors survived so far */
  survived(): number;
  uninstall(): void;
}

/**
 * Handle uncaughtException / unhandledRejection: connection errors are survived and logged at
 * most once per `quietMs` (with how many were suppressed); anything else calls `onFatal`.
 */
export function installProcessErrorHandlers(options: {
  logger: Pick<Logger, 'warn' | 'error'>;
  onFatal: (err: unknown) => void;
  quietMs?: number;
  now?: () => number;
}): ProcessErrorHandlers {
  const quietMs = options.quietMs ?? 60_000;
  // Wall time only paces log lines here; business time comes from the injectable clock.
  const now = options.now ?? (() => performance.now());
  let survived = 0;
  let suppressed = 0;
  let lastLoggedAt = -Infinity;
  const handle = (err: unknown, origin: string): void => {
    if (!isDatabaseConnectionError(err)) {
      options.onFatal(err);
      return;
    }
    survived++;
    if (now() - lastLoggedAt < quietMs) {
      suppressed++;
      return;
    }
    lastLoggedAt = now();
    const e = err as { code?: unknown; message?: unknown };
    // code and message only: a driver error object can carry query text and parameters.
    options.logger.warn(
      { origin, code: e.code, error: String(e.message ?? err), suppressedSinceLastLog: suppressed },
      'database connection error outside any request or job: survived (the database is unreachable or restarting)',
    );
    suppressed = 0;
  };
  const onException = (err: unknown): void => handle(err, 'uncaughtException');
  const onRejection = (reason: unknown): void => handle(reason, 'unhandledRejection');
  process.on('uncaughtException', onException);
  process.on('unhandledRejection', onRejection);
  return {
    handle,
    survived: () => survived,
    uninstall() {
      process.removeListener('uncaughtException', onException);
      process.removeListener('unhandledRejection', onRejection);
    },
  };
}

/**
 * For error handlers of background loops (pg-boss's error event, the consumers' catch blocks):
 * during a database outage they fail many times a second. Connection errors are logged once per
 * `quietMs` per message (with how many were suppressed); other errors are logged every time.
 */
export function outageAwareLogger(logger: Pick<Logger, 'warn' | 'error'>, quietMs = 30_000, now: () => number = () => performance.now()) {
  const last = new Map<string, { at: number; suppressed: number }>();
  return (err: unknown, fields: Record<string, unknown>, message: string): void => {
    const error = err instanceof Error ? err.message : String(err);
    if (!isDatabaseConnectionError(err)) {
      logger.error({ ...fields, error }, message);
      return;
    }
    const seen = last.get(message);
    if (seen && now() - seen.at < quietMs) {
      seen.suppressed++;
      return;
    }
    last.set(message, { at: now(), suppressed: 0 });
    logger.warn({ ...fields, error, databaseUnavailable: true, suppressedSinceLastLog: seen?.suppressed ?? 0 }, `${message} (database unavailable; retrying, next such line in ${Math.round(quietMs / 1000)} s at most)`);
  };
}
