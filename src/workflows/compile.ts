// Flattens a definition's step tree so a run's cursor can be a single step id: every step knows
// the step that follows it, and the last step of a nested block continues with the step after
// its parent container.

import type { Step, WorkflowDefinition } from './types.ts';

export interface CompiledStep {
  step: Step;
  /** the step after this one once it (and any nested block it runs) is done; null = end of workflow */
  next: string | null;
  /** the enclosing branch/split/wait_for_event step, null at the top level */
  parentId: string | null;
  /** position in execution (pre-order) order: a run only ever moves to larger positions */
  order: number;
}

export interface CompiledWorkflow {
  /** the first step, null for a definition without steps */
  first: string | null;
  steps: ReadonlyMap<string, CompiledStep>;
}

/** Step blocks nested directly inside a container step, in document order. */
export function childBlocks(step: Step): Step[][] {
  switch (step.type) {
    case 'branch':
      return [...step.branches.map((branch) => branch.steps), step.otherwise];
    case 'wait_for_event':
      return [step.onEvent, step.onTimeout];
    case 'split':
      return step.variants.map((variant) => variant.steps);
    default:
      return [];
  }
}

/** Visits every step of the tree in execution (pre-order) order, with its JSON-pointer path. */
export function walkSteps(
  steps: readonly Step[],
  visit: (step: Step, pointer: string, parent: Step | null) => void,
  pointer = '/steps',
  parent: Step | null = null,
): void {
  steps.forEach((step, index) => {
    const stepPointer = `${pointer}/${index}`;
    visit(step, stepPointer, parent);
    switch (step.type) {
      case 'branch':
        step.branches.forEach((branch, branchIndex) =>
          walkSteps(branch.steps, visit, `${stepPointer}/branches/${branchIndex}/steps`, step),
        );
        walkSteps(step.otherwise, visit, `${stepPointer}/otherwise`, step);
        break;
      case 'wait_for_event':
        walkSteps(step.onEvent, visit, `${stepPointer}/onEvent`, step);
        walkSteps(step.onTimeout, visit, `${stepPointer}/onTimeout`, step);
        break;
      case 'split':
        step.variants.forEach((variant, variantIndex) =>
          walkSteps(variant.steps, visit, `${stepPointer}/variants/${variantIndex}/steps`, step),
        );
        break;
    }
  });
}

/** Compiles the step tree. Throws on duplicate step ids (validateDefinition reports them first). */
export function compile(definition: WorkflowDefinition): CompiledWorkflow {
  const steps = new Map<string, CompiledStep>();
  let order = 0;
  const add = (block: readonly Step[], after: string | null, parentId: string | null): void => {
    block.forEach((step, index) => {
      if (steps.has(step.id)) throw new Error(`duplicate step id "${step.id}" in workflow "${definition.key}"`);
      const next = block[index + 1]?.id ?? after;
      steps.set(step.id, { step, next, parentId, order: order++ });
      for (const child of childBlocks(step)) add(child, next, step.id);
    });
  };
  add(definition.steps, null, null);
  return { first: definition.steps[0]?.id ?? null, steps };
}

/** Where a run goes to execute `block`: its first step, or — for an empty block — `after`. */
export function entryOf(block: readonly Step[], after: string | null): string | null {
  return block[0]?.id ?? after;
}

/** Every email template key the definition uses, in document order, without duplicates. */
export function templateKeys(definition: WorkflowDefinition): string[] {
  const keys = new Set<string>();
  walkSteps(definition.steps, (step) => {
    if (step.type === 'send_email') keys.add(step.template);
  });
  return [...keys];
}
