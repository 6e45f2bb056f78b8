// Publish-time contracts: what a workflow definition must satisfy, beyond its schema, before it
// is stored (PUT /v1/workflows/:key) or simulated. They need the template catalog loaded at
// start-up, so they live apart from definition-schema.ts (which is pure JSON checking):
//
//  1. Every `send_email` template exists in the catalog. A definition naming a missing template
//     would be stored, run, and fail at every send; it is refused instead.
//  2. The template's category fits the workflow's: a transactional workflow sends only
//     transactional templates, and a lifecycle or marketing workflow only lifecycle or marketing
//     ones (those two mix freely: the policy treats them alike — unsubscribe, frequency cap,
//     quiet hours). The line between service mail and promotional mail is never crossed: a
//     dunning email must not go out under marketing rules (held by quiet hours, stopped by an
//     unsubscribe), nor a promotion under transactional ones (no unsubscribe link, no cap).
//  3. Billing recovery keeps one run per invoice: a workflow with key `billing-recovery`, or any
//     workflow triggered by an `invoice.*` fact, has entry {mode: once_per_key, key:
//     trigger.properties.invoiceId}. Anything else would either email a customer once for all
//     of their invoices ever (`once`) or start a second sequence for the same invoice on every
//     retry (`every_time`).
//
// Like validateDefinition, the checks read the input defensively, so one answer lists every
// problem of a definition: structural, semantic and contract errors together.

import type { DefinitionError, DefinitionValidation } from './definition-schema.ts';
import { definitionErrors, mergeErrors, validateDefinition, walkLooseSteps } from './definition-schema.ts';

/** The part of the template catalog the contracts read (TemplateCatalog satisfies it). */
export interface TemplateLookup {
  meta(key: string): { category: string } | undefined;
}

/** The only entry rule a billing-recovery workflow may have. */
export const INVOICE_ENTRY = { mode: 'once_per_key', key: 'trigger.properties.invoiceId' } as const;

export const BILLING_RECOVERY_KEY = 'billing-recovery';

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

const CATEGORIES = ['transactional', 'lifecycle', 'marketing'];

function categoryProblem(template: string, templateCategory: string, workflowCategory: string): string | null {
  if (workflowCategory === 'transactional' && templateCategory !== 'transactional') {
    return `template ${JSON.stringify(template)} is ${templateCategory}; a transactional workflow may only send transactional templates`;
  }
  if (workflowCategory !== 'transactional' && templateCategory === 'transactional') {
    return `template ${JSON.stringify(template)} is transactional; a ${workflowCategory} workflow may only send lifecycle or marketing templates`;
  }
  return null;
}

/** Whether the definition is a billing-recovery workflow (by key, or by an invoice.* trigger). */
export function isInvoiceRecovery(definition: Record<string, unknown>): boolean {
  const trigger = definition['trigger'];
  const invoiceTriggered = isRecord(trigger) && trigger['type'] === 'event' && typeof trigger['event'] === 'string' && trigger['event'].startsWith('invoice.');
  return definition['key'] === BILLING_RECOVERY_KEY || invoiceTriggered;
}

/** The contract errors of a (possibly malformed) definition. */
export function contractErrors(input: unknown, templates: TemplateLookup): DefinitionError[] {
  if (!isRecord(input)) return [];
  const errors: DefinitionError[] = [];
  const category = typeof input['category'] === 'string' && CATEGORIES.includes(input['category']) ? input['category'] : null;
  walkLooseSteps(input['steps'], (step, pointer) => {
    if (step['type'] !== 'send_email' || typeof step['template'] !== 'string' || step['template'] === '') return;
    const template = step['template'];
    const meta = templates.meta(template);
    if (!meta) {
      errors.push({ path: `${pointer}/template`, message: `unknown template ${JSON.stringify(template)}: no emails/${template}.mjml in the template catalog` });
      return;
    }
    const problem = category ? categoryProblem(template, meta.category, category) : null;
    if (problem) errors.push({ path: `${pointer}/template`, message: problem });
  });
  const entry = input['entry'];
  if (isInvoiceRecovery(input) && isRecord(entry) && !(entry['mode'] === INVOICE_ENTRY.mode && entry['key'] === INVOICE_ENTRY.key)) {
    const why = input['key'] === BILLING_RECOVERY_KEY ? 'billing recovery' : 'a workflow triggered by an invoice fact';
    errors.push({ path: '/entry', message: `${why} runs once per invoice: entry must be ${JSON.stringify(INVOICE_ENTRY)}` });
  }
  return errors;
}

/**
 * Everything a definition must pass to be published: the schema, the semantic checks and the
 * contracts above, every problem reported (structural first, then semantic, then contracts).
 */
export function validateForPublish(input: unknown, templates: TemplateLookup): DefinitionValidation {
  const errors = mergeErrors(definitionErrors(input), contractErrors(input, templates));
  if (errors.length > 0) return { ok: false, errors };
  // Nothing found: validateDefinition adds its check against the published schema.
  return validateDefinition(input);
}
