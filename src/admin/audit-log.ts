// Audit log of admin actions (README "Audit log"): workflow published / paused / resumed,
// contact exported / erased, dead letters replayed, and the CLI's workflow imports, Stripe
// replays and backfills. Rows are written by the route or command that did the action, after it
// succeeded; GET /v1/admin/audit reads them (paged by id, filtered by action and time).
import { createHash } from 'node:crypto';
import { userInfo } from 'node:os';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { AppDeps } from '../app-deps.ts';
import type { Sql } from '../db/connection.ts';
import { presentedKey, requireKey } from '../http/auth.ts';
import { ErrorSchema, HttpError } from '../http/errors.ts';

export type AuditAction =
  | 'workflow.published' | 'workflow.paused' | 'workflow.resumed' | 'contact.exported' | 'contact.erased' | 'dead_letter.replayed'
  | 'stripe.replayed' | 'stripe.backfilled';

/**
 * Who ran a CLI command: `cli:<operating-system user>`. The CLI runs on the server with database
 * access (no admin token); the OS account is the identity it has.
 */
export function cliActor(user: () => string = () => userInfo().username): string {
  try {
    return `cli:${user() || 'unknown'}`;
  } catch {
    return 'cli:unknown';
  }
}

/**
 * Who did it: the admin token's id (first 12 hex of its sha256 — never the token), taken from
 * `request.adminTokenId` when the auth layer sets it, else computed the same way from the header.
 */
export function adminActor(request: FastifyRequest): string {
  const set = (request as FastifyRequest & { adminTokenId?: unknown }).adminTokenId;
  if (typeof set === 'string' && set) return `token:${set}`;
  const key = presentedKey(request);
  return key ? `token:${createHash('sha256').update(key).digest('hex').slice(0, 12)}` : 'unknown';
}

export async function recordAudit(
  sql: Sql,
  entry: { at: Date; actor: string; action: AuditAction; target?: string | null; diff?: unknown },
): Promise<void> {
  await sql`insert into audit_log (at, actor, action, target, diff)
            values (${entry.at}, ${entry.actor}, ${entry.action}, ${entry.target ?? null}, ${entry.diff === undefined ? null : sql.json(entry.diff as never)})`;
}

const MAX_LIMIT = 500;

export async function auditRoutes(app: FastifyInstance, deps: AppDeps): Promise<void> {
  app.addHook('onRequest', async (request) => {
    requireKey(request, deps.config.adminTokens, 'LIFELINE_ADMIN_TOKEN', 'The admin API');
  });
  app.get(
    '/v1/admin/audit',
    {
      schema: {
        summary: 'Audit log of admin actions, newest first; page with `before` (the last id you got)',
        tags: ['admin'],
        security: [{ adminToken: [] }],
        querystring: {
          type: 'object',
          properties: {
            action: { type: 'string', maxLength: 64 },
            from: { type: 'string', format: 'date-time' },
            to: { type: 'string', format: 'date-time' },
            before: { type: 'string', pattern: '^[0-9]{1,18}$' },
            limit: { type: 'string', pattern: '^[0-9]{1,4}$' },
          },
          additionalProperties: false,
        },
        response: { 400: ErrorSchema },
      },
    },
    async (request) => {
      const q = request.query as { action?: string; from?: string; to?: string; before?: string; limit?: string };
      const limit = q.limit === undefined ? 100 : Number(q.limit);
      if (limit < 1 || limit > MAX_LIMIT) throw new HttpError(400, 'invalid_parameter', `limit must be 1..${MAX_LIMIT}`);
      const from = q.from ? new Date(q.from) : null;
      const to = q.to ? new Date(q.to) : null;
      if ((from && Number.isNaN(from.getTime())) || (to && Number.isNaN(to.getTime()))) {
        throw new HttpError(400, 'invalid_parameter', 'from and to must be ISO 8601 date-times');
      }
      const sql = deps.sql;
      const rows = await sql`
        select id::text as id, at, actor, action, target, diff from audit_log
        where true
          ${q.action ? sql`and action = ${q.action}` : sql``}
          ${from ? sql`and at >= ${from}` : sql``}
          ${to ? sql`and at < ${to}` : sql``}
          ${q.before ? sql`and id < ${q.before}::bigint` : sql``}
        order by id desc limit ${limit}`;
      return { entries: rows, next: rows.length === limit ? (rows.at(-1)!.id as string) : null };
    },
  );
}
