// Load generation, on 127.0.0.1 only and bounded in time:
// - saturate(): autocannon (closed loop, N keep-alive connections), warm-up then a timed run;
//   every request comes from `next()` (autocannon's setupRequest), so ids and signatures are
//   fresh per request.
// - paced(): an open-loop generator at a fixed, evenly spread rate for latency. autocannon's
//   overallRate/connectionRate refill each connection's budget once per second, so its
//   requests leave in a burst at the start of every second; paced() spreads them evenly.
import http from 'node:http';
import autocannon from 'autocannon';
import type { HttpRequestSpec } from './payloads.ts';
import { cpuMeter, describeCpu, type CpuShare } from './cpu.ts';
import { progress } from './log.ts';

export interface SaturationResult {
  /** 2xx responses per second over the timed run */
  rps: number;
  ok: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  durationSec: number;
  latencyP50: number;
  latencyP99: number;
  statusCodes: Record<string, number>;
  cpu: CpuShare | null;
}

function assertLoopback(url: string): void {
  const host = new URL(url).hostname;
  if (host !== '127.0.0.1' && host !== 'localhost' && host !== '[::1]') throw new Error(`load generator only targets loopback, not ${host}`);
}

async function cannon(url: string, connections: number, durationSec: number, next: () => HttpRequestSpec, extra: Partial<autocannon.Options> = {}): Promise<autocannon.Result> {
  assertLoopback(url);
  return autocannon({
    url,
    connections,
    duration: durationSec,
    timeout: 30,
    ...extra,
    requests: [
      {
        // A fresh request (new ids, new signature) for every request autocannon sends.
        setupRequest: (req) => ({ ...req, ...next() }),
      },
    ],
  });
}

function summarize(r: autocannon.Result): SaturationResult {
  const statusCodes: Record<string, number> = {};
  for (const [code, v] of Object.entries((r as unknown as { statusCodeStats?: Record<string, { count: number }> }).statusCodeStats ?? {})) statusCodes[code] = v.count;
  const ok = r['2xx'];
  return {
    rps: ok / r.duration,
    ok,
    non2xx: r.non2xx,
    errors: r.errors,
    timeouts: r.timeouts,
    durationSec: r.duration,
    latencyP50: r.latency.p50,
    latencyP99: r.latency.p99,
    statusCodes,
    cpu: null,
  };
}

export async function saturate(options: {
  label: string;
  url: string;
  connections: number;
  warmupSec: number;
  durationSec: number;
  next: () => HttpRequestSpec;
  /** pid of the server child, for the CPU breakdown */
  serverPid: number;
}): Promise<SaturationResult> {
  const { label, url, connections, warmupSec, durationSec, next } = options;
  if (warmupSec > 0) {
    const w = summarize(await cannon(url, connections, warmupSec, next));
    progress(label, `warm-up ${warmupSec}s: ${Math.round(w.rps)} req/s (${w.non2xx} non-2xx, ${w.errors} errors)`);
  }
  const meter = cpuMeter(options.serverPid);
  const res = summarize(await cannon(url, connections, durationSec, next));
  res.cpu = meter();
  progress(label, `${durationSec}s x ${connections} connections: ${Math.round(res.rps)} req/s, p50 ${res.latencyP50} ms, p99 ${res.latencyP99} ms (${res.non2xx} non-2xx, ${res.errors} errors, codes ${JSON.stringify(res.statusCodes)})`);
  progress(label, describeCpu(res.cpu));
  return res;
}

/** autocannon with overallRate (for comparison with paced(): it sends in per-second bursts). */
export async function autocannonAtRate(options: { label: string; url: string; connections: number; rate: number; durationSec: number; next: () => HttpRequestSpec; serverPid: number }): Promise<SaturationResult> {
  const meter = cpuMeter(options.serverPid);
  const res = summarize(await cannon(options.url, options.connections, options.durationSec, options.next, { overallRate: options.rate }));
  res.cpu = meter();
  progress(options.label, `autocannon overallRate ${options.rate}/s, ${options.connections} connections: ${Math.round(res.rps)} req/s, p50 ${res.latencyP50} ms, p99 ${res.latencyP99} ms (1 ms resolution)`);
  return res;
}

export interface PacedResult {
  targetRate: number;
  achievedRate: number;
  sent: number;
  ok: number;
  failed: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  cpu: CpuShare | null;
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

/**
 * Open loop: request i is due at start + i/rate and is sent then whether or not earlier ones
 * have answered (up to maxSockets in flight; more wait in the agent's queue, and that wait
 * counts). Latency = response end − send time, in ms with µs resolution.
 */
export async function paced(options: { label: string; url: string; rate: number; warmupSec: number; durationSec: number; maxSockets: number; next: () => HttpRequestSpec; serverPid: number }): Promise<PacedResult> {
  assertLoopback(options.url);
  const target = new URL(options.url);
  const agent = new http.Agent({ keepAlive: true, maxSockets: options.maxSockets });

  const phase = (durationSec: number) =>
    new Promise<PacedResult>((resolve) => {
      const total = Math.round(options.rate * durationSec);
      const latencies = new Float64Array(total);
      let sent = 0;
      let done = 0;
      let ok = 0;
      let failed = 0;
      const start = performance.now();
      const finish = () => {
        const elapsed = (performance.now() - start) / 1000;
        const measured = latencies.slice(0, ok).sort();
        resolve({
          targetRate: options.rate,
          achievedRate: done / elapsed,
          sent,
          ok,
          failed,
          p50: percentile(measured, 50),
          p90: percentile(measured, 90),
          p99: percentile(measured, 99),
          max: measured.length ? measured[measured.length - 1]! : NaN,
          cpu: null,
        });
      };
      const fire = () => {
        const spec = options.next();
        const t0 = performance.now();
        sent++;
        const req = http.request(
          { agent, host: target.hostname, port: target.port, method: spec.method, path: spec.path, headers: { ...spec.headers, 'content-length': Buffer.byteLength(spec.body) } },
          (res) => {
            res.resume();
            res.on('end', () => {
              const ms = performance.now() - t0;
              if (res.statusCode! >= 200 && res.statusCode! < 300) latencies[ok++] = ms;
              else failed++;
              if (++done === total) finish();
            });
          },
        );
        req.on('error', () => {
          failed++;
          if (++done === total) finish();
        });
        req.end(spec.body);
      };
      const tick = () => {
        const due = Math.min(total, Math.floor(((performance.now() - start) / 1000) * options.rate) + 1);
        while (sent < due) fire();
        if (sent < total) setTimeout(tick, 1);
      };
      tick();
    });

  if (options.warmupSec > 0) {
    const w = await phase(options.warmupSec);
    progress(options.label, `paced warm-up ${options.warmupSec}s at ${options.rate}/s: p50 ${w.p50.toFixed(2)} ms, p99 ${w.p99.toFixed(2)} ms`);
  }
  const meter = cpuMeter(options.serverPid);
  const res = await phase(options.durationSec);
  res.cpu = meter();
  agent.destroy();
  progress(options.label, `paced ${options.durationSec}s at ${options.rate}/s (achieved ${Math.round(res.achievedRate)}/s, ${res.failed} failed): p50 ${res.p50.toFixed(2)} ms, p90 ${res.p90.toFixed(2)} ms, p99 ${res.p99.toFixed(2)} ms, max ${res.max.toFixed(1)} ms`);
  progress(options.label, describeCpu(res.cpu));
  return res;
}
