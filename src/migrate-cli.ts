// `npm run migrate`: apply pending migrations to DATABASE_URL (or the embedded database) and exit.
import { loadConfig } from './config.ts';
import { startEmbeddedPostgres } from './db/embedded.ts';
import { runMigrations } from './db/migrate.ts';

try {
  const config = loadConfig();
  const embedded = config.databaseUrl ? null : await startEmbeddedPostgres(config.embeddedPg);
  try {
    await runMigrations(config.databaseUrl ?? embedded!.url);
    console.log('lifeline: migrations applied');
  } finally {
    await embedded?.stop();
  }
} catch (err) {
  // One line with the reason, e.g. the embedded database folder held by the running service.
  console.error(`lifeline: migrate failed: ${err instanceof Error ? err.message || err.name : String(err)}`);
  process.exitCode = 1;
}
