// A message carries its render input (issue 10): when the engine queues an email it writes the
// trigger's properties and the definition's options into messages.data, and the sender renders
// from that alone — not from workflow JSON or the run's state, which it no longer reads.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { EmailTransport, OutgoingEmail } from '../src/email/transport.ts';
import { build } from './helpers/build.ts';
import { post, publish, T } from './helpers/engine-scenario.ts';
import type { ManualClock } from '../src/clock.ts';

test('the sender renders a message from the input stored with it, whatever the workflow JSON says by then', async (t) => {
  const sent: OutgoingEmail[] = [];
  const transport: EmailTransport = {
    name: 'resend',
    async send(emails) {
      sent.push(...emails);
      return { ok: true, results: emails.map((e) => ({ providerId: `p-${e.id}` })) };
    },
  };
  const svc = await build(t, { clock: 'manual', env: { QUIET_HOURS: 'off', FREQUENCY_CAP: 'off' }, transport });
  (svc.clock as ManualClock).set(T);
  await publish(svc, {
    key: 'coupon-offer',
    name: 'Coupon offer',
    category: 'marketing',
    trigger: { type: 'event', event: 'Trial Ended' },
    entry: { mode: 'once' },
    options: { couponCode: 'FIRST10' },
    steps: [{ id: 'offer', type: 'send_email', template: 'winback-offer', subject: 'Come back' }],
  }, T);
  await post(svc, '/v1/identify', { userId: 'u1', traits: { email: 'u1@example.test' } });
  await post(svc, '/v1/track', { userId: 'u1', event: 'Trial Ended', properties: { plan: 'team' } });
  await svc.inbox.drain();
  await svc.engine.drain();

  const [queued] = await svc.sql<{ status: string; data: { options?: Record<string, unknown>; trigger?: Record<string, unknown> } }[]>`
    select status, data from messages where workflow_key = 'coupon-offer'`;
  assert.equal(queued?.status, 'queued');
  assert.deepEqual(queued!.data.options, { couponCode: 'FIRST10' }, 'the definition options are stored with the message');
  assert.equal(queued!.data.trigger?.plan, 'team', 'and the trigger properties');

  // The stored definition and the run's state change after queueing (standing for anything the
  // sender must not depend on): the email still says what was decided when it was queued.
  await svc.sql`update workflow_versions set definition = jsonb_set(definition, '{options,couponCode}', '"CHANGED99"') where key = 'coupon-offer'`;
  await svc.sql`update workflow_runs set state = jsonb_set(state, '{vars,trigger,properties}', '{}') where workflow_key = 'coupon-offer'`;
  const result = await svc.email.sendPending();
  assert.equal(result.sent, 1);
  assert.equal(sent.length, 1);
  assert.match(sent[0]!.html, /FIRST10/);
  assert.doesNotMatch(sent[0]!.html, /CHANGED99/);
  assert.match(sent[0]!.text, /FIRST10/);
});
