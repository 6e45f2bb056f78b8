// Emails say the truth about retries (issue 13): the dunning copy promises another automatic
// attempt only when Stripe has one scheduled (next_payment_attempt) and the invoice's latest
// decline did not advise against retrying.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { EmailTransport, OutgoingEmail } from '../src/email/transport.ts';
import { build, type Built } from './helpers/build.ts';
import { deliver, envelope, invoice } from './helpers/stripe.ts';

function recordingTransport(): EmailTransport & { sent: OutgoingEmail[] } {
  const sent: OutgoingEmail[] = [];
  return { name: 'log', sent, send: async (emails) => (sent.push(...emails), { ok: true, results: emails.map((e) => ({ providerId: `re_${e.id}` })) }) };
}

const T0 = 1_760_000_000;

async function ok(svc: Built, event: object) {
  assert.equal((await deliver(svc.app, event)).statusCode, 200);
}


test('a scheduled retry is promised; the final attempt (next_payment_attempt null) and a do_not_try_again decline are not', async (t) => {
  const cases: { name: string; next: number | null; advice: string | null; promise: boolean }[] = [
    { name: 'retry scheduled', next: T0 + 3 * 86_400, advice: null, promise: true },
    { name: 'final attempt', next: null, advice: null, promise: false },
    { name: 'issuer advises against retrying', next: T0 + 3 * 86_400, advice: 'do_not_try_again', promise: false },
  ];
  for (const c of cases) {
    const transport = recordingTransport();
    const svc = await build(t, { transport, env: { QUIET_HOURS: 'off' } });
    await ok(svc, envelope('customer.created', { id: 'cus_copy', object: 'customer', email: 'ada@acme.test', name: 'Ada', metadata: {}, created: T0 - 1000 }, { created: T0 - 1000 }));
    await ok(svc, envelope('invoice.payment_failed', invoice({ id: 'in_copy', customer: 'cus_copy', next_payment_attempt: c.next }), { created: T0 }));
    await svc.inbox.drain();
    if (c.advice) {
      // The charge's decline detail arrives after the invoice's failure was projected (the run
      // was triggered as an unexplained, soft-looking failure): the copy must still be truthful.
      await ok(svc, envelope('charge.failed', { id: 'ch_copy', object: 'charge', customer: 'cus_copy', invoice: 'in_copy', amount: 4900, currency: 'usd', failure_code: 'card_declined', failure_message: 'declined', outcome: { reason: 'generic_decline', advice_code: c.advice } }, { created: T0 + 1 }));
      await svc.inbox.drain();
    }
    await svc.drain();
    const email = transport.sent.find((e) => e.template === 'dunning-soft-1');
    assert.ok(email, `${c.name}: the first dunning email was sent (${transport.sent.map((e) => e.template).join(',')})`);
    if (c.promise) {
      assert.match(email.text, /We'll retry automatically on/, c.name);
      assert.doesNotMatch(email.text, /won't retry/, c.name);
    } else {
      assert.doesNotMatch(email.text, /retry automatically on|try your card again/i, c.name);
      assert.match(email.text, /We won't retry this card automatically/, c.name);
    }
  }
});
