import { test } from 'node:test';
import assert from 'node:assert/strict';
import { simulate } from '../../src/workflows/interpreter.ts';
import { makeDefinition, makeEvent, plus, send, T0 } from './support.ts';

const contact = { id: 'c_1', email: 'ada@example.com', traits: {} };

const nudges = makeDefinition(
  [
    {
      id: 'wait_project',
      type: 'wait_for_event',
      event: 'Project Created',
      timeout: 'P2D',
      onEvent: [
        {
          id: 'kind',
          type: 'branch',
          branches: [{ when: { path: 'steps.wait_project.event.properties.template', op: 'exists' }, steps: [send('template_tips')] }],
          otherwise: [send('blank_tips')],
        },
      ],
      onTimeout: [
        {
          id: 'explored',
          type: 'branch',
          branches: [{ when: { count: { event: 'Report Viewed', within: 'P7D' }, op: 'gte', value: 2 }, steps: [send('engaged_nudge')] }],
          otherwise: [send('cold_nudge')],
        },
      ],
    },
    { id: 'pause', type: 'wait', duration: 'P3D' },
    send('wrap_up'),
  ],
  { goal: { event: 'Teammate Invited' }, goalWindow: 'P10D' },
);

test('no trigger in the timeline: not entered, with a reason', () => {
  const result = simulate(nudges, { contact, timeline: [makeEvent('Report Viewed')] });
  assert.deepEqual(result, { entered: false, reason: 'no timeline event fired the trigger', trace: [], sends: [], final: null });
});

test('timeline order does not matter; timers and events interleave on the virtual clock', () => {
  const timeline = [
    makeEvent('Project Created', { template: 'crm' }, plus(T0, 'P1D')),
    makeEvent('Signed Up', {}, T0),
  ];
  const result = simulate(nudges, { contact, timeline });
  assert.equal(result.entered, true);
  assert.deepEqual(result.sends, [
    { at: plus(T0, 'P1D'), stepId: 'template_tips', template: 'template_tips', subject: 'Subject template_tips' },
    { at: plus(T0, 'P4D'), stepId: 'wrap_up', template: 'wrap_up', subject: 'Subject wrap_up' },
  ]);
  assert.equal(result.final?.status, 'completed');
  assert.equal(result.final?.endedAt, plus(T0, 'P10D'), 'completed when the goal window ended');
  assert.equal(result.trace[0]?.kind, 'entered');
  assert.equal(result.trace.at(-1)?.kind, 'completed');
});

test('count conditions see the timeline events up to the current time', () => {
  const engaged = simulate(nudges, {
    contact,
    timeline: [
      makeEvent('Signed Up', {}, T0),
      makeEvent('Report Viewed', {}, plus(T0, 'PT1H')),
      makeEvent('Report Viewed', {}, plus(T0, 'P1D')),
      makeEvent('Report Viewed', {}, plus(T0, 'P3D')), // after the timeout: not counted
    ],
  });
  assert.deepEqual(engaged.sends.map((sent) => sent.template), ['engaged_nudge', 'wrap_up']);

  const cold = simulate(nudges, {
    contact,
    timeline: [makeEvent('Signed Up', {}, T0), makeEvent('Report Viewed', {}, plus(T0, 'PT1H')), makeEvent('Report Viewed', {}, plus(T0, 'P3D'))],
  });
  assert.deepEqual(cold.sends.map((sent) => sent.template), ['cold_nudge', 'wrap_up']);
});

test('the goal stops the simulation', () => {
  const result = simulate(nudges, {
    contact,
    timeline: [makeEvent('Signed Up', {}, T0), makeEvent('Teammate Invited', {}, plus(T0, 'PT5H'))],
  });
  assert.deepEqual(result.sends, []);
  assert.equal(result.final?.status, 'converted');
  assert.equal(result.final?.convertedAt, plus(T0, 'PT5H'));
});

test('`start` keeps earlier events from triggering; `until` cuts the clock', () => {
  const timeline = [makeEvent('Signed Up', {}, T0), makeEvent('Signed Up', {}, plus(T0, 'P20D'))];
  const late = simulate(nudges, { contact, timeline, start: plus(T0, 'P1D') });
  assert.equal(late.final?.startedAt, plus(T0, 'P20D'));

  const cut = simulate(nudges, { contact, timeline: [makeEvent('Signed Up', {}, T0)], until: plus(T0, 'P3D') });
  assert.deepEqual(cut.sends.map((sent) => sent.template), ['cold_nudge']);
  assert.equal(cut.final?.status, 'active', 'still waiting when the clock stopped');
  assert.equal(cut.final?.wait?.until, plus(T0, 'P5D'));
});

test('the simulated frequency cap counts the simulation\'s own sends', () => {
  const definition = makeDefinition([send('one'), send('two')]);
  const result = simulate(definition, {
    contact,
    timeline: [makeEvent('Signed Up', {}, T0)],
    policy: { frequencyCap: 'PT24H' },
  });
  assert.deepEqual(result.sends.map((sent) => [sent.template, sent.at]), [['one', T0], ['two', plus(T0, 'PT24H')]]);
  assert.ok(result.trace.some((entry) => entry.kind === 'send_held' && entry.data?.['reason'] === 'frequency_cap'));
});

test('entry rules apply: a trigger refused by the entry condition falls through to the next one', () => {
  const definition = makeDefinition([send('welcome')], {
    entryCondition: { path: 'trigger.properties.source', op: 'neq', value: 'import' },
  });
  const result = simulate(definition, {
    contact,
    timeline: [makeEvent('Signed Up', { source: 'import' }, T0), makeEvent('Signed Up', { source: 'web' }, plus(T0, 'P1D'))],
  });
  assert.equal(result.final?.startedAt, plus(T0, 'P1D'));
  const refused = simulate(definition, { contact, timeline: [makeEvent('Signed Up', { source: 'import' }, T0)] });
  assert.equal(refused.entered, false);
  assert.match(refused.reason, /^entry condition not met/);
});
