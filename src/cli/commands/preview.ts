// `lifeline preview <template>` (also `npm run preview -- <template>`): renders one email template
// with realistic sample data into a file, brand settings from the same environment variables as the
// service (BRAND_NAME, BRAND_COLOR, …). Replaces the former src/email/preview-cli.ts.
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Option, type Command } from 'commander';
import { loadTemplates } from '../../email/template-catalog.ts';
import { TemplateError } from '../../email/template-error.ts';
import { sampleData } from '../../email/template-samples.ts';
import { CliError } from '../cli-error.ts';
import { cliConfig } from '../stripe-context.ts';

export interface PreviewOptions {
  format: 'html' | 'text';
  out?: string;
  locale?: string;
}

/** Renders `key` and writes it; returns the absolute path written. */
export async function previewTemplate(key: string, options: PreviewOptions, env: Record<string, string | undefined> = process.env): Promise<string> {
  const config = cliConfig(env);
  const catalog = await loadTemplates({ brand: config.brand });
  if (!catalog.meta(key)) throw new CliError(`unknown template "${key}"; known: ${catalog.keys().join(', ')}`, 2);
  const data = sampleData(key);
  if (options.locale) data.locale = options.locale;
  let email;
  try {
    email = catalog.render(key, data);
  } catch (err) {
    if (err instanceof TemplateError) throw new CliError(`template error: ${err.message}`, 1);
    throw err;
  }
  const ext = options.format === 'html' ? 'html' : 'txt';
  const out = path.resolve(options.out ?? path.join('.lifeline', 'previews', `${key}.${ext}`));
  await mkdir(path.dirname(out), { recursive: true });
  const body =
    options.format === 'html'
      ? email.html
      : `Subject: ${email.subject}\nPreheader: ${email.preheader}\nCategory: ${email.category}\n\n${email.text}`;
  await writeFile(out, body);
  return out;
}

export function registerPreview(program: Command): void {
  program
    .command('preview')
    .description('render an email template with sample data into a file (default .lifeline/previews/<template>.html) and print its path')
    .argument('[template]', 'template key, e.g. dunning-final (see --list)')
    .addOption(new Option('--format <format>', 'html, or text (the plain-text part with subject and preheader)').choices(['html', 'text']).default('html'))
    .option('--out <file>', 'write here instead of .lifeline/previews/')
    .option('--locale <locale>', 'render numbers, money and dates for this locale, e.g. de-DE')
    .option('--list', 'list template keys, categories and default subjects')
    .action(async (template: string | undefined, opts: { format: 'html' | 'text'; out?: string; locale?: string; list?: boolean }) => {
      if (opts.list) {
        const catalog = await loadTemplates({ brand: cliConfig().brand });
        for (const key of catalog.keys()) {
          const meta = catalog.meta(key);
          console.log(`${key.padEnd(36)} ${meta?.category.padEnd(14)} ${meta?.subject}`);
        }
        return;
      }
      if (!template) throw new CliError('missing <template>: give a template key, or --list to see them', 2);
      console.log(await previewTemplate(template, opts));
    });
}
