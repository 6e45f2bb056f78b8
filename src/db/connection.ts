import postgres from 'postgres';

export type Sql = postgres.Sql<{ bigint: number }>;

// int8 columns (ids, amounts in minor units) come back as JS numbers: every value we store is
// far below 2^53 (amounts in minor units, serial ids), and numbers keep the code plain.
export function createSql(url: string, options: { max?: number; applicationName?: string } = {}): Sql {
  return postgres(url, {
    max: options.max ?? 10,
    onnotice: () => {},
    // While PostgreSQL is down a query waits for a connection up to connect_timeout (postgres.js
    // default 30 s): every webhook would hang 30 s before its 503 (measured: 4 probes took ~135 s
    // in test/db-outage.test.ts). 5 s keeps answers within webhook senders' timeouts.
    connect_timeout: 5,
    // Between failed connection attempts postgres.js waits (0.5–1) × min(3^n / 100, 20) s, where n
    // counts failures across the whole pool and resets only on a successful connect. In an
    // outage the background loops fail a few attempts a second, so n passes 7 within seconds and
    // every attempt then waits 10–20 s; a query waits for an attempt (each failed one rejects a
    // single queued query), so ingest requests got their 503 after 13–44 s, not in milliseconds
    // (test/chaos/db-outage.chaos.ts, measured), and the pool reconnected up to 20 s after
    // PostgreSQL was back. Capped at 1 s: a refused connection costs PostgreSQL nothing, and a
    // pool has at most DB_POOL_MAX connections retrying.
    backoff: (retries: number) => (0.5 + Math.random() / 2) * Math.min(3 ** retries / 100, 1),
    // jit off: our statements are short, and a few set-based reads whose row estimates are
    // large (CTEs, unions over a batch) crossed jit_above_cost and spent 30–45 ms compiling
    // for a 5 ms query — most of the engine feed's database time for payment failures.
    connection: { application_name: options.applicationName ?? 'lifeline', jit: 'off' },
    types: {
      bigint: {
        to: 20,
        from: [20],
        serialize: (x: number) => String(x),
        parse: (x: string) => Number(x),
      },
    },
  }) as Sql;
}

/** Database URL with a different database name (tests and the embedded default use this). */
export function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

/** A transaction handle (inside `sql.begin`). */
export type Tx = postgres.TransactionSql<{ bigint: number }>;
/** Anything that can run a query: the pool or a transaction. */
export type Queryable = postgres.ISql<{ bigint: number }>;
