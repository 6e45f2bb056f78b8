// Summarize a V8 .cpuprofile (from `npm run bench -- --cpu-prof`): self time by function and by
// package/file, so a profile can be read without DevTools.
//   node bench/profile-summary.ts bench/results/profiles/<file>.cpuprofile [top=25] [function]
//        [--window=FROM:TO] [--timeline] [--inclusive[=filter]] [--diff=A.cpuprofile:unitsA:unitsB]
// A child's profile covers its whole life, and start-up (module loading, template compilation)
// outweighs a 10 s load phase: --timeline prints the busy time per second of the profile, and
// --window=FROM:TO (seconds from the profile's start, either side may be empty) keeps only the
// samples in that span, e.g. the steady state of the load. --inclusive lists functions by total
// time (self + callees), optionally only those whose name or file contains `filter`. --diff
// compares <file> with profile A per unit of work (e.g. requests served while each was taken).
import { readFileSync } from 'node:fs';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: Node[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

/** Seconds from the profile's start, [from, to). */
export interface Window {
  from: number;
  to: number;
}

const IDLE = new Set(['(idle)', '(program)', '(garbage collector)']);

/**
 * Self time (µs) per node id, counting only the samples inside `window`. Sample i is taken at
 * startTime + sum(timeDeltas[0..i]); its time is the delta to the next sample (V8's convention
 * in DevTools is the delta before it; either way one sample interval, ~1 ms).
 */
function selfTimes(p: Profile, window?: Window): Map<number, number> {
  const self = new Map<number, number>();
  let t = 0;
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i] ?? 0;
    if (window && (t < window.from * 1e6 || t >= window.to * 1e6)) continue;
    const id = p.samples[i]!;
    self.set(id, (self.get(id) ?? 0) + (p.timeDeltas[i + 1] ?? 0));
  }
  return self;
}

/** Busy (not idle) ms per second of the profile: where the load phases are. */
export function timeline(file: string): string {
  const p = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const idleIds = new Set(p.nodes.filter((n) => n.callFrame.functionName === '(idle)').map((n) => n.id));
  const busy: number[] = [];
  let t = 0;
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i] ?? 0;
    const s = Math.floor(t / 1e6);
    busy[s] ??= 0;
    if (!idleIds.has(p.samples[i]!)) busy[s] += (p.timeDeltas[i + 1] ?? 0) / 1000;
  }
  return Array.from(busy, (ms, s) => `${String(s).padStart(4)} s  ${String(Math.round(ms ?? 0)).padStart(5)} ms busy  ${'#'.repeat(Math.round((ms ?? 0) / 25))}`).join('\n');
}

function where(url: string): string {
  if (!url) return '(native/vm)';
  const nm = url.lastIndexOf('node_modules/');
  if (nm >= 0) {
    const rest = url.slice(nm + 'node_modules/'.length).split('/');
    return rest[0]!.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]!;
  }
  if (url.startsWith('node:')) return 'node core';
  const src = url.indexOf('/src/');
  if (src >= 0) return url.slice(src + 1).replace(/^file:\/\//, '');
  const bench = url.indexOf('/bench/');
  if (bench >= 0) return url.slice(bench + 1);
  return url;
}

/** Self time (µs) by function and by package / file. */
function selfByKey(p: Profile, window?: Window): { fn: Map<string, number>; pkg: Map<string, number>; total: number; idle: number } {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const fn = new Map<string, number>();
  const pkg = new Map<string, number>();
  let total = 0;
  let idle = 0;
  for (const [id, us] of selfTimes(p, window)) {
    const n = byId.get(id)!;
    const name = n.callFrame.functionName || '(anonymous)';
    const w = where(n.callFrame.url);
    total += us;
    if (name === '(idle)') idle += us;
    const key = IDLE.has(name) ? name : `${name}  ${w}:${n.callFrame.lineNumber + 1}`;
    fn.set(key, (fn.get(key) ?? 0) + us);
    const group = IDLE.has(name) ? name : w;
    pkg.set(group, (pkg.get(group) ?? 0) + us);
  }
  return { fn, pkg, total, idle };
}

/**
 * Where profile `b` spends more than profile `a`, per unit of work: both self-time tables are
 * divided by their `per` counts (e.g. requests served in each profiled phase), in µs.
 */
export function diff(fileA: string, perA: number, fileB: string, perB: number, top = 30, window?: Window): string {
  const a = selfByKey(JSON.parse(readFileSync(fileA, 'utf8')) as Profile, window);
  const b = selfByKey(JSON.parse(readFileSync(fileB, 'utf8')) as Profile, window);
  const table = (ma: Map<string, number>, mb: Map<string, number>) =>
    [...new Set([...ma.keys(), ...mb.keys()])]
      .filter((k) => k !== '(idle)')
      .map((k) => [k, (mb.get(k) ?? 0) / perB - (ma.get(k) ?? 0) / perA] as const)
      .sort((x, y) => Math.abs(y[1]) - Math.abs(x[1]))
      .slice(0, top)
      .map(([k, d]) => `  ${(d >= 0 ? '+' : '') + d.toFixed(1).padStart(7)} µs  ${k}`);
  const busy = (x: typeof a, per: number) => ((x.total - x.idle) / per).toFixed(1);
  return [
    `busy per unit: ${busy(a, perA)} µs (${fileA}) -> ${busy(b, perB)} µs (${fileB})`,
    '',
    'by package / file (b - a, per unit):',
    ...table(a.pkg, b.pkg),
    '',
    'by function (b - a, per unit):',
    ...table(a.fn, b.fn),
  ].join('\n');
}

export function summarize(file: string, top = 25, window?: Window): string {
  const p = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const { fn, pkg, total, idle } = selfByKey(p, window);
  const pct = (us: number) => `${((100 * us) / total).toFixed(1).padStart(5)}%  ${(us / 1000).toFixed(0).padStart(7)} ms`;
  const span = window ? ` in ${window.from}..${Number.isFinite(window.to) ? window.to : 'end'} s` : '';
  const lines = [`${file}: ${(total / 1e6).toFixed(1)} s sampled${span}, ${((total - idle) / 1e6).toFixed(2)} s busy`, '', 'self time by package / file:'];
  for (const [k, v] of [...pkg].sort((a, b) => b[1] - a[1]).slice(0, top)) lines.push(`  ${pct(v)}  ${k}`);
  lines.push('', 'self time by function:');
  for (const [k, v] of [...fn].sort((a, b) => b[1] - a[1]).slice(0, top)) lines.push(`  ${pct(v)}  ${k}`);
  return lines.join('\n');
}

/**
 * Total time by function: its own samples plus its callees' (each sample counted once per
 * function on its stack), e.g. how much a hook costs with everything it calls.
 */
export function inclusive(file: string, top = 40, window?: Window, filter?: string): string {
  const p = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const self = selfTimes(p, window);
  const totals = new Map<string, number>();
  let all = 0;
  for (const [id, us] of self) {
    if (IDLE.has(byId.get(id)!.callFrame.functionName)) continue;
    all += us;
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const f = byId.get(cur)!.callFrame;
      if (!f.url && !f.functionName) continue;
      const key = `${f.functionName || '(anon)'}  ${f.url.split('/').slice(-2).join('/')}:${f.lineNumber + 1}`;
      if (seen.has(key)) continue;
      seen.add(key);
      totals.set(key, (totals.get(key) ?? 0) + us);
    }
  }
  const rows = [...totals].filter(([k]) => !filter || k.includes(filter)).sort((a, b) => b[1] - a[1]).slice(0, top);
  return [`total (self + callees) of ${(all / 1000).toFixed(0)} ms busy:`, ...rows.map(([k, v]) => `  ${((100 * v) / all).toFixed(1).padStart(5)}%  ${(v / 1000).toFixed(0).padStart(7)} ms  ${k}`)].join('\n');
}

/** The call stacks (innermost `depth` frames above it) that spend the most self time in functions named `name`. */
export function callers(file: string, name: string, depth = 6, top = 8, window?: Window): string {
  const p = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const self = selfTimes(p, window);
  const stacks = new Map<string, number>();
  for (const [id, us] of self) {
    if (byId.get(id)!.callFrame.functionName !== name) continue;
    const frames: string[] = [];
    let cur = parent.get(id);
    while (cur !== undefined && frames.length < depth) {
      const f = byId.get(cur)!.callFrame;
      frames.push(`${f.functionName || '(anon)'}@${f.url.split('/').slice(-2).join('/')}:${f.lineNumber + 1}`);
      cur = parent.get(cur);
    }
    const key = frames.join(' < ');
    stacks.set(key, (stacks.get(key) ?? 0) + us);
  }
  return [...stacks].sort((a, b) => b[1] - a[1]).slice(0, top).map(([k, v]) => `${(v / 1000).toFixed(0).padStart(7)} ms  ${name} < ${k}`).join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const args = process.argv.slice(2);
  const flags = args.filter((a) => a.startsWith('--'));
  const [file, top, fnName] = args.filter((a) => !a.startsWith('--'));
  let window: Window | undefined;
  const w = flags.find((f) => f.startsWith('--window='));
  if (w) {
    const [from, to] = w.slice('--window='.length).split(':');
    window = { from: from ? Number(from) : 0, to: to ? Number(to) : Infinity };
  }
  if (!file || (window && (!Number.isFinite(window.from) || Number.isNaN(window.to)))) {
    console.error('usage: node bench/profile-summary.ts <file.cpuprofile> [top] [function name: show its callers] [--window=FROM:TO seconds] [--timeline] [--inclusive[=filter]] [--diff=A.cpuprofile:unitsA:unitsB]');
    process.exit(2);
  }
  const inc = flags.find((f) => f.startsWith('--inclusive'));
  const against = flags.find((f) => f.startsWith('--diff='));
  if (flags.includes('--timeline')) console.log(timeline(file));
  else if (against) {
    // --diff=A.cpuprofile:perA:perB — what <file> (b) spends more than A, per unit of work.
    const [fileA, perA, perB] = against.slice('--diff='.length).split(':');
    console.log(diff(fileA!, Number(perA ?? 1), file, Number(perB ?? 1), Number(top ?? 30), window));
  }
  else if (inc) console.log(inclusive(file, Number(top ?? 40), window, inc.split('=')[1]));
  else console.log(fnName ? callers(file, fnName, 7, Number(top ?? 8), window) : summarize(file, Number(top ?? 25), window));
}
