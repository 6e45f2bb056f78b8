// Admin API for workflows: list, read, create/change (a new version each time), pause/resume,
// and simulate a definition against a profile and a timeline without sending or storing.
//
// A definition is published (PUT) or simulated inline only if it passes validateForPublish: the
// schema, the semantic checks and the publish-time contracts (templates exist in the catalog
// loaded at start-up and fit the category; billing recovery once per invoice). Every problem
// comes back in one 400 (see invalidDefinition).
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { AppDeps } from '../app-deps.ts';
import { requireKey } from '../http/auth.ts';
import { ErrorSchema, HttpError } from '../http/errors.ts';
import { mergeErrors, WorkflowDefinitionSchema } from './definition-schema.ts';
import type { DefinitionError } from './definition-schema.ts';
import { validateForPublish } from './publish-contracts.ts';
import type { TemplateLookup } from './publish-contracts.ts';
import { resolveSimulationPolicy, simulate } from './simulate.ts';
import { runSettings } from './context-loader.ts';
import type { EventFact, WorkflowDefinition } from './types.ts';
import { getWorkflow, listWorkflows, putWorkflow, setPaused } from './workflow-store.ts';
import { adminActor, recordAudit } from '../admin/audit-log.ts';

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

/** The 400 for a definition that cannot be published: every problem, each with its JSON pointer. */
export const InvalidDefinitionSchema = {
  type: 'object',
  description:
    'error = "invalid_definition"; errors lists every problem (structural, semantic, publish-time contracts), each with a JSON pointer into the definition; details is the same list (earlier clients read it).',
  properties: {
    error: { type: 'string' },
    message: { type: 'string' },
    errors: {
      type: 'array',
      items: { type: 'object', properties: { path: { type: 'string' }, message: { type: 'string' } }, required: ['path', 'message'] },
    },
    // Any shape: the same 400 also carries invalid_json / validation_failed from the generic
    // error handler, and a schema that requires `errors` made those a 500 (found by fuzzing).
    details: {},
  },
  required: ['error', 'message'],
} as const;

/** Problems listed in the message; the errors array always has all of them. */
const MESSAGE_PROBLEMS = 10;

function invalidDefinition(reply: FastifyReply, errors: DefinitionError[]) {
  const listed = errors.slice(0, MESSAGE_PROBLEMS).map((error) => `${error.path || '/'} ${error.message}`);
  if (errors.length > MESSAGE_PROBLEMS) listed.push(`… and ${errors.length - MESSAGE_PROBLEMS} more`);
  const count = errors.length === 1 ? '1 problem' : `${errors.length} problems`;
  return reply.code(400).send({ error: 'invalid_definition', message: `The definition has ${count}: ${listed.join('; ')}`, errors, details: errors });
}

/**
 * Checks an untrusted definition for `key` (the URL's): every error, or the definition. The body
 * may omit its key; a different one is an error among the others.
 */
function checkDefinition(body: unknown, key: string, templates: TemplateLookup): { ok: true; definition: WorkflowDefinition } | { ok: false; errors: DefinitionError[] } {
  if (!body || typeof body !== 'object' || Array.isArray(body)) return { ok: false, errors: [{ path: '', message: 'must be a JSON object (a workflow definition)' }] };
  const record = body as Json;
  const candidate = { ...record, key: record.key ?? key };
  const keyErrors: DefinitionError[] =
    candidate.key === key ? [] : [{ path: '/key', message: `must match the URL key ${JSON.stringify(key)} (got ${JSON.stringify(candidate.key)})` }];
  const validation = validateForPublish(candidate, templates);
  if (validation.ok && keyErrors.length === 0) return validation;
  return { ok: false, errors: mergeErrors(keyErrors, validation.ok ? [] : validation.errors) };
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
    customer: {
      type: ['object', 'null'],
      description:
        'The run\'s Stripe customer (conditions read customer.*): currency (default: the invoice\'s, else the subscription\'s) and mrr in it (minor units), or mrrByCurrency. settings.* (e.g. recoveryAlertMrr) are this instance\'s, for that currency.',
      properties: {
        id: { type: 'string' },
        currency: { type: 'string', pattern: '^[a-zA-Z]{3}$' },
        mrr: { type: 'integer', minimum: 0 },
        mrrByCurrency: { type: 'object', additionalProperties: { type: 'integer', minimum: 0 } },
      },
      additionalProperties: false,
    },
    policy: {
      type: ['object', 'string'],
      description:
        'Send policy. Default: the instance\'s FREQUENCY_CAP and QUIET_HOURS, as a real run. "none": no policy. An object overrides single fields: frequencyCap (ISO duration | null | "off"), quietHours ({start,end} | "HH:MM-HH:MM" | null | "off"), recoveryOpen, lastCappedSendAt, timezone (IANA; null = the contact\'s timezone trait, else the account\'s), suppressed ("all" | "non_transactional" | null).',
    },
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
    requireKey(request, deps.config.adminTokens, 'LIFELINE_ADMIN_TOKEN', 'The admin API');
  });
  const security = [{ adminToken: [] }];
  // Publishing checks templates against the catalog; without one nothing can be checked.
  const templates = (): TemplateLookup => {
    if (!deps.templates) throw new HttpError(503, 'templates_unavailable', 'Templates are not loaded: workflow definitions cannot be checked');
    return deps.templates;
  };

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
          400: InvalidDefinitionSchema,
          401: ErrorSchema,
          503: ErrorSchema,
        },
      },
      // Validation is ours (all errors, with paths), not Fastify's first-error check.
      validatorCompiler: () => () => true,
    },
    async (request, reply) => {
      const { key } = request.params as { key: string };
      const checked = checkDefinition(request.body, key, templates());
      if (!checked.ok) return invalidDefinition(reply, checked.errors);
      const previous = await getWorkflow(deps.sql, key);
      const { version, created } = await deps.sql.begin((tx) => putWorkflow(tx, checked.definition, deps.clock.now()));
      const before = (previous?.definition ?? {}) as Record<string, unknown>;
      const after = checked.definition as unknown as Record<string, unknown>;
      const changed = [...new Set([...Object.keys(before), ...Object.keys(after)])].filter((k) => JSON.stringify(before[k]) !== JSON.stringify(after[k]));
      await recordAudit(deps.sql, {
        at: deps.clock.now(), actor: adminActor(request), action: 'workflow.published', target: key,
        diff: { version: { from: previous?.version ?? null, to: version }, changed },
      });
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
        await recordAudit(deps.sql, {
          at: deps.clock.now(), actor: adminActor(request), action: paused ? 'workflow.paused' : 'workflow.resumed', target: key,
          diff: { paused: { to: paused } },
        });
        return { key, paused };
      },
    );
  }

  app.post(
    '/v1/workflows/:key/simulate',
    {
      schema: {
        summary: 'Simulate a workflow on a profile and a timeline (virtual clock; nothing is sent or stored)',
        description:
          'Runs the stored definition, or `definition` (checked like a PUT: 400 invalid_definition with every problem), with the same pure functions as the engine. The send policy is this instance\'s (FREQUENCY_CAP, QUIET_HOURS) unless `policy` overrides it; the answer echoes the policy it assumed.',
        tags: ['workflows'],
        security,
        params: KeyParams,
        body: SimulateBody,
      },
    },
    async (request, reply) => {
      const { key } = request.params as { key: string };
      const body = request.body as {
        contact?: { id?: string | number; email?: string | null; traits?: Json };
        account?: { id?: string | number; traits?: Json } | null;
        invoice?: Json | null;
        subscription?: Json | null;
        customer?: { id?: string; currency?: string; mrr?: number; mrrByCurrency?: Record<string, number> } | null;
        policy?: unknown;
        timeline: EventFact[];
        until?: string;
        definition?: Json;
      };
      const resolved = resolveSimulationPolicy(deps.config.policy, body.policy);
      if (!resolved.ok) throw new HttpError(400, 'validation_failed', resolved.message);
      let definition: WorkflowDefinition;
      if (body.definition) {
        // The same checks as a PUT: a simulation must not predict sends a publish would refuse.
        const checked = checkDefinition(body.definition, key, templates());
        if (!checked.ok) return invalidDefinition(reply, checked.errors);
        definition = checked.definition;
      } else {
        const workflow = await getWorkflow(deps.sql, key);
        if (!workflow) throw new HttpError(404, 'workflow_not_found', `No workflow "${key}"`);
        definition = workflow.definition;
      }
      // The run's currency as the engine takes it (context-loader.ts): the invoice's, else the
      // subscription's; a customer given with its own currency says which.
      const text = (v: unknown) => (typeof v === 'string' && v !== '' ? v.toLowerCase() : null);
      const currency = text(body.customer?.currency) ?? text(body.invoice?.['currency']) ?? text(body.subscription?.['currency']);
      const byCurrency = Object.fromEntries(Object.entries(body.customer?.mrrByCurrency ?? {}).map(([c, v]) => [c.toLowerCase(), v]));
      const customer = body.customer
        ? { id: body.customer.id ?? 'simulated', currency, mrr: body.customer.mrr ?? (currency ? (byCurrency[currency] ?? null) : null), mrrByCurrency: byCurrency }
        : null;
      const settings = runSettings(deps.config, currency);
      const result = simulate(definition, {
        contact: { id: body.contact?.id ?? 'simulated', email: body.contact?.email ?? null, traits: body.contact?.traits ?? {} },
        account: body.account ? { id: body.account.id ?? 'simulated', traits: body.account.traits ?? {} } : null,
        invoice: body.invoice ?? null,
        subscription: body.subscription ?? null,
        customer,
        settings,
        policy: resolved.policy,
        timeline: body.timeline.map((e) => ({ name: e.name, properties: e.properties ?? {}, occurredAt: new Date(e.occurredAt).toISOString() })),
        ...(body.until ? { until: body.until } : {}),
      });
      // The policy the prediction assumed, so a reader knows what was (not) applied.
      return { ...result, policy: resolved.policy, settings };
    },
  );
}
