/**
 * Email templates: MJML files in emails/ (one per template key, metadata in a JSON file beside
 * it, shared partials in emails/partials/) compiled ONCE at start-up with strict validation,
 * then personalized per send with Handlebars on the compiled HTML (synchronous, microseconds).
 * See emails/README.md for the file format, the data a template sees and its helpers.
 *
 * This module loads the folder into a TemplateCatalog: brand settings, metadata, one compiled
 * template per key. The pieces: template-mjml.ts (source → checked HTML), template-helpers.ts
 * (the Handlebars environment), template-render.ts (a send), template-samples.ts (sample data),
 * template-error.ts (TemplateError).
 *
 * Any problem in a template (MJML validation error, Handlebars syntax error, unknown helper,
 * missing or invalid metadata) rejects `loadTemplates` with a TemplateError naming the file and
 * line, so a broken template stops start-up instead of breaking a send.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { normalizeLocale } from './money.ts';
import { displayPath, lineAt, TemplateError } from './template-error.ts';
import { compileHandlebars, handlebarsDetail, HTML_COMPILE_OPTIONS, TEXT_COMPILE_OPTIONS, type Compiled } from './template-helpers.ts';
import { checkPlaceholdersSurvive, compileMjml, lintSource } from './template-mjml.ts';
import { deriveTextTemplate, renderTemplate, type CompiledTemplate, type RenderData, type RenderedEmail } from './template-render.ts';
import { sampleData } from './template-samples.ts';

export const TEMPLATE_CATEGORIES = ['transactional', 'lifecycle', 'marketing'] as const;
export type TemplateCategory = (typeof TEMPLATE_CATEGORIES)[number];

export interface Brand {
  productName: string;
  logoUrl?: string;
  /** hex colour, e.g. #4f46e5 (buttons, links) */
  primaryColor: string;
  /** company postal address printed in every footer (CAN-SPAM); newlines become line breaks */
  postalAddress: string;
  /** default locale when a send gives none, e.g. en-US */
  locale: string;
}

export interface LoadTemplatesOptions {
  /** folder with the templates; default: the repository's emails/ */
  dir?: string;
  brand: Brand;
}

export interface TemplateMeta {
  key: string;
  /** default subject (Handlebars allowed); a workflow step may override it */
  subject: string;
  preheader: string;
  category: TemplateCategory;
  description: string;
}

export interface TemplateCatalog {
  keys(): string[];
  meta(key: string): TemplateMeta | undefined;
  /** synchronous; throws TemplateError on an unknown key */
  render(key: string, data: RenderData): RenderedEmail;
  /**
   * How the template's plain-text part is made: 'compiled' (a text template derived from the
   * HTML at start-up, the fast path) or 'converted' (html-to-text on every rendered email, for a
   * template whose structure the derivation cannot follow).
   */
  textStrategy(key: string): 'compiled' | 'converted' | undefined;
}

export const DEFAULT_TEMPLATE_DIR = fileURLToPath(new URL('../../emails/', import.meta.url));
const PARTIALS_DIR = 'partials';
const KEY_PATTERN = /^[a-z0-9][a-z0-9-]*$/;
const META_FIELDS = ['subject', 'preheader', 'category', 'description', 'cta'] as const;

export interface BrandValues {
  productName: string;
  logoUrl: string | null;
  primaryColor: string;
  postalAddress: string;
  locale: string;
}

function checkBrand(brand: Brand): BrandValues {
  const fail = (msg: string): never => {
    throw new TemplateError(`brand settings: ${msg}`);
  };
  if (!brand || typeof brand !== 'object') fail('missing');
  if (typeof brand.productName !== 'string' || !brand.productName.trim()) fail('productName is required');
  if (typeof brand.primaryColor !== 'string' || !/^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$/.test(brand.primaryColor.trim())) {
    fail(`primaryColor must be a hex colour like #4f46e5 (got ${JSON.stringify(brand.primaryColor)})`);
  }
  if (typeof brand.postalAddress !== 'string' || !brand.postalAddress.trim()) {
    fail('postalAddress is required (every email footer shows it)');
  }
  if (brand.logoUrl !== undefined && brand.logoUrl !== null && brand.logoUrl !== '') {
    if (typeof brand.logoUrl !== 'string' || !/^https?:\/\/\S+$/i.test(brand.logoUrl.trim())) {
      fail(`logoUrl must be an http(s) URL (got ${JSON.stringify(brand.logoUrl)})`);
    }
  }
  return {
    productName: brand.productName.trim(),
    logoUrl: brand.logoUrl ? brand.logoUrl.trim() : null,
    primaryColor: brand.primaryColor.trim(),
    postalAddress: brand.postalAddress.trim(),
    locale: normalizeLocale(brand.locale),
  };
}

interface RawMeta {
  subject: string;
  preheader: string;
  category: TemplateCategory;
  description: string;
  cta: string;
}

function parseMeta(file: string, text: string): RawMeta {
  const where = displayPath(file);
  const fail = (msg: string, line?: number): never => {
    throw new TemplateError(`${where}${line ? `:${line}` : ''}: ${msg}`, { file: where, ...(line ? { line } : {}) });
  };
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    const message = String((error as Error).message);
    const pos = /position (\d+)/.exec(message);
    const lineMatch = /line (\d+)/.exec(message);
    const line = lineMatch ? Number(lineMatch[1]) : pos ? lineAt(text, Number(pos[1])) : undefined;
    return fail(`invalid JSON: ${message}`, line);
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) return fail('metadata must be a JSON object');
  const obj = parsed as Record<string, unknown>;
  const lineOf = (field: string): number | undefined => {
    const i = text.indexOf(`"${field}"`);
    return i >= 0 ? lineAt(text, i) : undefined;
  };
  for (const field of Object.keys(obj)) {
    if (field === '$comment') continue;
    if (!(META_FIELDS as readonly string[]).includes(field)) {
      fail(`unknown metadata field "${field}" (allowed: ${META_FIELDS.join(', ')})`, lineOf(field));
    }
  }
  const str = (field: string, required: boolean): string => {
    const v = obj[field];
    if (v === undefined && !required) return '';
    if (typeof v !== 'string' || !v.trim()) return fail(`"${field}" must be a non-empty string`, lineOf(field));
    return v.trim();
  };
  const category = obj.category;
  if (typeof category !== 'string' || !(TEMPLATE_CATEGORIES as readonly string[]).includes(category)) {
    fail(`"category" must be one of ${TEMPLATE_CATEGORIES.join(' | ')} (got ${JSON.stringify(category)})`, lineOf('category'));
  }
  return {
    subject: str('subject', true),
    preheader: str('preheader', true),
    category: category as TemplateCategory,
    description: str('description', true),
    cta: str('cta', false),
  };
}

function compileMetaField(file: string, metaText: string, field: string, source: string): Compiled {
  try {
    return compileHandlebars(source, TEXT_COMPILE_OPTIONS);
  } catch (error) {
    const i = metaText.indexOf(`"${field}"`);
    const line = i >= 0 ? lineAt(metaText, i) : undefined;
    throw new TemplateError(
      `${displayPath(file)}${line ? `:${line}` : ''}: Handlebars in "${field}": ${handlebarsDetail(error)}`,
      { file: displayPath(file), ...(line ? { line } : {}) },
    );
  }
}

async function listFiles(dir: string, ext: string): Promise<string[]> {
  let entries: string[];
  try {
    entries = await readdir(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
  return entries.filter((f) => f.endsWith(ext)).sort();
}

/**
 * Reads and compiles every template in `dir` (default emails/). Rejects with a TemplateError
 * naming the file and line on any problem, so call it at start-up.
 */
export async function loadTemplates(options: LoadTemplatesOptions): Promise<TemplateCatalog> {
  const dir = path.resolve(options.dir ?? DEFAULT_TEMPLATE_DIR);
  const brand = checkBrand(options.brand);
  try {
    if (!(await stat(dir)).isDirectory()) throw new Error('not a directory');
  } catch {
    throw new TemplateError(`template folder ${displayPath(dir)} does not exist`, { file: displayPath(dir) });
  }

  const mjmlFiles = await listFiles(dir, '.mjml');
  const jsonFiles = await listFiles(dir, '.json');
  const partialsDir = path.join(dir, PARTIALS_DIR);
  const partialFiles = (await listFiles(partialsDir, '.mjml')).map((f) => path.join(partialsDir, f));

  for (const f of jsonFiles) {
    if (!mjmlFiles.includes(f.replace(/\.json$/, '.mjml'))) {
      const file = displayPath(path.join(dir, f));
      throw new TemplateError(`${file}: metadata without a template (${f.replace(/\.json$/, '.mjml')} is missing)`, { file });
    }
  }
  if (mjmlFiles.length === 0) throw new TemplateError(`no templates (*.mjml) in ${displayPath(dir)}`, { file: displayPath(dir) });

  // Partials first: a broken partial is reported once, at its own line.
  for (const file of partialFiles) lintSource(file, await readFile(file, 'utf8'));

  const templates = new Map<string, CompiledTemplate>();
  for (const name of mjmlFiles) {
    const key = name.slice(0, -'.mjml'.length);
    const file = path.join(dir, name);
    const metaFile = path.join(dir, `${key}.json`);
    if (!KEY_PATTERN.test(key)) {
      throw new TemplateError(`${displayPath(file)}: template key "${key}" must be lowercase letters, digits and dashes`, {
        file: displayPath(file),
      });
    }
    if (!jsonFiles.includes(`${key}.json`)) {
      throw new TemplateError(`${displayPath(file)}: metadata ${displayPath(metaFile)} is missing`, { file: displayPath(metaFile) });
    }
    const source = await readFile(file, 'utf8');
    const metaText = await readFile(metaFile, 'utf8');
    const raw = parseMeta(metaFile, metaText);
    lintSource(file, source);
    const subject = compileMetaField(metaFile, metaText, 'subject', raw.subject);
    const preheader = compileMetaField(metaFile, metaText, 'preheader', raw.preheader);
    const cta = compileMetaField(metaFile, metaText, 'cta', raw.cta);

    const html = await compileMjml(file, source, brand);
    await checkPlaceholdersSurvive(file, source, html);
    let compiled: Compiled;
    try {
      compiled = compileHandlebars(html, HTML_COMPILE_OPTIONS);
    } catch (error) {
      // The sources passed on their own, so MJML's output broke an expression (e.g. one split
      // across tags, or placed where MJML rewrites it).
      throw new TemplateError(
        `${displayPath(file)}: Handlebars in the compiled HTML: ${handlebarsDetail(error)} (keep {{…}} inside text or attribute values)`,
        { file: displayPath(file) },
      );
    }
    const meta: TemplateMeta = { key, subject: raw.subject, preheader: raw.preheader, category: raw.category, description: raw.description };
    const template: CompiledTemplate = { meta, file, html: compiled, text: deriveTextTemplate(html), subject, preheader, cta };

    // Smoke render with sample data: runtime errors surface now, not during a send.
    try {
      renderTemplate(template, sampleData(key), brand);
    } catch (error) {
      throw new TemplateError(`${displayPath(file)}: rendering with sample data failed: ${(error as Error).message}`, {
        file: displayPath(file),
      });
    }
    templates.set(key, template);
  }

  const keys = [...templates.keys()].sort();
  return {
    keys: () => [...keys],
    meta: (key) => {
      const t = templates.get(key);
      return t ? { ...t.meta } : undefined;
    },
    render: (key, data) => {
      const t = templates.get(key);
      if (!t) throw new TemplateError(`unknown email template "${key}"`);
      return renderTemplate(t, data, brand);
    },
    textStrategy: (key) => {
      const t = templates.get(key);
      return t ? (t.text ? 'compiled' : 'converted') : undefined;
    },
  };
}
