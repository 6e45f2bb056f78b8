// Email-facing HTTP: one-click unsubscribe (RFC 8058), click-tracking redirects, Resend's
// delivery webhooks, template previews and the message log.
import { randomUUID } from 'node:crypto';
import formbody from '@fastify/formbody';
import { Resend } from 'resend';
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { AppDeps } from '../app-deps.ts';
import type { Tx } from '../db/connection.ts';
import { requireKey } from '../http/auth.ts';
import { ErrorSchema, HttpError } from '../http/errors.ts';
import { recordDomainEvent } from '../timeline/domain-event-store.ts';
import { recordMessageEvent } from './outbox-store.ts';
import { sampleData } from './template-samples.ts';
import { verifyToken } from './tokens.ts';
import { escapeHtml, SIMPLE_PAGE_HEADERS, simplePage } from '../http/simple-page.ts';
import { erasedAddressKey } from '../contacts/data-rights.ts';

/** m: the message; legacy tokens (never issued now) also carried e: the address, c: the contact */
type UnsubscribeToken = { m: string; e?: string | null; c?: number | null };
type ClickToken = { m: string; u: string };

/** "jane@example.com" → "j•••@example.com": enough to recognise, little to whoever else sees the page. */
export function maskAddress(address: string): string {
  const at = address.lastIndexOf('@');
  if (at <= 0) return '•••';
  return `${address.slice(0, 1)}•••${address.slice(at)}`;
}

// Status precedence: a later "delivered" must not hide an earlier bounce, and so on.
const STATUS_RANK: Record<string, number> = { queued: 0, sending: 1, sent: 2, delivered: 3, bounced: 4, complained: 5, failed: 4, skipped: 4 };

export async function emailRoutes(app: FastifyInstance, deps: AppDeps): Promise<void> {
  const secret = deps.secret ?? '';

  // --- Unsubscribe ---------------------------------------------------------------------------
  await app.register(async (scope) => {
    await scope.register(formbody);
    const tokenParams = { type: 'object', properties: { token: { type: 'string', maxLength: 4096 } }, required: ['token'] } as const;

    // The token names the message (legacy tokens also carry the address); the address comes
    // from the message row, which erasure blanks (the address is then already suppressed).
    const unsubscribeToken = (token: string) => {
      const payload = verifyToken<UnsubscribeToken>(secret, 'unsubscribe', token, { acceptLegacy: true });
      return payload && typeof payload.m === 'string' ? payload : null;
    };
    const invalid = (reply: FastifyReply) =>
      simplePage(reply, 400, 'This link is not valid', '<p>The unsubscribe link is incomplete or was changed. Please use the link from the email.</p>');
    const unavailable = (reply: FastifyReply) => simplePage(reply, 503, 'Please try again in a moment', '<p>We could not process the link just now. Please try again in a minute.</p>');

    scope.get('/unsubscribe/:token', { helmet: SIMPLE_PAGE_HEADERS, schema: { summary: 'Unsubscribe confirmation page', tags: ['email'], params: tokenParams } }, async (request, reply) => {
      const payload = unsubscribeToken((request.params as { token: string }).token);
      if (!payload) return invalid(reply);
      let address: string | null;
      try {
        const [m] = await deps.sql<{ to_email: string | null }[]>`select to_email from messages where id = ${payload.m}`;
        address = m ? m.to_email : typeof payload.e === 'string' ? payload.e : null;
      } catch (err) {
        request.log.error({ error: (err as Error).message }, 'unsubscribe page: message look-up failed');
        return unavailable(reply);
      }
      // GET never unsubscribes: mail scanners follow links. The button POSTs. The address is
      // shown masked: whoever else sees the URL (a shared screen, a forwarded email) learns little.
      return simplePage(
        reply,
        200,
        `Unsubscribe from ${deps.config.brand.productName} emails?`,
        `<p>${escapeHtml(address ? maskAddress(address) : 'This address')} will stop receiving product and marketing emails. Billing notices about your account will still arrive.</p>` +
          `<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click"><button type="submit">Unsubscribe</button></form>`,
      );
    });

    // Authenticated by the token in the URL, not a cookie: a cross-site POST (a webmail client
    // doing RFC 8058 one-click from its own origin, or the mail provider with no Origin at all)
    // is exactly what this route is for, so there is no Origin check here.
    scope.post('/unsubscribe/:token', { helmet: SIMPLE_PAGE_HEADERS, schema: { summary: 'One-click unsubscribe (RFC 8058)', tags: ['email'], params: tokenParams } }, async (request, reply) => {
      const payload = unsubscribeToken((request.params as { token: string }).token);
      if (!payload) return invalid(reply);
      const now = deps.clock.now();
      let found: boolean;
      try {
        found = await deps.sql.begin(async (tx: Tx) => {
          const [m] = await tx<{ to_email: string | null }[]>`select to_email from messages where id = ${payload.m}`;
          let address = m ? m.to_email : null;
          if (!m && typeof payload.e === 'string' && payload.e.includes('@')) {
            // A legacy token whose message row is gone: its own address, unless that address was
            // erased (kept only as a hash, and already suppressed for everything).
            const [erased] = await tx`select 1 from suppressions where email = ${erasedAddressKey(payload.e)}`;
            if (!erased) address = payload.e;
          }
          // Unsubscribing stops marketing and lifecycle mail, never billing notices.
          if (address) {
            await tx`
              insert into suppressions (email, scope, reason, created_at) values (lower(${address}), 'non_transactional', 'unsubscribed', ${now})
              on conflict (email) do nothing`;
          }
          if (m) await recordMessageEvent(tx, payload.m, 'unsubscribed', now);
          return !!m || !!address;
        });
      } catch (err) {
        request.log.error({ error: (err as Error).message }, 'unsubscribe: could not store');
        return unavailable(reply);
      }
      if (!found) return simplePage(reply, 404, 'Email not found', '<p>We could not find the email this link is about. Please reply to the email and we will unsubscribe you.</p>');
      request.log.info({ messageId: payload.m }, 'unsubscribed');
      return simplePage(reply, 200, "You're unsubscribed", `<p>You will no longer receive product and marketing emails from ${escapeHtml(deps.config.brand.productName)}.</p>`);
    });
  });

  // --- Click tracking ------------------------------------------------------------------------
  app.get(
    '/r/:token',
    { helmet: SIMPLE_PAGE_HEADERS, schema: { summary: 'Tracked link: records the click, then redirects', tags: ['email'], params: { type: 'object', properties: { token: { type: 'string', maxLength: 4096 } }, required: ['token'] } } },
    async (request, reply) => {
      const { token } = request.params as { token: string };
      const payload = verifyToken<ClickToken>(secret, 'click', token, { acceptLegacy: true });
      // Only URLs we signed are ever redirected to: no open redirect.
      if (!payload || typeof payload.u !== 'string' || !/^https?:\/\//.test(payload.u)) {
        return simplePage(reply, 400, 'This link is not valid', '<p>The link is incomplete or was changed.</p>');
      }
      const now = deps.clock.now();
      try {
        await deps.sql.begin(async (tx: Tx) => {
          const [m] = await tx<{ run_id: number | null; contact_id: number | null; account_id: number | null; template: string; workflow_key: string | null }[]>`
            update messages set clicked_at = coalesce(clicked_at, ${now}), updated_at = ${now} where id = ${payload.m}
            returning run_id, contact_id, account_id, template, workflow_key`;
          if (!m) return;
          await recordMessageEvent(tx, payload.m, 'clicked', now, payload.u);
          await recordDomainEvent(
            tx,
            {
              name: 'email.clicked',
              source: 'product',
              sourceId: payload.m,
              dedupeKey: `email.clicked:${payload.m}:${randomUUID()}`,
              contactId: m.contact_id,
              accountId: m.account_id,
              stripeCustomerId: null,
              subjectId: payload.m,
              properties: { messageId: payload.m, runId: m.run_id, workflowKey: m.workflow_key, template: m.template, url: payload.u },
              occurredAt: now,
            },
            now,
          );
        });
      } catch (err) {
        // The customer must reach their invoice even if we cannot record the click.
        request.log.error({ error: (err as Error).message }, 'could not record click');
      }
      return reply.code(302).header('location', payload.u).header('cache-control', 'no-store').send();
    },
  );

  // --- Resend webhooks -------------------------------------------------------------------------
  await app.register(async (scope) => {
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', { parseAs: 'string' }, (_req, body, done) => done(null, body));
    const verifier = new Resend('re_webhook_verification_only');
    scope.post(
      '/webhooks/resend',
      { schema: { summary: 'Receive Resend delivery events (Svix-signed)', tags: ['webhooks'], response: { 400: ErrorSchema, 503: ErrorSchema } } },
      async (request) => {
        const webhookSecret = deps.config.email.resendWebhookSecret;
        if (!webhookSecret) throw new HttpError(503, 'not_configured', 'Resend webhooks are disabled: set RESEND_WEBHOOK_SECRET (whsec_…) to enable them');
        const raw = typeof request.body === 'string' ? request.body : '';
        const id = request.headers['svix-id'];
        const timestamp = request.headers['svix-timestamp'];
        const signature = request.headers['svix-signature'];
        if (typeof id !== 'string' || typeof timestamp !== 'string' || typeof signature !== 'string') {
          throw new HttpError(400, 'missing_signature', 'Missing svix-id, svix-timestamp or svix-signature header');
        }
        let event: { type?: string; created_at?: string; data?: { email_id?: string; bounce?: { type?: string; message?: string }; to?: string[] | string } };
        try {
          // The SDK throws on a bad signature: that is the sender's problem (400), not ours (500).
          event = verifier.webhooks.verify({ payload: raw, headers: { id, timestamp, signature }, webhookSecret }) as typeof event;
        } catch {
          throw new HttpError(400, 'invalid_signature', 'Resend webhook signature verification failed');
        }
        // A signed `null`, array or scalar (found by fuzzing) is not an event: 400, not a 500.
        if (typeof event !== 'object' || event === null || Array.isArray(event) || (event.data !== undefined && (typeof event.data !== 'object' || event.data === null))) {
          throw new HttpError(400, 'invalid_event', 'Signed payload is not a Resend event object');
        }
        const emailId = event.data?.email_id;
        const type = event.type ?? '';
        if (!emailId || !type.startsWith('email.')) return { received: true, matched: false };
        const now = deps.clock.now();
        const at = event.created_at && !Number.isNaN(Date.parse(event.created_at)) ? new Date(event.created_at) : now;
        const apply = async (tx: Tx): Promise<boolean> => {
          const [m] = await tx<{ id: string; status: string; to_email: string | null }[]>`select id, status, to_email from messages where provider_id = ${emailId} for update`;
          if (!m) return false;
          const kind = type.slice('email.'.length);
          const fresh = await recordMessageEvent(tx, m.id, kind, at, event.data?.bounce?.message ?? null, `resend:${id}`);
          if (!fresh) return true; // a redelivered webhook: already applied
          const hardBounce = kind === 'bounced' && (event.data?.bounce?.type ?? 'Permanent') === 'Permanent';
          const statusChange = kind === 'delivered' || kind === 'complained' || kind === 'failed' || hardBounce ? (kind === 'failed' ? 'failed' : kind) : null;
          if (statusChange && (STATUS_RANK[statusChange] ?? 0) > (STATUS_RANK[m.status] ?? 0)) {
            await tx`update messages set status = ${statusChange}, updated_at = ${now} where id = ${m.id}`;
          }
          if (kind === 'delivered') await tx`update messages set delivered_at = coalesce(delivered_at, ${at}) where id = ${m.id}`;
          if (kind === 'opened') await tx`update messages set opened_at = coalesce(opened_at, ${at}) where id = ${m.id}`;
          if (kind === 'clicked') await tx`update messages set clicked_at = coalesce(clicked_at, ${at}) where id = ${m.id}`;
          // A hard bounce stops all mail to the address; a complaint stops all but billing notices.
          const scope = hardBounce || kind === 'suppressed' ? 'all' : kind === 'complained' ? 'non_transactional' : null;
          if (scope && m.to_email) {
            await tx`
              insert into suppressions (email, scope, reason, created_at) values (lower(${m.to_email}), ${scope}, ${kind}, ${now})
              on conflict (email) do update set scope = case when excluded.scope = 'all' then 'all' else suppressions.scope end,
                reason = case when excluded.scope = 'all' then excluded.reason else suppressions.reason end`;
          }
          return true;
        };
        let matched: boolean;
        try {
          matched = await deps.sql.begin(apply);
        } catch (err) {
          request.log.error({ err: { message: (err as Error).message, code: (err as { code?: string }).code } }, 'could not store resend event');
          // Never acknowledge what we did not apply: Resend (Svix) retries on 5xx, with backoff.
          throw new HttpError(503, 'storage_unavailable', 'The event could not be stored; retry later', undefined, { 'retry-after': '5' });
        }
        return { received: true, matched };
      },
    );
  });

  // --- Admin: templates and the message log ----------------------------------------------------
  await app.register(async (scope) => {
    scope.addHook('onRequest', async (request) => requireKey(request, deps.config.adminTokens, 'LIFELINE_ADMIN_TOKEN', 'The admin API'));
    const security = [{ adminToken: [] }];
    const templates = () => {
      if (!deps.templates) throw new HttpError(503, 'templates_unavailable', 'Templates are not loaded');
      return deps.templates;
    };

    scope.get('/v1/templates', { schema: { summary: 'Email templates and their metadata', tags: ['email'], security } }, async () => ({
      templates: templates().keys().map((k) => templates().meta(k)),
    }));

    scope.get(
      '/v1/templates/:key/preview',
      {
        schema: {
          summary: 'Render a template with sample data',
          tags: ['email'],
          security,
          params: { type: 'object', properties: { key: { type: 'string' } }, required: ['key'] },
          querystring: { type: 'object', properties: { format: { type: 'string', enum: ['html', 'text'], default: 'html' } } },
        },
      },
      async (request, reply) => {
        const { key } = request.params as { key: string };
        const { format } = request.query as { format: 'html' | 'text' };
        if (!templates().meta(key)) throw new HttpError(404, 'template_not_found', `No template "${key}"`);
        const rendered = templates().render(key, sampleData(key));
        return format === 'text'
          ? reply.type('text/plain; charset=utf-8').send(`Subject: ${rendered.subject}\n\n${rendered.text}`)
          : reply.type('text/html; charset=utf-8').send(rendered.html);
      },
    );

    scope.get(
      '/v1/messages/:id',
      { schema: { summary: 'One message with its status timeline', tags: ['email'], security, params: { type: 'object', properties: { id: { type: 'string' } }, required: ['id'] } } },
      async (request) => {
        const { id } = request.params as { id: string };
        const [m] = await deps.sql`
          select id, run_id as "runId", step_id as "stepId", workflow_key as "workflowKey", contact_id as "contactId", template, to_email as "to",
                 subject, category, variant, status, status_reason as "statusReason", provider_id as "providerId", attempts,
                 created_at as "createdAt", sent_at as "sentAt", delivered_at as "deliveredAt", opened_at as "openedAt", clicked_at as "clickedAt"
          from messages where id = ${id}`;
        if (!m) throw new HttpError(404, 'message_not_found', `No message "${id}"`);
        const events = await deps.sql`select status, at, detail from message_events where message_id = ${id} order by at, id`;
        return { ...m, timeline: [{ status: 'queued', at: m.createdAt, detail: null }, ...events] };
      },
    );
  });
}
