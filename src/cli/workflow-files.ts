// `lifeline workflows export|import`: workflow definitions as JSON files, one per workflow
// (<key>.json, stable 2-space formatting), so changes are reviewed in pull requests. Import checks
// every file with the publish-time contracts first and reports every error; only when all pass
// does it publish them, in one transaction (all or none).
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import type { Sql } from '../db/connection.ts';
import { validateForPublish, type TemplateLookup } from '../workflows/publish-contracts.ts';
import type { WorkflowDefinition } from '../workflows/types.ts';
import { getWorkflow, listWorkflows, putWorkflow } from '../workflows/workflow-store.ts';
import { CliError } from './cli-error.ts';

export async function exportWorkflows(sql: Sql, dir: string): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  const written: string[] = [];
  for (const { key } of await listWorkflows(sql)) {
    const record = await getWorkflow(sql, key);
    if (!record) continue; // deleted meanwhile
    const file = path.join(dir, `${key}.json`);
    await writeFile(file, `${JSON.stringify(record.definition, null, 2)}\n`);
    written.push(file);
  }
  return written;
}

export interface ImportResult {
  published: { key: string; version: number }[];
  unchanged: string[];
}

export async function importWorkflows(sql: Sql, dir: string, templates: TemplateLookup, now: Date): Promise<ImportResult> {
  const files = (await readdir(dir)).filter((f) => f.endsWith('.json')).sort();
  if (files.length === 0) throw new CliError(`no .json files in ${dir}`, 1);
  const errors: string[] = [];
  const definitions: WorkflowDefinition[] = [];
  for (const file of files) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(await readFile(path.join(dir, file), 'utf8'));
    } catch (err) {
      errors.push(`${file}: not valid JSON: ${(err as Error).message}`);
      continue;
    }
    const expectedKey = file.slice(0, -'.json'.length);
    const key = (parsed as { key?: unknown } | null)?.key;
    if (key !== expectedKey) errors.push(`${file}: /key: must be ${JSON.stringify(expectedKey)} (the file name), got ${JSON.stringify(key)}`);
    const validation = validateForPublish(parsed, templates);
    if (!validation.ok) {
      for (const e of validation.errors) errors.push(`${file}: ${e.path || '/'}: ${e.message}`);
    } else if (key === expectedKey) {
      definitions.push(validation.definition);
    }
  }
  if (errors.length > 0) {
    throw new CliError(`nothing imported: ${errors.length} error(s)\n${errors.map((e) => `  ${e}`).join('\n')}`, 1);
  }
  const result: ImportResult = { published: [], unchanged: [] };
  await sql.begin(async (tx) => {
    for (const definition of definitions) {
      const current = await getWorkflow(tx, definition.key);
      // An unchanged file is not a new version (re-importing the export is a no-op).
      if (current && isDeepStrictEqual(current.definition, definition)) {
        result.unchanged.push(definition.key);
        continue;
      }
      const { version } = await putWorkflow(tx, definition, now);
      result.published.push({ key: definition.key, version });
    }
  });
  return result;
}
