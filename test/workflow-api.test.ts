// The workflow admin API: list/read/publish versions/pause/resume/simulate, and contact detail.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ManualClock } from '../src/clock.ts';
import { ADMIN_TOKEN, build, WRITE_KEY } from './helpers/build.ts';
import { deliver, envelope, invoice } from './helpers/stripe.ts';

const auth = { authorization: `Bearer ${ADMIN_TOKEN}` };
const T = new Date('2026-03-02T10:00:00Z');
const DAY = 86_400_000;

const custom = (subject: string) => ({
  key: 'welcome-tour',
  name: 'Welcome tour',
  category: 'lifecycle',
  trigger: { type: 'event', event: 'Signed Up' },
  entry: { mode: 'once' },
  steps: [
    { id: 'wait_a_bit', type: 'wait', duration: 'PT5S' },
    { id: 'hello', type: 'send_email', template: 'onboarding-day1', subject },
  ],
});

test('admin auth: 401 without or with a wrong token; 503 naming the variable when unset', async (t) => {
  const svc = await build(t);
  assert.equal((await svc.app.inject('/v1/workflows')).statusCode, 401);
  assert.equal((await svc.app.inject({ url: '/v1/workflows', headers: { authorization: 'Bearer nope' } })).statusCode, 401);
  assert.equal((await svc.app.inject({ url: '/v1/workflows', headers: { authorization: `Bearer ${WRITE_KEY}` } })).statusCode, 401, 'the write key is not an admin token');
  const unset = await build(t, { env: { LIFELINE_ADMIN_TOKEN: undefined } });
  const res = await unset.app.inject({ url: '/v1/workflows', headers: auth });
  assert.equal(res.statusCode, 503);
  assert.match(res.json().message, /LIFELINE_ADMIN_TOKEN/);
});

test('the built-in workflows are listed and readable; unknown keys are 404', async (t) => {
  const svc = await build(t);
  const list = (await svc.app.inject({ url: '/v1/workflows', headers: auth })).json().workflows as { key: string; builtin: boolean; version: number }[];
  assert.deepEqual(list.map((w) => w.key).sort(), ['activation', 'billing-recovery', 'expansion', 'expansion-usage', 'onboarding', 'pre-dunning', 'win-back']);
  assert.ok(list.every((w) => w.builtin && w.version === 1));
  const one = (await svc.app.inject({ url: '/v1/workflows/billing-recovery', headers: auth })).json();
  assert.equal(one.definition.category, 'transactional');
  assert.deepEqual(one.versions, [1]);
  assert.equal((await svc.app.inject({ url: '/v1/workflows/nope', headers: auth })).statusCode, 404);
  const schema = (await svc.app.inject({ url: '/v1/workflows/schema', headers: auth })).json();
  assert.ok(schema.$defs.Step, 'the JSON Schema is published');
});

test('PUT validates in full and answers every problem with its path', async (t) => {
  const svc = await build(t);
  const bad = { ...custom('x'), steps: [{ id: 'w', type: 'wait', duration: 'five seconds' }, { id: 'w', type: 'send_email', template: 'onboarding-day1', subject: 'hi' }] };
  const res = await svc.app.inject({ method: 'PUT', url: '/v1/workflows/welcome-tour', headers: auth, payload: bad });
  assert.equal(res.statusCode, 400);
  const body = res.json();
  assert.equal(body.error, 'invalid_definition');
  const paths = (body.details as { path: string }[]).map((d) => d.path);
  assert.ok(paths.some((p) => p.includes('/steps/0/duration')), JSON.stringify(body.details));
  assert.ok(paths.some((p) => p.includes('/steps/1')), 'the duplicate step id is reported too');
  const mismatch = await svc.app.inject({ method: 'PUT', url: '/v1/workflows/other-key', headers: auth, payload: custom('x') });
  assert.equal(mismatch.statusCode, 400);
  const notJson = await svc.app.inject({ method: 'PUT', url: '/v1/workflows/welcome-tour', headers: { ...auth, 'content-type': 'application/json' }, payload: '[1,2]' });
  assert.equal(notJson.statusCode, 400);
});

test('PUT refuses a template that does not exist (it could never be sent)', async (t) => {
  const svc = await build(t);
  const res = await svc.app.inject({ method: 'PUT', url: '/v1/workflows/welcome-tour', headers: auth, payload: { ...custom('x'), steps: [{ id: 'hello', type: 'send_email', template: 'welcome', subject: 'Hi' }] } });
  assert.equal(res.statusCode, 400, res.body);
  assert.deepEqual(res.json(), {
    error: 'invalid_definition',
    message: 'The definition has 1 problem: /steps/0/template unknown template "welcome": no emails/welcome.mjml in the template catalog',
    errors: [{ path: '/steps/0/template', message: 'unknown template "welcome": no emails/welcome.mjml in the template catalog' }],
    details: [{ path: '/steps/0/template', message: 'unknown template "welcome": no emails/welcome.mjml in the template catalog' }],
  });
  assert.equal((await svc.app.inject({ url: '/v1/workflows/welcome-tour', headers: auth })).statusCode, 404, 'nothing was stored');
});

test('PUT reports every problem in one 400: structural, semantic and publish-time contracts', async (t) => {
  const svc = await build(t);
  const bad = {
    ...custom('x'),
    category: 'marketing',
    trigger: { type: 'event', event: 'invoice.payment_failed' },
    goalWindow: 'a month',
    steps: [
      { id: 'a', type: 'send_email', template: 'dunning-final', subject: 'Pay now' },
      { id: 'b', type: 'wait' },
      { id: 'a', type: 'send_email', template: 'no-such-email', subject: 'Hi' },
    ],
  };
  const res = await svc.app.inject({ method: 'PUT', url: '/v1/workflows/welcome-tour', headers: auth, payload: bad });
  assert.equal(res.statusCode, 400);
  const body = res.json() as { error: string; message: string; errors: { path: string; message: string }[]; details: unknown };
  assert.equal(body.error, 'invalid_definition');
  assert.deepEqual(body.errors.map((e) => e.path), ['/steps/1/duration', '/steps/2/id', '/goalWindow', '/steps/0/template', '/steps/2/template', '/entry']);
  assert.deepEqual(body.details, body.errors, '`details` carries the same list, for clients of the earlier shape');
  assert.match(body.message, /^The definition has 6 problems: \/steps\/1\/duration is required; \/steps\/2\/id duplicate step id/);
  for (const e of body.errors) assert.ok(body.message.includes(e.path), `the message names ${e.path}`);
  // The body key must match the URL, reported in the same shape.
  const mismatch = (await svc.app.inject({ method: 'PUT', url: '/v1/workflows/other-key', headers: auth, payload: custom('x') })).json();
  assert.deepEqual(mismatch.errors, [{ path: '/key', message: 'must match the URL key "other-key" (got "welcome-tour")' }]);
});

test('every PUT makes a new version; pause stops new runs, resume restarts them', async (t) => {
  const svc = await build(t, { clock: 'manual' });
  const put1 = await svc.app.inject({ method: 'PUT', url: '/v1/workflows/welcome-tour', headers: auth, payload: custom('Welcome!') });
  assert.equal(put1.statusCode, 201);
  assert.deepEqual(put1.json(), { key: 'welcome-tour', version: 1, created: true });
  const put2 = await svc.app.inject({ method: 'PUT', url: '/v1/workflows/welcome-tour', headers: auth, payload: custom('Welcome aboard!') });
  assert.equal(put2.statusCode, 200);
  assert.equal(put2.json().version, 2);
  const got = (await svc.app.inject({ url: '/v1/workflows/welcome-tour', headers: auth })).json();
  assert.deepEqual(got.versions, [1, 2]);
  assert.equal(got.definition.steps[1].subject, 'Welcome aboard!');

  assert.equal((await svc.app.inject({ method: 'POST', url: '/v1/workflows/welcome-tour/pause', headers: auth })).json().paused, true);
  const signUp = (userId: string) => svc.app.inject({ method: 'POST', url: '/v1/track', headers: { authorization: `Bearer ${WRITE_KEY}` }, payload: { userId, event: 'Signed Up', timestamp: svc.clock.now().toISOString() } });
  await signUp('paused-user');
  await svc.drain();
  let runs = await svc.sql`select workflow_key, version from workflow_runs where workflow_key = 'welcome-tour'`;
  assert.equal(runs.length, 0, 'paused: nobody enters');
  await svc.app.inject({ method: 'POST', url: '/v1/workflows/welcome-tour/resume', headers: auth });
  await signUp('resumed-user');
  await svc.drain();
  runs = await svc.sql`select workflow_key, version from workflow_runs where workflow_key = 'welcome-tour'`;
  assert.deepEqual(runs.map((r) => r.version), [2]);
  assert.equal((await svc.app.inject({ method: 'POST', url: '/v1/workflows/nope/pause', headers: auth })).statusCode, 404);
});

test('simulate returns the same trace as a real run of the same timeline', async (t) => {
  const svc = await build(t, { clock: 'manual', env: { QUIET_HOURS: 'off' } });
  const clock = svc.clock as ManualClock;
  clock.set(T);
  await deliver(svc.app, envelope('invoice.payment_failed', invoice({ id: 'in_sim', customer: 'cus_sim', customer_email: 'sim@x.test' }), { created: T }));
  await svc.drain();
  clock.set(new Date(T.getTime() + 3 * DAY));
  await svc.drain();
  const paidAt = new Date(T.getTime() + 4 * DAY);
  clock.set(paidAt);
  await deliver(svc.app, envelope('invoice.paid', invoice({ id: 'in_sim', customer: 'cus_sim', status: 'paid' }), { created: paidAt }));
  await svc.drain();

  const [run] = await svc.sql<{ id: number; status: string }[]>`select id, status from workflow_runs`;
  assert.equal(run!.status, 'converted');
  const real = await svc.sql<{ at: Date; step_id: string | null; kind: string; detail: string }[]>`
    select at, step_id, kind, detail from run_trace where run_id = ${run!.id} order by id`;
  // The very facts the real run saw, as the timeline to simulate.
  const facts = await svc.sql<{ name: string; properties: Record<string, unknown>; occurred_at: Date }[]>`
    select name, properties, occurred_at from domain_events where name like 'invoice.%' order by occurred_at, id`;
  const res = await svc.app.inject({
    method: 'POST',
    url: '/v1/workflows/billing-recovery/simulate',
    headers: auth,
    payload: {
      contact: { email: 'sim@x.test', traits: {} },
      // the customer as the real run saw it: no live subscription, so no MRR (the alert branch reads it)
      customer: { mrr: 0, currency: 'usd' },
      timeline: facts.map((f) => ({ name: f.name, properties: f.properties, occurredAt: f.occurred_at.toISOString() })),
    },
  });
  assert.equal(res.statusCode, 200, res.body);
  const sim = res.json();
  assert.equal(sim.entered, true);
  assert.equal(sim.final.status, 'converted');
  assert.deepEqual(sim.sends.map((s: { template: string; at: string }) => [s.template, s.at]), [
    ['dunning-soft-1', T.toISOString()],
    ['dunning-soft-2', new Date(T.getTime() + 3 * DAY).toISOString()],
  ]);
  assert.deepEqual(
    sim.trace.map((e: { at: string; stepId: string | null; kind: string; detail: string }) => [e.at, e.stepId, e.kind, e.detail]),
    real.map((e) => [e.at.toISOString(), e.step_id, e.kind, e.detail]),
  );
  // Nothing was stored by the simulation.
  const [{ n }] = (await svc.sql`select count(*)::int as n from workflow_runs`) as unknown as [{ n: number }];
  assert.equal(n, 1);
});

test('simulate an unpublished definition; invalid input is a 400', async (t) => {
  const svc = await build(t);
  const res = await svc.app.inject({
    method: 'POST',
    url: '/v1/workflows/welcome-tour/simulate',
    headers: auth,
    payload: { definition: custom('Hi'), timeline: [{ name: 'Signed Up', occurredAt: '2026-05-01T09:00:00Z' }] },
  });
  assert.equal(res.statusCode, 200, res.body);
  assert.deepEqual(res.json().sends.map((s: { template: string; at: string }) => [s.template, s.at]), [['onboarding-day1', '2026-05-01T09:00:05.000Z']]);
  const bad = await svc.app.inject({ method: 'POST', url: '/v1/workflows/welcome-tour/simulate', headers: auth, payload: { timeline: [{ name: 'x', occurredAt: 'yesterday' }] } });
  assert.equal(bad.statusCode, 400);
});

// A marketing workflow whose first send falls in quiet hours (22:30 in Paris) and whose second
// send comes an hour after the first (the frequency cap). Default configuration: QUIET_HOURS
// 21:00-08:00, FREQUENCY_CAP PT24H.
const lateNudge = {
  key: 'late-nudge',
  name: 'Late nudge',
  category: 'marketing',
  trigger: { type: 'event', event: 'Report Exported' },
  entry: { mode: 'once' },
  steps: [
    { id: 'first', type: 'send_email', template: 'expansion-paywall', subject: 'You are on a roll' },
    { id: 'pause', type: 'wait', duration: 'PT1H' },
    { id: 'second', type: 'send_email', template: 'expansion-upgrade-reminder', subject: 'Still thinking?' },
  ],
};
const LATE = new Date('2026-03-02T21:30:00Z'); // 22:30 in Paris (CET)

test('simulate applies the instance\'s quiet hours and frequency cap by default, exactly as a real run', async (t) => {
  const svc = await build(t, { clock: 'manual' });
  const clock = svc.clock as ManualClock;
  clock.set(LATE);
  assert.equal((await svc.app.inject({ method: 'PUT', url: '/v1/workflows/late-nudge', headers: auth, payload: lateNudge })).statusCode, 201);
  const wk = { authorization: `Bearer ${WRITE_KEY}` };
  await svc.app.inject({ method: 'POST', url: '/v1/identify', headers: wk, payload: { userId: 'u_late', traits: { email: 'late@acme.test', timezone: 'Europe/Paris' }, timestamp: LATE.toISOString() } });
  await svc.app.inject({ method: 'POST', url: '/v1/track', headers: wk, payload: { userId: 'u_late', event: 'Report Exported', timestamp: LATE.toISOString() } });
  await svc.drain();
  // Walk the real clock through every wake-up the run asks for.
  for (let i = 0; i < 10; i += 1) {
    const [run] = await svc.sql<{ status: string; due_at: Date | null }[]>`select status, due_at from workflow_runs where workflow_key = 'late-nudge'`;
    if (!run || run.status !== 'active' || !run.due_at) break;
    clock.set(run.due_at);
    await svc.drain();
  }
  const [run] = await svc.sql<{ id: number; status: string }[]>`select id, status from workflow_runs where workflow_key = 'late-nudge'`;
  assert.equal(run!.status, 'completed');
  const real = await svc.sql<{ at: Date; step_id: string | null; kind: string; detail: string }[]>`
    select at, step_id, kind, detail from run_trace where run_id = ${run!.id} order by id`;
  const sent = await svc.sql<{ template: string; created_at: Date }[]>`
    select template, created_at from messages where workflow_key = 'late-nudge' order by created_at`;
  const facts = await svc.sql<{ name: string; properties: Record<string, unknown>; occurred_at: Date }[]>`
    select name, properties, occurred_at from domain_events order by occurred_at, id`;

  const res = await svc.app.inject({
    method: 'POST',
    url: '/v1/workflows/late-nudge/simulate',
    headers: auth,
    payload: { contact: { email: 'late@acme.test' }, timeline: facts.map((f) => ({ name: f.name, properties: f.properties, occurredAt: f.occurred_at.toISOString() })) },
  });
  assert.equal(res.statusCode, 200, res.body);
  const sim = res.json();
  // Held until 08:00 in Paris, then the second send waits out the 24 h cap.
  const expected = [['expansion-paywall', '2026-03-03T07:00:00.000Z'], ['expansion-upgrade-reminder', '2026-03-04T07:00:00.000Z']];
  assert.deepEqual(sim.sends.map((s: { template: string; at: string }) => [s.template, s.at]), expected);
  assert.deepEqual(sent.map((m) => [m.template, m.created_at.toISOString()]), expected, 'the real engine sent at the same times');
  assert.deepEqual(
    sim.trace.map((e: { at: string; stepId: string | null; kind: string; detail: string }) => [e.at, e.stepId, e.kind, e.detail]),
    real.map((e) => [e.at.toISOString(), e.step_id, e.kind, e.detail]),
  );
  const held = sim.trace.filter((e: { kind: string }) => e.kind === 'send_held').map((e: { data: { reason: string } }) => e.data.reason);
  assert.deepEqual(held, ['quiet_hours', 'frequency_cap']);
  assert.deepEqual(sim.policy, { frequencyCap: 'PT24H', quietHours: { start: '21:00', end: '08:00' }, recoveryOpen: false, lastCappedSendAt: null, timezone: null, suppressed: null });
});

test('simulate: the policy can be overridden per request ("none", or single fields; null disables)', async (t) => {
  const svc = await build(t);
  const timeline = [
    { name: 'identify', properties: { traits: { timezone: 'Europe/Paris' } }, occurredAt: LATE.toISOString() },
    { name: 'Report Exported', occurredAt: LATE.toISOString() },
  ];
  const simulateWith = (policy: unknown) =>
    svc.app.inject({ method: 'POST', url: '/v1/workflows/late-nudge/simulate', headers: auth, payload: { definition: lateNudge, timeline, ...(policy === undefined ? {} : { policy }) } });
  const sends = async (policy: unknown) => {
    const res = await simulateWith(policy);
    assert.equal(res.statusCode, 200, res.body);
    return res.json().sends.map((s: { template: string; at: string }) => [s.template, s.at]);
  };
  assert.deepEqual(await sends('none'), [['expansion-paywall', '2026-03-02T21:30:00.000Z'], ['expansion-upgrade-reminder', '2026-03-02T22:30:00.000Z']]);
  assert.deepEqual(await sends({ quietHours: null }), [['expansion-paywall', '2026-03-02T21:30:00.000Z'], ['expansion-upgrade-reminder', '2026-03-03T21:30:00.000Z']]);
  assert.deepEqual(await sends({ frequencyCap: 'off', quietHours: '23:00-07:00' }), [['expansion-paywall', '2026-03-02T21:30:00.000Z'], ['expansion-upgrade-reminder', '2026-03-03T06:00:00.000Z']]);
  assert.deepEqual(await sends({ timezone: 'America/New_York' }), [['expansion-paywall', '2026-03-02T21:30:00.000Z'], ['expansion-upgrade-reminder', '2026-03-03T21:30:00.000Z']]);
  assert.deepEqual(await sends({ recoveryOpen: true, quietHours: null, frequencyCap: null }), [], 'held behind billing recovery for as long as it is open');

  for (const policy of [{ frequencyCap: 'daily' }, { quietHours: '9pm-8am' }, { quietHours: { start: '21:00' } }, 'all', { timezone: 'Mars/Olympus' }]) {
    const res = await simulateWith(policy);
    assert.equal(res.statusCode, 400, `${JSON.stringify(policy)}: ${res.body}`);
    assert.equal(res.json().error, 'validation_failed');
  }
});

test('simulate an unpublished definition: every problem comes back like a PUT', async (t) => {
  const svc = await build(t);
  const res = await svc.app.inject({
    method: 'POST',
    url: '/v1/workflows/late-nudge/simulate',
    headers: auth,
    payload: { definition: { ...lateNudge, steps: [{ id: 'x', type: 'send_email', template: 'dunning-final', subject: 'Pay' }, { id: 'y', type: 'wait', duration: 'P1' }] }, timeline: [] },
  });
  assert.equal(res.statusCode, 400);
  const body = res.json();
  assert.equal(body.error, 'invalid_definition');
  assert.deepEqual(body.errors.map((e: { path: string }) => e.path), ['/steps/1/duration', '/steps/0/template']);
  assert.deepEqual(body.details, body.errors);
});

test('an account-subject date trigger: the simulation and the real engine enter and send alike', async (t) => {
  const svc = await build(t, { clock: 'manual', env: { QUIET_HOURS: 'off' } });
  const clock = svc.clock as ManualClock;
  clock.set(T);
  const renewal = {
    key: 'renewal-reminder',
    name: 'Renewal reminder',
    category: 'lifecycle',
    trigger: { type: 'date_trait', trait: 'renews_at', offset: '-P7D', subject: 'account' },
    entry: { mode: 'once' },
    steps: [
      { id: 'heads_up', type: 'send_email', template: 'onboarding-get-started', subject: 'Your plan renews next week' },
      { id: 'pause', type: 'wait', duration: 'P2D' },
      { id: 'again', type: 'send_email', template: 'onboarding-day1', subject: 'Renewal in five days' },
    ],
  };
  assert.equal((await svc.app.inject({ method: 'PUT', url: '/v1/workflows/renewal-reminder', headers: auth, payload: renewal })).statusCode, 201);
  const wk = { authorization: `Bearer ${WRITE_KEY}` };
  // The contact's own trait of the same name must not count: the account's date does.
  await svc.app.inject({ method: 'POST', url: '/v1/identify', headers: wk, payload: { userId: 'u_r', traits: { email: 'r@acme.test', renews_at: '2026-06-01T00:00:00Z' }, timestamp: T.toISOString() } });
  await svc.app.inject({ method: 'POST', url: '/v1/group', headers: wk, payload: { userId: 'u_r', groupId: 'acme', traits: { renews_at: '2026-03-20T09:00:00Z' }, timestamp: T.toISOString() } });
  await svc.drain();
  for (const at of ['2026-03-13T09:00:00Z', '2026-03-15T09:00:00Z', '2026-04-30T00:00:00Z']) {
    clock.set(new Date(at));
    await svc.drain();
  }
  const [run] = await svc.sql<{ id: number }[]>`select id from workflow_runs where workflow_key = 'renewal-reminder'`;
  assert.ok(run, 'the engine entered the account-subject date trigger');
  const real = await svc.sql<{ at: Date; step_id: string | null; kind: string; detail: string }[]>`
    select at, step_id, kind, detail from run_trace where run_id = ${run.id} order by id`;
  const facts = await svc.sql<{ name: string; properties: Record<string, unknown>; occurred_at: Date }[]>`
    select name, properties, occurred_at from domain_events order by occurred_at, id`;
  const res = await svc.app.inject({
    method: 'POST',
    url: '/v1/workflows/renewal-reminder/simulate',
    headers: auth,
    payload: { contact: { email: 'r@acme.test' }, timeline: facts.map((f) => ({ name: f.name, properties: f.properties, occurredAt: f.occurred_at.toISOString() })) },
  });
  assert.equal(res.statusCode, 200, res.body);
  const sim = res.json();
  assert.deepEqual(sim.sends.map((s: { template: string; at: string }) => [s.template, s.at]), [
    ['onboarding-get-started', '2026-03-13T09:00:00.000Z'],
    ['onboarding-day1', '2026-03-15T09:00:00.000Z'],
  ]);
  assert.deepEqual(
    sim.trace.map((e: { at: string; stepId: string | null; kind: string; detail: string }) => [e.at, e.stepId, e.kind, e.detail]),
    real.map((e) => [e.at.toISOString(), e.step_id, e.kind, e.detail]),
  );
});

test('GET /v1/contacts/:id shows traits, accounts, runs with traces and messages', async (t) => {
  const svc = await build(t, { clock: 'manual', env: { QUIET_HOURS: 'off' } });
  (svc.clock as ManualClock).set(T);
  const wk = { authorization: `Bearer ${WRITE_KEY}` };
  await svc.app.inject({ method: 'POST', url: '/v1/identify', headers: wk, payload: { userId: 'u1', traits: { email: 'u1@acme.test', plan: 'trial' }, timestamp: T.toISOString() } });
  await svc.app.inject({ method: 'POST', url: '/v1/group', headers: wk, payload: { userId: 'u1', groupId: 'acme', traits: { name: 'Acme' }, timestamp: T.toISOString() } });
  await svc.app.inject({ method: 'POST', url: '/v1/track', headers: wk, payload: { userId: 'u1', event: 'Signed Up', timestamp: T.toISOString() } });
  await svc.drain();
  for (const id of ['u1', 'u1@acme.test']) {
    const res = await svc.app.inject({ url: `/v1/contacts/${encodeURIComponent(id)}`, headers: auth });
    assert.equal(res.statusCode, 200, res.body);
    const c = res.json();
    assert.equal(c.userId, 'u1');
    assert.equal(c.traits.plan, 'trial');
    assert.deepEqual(c.accounts.map((a: { groupId: string }) => a.groupId), ['acme']);
    const activation = c.runs.find((r: { workflowKey: string }) => r.workflowKey === 'activation');
    assert.ok(activation, 'the sign-up started the activation workflow');
    assert.ok(activation.trace.length > 0 && activation.trace[0].kind === 'entered');
    const byId = await svc.app.inject({ url: `/v1/contacts/${c.id}`, headers: auth });
    assert.equal(byId.json().userId, 'u1');
  }
  assert.equal((await svc.app.inject({ url: '/v1/contacts/nobody', headers: auth })).statusCode, 404);
});
