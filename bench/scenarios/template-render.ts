// Template render: personalized emails (HTML + plain text) per second of CPU from the catalog
// compiled at start-up, against the naive way — one mjml2html per email (plus html-to-text for
// its text part). Runs in the bench process, one thread: "per core" is emails per CPU-second
// of this process (process.cpuUsage), which outside load on the machine does not inflate.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import mjml2html from 'mjml';
import { loadConfig } from '../../src/config.ts';
import { DEFAULT_TEMPLATE_DIR, loadTemplates } from '../../src/email/template-catalog.ts';
import { htmlToPlainText, type RenderData } from '../../src/email/template-render.ts';
import { sampleData } from '../../src/email/template-samples.ts';
import type { Scenario } from '../lib/context.ts';
import { fmt, progress } from '../lib/log.ts';

const S = 'template-render';
const FIRST_NAMES = ['Ada', 'Grace', 'Linus', 'Ken', 'Barbara', 'Edsger', 'Zoë', 'Jürgen'];
const LOCALES = ['en-US', 'de-DE', 'fr-FR', 'ja-JP', 'en-GB'];
const CURRENCIES: [string, number][] = [['usd', 4900], ['eur', 12900], ['jpy', 4900], ['bhd', 12345], ['gbp', 99]];

/** Personalized data for email i: a different contact, locale, account and amount each time. */
function dataFor(key: string, i: number): RenderData {
  const base = sampleData(key);
  const [currency, amount] = CURRENCIES[i % CURRENCIES.length]!;
  return {
    ...base,
    contact: { email: `user${i}@example.com`, firstName: FIRST_NAMES[i % FIRST_NAMES.length]!, traits: { ...base.contact.traits, plan: i % 2 ? 'team' : 'pro' } },
    account: { traits: { ...(base.account?.traits ?? {}), name: `Customer ${i} GmbH`, usage: 9000 + (i % 1000), usage_limit: 10_000 } },
    invoice: base.invoice ? { ...base.invoice, amountDue: amount + i, currency } : null,
    links: { ...base.links, action: `https://links.example.com/c/${i}?m=${key}`, unsubscribe: `https://links.example.com/u/${i}` },
    locale: LOCALES[i % LOCALES.length]!,
  };
}

/** Runs `fn` (one after another) for about `seconds`; returns calls per wall second and per CPU-second. */
async function measure(seconds: number, fn: (i: number) => number | Promise<number>): Promise<{ perSec: number; perCpuSec: number; count: number; bytes: number }> {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const until = t0 + seconds * 1000;
  let count = 0;
  let bytes = 0;
  while (performance.now() < until) bytes += await fn(count++);
  const wall = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  return { perSec: count / wall, perCpuSec: count / ((cpu.user + cpu.system) / 1e6), count, bytes };
}

export const templateRender: Scenario = {
  name: S,
  description: 'emails/s per core from compiled templates (HTML + text) vs one mjml2html per email',
  async run(ctx) {
    const brand = loadConfig({}).brand;
    const catalog = await loadTemplates({ brand });
    const keys = catalog.keys();
    // Warm-up: JIT, Intl formatters for every locale and currency.
    for (let i = 0; i < 2000; i++) catalog.render(keys[i % keys.length]!, dataFor(keys[i % keys.length]!, i));
    const datas = Array.from({ length: 5000 }, (_, i) => dataFor(keys[i % keys.length]!, i));

    const compiled = await measure(5, (i) => {
      const key = keys[i % keys.length]!;
      const email = catalog.render(key, datas[i % datas.length]!);
      return email.html.length + email.text.length;
    });
    progress(S, `compiled: ${fmt(compiled.count)} emails, ${fmt(compiled.perSec)}/s wall, ${fmt(compiled.perCpuSec)}/s per CPU-second, ${fmt(compiled.bytes / compiled.count)} bytes each`);

    // Baseline: the MJML of each template (brand tokens filled in) compiled for every email,
    // then its text part; no personalization at all, so this is a lower bound on that cost.
    const sources = await Promise.all(
      keys.map(async (key) => {
        const file = path.join(DEFAULT_TEMPLATE_DIR, `${key}.mjml`);
        const source = (await readFile(file, 'utf8')).replace(/\[\[brand\.(\w+)\]\]/g, (_m, name: string) => String((brand as Record<string, unknown>)[name] ?? ''));
        return { file, source };
      }),
    );
    const brandTokens = (xml: string) => xml.replace(/\[\[brand\.(\w+)\]\]/g, (_m, name: string) => String((brand as Record<string, unknown>)[name] ?? ''));
    const naive = await measure(5, async (i) => {
      const { file, source } = sources[i % sources.length]!;
      const html = (await mjml2html(source, { filePath: file, actualPath: file, validationLevel: 'skip', preprocessors: [brandTokens], keepComments: false })).html;
      const text = htmlToPlainText(html);
      return html.length + text.length;
    });
    progress(S, `baseline (mjml2html per email): ${fmt(naive.count)} emails, ${fmt(naive.perSec)}/s wall, ${fmt(naive.perCpuSec)}/s per CPU-second`);

    ctx.report.ratio(S, 'personalized emails (HTML + text) per CPU-second, compiled templates vs one mjml2html per email', Math.round(compiled.perCpuSec), 'emails/s', Math.round(naive.perCpuSec), 20);
    const perCore = Math.round(compiled.perCpuSec);
    ctx.report.rows.push({ scenario: S, figure: 'emails per CPU-second (one core)', value: perCore, unit: 'emails/s', baseline: null, ratio: null, target: '≥ 10,000 emails/s', holds: perCore >= 10_000 ? 'yes' : 'no' });
    ctx.report.info(S, 'emails/s, wall clock (one thread, shared machine)', Math.round(compiled.perSec), 'emails/s');
  },
};
