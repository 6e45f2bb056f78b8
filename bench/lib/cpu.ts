// Where the CPU went during a measured phase, from /proc (Linux): the server child, the load
// generator (this process), PostgreSQL (the backends connected to the bench database plus the
// server's shared background processes: WAL writer, checkpointer, autovacuum…) and everything
// else, including backends of other databases. The machine is shared (2 cores): "other" shows
// when something outside the benchmark competed, which makes that phase's figures unreliable.
import { readdirSync, readFileSync } from 'node:fs';

export interface CpuShare {
  /** cores in use on average (1.0 = one core busy) */
  server: number;
  loadgen: number;
  postgres: number;
  other: number;
  idle: number;
}

interface Snapshot {
  at: number;
  busy: number;
  idle: number;
  server: number;
  loadgen: number;
  postgres: Map<string, number>;
}

const TICK = 100; // USER_HZ on Linux

function procTicks(pid: number | string): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[11]) + Number(fields[12]); // utime + stime
  } catch {
    return 0;
  }
}

let benchDatabase: string | null = null;

/** Count only this database's backends (and the shared background processes) as "postgres". */
export function setBenchDatabase(name: string): void {
  benchDatabase = name;
}

// A backend's title: "postgres: <user> <database> <host>(<port>) <activity>".
const BACKEND = /^postgres: \S+ (\S+) \S*\(\d+\)/;

/** ticks per PostgreSQL process that belongs to the benchmark (pid → ticks) */
function postgresTicks(): Map<string, number> {
  const out = new Map<string, number>();
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const comm = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
      if (comm !== 'postgres' && !comm.startsWith('postgres:')) continue;
      const title = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ').trim();
      const backend = BACKEND.exec(title);
      if (backend && benchDatabase && backend[1] !== benchDatabase) continue; // another database's session
      out.set(pid, procTicks(pid));
    } catch {
      /* gone */
    }
  }
  return out;
}

function postgresDelta(a: Map<string, number>, b: Map<string, number>): number {
  let sum = 0;
  for (const [pid, ticks] of b) sum += ticks - (a.get(pid) ?? 0);
  return sum;
}

function snapshot(serverPid: number | null): Snapshot | null {
  try {
    const cpu = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    const idle = cpu[3]! + (cpu[4] ?? 0);
    const total = cpu.reduce((a, b) => a + b, 0);
    return { at: performance.now(), busy: total - idle, idle, server: serverPid ? procTicks(serverPid) : 0, loadgen: procTicks(process.pid), postgres: postgresTicks() };
  } catch {
    return null; // not Linux
  }
}

/** Start measuring; call the returned function at the end of the phase. */
export function cpuMeter(serverPid: number | null): () => CpuShare | null {
  const a = snapshot(serverPid);
  return () => {
    const b = snapshot(serverPid);
    if (!a || !b) return null;
    const sec = (b.at - a.at) / 1000;
    const cores = (ticks: number) => ticks / TICK / sec;
    const server = cores(b.server - a.server);
    const loadgen = cores(b.loadgen - a.loadgen);
    const postgres = Math.max(0, cores(postgresDelta(a.postgres, b.postgres))); // a backend that exited takes its ticks along
    const busy = cores(b.busy - a.busy);
    return { server, loadgen, postgres, other: Math.max(0, busy - server - loadgen - postgres), idle: cores(b.idle - a.idle) };
  };
}

export function describeCpu(c: CpuShare | null): string {
  if (!c) return 'cpu n/a';
  return `cpu cores: server ${c.server.toFixed(2)}, loadgen ${c.loadgen.toFixed(2)}, postgres ${c.postgres.toFixed(2)}, other ${c.other.toFixed(2)}, idle ${c.idle.toFixed(2)}`;
}

/** Busy cores on the machine over `ms`, to see whether it is quiet before a run. */
export async function machineBusy(ms = 2000): Promise<number | null> {
  const a = snapshot(null);
  await new Promise((r) => setTimeout(r, ms));
  const b = snapshot(null);
  if (!a || !b) return null;
  return (b.busy - a.busy) / TICK / ((b.at - a.at) / 1000);
}
