import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { WorkflowDefinition } from '../../src/workflows/types.ts';
import { HOLDOUT, assignVariant, startRun } from '../../src/workflows/interpreter.ts';
import { deliver, fireTimer, makeContext, makeDefinition, makeEvent, plus, send, sentTemplates, T0, traceKinds } from './support.ts';

const failed = makeEvent('invoice.payment_failed', { invoiceId: 'in_1', subscriptionId: 'sub_1' }, T0, 'evt_1');
const context = makeContext();
const now = new Date(T0);
const sameInvoice = { path: 'event.properties.invoiceId', op: 'eq', ref: 'trigger.properties.invoiceId' } as const;

const dunning = makeDefinition(
  [send('first'), { id: 'pause', type: 'wait', duration: 'P3D' }, send('second')],
  {
    category: 'transactional',
    trigger: { type: 'event', event: 'invoice.payment_failed' },
    entry: { mode: 'once_per_key', key: 'trigger.properties.invoiceId' },
    goal: { event: 'invoice.paid', where: sameInvoice },
    exit: [
      { event: 'invoice.voided', where: sameInvoice },
      // deliberately overlapping with the goal, to check the goal wins
      { event: 'invoice.paid', where: sameInvoice },
    ],
  },
);

test('the goal converts a waiting run, with convertedAt = the event time', () => {
  const started = startRun(dunning, failed, context, now);
  const paidAt = plus(T0, 'P1D');
  const result = deliver(dunning, started.state, context, makeEvent('invoice.paid', { invoiceId: 'in_1' }, paidAt), plus(T0, 'P1DT1M'));
  assert.equal(result.state.status, 'converted');
  assert.equal(result.state.convertedAt, paidAt);
  assert.equal(result.state.endedAt, plus(T0, 'P1DT1M'), 'endedAt is processing time');
  assert.equal(result.state.wait, null);
  assert.deepEqual(result.actions, []);
  assert.deepEqual(traceKinds(result), ['goal']);
  assert.match(result.trace[0]?.detail ?? '', /event\.properties\.invoiceId \("in_1"\) eq trigger\.properties\.invoiceId \("in_1"\) → true/);
  // and nothing more is sent afterwards
  assert.deepEqual(fireTimer(dunning, result.state, context, plus(T0, 'P3D')).actions, []);
});

test('the goal is checked before exits: an event matching both converts', () => {
  const started = startRun(dunning, failed, context, now);
  const result = deliver(dunning, started.state, context, makeEvent('invoice.paid', { invoiceId: 'in_1' }, plus(T0, 'PT1H')));
  assert.equal(result.state.status, 'converted');
});

test('goal and exit events for another invoice are ignored', () => {
  const started = startRun(dunning, failed, context, now);
  const otherPaid = deliver(dunning, started.state, context, makeEvent('invoice.paid', { invoiceId: 'in_2' }, plus(T0, 'PT1H')));
  assert.equal(otherPaid.state.status, 'active');
  const otherVoided = deliver(dunning, started.state, context, makeEvent('invoice.voided', { invoiceId: 'in_2' }, plus(T0, 'PT1H')));
  assert.equal(otherVoided.state.status, 'active');
});

test('an exit matcher exits the run', () => {
  const started = startRun(dunning, failed, context, now);
  const result = deliver(dunning, started.state, context, makeEvent('invoice.voided', { invoiceId: 'in_1' }, plus(T0, 'P1D')));
  assert.equal(result.state.status, 'exited');
  assert.equal(result.state.endReason, 'exit: invoice.voided');
  assert.equal(result.state.convertedAt, null);
  assert.deepEqual(traceKinds(result), ['exit']);
});

test('events from before the trigger never convert', () => {
  const started = startRun(dunning, failed, context, new Date(plus(T0, 'PT5M')));
  const stale = deliver(dunning, started.state, context, makeEvent('invoice.paid', { invoiceId: 'in_1' }, plus(T0, '-PT1M')), plus(T0, 'PT6M'));
  assert.equal(stale.state.status, 'active');
  // …but one between the trigger and the (late) start does
  const lagged = deliver(dunning, started.state, context, makeEvent('invoice.paid', { invoiceId: 'in_1' }, plus(T0, 'PT1M')), plus(T0, 'PT6M'));
  assert.equal(lagged.state.status, 'converted');
});

test('the goal converts a run whose send is held', () => {
  const lifecycle = makeDefinition([send('tip')], { goal: { event: 'Project Created' } });
  const held = startRun(lifecycle, makeEvent('Signed Up'), makeContext({ policy: { recoveryOpen: true } }), now);
  assert.equal(held.state.wait?.kind, 'hold');
  const result = deliver(lifecycle, held.state, context, makeEvent('Project Created', {}, plus(T0, 'PT10M')));
  assert.equal(result.state.status, 'converted');
  assert.deepEqual(result.actions, []);
});

test('the goal converts a hold-out run, which never sends', () => {
  const definition: WorkflowDefinition = makeDefinition(
    [{ id: 'test', type: 'split', variants: [{ key: 'A', weight: 50, steps: [] }], holdout: { weight: 50 } }, send('tip')],
    { goal: { event: 'Project Created' }, goalWindow: 'P5D' },
  );
  const split = definition.steps[0];
  assert.ok(split?.type === 'split');
  const holdoutContactId = Array.from({ length: 100 }, (_, index) => `contact_${index}`).find(
    (id) => assignVariant(definition.key, split, id) === HOLDOUT,
  );
  assert.ok(holdoutContactId, 'some contact lands in the hold-out');
  const holdoutContext = makeContext({ contact: { id: holdoutContactId } });
  const started = startRun(definition, makeEvent('Signed Up'), holdoutContext, now);
  assert.deepEqual(started.actions, []);
  assert.equal(started.state.holdout, true);
  assert.deepEqual(started.state.variants, { test: HOLDOUT });
  assert.deepEqual(started.state.wait, { kind: 'goal', until: plus(T0, 'P5D') });
  assert.equal(started.state.stepId, null);

  const converted = deliver(definition, started.state, holdoutContext, makeEvent('Project Created', {}, plus(T0, 'P2D')));
  assert.equal(converted.state.status, 'converted');
  assert.equal(converted.state.holdout, true);

  const expired = fireTimer(definition, started.state, holdoutContext, plus(T0, 'P5D'));
  assert.equal(expired.state.status, 'completed');
  assert.deepEqual(expired.actions, []);
});

test('a goal event at or after the goal window does not convert', () => {
  const definition = makeDefinition([send('only')], { goal: { event: 'Project Created' }, goalWindow: 'P2D' });
  const started = startRun(definition, makeEvent('Signed Up'), context, now);
  const late = deliver(definition, started.state, context, makeEvent('Project Created', {}, plus(T0, 'P2D')));
  assert.equal(late.state.status, 'active', 'left for the timer to complete');
});

test('a condition goal is checked on every fact, timers included', () => {
  const definition = makeDefinition([{ id: 'pause', type: 'wait', duration: 'P1D' }, send('nudge')], {
    goal: { condition: { path: 'account.traits.projects', op: 'gte', value: 1 } },
  });
  const started = startRun(definition, makeEvent('Signed Up'), context, now);
  const activated = makeContext({ account: { id: 'account_1', traits: { projects: 2 } } });
  const result = fireTimer(definition, started.state, activated, plus(T0, 'P1D'));
  assert.equal(result.state.status, 'converted');
  assert.equal(result.state.convertedAt, plus(T0, 'P1D'));
  assert.deepEqual(sentTemplates(result), [], 'converted before the nudge');
});

// Delivery order is not event order: a run that ended on a fact is re-ended by an earlier goal or
// exit fact delivered after it (reEnd), so the outcome is the one event order gives.
test('a converted run fed an earlier exit fact (delivered later) ends as exited', () => {
  const started = startRun(dunning, failed, context, now);
  const paid = deliver(dunning, started.state, context, makeEvent('invoice.paid', { invoiceId: 'in_1' }, plus(T0, 'P2D'), 'evt_paid'), plus(T0, 'P2D'));
  assert.equal(paid.state.status, 'converted');
  assert.equal(paid.state.endedBy?.name, 'invoice.paid');
  const voided = deliver(dunning, paid.state, context, makeEvent('invoice.voided', { invoiceId: 'in_1' }, plus(T0, 'P1D'), 'evt_void'), plus(T0, 'P2DT1H'));
  assert.equal(voided.state.status, 'exited');
  assert.equal(voided.state.convertedAt, null);
  assert.equal(voided.state.endedBy?.name, 'invoice.voided');
  assert.deepEqual(traceKinds(voided), ['ignored', 'exit']);
  assert.match(voided.trace[0]?.detail ?? '', /happened before invoice\.paid .* the run ends on it/);
  assert.deepEqual(voided.actions, []);
});

test('an exited run fed an earlier goal fact (delivered later) ends as converted at that fact', () => {
  const started = startRun(dunning, failed, context, now);
  const voided = deliver(dunning, started.state, context, makeEvent('invoice.voided', { invoiceId: 'in_1' }, plus(T0, 'P2D'), 'evt_void'), plus(T0, 'P2D'));
  assert.equal(voided.state.status, 'exited');
  const paidAt = plus(T0, 'P1D');
  const paid = deliver(dunning, voided.state, context, makeEvent('invoice.paid', { invoiceId: 'in_1' }, paidAt, 'evt_paid'), plus(T0, 'P2DT1H'));
  assert.equal(paid.state.status, 'converted');
  assert.equal(paid.state.convertedAt, paidAt);
});

test('a later goal/exit fact, one before the trigger, or another invoice does not re-end a finished run', () => {
  const started = startRun(dunning, failed, context, now);
  const paid = deliver(dunning, started.state, context, makeEvent('invoice.paid', { invoiceId: 'in_1' }, plus(T0, 'P1D'), 'evt_paid'), plus(T0, 'P1D'));
  for (const [event, why] of [
    [makeEvent('invoice.voided', { invoiceId: 'in_1' }, plus(T0, 'P2D'), 'evt_late'), 'later'],
    [makeEvent('invoice.voided', { invoiceId: 'in_1' }, plus(T0, '-PT1H'), 'evt_before'), 'before the trigger'],
    [makeEvent('invoice.voided', { invoiceId: 'in_2' }, plus(T0, 'PT1H'), 'evt_other'), 'another invoice'],
  ] as const) {
    const after = deliver(dunning, paid.state, context, event, plus(T0, 'P3D'));
    assert.equal(after.state.status, 'converted', why);
    assert.deepEqual(traceKinds(after), ['ignored'], why);
  }
});
