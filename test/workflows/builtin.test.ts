import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import type { EventFact, WorkflowDefinition } from '../../src/workflows/types.ts';
import { validateDefinition } from '../../src/workflows/definition-schema.ts';
import { templateKeys } from '../../src/workflows/compile.ts';
import { HOLDOUT, advance, assignVariant, startRun } from '../../src/workflows/interpreter.ts';
import { simulate } from '../../src/workflows/simulate.ts';
import type { SimulationInput } from '../../src/workflows/simulate.ts';
import {
  activation,
  billingRecovery,
  builtinDefinition,
  builtinDefinitions,
  expansion,
  expansionUsage,
  onboarding,
  winBack,
} from '../../src/workflows/builtin/index.ts';
import { makeContext, makeEvent, plus, T0 } from './support.ts';

const contact = { id: 'cus_42', email: 'ada@example.com', traits: {} };
const account = { id: 'acct_1', traits: {} };
const builtinDirectory = new URL('../../src/workflows/builtin/', import.meta.url);

function run(definition: WorkflowDefinition, timeline: EventFact[], extra: Partial<SimulationInput> = {}) {
  return simulate(definition, { contact, account, timeline, ...extra });
}

function sendsOf(result: ReturnType<typeof simulate>): [string, string][] {
  return result.sends.map((sent) => [sent.template, sent.at]);
}

function paymentFailed(declineClass: string, properties: Record<string, unknown> = {}): EventFact {
  return makeEvent(
    'invoice.payment_failed',
    {
      invoiceId: 'in_1', subscriptionId: 'sub_1', customerId: 'cus_42', amountDue: 4900, amountRemaining: 4900,
      currency: 'usd', attemptCount: 1, billingReason: 'subscription_cycle', declineClass, declineCode: 'insufficient_funds',
      ...properties,
    },
    T0,
    'evt_failed_1',
  );
}

test('every built-in JSON file validates and is exported', () => {
  const files = readdirSync(builtinDirectory).filter((name) => name.endsWith('.json')).sort();
  assert.deepEqual(files, ['activation.json', 'billing-recovery.json', 'expansion-usage.json', 'expansion.json', 'onboarding.json', 'pre-dunning.json', 'win-back.json']);
  for (const file of files) {
    const json: unknown = JSON.parse(readFileSync(new URL(file, builtinDirectory), 'utf8'));
    const result = validateDefinition(json);
    assert.ok(result.ok, `${file}: ${JSON.stringify(!result.ok && result.errors)}`);
    assert.equal(`${result.definition.key}.json`, file, 'file name = key');
    assert.deepEqual(builtinDefinition(result.definition.key), json);
  }
  assert.equal(builtinDefinitions.length, files.length);
});

test('built-ins are frozen so no caller can edit the shared copies', () => {
  assert.ok(Object.isFrozen(billingRecovery));
  assert.ok(Object.isFrozen(billingRecovery.steps[0]));
  assert.throws(() => {
    (billingRecovery as { name: string }).name = 'changed';
  }, TypeError);
});

test('built-in categories, audiences and recovery policies', () => {
  assert.equal(billingRecovery.category, 'transactional');
  assert.equal(winBack.category, 'marketing');
  assert.equal(winBack.duringRecovery, 'skip');
  assert.equal(activation.category, 'lifecycle');
  assert.equal(onboarding.category, 'lifecycle');
  assert.equal(onboarding.goalWindow, 'P5D');
  for (const definition of [expansion, expansionUsage]) {
    assert.equal(definition.category, 'marketing');
    assert.equal(definition.audience, 'account_admins');
    assert.equal(definition.duringRecovery, 'hold');
  }
});

test('template keys are descriptive and cover the dunning sequence', () => {
  assert.deepEqual(templateKeys(billingRecovery), [
    'dunning-confirm-payment', 'dunning-confirm-payment-reminder', 'dunning-final',
    'dunning-update-card', 'dunning-update-card-reminder', 'dunning-soft-1', 'dunning-soft-2', 'dunning-soft-3',
  ]);
  assert.ok(templateKeys(winBack).includes('winback-offer'));
});

// --- billing recovery ---------------------------------------------------------------------------

test('billing recovery, soft decline: emails on days 0, 3, 5 and 7, then converts on invoice.paid', () => {
  const result = run(billingRecovery, [paymentFailed('soft'), makeEvent('invoice.paid', { invoiceId: 'in_1', amountPaid: 4900 }, plus(T0, 'P8D'))]);
  assert.equal(result.entered, true);
  assert.deepEqual(sendsOf(result), [
    ['dunning-soft-1', T0],
    ['dunning-soft-2', plus(T0, 'P3D')],
    ['dunning-soft-3', plus(T0, 'P5D')],
    ['dunning-final', plus(T0, 'P7D')],
  ]);
  assert.equal(result.final?.status, 'converted');
  assert.equal(result.final?.convertedAt, plus(T0, 'P8D'));
});

test('billing recovery stops sending as soon as the invoice is paid', () => {
  const result = run(billingRecovery, [paymentFailed('soft'), makeEvent('invoice.paid', { invoiceId: 'in_1' }, plus(T0, 'P4D'))]);
  assert.deepEqual(sendsOf(result).map(([template]) => template), ['dunning-soft-1', 'dunning-soft-2']);
  assert.equal(result.final?.status, 'converted');
  const trace = result.trace.map((entry) => entry.kind);
  assert.equal(trace.at(-1), 'goal');
});

test('billing recovery: another invoice being paid does not convert this run', () => {
  const result = run(billingRecovery, [paymentFailed('soft'), makeEvent('invoice.paid', { invoiceId: 'in_other' }, plus(T0, 'P1D'))]);
  assert.equal(result.sends.length, 4);
  assert.equal(result.final?.status, 'completed');
});

test('billing recovery, hard decline: an immediate "update your card" email, then reminders', () => {
  const result = run(billingRecovery, [paymentFailed('hard')]);
  assert.deepEqual(sendsOf(result), [
    ['dunning-update-card', T0],
    ['dunning-update-card-reminder', plus(T0, 'P3D')],
    ['dunning-final', plus(T0, 'P7D')],
  ]);
});

test('billing recovery, SCA: a "confirm your payment" email', () => {
  const result = run(billingRecovery, [paymentFailed('sca')]);
  assert.deepEqual(sendsOf(result)[0], ['dunning-confirm-payment', T0]);
  const branch = result.trace.find((entry) => entry.kind === 'branch' && entry.stepId === 'decline_class');
  assert.equal(branch?.data?.['taken'], 'authentication required');
});

test('billing recovery with skipFirstEmail (Stripe sends the first one): days 3, 5, 7 only', () => {
  const skipping: WorkflowDefinition = { ...structuredClone(billingRecovery), options: { skipFirstEmail: true } };
  const result = run(skipping, [paymentFailed('soft')]);
  assert.deepEqual(sendsOf(result).map(([template]) => template), ['dunning-soft-2', 'dunning-soft-3', 'dunning-final']);
});

test('billing recovery exits when the invoice is voided or the subscription canceled, not for others', () => {
  const voided = run(billingRecovery, [paymentFailed('soft'), makeEvent('invoice.voided', { invoiceId: 'in_1' }, plus(T0, 'P1D'))]);
  assert.equal(voided.final?.status, 'exited');
  assert.equal(voided.sends.length, 1);

  const canceled = run(billingRecovery, [paymentFailed('soft'), makeEvent('subscription.canceled', { subscriptionId: 'sub_1' }, plus(T0, 'P4D'))]);
  assert.equal(canceled.final?.status, 'exited');
  assert.equal(canceled.final?.endReason, 'exit: subscription.canceled');
  assert.equal(canceled.sends.length, 2);

  const otherSubscription = run(billingRecovery, [paymentFailed('soft'), makeEvent('subscription.canceled', { subscriptionId: 'sub_9' }, plus(T0, 'P1D'))]);
  assert.equal(otherSubscription.sends.length, 4);
});

// --- billing recovery: team alerts (notify steps; RECOVERY_ALERT_MRR, lost cases) -----------------

const bigCustomer = { id: 'cus_42', currency: 'usd', mrr: 250_000, mrrByCurrency: { usd: 250_000, eur: 10_000 } };
const alerting = { recoveryAlertMrr: 100_000, slackWebhookConfigured: true };

function alertsOf(result: ReturnType<typeof simulate>): [string, string][] {
  return result.alerts.map((alert) => [alert.stepId, alert.at]);
}

test('billing recovery alerts at the failure when the customer\'s MRR in the run\'s currency reaches RECOVERY_ALERT_MRR', () => {
  const big = run(billingRecovery, [paymentFailed('soft')], { customer: bigCustomer, settings: alerting });
  assert.deepEqual(alertsOf(big), [['alert_high_mrr', T0]]);
  assert.equal(big.alerts[0]?.text, 'Payment failed on a high-MRR account');
  assert.equal(big.sends.length, 4, 'the emails are unchanged');
  const atThreshold = run(billingRecovery, [paymentFailed('soft')], { customer: { ...bigCustomer, mrr: 100_000 }, settings: alerting });
  assert.deepEqual(alertsOf(atThreshold), [['alert_high_mrr', T0]]);

  const small = run(billingRecovery, [paymentFailed('soft')], { customer: { ...bigCustomer, mrr: 99_999 }, settings: alerting });
  assert.deepEqual(small.alerts, []);
  const branch = small.trace.find((entry) => entry.stepId === 'high_mrr');
  assert.match(branch?.detail ?? '', /customer\.mrr \(99999\) gte settings\.recoveryAlertMrr \(100000\) → false/);
  // no threshold for the run's currency (RECOVERY_ALERT_MRR unset, or set for other currencies only): never
  const noThreshold = run(billingRecovery, [paymentFailed('soft')], { customer: bigCustomer, settings: { ...alerting, recoveryAlertMrr: null } });
  assert.deepEqual(noThreshold.alerts, []);
  // no settings at all (older callers): no alert either
  assert.deepEqual(run(billingRecovery, [paymentFailed('soft')], { customer: bigCustomer }).alerts, []);
});

test('billing recovery alerts when the case is lost (written off or subscription canceled unpaid), not when voided or paid', () => {
  const open = { status: 'open', currency: 'usd' };
  const writtenOff = run(billingRecovery, [paymentFailed('soft'), makeEvent('invoice.marked_uncollectible', { invoiceId: 'in_1' }, plus(T0, 'P9D'))], {
    invoice: { status: 'uncollectible', currency: 'usd' },
    settings: alerting,
  });
  assert.equal(writtenOff.final?.status, 'exited');
  assert.deepEqual(alertsOf(writtenOff), [['alert_lost_written_off', plus(T0, 'P9D')]]);

  const canceled = run(billingRecovery, [paymentFailed('soft'), makeEvent('subscription.canceled', { subscriptionId: 'sub_1' }, plus(T0, 'P14D'))], { invoice: open, settings: alerting });
  assert.deepEqual(alertsOf(canceled), [['alert_lost_canceled', plus(T0, 'P14D')]]);
  assert.equal(canceled.alerts[0]?.text, 'Payment recovery lost: the subscription was canceled unpaid');
  // the exit's trace: exit, then the branch and the alert, at the exit's time
  assert.deepEqual(canceled.trace.slice(-3).map((entry) => [entry.kind, entry.stepId]), [['exit', null], ['branch', 'lost_canceled'], ['notify', 'alert_lost_canceled']]);

  // Stripe marks the subscription unpaid after its last retry: dunning is over, the case lost
  const unpaid = run(billingRecovery, [
    paymentFailed('soft'),
    makeEvent('subscription.status_changed', { subscriptionId: 'sub_1', from: 'active', to: 'past_due' }, plus(T0, 'PT1M')),
    makeEvent('subscription.status_changed', { subscriptionId: 'sub_9', from: 'past_due', to: 'unpaid' }, plus(T0, 'P2D')),
    makeEvent('subscription.status_changed', { subscriptionId: 'sub_1', from: 'past_due', to: 'unpaid' }, plus(T0, 'P16D')),
  ], { invoice: open, settings: alerting });
  assert.equal(unpaid.final?.endReason, 'exit: subscription.status_changed');
  assert.equal(unpaid.sends.length, 4, 'past_due and another subscription going unpaid change nothing');
  assert.deepEqual(alertsOf(unpaid), [['alert_lost_unpaid', plus(T0, 'P16D')]]);

  const voided = run(billingRecovery, [paymentFailed('soft'), makeEvent('invoice.voided', { invoiceId: 'in_1' }, plus(T0, 'P1D'))], { invoice: { status: 'void' }, settings: alerting });
  assert.deepEqual(voided.alerts, []);
  // the invoice was paid meanwhile (the payment's fact not delivered yet): not lost
  const paid = run(billingRecovery, [paymentFailed('soft'), makeEvent('subscription.canceled', { subscriptionId: 'sub_1' }, plus(T0, 'P14D'))], { invoice: { status: 'paid' }, settings: alerting });
  assert.equal(paid.final?.status, 'exited');
  assert.deepEqual(paid.alerts, []);
  const recovered = run(billingRecovery, [paymentFailed('soft'), makeEvent('invoice.paid', { invoiceId: 'in_1' }, plus(T0, 'P2D'))], { invoice: open, settings: alerting });
  assert.deepEqual(recovered.alerts, []);
});

test('billing recovery without a Slack webhook URL: the alert steps are traced no-ops (no action to deliver)', () => {
  const result = run(billingRecovery, [paymentFailed('soft'), makeEvent('subscription.canceled', { subscriptionId: 'sub_1' }, plus(T0, 'P14D'))], {
    customer: bigCustomer,
    invoice: { status: 'open' },
    settings: { recoveryAlertMrr: 100_000, slackWebhookConfigured: false },
  });
  assert.deepEqual(result.alerts, []);
  const notes = result.trace.filter((entry) => entry.kind === 'notify');
  assert.deepEqual(notes.map((entry) => [entry.stepId, entry.data?.['skipped']]), [['alert_high_mrr', 'no_webhook_url'], ['alert_lost_canceled', 'no_webhook_url']]);
  assert.match(notes[0]!.detail, /skipped: no Slack webhook URL \(SLACK_WEBHOOK_URL is unset and the step names none\)/);
});

test('a run re-ended on an earlier exit fact delivered late does not alert (it acted when it ended)', () => {
  const context = makeContext({ invoice: { status: 'open' } });
  const withSettings = { ...context, settings: alerting };
  const started = startRun(billingRecovery, paymentFailed('soft'), withSettings, new Date(T0));
  const paid = advance(billingRecovery, started.state, { type: 'event', event: makeEvent('invoice.paid', { invoiceId: 'in_1' }, plus(T0, 'P5D'), 'e_paid') }, withSettings, new Date(plus(T0, 'P5D')));
  assert.equal(paid.state.status, 'converted');
  const late = advance(billingRecovery, paid.state, { type: 'event', event: makeEvent('invoice.marked_uncollectible', { invoiceId: 'in_1' }, plus(T0, 'P4D'), 'e_wo') }, withSettings, new Date(plus(T0, 'P6D')));
  assert.equal(late.state.status, 'exited');
  assert.deepEqual(late.actions, []);
});

test('billing recovery does not start for a failed first payment at subscription creation', () => {
  const result = run(billingRecovery, [paymentFailed('soft', { billingReason: 'subscription_create' })]);
  assert.equal(result.entered, false);
  assert.match(result.reason, /billingReason \("subscription_create"\) neq "subscription_create" → false/);
});

test('billing recovery is transactional: it sends despite an unsubscribe and quiet hours', () => {
  const result = run(billingRecovery, [paymentFailed('soft')], {
    policy: { suppressed: 'non_transactional', quietHours: { start: '00:00', end: '23:59' }, recoveryOpen: true },
  });
  assert.equal(result.sends.length, 4);
});

// --- win-back -------------------------------------------------------------------------------------

function canceled(properties: Record<string, unknown>): EventFact {
  return makeEvent('subscription.canceled', { subscriptionId: 'sub_1', mrr: 4900, currency: 'usd', ...properties }, T0, 'evt_cancel');
}

test('win-back: voluntary cancellations get a message matched to the feedback, then days 14 and 45', () => {
  const cases: [string, string][] = [
    ['too_expensive', 'winback-offer'],
    ['missing_features', 'winback-whats-new'],
    ['unused', 'winback-reengage'],
    ['switched_service', 'winback-generic'],
  ];
  for (const [feedback, template] of cases) {
    const result = run(winBack, [canceled({ voluntary: true, reason: 'cancellation_requested', feedback })]);
    assert.deepEqual(sendsOf(result), [
      [template, plus(T0, 'P1D')],
      ['winback-checkin', plus(T0, 'P14D')],
      ['winback-last-chance', plus(T0, 'P45D')],
    ], feedback);
  }
  const noFeedback = run(winBack, [canceled({ voluntary: true, reason: 'cancellation_requested' })]);
  assert.equal(noFeedback.sends[0]?.template, 'winback-generic');
});

test('win-back: involuntary churn (payment failed) gets "update your card to restore"', () => {
  const result = run(winBack, [canceled({ voluntary: false, reason: 'payment_failed' })]);
  assert.deepEqual(sendsOf(result), [['winback-restore', T0], ['winback-restore-reminder', plus(T0, 'P7D')]]);
});

test('win-back converts when the customer subscribes again', () => {
  const result = run(winBack, [
    canceled({ voluntary: true, feedback: 'too_expensive' }),
    makeEvent('subscription.created', { subscriptionId: 'sub_2', status: 'active', mrr: 3900, currency: 'usd' }, plus(T0, 'P20D')),
  ]);
  assert.deepEqual(result.sends.map((sent) => sent.template), ['winback-offer', 'winback-checkin']);
  assert.equal(result.final?.status, 'converted');
});

test('win-back skips its sends while a billing recovery is open', () => {
  const result = run(winBack, [canceled({ voluntary: true, feedback: 'unused' })], { policy: { recoveryOpen: true } });
  assert.deepEqual(result.sends, []);
  assert.ok(result.trace.some((entry) => entry.kind === 'send_skipped' && entry.data?.['reason'] === 'recovery_open'));
});

// --- activation -------------------------------------------------------------------------------

test('activation: one email per unused feature, skipping features already used', () => {
  const untouched = run(activation, [makeEvent('Signed Up', {}, T0)]);
  assert.deepEqual(sendsOf(untouched), [
    ['activation-create-project', plus(T0, 'P1D')],
    ['activation-connect-integration', plus(T0, 'P3D')],
    ['activation-view-report', plus(T0, 'P6D')],
  ]);

  const usedIntegration = run(activation, [makeEvent('Signed Up', {}, T0), makeEvent('Integration Connected', {}, plus(T0, 'PT2H'))]);
  assert.deepEqual(usedIntegration.sends.map((sent) => sent.template), ['activation-create-project', 'activation-view-report']);
});

test('activation converts on the key action', () => {
  const result = run(activation, [makeEvent('Signed Up', {}, T0), makeEvent('Project Created', {}, plus(T0, 'P2D'))]);
  assert.deepEqual(result.sends.map((sent) => sent.template), ['activation-create-project']);
  assert.equal(result.final?.status, 'converted');
});

// --- onboarding ---------------------------------------------------------------------------------

const onboardingSplit = onboarding.steps.find((step) => step.id === 'subject_test');

function contactIn(variant: string): string {
  assert.ok(onboardingSplit?.type === 'split');
  const id = Array.from({ length: 200 }, (_, index) => `contact_${index}`).find((candidate) => assignVariant(onboarding.key, onboardingSplit, candidate) === variant);
  assert.ok(id, `a contact in ${variant}`);
  return id;
}

test('onboarding converts on Teammate Invited within five days', () => {
  const result = simulate(onboarding, {
    contact: { ...contact, id: contactIn('A') },
    timeline: [makeEvent('Trial Started', {}, T0), makeEvent('Teammate Invited', {}, plus(T0, 'P2D'))],
  });
  assert.deepEqual(sendsOf(result), [['onboarding-day1', plus(T0, 'P1D')]]);
  assert.equal(result.final?.status, 'converted');
  assert.equal(result.final?.convertedAt, plus(T0, 'P2D'));
});

test('onboarding: the day-1 subject follows the A/B variant', () => {
  for (const variant of ['A', 'B']) {
    const result = simulate(onboarding, { contact: { ...contact, id: contactIn(variant) }, timeline: [makeEvent('Trial Started', {}, T0)] });
    const dayOne = onboarding.steps.find((step) => step.id === 'day1_nudge');
    assert.ok(dayOne?.type === 'send_email');
    assert.equal(result.sends[0]?.subject, dayOne.subjects?.[variant]);
    assert.deepEqual(result.final?.variants, { subject_test: variant });
  }
});

test('onboarding: without an invite, the day-3 email depends on whether a project exists', () => {
  const id = contactIn('A');
  const withProject = simulate(onboarding, {
    contact: { ...contact, id },
    timeline: [makeEvent('Trial Started', {}, T0), makeEvent('Project Created', {}, plus(T0, 'P2D'))],
  });
  assert.deepEqual(sendsOf(withProject), [['onboarding-day1', plus(T0, 'P1D')], ['onboarding-invite-to-project', plus(T0, 'P3D')]]);
  assert.equal(withProject.final?.status, 'completed');
  assert.equal(withProject.final?.endedAt, plus(T0, 'P5D'));

  const nothing = simulate(onboarding, { contact: { ...contact, id }, timeline: [makeEvent('Trial Started', {}, T0)] });
  assert.deepEqual(nothing.sends.map((sent) => sent.template), ['onboarding-day1', 'onboarding-get-started']);
});

test('onboarding hold-out contacts get nothing but still convert', () => {
  const result = simulate(onboarding, {
    contact: { ...contact, id: contactIn(HOLDOUT) },
    timeline: [makeEvent('Trial Started', {}, T0), makeEvent('Teammate Invited', {}, plus(T0, 'P4D'))],
  });
  assert.deepEqual(result.sends, []);
  assert.equal(result.final?.holdout, true);
  assert.equal(result.final?.status, 'converted');
});

// --- expansion ----------------------------------------------------------------------------------

const paywall = (at: string) => makeEvent('Paywall Hit', { feature: 'exports' }, at);

test('expansion: three paywall hits within seven days trigger it; emails go out in business hours', () => {
  // Friday 6 March 18:00 UTC is after hours: the first email waits for Monday 09:00.
  const third = '2026-03-06T18:00:00.000Z';
  const result = run(expansion, [paywall(plus(T0, 'PT1H')), paywall(plus(T0, 'P2D')), paywall(third)]);
  assert.equal(result.entered, true);
  assert.equal(result.final?.vars.trigger.occurredAt, third);
  assert.deepEqual(sendsOf(result), [
    ['expansion-paywall', '2026-03-09T09:00:00.000Z'],
    ['expansion-upgrade-reminder', '2026-03-13T09:00:00.000Z'],
  ]);
});

test('expansion: two hits, or three spread over more than seven days, do not trigger', () => {
  assert.equal(run(expansion, [paywall(T0), paywall(plus(T0, 'P1D'))]).entered, false);
  assert.equal(run(expansion, [paywall(T0), paywall(plus(T0, 'P4D')), paywall(plus(T0, 'P8D'))]).entered, false);
});

test('expansion converts when MRR goes up, not down', () => {
  const hits = [paywall(T0), paywall(plus(T0, 'PT1H')), paywall(plus(T0, 'PT2H'))];
  const downgrade = run(expansion, [...hits, makeEvent('subscription.mrr_changed', { from: 4900, to: 2900 }, plus(T0, 'P1D'))]);
  assert.notEqual(downgrade.final?.status, 'converted');
  const upgrade = run(expansion, [...hits, makeEvent('subscription.mrr_changed', { from: 4900, to: 9900 }, plus(T0, 'P1D'))]);
  assert.equal(upgrade.final?.status, 'converted');
});

test('expansion holds its email while a billing recovery is open', () => {
  const hits = [paywall(T0), paywall(plus(T0, 'PT1H')), paywall(plus(T0, 'PT2H'))];
  const result = run(expansion, hits, { policy: { recoveryOpen: true }, until: plus(T0, 'P2D') });
  assert.deepEqual(result.sends, []);
  const held = result.trace.filter((entry) => entry.kind === 'send_held');
  assert.ok(held.length >= 2, 'held and re-held hourly');
  assert.ok(held.every((entry) => entry.data?.['reason'] === 'dunning_priority'));
});

test('expansion-usage: the account crossing 90% usage (group traits) triggers it', () => {
  const result = run(expansionUsage, [
    makeEvent('group', { traits: { usage_pct: 70 } }, T0),
    makeEvent('group', { traits: { usage_pct: 93 } }, plus(T0, 'P1D')),
  ]);
  assert.equal(result.entered, true);
  assert.equal(result.final?.startedAt, plus(T0, 'P1D'));
  assert.deepEqual(sendsOf(result)[0], ['expansion-usage-limit', plus(T0, 'P1D')]);

  const neverCrossed = run(expansionUsage, [makeEvent('group', { traits: { usage_pct: 85 } }, T0)]);
  assert.equal(neverCrossed.entered, false);
});
