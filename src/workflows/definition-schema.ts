// The JSON Schema of a workflow definition (published in OpenAPI) and `validateDefinition`,
// which checks structure and semantics (unique step ids, parsable durations, known segments, …)
// and reports every problem at once, each with a JSON-pointer path such as
// "/steps/2/onEvent/0/duration". Publish-time contracts that need the template catalog are in
// publish-contracts.ts.
//
// The schema pieces are built by factories that take the nested Step/Condition schema as a
// parameter: the published schema passes recursive references (Type.Cyclic), while validation
// passes `unknown` and walks the tree itself, choosing each node's variant by its discriminator.
// That way an error names the one variant the author meant instead of every union member.

import { Type } from 'typebox';
import type { TSchema } from 'typebox';
import { Compile } from 'typebox/compile';
import type { WorkflowDefinition } from './types.ts';
import { SCOPE_ROOTS } from './conditions.ts';
import { parseDuration } from './duration.ts';
import { parseTimeOfDay } from './local-time.ts';

// ---------------------------------------------------------------------------------------------
// Schema building blocks

const closed = { additionalProperties: false } as const;
const nonEmpty = (description?: string) => Type.String({ minLength: 1, ...(description ? { description } : {}) });
const isoDuration = (description: string) => Type.String({ minLength: 2, description: `ISO-8601 duration, ${description}` });
const timeOfDay = (description: string) => Type.String({ pattern: '^([01][0-9]|2[0-3]):[0-5][0-9]$', description });

const OPERATORS = ['eq', 'neq', 'gt', 'gte', 'lt', 'lte', 'in', 'nin', 'contains', 'exists', 'not_exists'] as const;
const COUNT_OPERATORS = ['eq', 'neq', 'gt', 'gte', 'lt', 'lte'] as const;

function conditionVariants(condition: TSchema) {
  return {
    all: Type.Object({ all: Type.Array(condition, { minItems: 1 }) }, closed),
    any: Type.Object({ any: Type.Array(condition, { minItems: 1 }) }, closed),
    not: Type.Object({ not: condition }, closed),
    count: Type.Object(
      {
        count: Type.Object(
          {
            event: nonEmpty('event name to count'),
            within: isoDuration('the counting window ending now, e.g. P7D'),
            where: Type.Optional(condition),
            scope: Type.Optional(Type.Enum(['contact', 'account'])),
          },
          closed,
        ),
        op: Type.Enum(COUNT_OPERATORS),
        value: Type.Number(),
      },
      { ...closed, description: 'how many times an event happened, e.g. Paywall Hit ≥ 3 within P7D' },
    ),
    segment: Type.Object({ segment: nonEmpty('a key of the definition\'s `segments`') }, closed),
    comparison: Type.Object(
      {
        path: nonEmpty('dotted path into the scope, e.g. account.traits.usage_pct'),
        op: Type.Enum(OPERATORS),
        value: Type.Optional(Type.Unknown()),
        ref: Type.Optional(nonEmpty('compare with the value at this path instead of `value`')),
      },
      closed,
    ),
  };
}

type ConditionKind = keyof ReturnType<typeof conditionVariants>;

function eventMatcher(condition: TSchema) {
  return Type.Object({ event: nonEmpty('event name'), where: Type.Optional(condition) }, closed);
}

/** Step types an exit may run as the run ends: they act at once (an ended run cannot wait). */
export const EXIT_STEP_TYPES = ['notify', 'webhook', 'update_contact', 'branch'] as const;

function exitMatcher(condition: TSchema, step: TSchema) {
  return Type.Object(
    {
      event: nonEmpty('event name'),
      where: Type.Optional(condition),
      steps: Type.Optional(
        Type.Array(step, { description: `run as the run exits on this event (e.g. an alert): only ${EXIT_STEP_TYPES.join(', ')} steps` }),
      ),
    },
    closed,
  );
}

function stepVariants(step: TSchema, condition: TSchema) {
  const id = Type.String({ pattern: '^[a-zA-Z0-9_-]+$', description: 'unique across the whole definition' });
  const steps = Type.Array(step);
  return {
    wait: Type.Object({ id, type: Type.Literal('wait'), duration: isoDuration('e.g. P3D') }, closed),
    wait_until: Type.Object(
      {
        id,
        type: Type.Literal('wait_until'),
        window: Type.Object(
          { start: timeOfDay('local window start, HH:MM'), end: timeOfDay('local window end (exclusive), HH:MM') },
          closed,
        ),
        weekdaysOnly: Type.Optional(Type.Boolean()),
      },
      closed,
    ),
    wait_for_event: Type.Object(
      {
        id,
        type: Type.Literal('wait_for_event'),
        event: nonEmpty('event name to wait for'),
        where: Type.Optional(condition),
        timeout: isoDuration('how long to wait, e.g. P2D'),
        onEvent: steps,
        onTimeout: steps,
      },
      closed,
    ),
    branch: Type.Object(
      {
        id,
        type: Type.Literal('branch'),
        branches: Type.Array(
          Type.Object({ when: condition, steps, label: Type.Optional(Type.String()) }, closed),
          { minItems: 1 },
        ),
        otherwise: steps,
      },
      closed,
    ),
    split: Type.Object(
      {
        id,
        type: Type.Literal('split'),
        variants: Type.Array(Type.Object({ key: nonEmpty('variant key'), weight: Type.Number(), steps }, closed), {
          minItems: 1,
        }),
        holdout: Type.Optional(Type.Object({ weight: Type.Number() }, closed)),
      },
      closed,
    ),
    send_email: Type.Object(
      {
        id,
        type: Type.Literal('send_email'),
        template: nonEmpty('template key'),
        subject: nonEmpty(),
        subjects: Type.Optional(Type.Record(Type.String(), Type.String({ minLength: 1 }))),
      },
      closed,
    ),
    webhook: Type.Object(
      {
        id,
        type: Type.Literal('webhook'),
        url: nonEmpty('http(s) URL'),
        body: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
      },
      closed,
    ),
    notify: Type.Object(
      {
        id,
        type: Type.Literal('notify'),
        channel: Type.Literal('slack'),
        text: Type.String({ minLength: 1, maxLength: 150 }),
        webhookUrl: Type.Optional(Type.String({ pattern: '^https?://', maxLength: 2048 })),
      },
      closed,
    ),
    update_contact: Type.Object(
      { id, type: Type.Literal('update_contact'), traits: Type.Record(Type.String(), Type.Unknown()) },
      closed,
    ),
    exit: Type.Object({ id, type: Type.Literal('exit'), reason: Type.Optional(Type.String()) }, closed),
  };
}

type StepKind = keyof ReturnType<typeof stepVariants>;

function triggerVariants(condition: TSchema) {
  return {
    event: Type.Object({ type: Type.Literal('event'), event: nonEmpty('event name'), where: Type.Optional(condition) }, closed),
    segment: Type.Object({ type: Type.Literal('segment'), condition }, closed),
    date_trait: Type.Object(
      {
        type: Type.Literal('date_trait'),
        trait: nonEmpty('trait holding a date'),
        offset: Type.String({ minLength: 2, description: 'ISO-8601 duration after the date; "-P3D" = 3 days before' }),
        subject: Type.Optional(
          Type.Enum(['contact', 'account'], {
            description: 'whose traits hold the date: the contact\'s (identify traits, the default) or its account\'s (group traits)',
          }),
        ),
      },
      closed,
    ),
  };
}

type TriggerKind = keyof ReturnType<typeof triggerVariants>;

function entryVariants() {
  return {
    once: Type.Object({ mode: Type.Literal('once') }, closed),
    once_per_key: Type.Object({ mode: Type.Literal('once_per_key'), key: nonEmpty('path, e.g. trigger.properties.invoiceId') }, closed),
    every_time: Type.Object({ mode: Type.Literal('every_time'), cooldown: Type.Optional(isoDuration('e.g. P30D')) }, closed),
  };
}

type EntryMode = keyof ReturnType<typeof entryVariants>;

function definitionObject(step: TSchema, condition: TSchema, trigger: TSchema, entry: TSchema) {
  return Type.Object(
    {
      key: Type.String({ pattern: '^[a-z0-9][a-z0-9_-]*$', description: 'stable identifier, e.g. billing-recovery' }),
      name: nonEmpty(),
      description: Type.Optional(Type.String()),
      category: Type.Enum(['transactional', 'lifecycle', 'marketing']),
      trigger,
      entryCondition: Type.Optional(condition),
      entry,
      audience: Type.Optional(Type.Enum(['contact', 'account_admins'])),
      goal: Type.Optional(Type.Union([eventMatcher(condition), Type.Object({ condition }, closed)])),
      exit: Type.Optional(Type.Array(exitMatcher(condition, step))),
      duringRecovery: Type.Optional(Type.Enum(['hold', 'skip'])),
      goalWindow: Type.Optional(isoDuration('how long a finished or hold-out run listens for the goal; default P30D')),
      segments: Type.Optional(Type.Record(Type.String(), condition)),
      options: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
      steps: Type.Array(step),
    },
    closed,
  );
}

/** The published JSON Schema of a WorkflowDefinition (recursive via $defs/$ref). */
export const WorkflowDefinitionSchema = Type.Cyclic(
  {
    Condition: Type.Union(Object.values(conditionVariants(Type.Ref('Condition')))),
    Step: Type.Union(Object.values(stepVariants(Type.Ref('Step'), Type.Ref('Condition')))),
    WorkflowDefinition: definitionObject(
      Type.Ref('Step'),
      Type.Ref('Condition'),
      Type.Union(Object.values(triggerVariants(Type.Ref('Condition')))),
      Type.Union(Object.values(entryVariants())),
    ),
  },
  'WorkflowDefinition',
  { title: 'WorkflowDefinition' },
);

// ---------------------------------------------------------------------------------------------
// Structural validation: one shallow validator per variant; nested steps/conditions are walked.

const nested = Type.Unknown();
const shallow = {
  condition: mapValues(conditionVariants(nested), (schema) => Compile(schema)),
  step: mapValues(stepVariants(nested, nested), (schema) => Compile(schema)),
  trigger: mapValues(triggerVariants(nested), (schema) => Compile(schema)),
  entry: mapValues(entryVariants(), (schema) => Compile(schema)),
  definition: Compile(definitionObject(nested, nested, nested, nested)),
  eventMatcher: Compile(eventMatcher(nested)),
  exitMatcher: Compile(exitMatcher(nested, nested)),
  goalCondition: Compile(Type.Object({ condition: nested }, closed)),
};
const fullValidator = Compile(WorkflowDefinitionSchema);

function mapValues<In, Out, Keys extends string>(record: Record<Keys, In>, map: (value: In) => Out): Record<Keys, Out> {
  return Object.fromEntries(Object.entries(record).map(([key, value]) => [key, map(value as In)])) as Record<Keys, Out>;
}

export interface DefinitionError {
  path: string;
  message: string;
}

export type DefinitionValidation =
  | { ok: true; definition: WorkflowDefinition }
  | { ok: false; errors: DefinitionError[] };

interface Validator {
  Check(value: unknown): boolean;
  Errors(value: unknown): { instancePath: string; schemaPath: string; keyword: string; message: string; params: unknown }[];
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function escapePointer(segment: string): string {
  return segment.replaceAll('~', '~0').replaceAll('/', '~1');
}

/** Runs a shallow validator and turns its errors into readable { path, message } pairs. */
function schemaErrors(validator: Validator, value: unknown, base: string): DefinitionError[] {
  if (validator.Check(value)) return [];
  const errors: DefinitionError[] = [];
  for (const error of validator.Errors(value)) {
    const at = `${base}${error.instancePath}`;
    const params = (error.params ?? {}) as Record<string, unknown>;
    if (error.keyword === 'required' && Array.isArray(params['requiredProperties'])) {
      for (const property of params['requiredProperties']) errors.push({ path: `${at}/${escapePointer(String(property))}`, message: 'is required' });
    } else if (error.keyword === 'additionalProperties' && Array.isArray(params['additionalProperties'])) {
      for (const property of params['additionalProperties']) errors.push({ path: `${at}/${escapePointer(String(property))}`, message: 'is not allowed' });
    } else if (error.keyword === 'boolean' && error.schemaPath.endsWith('/additionalProperties')) {
      // the same problem as the additionalProperties error above, reported per property
    } else if (error.keyword === 'enum' && Array.isArray(params['allowedValues'])) {
      errors.push({ path: at, message: `must be one of ${params['allowedValues'].map((item) => JSON.stringify(item)).join(', ')}` });
    } else {
      errors.push({ path: at, message: error.message });
    }
  }
  return dedupe(errors);
}

function dedupe(errors: DefinitionError[]): DefinitionError[] {
  const seen = new Set<string>();
  return errors.filter((error) => {
    const key = `${error.path}\u0000${error.message}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** The variant key of a node: the value of its discriminator when it names a known variant. */
function variantOf<Kind extends string>(value: unknown, field: string, kinds: Record<Kind, unknown>): Kind | null {
  if (!isRecord(value)) return null;
  const kind = value[field];
  return typeof kind === 'string' && Object.hasOwn(kinds, kind) ? (kind as Kind) : null;
}

function conditionKind(value: Record<string, unknown>): ConditionKind | null {
  for (const kind of ['all', 'any', 'not', 'count', 'segment'] as const) if (kind in value) return kind;
  return 'path' in value || 'op' in value ? 'comparison' : null;
}

function checkConditionShape(value: unknown, path: string, errors: DefinitionError[]): void {
  if (!isRecord(value)) {
    errors.push({ path, message: 'must be a condition object' });
    return;
  }
  const kind = conditionKind(value);
  if (!kind) {
    errors.push({ path, message: 'must be a condition: {all}, {any}, {not}, {count}, {segment} or {path, op}' });
    return;
  }
  errors.push(...schemaErrors(shallow.condition[kind], value, path));
  if ((kind === 'all' || kind === 'any') && Array.isArray(value[kind])) {
    (value[kind] as unknown[]).forEach((part, index) => checkConditionShape(part, `${path}/${kind}/${index}`, errors));
  } else if (kind === 'not' && 'not' in value) {
    checkConditionShape(value['not'], `${path}/not`, errors);
  } else if (kind === 'count' && isRecord(value['count']) && value['count']['where'] !== undefined) {
    checkConditionShape(value['count']['where'], `${path}/count/where`, errors);
  }
}

function checkStepsShape(value: unknown, path: string, errors: DefinitionError[]): void {
  if (!Array.isArray(value)) return; // the parent's schema reports a non-array
  value.forEach((step, index) => checkStepShape(step, `${path}/${index}`, errors));
}

function checkStepShape(value: unknown, path: string, errors: DefinitionError[]): void {
  if (!isRecord(value)) {
    errors.push({ path, message: 'must be a step object' });
    return;
  }
  const kind = variantOf<StepKind>(value, 'type', shallow.step);
  if (!kind) {
    errors.push({ path: `${path}/type`, message: `must be one of ${Object.keys(shallow.step).map((k) => JSON.stringify(k)).join(', ')}` });
    return;
  }
  errors.push(...schemaErrors(shallow.step[kind], value, path));
  switch (kind) {
    case 'wait_for_event':
      if (value['where'] !== undefined) checkConditionShape(value['where'], `${path}/where`, errors);
      checkStepsShape(value['onEvent'], `${path}/onEvent`, errors);
      checkStepsShape(value['onTimeout'], `${path}/onTimeout`, errors);
      break;
    case 'branch':
      if (Array.isArray(value['branches'])) {
        value['branches'].forEach((branch: unknown, index: number) => {
          if (!isRecord(branch)) return;
          if (branch['when'] !== undefined) checkConditionShape(branch['when'], `${path}/branches/${index}/when`, errors);
          checkStepsShape(branch['steps'], `${path}/branches/${index}/steps`, errors);
        });
      }
      checkStepsShape(value['otherwise'], `${path}/otherwise`, errors);
      break;
    case 'split':
      if (Array.isArray(value['variants'])) {
        value['variants'].forEach((variant: unknown, index: number) => {
          if (isRecord(variant)) checkStepsShape(variant['steps'], `${path}/variants/${index}/steps`, errors);
        });
      }
      break;
    default:
      break;
  }
}

function checkShape(input: unknown): DefinitionError[] {
  const errors: DefinitionError[] = [];
  if (!isRecord(input)) return [{ path: '', message: 'must be an object' }];
  errors.push(...schemaErrors(shallow.definition, input, ''));

  if (input['trigger'] !== undefined) {
    const kind = variantOf<TriggerKind>(input['trigger'], 'type', shallow.trigger);
    if (!kind) {
      errors.push({ path: '/trigger/type', message: 'must be one of "event", "segment", "date_trait"' });
    } else {
      const trigger = input['trigger'] as Record<string, unknown>;
      errors.push(...schemaErrors(shallow.trigger[kind], trigger, '/trigger'));
      if (kind === 'event' && trigger['where'] !== undefined) checkConditionShape(trigger['where'], '/trigger/where', errors);
      if (kind === 'segment' && trigger['condition'] !== undefined) checkConditionShape(trigger['condition'], '/trigger/condition', errors);
    }
  }
  if (input['entry'] !== undefined) {
    const mode = variantOf<EntryMode>(input['entry'], 'mode', shallow.entry);
    if (!mode) errors.push({ path: '/entry/mode', message: 'must be one of "once", "once_per_key", "every_time"' });
    else errors.push(...schemaErrors(shallow.entry[mode], input['entry'], '/entry'));
  }
  if (input['entryCondition'] !== undefined) checkConditionShape(input['entryCondition'], '/entryCondition', errors);
  const goal = input['goal'];
  if (goal !== undefined) {
    if (isRecord(goal) && 'condition' in goal) {
      errors.push(...schemaErrors(shallow.goalCondition, goal, '/goal'));
      checkConditionShape(goal['condition'], '/goal/condition', errors);
    } else {
      errors.push(...schemaErrors(shallow.eventMatcher, goal, '/goal'));
      if (isRecord(goal) && goal['where'] !== undefined) checkConditionShape(goal['where'], '/goal/where', errors);
    }
  }
  if (Array.isArray(input['exit'])) {
    input['exit'].forEach((matcher: unknown, index: number) => {
      errors.push(...schemaErrors(shallow.exitMatcher, matcher, `/exit/${index}`));
      if (isRecord(matcher) && matcher['where'] !== undefined) checkConditionShape(matcher['where'], `/exit/${index}/where`, errors);
      if (isRecord(matcher)) checkStepsShape(matcher['steps'], `/exit/${index}/steps`, errors);
    });
  }
  if (isRecord(input['segments'])) {
    for (const [name, condition] of Object.entries(input['segments'])) {
      checkConditionShape(condition, `/segments/${escapePointer(name)}`, errors);
    }
  }
  checkStepsShape(input['steps'], '/steps', errors);
  return dedupe(errors);
}

// ---------------------------------------------------------------------------------------------
// Semantic validation. It runs even when the structure is wrong, so one answer lists every
// problem: each check reads the input defensively and skips what the structural pass already
// rejected (a missing field, a wrong type), and a semantic error at a path that already has a
// structural error is dropped (one message per field).

type Loose = Record<string, unknown>;

const STEP_ID = /^[a-z0-9_-]+$/i;
const DEFINITION_KEY = /^[a-z0-9][a-z0-9_-]*$/;

const asString = (value: unknown): string | undefined => (typeof value === 'string' ? value : undefined);
const asArray = (value: unknown): unknown[] => (Array.isArray(value) ? value : []);

/**
 * Visits every step object of a possibly malformed tree in execution (pre-order) order, with the
 * same JSON pointers as compile.ts's walkSteps; non-objects and non-array blocks are skipped.
 */
export function walkLooseSteps(value: unknown, visit: (step: Loose, pointer: string) => void, pointer = '/steps'): void {
  asArray(value).forEach((step, index) => {
    if (!isRecord(step)) return;
    const at = `${pointer}/${index}`;
    visit(step, at);
    switch (step['type']) {
      case 'branch':
        asArray(step['branches']).forEach((branch, branchIndex) => {
          if (isRecord(branch)) walkLooseSteps(branch['steps'], visit, `${at}/branches/${branchIndex}/steps`);
        });
        walkLooseSteps(step['otherwise'], visit, `${at}/otherwise`);
        break;
      case 'wait_for_event':
        walkLooseSteps(step['onEvent'], visit, `${at}/onEvent`);
        walkLooseSteps(step['onTimeout'], visit, `${at}/onTimeout`);
        break;
      case 'split':
        asArray(step['variants']).forEach((variant, variantIndex) => {
          if (isRecord(variant)) walkLooseSteps(variant['steps'], visit, `${at}/variants/${variantIndex}/steps`);
        });
        break;
      default:
        break;
    }
  });
}

/** Every condition object in the definition with its pointer, nested ones included. */
function forEachConditionAt(definition: Loose, visit: (condition: Loose, path: string) => void): void {
  const walk = (condition: unknown, path: string): void => {
    if (!isRecord(condition)) return;
    visit(condition, path);
    if (Array.isArray(condition['all'])) condition['all'].forEach((part, index) => walk(part, `${path}/all/${index}`));
    else if (Array.isArray(condition['any'])) condition['any'].forEach((part, index) => walk(part, `${path}/any/${index}`));
    else if ('not' in condition) walk(condition['not'], `${path}/not`);
    else if (isRecord(condition['count'])) walk(condition['count']['where'], `${path}/count/where`);
  };
  const trigger = isRecord(definition['trigger']) ? definition['trigger'] : {};
  if (trigger['type'] === 'event') walk(trigger['where'], '/trigger/where');
  if (trigger['type'] === 'segment') walk(trigger['condition'], '/trigger/condition');
  walk(definition['entryCondition'], '/entryCondition');
  const goal = definition['goal'];
  if (isRecord(goal)) {
    if ('condition' in goal) walk(goal['condition'], '/goal/condition');
    else walk(goal['where'], '/goal/where');
  }
  if (isRecord(definition['segments'])) {
    for (const [name, condition] of Object.entries(definition['segments'])) walk(condition, `/segments/${escapePointer(name)}`);
  }
  const stepConditions = (step: Loose, pointer: string): void => {
    if (step['type'] === 'branch') {
      asArray(step['branches']).forEach((branch, index) => {
        if (isRecord(branch)) walk(branch['when'], `${pointer}/branches/${index}/when`);
      });
    }
    if (step['type'] === 'wait_for_event') walk(step['where'], `${pointer}/where`);
  };
  walkLooseSteps(definition['steps'], stepConditions);
  asArray(definition['exit']).forEach((matcher, index) => {
    if (!isRecord(matcher)) return;
    walk(matcher['where'], `/exit/${index}/where`);
    walkLooseSteps(matcher['steps'], stepConditions, `/exit/${index}/steps`);
  });
}

function checkDuration(value: unknown, path: string, errors: DefinitionError[], allowNegative = false): void {
  if (typeof value !== 'string') return; // missing or not a string: the structural pass says so
  try {
    const duration = parseDuration(value);
    if (duration.negative && !allowNegative) errors.push({ path, message: `duration ${JSON.stringify(value)} must not be negative` });
  } catch (error) {
    errors.push({ path, message: (error as Error).message });
  }
}

function checkPath(path: string, pointer: string, waitForEventIds: ReadonlySet<string>, errors: DefinitionError[]): void {
  const [root, second] = path.split('.');
  if (!(SCOPE_ROOTS as readonly string[]).includes(root ?? '')) {
    errors.push({ path: pointer, message: `path ${JSON.stringify(path)} must start with one of ${SCOPE_ROOTS.join(', ')}` });
  } else if (root === 'steps' && (second === undefined || !waitForEventIds.has(second))) {
    errors.push({ path: pointer, message: `path ${JSON.stringify(path)} must name a wait_for_event step: steps.<stepId>.event…` });
  }
}

function segmentCycle(segments: Loose): string[] | null {
  const references = (condition: unknown): string[] => {
    if (!isRecord(condition)) return [];
    if (typeof condition['segment'] === 'string') return [condition['segment']];
    if (Array.isArray(condition['all'])) return condition['all'].flatMap(references);
    if (Array.isArray(condition['any'])) return condition['any'].flatMap(references);
    if ('not' in condition) return references(condition['not']);
    if (isRecord(condition['count'])) return references(condition['count']['where']);
    return [];
  };
  const visiting: string[] = [];
  const done = new Set<string>();
  const visit = (name: string): string[] | null => {
    if (done.has(name)) return null;
    const at = visiting.indexOf(name);
    if (at >= 0) return [...visiting.slice(at), name];
    if (!Object.hasOwn(segments, name)) return null;
    visiting.push(name);
    for (const reference of references(segments[name])) {
      const cycle = visit(reference);
      if (cycle) return cycle;
    }
    visiting.pop();
    done.add(name);
    return null;
  };
  for (const name of Object.keys(segments)) {
    const cycle = visit(name);
    if (cycle) return cycle;
  }
  return null;
}

function checkSemantics(definition: Loose): DefinitionError[] {
  const errors: DefinitionError[] = [];
  const key = asString(definition['key']);
  if (key !== undefined && !DEFINITION_KEY.test(key)) {
    errors.push({ path: '/key', message: 'must be lowercase letters, digits, "_" or "-", starting with a letter or digit' });
  }

  // Steps: ids, durations, windows, splits.
  const firstSeen = new Map<string, string>();
  const waitForEventIds = new Set<string>();
  const variantKeys = new Set<string>();
  const sends: { step: Loose; pointer: string }[] = [];
  let hasHoldout = false;
  const visitStep = (step: Loose, pointer: string): void => {
    const id = asString(step['id']);
    if (id !== undefined) {
      if (!STEP_ID.test(id)) errors.push({ path: `${pointer}/id`, message: 'must match /^[a-z0-9_-]+$/i' });
      const previous = firstSeen.get(id);
      if (previous !== undefined) {
        errors.push({ path: `${pointer}/id`, message: `duplicate step id ${JSON.stringify(id)} (first at ${previous})` });
      } else {
        firstSeen.set(id, `${pointer}/id`);
      }
    }
    switch (step['type']) {
      case 'wait':
        checkDuration(step['duration'], `${pointer}/duration`, errors);
        break;
      case 'wait_for_event':
        if (id !== undefined) waitForEventIds.add(id);
        checkDuration(step['timeout'], `${pointer}/timeout`, errors);
        break;
      case 'wait_until': {
        const window = isRecord(step['window']) ? step['window'] : {};
        for (const edge of ['start', 'end'] as const) {
          const value = asString(window[edge]);
          if (value !== undefined && parseTimeOfDay(value) === null) {
            errors.push({ path: `${pointer}/window/${edge}`, message: 'must be a 24h time "HH:MM"' });
          }
        }
        if (typeof window['start'] === 'string' && window['start'] === window['end']) {
          errors.push({ path: `${pointer}/window`, message: 'start and end must differ' });
        }
        break;
      }
      case 'split': {
        const keys = new Set<string>();
        asArray(step['variants']).forEach((variant, index) => {
          if (!isRecord(variant)) return;
          const weight = variant['weight'];
          if (typeof weight === 'number' && !(weight > 0)) errors.push({ path: `${pointer}/variants/${index}/weight`, message: 'must be greater than 0' });
          const variantKey = asString(variant['key']);
          if (variantKey === undefined) return;
          if (variantKey === 'holdout') errors.push({ path: `${pointer}/variants/${index}/key`, message: '"holdout" is reserved for the hold-out group' });
          if (keys.has(variantKey)) errors.push({ path: `${pointer}/variants/${index}/key`, message: `duplicate variant key ${JSON.stringify(variantKey)}` });
          keys.add(variantKey);
          variantKeys.add(variantKey);
        });
        if (isRecord(step['holdout'])) {
          hasHoldout = true;
          const weight = step['holdout']['weight'];
          if (typeof weight === 'number' && !(weight > 0)) errors.push({ path: `${pointer}/holdout/weight`, message: 'must be greater than 0' });
        }
        break;
      }
      case 'send_email':
        sends.push({ step, pointer });
        break;
      case 'webhook': {
        const url = asString(step['url']);
        if (url === undefined) break;
        let valid = false;
        try {
          const protocol = new URL(url).protocol;
          valid = protocol === 'https:' || protocol === 'http:';
        } catch {
          valid = false;
        }
        if (!valid) errors.push({ path: `${pointer}/url`, message: 'must be an http(s) URL' });
        break;
      }
      default:
        break;
    }
  };
  walkLooseSteps(definition['steps'], visitStep);
  // An exit's steps share the step-id space (their effects are keyed by run and step id) and
  // may only act at once.
  asArray(definition['exit']).forEach((matcher, index) => {
    if (!isRecord(matcher)) return;
    walkLooseSteps(matcher['steps'], (step, pointer) => {
      visitStep(step, pointer);
      const type = asString(step['type']);
      if (type !== undefined && !(EXIT_STEP_TYPES as readonly string[]).includes(type)) {
        errors.push({ path: `${pointer}/type`, message: `an exit can only run ${EXIT_STEP_TYPES.join(', ')} steps (the run has ended: it cannot wait or send email)` });
      }
    }, `/exit/${index}/steps`);
  });
  for (const { step, pointer } of sends) {
    const subjects = isRecord(step['subjects']) ? step['subjects'] : {};
    for (const variant of Object.keys(subjects)) {
      if (!variantKeys.has(variant)) {
        errors.push({ path: `${pointer}/subjects/${escapePointer(variant)}`, message: `no split has a variant ${JSON.stringify(variant)}` });
      }
    }
  }
  if (hasHoldout && definition['goal'] === undefined) {
    errors.push({ path: '/goal', message: 'is required when a split has a hold-out group (the goal measures lift)' });
  }

  // Durations outside steps.
  checkDuration(definition['goalWindow'], '/goalWindow', errors);
  const entry = isRecord(definition['entry']) ? definition['entry'] : {};
  if (entry['mode'] === 'every_time') checkDuration(entry['cooldown'], '/entry/cooldown', errors);
  const trigger = isRecord(definition['trigger']) ? definition['trigger'] : {};
  if (trigger['type'] === 'date_trait') checkDuration(trigger['offset'], '/trigger/offset', errors, true);
  if (entry['mode'] === 'once_per_key' && typeof entry['key'] === 'string') checkPath(entry['key'], '/entry/key', waitForEventIds, errors);

  // Conditions: paths, operands, segments, count windows.
  const segments = isRecord(definition['segments']) ? definition['segments'] : {};
  forEachConditionAt(definition, (condition, pointer) => {
    const kind = conditionKind(condition);
    if (kind === 'segment' && typeof condition['segment'] === 'string' && !Object.hasOwn(segments, condition['segment'])) {
      errors.push({ path: `${pointer}/segment`, message: `unknown segment ${JSON.stringify(condition['segment'])}` });
    }
    if (kind === 'count' && isRecord(condition['count'])) checkDuration(condition['count']['within'], `${pointer}/count/within`, errors);
    if (kind === 'comparison') {
      const path = asString(condition['path']);
      const ref = asString(condition['ref']);
      const op = condition['op'];
      if (path !== undefined) checkPath(path, `${pointer}/path`, waitForEventIds, errors);
      if (ref !== undefined) checkPath(ref, `${pointer}/ref`, waitForEventIds, errors);
      if (typeof op !== 'string' || !(OPERATORS as readonly string[]).includes(op)) return; // the structural pass names the operator
      const unary = op === 'exists' || op === 'not_exists';
      const hasValue = condition['value'] !== undefined;
      const hasRef = condition['ref'] !== undefined;
      if (!unary && hasValue === hasRef) {
        errors.push({ path: pointer, message: `op ${op} needs exactly one of value or ref` });
      }
      if ((op === 'in' || op === 'nin') && hasValue && !Array.isArray(condition['value'])) {
        errors.push({ path: `${pointer}/value`, message: `must be an array for op ${op}` });
      }
    }
  });
  const cycle = segmentCycle(segments);
  if (cycle) errors.push({ path: `/segments/${escapePointer(cycle[0] ?? '')}`, message: `segments reference each other in a cycle: ${cycle.join(' → ')}` });
  return errors;
}

/**
 * Structural and semantic errors of an untrusted definition, structural first, with at most one
 * message per path (a field that is structurally wrong is not judged again).
 */
export function definitionErrors(input: unknown): DefinitionError[] {
  const shapeErrors = checkShape(input);
  if (!isRecord(input)) return shapeErrors;
  return mergeErrors(shapeErrors, checkSemantics(input));
}

/** `first` plus the errors of `then` at paths `first` does not already name. */
export function mergeErrors(first: DefinitionError[], then: DefinitionError[]): DefinitionError[] {
  const taken = new Set(first.map((error) => error.path));
  return dedupe([...first, ...then.filter((error) => !taken.has(error.path))]);
}

/** Validates an untrusted definition: structure and semantics, every problem reported. */
export function validateDefinition(input: unknown): DefinitionValidation {
  const errors = definitionErrors(input);
  if (errors.length > 0) return { ok: false, errors };
  // The walk above and the published schema are built from the same pieces; this guards drift.
  if (!fullValidator.Check(input)) {
    return { ok: false, errors: schemaErrors(fullValidator, input, '') };
  }
  return { ok: true, definition: input as WorkflowDefinition };
}
