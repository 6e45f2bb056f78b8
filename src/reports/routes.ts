// Admin API for reports: the recovery report (JSON, or the case-level ledger as CSV) and the
// per-workflow report. Every answer is computed from a refreshed ledger; a background refresh
// also runs every minute so that the refresh before a report stays small.
import { Readable } from 'node:stream';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { AppDeps } from '../app-deps.ts';
import { requireKey } from '../http/auth.ts';
import { ErrorSchema, HttpError } from '../http/errors.ts';
import { getWorkflow } from '../workflows/workflow-store.ts';
import { RECOVERY_WORKFLOW } from './definitions.ts';
import { parseCurrency, parseRange } from './params.ts';
import { refreshRecoveryCases } from './recovery-cases.ts';
import { recoveryLedgerCsv, recoveryReport } from './recovery-report.ts';
import { workflowReport } from './workflow-report.ts';

const BACKGROUND_REFRESH_MS = 60_000;

const dateParam = { type: 'string', description: 'UTC date, YYYY-MM-DD', examples: ['2026-01-01'] } as const;

function wantsCsv(request: FastifyRequest, format: unknown): boolean {
  if (format !== undefined) {
    if (format === 'csv') return true;
    if (format === 'json') return false;
    throw new HttpError(400, 'invalid_parameter', `Query parameter "format" must be "json" or "csv", got "${String(format).slice(0, 40)}"`);
  }
  const accept = request.headers.accept ?? '';
  return /(^|,)\s*text\/csv\s*(;|,|$)/i.test(accept);
}

export async function reportRoutes(app: FastifyInstance, deps: AppDeps): Promise<void> {
  app.addHook('onRequest', async (request: FastifyRequest) => {
    requireKey(request, deps.config.adminTokens, 'LIFELINE_ADMIN_TOKEN', 'The admin API');
  });
  const security = [{ adminToken: [] }];

  // Background refresh: keeps the ledger close to the timeline between reports.
  let timer: NodeJS.Timeout | null = null;
  let inFlight: Promise<unknown> | null = null;
  app.addHook('onReady', async () => {
    timer = setInterval(() => {
      if (inFlight) return;
      inFlight = refreshRecoveryCases(deps.sql)
        .catch((err: unknown) => deps.logger.error({ error: err instanceof Error ? err.message : String(err) }, 'recovery ledger refresh failed'))
        .finally(() => {
          inFlight = null;
        });
    }, BACKGROUND_REFRESH_MS);
    timer.unref();
  });
  app.addHook('onClose', async () => {
    if (timer) clearInterval(timer);
    if (inFlight) await inFlight;
  });

  app.get(
    '/v1/reports/recovery',
    {
      schema: {
        summary: 'Recovered revenue: cases, outcomes, attribution and hold-out lift per currency',
        description:
          'Recovery cases whose first failed payment is in [from, to) (UTC dates), grouped per currency, with a monthly series and the written definition of every figure. `?format=csv` (or `Accept: text/csv`) returns the case-level ledger instead.',
        tags: ['reports'],
        security,
        querystring: {
          type: 'object',
          properties: {
            from: dateParam,
            to: { ...dateParam, description: 'UTC date, YYYY-MM-DD (exclusive)' },
            currency: { type: 'string', description: 'ISO 4217 code, e.g. usd' },
            format: { type: 'string', enum: ['json', 'csv'] },
          },
          required: ['from', 'to'],
        },
        response: { 400: ErrorSchema, 401: ErrorSchema },
      },
      // Parameters are checked by parseRange / parseCurrency, whose messages name the parameter.
      validatorCompiler: () => () => true,
    },
    async (request, reply) => {
      const query = (request.query ?? {}) as Record<string, unknown>;
      const range = parseRange(query);
      const currency = parseCurrency(query.currency);
      const csv = wantsCsv(request, query.format);
      await refreshRecoveryCases(deps.sql);
      if (csv) {
        const name = `recovery-ledger_${range.fromText}_${range.toText}${currency ? `_${currency}` : ''}.csv`;
        return reply
          .header('content-type', 'text/csv; charset=utf-8')
          .header('content-disposition', `attachment; filename="${name}"`)
          .header('cache-control', 'no-store')
          .send(Readable.from(recoveryLedgerCsv(deps.sql, { from: range.from, to: range.to, currency })));
      }
      return recoveryReport(deps.sql, { ...range, currency });
    },
  );

  app.get(
    '/v1/reports/workflows/:key',
    {
      schema: {
        summary: "A workflow's funnel, primary KPI, split-test statistics and hold-out lift",
        description: 'Runs started in [from, to) (UTC dates). The answer carries the written definition of every figure.',
        tags: ['reports'],
        security,
        params: { type: 'object', properties: { key: { type: 'string' } }, required: ['key'] },
        querystring: {
          type: 'object',
          properties: { from: dateParam, to: { ...dateParam, description: 'UTC date, YYYY-MM-DD (exclusive)' } },
          required: ['from', 'to'],
        },
        response: { 400: ErrorSchema, 401: ErrorSchema, 404: ErrorSchema },
      },
      validatorCompiler: () => () => true,
    },
    async (request) => {
      const { key } = request.params as { key: string };
      const range = parseRange((request.query ?? {}) as Record<string, unknown>);
      const workflow = await getWorkflow(deps.sql, key);
      if (!workflow) throw new HttpError(404, 'workflow_not_found', `No workflow "${key}"`);
      if (key === RECOVERY_WORKFLOW) await refreshRecoveryCases(deps.sql);
      return workflowReport(deps.sql, { key, definition: workflow.definition }, range);
    },
  );
}
