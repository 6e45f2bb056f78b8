import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Condition, CountCondition } from '../../src/workflows/types.ts';
import {
  collectCountConditions,
  countKey,
  countMatchingEvents,
  emptyScope,
  evaluate,
  resolvePath,
} from '../../src/workflows/conditions.ts';
import { makeDefinition, makeEvent, T0, plus } from './support.ts';

const scope = emptyScope({
  contact: { id: 'c1', email: 'ada@example.com', traits: { plan: 'pro', seats: '12', tags: ['beta', 'vip'], trial_ends_at: '2026-03-10T00:00:00Z' } },
  account: { id: 'a1', traits: { usage_pct: 95, renews_at: '2026-04-01' } },
  event: makeEvent('invoice.paid', { invoiceId: 'in_1', amountPaid: 1200 }),
  trigger: makeEvent('invoice.payment_failed', { invoiceId: 'in_1', declineClass: 'soft', note: null }),
  options: { skipFirstEmail: true },
});

const is = (condition: Condition) => evaluate(condition, scope).value;

test('resolves dotted paths and yields undefined for any missing link', () => {
  assert.equal(resolvePath(scope, 'account.traits.usage_pct'), 95);
  assert.equal(resolvePath(scope, 'trigger.properties.invoiceId'), 'in_1');
  assert.equal(resolvePath(scope, 'account.traits.nope.deeper'), undefined);
  assert.equal(resolvePath(scope, 'invoice.status'), undefined, 'null root');
  assert.equal(resolvePath(scope, 'contact.traits.plan.length'), undefined, 'no reaching into strings');
  assert.equal(resolvePath(scope, 'contact.traits.constructor'), undefined, 'no prototype properties');
});

test('eq/neq compare loosely across numbers and numeric strings, strictly otherwise', () => {
  assert.equal(is({ path: 'contact.traits.plan', op: 'eq', value: 'pro' }), true);
  assert.equal(is({ path: 'contact.traits.plan', op: 'eq', value: 'Pro' }), false);
  assert.equal(is({ path: 'contact.traits.seats', op: 'eq', value: 12 }), true, '"12" eq 12');
  assert.equal(is({ path: 'contact.traits.plan', op: 'neq', value: 'free' }), true);
  assert.equal(is({ path: 'options.skipFirstEmail', op: 'eq', value: true }), true);
  assert.equal(is({ path: 'options.skipFirstEmail', op: 'eq', value: 'true' }), false, 'booleans are not strings');
  assert.equal(is({ path: 'trigger.properties.note', op: 'eq', value: null }), true);
});

test('missing paths: exists/not_exists work, comparisons are false, negations are true', () => {
  assert.equal(is({ path: 'contact.traits.missing', op: 'exists' }), false);
  assert.equal(is({ path: 'contact.traits.missing', op: 'not_exists' }), true);
  assert.equal(is({ path: 'trigger.properties.note', op: 'exists' }), false, 'null does not exist');
  assert.equal(is({ path: 'contact.traits.plan', op: 'exists' }), true);
  for (const op of ['eq', 'gt', 'gte', 'lt', 'lte', 'in', 'contains'] as const) {
    assert.equal(is({ path: 'contact.traits.missing', op, value: op === 'in' ? [1] : 1 }), false, op);
  }
  assert.equal(is({ path: 'contact.traits.missing', op: 'neq', value: 'x' }), true);
  assert.equal(is({ path: 'contact.traits.missing', op: 'nin', value: ['x'] }), true);
  assert.equal(is({ path: 'contact.traits.plan', op: 'eq', ref: 'contact.traits.missing' }), false, 'missing ref never equals');
});

test('ordering coerces numeric strings and compares ISO dates as dates', () => {
  assert.equal(is({ path: 'account.traits.usage_pct', op: 'gte', value: 90 }), true);
  assert.equal(is({ path: 'account.traits.usage_pct', op: 'gt', value: '95' }), false);
  assert.equal(is({ path: 'contact.traits.seats', op: 'gt', value: 9 }), true, '"12" > 9 numerically, not as strings');
  assert.equal(is({ path: 'contact.traits.trial_ends_at', op: 'lt', value: '2026-03-10T01:00:00+01:00' }), false, 'same instant, other offset');
  assert.equal(is({ path: 'contact.traits.trial_ends_at', op: 'lte', value: '2026-03-10T01:00:00+01:00' }), true);
  assert.equal(is({ path: 'account.traits.renews_at', op: 'gt', ref: 'contact.traits.trial_ends_at' }), true, 'date-only vs date-time');
  assert.equal(is({ path: 'contact.traits.plan', op: 'gt', value: 3 }), false, 'incomparable → false');
});

test('in, nin and contains', () => {
  assert.equal(is({ path: 'contact.traits.plan', op: 'in', value: ['pro', 'team'] }), true);
  assert.equal(is({ path: 'contact.traits.plan', op: 'nin', value: ['pro', 'team'] }), false);
  assert.equal(is({ path: 'contact.traits.tags', op: 'in', value: ['vip'] }), true, 'array overlaps');
  assert.equal(is({ path: 'contact.traits.tags', op: 'contains', value: 'beta' }), true);
  assert.equal(is({ path: 'contact.email', op: 'contains', value: '@example.com' }), true);
  assert.equal(is({ path: 'contact.email', op: 'contains', value: '@other.com' }), false);
});

test('ref compares against another path (goal matching the trigger invoice)', () => {
  assert.equal(is({ path: 'event.properties.invoiceId', op: 'eq', ref: 'trigger.properties.invoiceId' }), true);
  const other = { ...scope, event: makeEvent('invoice.paid', { invoiceId: 'in_2' }) };
  assert.equal(evaluate({ path: 'event.properties.invoiceId', op: 'eq', ref: 'trigger.properties.invoiceId' }, other).value, false);
});

test('all/any/not combine, and explain shows every value', () => {
  const condition: Condition = {
    all: [
      { path: 'account.traits.usage_pct', op: 'gte', value: 90 },
      { not: { path: 'contact.traits.plan', op: 'eq', value: 'enterprise' } },
      { any: [{ path: 'contact.traits.missing', op: 'exists' }, { path: 'contact.traits.seats', op: 'gt', value: 10 }] },
    ],
  };
  const result = evaluate(condition, scope);
  assert.equal(result.value, true);
  assert.equal(
    result.explain,
    'all(account.traits.usage_pct (95) gte 90 → true; not(contact.traits.plan ("pro") eq "enterprise" → false) → true; ' +
      'any(contact.traits.missing (undefined) exists → false; contact.traits.seats ("12") gt 10 → true) → true) → true',
  );
  assert.equal(evaluate({ any: [{ path: 'contact.traits.missing', op: 'exists' }] }, scope).value, false);
});

test('explain for a single comparison reads like a sentence', () => {
  assert.equal(
    evaluate({ path: 'account.traits.usage_pct', op: 'gte', value: 90 }, scope).explain,
    'account.traits.usage_pct (95) gte 90 → true',
  );
  assert.equal(
    evaluate({ path: 'event.properties.invoiceId', op: 'eq', ref: 'trigger.properties.invoiceId' }, scope).explain,
    'event.properties.invoiceId ("in_1") eq trigger.properties.invoiceId ("in_1") → true',
  );
});

test('segments resolve by name; unknown and self-referencing segments are false, not a crash', () => {
  const withSegments = {
    ...scope,
    segments: {
      heavy: { path: 'account.traits.usage_pct', op: 'gte', value: 90 } as Condition,
      heavy_pro: { all: [{ segment: 'heavy' }, { path: 'contact.traits.plan', op: 'eq', value: 'pro' }] } as Condition,
      loop: { segment: 'loop' } as Condition,
    },
  };
  const result = evaluate({ segment: 'heavy_pro' }, withSegments);
  assert.equal(result.value, true);
  assert.match(result.explain, /^segment heavy_pro: all\(segment heavy: account\.traits\.usage_pct \(95\) gte 90 → true/);
  assert.equal(evaluate({ segment: 'nope' }, withSegments).value, false);
  assert.equal(evaluate({ segment: 'loop' }, withSegments).value, false);
});

const paywallHits: CountCondition = { count: { event: 'Paywall Hit', within: 'P7D' }, op: 'gte', value: 3 };

test('count conditions read the count the edge provides under countKey()', () => {
  const key = countKey(paywallHits);
  assert.equal(evaluate(paywallHits, { ...scope, counts: { [key]: 3 } }).value, true);
  assert.equal(evaluate(paywallHits, { ...scope, counts: { [key]: 2 } }).value, false);
  const missing = evaluate(paywallHits, scope);
  assert.equal(missing.value, false);
  assert.equal(missing.explain, 'count(Paywall Hit within P7D) (not provided) gte 3 → false');
});

test('countKey is stable: independent of property order, op and value; scope defaults to contact', () => {
  const reordered = { op: 'lt', value: 1, count: { within: 'P7D', event: 'Paywall Hit', scope: 'contact' } } as CountCondition;
  assert.equal(countKey(reordered), countKey(paywallHits));
  assert.notEqual(countKey({ ...paywallHits, count: { ...paywallHits.count, scope: 'account' } }), countKey(paywallHits));
  assert.notEqual(countKey({ ...paywallHits, count: { ...paywallHits.count, within: 'P8D' } }), countKey(paywallHits));
});

test('collectCountConditions finds counts anywhere in a definition, once per key', () => {
  const definition = makeDefinition(
    [
      {
        id: 'check',
        type: 'branch',
        branches: [{ when: { not: paywallHits }, steps: [] }],
        otherwise: [],
      },
    ],
    {
      trigger: { type: 'event', event: 'Paywall Hit', where: { ...paywallHits, value: 5 } },
      segments: { active: { count: { event: 'Report Viewed', within: 'P30D' }, op: 'gte', value: 1 } },
    },
  );
  const found = collectCountConditions(definition).map((condition) => condition.count.event).sort();
  assert.deepEqual(found, ['Paywall Hit', 'Report Viewed']);
});

test('countMatchingEvents counts by name, window (now − within, now] and where', () => {
  const now = new Date(plus(T0, 'P7D'));
  const events = [
    makeEvent('Paywall Hit', { feature: 'export' }, T0), // exactly 7 days before now: outside
    makeEvent('Paywall Hit', { feature: 'export' }, plus(T0, 'PT1S')),
    makeEvent('Paywall Hit', { feature: 'seats' }, plus(T0, 'P3D')),
    makeEvent('Paywall Hit', { feature: 'export' }, plus(T0, 'P7D')), // at now: inside
    makeEvent('Paywall Hit', { feature: 'export' }, plus(T0, 'P8D')), // future: outside
    makeEvent('Report Viewed', {}, plus(T0, 'P1D')),
  ];
  assert.equal(countMatchingEvents(paywallHits, events, now, scope), 3);
  const exportsOnly: CountCondition = {
    ...paywallHits,
    count: { ...paywallHits.count, where: { path: 'event.properties.feature', op: 'eq', value: 'export' } },
  };
  assert.equal(countMatchingEvents(exportsOnly, events, now, scope), 2);
});
