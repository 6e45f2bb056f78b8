#!/usr/bin/env node
// `npx lifeline <command>` (or `npm run cli -- <command>`): the operator's command line.
// Each command lives in its own module under ./commands and registers itself on the program;
// this file only assembles them and maps outcomes to exit codes (0 ok, 1 failure, 2 usage).
import { Command, CommanderError } from 'commander';
import { registerCommands } from './commands/index.ts';
import { CliError } from './cli-error.ts';

export function buildProgram(): Command {
  const program = new Command('lifeline')
    .description('Lifeline: lifecycle and billing-recovery workflows for B2B SaaS')
    .showHelpAfterError()
    .exitOverride();
  registerCommands(program);
  return program;
}

export async function runCli(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version exit through here with code 0; usage errors were already printed.
      return err.exitCode === 0 ? 0 : 2;
    }
    const message = err instanceof Error ? err.message : String(err);
    console.error(`lifeline: ${message}`);
    return err instanceof CliError ? err.exitCode : 1;
  }
}

process.exitCode = await runCli(process.argv.slice(2));
