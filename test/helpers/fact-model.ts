// The timeline facts a Stripe timeline should produce: one per transition that happened, however
// often its event is delivered (redeliveries carry the same event id) and in whatever order.
// `subscription.mrr_changed` is left out: whether a seat change is an MRR change depends on the
// snapshot held before it, which the order-independence property compares instead.
import type { Timeline } from './timeline-generator.ts';

type Obj = Record<string, unknown>;

const NAMES: Record<string, string> = {
  'invoice.payment_failed': 'invoice.payment_failed',
  'invoice.paid': 'invoice.paid',
  'invoice.voided': 'invoice.voided',
  'invoice.marked_uncollectible': 'invoice.marked_uncollectible',
  'customer.subscription.created': 'subscription.created',
  'customer.subscription.deleted': 'subscription.canceled',
  'customer.subscription.paused': 'subscription.paused',
  'customer.subscription.resumed': 'subscription.resumed',
};

/** "name subject" for every fact the timeline's Stripe events should record. */
export function expectedStripeFacts(timeline: Timeline): string[] {
  const out: string[] = [];
  for (const step of timeline.steps) {
    if (step.kind !== 'stripe') continue;
    const object = step.object(0);
    const name = NAMES[step.type];
    if (name) out.push(`${name} ${String(object.id)}`);
    else if (step.type === 'customer.subscription.updated' && typeof step.previous?.status === 'string') out.push(`subscription.status_changed ${String(object.id)}`);
    else if (step.type === 'customer.updated') out.push(`payment_method.updated ${String((object.invoice_settings as Obj).default_payment_method)}`);
    else if (step.type === 'payment_method.attached') out.push(`payment_method.updated ${String(object.id)}`);
  }
  return out;
}

/** The fact names the model speaks for. */
expectedStripeFacts.names = new Set([...Object.values(NAMES), 'subscription.status_changed', 'payment_method.updated']);
