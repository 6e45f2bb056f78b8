// Publish-time contracts: what a definition must satisfy, on top of its schema, before it is
// stored (PUT) or simulated — templates that exist and fit the workflow's category, and billing
// recovery keyed by invoice. The built-in definitions pass the very same checks.
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { loadTemplates } from '../../src/email/template-catalog.ts';
import type { TemplateCatalog } from '../../src/email/template-catalog.ts';
import type { DefinitionError } from '../../src/workflows/definition-schema.ts';
import { validateForPublish } from '../../src/workflows/publish-contracts.ts';
import type { TemplateLookup } from '../../src/workflows/publish-contracts.ts';
import { builtinDefinitions } from '../../src/workflows/builtin/index.ts';

const brand = { productName: 'Acme', primaryColor: '#4f46e5', postalAddress: '1 Main St', locale: 'en-US' };
let catalog: TemplateCatalog;
before(async () => {
  catalog = await loadTemplates({ brand });
});

/** A small stand-in catalog with one template per category (the contracts only read metadata). */
const categories: Record<string, string> = { receipt: 'transactional', tips: 'lifecycle', promo: 'marketing' };
const lookup: TemplateLookup = {
  meta: (key: string) => (Object.hasOwn(categories, key) ? { category: categories[key]! } : undefined),
};

function definition(category: string, templates: string[], extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    key: 'custom-flow',
    name: 'Custom flow',
    category,
    trigger: { type: 'event', event: 'Signed Up' },
    entry: { mode: 'once' },
    steps: templates.map((template, index) => ({ id: `send_${index}`, type: 'send_email', template, subject: 'Hi' })),
    ...extra,
  };
}

function errorsOf(input: unknown, templates: TemplateLookup = lookup): DefinitionError[] {
  const result = validateForPublish(input, templates);
  return result.ok ? [] : result.errors;
}

test('the built-in definitions pass every publish-time contract against the real template catalog', () => {
  assert.equal(builtinDefinitions.length, 7);
  for (const builtin of builtinDefinitions) {
    const result = validateForPublish(builtin, catalog);
    assert.ok(result.ok, `${builtin.key}: ${JSON.stringify(!result.ok && result.errors)}`);
  }
});

test('a template that is not in the catalog is an error at its step', () => {
  const errors = errorsOf(definition('lifecycle', ['tips', 'welcome', 'tips']));
  assert.deepEqual(errors, [{ path: '/steps/1/template', message: 'unknown template "welcome": no emails/welcome.mjml in the template catalog' }]);
  // Against the real catalog too: a typo in a built-in template key.
  const typo = errorsOf(definition('marketing', ['winback-ofer']), catalog);
  assert.equal(typo[0]?.path, '/steps/0/template');
});

test('template categories: transactional only in transactional workflows, never the other way round', () => {
  assert.deepEqual(errorsOf(definition('transactional', ['receipt'])), []);
  assert.deepEqual(errorsOf(definition('lifecycle', ['tips', 'promo'])), [], 'lifecycle and marketing templates mix');
  assert.deepEqual(errorsOf(definition('marketing', ['promo', 'tips'])), []);

  const inMarketing = errorsOf(definition('marketing', ['receipt']));
  assert.equal(inMarketing.length, 1);
  assert.equal(inMarketing[0]?.path, '/steps/0/template');
  assert.match(inMarketing[0]!.message, /template "receipt" is transactional; a marketing workflow may only send lifecycle or marketing templates/);

  const inTransactional = errorsOf(definition('transactional', ['receipt', 'promo', 'tips']));
  assert.deepEqual(inTransactional.map((error) => error.path), ['/steps/1/template', '/steps/2/template']);
  assert.match(inTransactional[0]!.message, /template "promo" is marketing; a transactional workflow may only send transactional templates/);

  // The real catalog: a dunning email cannot go out from a marketing workflow.
  assert.equal(errorsOf(definition('marketing', ['dunning-final']), catalog).length, 1);
});

test('templates nested in branches, splits and wait_for_event blocks are checked', () => {
  const input = definition('lifecycle', [], {
    steps: [
      {
        id: 'w', type: 'wait_for_event', event: 'X', timeout: 'P1D',
        onEvent: [{ id: 'a', type: 'send_email', template: 'nope_a', subject: 's' }],
        onTimeout: [{ id: 's', type: 'split', variants: [{ key: 'A', weight: 1, steps: [{ id: 'b', type: 'send_email', template: 'receipt', subject: 's' }] }] }],
      },
    ],
  });
  assert.deepEqual(errorsOf(input).map((error) => error.path), ['/steps/0/onEvent/0/template', '/steps/0/onTimeout/0/variants/0/steps/0/template']);
});

test('billing recovery keeps one run per invoice: key billing-recovery or any invoice.* trigger', () => {
  const keyed = { mode: 'once_per_key', key: 'trigger.properties.invoiceId' };
  const invoiceTriggered = (entry: unknown) =>
    definition('transactional', ['receipt'], { key: 'card-nudge', trigger: { type: 'event', event: 'invoice.payment_action_required' }, entry });
  assert.deepEqual(errorsOf(invoiceTriggered(keyed)), []);
  for (const entry of [{ mode: 'once' }, { mode: 'every_time', cooldown: 'P1D' }, { mode: 'once_per_key', key: 'trigger.properties.customerId' }]) {
    const errors = errorsOf(invoiceTriggered(entry));
    assert.equal(errors.length, 1, JSON.stringify(entry));
    assert.equal(errors[0]?.path, '/entry');
    assert.match(errors[0]!.message, /runs once per invoice: entry must be \{"mode":"once_per_key","key":"trigger.properties.invoiceId"\}/);
  }
  // The key alone is enough: whatever triggers "billing-recovery" must be invoice-keyed.
  const byKey = definition('transactional', ['receipt'], { key: 'billing-recovery', trigger: { type: 'event', event: 'Payment Failed' } });
  assert.equal(errorsOf(byKey)[0]?.path, '/entry');
  // Other workflows are free to choose.
  assert.deepEqual(errorsOf(definition('transactional', ['receipt'], { trigger: { type: 'event', event: 'subscription.canceled' } })), []);
});

test('schema, semantic and contract errors come back together, structural first', () => {
  const input = definition('marketing', [], {
    key: 'billing-recovery',
    goalWindow: 'soon',
    steps: [
      { id: 'a', type: 'send_email', template: 'welcome' },
      { id: 'b', type: 'send_email', template: 'receipt', subject: 'Pay' },
      { id: 'a', type: 'wait', duration: 'P1D' },
    ],
  });
  const errors = errorsOf(input);
  assert.deepEqual(errors.map((error) => error.path), [
    '/steps/0/subject', // structural
    '/steps/2/id', // semantic: duplicate id
    '/goalWindow', // semantic: duration
    '/steps/0/template', // contract: unknown template
    '/steps/1/template', // contract: category
    '/entry', // contract: billing recovery per invoice
  ]);
});
