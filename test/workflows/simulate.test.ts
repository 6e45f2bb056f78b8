import { test } from 'node:test';
import assert from 'node:assert/strict';
import { simulate } from '../../src/workflows/simulate.ts';
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
  assert.deepEqual(result, { entered: false, reason: 'no timeline event fired the trigger', trace: [], sends: [], alerts: [], final: null });
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

// --- date_trait triggers ---------------------------------------------------------------------

const renewal = (subject?: 'contact' | 'account') =>
  makeDefinition([send('renewal_notice')], {
    trigger: { type: 'date_trait', trait: 'renews_at', offset: '-P7D', ...(subject ? { subject } : {}) },
  });
const RENEWS = '2026-04-01T09:00:00.000Z';

test('date_trait, account subject: the trait is read from the account (group traits), not the contact', () => {
  // A group call in the timeline sets the account's trait; no account in the profile needed.
  const fromGroup = simulate(renewal('account'), {
    contact: { ...contact, traits: { renews_at: '2026-12-01T00:00:00Z' } },
    timeline: [makeEvent('group', { groupId: 'acme', traits: { renews_at: RENEWS } }, T0)],
  });
  assert.equal(fromGroup.entered, true, fromGroup.reason);
  assert.deepEqual(fromGroup.sends.map((sent) => [sent.template, sent.at]), [['renewal_notice', plus(RENEWS, '-P7D')]]);
  assert.deepEqual(fromGroup.trace[0]?.detail, `entered on "date:renews_at" at ${plus(RENEWS, '-P7D')}`);
  assert.deepEqual(fromGroup.final?.vars.trigger.properties, { trait: 'renews_at', value: RENEWS });

  // The profile's account traits count as known from the start.
  const fromProfile = simulate(renewal('account'), { contact, account: { id: 'acme', traits: { renews_at: RENEWS } }, timeline: [] });
  assert.deepEqual(fromProfile.sends.map((sent) => sent.at), [plus(RENEWS, '-P7D')]);

  // A contact trait of the same name does not fire an account-subject trigger …
  const contactOnly = simulate(renewal('account'), { contact: { ...contact, traits: { renews_at: RENEWS } }, timeline: [] });
  assert.equal(contactOnly.entered, false);
  assert.match(contactOnly.reason, /account trait renews_at is not a date/);
  // … and the default subject is the contact.
  const contactSubject = simulate(renewal(), { contact: { ...contact, traits: { renews_at: RENEWS } }, account: { id: 'acme', traits: { renews_at: '2026-12-01T00:00:00Z' } }, timeline: [] });
  assert.deepEqual(contactSubject.sends.map((sent) => sent.at), [plus(RENEWS, '-P7D')]);
});

test('date_trait: a date learned after it was due enters when it becomes known (as the engine\'s next tick would)', () => {
  const learned = plus(RENEWS, '-P2D'); // five days after the run was due
  const result = simulate(renewal('account'), {
    contact,
    timeline: [makeEvent('group', { groupId: 'acme', traits: { renews_at: RENEWS } }, learned)],
  });
  assert.equal(result.entered, true);
  assert.equal(result.final?.startedAt, learned);
  assert.equal(result.final?.vars.trigger.occurredAt, plus(RENEWS, '-P7D'));
  assert.deepEqual(result.sends.map((sent) => sent.at), [learned]);
});

test('date_trait: a moved date voids the entry made for the old one (the trait is re-read when due)', () => {
  const later = '2026-05-01T09:00:00.000Z';
  // Brought forward: the profile's May date is void once a group call sets April.
  const earlier = simulate(renewal('account'), {
    contact,
    account: { id: 'acme', traits: { renews_at: later } },
    timeline: [makeEvent('group', { traits: { renews_at: RENEWS } }, T0)],
  });
  assert.deepEqual(earlier.sends.map((sent) => sent.at), [plus(RENEWS, '-P7D')]);
  assert.equal(earlier.final?.vars.trigger.properties['value'], RENEWS);
  // Pushed back before the first date came due: only the new date fires.
  const postponed = simulate(renewal('account'), {
    contact,
    account: { id: 'acme', traits: { renews_at: RENEWS } },
    timeline: [makeEvent('group', { traits: { renews_at: later } }, plus(RENEWS, '-P10D'))],
  });
  assert.deepEqual(postponed.sends.map((sent) => sent.at), [plus(later, '-P7D')]);
  // Removed: nothing fires, and the reason says why.
  const removed = simulate(renewal('account'), {
    contact,
    account: { id: 'acme', traits: { renews_at: RENEWS } },
    timeline: [makeEvent('group', { traits: { renews_at: null } }, T0)],
  });
  assert.equal(removed.entered, false);
  assert.match(removed.reason, /stale: trait renews_at was removed/);
});

test('quiet hours use the contact\'s time zone, else the account\'s (as the engine does)', () => {
  const definition = makeDefinition([send('tip')]);
  const late = '2026-03-02T21:30:00.000Z';
  const policy = { quietHours: { start: '21:00', end: '08:00' } };
  const paris = simulate(definition, { contact, account: { id: 'acme', traits: { timezone: 'Europe/Paris' } }, timeline: [makeEvent('Signed Up', {}, late)], policy });
  assert.deepEqual(paris.sends.map((sent) => sent.at), ['2026-03-03T07:00:00.000Z']);
  const newYork = simulate(definition, {
    contact: { ...contact, traits: { timezone: 'America/New_York' } },
    account: { id: 'acme', traits: { timezone: 'Europe/Paris' } },
    timeline: [makeEvent('Signed Up', {}, late)],
    policy,
  });
  assert.deepEqual(newYork.sends.map((sent) => sent.at), [late], '16:30 in New York');
});

test('segment triggers enter on a "segment:<key>" fact, like the engine', () => {
  const definition = makeDefinition([send('nudge')], {
    trigger: { type: 'segment', condition: { path: 'account.traits.usage_pct', op: 'gte', value: 90 } },
    entry: { mode: 'every_time' },
  });
  const result = simulate(definition, { contact, timeline: [makeEvent('group', { groupId: 'acme', traits: { usage_pct: 95 } }, T0)] });
  assert.equal(result.entered, true, result.reason);
  assert.equal(result.final?.vars.trigger.name, 'segment:test-flow');
});
