// Builders shared by the workflow unit tests (not a test file itself).

import assert from 'node:assert/strict';
import type { AdvanceResult, Context, EventFact, Fact, RunState, Step, WorkflowDefinition } from '../../src/workflows/types.ts';
import { validateDefinition } from '../../src/workflows/definition-schema.ts';
import { addDuration } from '../../src/workflows/duration.ts';
import { advance } from '../../src/workflows/interpreter.ts';

/** Monday 2 March 2026, 10:00 UTC. */
export const T0 = '2026-03-02T10:00:00.000Z';

/** `iso` + an ISO-8601 duration, as an ISO string. */
export function plus(iso: string, duration: string): string {
  return addDuration(new Date(iso), duration).toISOString();
}

export function makeEvent(name: string, properties: Record<string, unknown> = {}, occurredAt = T0, id?: string): EventFact {
  return { ...(id ? { id } : {}), name, properties, occurredAt };
}

export interface ContextOverrides {
  contact?: Partial<Context['contact']>;
  account?: Context['account'];
  counts?: Record<string, number>;
  policy?: Partial<Context['policy']>;
  invoice?: Record<string, unknown> | null;
  subscription?: Record<string, unknown> | null;
}

export function makeContext(overrides: ContextOverrides = {}): Context {
  return {
    contact: { id: 'contact_1', email: 'ada@example.com', traits: {}, ...overrides.contact },
    account: overrides.account === undefined ? { id: 'account_1', traits: {} } : overrides.account,
    invoice: overrides.invoice ?? null,
    subscription: overrides.subscription ?? null,
    counts: overrides.counts ?? {},
    policy: {
      recoveryOpen: false,
      lastCappedSendAt: null,
      frequencyCap: null,
      quietHours: null,
      timezone: null,
      suppressed: null,
      ...overrides.policy,
    },
  };
}

/** A definition around `steps`; asserts it validates so tests never exercise malformed input by accident. */
export function makeDefinition(steps: Step[], overrides: Partial<WorkflowDefinition> = {}): WorkflowDefinition {
  const definition: WorkflowDefinition = {
    key: 'test-flow',
    name: 'Test flow',
    category: 'lifecycle',
    trigger: { type: 'event', event: 'Signed Up' },
    entry: { mode: 'once' },
    steps,
    ...overrides,
  };
  const result = validateDefinition(definition);
  assert.ok(result.ok, `test definition is invalid: ${JSON.stringify(!result.ok && result.errors)}`);
  return definition;
}

export function send(id: string, template = id, subject = `Subject ${id}`): Step {
  return { id, type: 'send_email', template, subject };
}

export function sentTemplates(result: AdvanceResult): string[] {
  return result.actions.flatMap((action) => (action.type === 'send_email' ? [action.template] : []));
}

export function traceKinds(result: AdvanceResult): string[] {
  return result.trace.map((entry) => entry.kind);
}

export function fireTimer(definition: WorkflowDefinition, state: RunState, context: Context, at: string): AdvanceResult {
  return advance(definition, state, { type: 'timer' }, context, new Date(at));
}

export function deliver(definition: WorkflowDefinition, state: RunState, context: Context, event: EventFact, at = event.occurredAt): AdvanceResult {
  const fact: Fact = { type: 'event', event };
  return advance(definition, state, fact, context, new Date(at));
}
