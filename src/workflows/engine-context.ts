// What the engine's functions share besides the database handle they are given (a transaction or
// the pool): clock, logger, settings, pg-boss, and the two caches one engine instance owns.
import type { PgBoss } from 'pg-boss';
import type { Logger } from 'pino';
import type { Clock } from '../clock.ts';
import type { Config } from '../config.ts';
import type { Queryable } from '../db/connection.ts';
import type { DefinitionLookup } from './feed-batch.ts';
import { definitionVersion } from './workflow-store.ts';
import type { WorkflowDefinition } from './types.ts';

/** recovery, slackWebhookUrl: the run settings conditions and notify steps read (context-loader.ts runSettings) */
export type EngineConfig = Pick<Config, 'policy' | 'engineTickMs' | 'recovery' | 'slackWebhookUrl'>;

export interface DefinitionCache {
  /** A workflow version by key and version, read from the database once per engine. */
  definitionOf: DefinitionLookup;
}

export interface EngineContext {
  boss: PgBoss;
  clock: Clock;
  logger: Logger;
  config: EngineConfig;
  definitions: DefinitionCache;
  /** Transactions that already woke the sender (one NOTIFY per transaction is enough). */
  notified: WeakSet<object>;
}

export function createDefinitionCache(): DefinitionCache {
  // Versions are immutable, so a definition once read never changes.
  const versions = new Map<string, WorkflowDefinition>();

  async function definitionOf(db: Queryable, key: string, version: number): Promise<WorkflowDefinition | null> {
    const id = `${key}@${version}`;
    let def = versions.get(id);
    if (!def) {
      const loaded = await definitionVersion(db, key, version);
      if (!loaded) return null;
      versions.set(id, loaded);
      def = loaded;
    }
    return def;
  }

  return { definitionOf };
}

/** A fresh context: empty caches, so that each engine has its own. */
export function createEngineContext(deps: Pick<EngineContext, 'boss' | 'clock' | 'logger' | 'config'>): EngineContext {
  const { boss, clock, logger, config } = deps;
  return { boss, clock, logger, config, definitions: createDefinitionCache(), notified: new WeakSet<object>() };
}
