import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { RunState, Step } from '../../src/workflows/types.ts';
import { MAX_STEPS_PER_ADVANCE, advance, startRun } from '../../src/workflows/interpreter.ts';
import { deliver, fireTimer, makeContext, makeDefinition, makeEvent, plus, send, sentTemplates, T0, traceKinds } from './support.ts';

const trigger = makeEvent('Signed Up', { plan: 'pro' }, T0, 'evt_trigger');
const context = makeContext();
const now = new Date(T0);

test('wait PT5S: sleeps, ignores an early timer, then continues', () => {
  const definition = makeDefinition([{ id: 'pause', type: 'wait', duration: 'PT5S' }, send('hello')]);
  const started = startRun(definition, trigger, context, now);
  assert.equal(started.state.status, 'active');
  assert.equal(started.state.stepId, 'pause');
  assert.deepEqual(started.state.wait, { kind: 'time', until: '2026-03-02T10:00:05.000Z' });
  assert.deepEqual(started.actions, []);
  assert.deepEqual(traceKinds(started), ['entered', 'wait']);

  const early = fireTimer(definition, started.state, context, plus(T0, 'PT4S'));
  assert.deepEqual(early.state, started.state, 'a spurious wake changes nothing');
  assert.deepEqual(early.actions, []);
  assert.deepEqual(traceKinds(early), ['ignored']);

  const woke = fireTimer(definition, started.state, context, plus(T0, 'PT5S'));
  assert.deepEqual(sentTemplates(woke), ['hello']);
  assert.equal(woke.state.status, 'completed', 'no goal: completes at the end');
  assert.equal(woke.state.endedAt, '2026-03-02T10:00:05.000Z');
  assert.deepEqual(traceKinds(woke), ['woke', 'send', 'completed']);
});

test('an action is emitted once: replaying the resulting state never repeats it', () => {
  const definition = makeDefinition([send('first'), { id: 'pause', type: 'wait', duration: 'P1D' }, send('second')]);
  const started = startRun(definition, trigger, context, now);
  assert.deepEqual(sentTemplates(started), ['first']);
  // The edge records the send, then (say, after a crash) feeds the stored state again.
  const replayTimer = fireTimer(definition, started.state, context, plus(T0, 'PT1M'));
  const replayEvent = deliver(definition, started.state, context, makeEvent('Report Viewed', {}, plus(T0, 'PT1M')));
  assert.deepEqual(replayTimer.actions, []);
  assert.deepEqual(replayEvent.actions, []);
  const due = fireTimer(definition, started.state, context, plus(T0, 'P1D'));
  assert.deepEqual(sentTemplates(due), ['second']);
  assert.deepEqual(fireTimer(definition, due.state, context, plus(T0, 'P2D')).actions, [], 'finished runs emit nothing');
});

test('the input state is never mutated', () => {
  const definition = makeDefinition([send('first'), { id: 'pause', type: 'wait', duration: 'P1D' }, send('second')]);
  const started = startRun(definition, trigger, context, now);
  const snapshot = structuredClone(started.state);
  fireTimer(definition, started.state, context, plus(T0, 'P1D'));
  assert.deepEqual(started.state, snapshot);
});

test('wait_until: continues at once inside the window', () => {
  const definition = makeDefinition([{ id: 'office', type: 'wait_until', window: { start: '09:00', end: '17:00' }, weekdaysOnly: true }, send('hello')]);
  // Monday 10:00 UTC = 11:00 in Berlin.
  const started = startRun(definition, trigger, makeContext({ policy: { timezone: 'Europe/Berlin' } }), now);
  assert.deepEqual(sentTemplates(started), ['hello']);
  assert.ok(started.trace.some((entry) => entry.kind === 'step' && /inside 09:00–17:00 on weekdays in Europe\/Berlin/.test(entry.detail)));
});

test('wait_until weekdaysOnly: a Saturday waits for Monday\'s window start in the contact\'s zone (across DST)', () => {
  const definition = makeDefinition([{ id: 'office', type: 'wait_until', window: { start: '09:00', end: '17:00' }, weekdaysOnly: true }, send('hello')]);
  const saturday = new Date('2026-03-07T12:00:00Z'); // 07:00 EST
  const nyContext = makeContext({ contact: { traits: { timezone: 'America/New_York' } } });
  const started = startRun(definition, makeEvent('Signed Up', {}, saturday.toISOString()), nyContext, saturday);
  assert.deepEqual(started.actions, []);
  // New York switches to EDT on Sunday 8 March: Monday 09:00 is 13:00 UTC.
  assert.deepEqual(started.state.wait, { kind: 'time', until: '2026-03-09T13:00:00.000Z' });
  const monday = fireTimer(definition, started.state, nyContext, '2026-03-09T13:00:00.000Z');
  assert.deepEqual(sentTemplates(monday), ['hello']);
});

test('wait_until: policy zone wins over the trait; an invalid zone means UTC', () => {
  const definition = makeDefinition([{ id: 'morning', type: 'wait_until', window: { start: '09:00', end: '10:00' } }]);
  const at = new Date('2026-03-02T08:30:00Z');
  const tokyoPolicy = makeContext({ policy: { timezone: 'Asia/Tokyo' }, contact: { traits: { timezone: 'UTC' } } });
  // 17:30 in Tokyo: next 09:00 Tokyo is 00:00 UTC on the 3rd.
  assert.equal(startRun(definition, trigger, tokyoPolicy, at).state.wait?.until, '2026-03-03T00:00:00.000Z');
  const bogus = makeContext({ contact: { traits: { timezone: 'Not/AZone' } } });
  assert.equal(startRun(definition, trigger, bogus, at).state.wait?.until, '2026-03-02T09:00:00.000Z');
});

const waitForUpgrade: Step = {
  id: 'wait_upgrade',
  type: 'wait_for_event',
  event: 'Plan Upgraded',
  where: { path: 'event.properties.seats', op: 'gte', value: 5 },
  timeout: 'P2D',
  onEvent: [
    {
      id: 'which_plan',
      type: 'branch',
      branches: [
        { label: 'team', when: { path: 'steps.wait_upgrade.event.properties.plan', op: 'eq', value: 'team' }, steps: [send('team_tips')] },
      ],
      otherwise: [send('upgrade_thanks')],
    },
  ],
  onTimeout: [send('upgrade_nudge')],
};

test('wait_for_event: a matching event continues with onEvent, and later steps can read it', () => {
  const definition = makeDefinition([waitForUpgrade, send('after')]);
  const started = startRun(definition, trigger, context, now);
  assert.deepEqual(started.state.wait, { kind: 'event', event: 'Plan Upgraded', until: '2026-03-04T10:00:00.000Z' });

  const upgrade = makeEvent('Plan Upgraded', { plan: 'team', seats: 8 }, plus(T0, 'P1D'));
  const matched = deliver(definition, started.state, context, upgrade);
  assert.deepEqual(matched.state.vars.matched, { wait_upgrade: upgrade });
  assert.deepEqual(sentTemplates(matched), ['team_tips', 'after']);
  assert.deepEqual(traceKinds(matched), ['event_matched', 'branch', 'send', 'send', 'completed']);
  const branch = matched.trace.find((entry) => entry.kind === 'branch');
  assert.match(branch?.detail ?? '', /steps\.wait_upgrade\.event\.properties\.plan \("team"\) eq "team" → true/);
});

test('wait_for_event: events that do not match are ignored; the timeout takes onTimeout', () => {
  const definition = makeDefinition([waitForUpgrade, send('after')]);
  const started = startRun(definition, trigger, context, now);

  const small = deliver(definition, started.state, context, makeEvent('Plan Upgraded', { plan: 'team', seats: 2 }, plus(T0, 'PT1H')));
  assert.deepEqual(small.state, started.state);
  assert.match(small.trace[0]?.detail ?? '', /does not match: event\.properties\.seats \(2\) gte 5 → false/);

  const otherName = deliver(definition, started.state, context, makeEvent('Plan Downgraded', { seats: 9 }, plus(T0, 'PT1H')));
  assert.deepEqual(otherName.state, started.state);
  assert.deepEqual(traceKinds(otherName), ['ignored']);

  const late = deliver(definition, started.state, context, makeEvent('Plan Upgraded', { seats: 9 }, plus(T0, 'P2D')));
  assert.deepEqual(late.state, started.state, 'an event at/after the timeout is too late');

  const timedOut = fireTimer(definition, started.state, context, plus(T0, 'P2D'));
  assert.deepEqual(traceKinds(timedOut).slice(0, 1), ['timeout']);
  assert.deepEqual(sentTemplates(timedOut), ['upgrade_nudge', 'after']);
  assert.deepEqual(timedOut.state.vars.matched, {});
});

test('branch: the first true branch wins and the trace shows every evaluated condition', () => {
  const definition = makeDefinition([
    {
      id: 'plan',
      type: 'branch',
      branches: [
        { label: 'enterprise', when: { path: 'trigger.properties.plan', op: 'eq', value: 'enterprise' }, steps: [send('enterprise')] },
        { label: 'paid', when: { path: 'trigger.properties.plan', op: 'in', value: ['pro', 'team'] }, steps: [send('paid')] },
        { label: 'pro too', when: { path: 'trigger.properties.plan', op: 'eq', value: 'pro' }, steps: [send('never')] },
      ],
      otherwise: [send('free')],
    },
  ]);
  const result = startRun(definition, trigger, context, now);
  assert.deepEqual(sentTemplates(result), ['paid']);
  const branch = result.trace.find((entry) => entry.kind === 'branch');
  assert.equal(branch?.data?.['taken'], 'paid');
  assert.equal(
    branch?.detail,
    'took paid: enterprise: trigger.properties.plan ("pro") eq "enterprise" → false; paid: trigger.properties.plan ("pro") in ["pro","team"] → true',
  );
  const free = startRun(definition, makeEvent('Signed Up', { plan: 'free' }), context, now);
  assert.deepEqual(sentTemplates(free), ['free']);
});

test('webhook and update_contact emit actions and continue; exit ends the run', () => {
  const definition = makeDefinition([
    { id: 'notify', type: 'webhook', url: 'https://hooks.example.com/lifeline', body: { kind: 'signup' } },
    { id: 'tag', type: 'update_contact', traits: { onboarding_stage: 'started' } },
    { id: 'stop', type: 'exit', reason: 'demo over' },
    send('unreachable'),
  ]);
  const result = startRun(definition, trigger, context, now);
  assert.deepEqual(result.actions, [
    { type: 'webhook', stepId: 'notify', url: 'https://hooks.example.com/lifeline', body: { kind: 'signup' } },
    { type: 'update_contact', stepId: 'tag', traits: { onboarding_stage: 'started' } },
  ]);
  assert.equal(result.state.status, 'exited');
  assert.equal(result.state.endReason, 'demo over');
  assert.equal(result.state.stepId, 'stop');
  const defaultReason = startRun(makeDefinition([{ id: 'stop', type: 'exit' }]), trigger, context, now);
  assert.equal(defaultReason.state.endReason, 'exit step');
});

test('end of steps with a goal: listen for the goal until startedAt + goalWindow, then complete', () => {
  const definition = makeDefinition([send('only')], { goal: { event: 'Project Created' }, goalWindow: 'P7D' });
  const started = startRun(definition, trigger, context, now);
  assert.equal(started.state.status, 'active');
  assert.equal(started.state.stepId, null);
  assert.deepEqual(started.state.wait, { kind: 'goal', until: '2026-03-09T10:00:00.000Z' });

  const converted = deliver(definition, started.state, context, makeEvent('Project Created', {}, plus(T0, 'P6D')));
  assert.equal(converted.state.status, 'converted', 'a conversion after the last email still counts');

  const completed = fireTimer(definition, started.state, context, plus(T0, 'P7D'));
  assert.equal(completed.state.status, 'completed');
  assert.equal(completed.state.endReason, 'goal window ended');

  const defaultWindow = startRun(makeDefinition([send('only')], { goal: { event: 'Project Created' } }), trigger, context, now);
  assert.equal(defaultWindow.state.wait?.until, plus(T0, 'P30D'), 'default goal window P30D');
});

test('finished runs ignore every fact', () => {
  const definition = makeDefinition([send('only')]);
  const done = startRun(definition, trigger, context, now);
  assert.equal(done.state.status, 'completed');
  const after = deliver(definition, done.state, context, makeEvent('Signed Up', {}, plus(T0, 'P1D')));
  assert.deepEqual(after.state, done.state);
  assert.deepEqual(traceKinds(after), ['ignored']);
  assert.match(after.trace[0]?.detail ?? '', /run is completed/);
});

test('a definition with more steps than the per-call guard stops the run instead of looping on', () => {
  const steps: Step[] = Array.from({ length: MAX_STEPS_PER_ADVANCE + 5 }, (_, index) => ({
    id: `tag_${index}`,
    type: 'update_contact' as const,
    traits: { index },
  }));
  const result = startRun(makeDefinition(steps), trigger, context, now);
  assert.equal(result.state.status, 'exited');
  assert.equal(result.state.endReason, 'step limit exceeded');
  assert.equal(result.actions.length, MAX_STEPS_PER_ADVANCE);
});

test('a run whose step was removed from the definition exits with a reason', () => {
  const definition = makeDefinition([send('only')]);
  const orphan: RunState = {
    status: 'active', stepId: 'deleted_wait', wait: { kind: 'time', until: T0 }, variants: {}, holdout: false,
    vars: { trigger, matched: {} }, startedAt: T0, endedAt: null, endReason: null, convertedAt: null,
  };
  const result = advance(definition, orphan, { type: 'timer' }, context, now);
  assert.equal(result.state.status, 'exited');
  assert.equal(result.state.endReason, 'unknown step deleted_wait');
});
