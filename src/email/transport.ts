// Where rendered emails go: Resend (official SDK) when RESEND_API_KEY is set, otherwise a log
// transport that keeps the rendered message on disk (so a newcomer sees what would be sent)
// and logs one line about it — never the body, which may hold personal data.
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Resend } from 'resend';
import type { Logger } from 'pino';

export interface OutgoingEmail {
  id: string;
  from: string;
  to: string;
  replyTo?: string | undefined;
  subject: string;
  html: string;
  text: string;
  headers: Record<string, string>;
  template: string;
}

export type SendOutcome =
  | { ok: true; results: ({ providerId: string } | { error: string })[] }
  | {
      ok: false;
      /** provider asked us to slow down; wait this long */
      retryAfterMs: number | null;
      /** the request itself is invalid: retrying cannot help */
      permanent: boolean;
      status: number | null;
      /** the provider's error name (e.g. invalid_idempotent_request), when it gave one */
      code?: string | undefined;
      message: string;
    };

export interface EmailTransport {
  name: 'resend' | 'log';
  /** one request: a single email, or a batch of up to 100 */
  send(emails: OutgoingEmail[], idempotencyKey: string): Promise<SendOutcome>;
}

const PERMANENT = new Set(['validation_error', 'missing_required_field', 'invalid_parameter', 'invalid_from_address', 'invalid_attachment']);

/** Default per-request limit when none is configured (RESEND_TIMEOUT_MS). */
export const DEFAULT_REQUEST_TIMEOUT_MS = 10_000;

export function createResendTransport(options: { apiKey: string; baseUrl?: string | undefined; timeoutMs?: number }): EmailTransport {
  const timeoutMs = options.timeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
  const resend = new Resend(options.apiKey, options.baseUrl ? { baseUrl: options.baseUrl } : undefined);
  const toPayload = (e: OutgoingEmail) => ({
    from: e.from,
    to: [e.to],
    subject: e.subject,
    html: e.html,
    text: e.text,
    headers: e.headers,
    ...(e.replyTo ? { replyTo: e.replyTo } : {}),
    tags: [{ name: 'message_id', value: e.id.replace(/[^a-zA-Z0-9_-]/g, '_') }, { name: 'template', value: e.template }],
  });
  return {
    name: 'resend',
    async send(emails, idempotencyKey) {
      // A per-request limit: without it one hung request holds its lane (and the batches behind
      // it) for as long as the socket lives. A timed-out request is a failure like a dropped
      // connection: the provider may have sent it, so the sender re-sends the SAME batch (same
      // idempotency key, byte-identical payload) and the provider answers with the first result
      // (sender.ts, once-only argument, point 3).
      const signal = AbortSignal.timeout(timeoutMs);
      // The SDK does not throw on HTTP errors (nor on an aborted request): it returns { data, error, headers }.
      const response =
        emails.length === 1
          ? await resend.emails.send(toPayload(emails[0]!), { idempotencyKey, signal } as Parameters<typeof resend.emails.send>[1])
          : await resend.batch.send(emails.map(toPayload), { idempotencyKey, batchValidation: 'permissive', signal } as Parameters<typeof resend.batch.send>[1]);
      if (response.error && signal.aborted) {
        return { ok: false, status: null, retryAfterMs: null, permanent: false, code: 'timeout', message: `timeout: no answer within ${timeoutMs} ms` };
      }
      if (response.error) {
        const status = response.error.statusCode ?? (response.error.name === 'rate_limit_exceeded' ? 429 : null);
        const retryAfter = Number(response.headers?.['retry-after']);
        return {
          ok: false,
          status,
          retryAfterMs: status === 429 ? (Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter * 1000 : 1000) : null,
          permanent: (status === 400 || status === 422) && PERMANENT.has(response.error.name),
          code: response.error.name,
          message: `${response.error.name}: ${response.error.message}`,
        };
      }
      if (emails.length === 1) {
        return { ok: true, results: [{ providerId: (response.data as { id: string }).id }] };
      }
      const data = response.data as { data: { id: string }[]; errors?: { index: number; message: string }[] };
      const errors = new Map((data.errors ?? []).map((e) => [e.index, e.message]));
      // Permissive validation: `data` lists the accepted emails in order, skipping failed indexes.
      const ids = [...data.data];
      return {
        ok: true,
        results: emails.map((_e, i) => (errors.has(i) ? { error: errors.get(i)! } : { providerId: ids.shift()?.id ?? 'unknown' })),
      };
    },
  };
}

export function createLogTransport(options: { logger: Logger; dir: string }): EmailTransport {
  return {
    name: 'log',
    async send(emails) {
      await mkdir(options.dir, { recursive: true });
      for (const e of emails) {
        const file = path.join(options.dir, `${e.id.replace(/[^a-zA-Z0-9_-]/g, '_')}.html`);
        await writeFile(file, e.html);
        await writeFile(file.replace(/\.html$/, '.txt'), `Subject: ${e.subject}\nTo: ${e.to}\n${Object.entries(e.headers).map(([k, v]) => `${k}: ${v}`).join('\n')}\n\n${e.text}`);
        options.logger.info({ messageId: e.id, template: e.template, subject: e.subject, file }, 'email not sent (no RESEND_API_KEY): rendered to file');
      }
      return { ok: true, results: emails.map((e) => ({ providerId: `log_${e.id}` })) };
    },
  };
}
