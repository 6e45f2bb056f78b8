import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Category, Context } from '../../src/workflows/types.ts';
import { startRun } from '../../src/workflows/interpreter.ts';
import type { ContextOverrides } from './support.ts';
import { fireTimer, makeContext, makeDefinition, makeEvent, plus, send, sentTemplates, T0, traceKinds } from './support.ts';

const now = new Date(T0);

function flow(category: Category, duringRecovery?: 'hold' | 'skip') {
  return makeDefinition([send('tip'), send('next')], {
    category,
    ...(duringRecovery ? { duringRecovery } : {}),
  });
}

function run(category: Category, policy: ContextOverrides['policy'], duringRecovery?: 'hold' | 'skip', at = now) {
  const context: Context = makeContext({ policy });
  return { context, result: startRun(flow(category, duringRecovery), makeEvent('Signed Up', {}, at.toISOString()), context, at) };
}

test('suppressed for all email: even transactional sends are skipped and the run moves on', () => {
  const { result } = run('transactional', { suppressed: 'all' });
  assert.deepEqual(result.actions, []);
  assert.deepEqual(traceKinds(result), ['entered', 'send_skipped', 'send_skipped', 'completed']);
  assert.equal(result.trace[1]?.data?.['reason'], 'suppressed');
});

test('suppressed for non-transactional email: lifecycle is skipped, transactional still sends', () => {
  const lifecycle = run('lifecycle', { suppressed: 'non_transactional' }).result;
  assert.deepEqual(lifecycle.actions, []);
  assert.equal(lifecycle.trace[1]?.data?.['reason'], 'suppressed');
  assert.deepEqual(sentTemplates(run('transactional', { suppressed: 'non_transactional' }).result), ['tip', 'next']);
  assert.deepEqual(sentTemplates(run('marketing', { suppressed: 'non_transactional' }).result), []);
});

test('transactional email ignores recovery, frequency cap and quiet hours', () => {
  const { result } = run('transactional', {
    recoveryOpen: true,
    lastCappedSendAt: T0,
    frequencyCap: 'PT24H',
    quietHours: { start: '00:00', end: '23:59' },
  });
  assert.deepEqual(sentTemplates(result), ['tip', 'next']);
});

test('open billing recovery, default hold: the send waits an hour and is re-checked', () => {
  const { result } = run('marketing', { recoveryOpen: true });
  assert.deepEqual(result.actions, []);
  assert.equal(result.state.stepId, 'tip');
  assert.deepEqual(result.state.wait, { kind: 'hold', reason: 'dunning_priority', until: plus(T0, 'PT1H') });
  assert.deepEqual(traceKinds(result), ['entered', 'send_held']);

  const definition = flow('marketing');
  const stillOpen = fireTimer(definition, result.state, makeContext({ policy: { recoveryOpen: true } }), plus(T0, 'PT1H'));
  assert.deepEqual(stillOpen.actions, []);
  assert.deepEqual(stillOpen.state.wait, { kind: 'hold', reason: 'dunning_priority', until: plus(T0, 'PT2H') });

  const resolved = fireTimer(definition, stillOpen.state, makeContext(), plus(T0, 'PT2H'));
  assert.deepEqual(sentTemplates(resolved), ['tip', 'next']);
});

test('open billing recovery with duringRecovery "skip": the send is dropped and the run continues', () => {
  const { result } = run('lifecycle', { recoveryOpen: true }, 'skip');
  assert.deepEqual(result.actions, []);
  assert.equal(result.state.status, 'completed');
  assert.deepEqual(result.trace.filter((entry) => entry.kind === 'send_skipped').map((entry) => entry.data?.['reason']), ['recovery_open', 'recovery_open']);
});

test('frequency cap: hold until the last capped send + cap, then send', () => {
  const lastSend = plus(T0, '-PT20H');
  const policy = { lastCappedSendAt: lastSend, frequencyCap: 'PT24H' };
  const { result, context } = run('lifecycle', policy);
  assert.deepEqual(result.actions, []);
  assert.deepEqual(result.state.wait, { kind: 'hold', reason: 'frequency_cap', until: plus(T0, 'PT4H') });

  const tooEarly = fireTimer(flow('lifecycle'), result.state, context, plus(T0, 'PT3H'));
  assert.deepEqual(tooEarly.actions, [], 'spurious wake');
  const afterCap = fireTimer(flow('lifecycle'), result.state, context, plus(T0, 'PT4H'));
  assert.deepEqual(sentTemplates(afterCap), ['tip']);
  // The next send in the same pass already counts the one just made.
  assert.equal(afterCap.state.stepId, 'next');
  assert.deepEqual(afterCap.state.wait, { kind: 'hold', reason: 'frequency_cap', until: plus(T0, 'PT28H') });
});

test('frequency cap does not hold when the last send is older than the cap, or the cap is off', () => {
  assert.deepEqual(sentTemplates(run('lifecycle', { lastCappedSendAt: plus(T0, '-PT25H'), frequencyCap: 'PT24H' }).result), ['tip']);
  assert.deepEqual(sentTemplates(run('lifecycle', { lastCappedSendAt: plus(T0, '-PT1H'), frequencyCap: null }).result), ['tip', 'next']);
});

test('quiet hours across midnight in the contact\'s zone hold until the window ends', () => {
  const quietHours = { start: '21:00', end: '08:00' };
  // 22:30 UTC = 23:30 in Berlin (UTC+1): quiet until 08:00 Berlin = 07:00 UTC next morning.
  const lateEvening = new Date('2026-03-02T22:30:00Z');
  const { result, context } = run('lifecycle', { quietHours, timezone: 'Europe/Berlin' }, undefined, lateEvening);
  assert.deepEqual(result.actions, []);
  assert.deepEqual(result.state.wait, { kind: 'hold', reason: 'quiet_hours', until: '2026-03-03T07:00:00.000Z' });
  assert.match(result.trace[1]?.detail ?? '', /quiet hours 21:00–08:00 in Europe\/Berlin/);

  const morning = fireTimer(flow('lifecycle'), result.state, context, '2026-03-03T07:00:00.000Z');
  assert.deepEqual(sentTemplates(morning), ['tip', 'next']);

  // After midnight, still inside: 06:30 UTC = 07:30 Berlin → hold until 07:00 UTC the same day.
  const early = run('lifecycle', { quietHours, timezone: 'Europe/Berlin' }, undefined, new Date('2026-03-03T06:30:00Z')).result;
  assert.equal(early.state.wait?.until, '2026-03-03T07:00:00.000Z');

  // The same instant in UTC (22:30) is also quiet, but 20:30 UTC is not quiet in UTC while it is in Berlin.
  const berlinOnly = new Date('2026-03-02T20:30:00Z');
  assert.equal(run('lifecycle', { quietHours, timezone: 'Europe/Berlin' }, undefined, berlinOnly).result.actions.length, 0);
  assert.equal(run('lifecycle', { quietHours, timezone: 'UTC' }, undefined, berlinOnly).result.actions.length, 2);
});

test('send actions carry the template, subject, category and (absent a split) a null variant', () => {
  const { result } = run('lifecycle', {});
  assert.deepEqual(result.actions[0], {
    type: 'send_email', stepId: 'tip', template: 'tip', subject: 'Subject tip', category: 'lifecycle', variant: null,
  });
});
