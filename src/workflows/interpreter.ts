// The pure workflow interpreter: (definition, run state, fact, context, now) → (new state,
// actions, trace). No I/O and no clock: the edge (durable runner, simulator, tests) gathers the
// Context, passes the time, performs the returned actions and stores the returned state.
//
// The run's cursor is a step id (see compile.ts). `advance` executes steps from the cursor until
// the run waits or ends; an action is emitted only while the cursor passes its step, so calling
// `advance` again with the returned state never repeats a send.

import { createHash } from 'node:crypto';
import type {
  Action,
  AdvanceResult,
  Condition,
  Context,
  EventFact,
  EventMatcher,
  Fact,
  HoldReason,
  RunState,
  RunStatus,
  Step,
  TraceEntry,
  Wait,
  WorkflowDefinition,
} from './types.ts';
import { evaluate, resolvePath } from './conditions.ts';
import type { Evaluation, Scope } from './conditions.ts';
import { compile, entryOf } from './compile.ts';
import type { CompiledStep, CompiledWorkflow } from './compile.ts';
import { addDuration } from './duration.ts';
import { isInsideWindow, nextLocalTime, resolveTimeZone } from './local-time.ts';

/** A run never executes more steps than this in one call: a guard against runaway definitions. */
export const MAX_STEPS_PER_ADVANCE = 200;
export const DEFAULT_GOAL_WINDOW = 'P30D';
/** How long a lifecycle/marketing send waits while the account has an open recovery case. */
export const DUNNING_PRIORITY_HOLD = 'PT1H';
/**
 * Facts that end a hold's cause. A held send is re-checked the moment one arrives (for every
 * held run of the account, whoever the fact is about), not only when the hold's timer expires.
 */
export const HOLD_RELEASES: Record<HoldReason, readonly string[]> = {
  dunning_priority: ['invoice.paid', 'invoice.voided', 'invoice.marked_uncollectible', 'subscription.canceled'],
  quiet_hours: [],
  frequency_cap: [],
};
/** The variant name recorded for a split's hold-out group. */
export const HOLDOUT = 'holdout';

// ---------------------------------------------------------------------------------------------
// Scope

export interface ScopeInput {
  /** the event being processed: the incoming fact's event, or the trigger at entry */
  event?: EventFact | null;
  trigger?: EventFact | null;
  state?: RunState | null;
  now?: Date | null;
}

/** The condition scope for a definition, context and (optionally) run. */
export function buildScope(definition: WorkflowDefinition, context: Context, input: ScopeInput = {}): Scope {
  const state = input.state ?? null;
  const steps: Scope['steps'] = {};
  for (const [stepId, event] of Object.entries(state?.vars.matched ?? {})) steps[stepId] = { event };
  return {
    contact: context.contact,
    account: context.account,
    event: input.event ?? null,
    trigger: input.trigger ?? state?.vars.trigger ?? null,
    steps,
    invoice: context.invoice ?? null,
    subscription: context.subscription ?? null,
    customer: context.customer ?? null,
    settings: { ...context.settings },
    counts: context.counts,
    segments: definition.segments ?? {},
    options: definition.options ?? {},
    variants: state?.variants ?? {},
    now: input.now ? input.now.toISOString() : null,
  };
}

/** The contact's time zone: policy first, then the `timezone` trait, else UTC. */
export function contactTimeZone(context: Context): string {
  return resolveTimeZone(context.policy.timezone ?? context.contact.traits['timezone']);
}

// ---------------------------------------------------------------------------------------------
// Triggers and entry

export interface TriggerMatch {
  match: boolean;
  explain: string;
}

function matchEvent(matcher: EventMatcher, event: EventFact, scope: Scope): TriggerMatch {
  if (event.name !== matcher.event) {
    return { match: false, explain: `event ${JSON.stringify(event.name)} is not ${JSON.stringify(matcher.event)}` };
  }
  if (!matcher.where) return { match: true, explain: `event ${JSON.stringify(event.name)}` };
  const where = evaluate(matcher.where, scope);
  return { match: where.value, explain: `event ${JSON.stringify(event.name)} where ${where.explain}` };
}

/** Whether `event` fires the definition's event trigger (name and `where`; event = trigger = the event). */
export function matchesTrigger(definition: WorkflowDefinition, event: EventFact, context: Context): TriggerMatch {
  const trigger = definition.trigger;
  if (trigger.type !== 'event') return { match: false, explain: `trigger is ${trigger.type}, not an event trigger` };
  const scope = buildScope(definition, context, { event, trigger: event, now: new Date(event.occurredAt) });
  return matchEvent(trigger, event, scope);
}

/** For a segment trigger: the condition was false with `before` and is true with `after`. */
export function segmentEntered(
  definition: WorkflowDefinition,
  before: Context,
  after: Context,
): { entered: boolean; explain: string } {
  const trigger = definition.trigger;
  if (trigger.type !== 'segment') return { entered: false, explain: `trigger is ${trigger.type}, not a segment trigger` };
  const was = evaluate(trigger.condition, buildScope(definition, before));
  const is = evaluate(trigger.condition, buildScope(definition, after));
  return { entered: !was.value && is.value, explain: `before: ${was.explain}; after: ${is.explain}` };
}

function parseTraitDate(value: unknown): Date | null {
  if (typeof value === 'number' && Number.isFinite(value)) {
    // Unix seconds (Stripe style) or milliseconds.
    return new Date(value < 1e12 ? value * 1000 : value);
  }
  if (typeof value === 'string' && value.trim() !== '') {
    const ms = Date.parse(value);
    return Number.isNaN(ms) ? null : new Date(ms);
  }
  return null;
}

/** For a date_trait trigger: when it fires for these traits (trait date + offset), or null. */
export function dateTriggerDueAt(definition: WorkflowDefinition, traits: Record<string, unknown>): Date | null {
  const trigger = definition.trigger;
  if (trigger.type !== 'date_trait') return null;
  const date = parseTraitDate(traits[trigger.trait]);
  return date ? addDuration(date, trigger.offset) : null;
}

/**
 * Whether a scheduled date-trait entry still stands when it comes due: the trait is re-read at
 * fire time, so an entry made for a date the contact no longer has (the trial end moved, or was
 * removed) does not fire; the entry for the new date does.
 */
export function scheduledEntryCurrent(
  definition: WorkflowDefinition,
  traits: Record<string, unknown>,
  entry: { traitValue: string; dueAt: Date },
): { current: boolean; explain: string } {
  const trigger = definition.trigger;
  if (trigger.type !== 'date_trait') return { current: false, explain: `trigger is ${trigger.type}, not a date trait` };
  const value = traits[trigger.trait];
  if (value === undefined || value === null) return { current: false, explain: `trait ${trigger.trait} was removed` };
  const dueAt = dateTriggerDueAt(definition, traits);
  if (String(value) !== entry.traitValue || !dueAt || dueAt.getTime() !== entry.dueAt.getTime()) {
    return { current: false, explain: `trait ${trigger.trait} changed from ${entry.traitValue} to ${String(value)}` };
  }
  return { current: true, explain: `trait ${trigger.trait} is still ${entry.traitValue}` };
}

export interface ExistingRun {
  key: string;
  status: RunStatus;
  startedAt: string;
  /** when the run's trigger happened (state.vars.trigger.occurredAt): entry rules work in event time */
  triggerAt: string;
  /**
   * Withdrawn (EntryDecision.withdraw): an earlier entry delivered after this run started would
   * have refused it in event order. Not an entry: it counts for nothing but its own key.
   */
  withdrawn?: boolean;
}

export interface EntryDecision {
  enter: boolean;
  /** the run key: unique per (definition, contact); the edge stores it with the run */
  key: string;
  reason: string;
  /**
   * Refused only because a goal or exit fact that happened at or after the trigger is already
   * recorded (delivered first), while the entry rule would have let it in: in event order this
   * was a run that ended on that fact. The edge records it as an entry ended at once (status
   * `superseded`, no steps, no emails) so that the entry rules (once, once per key, cooldown)
   * count it as the run it would have been.
   */
  superseded?: true;
  /**
   * Keys of existing runs this entry's cooldown covers although their triggers came later (they
   * were delivered first): in event order this entry came first and its cooldown refused them.
   * The edge withdraws them (status `superseded`, their unsent emails skipped). Set only when
   * this trigger counts as an entry (entered or superseded).
   */
  withdraw?: string[];
}

function entryKey(definition: WorkflowDefinition, trigger: EventFact, scope: Scope): string | null {
  const rule = definition.entry;
  switch (rule.mode) {
    case 'once':
      return 'once';
    case 'once_per_key': {
      const value = resolvePath(scope, rule.key);
      if (value === undefined || value === null || value === '') return null;
      return typeof value === 'string' ? value : JSON.stringify(value);
    }
    case 'every_time':
      return trigger.id ?? trigger.occurredAt;
  }
}

/**
 * Whether a triggered contact enters the workflow, given its existing runs of this definition.
 * (The trigger match itself is checked separately: matchesTrigger / segmentEntered / dateTriggerDueAt.)
 */
export function entryDecision(
  definition: WorkflowDefinition,
  trigger: EventFact,
  context: Context,
  existingRuns: readonly ExistingRun[],
  now: Date,
  /**
   * Facts already on the contact's timeline whose names the goal or an exit listens to
   * (entryGuardEventNames): delivery order is not event order, so the fact that ends a run can
   * be recorded before the fact that would start it.
   */
  known: readonly EventFact[] = [],
): EntryDecision {
  const scope = buildScope(definition, context, { event: trigger, trigger, now });
  const key = entryKey(definition, trigger, scope);
  if (key === null) {
    const path = definition.entry.mode === 'once_per_key' ? definition.entry.key : '';
    return { enter: false, key: '', reason: `entry key ${path} is missing on the trigger` };
  }
  if (definition.entryCondition) {
    const condition = evaluate(definition.entryCondition, scope);
    if (!condition.value) return { enter: false, key, reason: `entry condition not met: ${condition.explain}` };
  }
  if (definition.goal && 'condition' in definition.goal) {
    // Entering someone who already meets the goal would only inflate conversions.
    const goal = evaluate(definition.goal.condition, scope);
    if (goal.value) return { enter: false, key, reason: `goal already met: ${goal.explain}` };
  }
  const byRule = entryRule(definition, key, trigger, existingRuns);
  // After the entry rule: an entry the rule refuses was no run in event order either, and must
  // not be recorded as one (it would start a cooldown event order never had).
  if (!byRule.enter) return byRule;
  const superseded = supersedingFact(definition, trigger, context, known);
  if (superseded) return { enter: false, key, reason: superseded, superseded: true, ...(byRule.withdraw ? { withdraw: byRule.withdraw } : {}) };
  return byRule;
}

/**
 * The entry rule (once, once per key, every time with its cooldown) over the existing runs.
 *
 * Every time: decided in event time, so that delivery order does not change who enters. The
 * cooldown runs from the trigger time of the latest entry whose trigger happened before this one
 * (not from when it was processed), and this trigger is compared with its own time, not the
 * clock. A trigger delivered after later ones (Stripe does not deliver in order) may come before
 * runs already started: those its cooldown covers would have been refused in event order, so
 * they neither block it (even while active) nor stay: the decision lists them to withdraw.
 */
function entryRule(definition: WorkflowDefinition, key: string, trigger: EventFact, existingRuns: readonly ExistingRun[]): EntryDecision {
  const rule = definition.entry;
  switch (rule.mode) {
    case 'once':
      return existingRuns.length > 0
        ? { enter: false, key, reason: 'entry once: the contact already has a run' }
        : { enter: true, key, reason: 'entry once: first run' };
    case 'once_per_key': {
      const same = existingRuns.find((run) => run.key === key);
      return same
        ? { enter: false, key, reason: `entry once per ${rule.key}: a run for ${key} already exists (${same.status})` }
        : { enter: true, key, reason: `entry once per ${rule.key}: first run for ${key}` };
    }
    case 'every_time': {
      // A withdrawn run still holds its key: the same trigger delivered again stays refused.
      if (existingRuns.some((run) => run.key === key)) {
        return { enter: false, key, reason: `entry every time: this trigger (${key}) already started a run` };
      }
      const at = Date.parse(trigger.occurredAt);
      const entries = existingRuns.filter((run) => !run.withdrawn);
      const before = entries.filter((run) => Date.parse(run.triggerAt) <= at);
      const coverEnd = rule.cooldown ? addDuration(new Date(at), rule.cooldown).getTime() : at;
      const covered = entries.filter((run) => Date.parse(run.triggerAt) > at && Date.parse(run.triggerAt) < coverEnd);
      const active = before.find((run) => run.status === 'active')
        // A later run this entry does not cover: in event order it started while this one ran
        // or after; kept, and this trigger is refused as before (no built-in relies on it).
        ?? entries.find((run) => run.status === 'active' && Date.parse(run.triggerAt) > at && !covered.includes(run));
      if (active) return { enter: false, key, reason: `entry every time: run ${active.key} is still active` };
      if (rule.cooldown) {
        const latest = before.reduce<ExistingRun | null>(
          (found, run) => (!found || Date.parse(run.triggerAt) > Date.parse(found.triggerAt) ? run : found),
          null,
        );
        if (latest) {
          const cooledAt = addDuration(new Date(latest.triggerAt), rule.cooldown);
          if (cooledAt.getTime() > at) {
            return {
              enter: false,
              key,
              reason: `entry every time: cooldown ${rule.cooldown} since the entry triggered at ${latest.triggerAt} lasts until ${cooledAt.toISOString()} (this trigger: ${trigger.occurredAt})`,
            };
          }
        }
      }
      return covered.length > 0
        ? {
            enter: true,
            key,
            reason: `entry every time; its cooldown ${rule.cooldown} covers ${covered.length} later-triggered run(s) delivered first, withdrawn: ${covered.map((r) => r.key).join(', ')}`,
            withdraw: covered.map((r) => r.key),
          }
        : { enter: true, key, reason: 'entry every time' };
    }
  }
}

/**
 * Names of the facts that can supersede a trigger: the goal's event and the exits' events. The
 * edge loads the contact's recorded facts of these names so entryDecision can see them.
 */
export function entryGuardEventNames(definition: WorkflowDefinition): string[] {
  const names = new Set<string>();
  const goal = goalMatcherOf(definition);
  if (goal) names.add(goal.event);
  for (const matcher of definition.exit ?? []) names.add(matcher.event);
  return [...names];
}

/**
 * The fact names that start a run of `definition` or re-end a finished one: its trigger
 * (segment and date-trait triggers re-evaluate on identify and group) and its goal and exits.
 */
export function entryEventNames(definition: WorkflowDefinition): string[] {
  const trigger = definition.trigger.type === 'event' ? [definition.trigger.event] : ['identify', 'group'];
  return [...new Set([...trigger, ...entryGuardEventNames(definition)])];
}

/**
 * Why a trigger must not start a run, when a fact that happened at or after it would already
 * have converted or ended that run: e.g. `invoice.paid` (or voided, written off, subscription
 * canceled) for the invoice a late-delivered `invoice.payment_failed` is about. The run would
 * only email a customer who no longer owes anything. Facts before the trigger do not count (the
 * interpreter ignores them for a running run too), so a new failure after an earlier payment of
 * another invoice still enters.
 */
export function supersedingFact(definition: WorkflowDefinition, trigger: EventFact, context: Context, known: readonly EventFact[]): string | null {
  const goal = goalMatcherOf(definition);
  const triggerMs = Date.parse(trigger.occurredAt);
  for (const fact of known) {
    if (fact.id !== undefined && fact.id === trigger.id) continue;
    if (Date.parse(fact.occurredAt) < triggerMs) continue;
    const scope = buildScope(definition, context, { event: fact, trigger, now: new Date(fact.occurredAt) });
    if (goal) {
      const matched = matchEvent(goal, fact, scope);
      if (matched.match) return `goal already reached: ${matched.explain} at ${fact.occurredAt}, not before the trigger at ${trigger.occurredAt}`;
    }
    for (const exit of definition.exit ?? []) {
      const matched = matchEvent(exit, fact, scope);
      if (matched.match) return `already exited: ${matched.explain} at ${fact.occurredAt}, not before the trigger at ${trigger.occurredAt}`;
    }
  }
  return null;
}

// ---------------------------------------------------------------------------------------------
// Split assignment

/** A deterministic position in [0, 1) for a contact at a split. */
export function splitBucket(definitionKey: string, stepId: string, contactId: string | number): number {
  const digest = createHash('sha256').update(`${definitionKey}:${stepId}:${contactId}`).digest();
  // 48 bits fit exactly in a double.
  return digest.readUIntBE(0, 6) / 2 ** 48;
}

type SplitStep = Extract<Step, { type: 'split' }>;

/** The variant key (or HOLDOUT) a contact gets at a split, walking cumulative weights. */
export function assignVariant(definitionKey: string, step: SplitStep, contactId: string | number): string {
  const groups = [
    ...step.variants.map((variant) => ({ key: variant.key, weight: variant.weight })),
    ...(step.holdout ? [{ key: HOLDOUT, weight: step.holdout.weight }] : []),
  ];
  const total = groups.reduce((sum, group) => sum + group.weight, 0);
  const position = splitBucket(definitionKey, step.id, contactId) * total;
  let cumulative = 0;
  for (const group of groups) {
    cumulative += group.weight;
    if (position < cumulative) return group.key;
  }
  // Floating-point rounding at the very top of the range.
  return groups[groups.length - 1]?.key ?? HOLDOUT;
}

// ---------------------------------------------------------------------------------------------
// Execution

/** The per-call working set; created fresh for every call, never shared. */
interface Execution {
  definition: WorkflowDefinition;
  compiled: CompiledWorkflow;
  context: Context;
  now: Date;
  state: RunState;
  actions: Action[];
  trace: TraceEntry[];
}

function record(
  execution: Execution,
  kind: TraceEntry['kind'],
  detail: string,
  data?: Record<string, unknown>,
  stepId: string | null = execution.state.stepId,
): void {
  execution.trace.push({ at: execution.now.toISOString(), stepId, kind, detail, ...(data ? { data } : {}) });
}

function result(execution: Execution): AdvanceResult {
  return { state: execution.state, actions: execution.actions, trace: execution.trace };
}

function endRun(execution: Execution, status: Exclude<RunStatus, 'active'>, reason: string): void {
  execution.state.status = status;
  execution.state.wait = null;
  execution.state.endedAt = execution.now.toISOString();
  execution.state.endReason = reason;
}

function setWait(execution: Execution, wait: Wait, detail: string, data?: Record<string, unknown>): void {
  execution.state.wait = wait;
  record(execution, wait.kind === 'hold' ? 'send_held' : 'wait', detail, { ...data, wait });
}

function goalWindowEnd(execution: Execution): Date {
  return addDuration(new Date(execution.state.startedAt), execution.definition.goalWindow ?? DEFAULT_GOAL_WINDOW);
}

/** No more steps to run (end of steps, or a hold-out): listen for the goal, or complete. */
function finishSteps(execution: Execution, why: string): void {
  execution.state.stepId = null;
  if (execution.definition.goal) {
    const until = goalWindowEnd(execution);
    if (until.getTime() > execution.now.getTime()) {
      setWait(execution, { kind: 'goal', until: until.toISOString() }, `${why}; listening for the goal until ${until.toISOString()}`);
      return;
    }
    record(execution, 'completed', `${why}; the goal window ended at ${until.toISOString()}`);
    endRun(execution, 'completed', 'goal window ended');
    return;
  }
  record(execution, 'completed', why);
  endRun(execution, 'completed', 'steps finished');
}

function scopeFor(execution: Execution, event: EventFact | null): Scope {
  return buildScope(execution.definition, execution.context, { event, state: execution.state, now: execution.now });
}

/** The run's most recent split assignment: runs move forward in pre-order, so the largest order. */
function currentVariant(execution: Execution): string | null {
  let latest: { order: number; variant: string } | null = null;
  for (const [stepId, variant] of Object.entries(execution.state.variants)) {
    const order = execution.compiled.steps.get(stepId)?.order ?? -1;
    if (!latest || order > latest.order) latest = { order, variant };
  }
  return latest?.variant ?? null;
}

type SendStep = Extract<Step, { type: 'send_email' }>;

export type SendPolicy =
  | { kind: 'send' }
  | { kind: 'skip'; reason: 'suppressed' | 'recovery_open'; detail: string }
  | { kind: 'hold'; reason: HoldReason; until: Date; detail: string };

/** What the contact's policy says about sending this workflow's email now. */
export function sendPolicy(definition: WorkflowDefinition, context: Context, now: Date): SendPolicy {
  const policy = context.policy;
  if (policy.suppressed === 'all') return { kind: 'skip', reason: 'suppressed', detail: 'address suppressed for all email' };
  if (definition.category === 'transactional') return { kind: 'send' };
  if (policy.suppressed === 'non_transactional') {
    return { kind: 'skip', reason: 'suppressed', detail: 'address suppressed for non-transactional email' };
  }
  if (policy.recoveryOpen) {
    if (definition.duringRecovery === 'skip') {
      return { kind: 'skip', reason: 'recovery_open', detail: 'billing recovery open; this workflow skips sends meanwhile' };
    }
    return {
      kind: 'hold',
      reason: 'dunning_priority',
      until: addDuration(now, DUNNING_PRIORITY_HOLD),
      detail: 'billing recovery open; billing emails go first',
    };
  }
  if (policy.frequencyCap && policy.lastCappedSendAt) {
    const capEnd = addDuration(new Date(policy.lastCappedSendAt), policy.frequencyCap);
    if (capEnd.getTime() > now.getTime()) {
      return {
        kind: 'hold',
        reason: 'frequency_cap',
        until: capEnd,
        detail: `frequency cap ${policy.frequencyCap}: last send at ${policy.lastCappedSendAt}`,
      };
    }
  }
  if (policy.quietHours) {
    const zone = contactTimeZone(context);
    if (isInsideWindow(now, zone, policy.quietHours)) {
      return {
        kind: 'hold',
        reason: 'quiet_hours',
        until: nextLocalTime(now, zone, policy.quietHours.end),
        detail: `quiet hours ${policy.quietHours.start}–${policy.quietHours.end} in ${zone}`,
      };
    }
  }
  return { kind: 'send' };
}

/** Runs the send step; returns false when the run must stay on it (held). */
function runSend(execution: Execution, step: SendStep): boolean {
  const decision = sendPolicy(execution.definition, execution.context, execution.now);
  if (decision.kind === 'skip') {
    record(execution, 'send_skipped', `skipped ${step.template}: ${decision.detail}`, { reason: decision.reason, template: step.template });
    return true;
  }
  if (decision.kind === 'hold') {
    setWait(
      execution,
      { kind: 'hold', reason: decision.reason, until: decision.until.toISOString() },
      `held ${step.template} until ${decision.until.toISOString()}: ${decision.detail}`,
      { reason: decision.reason, template: step.template },
    );
    return false;
  }
  const variant = currentVariant(execution);
  const subject = (variant !== null ? step.subjects?.[variant] : undefined) ?? step.subject;
  execution.actions.push({
    type: 'send_email',
    stepId: step.id,
    template: step.template,
    subject,
    category: execution.definition.category,
    variant,
  });
  if (execution.definition.category !== 'transactional') {
    // The edge only learns of this send after the call; later sends in the same pass must
    // already see it, or two back-to-back emails would both slip under the frequency cap.
    const policy = { ...execution.context.policy, lastCappedSendAt: execution.now.toISOString() };
    execution.context = { ...execution.context, policy };
  }
  record(execution, 'send', `send ${step.template}: ${JSON.stringify(subject)}`, {
    template: step.template,
    subject,
    variant,
    category: execution.definition.category,
  });
  return true;
}

/**
 * Executes steps from `from` until the run waits or ends. `event` is the fact's event, visible to
 * branch conditions as `event`.
 */
function runFrom(execution: Execution, from: string | null, event: EventFact | null): void {
  let cursor = from;
  let executed = 0;
  while (cursor !== null) {
    if (executed >= MAX_STEPS_PER_ADVANCE) {
      record(execution, 'exit', `more than ${MAX_STEPS_PER_ADVANCE} steps in one pass; stopping the run`);
      endRun(execution, 'exited', 'step limit exceeded');
      return;
    }
    executed += 1;
    const node: CompiledStep | undefined = execution.compiled.steps.get(cursor);
    if (!node) {
      record(execution, 'exit', `step ${cursor} no longer exists in the definition`, undefined, cursor);
      endRun(execution, 'exited', `unknown step ${cursor}`);
      return;
    }
    execution.state.stepId = cursor;
    const step = node.step;
    const now = execution.now;
    switch (step.type) {
      case 'wait': {
        const until = addDuration(now, step.duration);
        setWait(execution, { kind: 'time', until: until.toISOString() }, `wait ${step.duration} until ${until.toISOString()}`);
        return;
      }
      case 'wait_until': {
        const zone = contactTimeZone(execution.context);
        const window = `${step.window.start}–${step.window.end}${step.weekdaysOnly ? ' on weekdays' : ''} in ${zone}`;
        if (isInsideWindow(now, zone, step.window, step.weekdaysOnly ?? false)) {
          record(execution, 'step', `inside ${window}; continuing`, { zone });
          cursor = node.next;
          break;
        }
        const until = nextLocalTime(now, zone, step.window.start, step.weekdaysOnly ?? false);
        setWait(execution, { kind: 'time', until: until.toISOString() }, `wait for ${window} until ${until.toISOString()}`, { zone });
        return;
      }
      case 'wait_for_event': {
        const until = addDuration(now, step.timeout);
        setWait(
          execution,
          { kind: 'event', event: step.event, until: until.toISOString() },
          `wait for ${JSON.stringify(step.event)} until ${until.toISOString()} (timeout ${step.timeout})`,
        );
        return;
      }
      case 'branch':
        cursor = entryOf(chooseBranch(execution, step, event), node.next);
        break;
      case 'split': {
        const existing = execution.state.variants[step.id];
        const variant = existing ?? assignVariant(execution.definition.key, step, execution.context.contact.splitKey ?? execution.context.contact.id);
        execution.state.variants = { ...execution.state.variants, [step.id]: variant };
        if (variant === HOLDOUT) {
          execution.state.holdout = true;
          record(execution, 'split', 'assigned to the hold-out group: no sends', { variant });
          finishSteps(execution, 'hold-out');
          return;
        }
        record(execution, 'split', `assigned to variant ${variant}`, { variant });
        const chosen = step.variants.find((candidate) => candidate.key === variant);
        cursor = entryOf(chosen?.steps ?? [], node.next);
        break;
      }
      case 'send_email':
        if (!runSend(execution, step)) return;
        cursor = node.next;
        break;
      case 'webhook':
      case 'notify':
      case 'update_contact':
        runImmediate(execution, step);
        cursor = node.next;
        break;
      case 'exit': {
        const reason = step.reason ?? 'exit step';
        record(execution, 'exit', reason);
        endRun(execution, 'exited', reason);
        return;
      }
    }
  }
  finishSteps(execution, 'all steps done');
}

type BranchStep = Extract<Step, { type: 'branch' }>;
type ImmediateStep = Extract<Step, { type: 'webhook' | 'notify' | 'update_contact' }>;

/** Evaluates a branch step's conditions in order, records why, and returns the block taken. */
function chooseBranch(execution: Execution, step: BranchStep, event: EventFact | null): Step[] {
  const scope = scopeFor(execution, event);
  const evaluated: { label: string; explain: string; value: boolean }[] = [];
  let chosen: { label: string; steps: Step[] } | null = null;
  for (const [index, branch] of step.branches.entries()) {
    const outcome: Evaluation = evaluate(branch.when, scope);
    const label = branch.label ?? `branch ${index}`;
    evaluated.push({ label, explain: outcome.explain, value: outcome.value });
    if (outcome.value) {
      chosen = { label, steps: branch.steps };
      break;
    }
  }
  const taken = chosen ?? { label: 'otherwise', steps: step.otherwise };
  record(
    execution,
    'branch',
    `took ${taken.label}: ${evaluated.map((item) => `${item.label}: ${item.explain}`).join('; ') || 'no conditions'}`,
    { taken: taken.label, conditions: evaluated },
    step.id,
  );
  return taken.steps;
}

/** A step that acts at once (no wait): its action and trace entry. */
function runImmediate(execution: Execution, step: ImmediateStep): void {
  switch (step.type) {
    case 'webhook': {
      const body = step.body ?? {};
      execution.actions.push({ type: 'webhook', stepId: step.id, url: step.url, body });
      record(execution, 'webhook', `webhook ${step.url}`, { url: step.url }, step.id);
      return;
    }
    case 'notify':
      if (!step.webhookUrl && execution.context.settings?.slackWebhookConfigured === false) {
        // Nowhere to post: no delivery row, so nothing to retry or park; the trace says why.
        record(execution, 'notify', `notify ${step.channel} skipped: no Slack webhook URL (SLACK_WEBHOOK_URL is unset and the step names none): ${step.text}`, {
          channel: step.channel,
          skipped: 'no_webhook_url',
        }, step.id);
        return;
      }
      execution.actions.push({ type: 'notify', stepId: step.id, channel: step.channel, text: step.text, webhookUrl: step.webhookUrl ?? null });
      record(execution, 'notify', `notify ${step.channel}: ${step.text}`, { channel: step.channel }, step.id);
      return;
    case 'update_contact':
      execution.actions.push({ type: 'update_contact', stepId: step.id, traits: step.traits });
      record(execution, 'update_contact', `update contact traits ${Object.keys(step.traits).join(', ')}`, { traits: step.traits }, step.id);
      return;
  }
}

/**
 * An exit's steps, run as the run ends on it: immediate steps and branches of them, in order
 * (validation admits nothing else; anything else is skipped with a trace entry).
 */
function runExitSteps(execution: Execution, steps: readonly Step[], event: EventFact, depth = 0): void {
  for (const step of steps) {
    if (step.type === 'branch') {
      if (depth < MAX_STEPS_PER_ADVANCE) runExitSteps(execution, chooseBranch(execution, step, event), event, depth + 1);
    } else if (step.type === 'webhook' || step.type === 'notify' || step.type === 'update_contact') {
      runImmediate(execution, step);
    } else {
      record(execution, 'ignored', `${step.type} step ${step.id} cannot run as the run exits`, undefined, step.id);
    }
  }
}

function isWaitForEventNode(node: CompiledStep | undefined): node is CompiledStep & { step: Extract<Step, { type: 'wait_for_event' }> } {
  return node?.step.type === 'wait_for_event';
}

// ---------------------------------------------------------------------------------------------
// Goal and exit

function goalMatcherOf(definition: WorkflowDefinition): EventMatcher | null {
  return definition.goal && !('condition' in definition.goal) ? definition.goal : null;
}

function goalConditionOf(definition: WorkflowDefinition): Condition | null {
  return definition.goal && 'condition' in definition.goal ? definition.goal.condition : null;
}

/** Checks the goal for this fact; converts the run when it is met. Returns true when converted. */
function checkGoal(execution: Execution, event: EventFact | null): boolean {
  const { definition, state } = execution;
  const matcher = goalMatcherOf(definition);
  const condition = goalConditionOf(definition);
  const wait = state.wait;
  if (matcher && event) {
    if (wait?.kind === 'goal' && Date.parse(event.occurredAt) >= Date.parse(wait.until)) return false;
    const matched = matchEvent(matcher, event, scopeFor(execution, event));
    if (matched.match) {
      record(execution, 'goal', `goal reached: ${matched.explain}`, { event: event.name, occurredAt: event.occurredAt });
      state.convertedAt = event.occurredAt;
      endRun(execution, 'converted', `goal: ${event.name}`);
      state.endedBy = { id: event.id, name: event.name, occurredAt: event.occurredAt };
      return true;
    }
  }
  if (condition) {
    const outcome = evaluate(condition, scopeFor(execution, event));
    if (outcome.value) {
      record(execution, 'goal', `goal reached: ${outcome.explain}`);
      state.convertedAt = execution.now.toISOString();
      endRun(execution, 'converted', 'goal condition met');
      return true;
    }
  }
  return false;
}

/** Whether `event` would convert or exit the run (goal matcher within its window, or an exit). */
function endsRun(execution: Execution, event: EventFact): boolean {
  const goal = goalMatcherOf(execution.definition);
  const wait = execution.state.wait;
  const inWindow = !(wait?.kind === 'goal' && Date.parse(event.occurredAt) >= Date.parse(wait.until));
  if (goal && inWindow && matchEvent(goal, event, scopeFor(execution, event)).match) return true;
  return (execution.definition.exit ?? []).some((exit) => matchEvent(exit, event, scopeFor(execution, event)).match);
}

/**
 * A run that ended on a goal or exit fact, fed a goal or exit fact that happened before that one
 * (and after the trigger) but was delivered after it: the run ends on the earlier fact, as it
 * would have in event order (e.g. paid, then an earlier write-off arrives → exited, not
 * converted). Only event matchers decide here: a goal condition reads today's context, which
 * says nothing about the order of past facts.
 */
function reEnd(execution: Execution, event: EventFact): boolean {
  const state = execution.state;
  const endedBy = state.endedBy;
  if (!endedBy || (state.status !== 'converted' && state.status !== 'exited')) return false;
  const at = Date.parse(event.occurredAt);
  if (!(at < Date.parse(endedBy.occurredAt)) || at < Date.parse(state.vars.trigger.occurredAt)) return false;
  const goal = goalMatcherOf(execution.definition);
  const window = goalWindowEnd(execution);
  const isGoal = goal !== null && goal !== undefined && at < window.getTime() && matchEvent(goal, event, scopeFor(execution, event)).match;
  const isExit = !isGoal && (execution.definition.exit ?? []).some((exit) => matchEvent(exit, event, scopeFor(execution, event)).match);
  if (!isGoal && !isExit) return false;
  record(execution, 'ignored', `${event.name} at ${event.occurredAt} happened before ${endedBy.name} at ${endedBy.occurredAt} that ended the run (delivered after it): the run ends on it`);
  state.status = 'active';
  return isGoal ? checkGoal(execution, event) : checkExit(execution, event, false);
}

/**
 * Ends the run on the first exit matching `event`. `act`: run that exit's steps (false when an
 * already ended run is re-ended on an earlier fact: it acted when it ended, and a late
 * correction of the order of past facts must not alert about a state that no longer holds).
 */
function checkExit(execution: Execution, event: EventFact, act = true): boolean {
  for (const matcher of execution.definition.exit ?? []) {
    const matched = matchEvent(matcher, event, scopeFor(execution, event));
    if (matched.match) {
      record(execution, 'exit', `exit: ${matched.explain}`, { event: event.name });
      endRun(execution, 'exited', `exit: ${event.name}`);
      execution.state.convertedAt = null;
      execution.state.endedBy = { id: event.id, name: event.name, occurredAt: event.occurredAt };
      if (act && matcher.steps && matcher.steps.length > 0) runExitSteps(execution, matcher.steps, event);
      return true;
    }
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Entry points

function newExecution(definition: WorkflowDefinition, state: RunState, context: Context, now: Date): Execution {
  return {
    definition,
    compiled: compile(definition),
    context,
    now,
    // The caller's state is never mutated.
    state: structuredClone(state),
    actions: [],
    trace: [],
  };
}

/** A new run for `trigger`: executes the first steps (until the first wait) at `now`. */
export function startRun(definition: WorkflowDefinition, trigger: EventFact, context: Context, now: Date): AdvanceResult {
  const compiled = compile(definition);
  const initial: RunState = {
    status: 'active',
    stepId: compiled.first,
    wait: null,
    variants: {},
    holdout: false,
    vars: { trigger, matched: {} },
    startedAt: now.toISOString(),
    endedAt: null,
    endReason: null,
    convertedAt: null,
  };
  const execution = newExecution(definition, initial, context, now);
  record(execution, 'entered', `entered on ${JSON.stringify(trigger.name)} at ${trigger.occurredAt}`, {
    trigger: trigger.name,
    triggerId: trigger.id ?? null,
  }, null);
  runFrom(execution, compiled.first, trigger);
  return result(execution);
}

/**
 * The state stored for an entry refused as superseded (EntryDecision.superseded): it starts and
 * ends at `now` without executing a step.
 */
export function supersededEntry(trigger: EventFact, now: Date, reason: string): AdvanceResult['state'] {
  return {
    status: 'superseded',
    stepId: null,
    wait: null,
    variants: {},
    holdout: false,
    vars: { trigger, matched: {} },
    startedAt: now.toISOString(),
    endedAt: now.toISOString(),
    endReason: reason,
    convertedAt: null,
  };
}

/** Feeds one fact (an event or a timer firing) to a run. */
export function advance(
  definition: WorkflowDefinition,
  state: RunState,
  fact: Fact,
  context: Context,
  now: Date,
  /**
   * Recorded facts of the goal's and exits' event names (entryGuardEventNames) for the run's
   * contact: a goal or exit fact that happened before `fact` but is fed after it (delivered
   * later) decides how the run ended, as it would have in event order.
   */
  known: readonly EventFact[] = [],
): AdvanceResult {
  const execution = newExecution(definition, state, context, now);
  const current = execution.state;
  if (current.status !== 'active') {
    if (fact.type === 'event' && reEnd(execution, fact.event)) return result(execution);
    record(execution, 'ignored', `run is ${current.status}; ${fact.type} ignored`);
    return result(execution);
  }
  if (fact.type === 'start') {
    record(execution, 'ignored', 'run already started; start ignored');
    return result(execution);
  }
  const event = fact.type === 'event' ? fact.event : null;
  if (event && Date.parse(event.occurredAt) < Date.parse(current.vars.trigger.occurredAt)) {
    record(execution, 'ignored', `${event.name} at ${event.occurredAt} happened before the trigger`);
    return result(execution);
  }

  // The run ends on the earliest goal or exit fact by event time, not by arrival: e.g. an
  // invoice written off (exit) and later paid ends the run as exited even when the payment was
  // delivered first.
  if (event && known.length > 0 && (endsRun(execution, event))) {
    const triggerMs = Date.parse(current.vars.trigger.occurredAt);
    const eventMs = Date.parse(event.occurredAt);
    const earlier = [...known]
      .filter((f) => f.id !== event.id && Date.parse(f.occurredAt) >= triggerMs && Date.parse(f.occurredAt) < eventMs)
      .sort((a, b) => Date.parse(a.occurredAt) - Date.parse(b.occurredAt))
      .find((f) => endsRun(execution, f));
    if (earlier) {
      record(execution, 'ignored', `${earlier.name} at ${earlier.occurredAt} happened before ${event.name} at ${event.occurredAt} (delivered after it): the run ends on it`);
      if (checkGoal(execution, earlier)) return result(execution);
      if (checkExit(execution, earlier)) return result(execution);
    }
  }

  // Goal before exit: paying and cancelling in the same batch is still a recovery.
  if (checkGoal(execution, event)) return result(execution);
  if (event && checkExit(execution, event)) return result(execution);

  const wait = current.wait;
  if (wait === null) {
    // Not waiting (should not happen between calls): resume at the cursor.
    runFrom(execution, current.stepId, event);
    return result(execution);
  }
  const node = current.stepId !== null ? execution.compiled.steps.get(current.stepId) : undefined;

  if (event) {
    if (wait.kind === 'hold' && HOLD_RELEASES[wait.reason].includes(event.name)) {
      current.wait = null;
      record(execution, 'woke', `hold (${wait.reason}) released by ${event.name}; re-checking the send`, { event: event.name });
      runFrom(execution, current.stepId, null);
      return result(execution);
    }
    if (wait.kind !== 'event' || event.name !== wait.event) {
      record(execution, 'ignored', `${event.name}: nothing is waiting for it`);
      return result(execution);
    }
    if (!isWaitForEventNode(node)) {
      record(execution, 'exit', `wait step ${current.stepId} no longer exists in the definition`);
      endRun(execution, 'exited', `unknown step ${current.stepId}`);
      return result(execution);
    }
    if (Date.parse(event.occurredAt) >= Date.parse(wait.until)) {
      record(execution, 'ignored', `${event.name} at ${event.occurredAt} came after the timeout ${wait.until}`);
      return result(execution);
    }
    const step = node.step;
    if (step.where) {
      const where = evaluate(step.where, scopeFor(execution, event));
      if (!where.value) {
        record(execution, 'ignored', `${event.name} does not match: ${where.explain}`);
        return result(execution);
      }
    }
    current.vars.matched = { ...current.vars.matched, [step.id]: event };
    current.wait = null;
    record(execution, 'event_matched', `${event.name} arrived`, { event: event.name, occurredAt: event.occurredAt });
    runFrom(execution, entryOf(step.onEvent, node.next), event);
    return result(execution);
  }

  // A timer.
  if (now.getTime() < Date.parse(wait.until)) {
    record(execution, 'ignored', `timer before ${wait.until}: spurious wake`);
    return result(execution);
  }
  current.wait = null;
  switch (wait.kind) {
    case 'goal':
      record(execution, 'completed', `goal window ended at ${wait.until} without conversion`);
      endRun(execution, 'completed', 'goal window ended');
      return result(execution);
    case 'time':
      record(execution, 'woke', `waited until ${wait.until}`);
      runFrom(execution, node ? node.next : current.stepId, null);
      return result(execution);
    case 'hold':
      record(execution, 'woke', `hold (${wait.reason}) ended; re-checking the send`);
      runFrom(execution, current.stepId, null);
      return result(execution);
    case 'event':
      if (!isWaitForEventNode(node)) {
        record(execution, 'exit', `wait step ${current.stepId} no longer exists in the definition`);
        endRun(execution, 'exited', `unknown step ${current.stepId}`);
        return result(execution);
      }
      record(execution, 'timeout', `${wait.event} did not arrive by ${wait.until}`);
      runFrom(execution, entryOf(node.step.onTimeout, node.next), null);
      return result(execution);
  }
}

/**
 * Names of events a running instance reacts to (goal, exit, wait_for_event), or 'all' when the
 * goal is a condition (checked on every fact). The edge can skip delivering anything else.
 */
export function runEventNames(definition: WorkflowDefinition): string[] | 'all' {
  if (goalConditionOf(definition)) return 'all';
  const names = new Set<string>();
  const goal = goalMatcherOf(definition);
  if (goal) names.add(goal.event);
  for (const matcher of definition.exit ?? []) names.add(matcher.event);
  for (const node of compile(definition).steps.values()) {
    if (node.step.type === 'wait_for_event') names.add(node.step.event);
  }
  if (definition.category !== 'transactional') {
    for (const released of Object.values(HOLD_RELEASES)) for (const name of released) names.add(name);
  }
  return [...names];
}
