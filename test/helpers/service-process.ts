// Lifeline as a real process (`node src/server.ts`) in its own process group, for the outage
// and crash suites: started against a given database, killed with SIGKILL (the whole group, as
// an OOM killer or a lost machine would), restarted on the same database. Its pino log lines
// are kept (parsed) so a test can count them.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import Stripe from 'stripe';
import { freePort } from './stoppable-postgres.ts';

export const PROCESS_WEBHOOK_SECRET = 'whsec_process_test_secret';
export const PROCESS_WRITE_KEY = 'wk_process_write_key';
export const PROCESS_ADMIN_TOKEN = 'admin_process_token';
export const PROCESS_RESEND_WEBHOOK_SECRET = `whsec_${Buffer.from('process-resend-webhook-secret').toString('base64')}`;

export interface LogLine {
  level: number;
  msg?: string;
  reqId?: string;
  [key: string]: unknown;
}

export interface ServiceProcess {
  url: string;
  port: number;
  /** pid of the running incarnation (its process group id too) */
  pid: number | null;
  /** log lines of every incarnation, in order */
  logs: LogLine[];
  /** stderr of every incarnation (should stay empty) */
  stderr: string[];
  /** how the last incarnation ended (null while running) */
  exit(): { code: number | null; signal: string | null } | null;
  start(): Promise<void>;
  kill9(): Promise<void>;
  stop(): Promise<{ code: number | null; signal: string | null }>;
}

export function serviceProcess(options: { databaseUrl: string; resendUrl: string; env?: Record<string, string> }): ServiceProcess {
  let child: ChildProcess | null = null;
  let exited: { code: number | null; signal: string | null } | null = null;
  let exitPromise: Promise<{ code: number | null; signal: string | null }> = Promise.resolve({ code: null, signal: null });
  const logs: LogLine[] = [];
  const stderr: string[] = [];
  let port = 0;
  const self: ServiceProcess = {
    get url() {
      return `http://127.0.0.1:${port}`;
    },
    get port() {
      return port;
    },
    get pid() {
      return child && !exited ? child.pid ?? null : null;
    },
    logs,
    stderr,
    exit: () => exited,
    async start() {
      if (!port) port = await freePort();
      exited = null;
      child = spawn(process.execPath, ['src/server.ts'], {
        // its own process group: kill9 takes the whole group, as a container runtime would
        detached: true,
        stdio: ['ignore', 'pipe', 'pipe'],
        env: {
          PATH: process.env.PATH ?? '',
          DATABASE_URL: options.databaseUrl,
          PORT: String(port),
          HOST: '127.0.0.1',
          STRIPE_WEBHOOK_SECRET: PROCESS_WEBHOOK_SECRET,
          LIFELINE_WRITE_KEY: PROCESS_WRITE_KEY,
          LIFELINE_ADMIN_TOKEN: PROCESS_ADMIN_TOKEN,
          RESEND_API_KEY: 're_process_test',
          RESEND_BASE_URL: options.resendUrl,
          RESEND_WEBHOOK_SECRET: PROCESS_RESEND_WEBHOOK_SECRET,
          RESEND_RATE_LIMIT: '50',
          QUIET_HOURS: 'off',
          LOG_LEVEL: 'info',
          DB_POOL_MAX: '5',
          ENGINE_TICK_MS: '200',
          // a claim orphaned by a kill or an outage is taken over after 15 s, not 2 min
          EMAIL_CLAIM_MS: '15000',
          ...options.env,
        },
      });
      const c = child;
      exitPromise = new Promise((resolve) =>
        c.on('exit', (code, signal) => {
          exited = { code, signal };
          resolve(exited);
        }),
      );
      createInterface({ input: c.stdout! }).on('line', (line) => {
        try {
          logs.push(JSON.parse(line) as LogLine);
        } catch {
          logs.push({ level: 30, msg: line });
        }
      });
      c.stderr!.on('data', (d) => stderr.push(String(d)));
      const deadline = Date.now() + 60_000;
      let lastReady = 'no answer';
      while (Date.now() < deadline) {
        if (exited) throw new Error(`lifeline exited during start-up (${JSON.stringify(exited)}): ${stderr.join('').slice(-2000)}`);
        try {
          const res = await fetch(`${self.url}/readyz`);
          if (res.status === 200) return;
          lastReady = `${res.status} ${await res.text()}`;
        } catch {
          // not listening yet
        }
        await sleep(100);
      }
      const lastLines = logs.slice(-12).map((l) => `${l.level} ${l.msg ?? ''} ${l.err ? JSON.stringify(l.err).slice(0, 300) : ''}`);
      throw new Error(`lifeline did not become ready within 60 s (/readyz: ${lastReady}); its last log lines:\n${lastLines.join('\n')}\nstderr: ${stderr.join('').slice(-1000)}`);
    },
    async kill9() {
      if (!child || exited) return;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // already gone
      }
      await exitPromise;
    },
    async stop() {
      if (!child || exited) return exited ?? { code: null, signal: null };
      child.kill('SIGTERM');
      const timer = setTimeout(() => void self.kill9(), 30_000);
      const result = await exitPromise;
      clearTimeout(timer);
      return result;
    },
  };
  return self;
}

// ---------------------------------------------------------------------------------------------
// Senders, as Stripe, Segment-style SDKs and Resend deliver: real HTTP

export async function postStripe(baseUrl: string, event: object): Promise<Response> {
  const payload = JSON.stringify(event);
  const header = Stripe.webhooks.generateTestHeaderString({ payload, secret: PROCESS_WEBHOOK_SECRET });
  return fetch(`${baseUrl}/webhooks/stripe`, { method: 'POST', headers: { 'content-type': 'application/json', 'stripe-signature': header }, body: payload });
}

export async function postProduct(baseUrl: string, path: string, body: object): Promise<Response> {
  return fetch(`${baseUrl}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${PROCESS_WRITE_KEY}` }, body: JSON.stringify(body) });
}

export async function postResendWebhook(baseUrl: string, event: object, svixId: string): Promise<Response> {
  const payload = JSON.stringify(event);
  const timestamp = String(Math.floor(Date.now() / 1000));
  const key = Buffer.from(PROCESS_RESEND_WEBHOOK_SECRET.replace(/^whsec_/, ''), 'base64');
  const signature = createHmac('sha256', key).update(`${svixId}.${timestamp}.${payload}`).digest('base64');
  return fetch(`${baseUrl}/webhooks/resend`, {
    method: 'POST',
    headers: { 'svix-id': svixId, 'svix-timestamp': timestamp, 'svix-signature': `v1,${signature}`, 'content-type': 'application/json' },
    body: payload,
  });
}
