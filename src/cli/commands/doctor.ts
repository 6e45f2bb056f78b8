// `lifeline doctor`: see ../doctor.ts. Exit 1 when any check fails (warnings and notes do not).
import { Resolver } from 'node:dns/promises';
import type { Command } from 'commander';
import { CliError } from '../cli-error.ts';
import { formatChecks, runDoctor } from '../doctor.ts';

export function registerDoctor(program: Command): void {
  program
    .command('doctor')
    .description('check the installation: database, secrets, PUBLIC_URL, templates, brand settings, the Stripe webhook endpoint, and the sending domain\'s SPF, DKIM and DMARC; prints a fix for each failure; exit 1 if any check fails')
    .option('--dns-server <address...>', 'ask these DNS servers (ip or ip:port) instead of the system resolver')
    .action(async (opts: { dnsServer?: string[] }) => {
      const resolver = new Resolver({ timeout: 3_000, tries: 2 });
      if (opts.dnsServer) resolver.setServers(opts.dnsServer);
      const results = await runDoctor({ env: process.env, resolver });
      for (const line of formatChecks(results)) console.log(line);
      const failed = results.filter((r) => r.status === 'fail').length;
      if (failed > 0) throw new CliError(`doctor: ${failed} check(s) failed (fixes above)`, 1);
    });
}
