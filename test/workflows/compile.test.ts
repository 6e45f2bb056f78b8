import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { WorkflowDefinition } from '../../src/workflows/types.ts';
import { compile, templateKeys } from '../../src/workflows/compile.ts';
import { makeDefinition, send } from './support.ts';

const definition = makeDefinition([
  send('welcome'),
  {
    id: 'wait_project',
    type: 'wait_for_event',
    event: 'Project Created',
    timeout: 'P2D',
    onEvent: [send('congrats'), send('next_tip')],
    onTimeout: [
      {
        id: 'plan',
        type: 'branch',
        branches: [{ when: { path: 'contact.traits.plan', op: 'eq', value: 'pro' }, steps: [send('pro_nudge')] }],
        otherwise: [],
      },
    ],
  },
  {
    id: 'subject_test',
    type: 'split',
    variants: [
      { key: 'A', weight: 1, steps: [send('variant_a', 'shared-template')] },
      { key: 'B', weight: 1, steps: [] },
    ],
  },
  send('closing', 'shared-template'),
]);

test('every step knows its successor; nested blocks continue after their container', () => {
  const { first, steps } = compile(definition);
  assert.equal(first, 'welcome');
  const next = (id: string) => steps.get(id)?.next;
  assert.equal(next('welcome'), 'wait_project');
  assert.equal(next('congrats'), 'next_tip');
  assert.equal(next('next_tip'), 'subject_test', 'last step of onEvent continues after the wait_for_event');
  assert.equal(next('pro_nudge'), 'subject_test', 'two levels deep still continues after the outermost finished container');
  assert.equal(next('plan'), 'subject_test');
  assert.equal(next('variant_a'), 'closing');
  assert.equal(next('closing'), null);
});

test('parents and execution order are recorded', () => {
  const { steps } = compile(definition);
  assert.equal(steps.get('welcome')?.parentId, null);
  assert.equal(steps.get('congrats')?.parentId, 'wait_project');
  assert.equal(steps.get('pro_nudge')?.parentId, 'plan');
  assert.equal(steps.get('variant_a')?.parentId, 'subject_test');
  const order = [...steps.values()].sort((a, b) => a.order - b.order).map((node) => node.step.id);
  assert.deepEqual(order, ['welcome', 'wait_project', 'congrats', 'next_tip', 'plan', 'pro_nudge', 'subject_test', 'variant_a', 'closing']);
});

test('an empty definition compiles to no first step', () => {
  assert.equal(compile(makeDefinition([])).first, null);
});

test('duplicate step ids are refused', () => {
  const duplicated: WorkflowDefinition = { ...definition, steps: [send('same'), { id: 'b', type: 'branch', branches: [], otherwise: [send('same')] }] };
  assert.throws(() => compile(duplicated), /duplicate step id "same"/);
});

test('templateKeys lists each template once, in document order', () => {
  assert.deepEqual(templateKeys(definition), ['welcome', 'congrats', 'next_tip', 'pro_nudge', 'shared-template']);
});
