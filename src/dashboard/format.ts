// Formatting for the dashboard: amounts are integers in the currency's minor unit and are shown
// with Intl for their own currency (never converted, never added across currencies).
import { formatMoney } from '../email/money.ts';

/** The dashboard's display locale: fixed, so that every reader (and the e2e test) sees the same text. */
export const LOCALE = 'en-US';

export const escapeHtml = (value: unknown): string =>
  String(value ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** `4900, 'usd'` → "$49.00"; `5000, 'jpy'` → "¥5,000". */
export function money(minorUnits: number, currency: string): string {
  return formatMoney(minorUnits, currency, LOCALE);
}

/** Minor units → the currency's major unit (for charts), using the same exponent as `money`. */
export function majorUnits(minorUnits: number, currency: string): number {
  return minorUnits / 10 ** currencyExponent(currency);
}

/** Stripe API exponents that differ from Intl's (the same exceptions as src/email/money.ts). */
const STRIPE_API_EXPONENT: Readonly<Record<string, number>> = { ISK: 2, HUF: 2 };

/** Decimal places of the currency's API amounts: 2 for usd, 0 for jpy, 3 for bhd. */
export function currencyExponent(currency: string): number {
  const code = currency.toUpperCase();
  const special = STRIPE_API_EXPONENT[code];
  if (special !== undefined) return special;
  try {
    return new Intl.NumberFormat(LOCALE, { style: 'currency', currency: code }).resolvedOptions().maximumFractionDigits ?? 2;
  } catch {
    return 2;
  }
}

const PERCENT = new Intl.NumberFormat(LOCALE, { style: 'percent', minimumFractionDigits: 1, maximumFractionDigits: 1 });
const INTEGER = new Intl.NumberFormat(LOCALE, { maximumFractionDigits: 0 });
const ONE_DECIMAL = new Intl.NumberFormat(LOCALE, { minimumFractionDigits: 1, maximumFractionDigits: 1 });
const POINTS = new Intl.NumberFormat(LOCALE, { minimumFractionDigits: 1, maximumFractionDigits: 1, signDisplay: 'exceptZero' });

export const DASH = '—';

/** A ratio (0..1) as "61.3%"; null as "—". */
export function percent(ratio: number | null | undefined): string {
  return ratio === null || ratio === undefined || !Number.isFinite(ratio) ? DASH : PERCENT.format(ratio);
}

export function integer(n: number): string {
  return INTEGER.format(n);
}

/** Percentage points with a sign: "+12.3 pts". */
export function points(value: number | null | undefined): string {
  return value === null || value === undefined || !Number.isFinite(value) ? DASH : `${POINTS.format(value)} pts`;
}

export function interval(ci: [number, number] | null | undefined): string {
  return ci ? `${POINTS.format(ci[0])} to ${POINTS.format(ci[1])} pts` : DASH;
}

export function pValue(p: number | null | undefined): string {
  if (p === null || p === undefined || !Number.isFinite(p)) return DASH;
  if (p < 0.001) return '< 0.001';
  return p.toFixed(3);
}

export function hours(h: number | null | undefined): string {
  if (h === null || h === undefined || !Number.isFinite(h)) return DASH;
  if (h < 48) return `${ONE_DECIMAL.format(h)} h`;
  return `${ONE_DECIMAL.format(h / 24)} days`;
}

/** A timestamp as "2026-03-01 14:05 UTC". */
export function utcDateTime(d: Date | string | null | undefined): string {
  if (!d) return DASH;
  const iso = (d instanceof Date ? d : new Date(d)).toISOString();
  return `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC`;
}

/** "2026-03" → "Mar 2026". */
export function monthLabel(month: string): string {
  const [y, m] = month.split('-').map(Number);
  return new Date(Date.UTC(y!, m! - 1, 1)).toLocaleDateString(LOCALE, { month: 'short', year: 'numeric', timeZone: 'UTC' });
}

let currencyNames: Intl.DisplayNames | null = null;
/** "usd" → "US Dollar". */
export function currencyName(code: string): string {
  try {
    currencyNames ??= new Intl.DisplayNames(LOCALE, { type: 'currency' });
    return currencyNames.of(code.toUpperCase()) ?? code.toUpperCase();
  } catch {
    return code.toUpperCase();
  }
}

/** "payment_method_updated" → "Payment method updated". */
export function humanize(key: string): string {
  const words = key.replace(/([a-z])([A-Z])/g, '$1 $2').replace(/[_-]+/g, ' ').trim().toLowerCase();
  const text = words.charAt(0).toUpperCase() + words.slice(1);
  return text.replace(/\bmrr\b/gi, 'MRR').replace(/\bkpi\b/gi, 'KPI');
}
