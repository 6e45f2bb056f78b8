// The built-in workflow definitions shipped with Lifeline. They are plain JSON (editable, and the
// same shape users write); importing this module validates them, so a broken one fails at startup.

import type { WorkflowDefinition } from '../types.ts';
import { validateDefinition } from '../definition-schema.ts';
import billingRecoveryJson from './billing-recovery.json' with { type: 'json' };
import winBackJson from './win-back.json' with { type: 'json' };
import activationJson from './activation.json' with { type: 'json' };
import onboardingJson from './onboarding.json' with { type: 'json' };
import expansionJson from './expansion.json' with { type: 'json' };
import expansionUsageJson from './expansion-usage.json' with { type: 'json' };
import preDunningJson from './pre-dunning.json' with { type: 'json' };

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}

/** Validates a shipped definition and freezes it: callers share these objects, so none may edit one. */
function checked(source: string, json: unknown): WorkflowDefinition {
  const result = validateDefinition(json);
  if (!result.ok) {
    const problems = result.errors.map((error) => `${error.path || '/'}: ${error.message}`).join('; ');
    throw new Error(`built-in workflow ${source} is invalid: ${problems}`);
  }
  return deepFreeze(result.definition);
}

export const billingRecovery = checked('billing-recovery.json', billingRecoveryJson);
export const winBack = checked('win-back.json', winBackJson);
export const activation = checked('activation.json', activationJson);
export const onboarding = checked('onboarding.json', onboardingJson);
export const expansion = checked('expansion.json', expansionJson);
export const expansionUsage = checked('expansion-usage.json', expansionUsageJson);
export const preDunning = checked('pre-dunning.json', preDunningJson);

export const builtinDefinitions: readonly WorkflowDefinition[] = [
  billingRecovery,
  winBack,
  activation,
  onboarding,
  expansion,
  expansionUsage,
  preDunning,
];

export function builtinDefinition(key: string): WorkflowDefinition | undefined {
  return builtinDefinitions.find((definition) => definition.key === key);
}
