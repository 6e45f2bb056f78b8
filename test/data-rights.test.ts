// Data rights (GDPR): GET /v1/contacts/:id/export holds everything about the person;
// DELETE /v1/contacts/:id leaves no personal data in the database rows about them nor in the
// outbox folder, keeps the recovery report's money figures identical, and suppresses the address
// by hash so it is never mailed again even when the person comes back with the same address.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { erasedAddressKey, scrubJson } from '../src/contacts/data-rights.ts';
import { ADMIN_TOKEN, build, type Built } from './helpers/build.ts';
import { deliver, envelope, invoice } from './helpers/stripe.ts';

const T0 = 1_760_000_000;
const EMAIL = 'Grace.Hopper@navy.test';
const NAME = 'Grace Hopper';
const auth = { authorization: `Bearer ${ADMIN_TOKEN}` };

async function ok(svc: Built, event: object) {
  const res = await deliver(svc.app, event);
  assert.equal(res.statusCode, 200, res.body);
}

async function outboxText(svc: Built): Promise<string> {
  const dir = svc.config.outboxDir;
  const names = await readdir(dir).catch(() => [] as string[]);
  return (await Promise.all(names.map((n) => readFile(path.join(dir, n), 'utf8')))).join('\n');
}

/** Every row of every table, as text: what a `pg_dump --data-only` would show. */
async function databaseDump(svc: Built): Promise<string> {
  const tables = await svc.sql<{ table_name: string }[]>`
    select table_name from information_schema.tables where table_schema = 'public' and table_type = 'BASE TABLE'`;
  const parts: string[] = [];
  for (const { table_name } of tables) {
    const rows = await svc.sql`select * from ${svc.sql(table_name)}`;
    parts.push(`${table_name}: ${JSON.stringify(rows)}`);
  }
  return parts.join('\n');
}

async function report(svc: Built) {
  const res = await svc.app.inject({ method: 'GET', url: '/v1/reports/recovery?from=2025-01-01&to=2027-01-01', headers: auth });
  assert.equal(res.statusCode, 200, res.body);
  return res.json() as { currencies: unknown };
}

async function scenario(svc: Built) {
  await svc.app.inject({
    method: 'POST',
    url: '/v1/identify',
    headers: { authorization: `Bearer ${svc.config.writeKey}` },
    payload: { messageId: 'id-1', userId: 'user_grace', traits: { email: EMAIL, name: NAME, plan: 'pro' }, context: { ip: '203.0.113.9' } },
  });
  await ok(svc, envelope('customer.created', { id: 'cus_grace', object: 'customer', email: EMAIL, name: NAME, metadata: { userId: 'user_grace' }, created: T0 - 1000 }, { created: T0 - 1000 }));
  await ok(svc, envelope('invoice.payment_failed', { ...invoice({ id: 'in_grace', customer: 'cus_grace', next_payment_attempt: T0 + 3 * 86_400 }), customer_email: EMAIL, customer_name: NAME }, { created: T0 }));
  await svc.inbox.drain();
  await svc.drain();
}

test('export holds the contact, traits, Stripe customer, timeline, runs with traces and messages', async (t) => {
  const svc = await build(t, { env: { QUIET_HOURS: 'off' } });
  await scenario(svc);
  const res = await svc.app.inject({ method: 'GET', url: `/v1/contacts/${encodeURIComponent(EMAIL)}/export`, headers: auth });
  assert.equal(res.statusCode, 200, res.body);
  assert.match(String(res.headers['content-disposition']), /attachment; filename="contact-\d+\.json"/);
  const data = res.json();
  assert.equal(data.contact.email.toLowerCase(), EMAIL.toLowerCase());
  assert.equal(data.stripe.customers[0].id, 'cus_grace');
  assert.equal(data.stripe.customers[0].name, NAME);
  assert.ok(data.stripe.invoices.some((i: { id: string }) => i.id === 'in_grace'));
  assert.ok(data.stripe.webhookEvents.length >= 2, 'the stored Stripe events about the customer');
  assert.ok(data.timelineEvents.some((e: { name: string }) => /payment/.test(e.name)), JSON.stringify(data.timelineEvents.map((e: { name: string }) => e.name)));
  assert.ok(data.workflowRuns.length >= 1 && data.workflowRuns[0].trace.length >= 1, 'a run with its trace');
  assert.ok(data.messages.length >= 1, 'the dunning email');
  assert.ok(data.messages[0].subject && data.messages[0].status && data.messages[0].created_at);
  assert.ok(data.messages[0].events.length >= 1, 'message status timeline');

  const none = await svc.app.inject({ method: 'GET', url: '/v1/contacts/nobody@nowhere.test/export', headers: auth });
  assert.equal(none.statusCode, 404);
  assert.equal(none.json().error, 'contact_not_found');
  const anon = await svc.app.inject({ method: 'GET', url: `/v1/contacts/${encodeURIComponent(EMAIL)}/export` });
  assert.equal(anon.statusCode, 401);
  const anonDelete = await svc.app.inject({ method: 'DELETE', url: `/v1/contacts/${encodeURIComponent(EMAIL)}` });
  assert.equal(anonDelete.statusCode, 401);
});

test('erase: no personal data left in the database or the outbox, report unchanged, address suppressed by hash', async (t) => {
  const svc = await build(t, { env: { QUIET_HOURS: 'off' } });
  await scenario(svc);
  const lower = EMAIL.toLowerCase();
  // The scenario did put the person everywhere we look afterwards (else the test proves nothing).
  assert.ok((await databaseDump(svc)).toLowerCase().includes(lower));
  assert.ok((await databaseDump(svc)).includes(NAME));
  assert.ok((await outboxText(svc)).toLowerCase().includes(lower), 'the log transport wrote the email');
  const before = await report(svc);
  assert.ok((before.currencies as { currency: string }[]).length >= 1, `the failure is in the report: ${JSON.stringify(before)}`);

  const res = await svc.app.inject({ method: 'DELETE', url: `/v1/contacts/${encodeURIComponent(EMAIL)}`, headers: auth });
  assert.equal(res.statusCode, 200, res.body);
  const result = res.json();
  assert.equal(result.erased, true);
  assert.ok(result.outboxFilesDeleted >= 1);

  const dump = (await databaseDump(svc)).toLowerCase();
  assert.ok(!dump.includes(lower), `address left at: ${dump.slice(Math.max(0, dump.indexOf(lower) - 300), dump.indexOf(lower) + 50)}`);
  assert.ok(!dump.includes(NAME.toLowerCase()), `name left at: ${dump.slice(Math.max(0, dump.indexOf(NAME.toLowerCase()) - 300), dump.indexOf(NAME.toLowerCase()) + 50)}`);
  assert.ok(!dump.includes('203.0.113.9'), 'the IP from the Segment context');
  assert.ok(!(await outboxText(svc)).toLowerCase().includes(lower), 'no outbox file names the address');
  assert.deepEqual(await report(svc), before, 'recovery report totals unchanged');
  const [suppressed] = await svc.sql`select scope, reason from suppressions where email = ${erasedAddressKey(EMAIL)}`;
  assert.deepEqual({ ...suppressed }, { scope: 'all', reason: 'erased' });
  assert.equal((await svc.app.inject({ method: 'GET', url: `/v1/contacts/${encodeURIComponent(EMAIL)}`, headers: auth })).statusCode, 404);

  // The person comes back (re-identified with the same address, a new failure): never mailed.
  const sentBefore = (await svc.sql`select count(*)::int as n from messages where status in ('sent','delivered')`)[0]!.n as number;
  await ok(svc, envelope('customer.created', { id: 'cus_grace_2', object: 'customer', email: EMAIL.toUpperCase(), name: NAME, metadata: {}, created: T0 + 5000 }, { created: T0 + 5000 }));
  await ok(svc, envelope('invoice.payment_failed', invoice({ id: 'in_grace_2', customer: 'cus_grace_2', next_payment_attempt: T0 + 9 * 86_400 }), { created: T0 + 6000 }));
  await svc.inbox.drain();
  await svc.drain();
  const after = await svc.sql`select status, status_reason from messages where to_email is not null and lower(to_email) = ${lower}`;
  assert.ok(after.length >= 1, 'the engine did decide to email the new customer');
  for (const m of after) assert.equal(m.status, 'skipped', `message ${m.status}: ${m.status_reason}`);
  const sentAfter = (await svc.sql`select count(*)::int as n from messages where status in ('sent','delivered')`)[0]!.n as number;
  assert.equal(sentAfter, sentBefore, 'nothing sent to the erased address');
});

test('scrubJson keeps amounts, currencies and ids; nulls personal keys; erases strings naming the person', () => {
  const out = scrubJson(
    { amount_due: 4900, currency: 'usd', id: 'in_1', customer_email: 'a@b.test', billing_details: { name: 'X' }, note: 'call A@B.test', lines: [{ amount: 1 }] },
    ['a@b.test'],
  );
  assert.deepEqual(out, { amount_due: 4900, currency: 'usd', id: 'in_1', customer_email: null, billing_details: null, note: 'call [erased]', lines: [{ amount: 1 }] });
});
