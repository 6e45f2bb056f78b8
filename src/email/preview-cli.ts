/**
 * Renders one email template with realistic sample data and writes it to a file.
 *
 *   npm run preview -- <key> [--format html|text] [--out file] [--locale de-DE]
 *   npm run preview -- --list
 *
 * Default output: .lifeline/previews/<key>.html (or .txt for --format text). Brand settings come
 * from the same environment variables as the service (BRAND_NAME, BRAND_COLOR, …).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfig } from '../config.ts';
import { loadTemplates } from './template-catalog.ts';
import { TemplateError } from './template-error.ts';
import { sampleData } from './template-samples.ts';

const USAGE = 'usage: npm run preview -- <template-key> [--format html|text] [--out file] [--locale xx-XX] | --list';

async function main(): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      allowPositionals: true,
      options: {
        format: { type: 'string', default: 'html' },
        out: { type: 'string' },
        locale: { type: 'string' },
        list: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (error) {
    console.error(`${(error as Error).message}\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const format = values.format;
  if (format !== 'html' && format !== 'text') {
    console.error(`--format must be html or text\n${USAGE}`);
    return 2;
  }

  const config = loadConfig(process.env);
  const catalog = await loadTemplates({ brand: config.brand });

  if (values.list) {
    for (const key of catalog.keys()) {
      const meta = catalog.meta(key);
      console.log(`${key.padEnd(36)} ${meta?.category.padEnd(14)} ${meta?.subject}`);
    }
    return 0;
  }
  const key = positionals[0];
  if (!key || positionals.length > 1) {
    console.error(USAGE);
    return 2;
  }
  if (!catalog.meta(key)) {
    console.error(`unknown template "${key}"; known: ${catalog.keys().join(', ')}`);
    return 2;
  }

  const data = sampleData(key);
  if (values.locale) data.locale = values.locale;
  const email = catalog.render(key, data);
  const out = path.resolve(values.out ?? path.join('.lifeline', 'previews', `${key}.${format === 'html' ? 'html' : 'txt'}`));
  await mkdir(path.dirname(out), { recursive: true });
  const body =
    format === 'html'
      ? email.html
      : `Subject: ${email.subject}\nPreheader: ${email.preheader}\nCategory: ${email.category}\n\n${email.text}`;
  await writeFile(out, body);
  console.log(out);
  return 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    console.error(error instanceof TemplateError ? `template error: ${error.message}` : error);
    process.exitCode = 1;
  },
);
