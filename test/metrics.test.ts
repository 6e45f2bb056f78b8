// GET /metrics: Prometheus text format from a per-app prom-client registry; authenticated (admin
// token or METRICS_TOKEN); HTTP counters by route pattern (never the raw URL); queue depths,
// ages, dead letters and runs computed from SQL at scrape time, so they move as work is queued
// and done.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ADMIN_TOKEN, WRITE_KEY, build, type Built } from './helpers/build.ts';

type Samples = Map<string, number>;

/** Parses the text exposition format strictly enough to fail on anything Prometheus would refuse. */
function parse(text: string): Samples {
  const samples: Samples = new Map();
  const typed = new Set<string>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$/.exec(line);
    if (meta) {
      if (meta[1] === 'TYPE') {
        assert.match(meta[3]!, /^(counter|gauge|histogram|summary|untyped)$/);
        typed.add(meta[2]!);
      }
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*\})? (-?(?:[0-9.e+-]+|NaN|\+Inf|-Inf))$/.exec(line);
    assert.ok(m, `not a valid sample line: ${JSON.stringify(line)}`);
    const base = m[1]!.replace(/_(bucket|sum|count)$/, '');
    assert.ok(typed.has(m[1]!) || typed.has(base), `sample without a TYPE: ${m[1]}`);
    samples.set(`${m[1]}${m[2] ?? ''}`, Number(m[3]));
  }
  return samples;
}

async function scrape(svc: Built, token = ADMIN_TOKEN): Promise<Samples> {
  const res = await svc.app.inject({ url: '/metrics', headers: { authorization: `Bearer ${token}` } });
  assert.equal(res.statusCode, 200, res.body);
  assert.match(String(res.headers['content-type']), /^text\/plain; version=0\.0\.4/);
  return parse(res.body);
}

test('/metrics: authenticated, valid exposition format, numbers follow the work', async (t) => {
  const svc = await build(t, { env: { METRICS_TOKEN: 'metrics_scrape_token' } });
  assert.equal((await svc.app.inject({ url: '/metrics' })).statusCode, 401);
  assert.equal((await svc.app.inject({ url: '/metrics', headers: { authorization: 'Bearer wrong' } })).statusCode, 401);
  assert.equal((await svc.app.inject({ url: '/metrics', headers: { authorization: `Bearer ${WRITE_KEY}` } })).statusCode, 401, 'the write key is not a metrics credential');

  const first = await scrape(svc, 'metrics_scrape_token');
  assert.equal(first.get('lifeline_queue_depth{queue="product_events"}'), 0);
  assert.equal(first.get('lifeline_dead_letters{queue="product_events"}'), 0);
  for (const q of ['stripe_events', 'product_events', 'card-update-payments', 'engine_feed', 'due_runs', 'outbox']) {
    assert.ok(first.has(`lifeline_queue_depth{queue="${q}"}`), q);
    assert.ok(first.has(`lifeline_queue_oldest_age_seconds{queue="${q}"}`), q);
  }
  assert.ok(first.has('lifeline_projection_lag_seconds'));

  for (let i = 0; i < 3; i++) {
    const res = await svc.app.inject({
      method: 'POST', url: '/v1/track', headers: { authorization: `Bearer ${WRITE_KEY}` },
      payload: { messageId: `mx-${i}`, userId: 'someone@private.test', event: 'Signed Up' },
    });
    assert.equal(res.statusCode, 200, res.body);
  }
  await svc.app.inject({ url: '/v1/contacts/someone%40private.test', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
  const queued = await scrape(svc);
  assert.equal(queued.get('lifeline_queue_depth{queue="product_events"}'), 3);
  assert.equal(queued.get('lifeline_http_requests_total{method="POST",route="/v1/track",status="200"}'), 3);
  assert.equal(queued.get('lifeline_http_request_duration_seconds_count{method="POST",route="/v1/track"}'), 3);
  assert.equal(queued.get('lifeline_http_requests_total{method="GET",route="/metrics",status="401"}'), 3);
  assert.ok((queued.get('lifeline_http_requests_total{method="GET",route="/v1/contacts/:id",status="404"}') ?? 0) >= 1);
  const text = (await svc.app.inject({ url: '/metrics', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).body;
  assert.ok(!text.includes('private.test'), 'no URL (and so no email address) in the labels');

  await svc.inbox.drain();
  const done = await scrape(svc);
  assert.equal(done.get('lifeline_queue_depth{queue="product_events"}'), 0);
  assert.equal(done.get('lifeline_queue_oldest_age_seconds{queue="product_events"}'), 0);

  await svc.sql`update product_events set dead_at = now() where message_id = 'mx-0'`;
  const dead = await scrape(svc);
  assert.equal(dead.get('lifeline_dead_letters{queue="product_events"}'), 1);

  // A second service in the same process has its own registry: counters are not shared.
  const other = await build(t);
  const fresh = await scrape(other);
  assert.equal(fresh.get('lifeline_http_requests_total{method="POST",route="/v1/track",status="200"}'), undefined);
});

test('/metrics: email provider latency and outcomes, 429s counted', async (t) => {
  const { deliver, envelope, invoice } = await import('./helpers/stripe.ts');
  let calls = 0;
  const transport = {
    name: 'resend' as const,
    send: async (emails: { id: string }[]) => {
      calls++;
      if (calls === 1) return { ok: false as const, status: 429, retryAfterMs: 10, permanent: false, message: 'rate limited' };
      return { ok: true as const, results: emails.map((e) => ({ providerId: `re_${e.id}` })) };
    },
  };
  const svc = await build(t, { transport, env: { QUIET_HOURS: 'off' } });
  const T0 = 1_760_000_000;
  assert.equal((await deliver(svc.app, envelope('customer.created', { id: 'cus_m', object: 'customer', email: 'm@acme.test', name: 'M', metadata: {}, created: T0 - 10 }, { created: T0 - 10 }))).statusCode, 200);
  assert.equal((await deliver(svc.app, envelope('invoice.payment_failed', invoice({ id: 'in_m', customer: 'cus_m', next_payment_attempt: T0 + 86_400 }), { created: T0 }))).statusCode, 200);
  await svc.inbox.drain();
  for (let i = 0; i < 5 && calls < 2; i++) {
    await svc.drain();
    await new Promise((r) => setTimeout(r, 50));
  }
  const s = await scrape(svc);
  assert.equal(s.get('lifeline_email_provider_requests_total{transport="resend",outcome="429"}'), 1);
  assert.ok((s.get('lifeline_email_provider_requests_total{transport="resend",outcome="ok"}') ?? 0) >= 1, `calls=${calls}`);
  assert.equal(s.get('lifeline_email_provider_request_duration_seconds_count{transport="resend"}'), calls);
  assert.ok((s.get('lifeline_emails{status="sent"}') ?? 0) >= 1, 'emails by status');
  assert.ok((s.get('lifeline_workflow_runs{workflow="billing-recovery",status="active"}') ?? 0) >= 1, 'runs by workflow and status');
});

test('the Grafana dashboard only queries metrics that /metrics exposes', async (t) => {
  const { readFile } = await import('node:fs/promises');
  const dashboard = JSON.parse(await readFile(new URL('../src/observability/grafana-dashboard.json', import.meta.url), 'utf8')) as { panels: { targets: { expr: string }[] }[] };
  const svc = await build(t);
  const text = (await svc.app.inject({ url: '/metrics', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).body;
  const exposed = new Set([...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].flatMap((m) => (m[2] === 'histogram' ? [`${m[1]}_bucket`, `${m[1]}_count`, `${m[1]}_sum`] : [m[1]!])));
  const used = dashboard.panels.flatMap((p) => p.targets.flatMap((x) => [...x.expr.matchAll(/\b(lifeline_[a-z_]+)/g)].map((m) => m[1]!)));
  assert.ok(used.length >= 10);
  for (const name of used) assert.ok(exposed.has(name), `dashboard uses ${name}, which /metrics does not expose`);
});
