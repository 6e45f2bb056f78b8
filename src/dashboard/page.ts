// Server-rendered HTML of the dashboard. Every figure is in the markup (with a stable
// data-testid and its raw value in data-value); charts are drawn by /dashboard/assets/dashboard.js
// from a JSON block, under a CSP that allows no inline script. Styles are one inline <style>
// block allowed by its hash.
import { createHash } from 'node:crypto';
import { pageHeaders } from '../http/security-headers.ts';
import { ATTRIBUTION_BUCKETS } from '../reports/definitions.ts';
import type { CurrencyRecovery, MonthlyRecovery } from '../reports/recovery-report.ts';
import type { WorkflowReport } from '../reports/workflow-report.ts';
import type { DashboardAssets } from './assets.ts';
import type { DashboardData, OpenCase } from './data.ts';
import {
  DASH,
  LOCALE,
  currencyExponent,
  currencyName,
  escapeHtml as h,
  hours,
  humanize,
  integer,
  interval,
  majorUnits,
  money,
  monthLabel,
  pValue,
  percent,
  points,
  utcDateTime,
} from './format.ts';

export const CSS = `
:root{--ink:#0f172a;--muted:#64748b;--line:#e2e8f0;--bg:#f8fafc;--card:#fff;--accent:#4f46e5;--good:#0f766e;--bad:#b91c1c;--warn:#b45309}
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:var(--ink);background:var(--bg)}
a{color:var(--accent)}
.top{display:flex;align-items:center;justify-content:space-between;gap:1rem;padding:.75rem 1.5rem;background:#0f172a;color:#fff}
.brand{font-weight:700;letter-spacing:.01em}.brand span{font-weight:400;color:#cbd5e1;margin-left:.5rem}
.top form{margin:0}.top button{background:transparent;color:#e2e8f0;border:1px solid #475569;border-radius:.375rem;padding:.3rem .8rem;cursor:pointer;font:inherit}
main{max-width:1200px;margin:0 auto;padding:1.25rem 1.5rem 4rem}
h1{font-size:1.5rem;margin:.25rem 0 1rem}h2{font-size:1.25rem;margin:0}h3{font-size:1rem;margin:1.5rem 0 .5rem;color:#334155}
.toolbar{display:flex;flex-wrap:wrap;align-items:flex-end;gap:1rem;justify-content:space-between;margin-bottom:1rem}
.range{display:flex;flex-wrap:wrap;align-items:flex-end;gap:.75rem}
.range label{display:flex;flex-direction:column;font-size:.8rem;color:var(--muted)}
input[type=date],input[type=password]{font:inherit;padding:.4rem .5rem;border:1px solid #cbd5e1;border-radius:.375rem;background:#fff;color:var(--ink)}
.btn,button.primary{display:inline-block;font:inherit;font-weight:600;padding:.45rem 1rem;border-radius:.375rem;border:1px solid var(--accent);background:var(--accent);color:#fff;text-decoration:none;cursor:pointer}
.btn.secondary{background:#fff;color:var(--accent)}
.quick{font-size:.85rem;color:var(--muted)}.quick a{margin-right:.6rem}
.note{color:var(--muted);font-size:.9rem;margin:.25rem 0 1rem}
.error{background:#fef2f2;border:1px solid #fecaca;color:var(--bad);padding:.75rem 1rem;border-radius:.5rem;margin:1rem 0}
nav.jump{display:flex;flex-wrap:wrap;gap:.5rem;margin:0 0 1.25rem}
nav.jump a{padding:.3rem .8rem;border:1px solid var(--line);border-radius:999px;background:#fff;text-decoration:none;font-weight:600;font-size:.9rem}
section.panel{background:var(--card);border:1px solid var(--line);border-radius:.75rem;padding:1.25rem 1.5rem;margin:0 0 1.5rem;box-shadow:0 1px 2px rgba(15,23,42,.04)}
.panel-head{display:flex;flex-wrap:wrap;align-items:baseline;justify-content:space-between;gap:.75rem;margin-bottom:1rem}
.panel-head .sub{color:var(--muted);font-weight:400;font-size:.95rem;margin-left:.5rem}
.kpis{display:grid;grid-template-columns:repeat(auto-fit,minmax(140px,1fr));gap:.75rem}
.kpi{border:1px solid var(--line);border-radius:.5rem;padding:.65rem .8rem;background:#fff}
.kpi .label{font-size:.75rem;text-transform:uppercase;letter-spacing:.05em;color:var(--muted)}
.kpi .amount{font-size:1.2rem;font-weight:700;font-variant-numeric:tabular-nums}
.kpi .count{font-size:.85rem;color:var(--muted)}
.kpi.recovered .amount{color:var(--good)}.kpi.lost .amount{color:var(--bad)}.kpi.open .amount{color:var(--warn)}
.kpi.rate{background:#eef2ff;border-color:#c7d2fe}.kpi.rate .amount{color:var(--accent);font-size:1.5rem}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:1rem;margin-top:1rem}
.chart{border:1px solid var(--line);border-radius:.5rem;padding:.75rem}
.chart h3{margin:0 0 .5rem}
.chart-box{position:relative;height:240px}
.split{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:1.25rem}
.split>*,.charts>*{min-width:0}
.split.wf{grid-template-columns:minmax(0,3fr) minmax(0,2fr)}
@media (max-width:900px){.split.wf{grid-template-columns:minmax(0,1fr)}}
.scroll{overflow-x:auto}
table{width:100%;border-collapse:collapse;font-size:.9rem}
th,td{text-align:left;padding:.4rem .5rem;border-bottom:1px solid var(--line);vertical-align:top}
th{font-size:.75rem;text-transform:uppercase;letter-spacing:.04em;color:var(--muted);font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tfoot td{font-weight:700}
.tag{display:inline-block;font-size:.7rem;font-weight:700;text-transform:uppercase;letter-spacing:.04em;padding:.05rem .45rem;border-radius:999px;background:#e2e8f0;color:#334155}
.tag.hard{background:#fee2e2;color:#991b1b}.tag.sca{background:#fef3c7;color:#92400e}.tag.soft{background:#dbeafe;color:#1e40af}
.tag.paused{background:#fef3c7;color:#92400e}.tag.control{background:#e0e7ff;color:#3730a3}
.sig{color:var(--good);font-weight:700}
.muted{color:var(--muted)}
.small{font-size:.8rem}
progress{width:5rem;height:.6rem;accent-color:var(--accent)}
details{margin-top:1rem}summary{cursor:pointer;font-weight:600;color:#334155}
pre.definition{white-space:pre-wrap;font:13px/1.55 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#f1f5f9;border-radius:.5rem;padding:1rem;max-height:40rem;overflow:auto}
.login{max-width:24rem;margin:12vh auto;background:#fff;border:1px solid var(--line);border-radius:.75rem;padding:2rem}
.login h1{margin-top:0}.login label{display:block;font-weight:600;margin-bottom:.35rem}.login input{width:100%;margin-bottom:1rem}
.empty{color:var(--muted);padding:.5rem 0}
section.quiet{padding:.9rem 1.5rem}section.quiet .panel-head{margin-bottom:.25rem}
`;

export const STYLE_HASH = `'sha256-${createHash('sha256').update(CSS).digest('base64')}'`;

/** The headers of every dashboard page: scripts from our origin only, no inline script, this style block only. */
export const DASHBOARD_PAGE_HEADERS = pageHeaders({ styleHashes: [STYLE_HASH], scripts: true, referrer: 'same-origin' });

const testid = (id: string) => `data-testid="${h(id)}"`;

function layout(title: string, body: string, scripts: string[] = [], top = ''): string {
  return (
    `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">` +
    `<meta name="robots" content="noindex"><link rel="icon" href="data:,"><title>${h(title)}</title><style>${CSS}</style></head>` +
    `<body>${top}${body}${scripts.map((src) => `<script src="${h(src)}"></script>`).join('')}</body></html>`
  );
}

function topBar(): string {
  return (
    `<header class="top"><div class="brand">Lifeline<span>Recovered revenue</span></div>` +
    `<form method="post" action="/dashboard/logout"><button type="submit" ${testid('logout')}>Sign out</button></form></header>`
  );
}

// ---------------------------------------------------------------------------------------------
// Login

export function loginPage(options: { next: string; error?: string; disabled?: boolean }): string {
  const error = options.error ? `<div class="error" role="alert" ${testid('login-error')}>${h(options.error)}</div>` : '';
  const form = options.disabled
    ? ''
    : `<form method="post" action="/dashboard/login" ${testid('login-form')}>` +
      `<input type="hidden" name="next" value="${h(options.next)}">` +
      `<label for="token">Admin token</label>` +
      `<input id="token" name="token" type="password" autocomplete="current-password" required autofocus ${testid('login-token')}>` +
      `<button type="submit" class="primary" ${testid('login-submit')}>Sign in</button></form>`;
  return layout(
    'Sign in · Lifeline',
    `<div class="login"><h1>Lifeline dashboard</h1><p class="muted">Sign in with the service's admin token (LIFELINE_ADMIN_TOKEN).</p>${error}${form}</div>`,
  );
}

export function messagePage(title: string, message: string): string {
  return layout(`${title} · Lifeline`, `<div class="login"><h1>${h(title)}</h1><p>${h(message)}</p><p><a href="/dashboard/login">Sign in</a></p></div>`);
}

// ---------------------------------------------------------------------------------------------
// The dashboard

function isoDate(d: Date): string {
  return d.toISOString().slice(0, 10);
}

/** Months (YYYY-MM) from the month of `from` to the month of the last day before `to`. */
export function monthsOf(from: Date, to: Date, cap = 240): string[] {
  const out: string[] = [];
  const last = new Date(to.getTime() - 1);
  let y = from.getUTCFullYear();
  let m = from.getUTCMonth();
  while ((y < last.getUTCFullYear() || (y === last.getUTCFullYear() && m <= last.getUTCMonth())) && out.length < cap) {
    out.push(`${y}-${String(m + 1).padStart(2, '0')}`);
    m++;
    if (m === 12) {
      m = 0;
      y++;
    }
  }
  return out;
}

export interface QuickRange {
  label: string;
  from: string;
  to: string;
}

/** The default range (the last 12 months: the 11 previous calendar months and this one, to today included) and quick picks. */
export function defaultRange(now: Date): { from: string; to: string; quick: QuickRange[] } {
  const y = now.getUTCFullYear();
  const m = now.getUTCMonth();
  const tomorrow = isoDate(new Date(Date.UTC(y, m, now.getUTCDate() + 1)));
  const monthStart = (back: number) => isoDate(new Date(Date.UTC(y, m - back, 1)));
  return {
    from: monthStart(11),
    to: tomorrow,
    quick: [
      { label: 'Last 12 months', from: monthStart(11), to: tomorrow },
      { label: 'Last 3 months', from: monthStart(2), to: tomorrow },
      { label: 'This month', from: monthStart(0), to: tomorrow },
      { label: 'Last month', from: monthStart(1), to: monthStart(0) },
      { label: 'Year to date', from: `${y}-01-01`, to: tomorrow },
    ],
  };
}

const rangeQuery = (from: string, to: string, extra: Record<string, string> = {}) =>
  new URLSearchParams({ from, to, ...extra }).toString();

function rangeForm(from: string, to: string, quick: QuickRange[]): string {
  return (
    `<form class="range" method="get" action="/dashboard" ${testid('range-form')}>` +
    `<label>From<input type="date" name="from" value="${h(from)}" required ${testid('range-from')}></label>` +
    `<label>To (not included)<input type="date" name="to" value="${h(to)}" required ${testid('range-to')}></label>` +
    `<button type="submit" class="primary" ${testid('range-apply')}>Apply</button>` +
    `<div class="quick">${quick.map((q) => `<a href="/dashboard?${h(rangeQuery(q.from, q.to))}">${h(q.label)}</a>`).join('')}</div>` +
    `</form>`
  );
}

function kpi(cls: string, label: string, id: string, count: number, amount: number, currency: string): string {
  return (
    `<div class="kpi ${cls}"><div class="label">${h(label)}</div>` +
    `<div class="amount" ${testid(`${id}-amount`)} data-value="${amount}">${h(money(amount, currency))}</div>` +
    `<div class="count"><span ${testid(`${id}-count`)} data-value="${count}">${h(integer(count))}</span> ${count === 1 ? 'case' : 'cases'}</div></div>`
  );
}

function declineTag(cls: string): string {
  return `<span class="tag ${h(cls)}">${h(cls)}</span>`;
}

function openCasesTable(c: string, open: { shown: OpenCase[]; total: number } | undefined): string {
  if (!open || open.total === 0) return `<p class="empty" ${testid(`${c}-open-cases-empty`)}>No open cases.</p>`;
  const rows = open.shown
    .map(
      (o) =>
        `<tr ${testid(`${c}-open-case`)} data-invoice="${h(o.invoiceId)}">` +
        `<td><code>${h(o.invoiceId)}</code></td>` +
        `<td>${o.customerName || o.customerEmail ? `${h(o.customerName ?? o.customerEmail)}<br>` : ''}<span class="muted small">${h(o.customerId)}${o.customerName && o.customerEmail ? ` · ${h(o.customerEmail)}` : ''}</span></td>` +
        `<td class="num" data-value="${o.amountDue}">${h(money(o.amountDue, o.currency))}</td>` +
        `<td>${h(utcDateTime(o.firstFailedAt))}</td>` +
        `<td class="num">${h(integer(o.attempts))}</td>` +
        `<td>${declineTag(o.declineClass)}</td></tr>`,
    )
    .join('');
  const more =
    open.total > open.shown.length
      ? `<p class="note">Showing the ${open.shown.length} largest of <span ${testid(`${c}-open-total`)}>${open.total}</span> open cases; the CSV has all of them.</p>`
      : '';
  return (
    `<div class="scroll"><table ${testid(`${c}-open-cases`)}><thead><tr><th>Invoice</th><th>Customer</th><th class="num">Amount due</th><th>First failure</th><th class="num">Attempts</th><th>Decline class</th></tr></thead>` +
    `<tbody>${rows}</tbody></table></div>${more}`
  );
}

interface ChartSpec {
  id: string;
  kind: 'monthly' | 'rate' | 'attribution';
  [key: string]: unknown;
}

function currencySection(
  cur: CurrencyRecovery,
  monthly: MonthlyRecovery[],
  months: string[],
  open: { shown: OpenCase[]; total: number } | undefined,
  range: { fromText: string; toText: string },
  charts: ChartSpec[],
): string {
  const c = cur.currency;
  const C = c.toUpperCase();
  const digits = currencyExponent(c);
  const byMonth = new Map(monthly.filter((m) => m.currency === c).map((m) => [m.month, m]));
  const labels = months.map(monthLabel);
  charts.push(
    {
      id: `${c}-chart-monthly`,
      kind: 'monthly',
      currency: c,
      digits,
      labels,
      recovered: months.map((m) => majorUnits(byMonth.get(m)?.recoveredAmount ?? 0, c)),
      atStake: months.map((m) => {
        const row = byMonth.get(m);
        return majorUnits(row ? row.failedAmount - row.voidedAmount : 0, c);
      }),
    },
    { id: `${c}-chart-rate`, kind: 'rate', labels, rates: months.map((m) => byMonth.get(m)?.recoveryRate ?? null) },
    {
      id: `${c}-chart-attribution`,
      kind: 'attribution',
      currency: c,
      digits,
      labels: ATTRIBUTION_BUCKETS.map(humanize),
      amounts: ATTRIBUTION_BUCKETS.map((b) => majorUnits(cur.byAttribution[b].amount, c)),
      counts: ATTRIBUTION_BUCKETS.map((b) => cur.byAttribution[b].count),
    },
  );

  const kpis =
    `<div class="kpis">` +
    `<div class="kpi rate"><div class="label">Recovery rate</div><div class="amount" ${testid(`${c}-recovery-rate`)} data-value="${cur.recoveryRate ?? ''}">${h(percent(cur.recoveryRate))}</div>` +
    `<div class="count">recovered ÷ (failed − voided)</div></div>` +
    kpi('failed', 'Failed', `${c}-failed`, cur.failed.count, cur.failed.amount, c) +
    kpi('recovered', 'Recovered', `${c}-recovered`, cur.recovered.count, cur.recovered.amount, c) +
    kpi('lost', 'Lost', `${c}-lost`, cur.lost.count, cur.lost.amount, c) +
    kpi('open', 'Open', `${c}-open`, cur.open.count, cur.open.amount, c) +
    kpi('voided', 'Voided', `${c}-voided`, cur.voided.count, cur.voided.amount, c) +
    `<div class="kpi"><div class="label">Median time to recover</div><div class="amount" ${testid(`${c}-median-time`)} data-value="${cur.medianHoursToRecover ?? ''}">${h(hours(cur.medianHoursToRecover))}</div>` +
    `<div class="count"><span ${testid(`${c}-late-count`)} data-value="${cur.lateRecovered.count}">${h(integer(cur.lateRecovered.count))}</span> recovered after being lost (${h(money(cur.lateRecovered.amount, c))})</div></div>` +
    `</div>`;

  const chartBox = (id: string, title: string, label: string) =>
    `<div class="chart"><h3>${h(title)}</h3><div class="chart-box"><canvas id="${h(id)}" ${testid(id)} role="img" aria-label="${h(label)}"></canvas></div></div>`;

  const monthlyRows = months
    .map((m) => {
      const row = byMonth.get(m);
      return (
        `<tr ${testid(`${c}-month-${m}`)}><td>${h(monthLabel(m))}</td><td class="num">${h(integer(row?.cases ?? 0))}</td>` +
        `<td class="num">${h(money(row?.failedAmount ?? 0, c))}</td><td class="num">${h(money(row?.voidedAmount ?? 0, c))}</td>` +
        `<td class="num" data-value="${row?.recoveredAmount ?? 0}">${h(money(row?.recoveredAmount ?? 0, c))}</td><td class="num">${h(percent(row?.recoveryRate ?? null))}</td></tr>`
      );
    })
    .join('');

  const attributionRows = ATTRIBUTION_BUCKETS.map((b) => {
    const v = cur.byAttribution[b];
    const share = cur.recovered.amount > 0 ? v.amount / cur.recovered.amount : null;
    return (
      `<tr><td>${h(humanize(b))}</td><td class="num" ${testid(`${c}-attr-${b}-count`)} data-value="${v.count}">${h(integer(v.count))}</td>` +
      `<td class="num" ${testid(`${c}-attr-${b}-amount`)} data-value="${v.amount}">${h(money(v.amount, c))}</td><td class="num">${h(percent(share))}</td></tr>`
    );
  }).join('');

  const ho = cur.holdout;
  const holdout =
    `<table ${testid(`${c}-holdout`)}><thead><tr><th>Group</th><th class="num">Cases</th><th class="num">Recovered</th><th class="num">Recovery rate</th></tr></thead><tbody>` +
    `<tr><td>Treated (recovery emails)</td><td class="num" ${testid(`${c}-treated-cases`)}>${h(integer(ho.treated.cases))}</td><td class="num">${h(money(ho.treated.recovered.amount, c))}</td>` +
    `<td class="num" ${testid(`${c}-treated-rate`)}>${h(percent(ho.treated.recoveryRate))}</td></tr>` +
    `<tr><td>Hold-out (no emails)</td><td class="num" ${testid(`${c}-holdout-cases`)}>${h(integer(ho.cases))}</td><td class="num">${h(money(ho.recovered.amount, c))}</td>` +
    `<td class="num" ${testid(`${c}-holdout-rate`)}>${h(percent(ho.recoveryRate))}</td></tr>` +
    `</tbody></table>` +
    `<p><strong>Lift (treated − hold-out):</strong> <span ${testid(`${c}-holdout-lift`)} data-value="${ho.liftPoints ?? ''}">${h(points(ho.liftPoints))}</span>` +
    ` · 95% CI <span ${testid(`${c}-holdout-ci`)}>${h(interval(ho.ci95))}</span>` +
    ` · p = <span ${testid(`${c}-holdout-p`)} class="${ho.pValue !== null && ho.pValue < 0.05 ? 'sig' : ''}">${h(pValue(ho.pValue))}</span></p>` +
    `<p class="note">${h(integer(ho.withoutRun))} ${ho.withoutRun === 1 ? 'case had' : 'cases had'} no recovery run (neither group). The interval is on case counts; the lift on amounts (see definitions).</p>`;

  const csv = `/dashboard/export/recovery.csv?${rangeQuery(range.fromText, range.toText, { currency: c })}`;
  return (
    `<section class="panel currency" id="cur-${h(c)}" ${testid(`currency-${c}`)} data-currency="${h(c)}">` +
    `<div class="panel-head"><h2>${h(C)}<span class="sub">${h(currencyName(c))}</span></h2>` +
    `<a class="btn secondary" href="${h(csv)}" download ${testid(`${c}-csv`)}>Download ${h(C)} ledger (CSV)</a></div>` +
    kpis +
    `<div class="charts">` +
    chartBox(`${c}-chart-monthly`, 'Recovered revenue per month', `Recovered revenue per month in ${C}`) +
    chartBox(`${c}-chart-rate`, 'Recovery rate per month', `Recovery rate per month, ${C}`) +
    `</div>` +
    `<details><summary>Monthly figures</summary><table ${testid(`${c}-monthly-table`)}><thead><tr><th>Month of first failure</th><th class="num">Cases</th><th class="num">Failed</th><th class="num">Voided</th><th class="num">Recovered</th><th class="num">Rate</th></tr></thead><tbody>${monthlyRows}</tbody></table></details>` +
    `<div class="split"><div><h3>Attribution</h3><table ${testid(`${c}-attribution`)}><thead><tr><th>What brought the payment</th><th class="num">Cases</th><th class="num">Recovered</th><th class="num">Share</th></tr></thead>` +
    `<tbody>${attributionRows}</tbody><tfoot><tr><td>Total recovered</td><td class="num">${h(integer(cur.recovered.count))}</td><td class="num">${h(money(cur.recovered.amount, c))}</td><td class="num">${cur.recovered.amount > 0 ? h(percent(1)) : DASH}</td></tr></tfoot></table></div>` +
    chartBox(`${c}-chart-attribution`, 'Recovered by attribution', `Recovered ${C} by attribution`) +
    `</div>` +
    `<h3>Hold-out lift</h3>${holdout}` +
    `<h3>Open cases</h3>${openCasesTable(c, open)}` +
    `</section>`
  );
}

// ---------------------------------------------------------------------------------------------
// Workflows

function kpiValue(key: string, value: unknown): string {
  if (value === null || value === undefined) return DASH;
  if (typeof value === 'number') {
    if (/rate$/i.test(key)) return percent(value);
    if (/hours/i.test(key)) return hours(value);
    return integer(value);
  }
  if (Array.isArray(value)) {
    if (value.length === 0) return DASH;
    return value
      .map((v) => {
        const item = v as { currency?: string; amount?: number; count?: number };
        if (typeof item.currency === 'string' && typeof item.amount === 'number') {
          return `${h(money(item.amount, item.currency))}${typeof item.count === 'number' ? ` <span class="muted">(${h(integer(item.count))})</span>` : ''}`;
        }
        return h(JSON.stringify(v));
      })
      .join('<br>');
  }
  if (typeof value === 'object') {
    return Object.entries(value as Record<string, unknown>)
      .map(([k, v]) => `${h(humanize(k))}: ${kpiValue(k, v)}`)
      .join(' · ');
  }
  return h(String(value));
}

function workflowSection(key: string, paused: boolean, version: number, r: WorkflowReport): string {
  const id = `workflow-${key}`;
  const runs = r.runs;
  const head =
    `<div class="panel-head"><h2>${h(r.name)}<span class="sub"><code>${h(key)}</code> · version ${h(version)}</span>${paused ? ' <span class="tag paused">paused</span>' : ''}</h2></div>`;
  if (runs.entered === 0) {
    return `<section class="panel workflow quiet" id="${h(id)}" ${testid(id)}>${head}<p class="empty" ${testid(`${id}-no-runs`)}>No runs started in this period.</p></section>`;
  }
  const stat = (label: string, name: string, value: number) =>
    `<div class="kpi"><div class="label">${h(label)}</div><div class="amount" ${testid(`${id}-${name}`)} data-value="${value}">${h(integer(value))}</div></div>`;
  const summary =
    `<div class="kpis">${stat('Entered', 'entered', runs.entered)}${stat('Active', 'active', runs.active)}${stat('Converted', 'converted', runs.converted)}` +
    `${stat('Exited', 'exited', runs.exited)}${stat('Completed', 'completed', runs.completed)}` +
    `<div class="kpi rate"><div class="label">Conversion</div><div class="amount" ${testid(`${id}-conversion-rate`)}>${h(percent(runs.conversionRate))}</div></div></div>`;

  const { name: kpiName, ...kpiFields } = r.kpi as { name?: unknown } & Record<string, unknown>;
  const kpiRows = Object.entries(kpiFields)
    .map(([k, v]) => `<tr><td>${h(humanize(k))}</td><td class="num" ${testid(`${id}-kpi-${k}`)}>${kpiValue(k, v)}</td></tr>`)
    .join('');
  const kpiTable = `<h3>Primary KPI: ${h(String(kpiName ?? 'conversion'))}</h3><table ${testid(`${id}-kpi`)}><tbody>${kpiRows}</tbody></table>`;

  const funnel =
    r.steps.length === 0
      ? `<p class="empty">No steps.</p>`
      : `<div class="scroll"><table ${testid(`${id}-funnel`)}><thead><tr><th>Step</th><th>Type</th><th class="num">Reached</th><th>Share</th><th class="num">Sent</th><th class="num">Clicked</th></tr></thead><tbody>` +
        r.steps
          .map(
            (s) =>
              `<tr ${testid(`${id}-step-${s.stepId}`)}><td><code>${h(s.stepId)}</code></td><td>${h(s.type ?? 'removed')}</td>` +
              `<td class="num">${h(integer(s.reached))}</td><td><progress max="${Math.max(runs.entered, 1)}" value="${Math.min(s.reached, Math.max(runs.entered, 1))}"></progress></td>` +
              `<td class="num">${h(integer(s.sent))}</td><td class="num">${h(integer(s.clicked))}</td></tr>`,
          )
          .join('') +
        `</tbody></table></div>`;

  const variants =
    r.variants.length === 0
      ? `<p class="empty">No split test in this workflow's runs for the period.</p>`
      : `<div class="scroll"><table ${testid(`${id}-variants`)}><thead><tr><th>Variant</th><th class="num">Entered</th><th class="num">Converted</th><th class="num">Conversion</th><th class="num">Diff vs control</th><th class="num">95% CI</th><th class="num">p-value</th></tr></thead><tbody>` +
        r.variants
          .map((v) => {
            const vs = v.vsControl;
            const sig = vs && vs.pValue < 0.05 ? 'sig' : '';
            return (
              `<tr ${testid(`${id}-variant-${v.variant}`)}><td>${h(v.variant)}${v.variant === r.control ? ' <span class="tag control">control</span>' : ''}</td>` +
              `<td class="num">${h(integer(v.entered))}</td><td class="num">${h(integer(v.converted))}</td>` +
              `<td class="num" ${testid(`${id}-variant-${v.variant}-rate`)}>${h(percent(v.conversionRate))}</td>` +
              `<td class="num ${sig}" ${testid(`${id}-variant-${v.variant}-diff`)}>${h(points(vs?.differencePoints))}</td>` +
              `<td class="num">${h(interval(vs?.ci95))}</td><td class="num ${sig}" ${testid(`${id}-variant-${v.variant}-p`)}>${h(pValue(vs?.pValue))}</td></tr>`
            );
          })
          .join('') +
        `</tbody></table></div>`;

  const ho = r.holdout;
  const holdout =
    ho.entered === 0
      ? ''
      : `<table ${testid(`${id}-holdout`)}><tbody>` +
        `<tr><td>Hold-out runs</td><td class="num">${h(integer(ho.entered))}</td></tr>` +
        `<tr><td>Converted, hold-out</td><td class="num">${h(percent(ho.conversionRate))}</td></tr>` +
        `<tr><td>Converted, treated</td><td class="num">${h(percent(ho.treated.conversionRate))}</td></tr>` +
        `<tr><td>Lift (treated − hold-out)</td><td class="num" ${testid(`${id}-holdout-lift`)}>${h(points(ho.liftPoints))}</td></tr>` +
        `<tr><td>95% CI</td><td class="num">${h(interval(ho.ci95))}</td></tr>` +
        `<tr><td>p-value</td><td class="num ${ho.pValue !== null && ho.pValue < 0.05 ? 'sig' : ''}">${h(pValue(ho.pValue))}</td></tr>` +
        `</tbody></table>`;

  return (
    `<section class="panel workflow" id="${h(id)}" ${testid(id)}>` +
    head +
    summary +
    `<div class="split wf"><div><h3>Funnel</h3>${funnel}</div><div>${kpiTable}<h3>Hold-out</h3>${holdout || '<p class="empty">No hold-out runs in the period.</p>'}</div></div>` +
    `<h3>A/B results</h3>${variants}` +
    `</section>`
  );
}

// ---------------------------------------------------------------------------------------------

export interface DashboardView {
  data: DashboardData | null;
  from: string;
  to: string;
  quick: QuickRange[];
  error?: string;
}

function jsonForScript(value: unknown): string {
  // Inside <script type="application/json">: "<" must not open a tag ("</script>").
  return JSON.stringify(value).replace(/</g, '\\u003c').replace(/\u2028/g, '\\u2028').replace(/\u2029/g, '\\u2029');
}

export function dashboardPage(view: DashboardView, assets: DashboardAssets): string {
  const { data } = view;
  const toolbar = `<div class="toolbar">${rangeForm(view.from, view.to, view.quick)}` +
    (data
      ? `<a class="btn" href="/dashboard/export/recovery.csv?${h(rangeQuery(data.range.fromText, data.range.toText))}" download ${testid('csv-all')}>Download ledger (CSV, all currencies)</a>`
      : '') +
    `</div>`;
  if (!data) {
    return layout(
      'Recovered revenue · Lifeline',
      `<main><h1>Recovered revenue</h1>${toolbar}<div class="error" role="alert" ${testid('range-error')}>${h(view.error ?? 'Something went wrong')}</div></main>`,
      [],
      topBar(),
    );
  }

  const { recovery } = data;
  const months = monthsOf(data.range.from, data.range.to);
  const charts: ChartSpec[] = [];
  const currencies = recovery.currencies;
  const lastDay = isoDate(new Date(data.range.to.getTime() - 86_400_000));
  const intro =
    `<p class="note" ${testid('range-note')}>Recovery cases whose first failed payment is from <strong>${h(data.range.fromText)}</strong> to <strong>${h(lastDay)}</strong> (UTC dates, both included). ` +
    `Amounts are shown per currency and never added across currencies.</p>`;
  const nav =
    `<nav class="jump" ${testid('currency-nav')}>` +
    currencies.map((c) => `<a href="#cur-${h(c.currency)}">${h(c.currency.toUpperCase())}</a>`).join('') +
    `<a href="#workflows">Workflows</a><a href="#definitions">Definitions</a></nav>`;
  const sections =
    currencies.length === 0
      ? `<section class="panel"><p class="empty" ${testid('no-cases')}>No failed payments in this period.</p></section>`
      : currencies.map((c) => currencySection(c, recovery.monthly, months, data.openCases.get(c.currency), data.range, charts)).join('');
  const workflows =
    `<h1 id="workflows">Workflows</h1>` +
    (data.workflows.length === 0
      ? `<p class="empty">No workflows.</p>`
      : [...data.workflows]
          .sort((a, b) => Number(b.report.runs.entered > 0) - Number(a.report.runs.entered > 0) || a.summary.key.localeCompare(b.summary.key))
          .map((w) => workflowSection(w.summary.key, w.summary.paused, w.summary.version, w.report))
          .join(''));
  const workflowDefinition = data.workflows[0]?.report.definition ?? '';
  const definitions =
    `<section class="panel" id="definitions"><h2>Definitions</h2><p class="note">How every figure on this page is computed (the same text the report API returns).</p>` +
    `<details ${testid('definitions-recovery')}><summary>Recovery report</summary><pre class="definition">${h(recovery.definition)}</pre></details>` +
    (workflowDefinition ? `<details ${testid('definitions-workflow')}><summary>Workflow reports</summary><pre class="definition">${h(workflowDefinition)}</pre></details>` : '') +
    `</section>`;
  // Work parked after its bounded retries is money-path work that did not happen (a webhook
  // not projected, an email not sent): shown at the top until someone replays it.
  const parked = data.deadLetters.filter((d) => d.count > 0);
  const deadLetters = parked.length === 0
    ? ''
    : `<section class="panel" id="dead-letters" role="alert" ${testid('dead-letters')}><h2>Work needing attention</h2>` +
      `<p class="note">${h(String(parked.reduce((n, d) => n + d.count, 0)))} item(s) parked after repeated failures: ` +
      parked.map((d) => `<code>${h(d.queue)}</code> ${h(String(d.count))}`).join(', ') +
      `. List them with <code>GET /v1/admin/dead-letters</code> and replay them with <code>POST /v1/admin/dead-letters/replay</code> once the cause is fixed.</p></section>`;
  const payload = `<script type="application/json" id="dashboard-data">${jsonForScript({ locale: LOCALE, charts })}</script>`;
  return layout(
    'Recovered revenue · Lifeline',
    `<main><h1>Recovered revenue</h1>${toolbar}${deadLetters}${intro}${nav}${sections}${workflows}${definitions}</main>${payload}`,
    [assets.chart.url, assets.client.url],
    topBar(),
  );
}
