import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Step } from '../../src/workflows/types.ts';
import { HOLDOUT, assignVariant, splitBucket, startRun } from '../../src/workflows/interpreter.ts';
import { makeContext, makeDefinition, makeEvent, send, T0 } from './support.ts';

type SplitStep = Extract<Step, { type: 'split' }>;

const fiftyFifty: SplitStep = {
  id: 'subject_test',
  type: 'split',
  variants: [
    { key: 'A', weight: 50, steps: [] },
    { key: 'B', weight: 50, steps: [] },
  ],
};

function distribution(step: SplitStep, contacts: number): Record<string, number> {
  const counts: Record<string, number> = {};
  for (let index = 0; index < contacts; index += 1) {
    const variant = assignVariant('onboarding', step, `contact_${index}`);
    counts[variant] = (counts[variant] ?? 0) + 1;
  }
  return counts;
}

test('splitBucket is deterministic, in [0, 1), and depends on workflow, step and contact', () => {
  const bucket = splitBucket('onboarding', 'subject_test', 42);
  assert.equal(splitBucket('onboarding', 'subject_test', 42), bucket);
  assert.equal(splitBucket('onboarding', 'subject_test', '42'), bucket, 'numeric and string ids agree');
  assert.ok(bucket >= 0 && bucket < 1);
  assert.notEqual(splitBucket('onboarding', 'other_test', 42), bucket);
  assert.notEqual(splitBucket('activation', 'subject_test', 42), bucket);
  assert.notEqual(splitBucket('onboarding', 'subject_test', 43), bucket);
});

test('the same contact gets the same variant on every run', () => {
  const definition = makeDefinition([fiftyFifty, send('hello')]);
  for (const contactId of ['c_1', 'c_2', 'c_3', 'c_4']) {
    const context = makeContext({ contact: { id: contactId } });
    const first = startRun(definition, makeEvent('Signed Up'), context, new Date(T0));
    const second = startRun(definition, makeEvent('Signed Up', {}, '2026-06-01T00:00:00Z'), context, new Date('2026-06-01T00:00:00Z'));
    assert.deepEqual(first.state.variants, second.state.variants);
    assert.equal(first.state.variants['subject_test'], assignVariant(definition.key, fiftyFifty, contactId));
  }
});

test('50/50 weights split 10k contacts within 48–52% each', () => {
  const counts = distribution(fiftyFifty, 10_000);
  assert.deepEqual(Object.keys(counts).sort(), ['A', 'B']);
  for (const key of ['A', 'B']) {
    const share = (counts[key] ?? 0) / 10_000;
    assert.ok(share >= 0.48 && share <= 0.52, `${key}: ${share}`);
  }
});

test('a 10% hold-out gets 9–11% of 10k contacts; uneven weights are honoured', () => {
  const withHoldout: SplitStep = {
    ...fiftyFifty,
    variants: [
      { key: 'A', weight: 60, steps: [] },
      { key: 'B', weight: 30, steps: [] },
    ],
    holdout: { weight: 10 },
  };
  const counts = distribution(withHoldout, 10_000);
  const share = (key: string) => (counts[key] ?? 0) / 10_000;
  assert.ok(share(HOLDOUT) >= 0.09 && share(HOLDOUT) <= 0.11, `holdout: ${share(HOLDOUT)}`);
  assert.ok(share('A') >= 0.57 && share('A') <= 0.63, `A: ${share('A')}`);
  assert.ok(share('B') >= 0.27 && share('B') <= 0.33, `B: ${share('B')}`);
});

test('the run follows its variant\'s steps, records the assignment, and later sends use its subject', () => {
  const definition = makeDefinition([
    {
      ...fiftyFifty,
      variants: [
        { key: 'A', weight: 1, steps: [send('only_a')] },
        { key: 'B', weight: 1, steps: [send('only_b')] },
      ],
    },
    { id: 'shared', type: 'send_email', template: 'shared', subject: 'Default', subjects: { A: 'Subject for A', B: 'Subject for B' } },
  ]);
  const seen = new Set<string>();
  for (const contactId of ['c_1', 'c_2', 'c_3', 'c_4', 'c_5', 'c_6', 'c_7', 'c_8']) {
    const result = startRun(definition, makeEvent('Signed Up'), makeContext({ contact: { id: contactId } }), new Date(T0));
    const variant = result.state.variants['subject_test'];
    assert.ok(variant === 'A' || variant === 'B');
    seen.add(variant);
    assert.deepEqual(
      result.actions.map((action) => action.type === 'send_email' && [action.template, action.subject, action.variant]),
      [
        [variant === 'A' ? 'only_a' : 'only_b', `Subject ${variant === 'A' ? 'only_a' : 'only_b'}`, variant],
        ['shared', `Subject for ${variant}`, variant],
      ],
    );
    assert.equal(result.trace.find((entry) => entry.kind === 'split')?.data?.['variant'], variant);
  }
  assert.deepEqual([...seen].sort(), ['A', 'B'], 'both variants occur among eight contacts');
});

test('a send uses the most recent split: a later split overrides an earlier one', () => {
  const definition = makeDefinition([
    { id: 'first_split', type: 'split', variants: [{ key: 'X', weight: 1, steps: [] }] },
    { id: 'second_split', type: 'split', variants: [{ key: 'Y', weight: 1, steps: [] }] },
    { id: 'mail', type: 'send_email', template: 'mail', subject: 'Default', subjects: { X: 'From X', Y: 'From Y' } },
  ]);
  const result = startRun(definition, makeEvent('Signed Up'), makeContext(), new Date(T0));
  assert.deepEqual(result.state.variants, { first_split: 'X', second_split: 'Y' });
  const action = result.actions[0];
  assert.ok(action?.type === 'send_email');
  assert.equal(action.variant, 'Y');
  assert.equal(action.subject, 'From Y');
});
