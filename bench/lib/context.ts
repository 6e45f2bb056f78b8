import type postgres from 'postgres';
import type { ChildServer } from './child.ts';
import type { BenchDatabase } from './database.ts';
import type { Report } from './report.ts';

export interface BenchOptions {
  /** how many times the saturated phases run, interleaved with their baseline (medians are reported) */
  rounds: number;
  /** timed phase of each load, seconds */
  durationSec: number;
  warmupSec: number;
  /** autocannon connections for the webhook scenario */
  connections: number;
  /** HTTP connections (and baseline insert concurrency) for the batch scenario */
  batchConnections: number;
  batchSize: number;
  /** fraction of the saturated rate for the latency run */
  latencyLoad: number;
  /** upper bound on waiting for the worker to drain the webhook backlog, seconds */
  drainLimitSec: number;
  /** max connections of each server's own postgres.js pool (Lifeline's DB_POOL_MAX, the baselines' max) */
  dbPoolMax: number;
  /** also run diagnostic variants (e.g. the baseline with Lifeline's NOTIFY added) */
  diagnose: boolean;
  /** folder for V8 CPU profiles of the server children, or null */
  cpuProfDir: string | null;
}

export interface BenchContext {
  db: BenchDatabase;
  /** a small pool on the bench database, for set-up, counts and the batch baseline's table */
  sql: postgres.Sql;
  report: Report;
  options: BenchOptions;
  /** a Lifeline service (bench/server-child.ts) with this ROLE */
  startLifeline(role: 'all' | 'api' | 'worker'): Promise<ChildServer>;
  /** another child server (bench/<script>) with DATABASE_URL, secrets and DB_POOL_MAX set */
  startChild(label: string, script: string, env?: Record<string, string>): Promise<ChildServer>;
  /** CHECKPOINT, so every measured phase starts with no dirty buffers from the previous one */
  settle(): Promise<void>;
}

export interface Scenario {
  name: string;
  description: string;
  run(ctx: BenchContext): Promise<void>;
}
