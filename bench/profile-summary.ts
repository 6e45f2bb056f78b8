// Summarize a V8 .cpuprofile (from `npm run bench -- --cpu-prof`): self time by function and by
// package/file, so a profile can be read without DevTools.
//   node bench/profile-summary.ts bench/results/profiles/<file>.cpuprofile [top=25]
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

export function summarize(file: string, top = 25): string {
  const p = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  p.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (p.timeDeltas[i] ?? 0)));
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  const where = (url: string): string => {
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
  };
  const fn = new Map<string, number>();
  const pkg = new Map<string, number>();
  for (const [id, us] of self) {
    const n = byId.get(id)!;
    const name = n.callFrame.functionName || '(anonymous)';
    const w = where(n.callFrame.url);
    const key = ['(idle)', '(program)', '(garbage collector)'].includes(name) ? name : `${name}  ${w}:${n.callFrame.lineNumber + 1}`;
    fn.set(key, (fn.get(key) ?? 0) + us);
    const group = ['(idle)', '(program)', '(garbage collector)'].includes(name) ? name : w;
    pkg.set(group, (pkg.get(group) ?? 0) + us);
  }
  const pct = (us: number) => `${((100 * us) / total).toFixed(1).padStart(5)}%  ${(us / 1000).toFixed(0).padStart(7)} ms`;
  const lines = [`${file}: ${(total / 1e6).toFixed(1)} s sampled`, '', 'self time by package / file:'];
  for (const [k, v] of [...pkg].sort((a, b) => b[1] - a[1]).slice(0, top)) lines.push(`  ${pct(v)}  ${k}`);
  lines.push('', 'self time by function:');
  for (const [k, v] of [...fn].sort((a, b) => b[1] - a[1]).slice(0, top)) lines.push(`  ${pct(v)}  ${k}`);
  return lines.join('\n');
}

/** The call stacks (innermost `depth` frames above it) that spend the most self time in functions named `name`. */
export function callers(file: string, name: string, depth = 6, top = 8): string {
  const p = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const self = new Map<number, number>();
  p.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (p.timeDeltas[i] ?? 0)));
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
  const [file, top, fnName] = process.argv.slice(2);
  if (!file) {
    console.error('usage: node bench/profile-summary.ts <file.cpuprofile> [top] [function name: show its callers]');
    process.exit(2);
  }
  console.log(fnName ? callers(file, fnName, 7, Number(top ?? 8)) : summarize(file, Number(top ?? 25)));
}
