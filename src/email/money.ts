/**
 * Money formatting for emails: Stripe amounts are integers in the currency's minor unit
 * (4900 usd = $49.00, 4900 jpy = ¥4,900, 1234 bhd = BHD 1.234).
 *
 * The minor-unit exponent comes from Intl (ISO 4217 / CLDR data), so every currency Intl knows
 * is handled without a hand-kept list. Two exceptions are Stripe's own: ISK and HUF are
 * zero-decimal in CLDR but two-decimal in the Stripe API (an ISK amount of 100 is 1 króna;
 * Stripe's "special cases"), so their amounts are divided by 100 and printed without
 * meaningless ".00".
 */

/** Stripe API exponent where it differs from Intl's (see the module comment). */
const STRIPE_API_EXPONENT: Readonly<Record<string, number>> = { ISK: 2, HUF: 2 };

interface CurrencyInfo {
  /** the minor-unit exponent of API amounts */
  exponent: number;
  /** digits Intl prints by default for the currency */
  displayDigits: number;
}

const currencyCache = new Map<string, CurrencyInfo | null>();
const formatterCache = new Map<string, Intl.NumberFormat>();
let supported: Set<string> | null = null;

function isSupported(code: string): boolean {
  if (!supported) {
    try {
      supported = new Set(Intl.supportedValuesOf('currency'));
    } catch {
      supported = new Set();
    }
  }
  return supported.has(code);
}

function currencyInfo(code: string): CurrencyInfo | null {
  const cached = currencyCache.get(code);
  if (cached !== undefined) return cached;
  let info: CurrencyInfo | null = null;
  if (/^[A-Z]{3}$/.test(code) && isSupported(code)) {
    try {
      const displayDigits = new Intl.NumberFormat('en', { style: 'currency', currency: code }).resolvedOptions()
        .maximumFractionDigits ?? 2;
      info = { exponent: STRIPE_API_EXPONENT[code] ?? displayDigits, displayDigits };
    } catch {
      info = null;
    }
  }
  currencyCache.set(code, info);
  return info;
}

/** A usable BCP 47 locale: accepts `de_DE`, falls back to `en` for anything Intl rejects. */
export function normalizeLocale(locale: string | null | undefined): string {
  if (!locale) return 'en';
  let normalized = localeCache.get(locale);
  if (normalized === undefined) {
    const candidate = locale.trim().replace(/_/g, '-');
    try {
      normalized = Intl.getCanonicalLocales(candidate)[0] ?? 'en';
    } catch {
      normalized = 'en';
    }
    if (localeCache.size >= 1000) localeCache.clear();
    localeCache.set(locale, normalized);
  }
  return normalized;
}
/** Canonicalizing runs on every render: contacts share a handful of locales. */
const localeCache = new Map<string, string>();

function formatter(locale: string, options: Intl.NumberFormatOptions): Intl.NumberFormat {
  const key = `${locale}|${JSON.stringify(options)}`;
  let f = formatterCache.get(key);
  if (!f) {
    if (formatterCache.size > 500) formatterCache.clear();
    f = new Intl.NumberFormat(locale, options);
    formatterCache.set(key, f);
  }
  return f;
}

/**
 * Formats an amount in minor units for a currency and locale. The result is Intl's, which puts
 * a no-break space (U+00A0) between number and symbol where the locale has a space
 * ("49,00\u00a0€", "BHD\u00a01.234"), so an amount never wraps across lines; the fallback for
 * unknown codes does the same ("12.34\u00a0XYZ").
 * `formatMoney(4900, 'usd', 'en-US')` → "$49.00"; `formatMoney(4900, 'eur', 'de-DE')` → "49,00 €";
 * `formatMoney(4900, 'jpy', 'en')` → "¥4,900"; `formatMoney(1234, 'bhd', 'en')` → "BHD 1.234".
 * Never throws: an unknown currency code prints as "12.34 XYZ" (two decimals assumed), a bad
 * locale falls back to English, a non-finite amount prints as an empty string.
 */
export function formatMoney(minorUnits: number, currency: string, locale: string): string {
  if (typeof minorUnits !== 'number' || !Number.isFinite(minorUnits)) return '';
  const code = String(currency ?? '').trim().toUpperCase();
  const loc = normalizeLocale(locale);
  const info = currencyInfo(code);
  if (!info) {
    const value = minorUnits / 100;
    const number = formatter(loc, { minimumFractionDigits: 2, maximumFractionDigits: 2 }).format(value);
    return code ? `${number}\u00a0${code}` : number;
  }
  const value = minorUnits / 10 ** info.exponent;
  if (info.exponent === info.displayDigits) {
    return formatter(loc, { style: 'currency', currency: code }).format(value);
  }
  // Stripe two-decimal amounts for a currency printed without decimals (ISK, HUF): show
  // decimals only when the amount actually has some.
  const whole = Number.isInteger(value);
  return formatter(loc, {
    style: 'currency',
    currency: code,
    minimumFractionDigits: whole ? info.displayDigits : info.exponent,
    maximumFractionDigits: whole ? info.displayDigits : info.exponent,
  }).format(value);
}

/** Locale-aware number (usage counts, percentages), never throws. */
export function formatNumber(value: number, locale: string, maximumFractionDigits = 0): string {
  if (typeof value !== 'number' || !Number.isFinite(value)) return '';
  return formatter(normalizeLocale(locale), { maximumFractionDigits }).format(value);
}
