// The embeddable billing notice in a real browser (headless Chromium through playwright-core).
// Lifeline listens on one origin; a demo "product" page is served by this test from another
// origin with a strict Content-Security-Policy (no inline scripts or styles, scripts and fetches
// only from Lifeline). Its backend mints a billing-status token with the write key, as a real
// product's backend would, and includes /embed/billing-notice.js with it. Checks: the banner of a
// past-due account shows the amount (Intl, minor units) and the update-card link in the brand
// colour; a healthy account shows nothing; the wall after N days past due; dismiss by button and by
// Escape; no cookies; no CSP violation.
//
// Run: npm run test:e2e   (needs Chromium at /usr/bin/chromium, or CHROMIUM_PATH)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { chromium, type Browser, type Page } from 'playwright-core';
import { ManualClock } from '../../src/clock.ts';
import { build, WRITE_KEY } from '../helpers/build.ts';
import { CHROMIUM, CHROMIUM_ARGS, watchPageErrors } from '../helpers/browser.ts';
import { deliver, envelope, invoice, subscription } from '../helpers/stripe.ts';

const NOW = new Date('2025-10-14T00:00:00Z'); // the failure below is 4.6 days earlier
const BRAND = '#0a7f5a';

async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

test('billing notice on a demo page: amount and link for a past-due account, nothing when healthy, wall after N days, dismiss', async (t) => {
  // The demo product: its origin must be known before Lifeline starts (BILLING_STATUS_ORIGINS).
  let lifeline = '';
  const demo = createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://demo');
    const user = url.searchParams.get('user') ?? '';
    const wall = url.searchParams.get('wall');
    // the product's backend mints the browser token with the write key (never sent to the browser)
    const minted = await fetch(`${lifeline}/v1/billing-status/token`, {
      method: 'POST',
      headers: { authorization: `Bearer ${WRITE_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ userId: user }),
    });
    const { token } = (await minted.json()) as { token: string };
    res.writeHead(200, {
      'content-type': 'text/html; charset=utf-8',
      'content-security-policy': `default-src 'none'; script-src ${lifeline}; connect-src ${lifeline}; style-src 'none'`,
    });
    res.end(
      `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Demo app</title></head><body>` +
        `<main><h1>Demo app</h1><button type="button" id="app-button">App button</button></main>` +
        `<script src="${lifeline}/embed/billing-notice.js" data-token="${token}"${wall ? ` data-wall-after-days="${wall}"` : ''}></script>` +
        `</body></html>`,
    );
  });
  const demoOrigin = await listen(demo);
  t.after(() => new Promise<void>((resolve) => demo.close(() => resolve())));

  const svc = await build(t, { clock: new ManualClock(NOW), env: { BILLING_STATUS_ORIGINS: demoOrigin, BRAND_COLOR: BRAND } });
  const customer = (id: string) => ({ id, object: 'customer', email: `${id}@acme.test`, name: 'Acme', invoice_settings: { default_payment_method: 'pm_1' }, metadata: {}, created: 1_750_000_000 });
  for (const [type, object, created] of [
    ['customer.created', customer('cus_ok'), 1_759_000_000],
    ['customer.created', customer('cus_due'), 1_759_000_000],
    ['customer.subscription.created', subscription({ id: 'sub_ok', customer: 'cus_ok' }), 1_759_000_000],
    ['customer.subscription.created', subscription({ id: 'sub_due', customer: 'cus_due' }), 1_759_000_000],
    ['invoice.payment_failed', invoice({ id: 'in_due', customer: 'cus_due', subscription: 'sub_due', amount_due: 123456 }), 1_760_000_000],
  ] as const) {
    assert.equal((await deliver(svc.app, envelope(type, object, { created }))).statusCode, 200);
  }
  await svc.drain();
  for (const [userId, customerId] of [['u_ok', 'cus_ok'], ['u_due', 'cus_due']]) {
    const res = await svc.app.inject({
      method: 'POST',
      url: '/v1/identify',
      headers: { authorization: `Bearer ${WRITE_KEY}`, 'content-type': 'application/json' },
      payload: { messageId: `e2e-${userId}`, userId, traits: { stripeCustomerId: customerId } },
    });
    assert.equal(res.statusCode, 200, res.body);
  }
  await svc.drain();
  await svc.app.listen({ host: '127.0.0.1', port: 0 });
  lifeline = `http://127.0.0.1:${(svc.app.server.address() as AddressInfo).port}`;
  const expected = (await svc.app.inject({ method: 'GET', url: '/v1/billing-status?userId=u_due', headers: { authorization: `Bearer ${WRITE_KEY}` } })).json();
  assert.equal(expected.state, 'past_due');
  assert.equal(expected.daysPastDue, 4);

  const browser: Browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
  t.after(() => browser.close());
  const context = await browser.newContext();

  async function open(query: string): Promise<{ page: Page; violations: string[] }> {
    const page = await context.newPage();
    const violations = await watchPageErrors(page);
    const status = page.waitForResponse((r) => r.url().startsWith(`${lifeline}/v1/billing-status`));
    await page.goto(`${demoOrigin}/?${query}`);
    assert.equal((await status).status(), 200);
    return { page, violations };
  }

  await t.test('past due: a banner with the amount and the update-card link in the brand colour; dismiss button', async () => {
    const { page, violations } = await open('user=u_due');
    const banner = page.locator('[data-lifeline-billing-notice="banner"] .bar');
    await banner.waitFor();
    const text = await banner.locator('.message').textContent();
    assert.match(text ?? '', /\$1,234\.56/);
    const link = banner.getByRole('link', { name: 'Update payment method' });
    assert.equal(await link.getAttribute('href'), expected.updateUrl);
    assert.equal(await banner.evaluate((el) => getComputedStyle(el).backgroundColor), 'rgb(10, 127, 90)');
    assert.equal(await banner.getAttribute('role'), 'alert');
    await banner.getByRole('button', { name: 'Dismiss billing notice' }).click();
    assert.equal(await page.locator('[data-lifeline-billing-notice]').count(), 0);
    assert.deepEqual(violations, []);
    await page.close();
  });

  await t.test('keyboard: Tab reaches the link and the dismiss button; Escape dismisses', async () => {
    const { page } = await open('user=u_due');
    await page.locator('[data-lifeline-billing-notice="banner"] .bar').waitFor();
    await page.locator('#app-button').focus();
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement?.shadowRoot?.activeElement?.textContent), 'Update payment method');
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement?.shadowRoot?.activeElement?.getAttribute('aria-label')), 'Dismiss billing notice');
    await page.keyboard.press('Escape');
    assert.equal(await page.locator('[data-lifeline-billing-notice]').count(), 0);
    await page.close();
  });

  await t.test('healthy account: nothing is shown', async () => {
    const { page, violations } = await open('user=u_ok');
    // the answer has arrived; give the script a moment to (not) render
    await page.waitForTimeout(300);
    assert.equal(await page.locator('[data-lifeline-billing-notice]').count(), 0);
    assert.deepEqual(violations, []);
    await page.close();
  });

  await t.test('wall after N days past due: blocking, focused, no dismiss; banner before N days', async () => {
    const { page, violations } = await open('user=u_due&wall=3');
    const wall = page.locator('[data-lifeline-billing-notice="wall"] .wall');
    await wall.waitFor();
    assert.equal(await wall.getAttribute('role'), 'alertdialog');
    assert.equal(await wall.getAttribute('aria-modal'), 'true');
    assert.match((await wall.textContent()) ?? '', /\$1,234\.56/);
    assert.equal(await wall.getByRole('button').count(), 0);
    assert.equal(await page.evaluate(() => document.activeElement?.shadowRoot?.activeElement?.textContent), 'Update payment method');
    await page.keyboard.press('Escape');
    assert.equal(await page.locator('[data-lifeline-billing-notice="wall"]').count(), 1);
    assert.deepEqual(violations, []);
    await page.close();

    const later = await open('user=u_due&wall=7');
    await later.page.locator('[data-lifeline-billing-notice="banner"] .bar').waitFor();
    assert.equal(await later.page.locator('[data-lifeline-billing-notice="wall"]').count(), 0);
    await later.page.close();
  });

  await t.test('no cookies were set by the notice or the API', async () => {
    assert.deepEqual(await context.cookies(), []);
  });
});
