// Shrunk counter-examples of the order-independence property (test/pipeline-order.property.test.ts),
// kept as plain regression tests: each is a timeline in true order and one arrival order
// (`arrivals` syntax: step indexes in arrival order, a repeat is a redelivery, `|` = the service
// processes everything received so far). The in-order delivery of the same timeline, to a fresh
// service, is the reference. A test marked todo fails today; its fix has not landed yet.
import assert from 'node:assert/strict';
import { after, before, test, type TestContext } from 'node:test';
import { ADMIN_TOKEN } from '../helpers/build.ts';
import { arrivals, buildTimeline, type Intent, type Op } from '../helpers/timeline-generator.ts';
import { assertOneFactPerTransition, assertSameOutcome, deliverAll, harness, nextStart, runCase, type Aspect, type Harness } from '../helpers/pipeline-driver.ts';

const intent = (customer: number, op: Op, variant = 0, gapMinutes = 60): Intent => ({ customer, op, variant, gapMinutes });

// Two services for the whole file (a build costs ~1 s; each case empties them first).
let ref: Harness;
let other: Harness;
const cleanups: (() => Promise<void>)[] = [];
before(async () => {
  const context = { after: (fn: () => Promise<void>) => cleanups.push(fn) } as unknown as TestContext;
  [ref, other] = await Promise.all([harness(context), harness(context)]);
});
after(async () => {
  for (const cleanup of cleanups) await cleanup();
});

async function sameAsInOrder(intents: Intent[], spec: string, aspects: Aspect[], follow: boolean) {
  const timeline = buildTimeline(1, intents);
  const start = await runCase(ref, other, timeline, arrivals(timeline, spec), { follow });
  await assertSameOutcome(ref, other, start, aspects);
}

// #0 sub_0_1 created, #1 in_0_1 payment_failed attempt 1, #2 in_0_1 paid (attempt 2).
// In order the failure is processed before the payment exists: the first dunning email goes
// out, then invoice.paid converts the run. Delivered paid-first, the late failure must not start
// billing recovery for a paid invoice (nor send days 3, 5, 7 to a paying customer).
test('a payment_failed delivered after invoice.paid for the same invoice starts no dunning', async () => {
  await sameAsInOrder([intent(0, 'invoice_fail'), intent(0, 'invoice_paid')], '0 | 2 | 1 |', ['emails', 'runs', 'report'], true);
});

// The property's shrunk counter-example against the code before the engine entry guards
// (seed -266319092): #0 sub_0_1 created, #1 in_0_1 payment_failed, #2 in_0_1 voided; the void
// processed first, the late failure sent days 3, 5 and 7 of dunning for a voided invoice.
test('a payment_failed delivered after invoice.voided for the same invoice starts no dunning', async () => {
  await sameAsInOrder([intent(0, 'invoice_fail'), intent(0, 'invoice_void')], '0 2 | 1 |', ['emails', 'runs', 'report'], true);
});

// The property's shrunk counter-example (seed -926826998): #0 created, #1 in_0_1 failed, #2 in_0_1
// written off (exit), #3 in_0_1 paid (goal, later). In order the run exits at the write-off. The
// payment and the write-off arriving together, payment first: the run still ends on the earlier
// write-off (advance() is given the recorded goal/exit facts before the one it is fed).
test('a write-off and a later payment arriving together, payment first: the run ends on the write-off', async () => {
  await sameAsInOrder([intent(0, 'invoice_fail'), intent(0, 'invoice_uncollectible'), intent(0, 'invoice_paid')], '0 1 | 3 2 |', ['emails', 'runs', 'report'], true);
});

// The same, with the payment processed before the write-off is even delivered: the run has
// converted by then; the earlier exit fact, arriving later, re-ends it as exited (reEnd).
test('a payment processed before an earlier write-off is delivered: the run ends as in event order', async () => {
  await sameAsInOrder([intent(0, 'invoice_fail'), intent(0, 'invoice_uncollectible'), intent(0, 'invoice_paid')], '0 1 | 3 | 2 |', ['emails', 'runs', 'report'], true);
});

// #0 u_0 identify (email), #1 Signed Up, #2 Project Created (activation's goal). Project Created
// processed before Signed Up must not start activation and send "create your first project".
test('Project Created delivered before Signed Up sends no activation email', async () => {
  await sameAsInOrder([intent(0, 'identify', 2), intent(0, 'track', 0), intent(0, 'track', 1)], '0 | 2 | 1 |', ['emails', 'runs'], true);
});

// #0 created, #1 paused, #2 resumed, #3 paused, #4 resumed: four transitions, four facts.
test('repeated subscription pause/resume transitions are each a fact, also when redelivered out of order', async () => {
  const timeline = buildTimeline(1, [intent(0, 'sub_create'), intent(0, 'sub_pause'), intent(0, 'sub_resume'), intent(0, 'sub_pause'), intent(0, 'sub_resume')]);
  const h = other;
  await h.reset();
  await deliverAll(h, timeline, arrivals(timeline, '0 | 3 | 4 1 | 2 3 |'), nextStart());
  await assertOneFactPerTransition(h, timeline);
});

// #0 u_0 identify plan=team, #1 u_0 identify plan=business (the newer). Delivered newest first,
// the older identify must not overwrite the newer trait.
test('an older identify delivered late does not overwrite a newer trait', async () => {
  await sameAsInOrder([intent(0, 'identify', 2), intent(0, 'identify', 3)], '1 | 0 |', ['people'], false);
});

// #0 sub_0_1 created (a subscription carries no email), #1 in_0_1 payment_failed (customer_email,
// customer_name). In order the contact is made from the subscription (traits {}), the invoice
// only fills its email; invoice first, the contact is made with traits {email, name}.
// Fixed: each Stripe email/name carries its event's time (contacts.stripe_trait_times), newest wins.
test('the contact made for a Stripe customer has the same traits whichever Stripe event arrives first', async () => {
  await sameAsInOrder([intent(0, 'invoice_fail')], '1 | 0 |', ['people'], false);
});

// #0 cus_0 customer.updated (new default card; name "Customer 0"), #1 u_0 identify
// (stripeCustomerId cus_0). In order the contact made for the customer (traits {email, name})
// is adopted by the identify and keeps `name`; identify first, the customer links to u_0 and
// `name` never arrives. Fixed: Stripe traits reach identified contacts too, per trait by Stripe
// time, and never overwrite a trait a product message set.
test('a Stripe customer and an identify of the same person give the same traits in either order', async () => {
  await sameAsInOrder([intent(0, 'pm_update'), intent(0, 'identify', 2)], '1 | 0 |', ['people'], false);
});

// #0 sub_0_1 created (1 seat, 49.00), #1 sub_0_1 updated to 3 seats. In order the update
// records subscription.mrr_changed 4900 → 14700 (the expansion workflows' goal); update first,
// there is no earlier snapshot to compare with and the created snapshot that arrives later is
// older, so the upgrade is never a fact.
// Fixed: every snapshot is kept by event time (subscription_versions) and the change is the pair
// (previous snapshot in event time → this one).
test('a seat upgrade delivered before its subscription.created is still an mrr_changed fact', async () => {
  await sameAsInOrder([intent(0, 'sub_create'), intent(0, 'sub_update', 1)], '1 | 0 |', ['stripe-facts'], false);
});

// #0 sub_0_1 created (1 seat), #1 updated to 3 seats, #2 updated to 2 seats. In order: 4900 →
// 14700, then 14700 → 9800. The 2-seat update processed before the 3-seat one first records
// 4900 → 9800; when the older 3-seat snapshot arrives it is slotted in between: its own change is
// recorded and the recorded one is corrected to 14700 → 9800 (one fact per change, none twice).
test('a late older seat change slots in between: its own mrr_changed, and the next one corrected', async () => {
  await sameAsInOrder([intent(0, 'sub_create'), intent(0, 'sub_update', 1), intent(0, 'sub_update', 1)], '0 | 2 | 1 1 |', ['stripe-facts'], false);
  const changes = await other.svc.sql<{ properties: { from: number; to: number; delta: number } }[]>`
    select properties from domain_events where name = 'subscription.mrr_changed' order by occurred_at`;
  assert.deepEqual(changes.map((c) => [c.properties.from, c.properties.to, c.properties.delta]), [[4900, 14700, 9800], [14700, 9800, -4900]]);
});

// The end-to-end property's shrunk counter-example (seed 1084654226): #0 u_0 group acct_0
// usage_pct=92, #1 (an hour later) usage_pct=40. In order the account is near its limit for an
// hour and expansion-usage starts; delivered newest first, we learn of the 92 % only when the
// account is already at 40 %: a segment is a state, re-read when we learn of a change, so
// nothing starts — and nothing must start that in order would not (no extra run or email).
test('an older group call delivered after a newer one: a segment the account already left is not entered', async () => {
  await sameAsInOrder([intent(0, 'group', 2), intent(0, 'group', 0)], '1 0 |', ['runs', 'emails'], true);
  const runs = await other.svc.sql`select workflow_key from workflow_runs where workflow_key = 'expansion-usage'`;
  const refRuns = await ref.svc.sql`select workflow_key from workflow_runs where workflow_key = 'expansion-usage'`;
  assert.equal(refRuns.length, 1, 'in order the account was near its limit for an hour');
  assert.equal(runs.length, 0, 'out of order the state had passed when we learned of it');
});

// The everything property's counter-example (seed -1045211684, 37 runs): #0 u_0 group acct_0
// usage_pct=92, #1 (an hour later) identify u_0 with the address. In order the account enters
// expansion-usage on the group call while u_0 has no address yet: the email is skipped. Delivered
// identify first, both in one pass, the engine sees the account near its limit while feeding the
// identify (the inbox had projected both): the run is entered on that fact, and the address is
// known, so the email goes out. The same run and the same decision to send; only what we knew
// about the contact when the step ran differs (see skippedForNoAddress in pipeline-driver.ts).
test('a near-limit group call and the identify with the address, identify first: the same run; the email may go out', async () => {
  await sameAsInOrder([intent(0, 'group', 2), intent(0, 'identify', 0)], '1 0b |', ['runs', 'emails'], true);
  const refSent = await ref.svc.sql<{ status: string; status_reason: string | null }[]>`
    select status, status_reason from messages where template = 'expansion-usage-limit'`;
  assert.deepEqual(refSent.map((m) => ({ ...m })), [{ status: 'skipped', status_reason: 'contact has no email address' }], 'in order the address came an hour later');
  const runs = async (h: Harness) => (await h.svc.sql<{ n: number }[]>`select count(*)::int as n from workflow_runs where workflow_key = 'expansion-usage'`)[0]!.n;
  assert.deepEqual([await runs(ref), await runs(other)], [1, 1]);
});

// The billing property's shrunk counter-example (seed -1622897862): #0 sub_0_1 created, #1 in_0_1
// failed, #2 sub_0_1 canceled (payment failed), #3 sub_0_2 created (+65 min), #4 in_0_2 failed,
// #5 sub_0_2 canceled, #6 new default card. In order, win-back starts at #2, converts at #3 and
// its 180-day cooldown keeps #5 from starting a second run. Delivered #3 before #2, the first
// run is refused (its goal is already recorded), so nothing holds the cooldown and #5 starts a
// run whose reminder the in-order delivery never sends.
// Fixed: the refused entry is recorded as superseded (no steps, no emails, not in reports), and
// the cooldown counts it as the run it would have been in event order.
test('a win-back refused because the comeback was recorded first still counts for the cooldown', async () => {
  await sameAsInOrder(
    [intent(0, 'sub_create'), intent(0, 'invoice_fail', 0, 1), intent(0, 'sub_cancel', 0, 2), intent(0, 'sub_create'), intent(0, 'invoice_fail', 0, 1), intent(0, 'sub_cancel'), intent(0, 'pm_update')],
    '0 | 1 4 3 2 6 | 5 1 2 |', ['emails', 'runs'], true);
  const recorded = await other.svc.sql<{ status: string; n: number }[]>`
    select status, count(*)::int as n from workflow_runs where workflow_key = 'win-back' group by 1 order by 1`;
  assert.deepEqual(recorded.map((r) => ({ ...r })), [{ status: 'superseded', n: 1 }], 'the first cancellation is a superseded entry; the second is cooling down');
  const sent = await other.svc.sql`select 1 from messages where workflow_key = 'win-back'`;
  assert.equal(sent.length, 0, 'a superseded entry sends nothing');
  const entered = async (h: Harness) => {
    const day = (ms: number) => new Date(ms).toISOString().slice(0, 10);
    const range = `from=${day(h.clock.now().getTime() - 100 * 86_400_000)}&to=${day(h.clock.now().getTime() + 86_400_000)}`;
    const res = await h.svc.app.inject({ method: 'GET', url: `/v1/reports/workflows/win-back?${range}`, headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    assert.equal(res.statusCode, 200, res.body);
    return (res.json() as { runs: { entered: number } }).runs.entered;
  };
  assert.equal(await entered(ref), 1, 'in order: one run (converted by the comeback)');
  assert.equal(await entered(other), 0, 'a superseded entry is not a run in the workflow report');
});

// The everything property's counter-example at the end of session 5 (seed 220418603, path
// 11:1:1), shrunk to its core: #0 sub_0_1 created, #1 sub_0_1 canceled (payment failed), #2
// sub_0_2 created, #3 sub_0_2 canceled (too expensive). In order, win-back starts at #1 (restore
// email at once), converts at #2, and its 180-day cooldown refuses #3. Delivered #3 first, #3's
// run starts (nothing earlier is known) and waits a day before its offer; the late #1 is a
// superseded entry (its goal #2 is known). Fixed: the late entry, which comes first in event
// order, withdraws the later run its cooldown covers, before it sends.
test('a cancellation delivered after a later one withdraws the later win-back run its cooldown covers', async () => {
  await sameAsInOrder(
    [intent(0, 'sub_create'), intent(0, 'sub_cancel', 0), intent(0, 'sub_create'), intent(0, 'sub_cancel', 5)],
    '3 | 2 | 0 1 |', ['emails', 'runs'], true);
  const runs = await other.svc.sql<{ status: string; withdrawn: boolean; n: number }[]>`
    select status, state ? 'withdrawnBy' as withdrawn, count(*)::int as n from workflow_runs where workflow_key = 'win-back' group by 1, 2 order by 1, 2`;
  assert.deepEqual(runs.map((r) => ({ ...r })), [{ status: 'superseded', withdrawn: false, n: 1 }, { status: 'superseded', withdrawn: true, n: 1 }],
    'the late first cancellation is a superseded entry; the later run is withdrawn');
  const sent = await other.svc.sql`select 1 from messages where workflow_key = 'win-back' and status in ('queued', 'sent')`;
  assert.equal(sent.length, 0, 'the withdrawn run never reached its offer');
  const [trace] = await other.svc.sql<{ detail: string }[]>`
    select t.detail from run_trace t join workflow_runs r on r.id = t.run_id
    where r.workflow_key = 'win-back' and r.state ? 'withdrawnBy' and t.kind = 'superseded'`;
  assert.match(trace?.detail ?? '', /^withdrawn: an entry triggered earlier .* its cooldown P180D refuses this run \(was active\)$/);
});

// The same with the later cancellation involuntary: its run queues the restore email at once.
// Here the engine runs between deliveries but the sender does not (as when the outbox is behind):
// the queued email is skipped when the run is withdrawn and never reaches the provider.
test('a withdrawn win-back run\'s queued restore email is skipped, not sent', async () => {
  // #0 identify (the address), #1 sub_0_1 created, #2 canceled (too expensive), #3 sub_0_2
  // created, #4 canceled (payment failed).
  const timeline = buildTimeline(1, [intent(0, 'identify', 2), intent(0, 'sub_create'), intent(0, 'sub_cancel', 5), intent(0, 'sub_create'), intent(0, 'sub_cancel', 0)]);
  await other.reset();
  const drain = other.svc.drain;
  other.svc.drain = async () => {
    await other.svc.inbox.drain();
    await other.svc.engine.drain();
  };
  try {
    const start = nextStart();
    await deliverAll(other, timeline, arrivals(timeline, '0 4 |'), start);
    const queued = await other.svc.sql<{ status: string }[]>`select status from messages where template = 'winback-restore'`;
    assert.deepEqual(queued.map((m) => m.status), ['queued'], 'the later cancellation\'s run queued its restore email');
    await deliverAll(other, timeline, arrivals(timeline, '3 1 2 |'), start);
  } finally {
    other.svc.drain = drain;
  }
  await other.svc.drain();
  const messages = await other.svc.sql<{ template: string; status: string; status_reason: string | null }[]>`
    select template, status, status_reason from messages where workflow_key = 'win-back' order by created_at`;
  assert.deepEqual(messages.map((m) => ({ ...m })), [{ template: 'winback-restore', status: 'skipped', status_reason: 'run withdrawn (an earlier entry delivered late)' }]);
  const events = await other.svc.sql<{ status: string }[]>`select e.status from message_events e join messages m on m.id = e.message_id where m.template = 'winback-restore'`;
  assert.deepEqual(events.map((e) => e.status), ['skipped']);
});

// The same search found this first (seed -1622897862, before the fix): the restore email after
// an involuntary cancellation waited behind the failed invoice of the canceled subscription
// ("recovery open") in order, and went out when the cancellation was delivered before the
// failure. An open invoice of a canceled subscription is no longer an open recovery.
test('win-back restore after an involuntary cancellation does not wait for the canceled subscription\'s open invoice', async () => {
  // (The identify gives the contact its address up front: a contact made from the cancellation
  // alone has no address yet, and that send is skipped whatever the order.)
  await sameAsInOrder([intent(0, 'identify', 2), intent(0, 'sub_create'), intent(0, 'invoice_fail', 0, 1), intent(0, 'sub_cancel', 0, 2)], '0 1 | 3 | 2 |', ['emails', 'runs'], true);
  const sent = await ref.svc.sql`select count(*)::int as n from messages where template = 'winback-restore' and status in ('queued', 'sent')`;
  assert.equal(sent[0]!.n, 1, 'in order the restore email goes out at the cancellation');
});

// The end-to-end property's counter-example (seed -192945500, path 41:4; 12 events, not shrunk
// within the time limit): u_0 tracks Trial Started, onboarding starts and splits its runs 45/45/10
// (A, B, hold-out). Which variant a contact got was a hash of its row id, and contacts are numbered
// in the order they are made, which follows delivery order: u_0 was in the hold-out in one
// delivery (run completed, no email) and not in the other (run held behind its dunning). The
// assignment now hashes who the contact is (user id, else Stripe customer, else email).
// Six users' Trial Started delivered in reverse order: each user gets the same variant either way.
test('split and hold-out assignment does not depend on the order contacts were made in', async () => {
  const users = [0, 1, 2, 3, 4, 5];
  const timeline = buildTimeline(users.length, users.map((c) => intent(c, 'track', 2, 1)));
  await runCase(ref, other, timeline, arrivals(timeline, users.map((c) => `${users.length - 1 - c} |`).join(' ')), { follow: true });
  await assertSameOutcome(ref, other, 0, ['runs', 'emails']);
  const assigned = (h: Harness) => h.svc.sql<{ user_id: string; id: number; variant: string | null; holdout: boolean }[]>`
    select c.user_id, c.id, r.variant, r.holdout from workflow_runs r join contacts c on c.id = r.contact_id
    where r.workflow_key = 'onboarding' order by c.user_id`;
  const [a, b] = await Promise.all([assigned(ref), assigned(other)]);
  assert.equal(a.length, users.length);
  const rank = (rows: { id: number }[]) => rows.map((r) => rows.filter((o) => o.id < r.id).length);
  assert.notDeepEqual(rank(a), rank(b), 'the contacts were made in another order');
  assert.deepEqual(b.map((r) => [r.user_id, r.variant, r.holdout]), a.map((r) => [r.user_id, r.variant, r.holdout]));
});

// The end-to-end property's counter-example (seed -1085803907; shrinking stopped at the time
// limit with 9 events, this is its core): #0 sub_0_1 created, #1 in_0_1 payment_failed (carries
// the customer's email), #2 sub_0_1 canceled for failed payment. In order the contact has its
// address when win-back starts and the restore email goes out. Cancellation first: the contact
// is made from the subscription alone, without an address, and the restore step, due at once,
// is skipped; the address that arrives with the invoice does not resend it. A product rule, not
// fixed: a step emails the address known when it runs (pipeline-driver.ts, skippedForNoAddress).
test('an email due before any event told us the address is skipped (not an extra, may be missing)', async () => {
  await sameAsInOrder([intent(0, 'invoice_fail'), intent(0, 'sub_cancel')], '2 | 0 1 |', ['emails', 'runs'], true);
  const sent = await ref.svc.sql`select 1 from messages where template = 'winback-restore' and status in ('queued', 'sent')`;
  assert.equal(sent.length, 1, 'in order the restore email goes out');
  const skipped = await other.svc.sql<{ status_reason: string }[]>`select status_reason from messages where template = 'winback-restore'`;
  assert.deepEqual(skipped.map((m) => m.status_reason), ['contact has no email address']);
});

// The everything property's counter-example in session 9 (seed -1291632348, path 2:3), shrunk by
// hand: #0 u_0 group acct_0 usage_pct=92, #1 sub_0_1 created, #2 sub_0_1 upgraded (MRR up). In
// order, expansion-usage starts for the account on the group call and converts on the upgrade.
// Delivered subscription first, then the group call and the upgrade in one pass: the upgrade's
// fact was recorded before the group call linked the account, so it carries no account; the run
// entered on the group call then did not see its goal (already reached, after its trigger) and
// stayed active. Fixed: an account-level run's guard reads the facts about the account's Stripe
// customers too, so the entry is refused as already converted (a superseded entry, no email).
test('an upgrade recorded before the group call that links its account still converts the account-level run', async () => {
  await sameAsInOrder([intent(0, 'group', 2), intent(0, 'sub_create'), intent(0, 'sub_update', 1)], '1 | 0 2 |', ['runs', 'emails'], true);
  const status = async (h: Harness) => (await h.svc.sql<{ status: string }[]>`select status from workflow_runs where workflow_key = 'expansion-usage'`).map((r) => r.status);
  assert.deepEqual(await status(ref), ['converted'], 'in order the run starts on the group call and converts on the upgrade');
  assert.deepEqual(await status(other), ['superseded'], 'out of order the entry is refused: its goal is already recorded');
});
