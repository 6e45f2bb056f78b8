import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError, loadConfig, missingSecrets } from '../src/config.ts';

test('defaults: port 3000, role all, embedded database, public URL from the port', () => {
  const c = loadConfig({});
  assert.equal(c.port, 3000);
  assert.equal(c.role, 'all');
  assert.equal(c.databaseUrl, undefined);
  assert.equal(c.publicUrl, 'http://localhost:3000');
  assert.equal(c.logLevel, 'info');
  assert.equal(missingSecrets(c).length, 3);
});

test('a malformed value gives one line naming the variable and what it expects', () => {
  const cases: [Record<string, string>, RegExp][] = [
    [{ PORT: 'eighty' }, /^PORT="eighty" is invalid: expected an integer from 0 to 65535$/],
    [{ PORT: '70000' }, /^PORT=.*65535/],
    [{ ROLE: 'cron' }, /^ROLE="cron" is invalid: expected one of all \| api \| worker$/],
    [{ LOG_LEVEL: 'loud' }, /^LOG_LEVEL=/],
    [{ WORKER_TASKS: 'email,cron' }, /^WORKER_TASKS="email,cron" is invalid: expected a comma-separated list of inbox, engine, email, webhooks$/],
    [{ WORKER_TASKS: ' , ' }, /^WORKER_TASKS=/],
    [{ DATABASE_URL: 'mysql://x' }, /^DATABASE_URL is invalid: expected a postgres: or postgresql: URL/],
    [{ DATABASE_URL: 'not a url' }, /^DATABASE_URL is invalid/],
    [{ PUBLIC_URL: 'ftp://x' }, /^PUBLIC_URL is invalid/],
    [{ PRE_DUNNING_NOTICE_DAYS: '0' }, /^PRE_DUNNING_NOTICE_DAYS="0" is invalid: expected an integer from 1 to 60$/],
    [{ PRE_DUNNING_NOTICE_DAYS: 'a week' }, /^PRE_DUNNING_NOTICE_DAYS="a week" is invalid/],
    [{ RECOVERY_ALERT_MRR: '100000' }, /^RECOVERY_ALERT_MRR="100000" is invalid: expected "<amount in minor units> <currency>" entries, comma-separated, one per currency, e.g. "100000 usd, 90000 eur"$/],
    [{ RECOVERY_ALERT_MRR: '1000.50 usd' }, /^RECOVERY_ALERT_MRR=/],
    [{ RECOVERY_ALERT_MRR: '100000 usd, 5 USD' }, /^RECOVERY_ALERT_MRR=.*one per currency/],
    [{ RECOVERY_ALERT_MRR: '100000 dollars' }, /^RECOVERY_ALERT_MRR=/],
    [{ STRIPE_WEBHOOK_SECRET: 'sk_live_oops' }, /^STRIPE_WEBHOOK_SECRET is invalid: expected a value starting with "whsec_"$/],
  ];
  for (const [env, pattern] of cases) {
    assert.throws(() => loadConfig(env), (err: unknown) => err instanceof ConfigError && pattern.test(err.message) && !err.message.includes('\n'));
  }
});

test('secret values are never echoed in configuration errors', () => {
  try {
    loadConfig({ STRIPE_WEBHOOK_SECRET: 'sk_live_supersecret' });
    assert.fail('should throw');
  } catch (err) {
    assert.ok(!(err as Error).message.includes('supersecret'));
  }
});

test('valid values are typed and trimmed', () => {
  const c = loadConfig({ PORT: '8080', ROLE: 'worker', PUBLIC_URL: 'https://billing.example.com/', DATABASE_URL: 'postgres://u@h:5432/db', LIFELINE_WRITE_KEY: ' wk ' });
  assert.equal(c.port, 8080);
  assert.equal(c.role, 'worker');
  assert.equal(c.publicUrl, 'https://billing.example.com');
  assert.equal(c.writeKey, 'wk');
});

test('WORKER_TASKS: a worker runs every task by default, or the ones listed', () => {
  assert.deepEqual([...loadConfig({}).workerTasks].sort(), ['email', 'engine', 'inbox', 'webhooks']);
  assert.deepEqual([...loadConfig({ ROLE: 'worker', WORKER_TASKS: 'email' }).workerTasks], ['email']);
  assert.deepEqual([...loadConfig({ WORKER_TASKS: ' inbox , engine,webhooks ' }).workerTasks].sort(), ['engine', 'inbox', 'webhooks']);
});

test('PRE_DUNNING_NOTICE_DAYS: 7 by default, else the given whole number of days', () => {
  assert.equal(loadConfig({}).preDunning.noticeDays, 7);
  assert.equal(loadConfig({ PRE_DUNNING_NOTICE_DAYS: ' 3 ' }).preDunning.noticeDays, 3);
});

test('RECOVERY_ALERT_MRR: thresholds per currency in minor units (lower-cased); unset → none', () => {
  assert.deepEqual(loadConfig({}).recovery.alertMrr, {});
  assert.deepEqual(loadConfig({ RECOVERY_ALERT_MRR: ' 100000 USD ,90000 eur,5000000 jpy' }).recovery.alertMrr, { usd: 100_000, eur: 90_000, jpy: 5_000_000 });
});
