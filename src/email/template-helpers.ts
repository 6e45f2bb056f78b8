/**
 * The Handlebars environment every template compiles against: one isolated instance with our
 * helpers for HTML (and a twin for the derived plain-text part, whose `lines` joins with
 * newlines), the compile options that make an unknown helper a start-up error, and the helpers'
 * formatting of money, numbers, dates and time zones with their caches.
 * See emails/README.md for the helpers a template can use.
 */
import Handlebars from 'handlebars';
import { formatMoney, formatNumber, normalizeLocale } from './money.ts';

export const hb = Handlebars.create();

interface RootContext {
  locale: string;
  timeZone: string;
  contact: { email: string | null; firstName: string | null; traits: Record<string, unknown> };
}

function rootOf(options: Handlebars.HelperOptions | undefined): RootContext | undefined {
  return (options?.data as { root?: RootContext } | undefined)?.root;
}

/** The helper's own options object is always the last argument. */
export function splitArgs(args: unknown[]): { params: unknown[]; options: Handlebars.HelperOptions | undefined } {
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
  /** {{plural count "day" "days"}}: "1 day", "7 days" (the count in the locale) */
  plural(...args: unknown[]) {
    const { params, options } = splitArgs(args);
    const count = Number(params[0]);
    if (!Number.isFinite(count)) return '';
    const word = count === 1 ? params[1] : params[2];
    return `${formatNumber(count, rootOf(options)?.locale ?? 'en', 0)} ${typeof word === 'string' ? word : ''}`.trim();
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
export const HTML_COMPILE_OPTIONS: CompileOptions = { knownHelpers: KNOWN_HELPERS, knownHelpersOnly: true, preventIndent: true };
/** Subjects, preheaders and button labels are plain text: no HTML escaping there. */
export const TEXT_COMPILE_OPTIONS: CompileOptions = { ...HTML_COMPILE_OPTIONS, noEscape: true };

export type CompileOptions = NonNullable<Parameters<typeof Handlebars.compile>[1]>;
export type Compiled = Handlebars.TemplateDelegate;

/** Handlebars error → line in its own source (1-based), when it says. */
export function handlebarsLine(error: unknown): number | undefined {
  const e = error as { lineNumber?: unknown; message?: unknown };
  if (typeof e.lineNumber === 'number') return e.lineNumber;
  const m = /line (\d+)/i.exec(String(e.message ?? ''));
  return m ? Number(m[1]) : undefined;
}

export function handlebarsDetail(error: unknown): string {
  const message = String((error as { message?: unknown }).message ?? error);
  // "Parse error on line 3:\n…source…\n----^\nExpecting …" → keep it, but on one block
  return message.replace(/ - \d+:\d+$/, '').trim();
}

/** Compiles eagerly (Handlebars compiles lazily on first call otherwise). */
export function compileHandlebars(source: string, options: CompileOptions): Compiled {
  return compileHandlebarsWith(hb, source, options);
}

export function compileHandlebarsWith(env: typeof hb, source: string, options: CompileOptions): Compiled {
  env.precompile(source, options); // throws on syntax errors and unknown helpers
  return env.compile(source, options);
}

/**
 * Text helpers: the same as the HTML ones except `lines`, which joins with newlines instead of
 * <br /> (no HTML in a text part).
 */
export const hbText = Handlebars.create();
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

/** Checking a zone builds an Intl.DateTimeFormat (tens of µs): remember the answer per name. */
const timeZoneValidity = new Map<string, boolean>();

export function validTimeZone(tz: unknown): string | null {
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
