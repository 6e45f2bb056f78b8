import { test } from 'node:test';
import assert from 'node:assert/strict';
import { countKey } from '../../src/workflows/conditions.ts';
import type { CountCondition } from '../../src/workflows/types.ts';
import { dateTriggerDueAt, entryDecision, matchesTrigger, segmentEntered } from '../../src/workflows/interpreter.ts';
import type { ExistingRun } from '../../src/workflows/interpreter.ts';
import { makeContext, makeDefinition, makeEvent, plus, send, T0 } from './support.ts';

const now = new Date(T0);
const context = makeContext();
const failed = makeEvent('invoice.payment_failed', { invoiceId: 'in_1', billingReason: 'subscription_cycle' }, T0, 'evt_1');

test('matchesTrigger: event name and where, with event and trigger both bound to the event', () => {
  const definition = makeDefinition([send('x')], {
    trigger: {
      type: 'event',
      event: 'invoice.payment_failed',
      where: {
        all: [
          { path: 'event.properties.billingReason', op: 'neq', value: 'subscription_create' },
          { path: 'trigger.properties.invoiceId', op: 'exists' },
        ],
      },
    },
  });
  assert.equal(matchesTrigger(definition, failed, context).match, true);
  const creation = makeEvent('invoice.payment_failed', { invoiceId: 'in_2', billingReason: 'subscription_create' });
  const refused = matchesTrigger(definition, creation, context);
  assert.equal(refused.match, false);
  assert.match(refused.explain, /event\.properties\.billingReason \("subscription_create"\) neq "subscription_create" → false/);
  const otherName = matchesTrigger(definition, makeEvent('invoice.paid', { invoiceId: 'in_1' }), context);
  assert.deepEqual(otherName, { match: false, explain: 'event "invoice.paid" is not "invoice.payment_failed"' });
});

test('matchesTrigger with a count condition reads the counts the edge computed', () => {
  const hits: CountCondition = { count: { event: 'Paywall Hit', within: 'P7D' }, op: 'gte', value: 3 };
  const definition = makeDefinition([send('x')], { trigger: { type: 'event', event: 'Paywall Hit', where: hits } });
  const hit = makeEvent('Paywall Hit');
  assert.equal(matchesTrigger(definition, hit, makeContext({ counts: { [countKey(hits)]: 3 } })).match, true);
  assert.equal(matchesTrigger(definition, hit, makeContext({ counts: { [countKey(hits)]: 2 } })).match, false);
});

test('matchesTrigger is false for non-event triggers', () => {
  const definition = makeDefinition([send('x')], { trigger: { type: 'segment', condition: { path: 'account.traits.usage_pct', op: 'gte', value: 90 } } });
  assert.equal(matchesTrigger(definition, makeEvent('group'), context).match, false);
});

test('segmentEntered: false before, true after', () => {
  const definition = makeDefinition([send('x')], {
    trigger: { type: 'segment', condition: { path: 'account.traits.usage_pct', op: 'gte', value: 90 } },
  });
  const at = (usage: number | undefined) => makeContext({ account: { id: 'a', traits: usage === undefined ? {} : { usage_pct: usage } } });
  assert.equal(segmentEntered(definition, at(50), at(95)).entered, true);
  assert.equal(segmentEntered(definition, at(undefined), at(90)).entered, true);
  assert.equal(segmentEntered(definition, at(92), at(95)).entered, false, 'already inside');
  assert.equal(segmentEntered(definition, at(95), at(50)).entered, false, 'leaving');
  assert.match(segmentEntered(definition, at(50), at(95)).explain, /^before: .*\(50\) gte 90 → false; after: .*\(95\) gte 90 → true$/);
});

test('dateTriggerDueAt: trait date + offset; negative offsets, unix seconds, missing traits', () => {
  const definition = makeDefinition([send('x')], { trigger: { type: 'date_trait', trait: 'trial_ends_at', offset: '-P3D' } });
  assert.equal(dateTriggerDueAt(definition, { trial_ends_at: '2026-03-10T12:00:00Z' })?.toISOString(), '2026-03-07T12:00:00.000Z');
  assert.equal(dateTriggerDueAt(definition, { trial_ends_at: Date.parse('2026-03-10T12:00:00Z') / 1000 })?.toISOString(), '2026-03-07T12:00:00.000Z');
  assert.equal(dateTriggerDueAt(definition, {}), null);
  assert.equal(dateTriggerDueAt(definition, { trial_ends_at: 'soon' }), null);
  assert.equal(dateTriggerDueAt(makeDefinition([send('x')]), { trial_ends_at: '2026-03-10' }), null, 'not a date trigger');
});

// A run processed as its trigger happened (startedAt = its trigger's time), as a live service does.
const run = (key: string, status: ExistingRun['status'], startedAt = plus(T0, '-P10D'), extra: Partial<ExistingRun> = {}): ExistingRun => ({ key, status, startedAt, triggerAt: startedAt, ...extra });

test('entry once: key "once", refused when any run exists', () => {
  const definition = makeDefinition([send('x')], { entry: { mode: 'once' } });
  assert.deepEqual(entryDecision(definition, failed, context, [], now), { enter: true, key: 'once', reason: 'entry once: first run' });
  const again = entryDecision(definition, failed, context, [run('once', 'completed', plus(T0, '-P400D'))], now);
  assert.equal(again.enter, false);
  assert.equal(again.key, 'once');
});

test('entry once_per_key: keyed by the path value; refused for a key seen in any status', () => {
  const definition = makeDefinition([send('x')], {
    trigger: { type: 'event', event: 'invoice.payment_failed' },
    entry: { mode: 'once_per_key', key: 'trigger.properties.invoiceId' },
  });
  const first = entryDecision(definition, failed, context, [run('in_0', 'active')], now);
  assert.deepEqual([first.enter, first.key], [true, 'in_1'], 'another invoice\'s active run does not block');
  for (const status of ['active', 'converted', 'exited', 'completed'] as const) {
    const again = entryDecision(definition, failed, context, [run('in_1', status)], now);
    assert.equal(again.enter, false, status);
    assert.match(again.reason, new RegExp(`a run for in_1 already exists \\(${status}\\)`));
  }
  const keyless = entryDecision(definition, makeEvent('invoice.payment_failed', {}), context, [], now);
  assert.equal(keyless.enter, false);
  assert.match(keyless.reason, /entry key trigger\.properties\.invoiceId is missing/);
});

test('entry every_time: keyed by event id (or time); refused while active, within cooldown, or for the same event', () => {
  const definition = makeDefinition([send('x')], { entry: { mode: 'every_time', cooldown: 'P7D' } });
  const signup = makeEvent('Signed Up', {}, T0, 'evt_9');
  assert.deepEqual(entryDecision(definition, signup, context, [], now), { enter: true, key: 'evt_9', reason: 'entry every time' });
  assert.equal(entryDecision(definition, makeEvent('Signed Up', {}, T0), context, [], now).key, T0, 'no id: occurredAt');

  assert.equal(entryDecision(definition, signup, context, [run('evt_1', 'active', plus(T0, '-P30D'))], now).enter, false, 'active run');
  const cooling = entryDecision(definition, signup, context, [run('evt_1', 'completed', plus(T0, '-P6D')), run('evt_0', 'completed', plus(T0, '-P60D'))], now);
  assert.equal(cooling.enter, false);
  assert.match(cooling.reason, /cooldown P7D since .* lasts until 2026-03-03T10:00:00.000Z/);
  assert.equal(entryDecision(definition, signup, context, [run('evt_1', 'completed', plus(T0, '-P7D'))], now).enter, true, 'cooldown over');
  assert.equal(entryDecision(definition, signup, context, [run('evt_9', 'completed', plus(T0, '-P70D'))], now).enter, false, 'same event redelivered');

  const noCooldown = makeDefinition([send('x')], { entry: { mode: 'every_time' } });
  assert.equal(entryDecision(noCooldown, signup, context, [run('evt_1', 'exited', plus(T0, '-PT1M'))], now).enter, true);
});

test('entry every_time: the cooldown is counted in event time (trigger to trigger), not by when facts are processed', () => {
  const definition = makeDefinition([send('x')], { entry: { mode: 'every_time', cooldown: 'P7D' } });
  // Processed 30 days late (a backfill, a queue that was down): still within 7 days of the
  // previous entry's trigger, so refused, as it was when it happened.
  const late = makeEvent('Signed Up', {}, plus(T0, 'P3D'), 'evt_late');
  const previous = run('evt_1', 'completed', plus(T0, 'P30D'), { triggerAt: T0 });
  const refused = entryDecision(definition, late, context, [previous], new Date(plus(T0, 'P30D')));
  assert.equal(refused.enter, false);
  assert.match(refused.reason, /since the entry triggered at 2026-03-02T10:00:00.000Z lasts until 2026-03-09T10:00:00.000Z/);
  // Processed at once but 8 days after the previous trigger (which itself was processed late).
  const fresh = makeEvent('Signed Up', {}, plus(T0, 'P8D'), 'evt_fresh');
  assert.equal(entryDecision(definition, fresh, context, [run('evt_1', 'completed', plus(T0, 'P8D'), { triggerAt: T0 })], new Date(plus(T0, 'P8D'))).enter, true);
});

test('entry every_time: a trigger delivered after later ones enters and withdraws the runs its cooldown covers', () => {
  const definition = makeDefinition([send('x')], { entry: { mode: 'every_time', cooldown: 'P180D' } });
  const early = makeEvent('subscription.canceled', {}, T0, 'evt_early');
  // Delivered first: a run triggered 10 days later (still active) and one 200 days later.
  const covered = run('evt_10d', 'active', plus(T0, 'P10D'));
  const beyond = run('evt_200d', 'completed', plus(T0, 'P200D'));
  const decision = entryDecision(definition, early, context, [covered, beyond], now);
  assert.equal(decision.enter, true, 'a later run does not block an earlier trigger its cooldown covers');
  assert.deepEqual(decision.withdraw, ['evt_10d']);
  assert.match(decision.reason, /covers 1 later-triggered run\(s\) delivered first, withdrawn: evt_10d/);

  // An earlier entry before the late trigger still refuses it; nothing is withdrawn then.
  const earlier = run('evt_minus_30d', 'converted', plus(T0, '-P30D'));
  const refused = entryDecision(definition, early, context, [earlier, covered], now);
  assert.equal(refused.enter, false);
  assert.equal(refused.withdraw, undefined);

  // Withdrawn runs are no entries: they neither cool down nor block, but keep their key.
  const withdrawn = run('evt_minus_1d', 'superseded', plus(T0, '-P1D'), { withdrawn: true });
  assert.equal(entryDecision(definition, early, context, [withdrawn], now).enter, true);
  const again = entryDecision(definition, makeEvent('subscription.canceled', {}, plus(T0, '-P1D'), 'evt_minus_1d'), context, [withdrawn], now);
  assert.equal(again.enter, false, 'the withdrawn run\'s own trigger delivered again stays refused');

  // Without a cooldown nothing is covered: a later active run refuses the late trigger as before.
  const noCooldown = makeDefinition([send('x')], { entry: { mode: 'every_time' } });
  const blocked = entryDecision(noCooldown, early, context, [covered], now);
  assert.equal(blocked.enter, false);
  assert.match(blocked.reason, /run evt_10d is still active/);
});

test('entry every_time: a late trigger refused as superseded (its end already known) still withdraws what it covers', () => {
  const definition = makeDefinition([send('x')], {
    entry: { mode: 'every_time', cooldown: 'P180D' },
    goal: { event: 'subscription.created' },
  });
  const early = makeEvent('subscription.canceled', {}, T0, 'evt_early');
  const resubscribed = makeEvent('subscription.created', {}, plus(T0, 'P2D'), 'evt_goal');
  const decision = entryDecision(definition, early, context, [run('evt_10d', 'active', plus(T0, 'P10D'))], now, [resubscribed]);
  assert.equal(decision.enter, false);
  assert.equal(decision.superseded, true);
  assert.deepEqual(decision.withdraw, ['evt_10d']);
});

test('the entry condition must hold at entry', () => {
  const definition = makeDefinition([send('x')], {
    entryCondition: { path: 'contact.traits.plan', op: 'neq', value: 'enterprise' },
  });
  assert.equal(entryDecision(definition, failed, makeContext({ contact: { traits: { plan: 'pro' } } }), [], now).enter, true);
  const refused = entryDecision(definition, failed, makeContext({ contact: { traits: { plan: 'enterprise' } } }), [], now);
  assert.equal(refused.enter, false);
  assert.match(refused.reason, /^entry condition not met: contact\.traits\.plan \("enterprise"\) neq "enterprise" → false$/);
});

test('a contact that already meets a condition goal does not enter', () => {
  const definition = makeDefinition([send('x')], { goal: { condition: { path: 'account.traits.seats', op: 'gte', value: 2 } } });
  const already = entryDecision(definition, failed, makeContext({ account: { id: 'a', traits: { seats: 3 } } }), [], now);
  assert.equal(already.enter, false);
  assert.match(already.reason, /^goal already met/);
  assert.equal(entryDecision(definition, failed, makeContext({ account: { id: 'a', traits: { seats: 1 } } }), [], now).enter, true);
});
