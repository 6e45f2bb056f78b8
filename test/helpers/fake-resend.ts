// A local stand-in for the Resend API (we cannot reach the real one): the real SDK talks to it
// through RESEND_BASE_URL. It records every request and can be scripted to answer 429/5xx/422,
// or to enforce a requests-per-second limit like Resend's.
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createHash, randomUUID } from 'node:crypto';

export interface RecordedRequest {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  body: unknown;
  at: number;
}

export interface ScriptedAnswer {
  status: number;
  headers?: Record<string, string>;
  body?: unknown;
  /** never answer (the request hangs until the client gives up) */
  hang?: boolean;
  /** close the connection without an answer (nothing accepted) */
  drop?: boolean;
  /** a 2xx: accept at once (the emails are sent, the key remembered), answer this much later */
  delayMs?: number;
}

export interface FakeResend {
  url: string;
  requests: RecordedRequest[];
  /** emails accepted, by Idempotency-Key-aware logic (a replayed key returns the same ids) */
  accepted: { id: string; to: string; subject: string; headers: Record<string, string>; html: string; text: string; idempotencyKey: string | null; template?: string }[];
  script(...answers: ScriptedAnswer[]): void;
  /** drops scripted answers not used yet */
  clearScript(): void;
  close(): Promise<void>;
}

/**
 * Benchmarks: only the fields the fake needs (recipient, message id), found without parsing the
 * 2 MB of HTML a batch carries. Parsing it blocked this process long enough to stamp the next
 * request's arrival late, so two requests sent 100 ms apart looked 1 ms apart to the rate window.
 * (A key like "to":[ cannot occur inside a JSON string, where quotes are escaped.)
 */
function leanParse(raw: string): unknown {
  const field = (name: string) => [...raw.matchAll(new RegExp(`"${name}":\\[?"((?:[^"\\\\]|\\\\.)*)"`, 'g'))].map((m) => JSON.parse(`"${m[1]}"`) as string);
  const to = field('to');
  const ids = field('X-Lifeline-Message-Id');
  const emails = to.map((t, i) => ({ to: [t], subject: '', headers: { 'X-Lifeline-Message-Id': ids[i] ?? '' } }));
  return raw.trimStart().startsWith('[') ? emails : (emails[0] ?? {});
}

export async function startFakeResend(options: {
  ratePerSecond?: number;
  /** false: keep only counts-worthy fields (benchmarks send 100k emails; bodies would not fit) */
  keepContent?: boolean;
  /** false: parse requests fully but keep no html/text (long suites: thousands of emails) */
  keepBodies?: boolean;
} = {}): Promise<FakeResend> {
  const keepContent = options.keepContent ?? true;
  const requests: RecordedRequest[] = [];
  const accepted: FakeResend['accepted'] = [];
  const scripted: ScriptedAnswer[] = [];
  // Like Resend: a key seen with an accepted request replays that answer for the same body, and
  // answers 409 invalid_idempotent_request for a different body (the key was used for another email).
  const byKey = new Map<string, { body: string; payload: unknown }>();
  const window: number[] = [];

  const server = createServer((req, res) => {
    // The rate window counts requests when they arrive (headers), as a provider's edge does,
    // not when this process got round to parsing a 2 MB batch body.
    const arrived = Date.now();
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      let body: unknown = null;
      try {
        body = raw ? (keepContent ? JSON.parse(raw) : leanParse(raw)) : null;
      } catch {
        body = raw;
      }
      const now = arrived;
      requests.push({ method: req.method ?? '', path: req.url ?? '', headers: req.headers, body: keepContent && options.keepBodies !== false ? body : null, at: now });
      const send = (status: number, payload: unknown, headers: Record<string, string> = {}) => {
        res.writeHead(status, { 'content-type': 'application/json', ...headers });
        res.end(JSON.stringify(payload));
      };
      const next = scripted.shift();
      if (next?.hang) return;
      if (next?.drop) return void req.socket.destroy();
      if (next) {
        if (next.status >= 400) {
          const name = next.status === 429 ? 'rate_limit_exceeded' : next.status === 422 ? 'validation_error' : 'internal_server_error';
          return send(next.status, next.body ?? { statusCode: next.status, name, message: `scripted ${next.status}` }, next.headers);
        }
      }
      if (options.ratePerSecond) {
        while (window.length && window[0]! <= now - 1000) window.shift();
        if (window.length >= options.ratePerSecond) {
          return send(429, { statusCode: 429, name: 'rate_limit_exceeded', message: 'Too many requests' }, { 'retry-after': '1' });
        }
        window.push(now);
      }
      const key = typeof req.headers['idempotency-key'] === 'string' ? req.headers['idempotency-key'] : null;
      const bodyHash = key ? createHash('sha256').update(raw).digest('hex') : '';
      const seen = key ? byKey.get(key) : undefined;
      if (seen) {
        if (seen.body === bodyHash) return send(200, seen.payload);
        return send(409, { statusCode: 409, name: 'invalid_idempotent_request', message: 'Same idempotency key used with a different request payload.' });
      }
      const accept = (e: Record<string, unknown>) => {
        const id = randomUUID();
        const to = Array.isArray(e.to) ? String(e.to[0]) : String(e.to);
        const headers = (e.headers as Record<string, string>) ?? {};
        const template = Array.isArray(e.tags) ? (e.tags as { name: string; value: string }[]).find((tag) => tag.name === 'template')?.value : undefined;
        if (options.keepBodies === false) accepted.push({ id, to, subject: String(e.subject), headers, html: '', text: '', idempotencyKey: key, ...(template ? { template } : {}) });
        else if (keepContent) accepted.push({ id, to, subject: String(e.subject), headers, html: String(e.html ?? ''), text: String(e.text ?? ''), idempotencyKey: key, ...(template ? { template } : {}) });
        else accepted.push({ id, to, subject: '', headers: { 'X-Lifeline-Message-Id': headers['X-Lifeline-Message-Id'] ?? '' }, html: '', text: '', idempotencyKey: key });
        return id;
      };
      const invalid = (e: Record<string, unknown>) => typeof e.to === 'undefined' || (Array.isArray(e.to) && String(e.to[0]).endsWith('@invalid.test'));
      let payload: unknown;
      if (req.url === '/emails/batch' && Array.isArray(body)) {
        const data: { id: string }[] = [];
        const errors: { index: number; message: string }[] = [];
        body.forEach((e: Record<string, unknown>, index: number) => {
          if (invalid(e)) errors.push({ index, message: 'Invalid `to` field.' });
          else data.push({ id: accept(e) });
        });
        payload = req.headers['x-batch-validation'] === 'permissive' || errors.length === 0 ? { data, errors } : null;
        if (payload === null) return send(422, { statusCode: 422, name: 'validation_error', message: 'Invalid `to` field.' });
      } else if (req.url === '/emails' && body && typeof body === 'object') {
        const e = body as Record<string, unknown>;
        if (invalid(e)) return send(422, { statusCode: 422, name: 'validation_error', message: 'Invalid `to` field.' });
        payload = { id: accept(e) };
      } else {
        return send(404, { statusCode: 404, name: 'not_found', message: 'not found' });
      }
      if (key) byKey.set(key, { body: bodyHash, payload });
      if (next?.delayMs) {
        const timer = setTimeout(() => {
          if (!res.destroyed) send(200, payload);
        }, next.delayMs);
        res.on('close', () => clearTimeout(timer));
        return;
      }
      send(200, payload);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    accepted,
    script: (...answers) => scripted.push(...answers),
    clearScript: () => void scripted.splice(0),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        // hung requests keep their sockets: end them, or close() waits for them
        server.closeAllConnections();
      }),
  };
}
