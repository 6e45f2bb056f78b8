import { test } from 'node:test';
import assert from 'node:assert/strict';
import { validateDefinition, WorkflowDefinitionSchema } from '../../src/workflows/definition-schema.ts';
import type { DefinitionError } from '../../src/workflows/definition-schema.ts';

function valid(): Record<string, unknown> {
  return {
    key: 'trial-nudge',
    name: 'Trial nudge',
    category: 'lifecycle',
    trigger: { type: 'event', event: 'Trial Started' },
    entry: { mode: 'once' },
    goal: { event: 'Teammate Invited' },
    steps: [
      { id: 'wait_1', type: 'wait', duration: 'P1D' },
      {
        id: 'wait_invite',
        type: 'wait_for_event',
        event: 'Teammate Invited',
        timeout: 'P2D',
        onEvent: [],
        onTimeout: [{ id: 'nudge', type: 'send_email', template: 'nudge', subject: 'Invite your team' }],
      },
    ],
  };
}

function errorsOf(input: unknown): DefinitionError[] {
  const result = validateDefinition(input);
  assert.equal(result.ok, false, 'expected the definition to be invalid');
  return result.ok ? [] : result.errors;
}

function assertError(errors: DefinitionError[], path: string, message: RegExp): void {
  assert.ok(
    errors.some((error) => error.path === path && message.test(error.message)),
    `expected an error at ${path} matching ${message}; got ${JSON.stringify(errors)}`,
  );
}

test('a valid definition passes and comes back typed', () => {
  const result = validateDefinition(valid());
  assert.equal(result.ok, true);
  assert.equal(result.ok && result.definition.key, 'trial-nudge');
});

test('structural errors point at the offending field inside nested steps', () => {
  const input = valid();
  input['steps'] = [
    { id: 'a', type: 'wait' },
    {
      id: 'b',
      type: 'wait_for_event',
      event: 'X',
      timeout: 'P1D',
      onEvent: [{ id: 'c', type: 'send_email', template: 't', subject: 's', sbject: 'typo' }],
      onTimeout: [{ id: 'd', type: 'sleep' }],
    },
  ];
  const errors = errorsOf(input);
  assertError(errors, '/steps/0/duration', /is required/);
  assertError(errors, '/steps/1/onEvent/0/sbject', /is not allowed/);
  assertError(errors, '/steps/1/onTimeout/0/type', /must be one of "wait", "wait_until"/);
  assert.equal(errors.length, 3, `only the three real problems: ${JSON.stringify(errors)}`);
});

test('conditions are checked by kind, with their paths', () => {
  const input = valid();
  input['trigger'] = {
    type: 'event',
    event: 'Signed Up',
    where: { all: [{ path: 'event.properties.plan', op: 'equals', value: 'pro' }, { nonsense: true }] },
  };
  const errors = errorsOf(input);
  assertError(errors, '/trigger/where/all/0/op', /must be one of "eq", "neq"/);
  assertError(errors, '/trigger/where/all/1', /must be a condition/);
});

test('top-level problems: missing fields, bad enums, unknown trigger and entry types', () => {
  const errors = errorsOf({ key: 'x', category: 'spam', trigger: { type: 'webhook' }, entry: { mode: 'twice' }, steps: [] });
  assertError(errors, '/name', /is required/);
  assertError(errors, '/category', /must be one of "transactional", "lifecycle", "marketing"/);
  assertError(errors, '/trigger/type', /must be one of "event", "segment", "date_trait"/);
  assertError(errors, '/entry/mode', /must be one of "once", "once_per_key", "every_time"/);
  assert.deepEqual(errorsOf('nope'), [{ path: '', message: 'must be an object' }]);
});

test('definition key format', () => {
  for (const key of ['Trial', 'trial nudge', '-trial', '']) {
    assertError(errorsOf({ ...valid(), key }), '/key', /must match pattern/);
  }
});

test('durations must parse wherever they appear', () => {
  const input = valid();
  input['goalWindow'] = 'P5';
  input['entry'] = { mode: 'every_time', cooldown: 'thirty days' };
  input['steps'] = [
    { id: 'w', type: 'wait', duration: 'P3X' },
    {
      id: 'b', type: 'wait_for_event', event: 'X', timeout: 'PT', onTimeout: [],
      onEvent: [{ id: 'w2', type: 'wait', duration: '-P1D' }],
    },
    {
      id: 'br', type: 'branch', otherwise: [],
      branches: [{ when: { count: { event: 'Paywall Hit', within: '7 days' }, op: 'gte', value: 3 }, steps: [] }],
    },
  ];
  const errors = errorsOf(input);
  assertError(errors, '/goalWindow', /invalid ISO-8601 duration "P5"/);
  assertError(errors, '/entry/cooldown', /invalid ISO-8601 duration/);
  assertError(errors, '/steps/0/duration', /invalid ISO-8601 duration "P3X"/);
  assertError(errors, '/steps/1/timeout', /"T" must be followed/);
  assertError(errors, '/steps/1/onEvent/0/duration', /must not be negative/);
  assertError(errors, '/steps/2/branches/0/when/count/within', /invalid ISO-8601 duration "7 days"/);
});

test('a date-trait offset may be negative ("3 days before")', () => {
  const input = { ...valid(), trigger: { type: 'date_trait', trait: 'trial_ends_at', offset: '-P3D' } };
  assert.equal(validateDefinition(input).ok, true);
});

test('step ids: format and uniqueness across the whole tree', () => {
  const input = valid();
  input['steps'] = [
    { id: 'dup', type: 'wait', duration: 'P1D' },
    { id: 'has space', type: 'wait', duration: 'P1D' },
    { id: 'b', type: 'branch', branches: [{ when: { path: 'contact.traits.plan', op: 'exists' }, steps: [{ id: 'dup', type: 'exit' }] }], otherwise: [] },
  ];
  const errors = errorsOf(input);
  assertError(errors, '/steps/1/id', /must match pattern/);
  input['steps'] = [
    { id: 'dup', type: 'wait', duration: 'P1D' },
    { id: 'b', type: 'branch', branches: [{ when: { path: 'contact.traits.plan', op: 'exists' }, steps: [{ id: 'dup', type: 'exit' }] }], otherwise: [] },
  ];
  assertError(errorsOf(input), '/steps/1/branches/0/steps/0/id', /duplicate step id "dup" \(first at \/steps\/0\/id\)/);
});

test('wait_until windows must be HH:MM and not empty', () => {
  const input = valid();
  input['steps'] = [{ id: 'w', type: 'wait_until', window: { start: '9:00', end: '17:00' } }];
  assertError(errorsOf(input), '/steps/0/window/start', /must match pattern/);
  input['steps'] = [{ id: 'w', type: 'wait_until', window: { start: '09:00', end: '09:00' } }];
  assertError(errorsOf(input), '/steps/0/window', /start and end must differ/);
});

test('split weights, variant keys, hold-out and subject overrides', () => {
  const input = valid();
  input['steps'] = [
    {
      id: 's', type: 'split',
      variants: [{ key: 'A', weight: 0, steps: [] }, { key: 'A', weight: 1, steps: [] }, { key: 'holdout', weight: 1, steps: [] }],
      holdout: { weight: -1 },
    },
    { id: 'm', type: 'send_email', template: 't', subject: 's', subjects: { A: 'a', C: 'c' } },
  ];
  const errors = errorsOf(input);
  assertError(errors, '/steps/0/variants/0/weight', /greater than 0/);
  assertError(errors, '/steps/0/variants/1/key', /duplicate variant key "A"/);
  assertError(errors, '/steps/0/variants/2/key', /reserved/);
  assertError(errors, '/steps/0/holdout/weight', /greater than 0/);
  assertError(errors, '/steps/1/subjects/C', /no split has a variant "C"/);
  assert.ok(!errors.some((error) => error.path === '/steps/1/subjects/A'));

  const noGoal = valid();
  delete noGoal['goal'];
  noGoal['steps'] = [{ id: 's', type: 'split', variants: [{ key: 'A', weight: 1, steps: [] }], holdout: { weight: 1 } }];
  assertError(errorsOf(noGoal), '/goal', /hold-out/);
});

test('segment references must exist and must not cycle', () => {
  const input = valid();
  input['segments'] = { a: { segment: 'b' }, b: { any: [{ segment: 'a' }] } };
  input['entryCondition'] = { segment: 'missing' };
  const errors = errorsOf(input);
  assertError(errors, '/entryCondition/segment', /unknown segment "missing"/);
  assertError(errors, '/segments/a', /cycle: a → b → a/);
});

test('condition paths must start at a scope root and step paths must name a wait_for_event', () => {
  const input = valid();
  input['steps'] = [
    {
      id: 'wait_x', type: 'wait_for_event', event: 'X', timeout: 'P1D', onTimeout: [],
      onEvent: [
        {
          id: 'b', type: 'branch', otherwise: [],
          branches: [
            { when: { path: 'steps.wait_x.event.properties.plan', op: 'eq', value: 'pro' }, steps: [] },
            { when: { path: 'steps.b.event.name', op: 'exists' }, steps: [] },
            { when: { path: 'user.plan', op: 'eq', ref: 'contactt.traits.plan' }, steps: [] },
          ],
        },
      ],
    },
  ];
  const errors = errorsOf(input);
  assert.ok(!errors.some((error) => error.path.includes('/branches/0/')), 'steps.wait_x is fine');
  assertError(errors, '/steps/0/onEvent/0/branches/1/when/path', /must name a wait_for_event step/);
  assertError(errors, '/steps/0/onEvent/0/branches/2/when/path', /must start with one of contact, account/);
  assertError(errors, '/steps/0/onEvent/0/branches/2/when/ref', /must start with one of/);
});

test('comparison operands: exactly one of value/ref, arrays for in/nin', () => {
  const input = valid();
  input['entryCondition'] = {
    all: [
      { path: 'contact.traits.plan', op: 'eq' },
      { path: 'contact.traits.plan', op: 'eq', value: 'a', ref: 'contact.traits.other' },
      { path: 'contact.traits.plan', op: 'in', value: 'pro' },
      { path: 'contact.traits.plan', op: 'exists' },
    ],
  };
  const errors = errorsOf(input);
  assertError(errors, '/entryCondition/all/0', /needs exactly one of value or ref/);
  assertError(errors, '/entryCondition/all/1', /needs exactly one of value or ref/);
  assertError(errors, '/entryCondition/all/2/value', /must be an array/);
  assert.equal(errors.length, 3);
});

test('webhook URLs must be http(s)', () => {
  const input = valid();
  input['steps'] = [{ id: 'h', type: 'webhook', url: 'ftp://example.com/x' }];
  assertError(errorsOf(input), '/steps/0/url', /http\(s\) URL/);
});

test('the published schema is plain JSON Schema with recursive $defs', () => {
  const json = JSON.parse(JSON.stringify(WorkflowDefinitionSchema)) as Record<string, unknown>;
  assert.equal(json['$ref'], 'WorkflowDefinition');
  const defs = json['$defs'] as Record<string, Record<string, unknown>>;
  assert.deepEqual(Object.keys(defs).sort(), ['Condition', 'Step', 'WorkflowDefinition']);
  assert.match(JSON.stringify(defs['Step']), /"\$ref":"Step"/, 'steps nest steps');
  assert.match(JSON.stringify(defs['Step']), /"\$ref":"Condition"/, 'steps reference conditions');
});

test('every problem at once: structural and semantic errors are reported together', () => {
  const input = valid();
  input['goalWindow'] = 'P5'; // semantic: does not parse
  input['entryCondition'] = { segment: 'missing' }; // semantic: unknown segment
  input['steps'] = [
    { id: 'w', type: 'wait', duration: 'P3X' }, // semantic
    { id: 'm', type: 'send_email', template: 't' }, // structural: no subject
    { id: 'w', type: 'exit' }, // semantic: duplicate id
    { id: 'u', type: 'wait_until', window: { start: '09:00' } }, // structural: no end
  ];
  const errors = errorsOf(input);
  assertError(errors, '/steps/1/subject', /is required/);
  assertError(errors, '/steps/3/window/end', /is required/);
  assertError(errors, '/goalWindow', /invalid ISO-8601 duration "P5"/);
  assertError(errors, '/entryCondition/segment', /unknown segment "missing"/);
  assertError(errors, '/steps/0/duration', /invalid ISO-8601 duration "P3X"/);
  assertError(errors, '/steps/2/id', /duplicate step id "w"/);
  assert.equal(errors.length, 6, JSON.stringify(errors));
});

test('a field with a structural error is not reported twice by the semantic checks', () => {
  const input: Record<string, unknown> = { ...valid(), key: 'Bad Key' };
  input['steps'] = [{ id: 'has space', type: 'wait', duration: 'P1D' }];
  const errors = errorsOf(input);
  assert.deepEqual(errors.map((error) => error.path).sort(), ['/key', '/steps/0/id']);
});

test('semantic checks survive malformed nodes anywhere in the tree', () => {
  const input = valid();
  input['segments'] = { a: 'not a condition', b: { any: 'nope' } };
  input['goal'] = { condition: { all: [null, { path: 3, op: 'eq', value: 1 }] } };
  input['exit'] = ['x', { event: 'E', where: { not: 5 } }];
  input['steps'] = [
    null,
    { id: 'b', type: 'branch', branches: [null, { when: 'x', steps: 'y' }], otherwise: {} },
    { id: 's', type: 'split', variants: [{ key: 1, weight: 'x' }] },
    { id: 'f', type: 'wait_for_event', event: 'X', timeout: 'P1D', onEvent: [{ id: 'w', type: 'wait', duration: 'P1' }], onTimeout: null },
  ];
  const errors = errorsOf(input);
  assertError(errors, '/steps/0', /must be a step object/);
  assertError(errors, '/steps/3/onEvent/0/duration', /invalid ISO-8601 duration "P1"/);
});

test('date_trait subject: "contact" or "account" (default contact); anything else is an error', () => {
  for (const subject of ['contact', 'account', undefined]) {
    const input = { ...valid(), trigger: { type: 'date_trait', trait: 'renews_at', offset: '-P30D', ...(subject ? { subject } : {}) } };
    assert.equal(validateDefinition(input).ok, true, String(subject));
  }
  const bad = { ...valid(), trigger: { type: 'date_trait', trait: 'renews_at', offset: 'P1D', subject: 'workspace' } };
  assertError(errorsOf(bad), '/trigger/subject', /must be one of "contact", "account"/);
});

test('exit steps: only notify, webhook, update_contact and branches of them; ids shared with the steps; conditions and URLs checked', () => {
  const input = valid();
  input['exit'] = [
    {
      event: 'Account Closed',
      steps: [
        { id: 'wait_1', type: 'notify', channel: 'slack', text: 'Closed' },
        { id: 'mail', type: 'send_email', template: 'nudge', subject: 'Bye' },
        {
          id: 'guard',
          type: 'branch',
          branches: [{ when: { path: 'nowhere.x', op: 'exists' }, steps: [{ id: 'later', type: 'wait', duration: 'P1D' }] }],
          otherwise: [{ id: 'hook', type: 'webhook', url: 'ftp://crm' }],
        },
      ],
    },
  ];
  const errors = errorsOf(input);
  assertError(errors, '/exit/0/steps/0/id', /duplicate step id "wait_1" \(first at \/steps\/0\/id\)/);
  assertError(errors, '/exit/0/steps/1/type', /an exit can only run notify, webhook, update_contact, branch steps/);
  assertError(errors, '/exit/0/steps/2/branches/0/steps/0/type', /an exit can only run/);
  assertError(errors, '/exit/0/steps/2/branches/0/when/path', /must start with one of/);
  assertError(errors, '/exit/0/steps/2/otherwise/0/url', /must be an http\(s\) URL/);

  input['exit'] = [{ event: 'Account Closed', steps: [{ id: 'alert', type: 'notify', channel: 'slack', text: 'Closed', extra: 1 }] }];
  assertError(errorsOf(input), '/exit/0/steps/0/extra', /is not allowed/);

  input['exit'] = [
    {
      event: 'Account Closed',
      steps: [{ id: 'big', type: 'branch', branches: [{ when: { path: 'customer.mrr', op: 'gte', ref: 'settings.recoveryAlertMrr' }, steps: [{ id: 'alert', type: 'notify', channel: 'slack', text: 'Closed' }] }], otherwise: [] }],
    },
  ];
  assert.equal(validateDefinition(input).ok, true, 'customer.* and settings.* are scope roots; a valid exit step passes');
});
