// Servers under test run in child processes, so the load generator (this process) does not
// share an event loop with them. A child reports {type:'ready', port} over IPC once it listens
// and exits after {type:'stop'} (or when this process goes away).
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { progress } from './log.ts';

export const BENCH_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');

export interface ChildServer {
  label: string;
  pid: number;
  port: number;
  url: string;
  /**
   * graceful (default): the child runs its own shutdown (Lifeline: service.stop()). Not
   * graceful: the child exits at once (still writing its CPU profile), e.g. to leave a backlog
   * unprocessed instead of waiting for the worker.
   */
  stop(options?: { graceful?: boolean }): Promise<void>;
}

const live = new Set<ChildProcess>();

/** Kill every child still running (used on SIGINT and after a failure). */
export function killChildren(): void {
  for (const c of live) c.kill('SIGKILL');
  live.clear();
}

export async function startChild(options: {
  label: string;
  /** script under bench/ */
  script: string;
  env: Record<string, string>;
  /** write a V8 CPU profile of the child to this folder */
  cpuProfDir?: string | null;
  readyTimeoutMs?: number;
}): Promise<ChildServer> {
  const args: string[] = [];
  if (options.cpuProfDir) {
    mkdirSync(options.cpuProfDir, { recursive: true });
    args.push('--cpu-prof', `--cpu-prof-dir=${options.cpuProfDir}`, `--cpu-prof-name=${options.label}-${Date.now()}.cpuprofile`);
  }
  args.push(path.join(BENCH_DIR, options.script));
  const child = spawn(process.execPath, args, {
    env: { ...process.env, ...options.env },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  live.add(child);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => {
    live.delete(child);
    resolve(code);
  }));

  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${options.label}: not ready after ${options.readyTimeoutMs ?? 60_000} ms`)), options.readyTimeoutMs ?? 60_000);
    child.on('message', (m: { type?: string; port?: number; error?: string }) => {
      if (m?.type === 'ready') {
        clearTimeout(timer);
        resolve(m.port ?? 0);
      } else if (m?.type === 'error') {
        clearTimeout(timer);
        reject(new Error(`${options.label}: ${m.error}`));
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`${options.label}: exited with code ${code} before it was ready`));
    });
  });
  progress(options.label, `child pid ${child.pid} listening on 127.0.0.1:${port}`);

  return {
    label: options.label,
    pid: child.pid!,
    port,
    url: `http://127.0.0.1:${port}`,
    async stop(stopOptions = {}) {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.send({ type: 'stop', graceful: stopOptions.graceful ?? true });
      const timeout = setTimeout(() => child.kill('SIGKILL'), 60_000);
      const code = await exited;
      clearTimeout(timeout);
      if (code !== 0) progress(options.label, `child exited with code ${code}`);
    },
  };
}

/** For the child side: run `stop` on {type:'stop'} or when the parent disappears, then exit. */
export function onStopRequest(stop: () => Promise<void>): void {
  let stopping = false;
  const handler = () => {
    if (stopping) return;
    stopping = true;
    stop()
      .catch((err: unknown) => process.stderr.write(`stop failed: ${String(err)}\n`))
      .finally(() => process.exit(0));
  };
  process.on('message', (m: { type?: string; graceful?: boolean }) => {
    if (m?.type === 'stop' && m.graceful === false) process.exit(0);
    if (m?.type === 'stop') handler();
  });
  process.on('disconnect', handler);
}
