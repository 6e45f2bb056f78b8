// Condition evaluation. Pure: everything a condition may read is in the Scope, which the edge (or
// the interpreter) builds from the Context, the RunState and the fact being processed.

import type {
  Comparison,
  Condition,
  CountCondition,
  EventFact,
  Step,
  WorkflowDefinition,
} from './types.ts';
import { subtractDuration } from './duration.ts';

export interface Scope {
  contact: { id: string | number; email: string | null; traits: Record<string, unknown> } | null;
  account: { id: string | number; traits: Record<string, unknown> } | null;
  /** the event being processed (the incoming fact, or the one being counted/matched) */
  event: EventFact | null;
  /** the run's trigger event */
  trigger: EventFact | null;
  /** events matched by wait_for_event steps: steps.<stepId>.event */
  steps: Record<string, { event: EventFact }>;
  invoice: Record<string, unknown> | null;
  subscription: Record<string, unknown> | null;
  /** the run's Stripe customer: id, currency, mrr (in that currency), mrrByCurrency */
  customer: Record<string, unknown> | null;
  /** instance settings as they apply to the run, e.g. settings.recoveryAlertMrr */
  settings: Record<string, unknown>;
  /** count-condition results by countKey() */
  counts: Record<string, number>;
  /** the definition's named segments */
  segments: Record<string, Condition>;
  /** the definition's options, e.g. options.skipFirstEmail */
  options: Record<string, unknown>;
  /** the run's split assignments by split step id, e.g. variants.subject_test */
  variants: Record<string, string>;
  /** the evaluation time, ISO; lets conditions compare dates with `ref: "now"` */
  now: string | null;
}

/** The roots a condition path may start with (checked by definition validation). */
export const SCOPE_ROOTS = [
  'contact', 'account', 'event', 'trigger', 'steps', 'invoice', 'subscription', 'customer', 'settings', 'options', 'variants', 'now',
] as const;

export interface Evaluation {
  value: boolean;
  explain: string;
}

export function emptyScope(overrides: Partial<Scope> = {}): Scope {
  return {
    contact: null,
    account: null,
    event: null,
    trigger: null,
    steps: {},
    invoice: null,
    subscription: null,
    customer: null,
    settings: {},
    counts: {},
    segments: {},
    options: {},
    variants: {},
    now: null,
    ...overrides,
  };
}

// ---------------------------------------------------------------------------------------------
// Paths

/** Reads a dotted path from the scope; any missing link yields undefined. */
export function resolvePath(scope: Scope, path: string): unknown {
  let current: unknown = scope;
  for (const segment of path.split('.')) {
    if (current === null || current === undefined || typeof current !== 'object') return undefined;
    if (!Object.hasOwn(current, segment)) return undefined;
    current = (current as Record<string, unknown>)[segment];
  }
  return current;
}

// ---------------------------------------------------------------------------------------------
// Comparison semantics

const NUMERIC_STRING = /^\s*-?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?\s*$/i;
// A date string must at least start like one: plain numbers must never be read as years.
const DATE_STRING = /^\d{4}-\d{2}-\d{2}(?:[T ][\d:.]+(?:Z|[+-]\d{2}:?\d{2})?)?$/;

function asNumber(value: unknown): number | null {
  if (typeof value === 'number') return Number.isFinite(value) ? value : null;
  if (typeof value === 'string' && NUMERIC_STRING.test(value)) return Number(value);
  return null;
}

function asDateMs(value: unknown): number | null {
  if (typeof value !== 'string' || !DATE_STRING.test(value)) return null;
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? null : ms;
}

/** -1/0/1 when the two values are comparable as numbers, dates or strings; null otherwise. */
function compareValues(left: unknown, right: unknown): number | null {
  const leftNumber = asNumber(left);
  const rightNumber = asNumber(right);
  if (leftNumber !== null && rightNumber !== null) return Math.sign(leftNumber - rightNumber);
  const leftDate = asDateMs(left);
  const rightDate = asDateMs(right);
  if (leftDate !== null && rightDate !== null) return Math.sign(leftDate - rightDate);
  if (typeof left === 'string' && typeof right === 'string') return left < right ? -1 : left > right ? 1 : 0;
  return null;
}

function deepEqual(left: unknown, right: unknown): boolean {
  if (Object.is(left, right)) return true;
  if (typeof left !== 'object' || typeof right !== 'object' || left === null || right === null) return false;
  if (Array.isArray(left) !== Array.isArray(right)) return false;
  const leftKeys = Object.keys(left);
  const rightKeys = Object.keys(right);
  if (leftKeys.length !== rightKeys.length) return false;
  return leftKeys.every(
    (key) =>
      Object.hasOwn(right, key) &&
      deepEqual((left as Record<string, unknown>)[key], (right as Record<string, unknown>)[key]),
  );
}

function looselyEqual(left: unknown, right: unknown): boolean {
  if (left === undefined || right === undefined) return false;
  if (deepEqual(left, right)) return true;
  // "42" eq 42, and the same instant written two ways ("…T10:00:00Z" eq "…T10:00:00.000Z")
  return compareValues(left, right) === 0;
}

function isIn(left: unknown, list: unknown): boolean {
  if (left === undefined || !Array.isArray(list)) return false;
  if (Array.isArray(left)) return left.some((item) => list.some((candidate) => looselyEqual(item, candidate)));
  return list.some((candidate) => looselyEqual(left, candidate));
}

function contains(left: unknown, right: unknown): boolean {
  if (right === undefined) return false;
  if (typeof left === 'string') return typeof right === 'string' || typeof right === 'number' ? left.includes(String(right)) : false;
  if (Array.isArray(left)) return left.some((item) => looselyEqual(item, right));
  return false;
}

/**
 * Applies an operator. A missing (undefined) left side makes every comparison false, except
 * the negations `neq`/`nin` (true: an absent value is not equal to anything) and `not_exists`.
 */
export function applyOperator(op: Comparison['op'], left: unknown, right: unknown): boolean {
  switch (op) {
    case 'exists':
      return left !== undefined && left !== null;
    case 'not_exists':
      return left === undefined || left === null;
    case 'eq':
      return looselyEqual(left, right);
    case 'neq':
      return !looselyEqual(left, right);
    case 'in':
      return isIn(left, right);
    case 'nin':
      return !isIn(left, right);
    case 'contains':
      return contains(left, right);
    case 'gt':
    case 'gte':
    case 'lt':
    case 'lte': {
      if (left === undefined || left === null || right === undefined || right === null) return false;
      const order = compareValues(left, right);
      if (order === null) return false;
      if (op === 'gt') return order > 0;
      if (op === 'gte') return order >= 0;
      if (op === 'lt') return order < 0;
      return order <= 0;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Explanations

function show(value: unknown): string {
  if (value === undefined) return 'undefined';
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

function showOperand(value: unknown): string {
  // Numbers and booleans read better bare; strings keep quotes so "" and missing are distinguishable.
  return typeof value === 'number' || typeof value === 'boolean' ? String(value) : show(value);
}

// ---------------------------------------------------------------------------------------------
// Evaluation

export function isComparison(condition: Condition): condition is Comparison {
  return 'path' in condition && 'op' in condition;
}

export function isCountCondition(condition: Condition): condition is CountCondition {
  return 'count' in condition;
}

// Segments may reference segments; a cycle is a definition error (validation rejects it), and
// the depth limit keeps a bad definition that slipped through from recursing forever.
const MAX_SEGMENT_DEPTH = 16;

export function evaluate(condition: Condition, scope: Scope): Evaluation {
  return evaluateAt(condition, scope, 0);
}

function evaluateAt(condition: Condition, scope: Scope, segmentDepth: number): Evaluation {
  if ('all' in condition) {
    const parts = condition.all.map((part) => evaluateAt(part, scope, segmentDepth));
    const value = parts.every((part) => part.value);
    return { value, explain: `all(${parts.map((part) => part.explain).join('; ')}) → ${value}` };
  }
  if ('any' in condition) {
    const parts = condition.any.map((part) => evaluateAt(part, scope, segmentDepth));
    const value = parts.some((part) => part.value);
    return { value, explain: `any(${parts.map((part) => part.explain).join('; ')}) → ${value}` };
  }
  if ('not' in condition) {
    const inner = evaluateAt(condition.not, scope, segmentDepth);
    return { value: !inner.value, explain: `not(${inner.explain}) → ${!inner.value}` };
  }
  if ('segment' in condition) {
    const definition = scope.segments[condition.segment];
    if (!definition) return { value: false, explain: `segment ${condition.segment} (undefined segment) → false` };
    if (segmentDepth >= MAX_SEGMENT_DEPTH) {
      return { value: false, explain: `segment ${condition.segment} (nested too deeply) → false` };
    }
    const inner = evaluateAt(definition, scope, segmentDepth + 1);
    return { value: inner.value, explain: `segment ${condition.segment}: ${inner.explain}` };
  }
  if (isCountCondition(condition)) {
    const key = countKey(condition);
    const count = Object.hasOwn(scope.counts, key) ? scope.counts[key] : undefined;
    const value = applyOperator(condition.op, count, condition.value);
    const label = `count(${condition.count.event} within ${condition.count.within}${condition.count.where ? ' where …' : ''})`;
    const shown = count === undefined ? 'not provided' : String(count);
    return { value, explain: `${label} (${shown}) ${condition.op} ${condition.value} → ${value}` };
  }
  const left = resolvePath(scope, condition.path);
  const right = condition.ref !== undefined ? resolvePath(scope, condition.ref) : condition.value;
  const value = applyOperator(condition.op, left, right);
  const rightText =
    condition.op === 'exists' || condition.op === 'not_exists'
      ? ''
      : condition.ref !== undefined
        ? ` ${condition.ref} (${showOperand(right)})`
        : ` ${showOperand(right)}`;
  return { value, explain: `${condition.path} (${showOperand(left)}) ${condition.op}${rightText} → ${value}` };
}

// ---------------------------------------------------------------------------------------------
// Count conditions: the edge computes counts (e.g. with SQL over the event table) before calling
// the interpreter, keyed by countKey().

function stableStringify(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(stableStringify).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.keys(value)
      .filter((key) => (value as Record<string, unknown>)[key] !== undefined)
      .sort()
      .map((key) => `${JSON.stringify(key)}:${stableStringify((value as Record<string, unknown>)[key])}`);
    return `{${entries.join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/** Stable key of what is counted (event, window, filter, scope); op/value do not matter. */
export function countKey(condition: CountCondition): string {
  const { event, within, where, scope } = condition.count;
  return stableStringify({ event, within, where, scope: scope ?? 'contact' });
}

/** Calls `visit` for every condition (and nested condition) in the definition. */
export function forEachCondition(definition: WorkflowDefinition, visit: (condition: Condition) => void): void {
  const walk = (condition: Condition | undefined): void => {
    if (!condition) return;
    visit(condition);
    if ('all' in condition) condition.all.forEach(walk);
    else if ('any' in condition) condition.any.forEach(walk);
    else if ('not' in condition) walk(condition.not);
    else if (isCountCondition(condition)) walk(condition.count.where);
  };
  const walkSteps = (steps: Step[]): void => {
    for (const step of steps) {
      if (step.type === 'branch') {
        for (const branch of step.branches) {
          walk(branch.when);
          walkSteps(branch.steps);
        }
        walkSteps(step.otherwise);
      } else if (step.type === 'wait_for_event') {
        walk(step.where);
        walkSteps(step.onEvent);
        walkSteps(step.onTimeout);
      } else if (step.type === 'split') {
        for (const variant of step.variants) walkSteps(variant.steps);
      }
    }
  };
  if (definition.trigger.type === 'event') walk(definition.trigger.where);
  if (definition.trigger.type === 'segment') walk(definition.trigger.condition);
  walk(definition.entryCondition);
  if (definition.goal) walk('condition' in definition.goal ? definition.goal.condition : definition.goal.where);
  for (const matcher of definition.exit ?? []) {
    walk(matcher.where);
    walkSteps(matcher.steps ?? []);
  }
  for (const segment of Object.values(definition.segments ?? {})) walk(segment);
  walkSteps(definition.steps);
}

/** The definition's count conditions, one per distinct countKey(), for the edge to compute. */
export function collectCountConditions(definition: WorkflowDefinition): CountCondition[] {
  const byKey = new Map<string, CountCondition>();
  forEachCondition(definition, (condition) => {
    if (isCountCondition(condition)) {
      const key = countKey(condition);
      if (!byKey.has(key)) byKey.set(key, condition);
    }
  });
  return [...byKey.values()];
}

/**
 * Counts `events` that satisfy a count spec at `now`: same name, occurred in (now − within, now],
 * and matching `where` (evaluated with `event` bound to each candidate). A reference
 * implementation for the simulator and for edges that count in memory.
 */
export function countMatchingEvents(
  condition: CountCondition,
  events: readonly EventFact[],
  now: Date,
  baseScope: Scope,
): number {
  const from = subtractDuration(now, condition.count.within).getTime();
  const to = now.getTime();
  let count = 0;
  for (const event of events) {
    if (event.name !== condition.count.event) continue;
    const at = Date.parse(event.occurredAt);
    if (!(at > from && at <= to)) continue;
    if (condition.count.where && !evaluate(condition.count.where, { ...baseScope, event }).value) continue;
    count += 1;
  }
  return count;
}
