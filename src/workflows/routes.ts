// Admin API for workflows: list, read, create/change (a new version each time), pause/resume,
// and simulate a definition against a profile and a timeline without sending or storing.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { AppDeps } from '../app.ts';
import { requireKey } from '../http/auth.ts';
import { ErrorSchema, HttpError } from '../http/errors.ts';
import { validateDefinition, WorkflowDefinitionSchema } from './definition-schema.ts';
import { NO_POLICY, simulate } from './simulate.ts';
import type { Context, EventFact } from './types.ts';
import { getWorkflow, listWorkflows, putWorkflow, setPaused } from './workflow-store.ts';

type Json = Record<string, unknown>;

/** TypeBox writes cyclic references as bare names ("$ref": "Step"); rewrite them for a document. */
function rewriteRefs(node: unknown, prefix: string): unknown {
  if (Array.isArray(node)) return node.map((n) => rewriteRefs(n, prefix));
  if (node && typeof node === 'object') {
    const out: Json = {};
    for (const [k, v] of Object.entries(node)) {
      out[k] = k === '$ref' && typeof v === 'string' && !v.startsWith('#') ? `${prefix}${v}` : rewriteRefs(v, prefix);
    }
    return out;
  }
  return node;
}

/** The definition schema as standalone JSON Schema 2020-12 (served at /v1/workflows/schema). */
export function definitionJsonSchema(): Json {
  const schema = rewriteRefs(WorkflowDefinitionSchema, '#/$defs/') as Json;
  return { $schema: 'https://json-schema.org/draft/2020-12/schema', title: 'Lifeline workflow definition', ...schema };
}

/** The same schema as OpenAPI components (each $def becomes #/components/schemas/<name>). */
export function definitionOpenApiComponents(): Record<string, Json> {
  const schema = rewriteRefs(WorkflowDefinitionSchema, '#/components/schemas/') as Json & { $defs?: Record<string, Json>; $ref?: string };
  const components: Record<string, Json> = { ...(schema.$defs ?? {}) };
  components.WorkflowDefinitionDocument = { $ref: schema.$ref ?? '#/components/schemas/WorkflowDefinition', description: 'A workflow definition (JSON)' };
  return components;
}

const KeyParams = { type: 'object', properties: { key: { type: 'string', pattern: '^[a-z0-9][a-z0-9_\\-]*$' } }, required: ['key'] } as const;

const SimulateBody = {
  type: 'object',
  required: ['timeline'],
  properties: {
    contact: {
      type: 'object',
      properties: { id: { type: ['string', 'number'] }, email: { type: ['string', 'null'] }, traits: { type: 'object' } },
    },
    account: { type: ['object', 'null'], properties: { id: { type: ['string', 'number'] }, traits: { type: 'object' } } },
    invoice: { type: ['object', 'null'] },
    subscription: { type: ['object', 'null'] },
    policy: { type: 'object' },
    timeline: {
      type: 'array',
      maxItems: 1000,
      items: {
        type: 'object',
        required: ['name', 'occurredAt'],
        properties: { name: { type: 'string', minLength: 1 }, properties: { type: 'object' }, occurredAt: { type: 'string', format: 'date-time' } },
      },
    },
    until: { type: 'string', format: 'date-time' },
    definition: { type: 'object', description: 'simulate this (unpublished) definition instead of the stored one' },
  },
} as const;

export async function workflowRoutes(app: FastifyInstance, deps: AppDeps): Promise<void> {
  app.addHook('onRequest', async (request: FastifyRequest) => {
    requireKey(request, deps.config.adminToken, 'LIFELINE_ADMIN_TOKEN', 'The admin API');
  });
  const security = [{ adminToken: [] }];

  app.get('/v1/workflows/schema', { schema: { summary: 'JSON Schema of workflow definitions', tags: ['workflows'], security } }, async () => definitionJsonSchema());

  app.get('/v1/workflows', { schema: { summary: 'List workflows (current version of each)', tags: ['workflows'], security } }, async () => ({
    workflows: await listWorkflows(deps.sql),
  }));

  app.get(
    '/v1/workflows/:key',
    { schema: { summary: 'A workflow with its current definition and version history', tags: ['workflows'], security, params: KeyParams, response: { 404: ErrorSchema } } },
    async (request) => {
      const { key } = request.params as { key: string };
      const workflow = await getWorkflow(deps.sql, key);
      if (!workflow) throw new HttpError(404, 'workflow_not_found', `No workflow "${key}"`);
      return workflow;
    },
  );

  app.put(
    '/v1/workflows/:key',
    {
      schema: {
        summary: 'Create a workflow or publish a new version of it',
        description:
          'The body is a workflow definition (see the WorkflowDefinition schema, or GET /v1/workflows/schema). It is validated in full; every problem is returned with its JSON path. Runs in flight stay on the version they started with.',
        tags: ['workflows'],
        security,
        params: KeyParams,
        body: { $ref: '#/components/schemas/WorkflowDefinition' },
        response: {
          200: { type: 'object', properties: { key: { type: 'string' }, version: { type: 'integer' }, created: { type: 'boolean' } } },
          201: { type: 'object', properties: { key: { type: 'string' }, version: { type: 'integer' }, created: { type: 'boolean' } } },
          400: ErrorSchema,
          401: ErrorSchema,
        },
      },
      // Validation is ours (all errors, with paths), not Fastify's first-error check.
      validatorCompiler: () => () => true,
    },
    async (request, reply) => {
      const { key } = request.params as { key: string };
      const body = request.body as Json | null;
      if (!body || typeof body !== 'object' || Array.isArray(body)) throw new HttpError(400, 'invalid_definition', 'The body must be a JSON workflow definition');
      const candidate = { ...body, key: body.key ?? key };
      if (candidate.key !== key) throw new HttpError(400, 'invalid_definition', `Body key "${String(candidate.key)}" does not match the URL key "${key}"`);
      const validation = validateDefinition(candidate);
      if (!validation.ok) {
        throw new HttpError(400, 'invalid_definition', `The definition has ${validation.errors.length} problem(s): ${validation.errors[0]!.path} ${validation.errors[0]!.message}`, validation.errors);
      }
      const { version, created } = await putWorkflow(deps.sql, validation.definition, deps.clock.now());
      return reply.code(created ? 201 : 200).send({ key, version, created });
    },
  );

  for (const [action, paused] of [['pause', true], ['resume', false]] as const) {
    app.post(
      `/v1/workflows/:key/${action}`,
      { schema: { summary: paused ? 'Pause: no new runs start (runs in flight continue)' : 'Resume a paused workflow', tags: ['workflows'], security, params: KeyParams } },
      async (request) => {
        const { key } = request.params as { key: string };
        if (!(await setPaused(deps.sql, key, paused, deps.clock.now()))) throw new HttpError(404, 'workflow_not_found', `No workflow "${key}"`);
        return { key, paused };
      },
    );
  }

  app.post(
    '/v1/workflows/:key/simulate',
    {
      schema: {
        summary: 'Simulate a workflow on a profile and a timeline (virtual clock; nothing is sent or stored)',
        tags: ['workflows'],
        security,
        params: KeyParams,
        body: SimulateBody,
      },
    },
    async (request) => {
      const { key } = request.params as { key: string };
      const body = request.body as {
        contact?: { id?: string | number; email?: string | null; traits?: Json };
        account?: { id?: string | number; traits?: Json } | null;
        invoice?: Json | null;
        subscription?: Json | null;
        policy?: Partial<Context['policy']>;
        timeline: EventFact[];
        until?: string;
        definition?: Json;
      };
      let definition;
      if (body.definition) {
        const validation = validateDefinition({ ...body.definition, key: body.definition.key ?? key });
        if (!validation.ok) throw new HttpError(400, 'invalid_definition', 'The definition to simulate is invalid', validation.errors);
        definition = validation.definition;
      } else {
        const workflow = await getWorkflow(deps.sql, key);
        if (!workflow) throw new HttpError(404, 'workflow_not_found', `No workflow "${key}"`);
        definition = workflow.definition;
      }
      return simulate(definition, {
        contact: { id: body.contact?.id ?? 'simulated', email: body.contact?.email ?? null, traits: body.contact?.traits ?? {} },
        account: body.account ? { id: body.account.id ?? 'simulated', traits: body.account.traits ?? {} } : null,
        invoice: body.invoice ?? null,
        subscription: body.subscription ?? null,
        ...(body.policy ? { policy: body.policy } : {}),
        timeline: body.timeline.map((e) => ({ name: e.name, properties: e.properties ?? {}, occurredAt: new Date(e.occurredAt).toISOString() })),
        ...(body.until ? { until: body.until } : {}),
      });
    },
  );
}
