// GET /v1/contacts/:id — one contact as support and marketers need it: traits, accounts, every
// workflow run with its decision trace, and the messages sent (or held/skipped) to it.
import type { FastifyInstance } from 'fastify';
import type { AppDeps } from '../app-deps.ts';
import { requireKey } from '../http/auth.ts';
import { ErrorSchema, HttpError } from '../http/errors.ts';
import { eraseContact, exportContact, findContact } from './data-rights.ts';
import { adminActor, recordAudit } from '../admin/audit-log.ts';

export async function contactRoutes(app: FastifyInstance, deps: AppDeps): Promise<void> {
  app.addHook('onRequest', async (request) => {
    requireKey(request, deps.config.adminTokens, 'LIFELINE_ADMIN_TOKEN', 'The admin API');
  });

  app.get(
    '/v1/contacts/:id',
    {
      schema: {
        summary: 'A contact: traits, accounts, workflow runs with their decision traces, messages',
        description: ':id is the contact id, or your userId, or an email address.',
        tags: ['contacts'],
        security: [{ adminToken: [] }],
        params: { type: 'object', properties: { id: { type: 'string', minLength: 1, maxLength: 256 } }, required: ['id'] },
        response: { 404: ErrorSchema },
      },
    },
    async (request) => {
      const { id } = request.params as { id: string };
      const sql = deps.sql;
      const [contact] = /^\d{1,15}$/.test(id)
        ? await sql`select * from contacts where id = ${Number(id)}`
        : id.includes('@')
          ? await sql`select * from contacts where lower(email) = lower(${id}) order by (user_id is not null) desc, id limit 1`
          : await sql`select * from contacts where user_id = ${id}`;
      if (!contact) throw new HttpError(404, 'contact_not_found', `No contact "${id}"`);
      const contactId = contact.id as number;
      const accounts = await sql`
        select a.id, a.group_id as "groupId", a.stripe_customer_id as "stripeCustomerId", a.traits, m.joined_at as "joinedAt"
        from accounts a join account_members m on m.account_id = a.id where m.contact_id = ${contactId} order by m.joined_at`;
      const runs = await sql<{ id: number }[]>`
        select id, workflow_key as "workflowKey", version, run_key as "runKey", status, holdout, variant, due_at as "dueAt",
               started_at as "startedAt", ended_at as "endedAt", converted_at as "convertedAt", state->'wait' as wait
        from workflow_runs where contact_id = ${contactId} order by started_at desc, id desc limit 100`;
      const traces = runs.length
        ? await sql<{ run_id: number }[]>`
            select run_id, at, step_id as "stepId", kind, detail, data from run_trace
            where run_id = any(${runs.map((r) => r.id)}::bigint[]) order by id`
        : [];
      const messages = await sql`
        select id, run_id as "runId", step_id as "stepId", workflow_key as "workflowKey", template, subject, category, variant,
               status, status_reason as "statusReason", created_at as "createdAt", sent_at as "sentAt"
        from messages where contact_id = ${contactId} order by created_at desc limit 200`;
      const recent = await sql`
        select id, name, properties, occurred_at as "occurredAt" from domain_events
        where contact_id = ${contactId} order by occurred_at desc, id desc limit 50`;
      return {
        id: contactId,
        userId: contact.user_id,
        anonymousId: contact.anonymous_id,
        email: contact.email,
        stripeCustomerId: contact.stripe_customer_id,
        traits: contact.traits,
        createdAt: contact.created_at,
        updatedAt: contact.updated_at,
        accounts,
        runs: runs.map((r) => ({ ...r, trace: traces.filter((t) => t.run_id === r.id).map(({ run_id: _r, ...t }) => t) })),
        messages,
        recentEvents: recent,
      };
    },
  );

  // Data rights (README "Data rights (GDPR)"): the export and the erasure of one person.
  const idParams = { type: 'object', properties: { id: { type: 'string', minLength: 1, maxLength: 256 } }, required: ['id'] } as const;
  async function contactFor(id: string) {
    // PostgreSQL refuses NUL in text: such an id names no contact.
    const contact = id.includes('\u0000') ? undefined : await findContact(deps.sql, id);
    if (!contact) throw new HttpError(404, 'contact_not_found', 'No such contact');
    return contact;
  }
  app.get(
    '/v1/contacts/:id/export',
    {
      schema: {
        summary: 'Everything Lifeline holds about one person (GDPR access / portability), as JSON',
        tags: ['contacts'],
        security: [{ adminToken: [] }],
        params: idParams,
        response: { 404: ErrorSchema },
      },
    },
    async (request, reply) => {
      const contact = await contactFor((request.params as { id: string }).id);
      const data = await exportContact(deps.sql, contact);
      await recordAudit(deps.sql, { at: deps.clock.now(), actor: adminActor(request), action: 'contact.exported', target: String(contact.id) });
      reply.header('content-disposition', `attachment; filename="contact-${contact.id as number}.json"`);
      return data;
    },
  );
  app.delete(
    '/v1/contacts/:id',
    {
      schema: {
        summary: 'Erase one person\'s personal data everywhere (GDPR erasure); money figures stay, the address stays suppressed as a hash',
        tags: ['contacts'],
        security: [{ adminToken: [] }],
        params: idParams,
        response: { 404: ErrorSchema },
      },
    },
    async (request) => {
      const contact = await contactFor((request.params as { id: string }).id);
      const result = await eraseContact(deps.sql, contact, { outboxDir: deps.config.outboxDir, now: deps.clock.now() });
      // The diff names counts only: the audit log must not become a copy of what was erased.
      await recordAudit(deps.sql, {
        at: deps.clock.now(), actor: adminActor(request), action: 'contact.erased', target: String(contact.id),
        diff: { addressesSuppressed: result.addressesSuppressed, rowsScrubbed: result.rowsScrubbed, outboxFilesDeleted: result.outboxFilesDeleted },
      });
      return { erased: true, ...result };
    },
  );
}
