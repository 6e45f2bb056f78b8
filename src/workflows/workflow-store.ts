// SQL for workflow definitions: every change is a new immutable version; runs pin theirs.
import type { Queryable } from '../db/connection.ts';
import type { WorkflowDefinition } from './types.ts';
import type { DefinitionError } from './definition-schema.ts';
import { validateForPublish } from './publish-contracts.ts';
import { requeueSkippedFacts } from './fact-listeners.ts';
import type { TemplateLookup } from './publish-contracts.ts';

export interface WorkflowSummary {
  key: string;
  name: string;
  category: string;
  version: number;
  paused: boolean;
  builtin: boolean;
  updatedAt: Date;
  trigger: WorkflowDefinition['trigger'];
}

export interface WorkflowRecord extends WorkflowSummary {
  definition: WorkflowDefinition;
  versions: number[];
}

/** Ship the built-in definitions into an empty install. User edits are never overwritten. */
export async function seedBuiltins(db: Queryable, definitions: readonly WorkflowDefinition[], now: Date): Promise<void> {
  for (const definition of definitions) {
    const inserted = await db`
      insert into workflows (key, current_version, paused, builtin, updated_at)
      values (${definition.key}, 1, false, true, ${now})
      on conflict (key) do nothing
      returning key`;
    // a built-in new to this install (an upgrade) may hear facts recorded as skipped
    if (inserted.length > 0) await storeVersion(db, definition, 1, now, true);
  }
}

/**
 * Every version is stored here: the insert (whose trigger takes FACT_LISTENERS_LOCK, so no
 * product batch is mid-way) and, in the same transaction, the skipped facts it hears put back
 * in the engine's queue (fact-listeners.ts).
 */
async function storeVersion(db: Queryable, definition: WorkflowDefinition, version: number, now: Date, ifAbsent = false): Promise<void> {
  await db`
    insert into workflow_versions (key, version, definition, created_at)
    values (${definition.key}, ${version}, ${JSON.stringify(definition)}::text::jsonb, ${now})
    ${ifAbsent ? db`on conflict do nothing` : db``}`;
  await requeueSkippedFacts(db, definition);
}

type Row = { key: string; current_version: number; paused: boolean; builtin: boolean; updated_at: Date; definition: WorkflowDefinition };

function summary(row: Row): WorkflowSummary {
  return {
    key: row.key,
    name: row.definition.name,
    category: row.definition.category,
    version: row.current_version,
    paused: row.paused,
    builtin: row.builtin,
    updatedAt: row.updated_at,
    trigger: row.definition.trigger,
  };
}

export async function listWorkflows(db: Queryable): Promise<WorkflowSummary[]> {
  const rows = await db<Row[]>`
    select w.key, w.current_version, w.paused, w.builtin, w.updated_at, v.definition
    from workflows w join workflow_versions v on v.key = w.key and v.version = w.current_version
    order by w.key`;
  return rows.map(summary);
}

export async function getWorkflow(db: Queryable, key: string): Promise<WorkflowRecord | null> {
  const [row] = await db<Row[]>`
    select w.key, w.current_version, w.paused, w.builtin, w.updated_at, v.definition
    from workflows w join workflow_versions v on v.key = w.key and v.version = w.current_version
    where w.key = ${key}`;
  if (!row) return null;
  const versions = await db<{ version: number }[]>`select version from workflow_versions where key = ${key} order by version`;
  return { ...summary(row), definition: row.definition, versions: versions.map((v) => v.version) };
}

/**
 * Store `definition` as the next version of its key (creating the workflow if new). Run it in a
 * transaction (the API and the CLI do): the version, and the skipped facts it puts back in the
 * engine's queue (fact-listeners.ts), commit together.
 */
export async function putWorkflow(db: Queryable, definition: WorkflowDefinition, now: Date): Promise<{ version: number; created: boolean }> {
  const [row] = await db<{ current_version: number; created: boolean }[]>`
    insert into workflows (key, current_version, paused, builtin, updated_at)
    values (${definition.key}, 1, false, false, ${now})
    on conflict (key) do update set current_version = workflows.current_version + 1, updated_at = excluded.updated_at
    returning current_version, (xmax = 0) as created`;
  await storeVersion(db, definition, row!.current_version, now);
  return { version: row!.current_version, created: row!.created };
}

export async function setPaused(db: Queryable, key: string, paused: boolean, now: Date): Promise<boolean> {
  const rows = await db`update workflows set paused = ${paused}, updated_at = ${now} where key = ${key} returning key`;
  return rows.length > 0;
}

/** The live (not paused) workflows with their current definitions. */
export async function activeWorkflows(db: Queryable): Promise<{ version: number; definition: WorkflowDefinition }[]> {
  return db<{ version: number; definition: WorkflowDefinition }[]>`
    select w.current_version as version, v.definition
    from workflows w join workflow_versions v on v.key = w.key and v.version = w.current_version
    where not w.paused`;
}

export async function definitionVersion(db: Queryable, key: string, version: number): Promise<WorkflowDefinition | null> {
  const [row] = await db<{ definition: WorkflowDefinition }[]>`select definition from workflow_versions where key = ${key} and version = ${version}`;
  return row?.definition ?? null;
}

export interface DefinitionProblem {
  key: string;
  version: number;
  paused: boolean;
  errors: DefinitionError[];
}

/**
 * The current versions that fail the publishing checks now — e.g. a template removed from
 * emails/ after the workflow was published, or a definition stored before the checks existed.
 * Start-up logs them: their sends would otherwise fail one by one, later.
 */
export async function currentDefinitionProblems(db: Queryable, templates: TemplateLookup): Promise<DefinitionProblem[]> {
  const rows = await db<{ key: string; version: number; paused: boolean; definition: WorkflowDefinition }[]>`
    select w.key, w.current_version as version, w.paused, v.definition
    from workflows w join workflow_versions v on v.key = w.key and v.version = w.current_version
    order by w.key`;
  const problems: DefinitionProblem[] = [];
  for (const row of rows) {
    const validation = validateForPublish(row.definition, templates);
    if (!validation.ok) problems.push({ key: row.key, version: row.version, paused: row.paused, errors: validation.errors });
  }
  return problems;
}
