// Serves src/billing/billing-notice.js with the brand colour and locale from the configuration
// prepended as data (a JSON literal, no eval): the script itself stays a plain static file.
import { readFileSync } from 'node:fs';

const SOURCE = readFileSync(new URL('./billing-notice.js', import.meta.url), 'utf8');

export function billingNoticeScript(brandColor: string, locale: string): string {
  // JSON.stringify + escaping '<' keeps the values inert even if misconfigured
  const config = JSON.stringify({ brandColor, locale }).replace(/</g, '\\u003c');
  return `globalThis.__LIFELINE_NOTICE_CONFIG__=${config};\n${SOURCE}`;
}
