// Result rows, the final table (markdown, so it can be pasted into BENCHMARKS.md) and the JSON file.
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { CpuShare } from './cpu.ts';

export type Holds = 'yes' | 'no' | 'n/a';

export interface Row {
  scenario: string;
  figure: string;
  value: number;
  unit: string;
  /** the baseline figure this row is compared with, when there is one */
  baseline: number | null;
  /** value / baseline */
  ratio: number | null;
  /** human-readable target, e.g. "ratio ≥ 0.8" or "≤ 10 ms" */
  target: string | null;
  holds: Holds;
}

/** One measured phase: where the CPU went (cores in use on average) and what was measured. */
export interface Phase {
  scenario: string;
  phase: string;
  cpu: CpuShare | null;
  [key: string]: unknown;
}

export class Report {
  readonly rows: Row[] = [];
  readonly notes: string[] = [];
  readonly phases: Phase[] = [];

  phase(scenario: string, phase: string, cpu: CpuShare | null, details: Record<string, unknown> = {}): void {
    this.phases.push({ scenario, phase, cpu, ...details });
  }

  /** A plain figure (no target). */
  info(scenario: string, figure: string, value: number, unit: string): Row {
    return this.push({ scenario, figure, value, unit, baseline: null, ratio: null, target: null, holds: 'n/a' });
  }

  /**
   * A figure compared with a baseline measured in the same run: ratio = value / baseline (or the
   * given ratio, e.g. a median of per-round ratios), holds when ratio ≥ minRatio.
   */
  ratio(scenario: string, figure: string, value: number, unit: string, baseline: number, minRatio: number | null, givenRatio?: number): Row {
    const ratio = givenRatio ?? (baseline > 0 ? value / baseline : null);
    const holds: Holds = minRatio === null || ratio === null ? 'n/a' : ratio >= minRatio ? 'yes' : 'no';
    return this.push({ scenario, figure, value, unit, baseline, ratio, target: minRatio === null ? null : `ratio ≥ ${minRatio}`, holds });
  }

  /**
   * A cost (a time, where lower is better) compared with a baseline measured in the same run:
   * ratio = value / baseline (or the given ratio), holds when ratio ≤ maxRatio.
   */
  ratioAtMost(scenario: string, figure: string, value: number, unit: string, baseline: number, maxRatio: number, givenRatio?: number): Row {
    const ratio = givenRatio ?? (baseline > 0 ? value / baseline : null);
    const holds: Holds = ratio === null ? 'n/a' : ratio <= maxRatio ? 'yes' : 'no';
    return this.push({ scenario, figure, value, unit, baseline, ratio, target: `ratio ≤ ${maxRatio}`, holds });
  }

  /** A figure with an absolute upper bound (e.g. a latency). */
  atMost(scenario: string, figure: string, value: number, unit: string, max: number): Row {
    return this.push({ scenario, figure, value, unit, baseline: null, ratio: null, target: `≤ ${max} ${unit}`, holds: value <= max ? 'yes' : 'no' });
  }

  note(text: string): void {
    this.notes.push(text);
  }

  private push(row: Row): Row {
    this.rows.push(row);
    return row;
  }
}

function num(v: number | null, unit = ''): string {
  if (v === null) return '';
  const digits = Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : 2;
  const s = v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
  return unit ? `${s} ${unit}` : s;
}

export function markdownTable(rows: Row[]): string {
  const head = ['scenario', 'figure', 'value', 'baseline', 'ratio', 'target', 'holds'];
  const body = rows.map((r) => [r.scenario, r.figure, num(r.value, r.unit), num(r.baseline, r.baseline === null ? '' : r.unit), r.ratio === null ? '' : r.ratio.toFixed(2), r.target ?? '', r.holds]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  return [line(head), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...body.map(line)].join('\n');
}

export async function writeJson(file: string, data: unknown): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, `${JSON.stringify(data, null, 2)}\n`);
}

export function markdownCpuTable(phases: Phase[]): string {
  const head = ['scenario', 'phase', 'server', 'load gen', 'postgres', 'other', 'idle', 'server CPU per request'];
  const f = (v: number | undefined) => (v === undefined ? '' : v.toFixed(2));
  const perReq = (p: Phase) => {
    const rate = (p.rps ?? p.achieved) as number | undefined;
    return p.cpu && rate ? `${Math.round((p.cpu.server / rate) * 1e6)} µs` : '';
  };
  const other = (p: Phase) => (p.cpu ? `${f(p.cpu.other)}${p.cpu.other > 0.25 ? ' noisy' : ''}` : '');
  const body = phases.map((p) => [p.scenario, p.phase, f(p.cpu?.server), f(p.cpu?.loadgen), f(p.cpu?.postgres), other(p), f(p.cpu?.idle), perReq(p)]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  return [line(head), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...body.map(line)].join('\n');
}
