// The finance dashboard in a real browser (headless Chromium through playwright-core): a service
// on 127.0.0.1, a three-currency scenario (usd, eur and zero-decimal jpy) with recovered, lost,
// open and voided cases delivered as signed Stripe webhooks, a billing-recovery version with an
// A/B split and a hold-out. Signs in through the form, then checks every per-currency figure on
// the page against the JSON API, that the charts drew, the A/B table, the CSV downloads (row
// count = failed count), the date-range form and sign-out; saves a screenshot to
// test/artifacts/dashboard.png.
//
// Run: npm run test:e2e   (needs Chromium at /usr/bin/chromium, or CHROMIUM_PATH)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AddressInfo } from 'node:net';
import { chromium, type Browser, type Page } from 'playwright-core';
import type { ManualClock } from '../../src/clock.ts';
import { builtinDefinition } from '../../src/workflows/builtin/index.ts';
import type { Step, WorkflowDefinition } from '../../src/workflows/types.ts';
import { ADMIN_TOKEN, build, type Built } from '../helpers/build.ts';
import { deliver, envelope, invoice, subscription } from '../helpers/stripe.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const ARTIFACTS = path.join(ROOT, 'test', 'artifacts');
const SCREENSHOT = path.join(ARTIFACTS, 'dashboard.png');
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic',
];

const D0 = Date.parse('2026-02-23T00:00:00Z');
const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const at = (day: number, hours = 0) => new Date(D0 + day * DAY + hours * HOUR);
const unix = (d: Date) => Math.floor(d.getTime() / 1000);
const LAST_DAY = 12;
const auth = { authorization: `Bearer ${ADMIN_TOKEN}` };
const LOCALE = 'en-US';

// ---------------------------------------------------------------------------------------------
// The scenario

/** billing-recovery with an A/B split (two empty variants, then the built-in steps) and a hold-out. */
const SPLIT: Extract<Step, { type: 'split' }> = {
  id: 'recovery_ab',
  type: 'split',
  variants: [
    { key: 'a', weight: 1, steps: [] },
    { key: 'b', weight: 1, steps: [] },
  ],
  holdout: { weight: 1 },
};

function splitDefinition(): WorkflowDefinition {
  const base = JSON.parse(JSON.stringify(builtinDefinition('billing-recovery'))) as WorkflowDefinition;
  return { ...base, steps: [SPLIT, ...base.steps] };
}

type Envelope = ReturnType<typeof envelope>;
interface Ctx {
  invoice: string;
  customer: string;
  subscription: string | null;
  currency: string;
  amount: number;
  email: string;
}
type Ev = (c: Ctx) => Envelope;

const inv = (c: Ctx, fields: Parameters<typeof invoice>[0] = {}) =>
  invoice({ id: c.invoice, customer: c.customer, customer_email: c.email, subscription: c.subscription, currency: c.currency, amount_due: c.amount, next_payment_attempt: null, ...fields });
const fail = (day: number, hours: number, attempt = 1, type = 'invoice.payment_failed'): Ev => (c) =>
  envelope(type, inv(c, { attempt_count: attempt }), { created: at(day, hours) });
const paid = (day: number, hours: number): Ev => (c) =>
  envelope('invoice.paid', inv(c, { status: 'paid', attempt_count: 2, paid_at: unix(at(day, hours)) }), { created: at(day, hours) });
const voided = (day: number, hours: number): Ev => (c) => envelope('invoice.voided', inv(c, { status: 'void' }), { created: at(day, hours) });
const uncollectible = (day: number, hours: number): Ev => (c) =>
  envelope('invoice.marked_uncollectible', inv(c, { status: 'uncollectible' }), { created: at(day, hours) });
const pmUpdated = (day: number, hours: number): Ev => (c) =>
  envelope('payment_method.attached', { id: `pm_${c.invoice}`, object: 'payment_method', customer: c.customer, type: 'card', card: { brand: 'visa', exp_month: 12, exp_year: 2031 } }, { created: at(day, hours) });
const subCanceled = (day: number, hours: number): Ev => (c) =>
  envelope('customer.subscription.deleted', subscription({ id: c.subscription!, customer: c.customer, status: 'canceled', cancellation_reason: 'payment_failed', currency: c.currency, unit_amount: c.amount }), { created: at(day, hours) });
const charge = (day: number, hours: number, reason: string): Ev => (c) =>
  envelope('charge.failed', { id: `ch_${c.invoice}`, object: 'charge', customer: c.customer, amount: c.amount, currency: c.currency, status: 'failed', failure_code: 'card_declined', outcome: { reason } }, { created: at(day, hours) });

const CASES: { key: string; currency: string; amount: number; subscription?: boolean; events: { day: number; hours: number; ev: Ev }[] }[] = [
  // usd (cents)
  { key: 'u_paid', currency: 'usd', amount: 4900, events: [{ day: 0, hours: 1, ev: fail(0, 1) }, { day: 2, hours: 3, ev: paid(2, 3) }] },
  { key: 'u_pm', currency: 'usd', amount: 9900, events: [{ day: 0, hours: 2, ev: fail(0, 2) }, { day: 1, hours: 2, ev: pmUpdated(1, 2) }, { day: 2, hours: 4, ev: paid(2, 4) }] },
  { key: 'u_late_feb', currency: 'usd', amount: 12050, events: [{ day: 3, hours: 1, ev: fail(3, 1) }, { day: 8, hours: 1, ev: paid(8, 1) }] },
  { key: 'u_lost', currency: 'usd', amount: 7000, events: [{ day: 1, hours: 1, ev: fail(1, 1) }, { day: 9, hours: 1, ev: uncollectible(9, 1) }] },
  { key: 'u_open', currency: 'usd', amount: 1500, events: [{ day: 7, hours: 2.9, ev: charge(7, 2.9, 'insufficient_funds') }, { day: 7, hours: 3, ev: fail(7, 3) }] },
  { key: 'u_open_hard', currency: 'usd', amount: 3550, events: [{ day: 8, hours: 4.9, ev: charge(8, 4.9, 'lost_card') }, { day: 8, hours: 5, ev: fail(8, 5) }] },
  { key: 'u_void', currency: 'usd', amount: 2000, events: [{ day: 2, hours: 1, ev: fail(2, 1) }, { day: 4, hours: 2, ev: voided(4, 2) }] },
  // eur (cents)
  { key: 'e_paid', currency: 'eur', amount: 3900, events: [{ day: 1, hours: 4, ev: fail(1, 4) }, { day: 3, hours: 1, ev: paid(3, 1) }] },
  { key: 'e_open', currency: 'eur', amount: 1999, events: [{ day: 8, hours: 2, ev: fail(8, 2) }] },
  // jpy (zero-decimal: amounts are yen)
  { key: 'j_paid', currency: 'jpy', amount: 5000, events: [{ day: 6, hours: 2, ev: fail(6, 2) }, { day: 9, hours: 1, ev: paid(9, 1) }] },
  { key: 'j_paid2', currency: 'jpy', amount: 8000, events: [{ day: 6, hours: 3, ev: fail(6, 3) }, { day: 8, hours: 4, ev: paid(8, 4) }] },
  { key: 'j_lost', currency: 'jpy', amount: 12000, subscription: true, events: [{ day: 6, hours: 4, ev: fail(6, 4) }, { day: 8, hours: 1, ev: subCanceled(8, 1) }] },
  { key: 'j_open', currency: 'jpy', amount: 3000, events: [{ day: 7, hours: 3, ev: fail(7, 3) }] },
  {
    key: 'j_open_sca',
    currency: 'jpy',
    amount: 2500,
    events: [{ day: 9, hours: 1, ev: fail(9, 1, 1, 'invoice.payment_action_required') }, { day: 9, hours: 1, ev: fail(9, 1) }],
  },
];

async function playScenario(svc: Built, clock: ManualClock): Promise<void> {
  clock.set(at(-8));
  const put = await svc.app.inject({ method: 'PUT', url: '/v1/workflows/billing-recovery', headers: auth, payload: splitDefinition() });
  assert.equal(put.statusCode, 200, put.body);
  clock.set(at(-7, 1));
  const ctx = CASES.map((spec, i) => ({
    spec,
    c: {
      invoice: `in_${spec.key}`,
      customer: `cus_e2e_${i + 1}`,
      subscription: spec.subscription ? `sub_${spec.key}` : null,
      currency: spec.currency,
      amount: spec.amount,
      email: `billing+${i + 1}@example.test`,
    } satisfies Ctx,
  }));
  for (const { c } of ctx) {
    const res = await deliver(svc.app, envelope('customer.created', { id: c.customer, object: 'customer', email: c.email, name: `Customer ${c.customer.slice(8)}` }, { created: at(-7) }));
    assert.equal(res.statusCode, 200);
  }
  await svc.drain();
  const events = ctx.flatMap(({ spec, c }) => spec.events.map((e) => ({ day: e.day, time: at(e.day, e.hours).getTime(), env: e.ev(c) })));
  events.sort((a, b) => a.time - b.time);
  for (let day = 0; day <= LAST_DAY; day++) {
    clock.set(at(day, 23));
    for (const e of events.filter((x) => x.day === day)) assert.equal((await deliver(svc.app, e.env)).statusCode, 200);
    await svc.drain();
  }
  clock.set(at(LAST_DAY + 2, 9)); // "today" for the dashboard: 2026-03-09
  await svc.drain();
}

// ---------------------------------------------------------------------------------------------
// Expected text, computed here with Intl (independently of the server's formatting code)

function minorDigits(currency: string): number {
  return new Intl.NumberFormat(LOCALE, { style: 'currency', currency: currency.toUpperCase() }).resolvedOptions().maximumFractionDigits ?? 2;
}
const moneyText = (amount: number, currency: string) =>
  new Intl.NumberFormat(LOCALE, { style: 'currency', currency: currency.toUpperCase() }).format(amount / 10 ** minorDigits(currency));
const countText = (n: number) => new Intl.NumberFormat(LOCALE).format(n);
const percentText = (r: number | null) =>
  r === null ? '—' : new Intl.NumberFormat(LOCALE, { style: 'percent', minimumFractionDigits: 1, maximumFractionDigits: 1 }).format(r);

interface CA {
  count: number;
  amount: number;
}
interface CurrencyJson {
  currency: string;
  failed: CA;
  recovered: CA;
  lost: CA;
  open: CA;
  voided: CA;
  recoveryRate: number | null;
  byAttribution: Record<string, CA>;
  holdout: { cases: number; recoveryRate: number | null; liftPoints: number | null; treated: { cases: number; recoveryRate: number | null } };
}
interface RecoveryJson {
  from: string;
  to: string;
  currencies: CurrencyJson[];
  monthly: { currency: string; month: string; recoveredAmount: number }[];
}
interface WorkflowJson {
  runs: { entered: number; converted: number; conversionRate: number | null };
  control: string | null;
  variants: { variant: string; entered: number; converted: number; conversionRate: number | null; vsControl: { differencePoints: number; pValue: number } | null }[];
  holdout: { entered: number };
}

async function api<T>(base: string, url: string): Promise<T> {
  const res = await fetch(`${base}${url}`, { headers: auth });
  assert.equal(res.status, 200, `${url}: ${res.status}`);
  return (await res.json()) as T;
}

async function textOf(page: Page, testid: string): Promise<string> {
  const el = page.getByTestId(testid);
  assert.equal(await el.count(), 1, `one element with data-testid="${testid}"`);
  return ((await el.textContent()) ?? '').trim();
}

const csvRows = (text: string) => text.split('\r\n').filter((line) => line.length > 0);

/** Pixels drawn on a canvas, its size, and the data Chart.js holds for it. */
async function canvasInfo(page: Page, id: string) {
  return page.evaluate((canvasId) => {
    const canvas = document.getElementById(canvasId) as HTMLCanvasElement | null;
    if (!canvas) return null;
    const ctx = canvas.getContext('2d')!;
    const pixels = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    let painted = 0;
    for (let i = 3; i < pixels.length; i += 4) if (pixels[i] !== 0) painted++;
    const chart = (window as unknown as { Chart: { getChart(c: HTMLCanvasElement): { data: { labels: string[]; datasets: { data: (number | null)[] }[] } } | undefined } }).Chart.getChart(canvas);
    return {
      width: canvas.width,
      height: canvas.height,
      painted,
      rendered: canvas.getAttribute('data-rendered'),
      labels: chart?.data.labels ?? null,
      data: chart ? chart.data.datasets.map((d) => d.data) : null,
    };
  }, id);
}

// ---------------------------------------------------------------------------------------------

test('dashboard in headless Chromium: login, per-currency figures equal the API, charts drawn, A/B table, CSV downloads, screenshot', async (t) => {
  if (!existsSync(CHROMIUM)) {
    assert.fail(`Chromium not found at ${CHROMIUM}: install it (apt-get install -y chromium) or set CHROMIUM_PATH`);
  }
  const svc = await build(t, { clock: 'manual', env: { QUIET_HOURS: 'off' } });
  const clock = svc.clock as ManualClock;
  await playScenario(svc, clock);
  await svc.app.listen({ host: '127.0.0.1', port: 0 });
  const base = `http://127.0.0.1:${(svc.app.server.address() as AddressInfo).port}`;

  const downloads = await import('node:fs/promises').then((fs) => fs.mkdtemp(path.join(tmpdir(), 'lifeline-e2e-')));
  t.after(() => rm(downloads, { recursive: true, force: true }));
  const browser: Browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true, downloadsPath: downloads });
  t.after(() => browser.close());
  const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 900 }, locale: LOCALE, timezoneId: 'UTC' });
  const page = await context.newPage();
  page.setDefaultTimeout(30_000);
  const problems: string[] = [];
  page.on('console', (m) => {
    // (getImageData below is this test's own readback, not the page's)
    if ((m.type() === 'error' || m.type() === 'warning') && !/willReadFrequently/.test(m.text())) problems.push(`console ${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()} ${r.failure()?.errorText ?? ''}`));
  const offOrigin: string[] = [];
  page.on('request', (r) => {
    if (!r.url().startsWith(base) && !r.url().startsWith('data:')) offOrigin.push(r.url());
  });

  // --- not signed in: the dashboard sends the browser to the login form
  await page.goto(`${base}/dashboard`);
  assert.equal(new URL(page.url()).pathname, '/dashboard/login');

  // a wrong token: 401 with a message, no cookie
  await page.getByTestId('login-token').fill('definitely-not-the-token');
  const [wrongResponse] = await Promise.all([page.waitForResponse((r) => r.url().endsWith('/dashboard/login') && r.request().method() === 'POST'), page.getByTestId('login-submit').click()]);
  assert.equal(wrongResponse.status(), 401);
  await page.getByTestId('login-error').waitFor();
  assert.deepEqual(await context.cookies(), []);
  assert.deepEqual(problems, ['console error: Failed to load resource: the server responded with a status of 401 (Unauthorized)'], 'only the refused login so far');
  problems.length = 0;

  // the right token: a session cookie (HttpOnly, SameSite=Strict), then the dashboard
  await page.getByTestId('login-token').fill(ADMIN_TOKEN);
  await Promise.all([page.waitForURL((u) => u.pathname === '/dashboard'), page.getByTestId('login-submit').click()]);
  const cookies = await context.cookies();
  assert.equal(cookies.length, 1);
  assert.equal(cookies[0]!.name, 'lifeline_dashboard');
  assert.equal(cookies[0]!.httpOnly, true);
  assert.equal(cookies[0]!.sameSite, 'Strict');
  assert.equal(cookies[0]!.path, '/dashboard');
  assert.equal(await page.evaluate(() => document.cookie), '', 'the session cookie is not readable from script');

  // --- the default range is the last 12 months, to today included
  const from = await page.getByTestId('range-from').inputValue();
  const to = await page.getByTestId('range-to').inputValue();
  assert.deepEqual([from, to], ['2025-04-01', '2026-03-10']);
  const report = await api<RecoveryJson>(base, `/v1/reports/recovery?from=${from}&to=${to}`);
  assert.deepEqual(report.currencies.map((c) => c.currency), ['eur', 'jpy', 'usd'], 'the scenario has three currencies');

  // --- every per-currency figure equals the API's, formatted for its own currency
  const sections = await page.locator('section.currency').evaluateAll((els) => els.map((e) => e.getAttribute('data-currency')));
  assert.deepEqual(sections, ['eur', 'jpy', 'usd']);
  for (const cur of report.currencies) {
    const c = cur.currency;
    for (const state of ['failed', 'recovered', 'lost', 'open', 'voided'] as const) {
      assert.equal(await textOf(page, `${c}-${state}-count`), countText(cur[state].count), `${c} ${state} count`);
      assert.equal(await textOf(page, `${c}-${state}-amount`), moneyText(cur[state].amount, c), `${c} ${state} amount`);
      assert.equal(await page.getByTestId(`${c}-${state}-amount`).getAttribute('data-value'), String(cur[state].amount));
    }
    assert.equal(await textOf(page, `${c}-recovery-rate`), percentText(cur.recoveryRate), `${c} recovery rate`);
    for (const [bucket, v] of Object.entries(cur.byAttribution)) {
      assert.equal(await textOf(page, `${c}-attr-${bucket}-count`), countText(v.count), `${c} ${bucket}`);
      assert.equal(await textOf(page, `${c}-attr-${bucket}-amount`), moneyText(v.amount, c), `${c} ${bucket}`);
    }
    assert.equal(await textOf(page, `${c}-holdout-cases`), countText(cur.holdout.cases));
    assert.equal(await textOf(page, `${c}-holdout-rate`), percentText(cur.holdout.recoveryRate));
    assert.equal(await textOf(page, `${c}-treated-rate`), percentText(cur.holdout.treated.recoveryRate));
    const lift = await page.getByTestId(`${c}-holdout-lift`).getAttribute('data-value');
    assert.equal(lift === '' ? null : Number(lift), cur.holdout.liftPoints);
    // the open cases listed are the API's open count
    assert.equal(await page.getByTestId(`${c}-open-case`).count(), cur.open.count, `${c} open cases listed`);
  }
  // zero-decimal yen and two-decimal dollars, as a reader sees them
  const jpy = report.currencies.find((c) => c.currency === 'jpy')!;
  assert.equal(jpy.failed.amount, 5000 + 8000 + 12000 + 3000 + 2500);
  assert.equal(await textOf(page, 'jpy-failed-amount'), '¥30,500');
  assert.equal(await textOf(page, 'usd-failed-amount'), '$409.00');
  assert.equal(await textOf(page, 'eur-open-amount'), '€19.99');
  assert.equal(await textOf(page, 'usd-recovered-count'), '3');
  // decline classes of the open cases
  assert.match((await page.locator('[data-testid="usd-open-case"][data-invoice="in_u_open_hard"]').textContent()) ?? '', /hard/);
  assert.match((await page.locator('[data-testid="jpy-open-case"][data-invoice="in_j_open_sca"]').textContent()) ?? '', /sca/);

  // --- the charts drew, with the API's monthly figures (in major units)
  for (const cur of report.currencies) {
    const c = cur.currency;
    for (const kind of ['monthly', 'rate', 'attribution']) {
      await page.locator(`#${c}-chart-${kind}[data-rendered="true"]`).waitFor({ state: 'attached' });
      const info = await canvasInfo(page, `${c}-chart-${kind}`);
      assert.ok(info, `${c}-chart-${kind} exists`);
      assert.ok(info.width > 100 && info.height > 100, `${c}-chart-${kind} has a size: ${info.width}x${info.height}`);
      assert.ok(info.painted > 500, `${c}-chart-${kind} is not blank (${info.painted} painted pixels)`);
    }
    const monthly = (await canvasInfo(page, `${c}-chart-monthly`))!;
    assert.equal(monthly.labels!.length, 12, 'one bar per month of the range');
    const recoveredSeries = monthly.data![0]!;
    const febIndex = monthly.labels!.indexOf('Feb 2026');
    const marIndex = monthly.labels!.indexOf('Mar 2026');
    for (const [index, month] of [[febIndex, '2026-02'], [marIndex, '2026-03']] as const) {
      const row = report.monthly.find((m) => m.currency === c && m.month === month);
      assert.equal(recoveredSeries[index], (row?.recoveredAmount ?? 0) / 10 ** minorDigits(c), `${c} ${month} recovered bar`);
    }
    assert.equal(recoveredSeries.reduce((s: number, v) => s + (v ?? 0), 0) * 10 ** minorDigits(c), cur.recovered.amount, `${c}: the bars add up to recovered`);
  }

  // --- workflows: funnel, KPI and the A/B table, equal to the workflow report API
  const wf = await api<WorkflowJson>(base, `/v1/reports/workflows/billing-recovery?from=${from}&to=${to}`);
  assert.equal(wf.runs.entered, CASES.length, 'one billing-recovery run per case');
  assert.equal(await textOf(page, 'workflow-billing-recovery-entered'), countText(wf.runs.entered));
  assert.equal(await textOf(page, 'workflow-billing-recovery-converted'), countText(wf.runs.converted));
  assert.equal(await textOf(page, 'workflow-billing-recovery-conversion-rate'), percentText(wf.runs.conversionRate));
  assert.equal(wf.control, 'a');
  assert.deepEqual(wf.variants.map((v) => v.variant), ['a', 'b']);
  for (const v of wf.variants) {
    assert.equal(await textOf(page, `workflow-billing-recovery-variant-${v.variant}-rate`), percentText(v.conversionRate));
    const diff = await textOf(page, `workflow-billing-recovery-variant-${v.variant}-diff`);
    const p = await textOf(page, `workflow-billing-recovery-variant-${v.variant}-p`);
    if (v.vsControl) {
      const expectedDiff = `${new Intl.NumberFormat(LOCALE, { minimumFractionDigits: 1, maximumFractionDigits: 1, signDisplay: 'exceptZero' }).format(v.vsControl.differencePoints)} pts`;
      assert.equal(diff, expectedDiff);
      assert.equal(p, v.vsControl.pValue < 0.001 ? '< 0.001' : v.vsControl.pValue.toFixed(3));
    } else {
      assert.equal(diff, '—');
    }
  }
  assert.equal(await page.getByTestId('workflow-billing-recovery-holdout').count(), wf.holdout.entered > 0 ? 1 : 0);
  assert.ok((await page.getByTestId('workflow-billing-recovery-funnel').locator('tbody tr').count()) > 3, 'the funnel lists the steps');

  // the definitions are there, folded
  const definitions = page.getByTestId('definitions-recovery');
  assert.equal(await definitions.getAttribute('open'), null);
  await definitions.locator('summary').click();
  assert.match((await definitions.textContent()) ?? '', /recoveryRate = recovered\.amount \/ \(failed\.amount - voided\.amount\)/);

  // --- the screenshot (with the page as a reader first sees it)
  await definitions.locator('summary').click();
  await mkdir(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: SCREENSHOT, fullPage: true });
  assert.ok(existsSync(SCREENSHOT));

  // --- CSV downloads through the buttons (the session cookie is the credential)
  const apiCsv = await (await fetch(`${base}/v1/reports/recovery?from=${from}&to=${to}&format=csv`, { headers: auth })).text();
  const [all] = await Promise.all([page.waitForEvent('download'), page.getByTestId('csv-all').click()]);
  assert.equal(all.suggestedFilename(), `recovery-ledger_${from}_${to}.csv`);
  const allText = await readFile((await all.path())!, 'utf8');
  const totalFailed = report.currencies.reduce((s, c) => s + c.failed.count, 0); // a count of cases, not an amount
  assert.equal(csvRows(allText).length - 1, totalFailed, 'one CSV row per failed case');
  assert.equal(allText, apiCsv, 'the same ledger as the API');
  for (const cur of report.currencies) {
    const [one] = await Promise.all([page.waitForEvent('download'), page.getByTestId(`${cur.currency}-csv`).click()]);
    const rows = csvRows(await readFile((await one.path())!, 'utf8'));
    assert.equal(rows.length - 1, cur.failed.count, `${cur.currency} CSV rows`);
    const header = rows[0]!.split(',');
    const open = rows.slice(1).map((r) => r.split(',')).filter((r) => r[header.indexOf('state')] === 'open').map((r) => r[header.indexOf('invoice')]);
    const listed = await page.getByTestId(`${cur.currency}-open-case`).evaluateAll((els) => els.map((e) => e.getAttribute('data-invoice')));
    assert.deepEqual([...listed].sort(), [...open].sort(), `${cur.currency}: the open cases on the page are the CSV's`);
  }

  // --- another range through the form: March only
  await page.getByTestId('range-from').fill('2026-03-01');
  await page.getByTestId('range-to').fill('2026-04-01');
  await Promise.all([page.waitForURL((u) => u.searchParams.get('from') === '2026-03-01'), page.getByTestId('range-apply').click()]);
  const march = await api<RecoveryJson>(base, '/v1/reports/recovery?from=2026-03-01&to=2026-04-01');
  assert.ok(march.currencies.length > 0);
  for (const cur of march.currencies) {
    assert.equal(await textOf(page, `${cur.currency}-failed-count`), countText(cur.failed.count));
    assert.equal(await textOf(page, `${cur.currency}-recovered-amount`), moneyText(cur.recovered.amount, cur.currency));
    assert.equal(await textOf(page, `${cur.currency}-recovery-rate`), percentText(cur.recoveryRate));
  }
  assert.equal(await page.locator('section.currency').count(), march.currencies.length);

  // --- nothing broke, nothing came from elsewhere (no CDN, no fonts), the CSP held
  assert.deepEqual(offOrigin, []);
  assert.deepEqual(problems, []);

  // --- sign out: back to the login form, and the dashboard asks again
  await Promise.all([page.waitForURL((u) => u.pathname === '/dashboard/login'), page.getByTestId('logout').click()]);
  assert.deepEqual(await context.cookies(), []);
  await page.goto(`${base}/dashboard`);
  assert.equal(new URL(page.url()).pathname, '/dashboard/login');
  await context.close();
});
