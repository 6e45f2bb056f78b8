// `lifeline workflows export <dir>` / `lifeline workflows import <dir>`: see ../workflow-files.ts.
import type { Command } from 'commander';
import { cliActor, recordAudit } from '../../admin/audit-log.ts';
import { systemClock } from '../../clock.ts';
import { loadTemplates } from '../../email/template-catalog.ts';
import { exportWorkflows, importWorkflows } from '../workflow-files.ts';
import { cliConfig, openCliDatabase } from '../stripe-context.ts';

export function registerWorkflows(program: Command): void {
  const workflows = program.command('workflows').description('workflow definitions as JSON files (one per workflow) for review in pull requests');
  workflows
    .command('export')
    .description('write the current version of every workflow to <dir>/<key>.json')
    .argument('<dir>', 'folder to write into (created if missing)')
    .action(async (dir: string) => {
      const db = await openCliDatabase(cliConfig());
      try {
        const files = await exportWorkflows(db.sql, dir);
        for (const file of files) console.log(file);
        console.log(`exported ${files.length} workflow(s)`);
      } finally {
        await db.close();
      }
    });
  workflows
    .command('import')
    .description('check every <dir>/*.json with the publish-time rules (all errors reported), then publish them in one transaction: all or none; unchanged files add no version')
    .argument('<dir>', 'folder of <key>.json files')
    .action(async (dir: string) => {
      const config = cliConfig();
      const templates = await loadTemplates({ brand: config.brand });
      const db = await openCliDatabase(config);
      try {
        const result = await importWorkflows(db.sql, dir, templates, systemClock.now());
        for (const p of result.published) {
          await recordAudit(db.sql, { at: systemClock.now(), actor: cliActor(), action: 'workflow.published', target: p.key, diff: { version: { to: p.version }, via: 'lifeline workflows import' } });
        }
        for (const p of result.published) console.log(`published ${p.key} v${p.version}`);
        if (result.unchanged.length > 0) console.log(`unchanged: ${result.unchanged.join(', ')}`);
      } finally {
        await db.close();
      }
    });
}
