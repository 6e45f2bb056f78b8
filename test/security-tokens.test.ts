// Opaque link tokens (issue 11): the tokens in emails carry nothing readable (decoded, they hold
// neither the address nor the ids), a changed byte or another kind is refused, links already sent
// in the old signed-but-readable format still unsubscribe and redirect, and a scenario's logs at
// trace level hold neither the address nor a token.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { Writable } from 'node:stream';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ManualClock } from '../src/clock.ts';
import { loadConfig } from '../src/config.ts';
import { createLogger } from '../src/logger.ts';
import { startService } from '../src/service.ts';
import { signToken, verifyToken } from '../src/email/tokens.ts';
import { createTestDatabase } from './helpers/database.ts';
import { ADMIN_TOKEN, WEBHOOK_SECRET, WRITE_KEY } from './helpers/build.ts';
import { startFakeResend } from './helpers/fake-resend.ts';
import { deliver, envelope, invoice, subscription } from './helpers/stripe.ts';

const SECRET = 'token-test-secret-0123456789';
const T = new Date('2026-03-02T10:00:00Z');

/** The pre-2026-11 format, built by hand: src/ no longer has a way to issue it. */
function legacyToken(secret: string, kind: string, payload: Record<string, unknown>): string {
  const body = Buffer.from(JSON.stringify(payload)).toString('base64url');
  return `${body}.${createHmac('sha256', secret).update(`${kind}.${body}`).digest('base64url')}`;
}

/** Every way a reader might decode a token: base64url bytes as UTF-8 and Latin-1, and the raw text. */
function readable(token: string): string {
  const bytes = Buffer.from(token, 'base64url');
  return [token, bytes.toString('utf8'), bytes.toString('latin1'), Buffer.from(token, 'base64').toString('latin1')].join('\n').toLowerCase();
}

test('a token reveals none of its payload; same payload, same token; no dot (not the legacy shape)', () => {
  const payload = { m: 'msg_0f3a9c2e-1111-4a4a-9c9c-abcdefabcdef', e: 'jane.doe@example.org', u: 'https://invoice.stripe.com/i/in_123secret' };
  const token = signToken(SECRET, 'click', payload);
  assert.match(token, /^[A-Za-z0-9_-]+$/);
  const text = readable(token);
  for (const needle of ['jane', 'example.org', 'msg_0f3a9c2e', 'abcdefabcdef', 'invoice.stripe', 'in_123secret', '"m"', '{"']) {
    assert.ok(!text.includes(needle), `token reveals ${needle}`);
  }
  assert.equal(signToken(SECRET, 'click', payload), token, 'deterministic: a re-sent batch renders the same bytes');
  assert.notEqual(signToken(SECRET, 'click', { ...payload, m: 'msg_other' }), token);
  assert.deepEqual(verifyToken(SECRET, 'click', token), payload);
});

test('tampered, truncated, re-kinded, foreign-key tokens are refused; legacy only where asked for', () => {
  const token = signToken(SECRET, 'unsubscribe', { m: 'msg_1' });
  const raw = Buffer.from(token, 'base64url');
  for (let i = 0; i < raw.length; i++) {
    const changed = Buffer.from(raw);
    changed[i]! ^= 0x01;
    assert.equal(verifyToken(SECRET, 'unsubscribe', changed.toString('base64url')), null, `byte ${i} flipped`);
  }
  // the last character's spare bits: a different spelling of the same bytes is not the token
  const last = token.at(-1)!;
  const alternatives = 'AQgwBRhxCSiyDTjz'.split('').filter((c) => c !== last && Buffer.from(token.slice(0, -1) + c, 'base64url').equals(raw));
  for (const c of alternatives) assert.equal(verifyToken(SECRET, 'unsubscribe', token.slice(0, -1) + c), null);
  assert.equal(verifyToken(SECRET, 'unsubscribe', token.slice(0, -4)), null, 'truncated');
  assert.equal(verifyToken(SECRET, 'unsubscribe', `${token}AAAA`), null, 'extended');
  assert.equal(verifyToken(SECRET, 'click', token), null, 'an unsubscribe token is not a click token');
  assert.equal(verifyToken(SECRET, 'card-update', token), null);
  assert.equal(verifyToken(`${SECRET}x`, 'unsubscribe', token), null, 'another secret');
  assert.equal(verifyToken(SECRET, 'unsubscribe', ''), null);
  assert.equal(verifyToken(SECRET, 'unsubscribe', 'x'.repeat(5000)), null);
  assert.deepEqual(verifyToken(SECRET, 'unsubscribe', token), { m: 'msg_1' });

  const legacy = legacyToken(SECRET, 'unsubscribe', { e: 'old@example.org', c: 1, m: 'msg_1' });
  assert.equal(verifyToken(SECRET, 'unsubscribe', legacy), null, 'legacy refused unless the caller accepts it');
  assert.deepEqual(verifyToken(SECRET, 'unsubscribe', legacy, { acceptLegacy: true }), { e: 'old@example.org', c: 1, m: 'msg_1' });
  assert.equal(verifyToken(SECRET, 'click', legacy, { acceptLegacy: true }), null, 'legacy kinds still bound');
  assert.equal(verifyToken(`${SECRET}x`, 'unsubscribe', legacy, { acceptLegacy: true }), null);
  const [body, mac] = legacy.split('.') as [string, string];
  const otherBody = Buffer.from(JSON.stringify({ e: 'victim@example.org', c: 1, m: 'msg_1' })).toString('base64url');
  assert.equal(verifyToken(SECRET, 'unsubscribe', `${otherBody}.${mac}`, { acceptLegacy: true }), null, 'legacy body changed');
  assert.equal(verifyToken(SECRET, 'unsubscribe', `${body}.${mac}.x`, { acceptLegacy: true }), null);
});

test('emails carry opaque links; the new and the legacy unsubscribe link work; logs hold no address or token', async (t) => {
  const db = await createTestDatabase();
  const fake = await startFakeResend();
  const lines: string[] = [];
  const sink = new Writable({ write(chunk, _enc, done) { lines.push(String(chunk)); done(); } });
  const config = loadConfig({
    DATABASE_URL: db.url, STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET, LIFELINE_WRITE_KEY: WRITE_KEY, LIFELINE_ADMIN_TOKEN: ADMIN_TOKEN,
    LIFELINE_SECRET: SECRET, LOG_LEVEL: 'trace', DB_POOL_MAX: '5', LIFELINE_OUTBOX_DIR: path.join(tmpdir(), 'lifeline-test-outbox', db.name),
    RESEND_RATE_LIMIT: '1000', RESEND_API_KEY: 're_test_key', RESEND_BASE_URL: fake.url, QUIET_HOURS: 'off', PUBLIC_URL: 'https://lifeline.example.com',
  });
  const clock = new ManualClock();
  clock.set(T);
  const svc = await startService({ config, logger: createLogger('trace', sink), clock, manualWorkers: true });
  t.after(async () => { await svc.stop(); await fake.close(); await db.drop(); });
  const app = svc.app!;

  // A dunning email (update-card + tracked links) and a win-back email (unsubscribe link).
  const PAYER = 'Payer.Person@acme.test';
  const LEAVER = 'Leaver.Person@acme.test';
  await deliver(app, envelope('invoice.payment_failed', invoice({ id: 'in_tok_1', customer: 'cus_tok_1', customer_email: PAYER }), { created: T }));
  await deliver(app, envelope('customer.created', { id: 'cus_tok_2', object: 'customer', email: LEAVER, name: 'Lee Leaver' }, { created: new Date(T.getTime() - 60_000) }));
  await deliver(app, envelope('customer.subscription.deleted', subscription({ id: 'sub_tok_2', customer: 'cus_tok_2', status: 'canceled', cancellation_reason: 'payment_failed' }), { created: T }));
  await svc.drain();
  const messages = await svc.sql<{ id: string; to_email: string; contact_id: number }[]>`select id, to_email, contact_id from messages order by to_email`;
  assert.equal(messages.length, 2, JSON.stringify(messages));

  const links: string[] = [];
  for (const email of fake.accepted) {
    for (const m of `${email.html}\n${email.text}\n${email.headers['List-Unsubscribe'] ?? ''}`.matchAll(/https:\/\/lifeline\.example\.com\/(?:r|unsubscribe|billing\/update)\/([A-Za-z0-9_.-]+)/g)) links.push(m[1]!);
  }
  assert.ok(links.length >= 4, `links found: ${links.length}`);
  const needles = [PAYER, LEAVER, 'acme.test', 'in_tok_1', 'cus_tok', 'invoice.stripe.com', ...messages.map((m) => m.id)].map((s) => s.toLowerCase());
  for (const token of new Set(links)) {
    assert.ok(!token.includes('.'), `opaque, not legacy: ${token}`);
    const text = readable(token);
    for (const needle of needles) assert.ok(!text.includes(needle), `a link token reveals ${needle}`);
  }

  // The new unsubscribe link: the page shows the address masked, the POST suppresses it.
  const leaver = messages.find((m) => m.to_email === LEAVER)!;
  const unsubscribeHeader = fake.accepted.find((e) => e.to === LEAVER)!.headers['List-Unsubscribe']!;
  const unsubscribePath = new URL(unsubscribeHeader.slice(1, -1)).pathname;
  const page = await app.inject({ method: 'GET', url: unsubscribePath });
  assert.equal(page.statusCode, 200);
  assert.match(page.body, /L•••@acme\.test will stop receiving/);
  assert.ok(!page.body.includes(LEAVER));
  const oneClick = { 'content-type': 'application/x-www-form-urlencoded' };
  // RFC 8058: the mail provider POSTs with no Origin; a webmail page may POST cross-site: both work.
  assert.equal((await app.inject({ method: 'POST', url: unsubscribePath, headers: oneClick, payload: 'List-Unsubscribe=One-Click' })).statusCode, 200);
  const crossSite = await app.inject({ method: 'POST', url: unsubscribePath, headers: { ...oneClick, origin: 'https://mail.example.net', 'sec-fetch-site': 'cross-site' }, payload: 'List-Unsubscribe=One-Click' });
  assert.equal(crossSite.statusCode, 200);
  assert.deepEqual((await svc.sql`select email, scope from suppressions`).map((r) => [r.email, r.scope]), [[LEAVER.toLowerCase(), 'non_transactional']]);

  // A legacy link already in someone's inbox (address in the token) still unsubscribes...
  const payer = messages.find((m) => m.to_email === PAYER)!;
  const legacy = legacyToken(SECRET, 'unsubscribe', { e: PAYER, c: payer.contact_id, m: payer.id });
  assert.equal((await app.inject({ method: 'GET', url: `/unsubscribe/${legacy}` })).statusCode, 200);
  assert.equal((await app.inject({ method: 'POST', url: `/unsubscribe/${legacy}`, headers: oneClick, payload: 'List-Unsubscribe=One-Click' })).statusCode, 200);
  assert.equal((await svc.sql`select 1 from suppressions where email = ${PAYER.toLowerCase()}`).length, 1, 'legacy link unsubscribed');
  // ... even when its message row is gone (the address comes from the token then)
  const orphan = legacyToken(SECRET, 'unsubscribe', { e: 'Orphan@acme.test', c: null, m: 'msg_not_stored' });
  assert.equal((await app.inject({ method: 'POST', url: `/unsubscribe/${orphan}`, headers: oneClick, payload: 'List-Unsubscribe=One-Click' })).statusCode, 200);
  assert.equal((await svc.sql`select 1 from suppressions where email = 'orphan@acme.test'`).length, 1);
  // a forged legacy link (another address under an old signature) is refused
  const forged = `${Buffer.from(JSON.stringify({ e: 'victim@acme.test', c: null, m: payer.id })).toString('base64url')}.${legacy.split('.')[1]}`;
  assert.equal((await app.inject({ method: 'POST', url: `/unsubscribe/${forged}`, headers: oneClick, payload: 'List-Unsubscribe=One-Click' })).statusCode, 400);
  // a click token is not an unsubscribe token, even though both are ours
  const clickToken = signToken(SECRET, 'click', { m: leaver.id, u: 'https://app.example.test/' });
  assert.equal((await app.inject({ method: 'POST', url: `/unsubscribe/${clickToken}`, headers: oneClick, payload: 'List-Unsubscribe=One-Click' })).statusCode, 400);
  assert.equal((await app.inject({ method: 'GET', url: `/r/${signToken(SECRET, 'unsubscribe', { m: leaver.id })}` })).statusCode, 400);

  // After erasure a legacy link (which still carries the address) must not store it again: the
  // message row is blanked and the address is suppressed by hash only.
  assert.equal((await app.inject({ method: 'DELETE', url: `/v1/contacts/${leaver.contact_id}`, headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).statusCode, 200);
  const erasedLegacy = legacyToken(SECRET, 'unsubscribe', { e: LEAVER, c: leaver.contact_id, m: leaver.id });
  assert.equal((await app.inject({ method: 'POST', url: `/unsubscribe/${erasedLegacy}`, headers: oneClick, payload: 'List-Unsubscribe=One-Click' })).statusCode, 200);
  assert.equal((await svc.sql`select 1 from suppressions where email = ${LEAVER.toLowerCase()}`).length, 0, 'the erased address is not stored again');
  const erasedPage = await app.inject({ method: 'GET', url: `/unsubscribe/${erasedLegacy}` });
  assert.ok(!erasedPage.body.toLowerCase().includes('leaver'), 'nor shown');

  // A legacy click link still records and redirects.
  const legacyClick = await app.inject({ method: 'GET', url: `/r/${legacyToken(SECRET, 'click', { m: payer.id, u: 'https://app.example.test/old' })}` });
  assert.equal(legacyClick.statusCode, 302);
  assert.equal(legacyClick.headers.location, 'https://app.example.test/old');
  // And a new click link from the email.
  const payerClick = /https:\/\/lifeline\.example\.com(\/r\/[A-Za-z0-9_-]+)/.exec(fake.accepted.find((e) => e.to === PAYER)!.html)![1]!;
  assert.equal((await app.inject({ method: 'GET', url: payerClick })).statusCode, 302);
  assert.equal((await svc.sql`select clicked_at from messages where id = ${payer.id}`)[0]!.clicked_at !== null, true);

  const log = lines.join('');
  assert.ok(lines.length > 10);
  const forbidden = [PAYER, LEAVER, 'Orphan@acme.test', 'victim@acme.test', legacy, unsubscribePath.split('/').pop()!, ...links.map((l) => l.slice(0, 24))];
  for (const needle of forbidden) {
    for (const form of new Set([needle, needle.toLowerCase(), encodeURIComponent(needle), encodeURIComponent(needle.toLowerCase())])) {
      const at = log.indexOf(form);
      assert.equal(at, -1, `found ${JSON.stringify(form)} in: ${log.slice(Math.max(0, at - 200), at + 100)}`);
    }
  }
});
