// The API docs (/docs, Swagger UI) in a real browser under their security headers: the page
// renders the OpenAPI document (title and the webhook route) with no Content-Security-Policy
// violation, and it cannot be framed.
//
// Run: npm run test:e2e   (needs Chromium at /usr/bin/chromium, or CHROMIUM_PATH)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { chromium, type Browser } from 'playwright-core';
import { build } from '../helpers/build.ts';
import { CHROMIUM, CHROMIUM_ARGS, watchPageErrors } from '../helpers/browser.ts';

test('/docs renders Swagger UI under its CSP, with no violation, and refuses framing', async (t) => {
  const svc = await build(t);
  await svc.app.listen({ host: '127.0.0.1', port: 0 });
  const base = `http://127.0.0.1:${(svc.app.server.address() as AddressInfo).port}`;

  const res = await fetch(`${base}/docs/`);
  const csp = res.headers.get('content-security-policy') ?? '';
  assert.match(csp, /default-src 'self'/);
  assert.match(csp, /frame-ancestors 'none'/);
  assert.doesNotMatch(csp, /upgrade-insecure-requests|unsafe-inline|unsafe-eval/);
  assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
  assert.equal(res.headers.get('x-frame-options'), 'DENY');

  const browser: Browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
  t.after(() => browser.close());
  const page = await browser.newPage();
  const violations = await watchPageErrors(page);
  await page.goto(`${base}/docs`);
  const title = page.locator('.swagger-ui .info .title');
  await title.waitFor({ timeout: 30_000 });
  assert.match((await title.textContent()) ?? '', /Lifeline/);
  await page.locator('.opblock-summary-path', { hasText: '/webhooks/stripe' }).first().waitFor({ timeout: 30_000 });
  assert.deepEqual(violations, []);
});
