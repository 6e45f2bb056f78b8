// Query-parameter parsing for the reports: strict, and every 400 names the parameter at fault.
import { HttpError } from '../http/errors.ts';

const DATE = /^(\d{4})-(\d{2})-(\d{2})$/;

/** A calendar date (YYYY-MM-DD) as its UTC midnight. */
export function parseDate(name: string, value: unknown): Date {
  if (value === undefined || value === null || value === '') {
    throw new HttpError(400, 'invalid_parameter', `Query parameter "${name}" is required (a UTC date, YYYY-MM-DD)`);
  }
  if (typeof value !== 'string') throw new HttpError(400, 'invalid_parameter', `Query parameter "${name}" must be given once, as YYYY-MM-DD`);
  const m = DATE.exec(value);
  if (!m) throw new HttpError(400, 'invalid_parameter', `Query parameter "${name}" must be a date as YYYY-MM-DD, got "${value.slice(0, 40)}"`);
  const [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const date = new Date(Date.UTC(y, mo - 1, d));
  if (y < 1970 || date.getUTCFullYear() !== y || date.getUTCMonth() !== mo - 1 || date.getUTCDate() !== d) {
    throw new HttpError(400, 'invalid_parameter', `Query parameter "${name}" is not a valid date: "${value}"`);
  }
  return date;
}

export function parseRange(query: Record<string, unknown>): { from: Date; to: Date; fromText: string; toText: string } {
  const from = parseDate('from', query.from);
  const to = parseDate('to', query.to);
  if (from.getTime() >= to.getTime()) {
    throw new HttpError(400, 'invalid_parameter', `Query parameter "from" (${String(query.from)}) must be before "to" (${String(query.to)}); "to" is exclusive`);
  }
  return { from, to, fromText: String(query.from), toText: String(query.to) };
}

let knownCurrencies: Set<string> | null = null;

/** ISO 4217 codes this runtime's Intl knows, lower-case. */
function currencies(): Set<string> {
  if (!knownCurrencies) knownCurrencies = new Set(Intl.supportedValuesOf('currency').map((c) => c.toLowerCase()));
  return knownCurrencies;
}

/** An optional currency filter: three letters and a currency Intl knows; returned lower-case. */
export function parseCurrency(value: unknown): string | null {
  if (value === undefined || value === '') return null;
  if (typeof value !== 'string' || !/^[A-Za-z]{3}$/.test(value)) {
    throw new HttpError(400, 'invalid_parameter', `Query parameter "currency" must be a three-letter ISO 4217 code, got "${String(value).slice(0, 40)}"`);
  }
  const code = value.toLowerCase();
  if (!currencies().has(code)) throw new HttpError(400, 'invalid_parameter', `Query parameter "currency": unknown currency code "${value}"`);
  return code;
}
