// The process: read config, start the service, listen, shut down cleanly on SIGTERM/SIGINT.
import closeWithGrace from 'close-with-grace';
import { ConfigError, loadConfig, missingSecrets } from './config.ts';
import { createLogger } from './logger.ts';
import { installProcessErrorHandlers } from './process-errors.ts';
import { startService } from './service.ts';
import { defaultBrandSettings } from './cli/doctor.ts';

let config;
try {
  config = loadConfig();
} catch (err) {
  if (err instanceof ConfigError) {
    console.error(`lifeline: configuration error: ${err.message}`);
    process.exit(1);
  }
  throw err;
}

const logger = createLogger(config.logLevel);
for (const missing of missingSecrets(config)) logger.warn(`not configured: ${missing}`);

for (const name of defaultBrandSettings(process.env)) {
  logger.warn(`${name} is the default placeholder and would reach customers in every email: set it (see \`lifeline doctor\`)`);
}

let service;
try {
  service = await startService({ config, logger });
} catch (err) {
  // One line with the reason (never `undefined`): a held data folder, a database that refuses, …
  const message = err instanceof Error ? err.message || err.name : String(err);
  console.error(`lifeline: cannot start: ${message}`);
  process.exit(1);
}

// close-with-grace exits on any uncaught error; a database outage must not (process-errors.ts):
// error events are ours. Signals are ours too (below): close-with-grace exits at once on a second
// signal, and one Ctrl-C under `npm start` is two (the terminal signals the whole foreground
// group, and npm forwards its copy to us as well) — that exit skipped the phased stop.
const shutdown = closeWithGrace(
  { delay: 20_000, logger, skip: ['uncaughtException', 'unhandledRejection', 'SIGINT', 'SIGTERM'] },
  async ({ signal }) => {
    logger.info({ signal }, 'shutting down');
    await service.stop();
  },
);
/** Copies of the first signal that arrive this soon after it are the same request to stop. */
const REPEAT_WINDOW_MS = 2_000;
let firstSignalAt: number | null = null;
const onStopSignal = (signal: NodeJS.Signals) => {
  const now = performance.now();
  if (firstSignalAt === null) {
    firstSignalAt = now;
    logger.info({ signal }, 'shutting down');
    shutdown.uninstall();
    void service.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
    // The same bound close-with-grace gave the phased stop.
    setTimeout(() => {
      logger.error('shutdown took longer than 20 s, exiting');
      process.exit(1);
    }, 20_000).unref();
    return;
  }
  if (now - firstSignalAt < REPEAT_WINDOW_MS) return;
  // A deliberate second request (Ctrl-C again): stop now; the embedded database is still asked
  // to shut down on the way out (db/embedded.ts).
  logger.warn({ signal }, 'second stop request: exiting without waiting');
  process.exit(1);
};
process.on('SIGINT', onStopSignal);
process.on('SIGTERM', onStopSignal);
// Under `npm start`, npm is our parent: if it dies without passing a signal on (kill -9, a closed
// terminal), we are re-parented and would run on orphaned, embedded PostgreSQL and all. Only for
// npm: `nohup`/`setsid` starts are meant to outlive their parent.
if (process.env.npm_lifecycle_event === 'start' && process.ppid > 1) {
  const npmPid = process.ppid;
  const parentWatch = setInterval(() => {
    if (process.ppid === npmPid) return;
    clearInterval(parentWatch);
    logger.warn('npm (our parent) is gone: shutting down');
    process.kill(process.pid, 'SIGTERM');
  }, 500);
  parentWatch.unref();
}
let fatal = false;
installProcessErrorHandlers({
  logger,
  onFatal: (err) => {
    if (fatal) process.exit(1);
    fatal = true;
    logger.error({ err }, 'shutting down after an error');
    shutdown.uninstall();
    const timeout = setTimeout(() => process.exit(1), 20_000);
    timeout.unref();
    void service.stop().finally(() => process.exit(1));
  },
});

if (service.app) {
  await service.app.listen({ port: config.port, host: config.host });
  logger.info(`Lifeline (${config.role}) listening on ${config.publicUrl} — API docs at ${config.publicUrl}/docs`);
} else {
  logger.info('Lifeline worker started');
}
