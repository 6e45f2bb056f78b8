/**
 * Email templates: MJML files in emails/ (one per template key, metadata in a JSON file beside
 * it, shared partials in emails/partials/) compiled ONCE at start-up with strict validation,
 * then personalized per send with Handlebars on the compiled HTML (synchronous, microseconds).
 * See emails/README.md for the file format, the data a template sees and its helpers.
 *
 * Any problem in a template (MJML validation error, Handlebars syntax error, unknown helper,
 * missing or invalid metadata) rejects `loadTemplates` with a TemplateError naming the file and
 * line, so a broken template stops start-up instead of breaking a send.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Handlebars from 'handlebars';
import { compile as compileHtmlToText } from 'html-to-text';
import mjml2html from 'mjml';
import { formatMoney, formatNumber, normalizeLocale } from './money.ts';

// ---------------------------------------------------------------------------------------------
// Public types

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

export interface RenderData {
  contact: { email: string | null; firstName?: string | null; traits: Record<string, unknown> };
  account?: { traits: Record<string, unknown> } | null;
  invoice?: {
    /** minor units, as Stripe sends them */
    amountDue: number;
    amountRemaining?: number;
    currency: string;
    hostedInvoiceUrl?: string | null;
    nextPaymentAttempt?: string | null;
    dueDate?: string | null;
  } | null;
  links: {
    /** the main button: hosted invoice / update card / app link, already click-tracked */
    action?: string;
    unsubscribe?: string | null;
    app?: string;
  };
  /** from the workflow step; Handlebars allowed (see README: rendered as plain text) */
  subject?: string;
  /** contact locale; default brand.locale */
  locale?: string;
  /** IANA time zone for dates; default contact.traits.timezone, else UTC */
  timeZone?: string | null;
  /** the sending workflow's category, when it differs from the template's (decides the footer) */
  category?: TemplateCategory;
  /** workflow options, e.g. couponCode */
  options?: Record<string, unknown>;
  /** the run's trigger fact ({ name, properties, occurredAt }) or just its properties; templates read trigger.properties.* */
  trigger?: Record<string, unknown>;
  /** the sending moment (from the service clock): the footer's year; default the real time */
  now?: Date;
}

export interface RenderedEmail {
  subject: string;
  html: string;
  text: string;
  preheader: string;
  category: TemplateCategory;
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

export class TemplateError extends Error {
  /** the file at fault (relative to the working directory when inside it) */
  file: string | undefined;
  line: number | undefined;
  constructor(message: string, location?: { file?: string; line?: number }) {
    super(message);
    this.name = 'TemplateError';
    this.file = location?.file;
    this.line = location?.line;
  }
}

// ---------------------------------------------------------------------------------------------
// Handlebars: one isolated instance with our helpers

export const DEFAULT_TEMPLATE_DIR = fileURLToPath(new URL('../../emails/', import.meta.url));
const PARTIALS_DIR = 'partials';
const KEY_PATTERN = /^[a-z0-9][a-z0-9-]*$/;
const META_FIELDS = ['subject', 'preheader', 'category', 'description', 'cta'] as const;

const hb = Handlebars.create();

interface RootContext {
  locale: string;
  timeZone: string;
  contact: { email: string | null; firstName: string | null; traits: Record<string, unknown> };
}

function rootOf(options: Handlebars.HelperOptions | undefined): RootContext | undefined {
  return (options?.data as { root?: RootContext } | undefined)?.root;
}

/** The helper's own options object is always the last argument. */
function splitArgs(args: unknown[]): { params: unknown[]; options: Handlebars.HelperOptions | undefined } {
  const options = args[args.length - 1] as Handlebars.HelperOptions | undefined;
  return { params: args.slice(0, -1), options };
}

function firstNameOf(contact: RootContext['contact'] | undefined): string | null {
  if (!contact) return null;
  const traits = contact.traits ?? {};
  const candidates = [contact.firstName, traits.firstName, traits.first_name];
  for (const c of candidates) {
    if (typeof c === 'string' && c.trim()) return c.trim();
  }
  const name = traits.name;
  if (typeof name === 'string' && name.trim()) return name.trim().split(/\s+/)[0] ?? null;
  return null;
}

const dateFormatters = new Map<string, Intl.DateTimeFormat>();

function toDate(value: unknown): Date | null {
  if (value instanceof Date) return Number.isNaN(value.getTime()) ? null : value;
  if (typeof value === 'number' && Number.isFinite(value)) {
    // Stripe timestamps are Unix seconds; anything larger is milliseconds.
    return new Date(value < 1e12 ? value * 1000 : value);
  }
  if (typeof value === 'string' && value.trim()) {
    const d = new Date(value);
    return Number.isNaN(d.getTime()) ? null : d;
  }
  return null;
}

/** A date in the locale and time zone ("April 2, 2026" / "2. April 2026"); '' when not a date. */
export function formatDate(value: unknown, locale: string, timeZone = 'UTC', style: string = 'long'): string {
  const date = toDate(value);
  if (!date) return '';
  const dateStyle = (['full', 'long', 'medium', 'short'] as const).find((s) => s === style) ?? 'long';
  const key = `${locale}|${timeZone}|${dateStyle}`;
  let f = dateFormatters.get(key);
  if (!f) {
    if (dateFormatters.size > 500) dateFormatters.clear();
    try {
      f = new Intl.DateTimeFormat(normalizeLocale(locale), { dateStyle, timeZone });
    } catch {
      f = new Intl.DateTimeFormat(normalizeLocale(locale), { dateStyle, timeZone: 'UTC' }); // unknown time zone
    }
    dateFormatters.set(key, f);
  }
  return f.format(date);
}

const HELPERS: Record<string, Handlebars.HelperDelegate> = {
  /** {{money amount currency}}: minor units → "$49.00" in the email's locale */
  money(...args: unknown[]) {
    const { params, options } = splitArgs(args);
    const [amount, currency] = params;
    if (typeof amount !== 'number' || typeof currency !== 'string') return '';
    return formatMoney(amount, currency, rootOf(options)?.locale ?? 'en');
  },
  /** {{firstName}} or {{firstName "team"}}: the contact's first name, else the fallback ("there") */
  firstName(...args: unknown[]) {
    const { params, options } = splitArgs(args);
    const fallback = typeof params[0] === 'string' ? params[0] : 'there';
    return firstNameOf(rootOf(options)?.contact) ?? fallback;
  },
  /** {{date value}} / {{date value "medium"}}: ISO string, Date or Unix seconds, in the locale */
  date(...args: unknown[]) {
    const { params, options } = splitArgs(args);
    const root = rootOf(options);
    const style = typeof params[1] === 'string' ? params[1] : 'long';
    return formatDate(params[0], root?.locale ?? 'en', root?.timeZone ?? 'UTC', style);
  },
  /** {{number value}} / {{number value 1}}: locale-aware number */
  number(...args: unknown[]) {
    const { params, options } = splitArgs(args);
    const value = typeof params[0] === 'string' && params[0].trim() !== '' ? Number(params[0]) : params[0];
    const digits = typeof params[1] === 'number' ? params[1] : 0;
    return typeof value === 'number' ? formatNumber(value, rootOf(options)?.locale ?? 'en', digits) : '';
  },
  /** {{pct value}}: a whole number 0–100, for widths (usage bars); not localized */
  pct(...args: unknown[]) {
    const { params } = splitArgs(args);
    const value = Number(params[0]);
    return Number.isFinite(value) ? String(Math.max(0, Math.min(100, Math.round(value)))) : '0';
  },
  /** {{or a b "fallback"}}: the first non-empty argument */
  or(...args: unknown[]) {
    const { params } = splitArgs(args);
    return params.find((p) => p !== null && p !== undefined && p !== '' && p !== false) ?? '';
  },
  /** {{lines text}}: escapes the text and turns newlines into <br> */
  lines(...args: unknown[]) {
    const { params } = splitArgs(args);
    const text = params[0] === null || params[0] === undefined ? '' : String(params[0]);
    const html = text
      .split(/\r?\n/)
      .map((l) => hb.escapeExpression(l.trim()))
      .filter((l) => l !== '')
      .join('<br />');
    return new hb.SafeString(html);
  },
};

for (const [name, fn] of Object.entries(HELPERS)) hb.registerHelper(name, fn);

const KNOWN_HELPERS = Object.fromEntries(Object.keys(HELPERS).map((name) => [name, true]));
/** Unknown helpers are compile errors (start-up), not render errors (a send). */
const HTML_COMPILE_OPTIONS: CompileOptions = { knownHelpers: KNOWN_HELPERS, knownHelpersOnly: true, preventIndent: true };
/** Subjects, preheaders and button labels are plain text: no HTML escaping there. */
const TEXT_COMPILE_OPTIONS: CompileOptions = { ...HTML_COMPILE_OPTIONS, noEscape: true };

type CompileOptions = NonNullable<Parameters<typeof Handlebars.compile>[1]>;
type Compiled = Handlebars.TemplateDelegate;

/** Handlebars error → line in its own source (1-based), when it says. */
function handlebarsLine(error: unknown): number | undefined {
  const e = error as { lineNumber?: unknown; message?: unknown };
  if (typeof e.lineNumber === 'number') return e.lineNumber;
  const m = /line (\d+)/i.exec(String(e.message ?? ''));
  return m ? Number(m[1]) : undefined;
}

function handlebarsDetail(error: unknown): string {
  const message = String((error as { message?: unknown }).message ?? error);
  // "Parse error on line 3:\n…source…\n----^\nExpecting …" → keep it, but on one block
  return message.replace(/ - \d+:\d+$/, '').trim();
}

/** Compiles eagerly (Handlebars compiles lazily on first call otherwise). */
function compileHandlebars(source: string, options: CompileOptions): Compiled {
  return compileHandlebarsWith(hb, source, options);
}

function compileHandlebarsWith(env: typeof hb, source: string, options: CompileOptions): Compiled {
  env.precompile(source, options); // throws on syntax errors and unknown helpers
  return env.compile(source, options);
}

// ---------------------------------------------------------------------------------------------
// Loading

interface CompiledTemplate {
  meta: TemplateMeta;
  file: string;
  html: Compiled;
  /** the plain-text part as its own template, or null: convert the rendered HTML instead */
  text: Compiled | null;
  subject: Compiled;
  preheader: Compiled;
  cta: Compiled;
}

interface BrandValues {
  productName: string;
  logoUrl: string | null;
  primaryColor: string;
  postalAddress: string;
  locale: string;
}

function displayPath(file: string): string {
  const rel = path.relative(process.cwd(), file);
  return rel && !rel.startsWith('..') && !path.isAbsolute(rel) ? rel : file;
}

function lineAt(text: string, index: number): number {
  let line = 1;
  for (let i = 0; i < index && i < text.length; i++) if (text.charCodeAt(i) === 10) line++;
  return line;
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

/**
 * Compile-time brand tokens: `[[brand.primaryColor]]` etc. are replaced before MJML compiles,
 * for the attributes MJML type-checks (colours). Everything else uses `{{brand.*}}` at render.
 */
const BRAND_TOKEN = /\[\[\s*brand\.([A-Za-z]+)\s*\]\]/g;

function xmlEscape(value: string): string {
  return value.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`).replace(/\r?\n/g, ' ');
}

function brandPreprocessor(brand: BrandValues): (xml: string) => string {
  return (xml) =>
    xml.replace(BRAND_TOKEN, (_m, name: string) => {
      const value = (brand as unknown as Record<string, string | null>)[name];
      return xmlEscape(value ?? '');
    });
}

/**
 * MJML's parser is lenient: an unclosed or mismatched mj-* tag is silently "repaired" (content
 * dropped) and passes strict validation. mj-* tags never nest inside HTML content, so checking
 * their balance catches it, with the line.
 */
function checkMjmlTags(file: string, source: string): void {
  const where = displayPath(file);
  const stack: { name: string; line: number }[] = [];
  const tag = /<!--[\s\S]*?-->|<(\/?)(mjml|mj-[a-z-]+)\b(?:"[^"]*"|'[^']*'|[^'">])*?(\/?)>/g;
  for (const m of source.matchAll(tag)) {
    if (!m[2]) continue; // a comment
    const name = m[2];
    const line = lineAt(source, m.index ?? 0);
    if (m[3] === '/') continue; // <mj-x … />
    if (m[1] !== '/') {
      stack.push({ name, line });
      continue;
    }
    const open = stack.pop();
    if (!open) throw new TemplateError(`${where}:${line}: </${name}> has no opening tag`, { file: where, line });
    if (open.name !== name) {
      throw new TemplateError(`${where}:${open.line}: <${open.name}> is not closed (found </${name}> on line ${line})`, {
        file: where,
        line: open.line,
      });
    }
  }
  const open = stack.pop();
  if (open) throw new TemplateError(`${where}:${open.line}: <${open.name}> is not closed`, { file: where, line: open.line });
}

/** For "unexpected end of file" parse errors: the line of the block that was never closed. */
function unclosedBlockLine(source: string): { name: string; line: number } | null {
  const stack: { name: string; line: number }[] = [];
  const mustache = /\{\{!--[\s\S]*?--\}\}|\{\{![\s\S]*?\}\}|\{\{~?\s*([#^/])\s*>?\s*([^\s}~]+)/g;
  for (const m of source.matchAll(mustache)) {
    if (!m[1]) continue;
    const name = m[2] ?? '';
    if (m[1] === '/') stack.pop();
    else stack.push({ name, line: lineAt(source, m.index ?? 0) });
  }
  return stack.pop() ?? null;
}

/** Per-file checks with the file's own line numbers: Handlebars syntax, helpers, brand tokens, tags. */
function lintSource(file: string, source: string): void {
  for (const m of source.matchAll(BRAND_TOKEN)) {
    const name = m[1] ?? '';
    if (!['productName', 'logoUrl', 'primaryColor', 'postalAddress', 'locale'].includes(name)) {
      const line = lineAt(source, m.index ?? 0);
      throw new TemplateError(`${displayPath(file)}:${line}: unknown brand token [[brand.${name}]]`, {
        file: displayPath(file),
        line,
      });
    }
  }
  try {
    hb.precompile(source, HTML_COMPILE_OPTIONS);
  } catch (error) {
    const detail = handlebarsDetail(error);
    const unclosed = /got 'EOF'/.test(detail) ? unclosedBlockLine(source) : null;
    if (unclosed) {
      throw new TemplateError(
        `${displayPath(file)}:${unclosed.line}: Handlebars: {{#${unclosed.name}}} is never closed (expected {{/${unclosed.name}}})`,
        { file: displayPath(file), line: unclosed.line },
      );
    }
    const line = handlebarsLine(error);
    throw new TemplateError(`${displayPath(file)}:${line ?? '?'}: Handlebars: ${detail}`, {
      file: displayPath(file),
      ...(line !== undefined ? { line } : {}),
    });
  }
  checkMjmlTags(file, source);
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

interface MjmlIssue {
  line: number;
  message: string;
  tagName: string;
  formattedMessage: string;
}

/** Turns MJML's validation errors into one TemplateError naming file:line (partials included). */
function mjmlError(templateFile: string, issues: MjmlIssue[]): TemplateError {
  const described = issues.map((issue) => {
    // "Line 4 of /abs/partials/footer.mjml, included at line 10 of file /abs/x.mjml (mj-foo) — msg"
    const m = /^Line (\d+) of (.+?)(?:, included at (.+?))? \(([^)]*)\) — ([\s\S]*)$/.exec(issue.formattedMessage ?? '');
    const file = m?.[2] ? displayPath(m[2]) : displayPath(templateFile);
    const line = m ? Number(m[1]) : issue.line;
    const included = m?.[3]
      ? ` (included at ${m[3].replace(/of file (\S+)/g, (_s, f: string) => `of ${displayPath(f)}`)})`
      : '';
    return { file, line, text: `${file}:${line}: <${issue.tagName}> ${m?.[5] ?? issue.message}${included}` };
  });
  const first = described[0];
  const more = described.length > 1 ? `\n${described.slice(1).map((d) => `  ${d.text}`).join('\n')}` : '';
  return new TemplateError(`MJML validation failed: ${first?.text ?? displayPath(templateFile)}${more}`, {
    ...(first ? { file: first.file, line: first.line } : { file: displayPath(templateFile) }),
  });
}

interface MjmlNode {
  tagName?: string;
  line?: number;
  file?: string;
  absoluteFilePath?: string;
  errors?: { type?: string }[];
  children?: MjmlNode[];
}

/** MJML turns an unreadable or denied mj-include into a comment, even in strict mode. */
function findIncludeFailure(node: MjmlNode | undefined): MjmlNode | null {
  if (!node) return null;
  if (node.errors?.some((e) => e.type === 'include' || e.type === 'include-denied')) return node;
  for (const child of node.children ?? []) {
    const found = findIncludeFailure(child);
    if (found) return found;
  }
  return null;
}

async function compileMjml(file: string, source: string, brand: BrandValues): Promise<string> {
  try {
    const result = await mjml2html(source, {
      validationLevel: 'strict',
      filePath: file,
      actualPath: file,
      ignoreIncludes: false,
      preprocessors: [brandPreprocessor(brand)],
      fonts: {},
      keepComments: false,
    });
    if (result.errors?.length) throw mjmlError(file, result.errors as MjmlIssue[]);
    const failedInclude = findIncludeFailure(result.json as unknown as MjmlNode);
    if (failedInclude) {
      const where = displayPath(failedInclude.absoluteFilePath ?? failedInclude.file ?? file);
      throw new TemplateError(
        `${where}:${failedInclude.line}: mj-include failed: the file is missing or outside the template folder`,
        { file: where, line: failedInclude.line },
      );
    }
    return result.html;
  } catch (error) {
    if (error instanceof TemplateError) throw error;
    const issues = (error as { errors?: MjmlIssue[] }).errors;
    if (Array.isArray(issues) && issues.length) throw mjmlError(file, issues);
    throw new TemplateError(`${displayPath(file)}: MJML: ${(error as Error).message ?? String(error)}`, {
      file: displayPath(file),
    });
  }
}

/** The file and the files it includes (recursively), with their sources. */
async function withIncludes(file: string, source: string, seen = new Set<string>()): Promise<{ file: string; source: string }[]> {
  if (seen.has(file)) return [];
  seen.add(file);
  const out = [{ file, source }];
  for (const m of source.matchAll(/<mj-include\b[^>]*?\bpath\s*=\s*"([^"]+)"/g)) {
    const included = path.resolve(path.dirname(file), m[1] ?? '');
    let text: string;
    try {
      text = await readFile(included, 'utf8');
    } catch {
      continue; // reported by compileMjml
    }
    out.push(...(await withIncludes(included, text, seen)));
  }
  return out;
}

/**
 * MJML silently drops text that is not inside an ending tag (mj-text, mj-button, mj-raw…) or an
 * attribute, so a `{{#if}}` placed between two mj-sections would vanish and its content always
 * show. Every placeholder of the template and its partials must reach the compiled HTML.
 */
async function checkPlaceholdersSurvive(file: string, source: string, html: string): Promise<void> {
  for (const part of await withIncludes(file, source)) {
    const text = part.source;
    for (const m of text.matchAll(/\{\{[\s\S]*?\}\}/g)) {
      if (m[0].startsWith('{{!')) continue; // comments
      if (html.includes(m[0])) continue;
      const where = displayPath(part.file);
      const line = lineAt(text, m.index ?? 0);
      throw new TemplateError(
        `${where}:${line}: ${m[0]} does not reach the compiled HTML: MJML drops text outside mj-text, mj-button, mj-raw or an attribute value (wrap block helpers around MJML elements in <mj-raw>)`,
        { file: where, line },
      );
    }
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

// ---------------------------------------------------------------------------------------------
// Rendering

const TEXT_SELECTORS = [
  // the hidden preheader MJML puts at the top of <body>
  { selector: 'div[style^="display:none"]', format: 'skip' },
  { selector: 'img', format: 'skip' },
  // decoration only (the usage bar in partials/usage.mjml)
  { selector: 'table.usage-bar', format: 'skip' },
  { selector: 'a', options: { hideLinkHrefIfSameAsText: true } },
  // MJML puts every block (mj-text, mj-button) in a layout-table cell: a blank line between them
  { selector: 'td', format: 'paragraph' },
  // Keep headings as written: a derived text template cannot upper-case the values inside them.
  ...['h1', 'h2', 'h3', 'h4', 'h5', 'h6'].map((selector) => ({ selector, options: { uppercase: false } })),
];
const TEXT_WIDTH = 80;

const htmlToText = compileHtmlToText({ wordwrap: TEXT_WIDTH, selectors: TEXT_SELECTORS });
const htmlToUnwrappedText = compileHtmlToText({ wordwrap: false, selectors: TEXT_SELECTORS });

/** The plain-text part of a rendered HTML email (the slow path: parses the whole document). */
export function htmlToPlainText(html: string): string {
  return htmlToText(html).trim() + '\n';
}

/**
 * Text helpers: the same as the HTML ones except `lines`, which joins with newlines instead of
 * <br /> (no HTML in a text part).
 */
const hbText = Handlebars.create();
for (const [name, fn] of Object.entries(HELPERS)) hbText.registerHelper(name, fn);
hbText.registerHelper('lines', (...args: unknown[]) => {
  const { params } = splitArgs(args);
  const text = params[0] === null || params[0] === undefined ? '' : String(params[0]);
  return text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== '')
    .join('\n');
});

// Private-use code points: never in a template, and html-to-text treats them as word characters.
const SENTINEL_OPEN = '\uE000';
const SENTINEL_CLOSE = '\uE001';
const MUSTACHE = /\{\{!--[\s\S]*?--\}\}|\{\{\{?[\s\S]*?\}?\}\}/g;
const SENTINEL = /\uE000(\d+)\uE001/g;

/**
 * Derives the plain-text template from the compiled HTML template once, at start-up, so a send
 * does not parse 20 KB of MJML markup with html-to-text (≈0.4 ms, 80 % of a render). Each
 * Handlebars expression is swapped for an opaque token, the HTML is converted to text as usual
 * (the tokens travel like words: expressions in text stay in place, those in link targets land
 * in "[…]", those in skipped parts or other attributes drop out), then the tokens are swapped
 * back and the result compiled as a text template. Returns null, and the template converts its
 * rendered HTML per send instead, when the derivation cannot be trusted: a raw {{{…}}} (its HTML
 * would reach the text), or expressions that no longer pair up or compile.
 */
function deriveTextTemplate(compiledHtml: string): Compiled | null {
  const expressions: string[] = [];
  const index = new Map<string, number>();
  let raw = false;
  const tokenized = compiledHtml.replace(MUSTACHE, (m) => {
    if (m.startsWith('{{!')) return '';
    if (m.startsWith('{{{') || m.startsWith('{{&')) raw = true;
    // The same expression gets the same token, so "link text equals its href" still holds.
    let i = index.get(m);
    if (i === undefined) {
      i = expressions.length;
      expressions.push(m);
      index.set(m, i);
    }
    return `${SENTINEL_OPEN}${i}${SENTINEL_CLOSE}`;
  });
  if (raw) return null;
  const text = htmlToUnwrappedText(tokenized).replace(SENTINEL, (_m, i: string) => expressions[Number(i)]!);
  if (text.includes(SENTINEL_OPEN) || text.includes(SENTINEL_CLOSE)) return null;
  try {
    return compileHandlebarsWith(hbText, text, TEXT_COMPILE_OPTIONS);
  } catch {
    return null;
  }
}

/**
 * Finishes a rendered text part: blank lines left by false {{#if}} blocks collapse, and long
 * lines wrap at 80 columns like html-to-text's own output (continuations indented under a list
 * item's text; a word longer than a line, such as a URL, stays whole on its own line).
 */
function tidyText(text: string): string {
  const tidy = text
    .replace(/[ \t]+$/gm, '') // trailing spaces; a line of spaces becomes blank
    .replace(/\n{3,}/g, '\n\n') // at most one blank line in a row
    .replace(LONG_LINE, wrapLine)
    .trim();
  return tidy + '\n';
}

const LONG_LINE = new RegExp(`^.{${TEXT_WIDTH + 1},}$`, 'gm');

/** Greedy wrap of one line at TEXT_WIDTH, continuations indented under a list item's text. */
function wrapLine(line: string): string {
  const leading = /^\s*/.exec(line)![0];
  const indent = ' '.repeat(/^\s*(?:(?:\d+|[a-z])\.|[*•-])?\s*/.exec(line)![0].length);
  const [first = '', ...rest] = line.slice(leading.length).split(/ +/);
  const out: string[] = [];
  let current = leading + first;
  for (const word of rest) {
    if (current.length + 1 + word.length <= TEXT_WIDTH) {
      current += ' ' + word;
    } else {
      out.push(current);
      current = indent + word;
    }
  }
  out.push(current);
  return out.join('\n');
}

/** Step subjects are few and reused: compile each once. */
const subjectCache = new Map<string, Compiled>();

function stepSubjectTemplate(source: string): Compiled {
  let t = subjectCache.get(source);
  if (!t) {
    try {
      t = compileHandlebars(source, TEXT_COMPILE_OPTIONS);
    } catch (error) {
      throw new TemplateError(`subject ${JSON.stringify(source)}: Handlebars: ${handlebarsDetail(error)}`);
    }
    if (subjectCache.size >= 1000) subjectCache.clear();
    subjectCache.set(source, t);
  }
  return t;
}

/**
 * Plain text for a header: one line, control characters (CR, LF, tab…) become spaces, runs of
 * spaces collapse. No-break spaces stay (Intl puts them in amounts: "49,00\u00a0€").
 */
function oneLine(value: string): string {
  // eslint-disable-next-line no-control-regex
  return value.replace(/[\u0000-\u001f\u007f]+/g, ' ').replace(/ {2,}/g, ' ').trim();
}

/** Checking a zone builds an Intl.DateTimeFormat (tens of µs): remember the answer per name. */
const timeZoneValidity = new Map<string, boolean>();

function validTimeZone(tz: unknown): string | null {
  if (typeof tz !== 'string' || !tz) return null;
  let valid = timeZoneValidity.get(tz);
  if (valid === undefined) {
    try {
      new Intl.DateTimeFormat('en', { timeZone: tz });
      valid = true;
    } catch {
      valid = false;
    }
    if (timeZoneValidity.size >= 1000) timeZoneValidity.clear();
    timeZoneValidity.set(tz, valid);
  }
  return valid ? tz : null;
}

function num(value: unknown): number | null {
  const n = typeof value === 'string' && value.trim() !== '' ? Number(value) : value;
  return typeof n === 'number' && Number.isFinite(n) ? n : null;
}

/** Plan usage from account traits (usage, usage_limit, usage_pct, usage_unit), or null. */
function usageOf(traits: Record<string, unknown>): { used: number | null; limit: number | null; pct: number; unit: string } | null {
  const used = num(traits.usage);
  const limit = num(traits.usage_limit);
  const pct = num(traits.usage_pct) ?? (used !== null && limit ? (used / limit) * 100 : null);
  if (pct === null) return null;
  const unit = typeof traits.usage_unit === 'string' && traits.usage_unit.trim() ? traits.usage_unit.trim() : 'units';
  return { used: limit ? used : null, limit, pct: Math.round(pct), unit };
}

/**
 * Templates read `trigger.properties.*` (the same paths as workflow conditions). Callers may pass
 * the whole trigger fact ({ name, properties, occurredAt }) or only its properties.
 */
function normalizeTrigger(trigger: Record<string, unknown> | undefined | null): Record<string, unknown> {
  if (!trigger) return { properties: {} };
  const props = trigger.properties;
  if (props && typeof props === 'object' && !Array.isArray(props)) return trigger;
  return { ...trigger, properties: trigger };
}

function renderTemplate(t: CompiledTemplate, data: RenderData, brand: BrandValues): RenderedEmail {
  const contact = {
    email: data.contact?.email ?? null,
    firstName: data.contact?.firstName ?? null,
    traits: data.contact?.traits ?? {},
  };
  const invoice = data.invoice
    ? {
        ...data.invoice,
        amountRemaining: data.invoice.amountRemaining ?? data.invoice.amountDue,
        /** what the customer still owes: amountRemaining when given, else amountDue */
        amountOwed: data.invoice.amountRemaining ?? data.invoice.amountDue,
      }
    : null;
  const category = data.category ?? t.meta.category;
  const unsubscribe = typeof data.links?.unsubscribe === 'string' && data.links.unsubscribe ? data.links.unsubscribe : null;
  const action = data.links?.action || invoice?.hostedInvoiceUrl || data.links?.app || null;
  const locale = normalizeLocale(data.locale || brand.locale);
  const timeZone = validTimeZone(data.timeZone) ?? validTimeZone(contact.traits.timezone) ?? validTimeZone(contact.traits.timeZone) ?? 'UTC';

  const accountTraits = data.account?.traits ?? {};
  const context: Record<string, unknown> = {
    contact,
    account: { traits: accountTraits },
    /** { used, limit, pct, unit } from the account's usage traits, or null */
    usage: usageOf(accountTraits),
    invoice,
    links: { action, unsubscribe: category === 'transactional' ? null : unsubscribe, app: data.links?.app ?? null },
    options: data.options ?? {},
    trigger: normalizeTrigger(data.trigger),
    brand,
    locale,
    timeZone,
    category,
    transactional: category === 'transactional',
    showUnsubscribe: category !== 'transactional' && unsubscribe !== null,
    /** final-notice deadline: the invoice's due date, else the next (last) payment attempt */
    deadline: invoice?.dueDate ?? invoice?.nextPaymentAttempt ?? null,
    year: (data.now ?? new Date()).getUTCFullYear(),
  };
  const subject = oneLine(data.subject ? stepSubjectTemplate(data.subject)(context) : t.subject(context));
  const preheader = oneLine(t.preheader(context));
  const cta = oneLine(t.cta(context));
  context.subject = subject;
  context.preheader = preheader;
  context.cta = cta || 'Open ' + brand.productName;
  const html = t.html(context);
  const text = t.text ? tidyText(t.text(context)) : htmlToPlainText(html);
  return { subject, html, text, preheader, category };
}

// ---------------------------------------------------------------------------------------------
// Sample data (previews, tests and the start-up smoke render)

const DAY = 24 * 60 * 60 * 1000;

function isoInDays(days: number): string {
  return new Date(Date.now() + days * DAY).toISOString();
}

/** Realistic data for previewing a template; unknown keys get a generic contact. */
export function sampleData(key: string): RenderData {
  const contact = {
    email: 'dana.whitfield@northwind.example',
    firstName: 'Dana',
    traits: { name: 'Dana Whitfield', company: 'Northwind Traders', role: 'Head of Operations', timezone: 'America/New_York' },
  };
  const account = { traits: { name: 'Northwind Traders', plan: 'Team', seats: 12 } };
  const tracked = (target: string) => `https://links.example.com/c/7Hq2Xz?u=${encodeURIComponent(target)}&m=${key}`;
  const unsubscribe = `https://links.example.com/u/7Hq2Xz?m=${key}&sig=9f2c1e`;
  const app = 'https://app.example.com';
  const base: RenderData = {
    contact,
    account,
    links: { action: tracked(`${app}/home`), unsubscribe, app },
    locale: 'en-US',
    options: {},
    trigger: {},
  };

  if (key.startsWith('dunning-')) {
    const hosted = 'https://invoice.stripe.com/i/acct_1PqA2bLkX9/live_YWNjdF8xUHFBMmJMa1g5LF9RbW5vcDEyMw0200';
    const final = key === 'dunning-final';
    const updateCard = key.startsWith('dunning-update-card');
    const sca = key.startsWith('dunning-confirm-payment');
    return {
      ...base,
      invoice: {
        amountDue: 4900,
        amountRemaining: 4900,
        currency: 'usd',
        hostedInvoiceUrl: hosted,
        nextPaymentAttempt: final || updateCard || sca ? null : isoInDays(3),
        dueDate: final ? isoInDays(3) : null,
      },
      links: { action: tracked(updateCard ? `${app}/settings/billing/payment-method` : hosted), unsubscribe, app },
      trigger: {
        name: 'invoice.payment_failed',
        occurredAt: isoInDays(0),
        properties: {
          invoiceId: 'in_1QmnoP2bLkX9abcd',
          declineClass: sca ? 'sca' : updateCard ? 'hard' : 'soft',
          declineCode: sca ? 'authentication_required' : updateCard ? 'expired_card' : 'insufficient_funds',
          attemptCount: key === 'dunning-soft-3' ? 3 : key === 'dunning-soft-2' ? 2 : 1,
        },
      },
    };
  }
  if (key.startsWith('winback-')) {
    const involuntary = key.startsWith('winback-restore');
    return {
      ...base,
      links: {
        action: tracked(
          involuntary
            ? `${app}/settings/billing/restore`
            : key === 'winback-whats-new'
              ? 'https://example.com/changelog'
              : key === 'winback-offer' || key === 'winback-last-chance'
                ? `${app}/settings/billing/plans?coupon=COMEBACK20`
                : `${app}/settings/billing/plans`,
        ),
        unsubscribe,
        app,
      },
      options: { couponCode: 'COMEBACK20', couponDescription: '20% off your first three months' },
      trigger: {
        name: 'subscription.canceled',
        occurredAt: isoInDays(-1),
        properties: {
          reason: involuntary ? 'payment_failed' : 'cancellation_requested',
          feedback: key === 'winback-offer' ? 'too_expensive' : key === 'winback-whats-new' ? 'missing_features' : key === 'winback-reengage' ? 'unused' : null,
          voluntary: !involuntary,
          plan: 'Team',
        },
      },
    };
  }
  if (key.startsWith('expansion-')) {
    return {
      ...base,
      account: {
        traits: {
          name: 'Northwind Traders',
          plan: 'Team',
          next_plan: 'Business',
          usage: 9240,
          usage_limit: 10000,
          usage_pct: 92,
          usage_unit: 'tracked contacts',
          seats: 12,
        },
      },
      links: { action: tracked(`${app}/settings/billing/plans`), unsubscribe, app },
      trigger: { name: 'Paywall Hit', occurredAt: isoInDays(0), properties: { feature: 'SSO' } },
    };
  }
  const deepLinks: Record<string, string> = {
    'activation-create-project': '/projects/new',
    'activation-connect-integration': '/integrations',
    'activation-view-report': '/reports',
    'onboarding-day1': '/home',
    'onboarding-invite-to-project': '/projects/q3-launch/members',
    'onboarding-get-started': '/getting-started',
  };
  return {
    ...base,
    links: { action: tracked(`${app}${deepLinks[key] ?? '/home'}`), unsubscribe, app },
    trigger: { name: 'Signed Up', occurredAt: isoInDays(-1), properties: {} },
  };
}
