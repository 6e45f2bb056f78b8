// A late entry withdraws the runs its cooldown covers, also for workflows about an account
// (audience account_admins), whose entry rules count the account's runs whichever member
// triggered them: the engine's withdrawal is scoped by account there, by contact otherwise.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setup, post, publish, T, DAY, at } from './helpers/engine-scenario.ts';

test('account-level workflow: an earlier member\'s trigger delivered late withdraws the later run of the account', async (t) => {
  const { svc, clock } = await setup(t, { FREQUENCY_CAP: 'off' });
  await publish(svc, {
    key: 'seat-limit',
    name: 'Seat limit',
    category: 'marketing',
    trigger: { type: 'event', event: 'Seat Limit Hit' },
    entry: { mode: 'every_time', cooldown: 'P30D' },
    audience: 'account_admins',
    steps: [
      { id: 'pause', type: 'wait', duration: 'P1D' },
      { id: 'mail', type: 'send_email', template: 'expansion-usage-limit', subject: 'More seats?' },
    ],
  }, T);
  for (const userId of ['admin', 'member']) {
    await post(svc, '/v1/identify', { userId, traits: { email: `${userId}@example.test`, role: userId === 'admin' ? 'admin' : 'member' } });
    await post(svc, '/v1/group', { userId, groupId: 'acct_1', traits: { name: 'Acme' } });
  }
  await svc.drain();

  clock.set(at(12 * DAY));
  // The member's hit on day 10 arrives first and starts the account's run …
  await post(svc, '/v1/track', { userId: 'member', event: 'Seat Limit Hit', messageId: 'm-10', timestamp: at(10 * DAY).toISOString() });
  await svc.drain();
  const first = await svc.sql<{ status: string }[]>`select status from workflow_runs where workflow_key = 'seat-limit'`;
  assert.deepEqual(first.map((r) => r.status), ['active']);
  // … then the admin's hit of day 1, delivered late: in event order it came first and its
  // 30-day cooldown refuses day 10's.
  await post(svc, '/v1/track', { userId: 'admin', event: 'Seat Limit Hit', messageId: 'm-1', timestamp: at(1 * DAY).toISOString() });
  await svc.drain();

  const runs = await svc.sql<{ run_key: string; status: string; withdrawn: boolean; trigger_at: string }[]>`
    select run_key, status, state ? 'withdrawnBy' as withdrawn, state->'vars'->'trigger'->>'occurredAt' as trigger_at
    from workflow_runs where workflow_key = 'seat-limit' order by trigger_at`;
  assert.deepEqual(runs.map((r) => [r.trigger_at, r.status, r.withdrawn]), [
    [at(1 * DAY).toISOString(), 'active', false],
    [at(10 * DAY).toISOString(), 'superseded', true],
  ]);
  // The account's one run sends; the withdrawn one never does, at any time.
  clock.set(at(40 * DAY));
  await svc.drain();
  const mail = await svc.sql<{ to_email: string; status: string; run_status: string }[]>`
    select m.to_email, m.status, r.status as run_status from messages m join workflow_runs r on r.id = m.run_id
    where m.workflow_key = 'seat-limit' order by m.to_email`;
  assert.ok(mail.length > 0, 'the earlier entry sends');
  assert.ok(mail.every((m) => m.run_status !== 'superseded'), `no email from the withdrawn run: ${JSON.stringify(mail)}`);
});
