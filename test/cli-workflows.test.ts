// `lifeline workflows export|import` on real PostgreSQL: the export re-imports as a no-op, an
// edited file becomes a new version, and a folder with any invalid file publishes nothing and
// reports every error.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Command } from 'commander';
import { createSql } from '../src/db/connection.ts';
import { loadTemplates } from '../src/email/template-catalog.ts';
import { builtinDefinitions } from '../src/workflows/builtin/index.ts';
import { putWorkflow, getWorkflow } from '../src/workflows/workflow-store.ts';
import { exportWorkflows, importWorkflows } from '../src/cli/workflow-files.ts';
import { registerCommands } from '../src/cli/commands/index.ts';
import { createTestDatabase } from './helpers/database.ts';

test('workflows export -> import round trip; an invalid file makes the import publish nothing', async (t) => {
  const database = await createTestDatabase();
  const sql = createSql(database.url, { max: 2 });
  const dir = await mkdtemp(path.join(tmpdir(), 'lifeline-workflows-'));
  t.after(async () => {
    await sql.end();
    await database.drop();
    await rm(dir, { recursive: true, force: true });
  });
  const now = new Date('2026-11-01T00:00:00Z');
  const templates = await loadTemplates({ brand: { productName: 'Acme', postalAddress: '1 Main St', primaryColor: '#4f46e5', locale: 'en-US', appUrl: 'https://app.acme.test' } as never });
  for (const definition of builtinDefinitions) await putWorkflow(sql, definition, now);

  const files = await exportWorkflows(sql, dir);
  assert.deepEqual((await readdir(dir)).sort(), builtinDefinitions.map((d) => `${d.key}.json`).sort());
  assert.equal(files.length, builtinDefinitions.length);

  // Re-importing the export changes nothing (no new versions).
  const same = await importWorkflows(sql, dir, templates, now);
  assert.deepEqual(same.published, []);
  assert.equal(same.unchanged.length, builtinDefinitions.length);

  // An edit becomes the next version of that workflow only.
  const [first] = builtinDefinitions;
  const file = path.join(dir, `${first!.key}.json`);
  const edited = { ...JSON.parse(await readFile(file, 'utf8')), name: 'Renamed in a pull request' };
  await writeFile(file, JSON.stringify(edited, null, 2));
  const changed = await importWorkflows(sql, dir, templates, now);
  assert.deepEqual(changed.published, [{ key: first!.key, version: 2 }]);
  assert.equal((await getWorkflow(sql, first!.key))!.definition.name, 'Renamed in a pull request');

  // A valid edit plus three broken files: nothing is published, every error is reported.
  await writeFile(file, JSON.stringify({ ...edited, name: 'Second edit' }, null, 2));
  const second = builtinDefinitions[1]!;
  await writeFile(path.join(dir, `${second.key}.json`), JSON.stringify({ ...second, key: 'other-key' }));
  await writeFile(path.join(dir, 'broken.json'), '{ not json');
  await writeFile(path.join(dir, 'bad-template.json'), JSON.stringify({ ...second, key: 'bad-template', steps: [{ id: 's1', type: 'send', template: 'no-such-template' }] }));
  await assert.rejects(importWorkflows(sql, dir, templates, now), (err: Error & { exitCode?: number }) => {
    assert.equal(err.exitCode, 1);
    assert.match(err.message, /^nothing imported/);
    assert.match(err.message, new RegExp(`${second.key}\\.json: /key: must be "${second.key}"`));
    assert.match(err.message, /broken\.json: not valid JSON/);
    assert.match(err.message, /bad-template\.json: /);
    return true;
  });
  const after = await getWorkflow(sql, first!.key);
  assert.equal(after!.definition.name, 'Renamed in a pull request', 'the valid edit was not published either');
  assert.deepEqual(after!.versions, [1, 2]);
  assert.equal(await getWorkflow(sql, 'bad-template'), null);
});

test('workflows export/import --help', () => {
  const program = new Command('lifeline').exitOverride();
  registerCommands(program);
  const workflows = program.commands.find((c) => c.name() === 'workflows')!;
  assert.match(workflows.helpInformation(), /export/);
  assert.match(workflows.helpInformation(), /import/);
  assert.match(workflows.commands.find((c) => c.name() === 'import')!.helpInformation(), /all or none/);
});
