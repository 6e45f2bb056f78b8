// Static files of the dashboard, served from our own origin (no CDN; the page's CSP allows
// scripts from 'self' only): Chart.js's UMD build from node_modules and our small client script.
// Both are read once at start-up; their URLs carry a content hash, so they can be cached for a
// year ("immutable"). The plain names answer too, with a short cache.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export interface Asset {
  /** the URL the page uses (hashed) */
  url: string;
  /** the plain URL (same body, short cache) */
  plainUrl: string;
  body: Buffer;
  contentType: string;
  etag: string;
}

const JS = 'text/javascript; charset=utf-8';

function asset(name: string, body: Buffer, contentType: string): Asset {
  const hash = createHash('sha256').update(body).digest('hex');
  const dot = name.indexOf('.');
  return {
    url: `/dashboard/assets/${name.slice(0, dot)}.${hash.slice(0, 12)}${name.slice(dot)}`,
    plainUrl: `/dashboard/assets/${name}`,
    body,
    contentType,
    etag: `"${hash.slice(0, 32)}"`,
  };
}

export interface DashboardAssets {
  chart: Asset;
  client: Asset;
  all: Asset[];
}

let cached: DashboardAssets | null = null;

export function loadAssets(): DashboardAssets {
  if (cached) return cached;
  const require = createRequire(import.meta.url);
  // chart.js's "require" export is dist/chart.cjs; the browser build sits beside it.
  const dist = path.dirname(require.resolve('chart.js'));
  const chartSource = readFileSync(path.join(dist, 'chart.umd.min.js'), 'utf8')
    // the source map is not served
    .replace(/\n?\/\/# sourceMappingURL=\S+\s*$/, '\n');
  const here = path.dirname(fileURLToPath(import.meta.url));
  const clientSource = readFileSync(path.join(here, 'client.js'));
  const chart = asset('chart.umd.js', Buffer.from(chartSource), JS);
  const client = asset('dashboard.js', clientSource, JS);
  cached = { chart, client, all: [chart, client] };
  return cached;
}
