// Stored definitions against the publishing checks: what start-up warns about.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { build } from './helpers/build.ts';
import { currentDefinitionProblems, putWorkflow } from '../src/workflows/workflow-store.ts';
import type { WorkflowDefinition } from '../src/workflows/types.ts';

test('start-up audit: the built-ins are clean; a stored definition naming a missing template is reported', async (t) => {
  const svc = await build(t);
  assert.deepEqual(await currentDefinitionProblems(svc.sql, svc.templates), [], 'the seeded built-ins pass');
  // Stored directly (as by a version published before the checks, or before a template was removed).
  const stale: WorkflowDefinition = {
    key: 'old-tour',
    name: 'Old tour',
    category: 'lifecycle',
    trigger: { type: 'event', event: 'Signed Up' },
    entry: { mode: 'once' },
    steps: [{ id: 'hello', type: 'send_email', template: 'welcome-v1', subject: 'Hi' }],
  };
  await putWorkflow(svc.sql, stale, svc.clock.now());
  assert.deepEqual(await currentDefinitionProblems(svc.sql, svc.templates), [
    { key: 'old-tour', version: 1, paused: false, errors: [{ path: '/steps/0/template', message: 'unknown template "welcome-v1": no emails/welcome-v1.mjml in the template catalog' }] },
  ]);
  // A fixed version clears it: only the current version counts.
  await putWorkflow(svc.sql, { ...stale, steps: [{ id: 'hello', type: 'send_email', template: 'onboarding-day1', subject: 'Hi' }] }, svc.clock.now());
  assert.deepEqual(await currentDefinitionProblems(svc.sql, svc.templates), []);
});
