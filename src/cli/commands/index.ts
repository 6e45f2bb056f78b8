// Every CLI command, registered in the order `lifeline --help` lists them. Add one line per module.
import type { Command } from 'commander';
import { registerSetupStripe } from './setup-stripe.ts';
import { registerBackfill } from './backfill.ts';
import { registerReplay } from './replay.ts';
import { registerPreview } from './preview.ts';
import { registerDoctor } from './doctor.ts';
import { registerWorkflows } from './workflows.ts';

export function registerCommands(program: Command): void {
  registerSetupStripe(program);
  registerBackfill(program);
  registerReplay(program);
  registerPreview(program);
  registerDoctor(program);
  registerWorkflows(program);
}
