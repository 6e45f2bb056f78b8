// The Stripe inbox's ordering key (customer_id) and partition (lane) are written by the INSERT
// since migration 0016; until then PostgreSQL generated them from the stored payload. A
// customer's events must stay in one lane across that change (rows stored before it keep their
// values), so the INSERT must compute exactly what the generated columns did: checked here
// against the old expressions, evaluated by PostgreSQL over the stored payloads.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { storeStripeEvent, type StripeEnvelope } from '../src/stripe/event-inbox.ts';
import { build } from './helpers/build.ts';
import { envelope, invoice, subscription } from './helpers/stripe.ts';

// Migration 0005's generated expressions, verbatim.
const OLD_CUSTOMER = `CASE WHEN payload->'data'->'object'->>'object' = 'customer' THEN payload->'data'->'object'->>'id'
  WHEN jsonb_typeof(payload->'data'->'object'->'customer') = 'string' THEN payload->'data'->'object'->>'customer'
  WHEN jsonb_typeof(payload->'data'->'object'->'customer') = 'object' THEN payload->'data'->'object'->'customer'->>'id' END`;

test('customer_id and lane written by the INSERT equal what the generated columns computed, for every object shape', async (t) => {
  const svc = await build(t);
  const events: StripeEnvelope[] = [
    envelope('customer.updated', { id: 'cus_plain', object: 'customer', email: 'a@example.test' }),
    envelope('invoice.payment_failed', invoice({ id: 'in_1', customer: 'cus_string' })),
    envelope('customer.subscription.deleted', subscription({ id: 'sub_1', customer: 'cus_sub' })),
    // An expanded customer object on a charge.
    envelope('charge.failed', { id: 'ch_1', object: 'charge', customer: { id: 'cus_expanded', object: 'customer' } }),
    // No customer at all: the lane follows the object id.
    envelope('product.updated', { id: 'prod_1', object: 'product', name: 'Pro' }),
    // No customer and no object id: the lane follows the event id.
    envelope('balance.available', { object: 'balance', available: [] }),
    // A customer object without an id: no customer, as the CASE gave (its first branch matched).
    envelope('customer.updated', { object: 'customer', email: 'b@example.test' }),
    // A null customer on an invoice.
    envelope('invoice.created', { ...invoice({ id: 'in_2' }), customer: null }),
  ] as StripeEnvelope[];
  for (const event of events) assert.equal(await storeStripeEvent(svc.sql, event, JSON.stringify(event), new Date()), true);

  const rows = await svc.sql.unsafe<{ id: string; customer_id: string | null; lane: number; old_customer: string | null; old_lane: number }[]>(`
    select id, customer_id, lane, ${OLD_CUSTOMER} as old_customer,
           hashtext(coalesce(${OLD_CUSTOMER}, object_id, id)) & 31 as old_lane
    from stripe_events order by id`);
  assert.equal(rows.length, events.length);
  for (const row of rows) {
    assert.equal(row.customer_id, row.old_customer, `${row.id}: customer_id`);
    assert.equal(row.lane, row.old_lane, `${row.id}: lane`);
  }
  const byId = new Map(rows.map((r) => [r.id, r]));
  assert.deepEqual(events.map((e) => byId.get(e.id)!.customer_id), ['cus_plain', 'cus_string', 'cus_sub', 'cus_expanded', null, null, null, null]);
  // A redelivery is acknowledged, not stored again, and keeps its lane.
  assert.equal(await storeStripeEvent(svc.sql, events[1]!, JSON.stringify(events[1]), new Date()), false);
});
