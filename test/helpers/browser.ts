// Headless Chromium for the browser tests (test/e2e): where it is, how it is started, and a page
// watcher that collects console errors and Content-Security-Policy violations.
import type { Page } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
export const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];

/**
 * Starts collecting the page's console errors and CSP violations (directive and blocked URI);
 * call before the page navigates. The returned list fills as they happen.
 */
export async function watchPageErrors(page: Page): Promise<string[]> {
  const errors: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  await page.exposeFunction('__reportViolation', (v: string) => errors.push(v));
  await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => (globalThis as unknown as { __reportViolation(v: string): void }).__reportViolation(`${e.violatedDirective} ${e.blockedURI}`));
  });
  return errors;
}
