// `lifeline doctor`, `preview` and their --help: DNS verdicts against a local DNS server (dns2)
// serving good, missing and weak SPF/DKIM/DMARC records; the Stripe endpoint check against the
// fake Stripe API; the whole checklist with exit code in a child process.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Resolver } from 'node:dns/promises';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import dns2 from 'dns2';
import { checkSendingDns, checkStripeEndpoint, checkBrand, defaultBrandSettings, sendingDomain, type CheckResult } from '../src/cli/doctor.ts';
import { registerCommands } from '../src/cli/commands/index.ts';
import { previewTemplate } from '../src/cli/commands/preview.ts';
import { loadConfig } from '../src/config.ts';
import { createStripeClient, STRIPE_API_VERSION } from '../src/stripe/client.ts';
import { PROJECTED_STRIPE_EVENT_TYPES } from '../src/stripe/projector.ts';
import { FakeStripeApi, FAKE_STRIPE_KEY } from './helpers/fake-stripe-api.ts';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const NODE = path.join(ROOT, 'node_modules', '.bin', 'node');

// name -> TXT records (each record a list of character-strings, as on the wire).
const ZONE: Record<string, string[][]> = {
  // good.test: everything right.
  'send.good.test': [['v=spf1 include:amazonses.com ~all']],
  'resend._domainkey.good.test': [['p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC', 'x1y2z3AQAB']],
  '_dmarc.good.test': [['v=DMARC1; p=quarantine; rua=mailto:d@good.test']],
  // weak.test: SPF without the provider, a revoked DKIM key, DMARC monitoring only.
  'send.weak.test': [['v=spf1 include:_spf.google.com ~all']],
  'resend._domainkey.weak.test': [['v=DKIM1; p=']],
  '_dmarc.weak.test': [['v=DMARC1; p=none']],
  // open.test: SPF with +all, two DMARC-less TXT records.
  'send.open.test': [['v=spf1 include:amazonses.com +all']],
  'resend._domainkey.open.test': [['p=abc']],
  '_dmarc.open.test': [['some-verification=123']],
  // missing.test has no records at all.
};

async function startDns(t: import('node:test').TestContext): Promise<Resolver> {
  const { Packet } = dns2;
  const server = dns2.createServer({
    udp: true,
    handle: (request, send) => {
      const response = Packet.createResponseFromRequest(request);
      const [question] = request.questions;
      const records = question ? ZONE[question.name.toLowerCase()] : undefined;
      if (question && records) {
        for (const data of records) response.answers.push({ name: question.name, type: Packet.TYPE.TXT, class: Packet.CLASS.IN, ttl: 60, data } as never);
      } else {
        response.header.rcode = 3; // NXDOMAIN
      }
      send(response);
    },
  });
  const addresses = await server.listen({ udp: { port: 0, address: '127.0.0.1' } });
  t.after(() => server.close());
  const resolver = new Resolver({ timeout: 2_000, tries: 1 });
  resolver.setServers([`127.0.0.1:${addresses.udp!.port}`]);
  return resolver;
}

function verdicts(results: CheckResult[]): Record<string, string> {
  return Object.fromEntries(results.map((r) => [r.name.split(' ')[0]!, r.status]));
}

test('doctor DNS: good, missing and weak SPF / DKIM / DMARC, each failure with a fix', async (t) => {
  const resolver = await startDns(t);
  assert.equal(sendingDomain('Acme Billing <billing@Good.test>'), 'good.test');

  const good = await checkSendingDns('Acme <billing@good.test>', resolver);
  assert.deepEqual(verdicts(good), { SPF: 'ok', DKIM: 'ok', DMARC: 'ok' });
  assert.match(good[2]!.detail, /quarantine/);

  const missing = await checkSendingDns('billing@missing.test', resolver);
  assert.deepEqual(verdicts(missing), { SPF: 'fail', DKIM: 'fail', DMARC: 'fail' });
  for (const r of missing) assert.ok(r.fix, `${r.name} has a fix`);
  assert.match(missing[0]!.fix!, /send\.missing\.test "v=spf1 include:amazonses\.com ~all"/);
  assert.match(missing[1]!.fix!, /resend\._domainkey\.missing\.test/);

  const weak = await checkSendingDns('billing@weak.test', resolver);
  assert.deepEqual(verdicts(weak), { SPF: 'fail', DKIM: 'fail', DMARC: 'warn' });
  assert.match(weak[0]!.detail, /does not include amazonses\.com/);
  assert.match(weak[1]!.detail, /revoked/);
  assert.match(weak[2]!.detail, /policy none/);

  const open = await checkSendingDns('billing@open.test', resolver);
  assert.deepEqual(verdicts(open), { SPF: 'fail', DKIM: 'ok', DMARC: 'fail' });
  assert.match(open[0]!.detail, /permissive all/);
});

test('doctor Stripe endpoint: missing, then right, then disabled with an event missing', async (t) => {
  const fake = await FakeStripeApi.start();
  t.after(() => fake.close());
  const config = loadConfig({ STRIPE_SECRET_KEY: FAKE_STRIPE_KEY, STRIPE_API_BASE: fake.url, PUBLIC_URL: 'https://ll.example.test' });
  const stripe = createStripeClient({ secretKey: FAKE_STRIPE_KEY, apiBase: fake.url, maxNetworkRetries: 0 });
  assert.equal((await checkStripeEndpoint(config, undefined)).status, 'warn');
  const none = await checkStripeEndpoint(config, stripe);
  assert.equal(none.status, 'fail');
  assert.match(none.fix!, /setup stripe/);
  await stripe.webhookEndpoints.create({ url: 'https://ll.example.test/webhooks/stripe', enabled_events: [...PROJECTED_STRIPE_EVENT_TYPES] as never, api_version: STRIPE_API_VERSION as never });
  assert.equal((await checkStripeEndpoint(config, stripe)).status, 'ok');
  Object.assign(fake.webhookEndpoints[0]!, { status: 'disabled', enabled_events: PROJECTED_STRIPE_EVENT_TYPES.slice(1) });
  const bad = await checkStripeEndpoint(config, stripe);
  assert.equal(bad.status, 'fail');
  assert.match(bad.detail, /status disabled/);
  assert.ok(bad.detail.includes(`missing events ${PROJECTED_STRIPE_EVENT_TYPES[0]}`));
});

test('brand defaults are flagged one by one', () => {
  assert.deepEqual(defaultBrandSettings({}), ['EMAIL_FROM', 'BRAND_NAME', 'BRAND_POSTAL_ADDRESS']);
  assert.deepEqual(defaultBrandSettings({ EMAIL_FROM: 'Acme <b@acme.com>', BRAND_NAME: 'Acme' }), ['BRAND_POSTAL_ADDRESS']);
  assert.deepEqual(checkBrand({ EMAIL_FROM: 'Acme <b@acme.com>', BRAND_NAME: 'Acme', BRAND_POSTAL_ADDRESS: '1 Main St' }).map((r) => r.status), ['ok', 'ok', 'ok']);
});

test('preview writes the rendered template; unknown template is a usage error', async () => {
  const out = path.join(tmpdir(), `preview-${process.pid}.txt`);
  assert.equal(await previewTemplate('dunning-final', { format: 'text', out }, { BRAND_NAME: 'Acme' }), out);
  const text = await readFile(out, 'utf8');
  assert.match(text, /^Subject: /);
  assert.match(text, /Acme/);
  await assert.rejects(previewTemplate('no-such-template', { format: 'html' }, {}), (err: Error & { exitCode?: number }) => err.exitCode === 2);
});

test('--help of doctor and preview describe their options', async () => {
  for (const [name, expected] of [['doctor', /--dns-server/], ['preview', /--format/]] as const) {
    const program = new Command('lifeline').exitOverride();
    registerCommands(program);
    const cmd = program.commands.find((c) => c.name() === name)!;
    assert.ok(cmd, `${name} registered`);
    assert.match(cmd.helpInformation(), expected);
  }
});

test('doctor as a process: exit 1 with fixes when checks fail', async (t) => {
  const resolverPort = await (async () => {
    const r = await startDns(t);
    return r.getServers()[0]!;
  })();
  const result = await new Promise<{ code: number; stdout: string }>((resolve) => {
    execFile(NODE, ['src/cli/main.ts', 'doctor', '--dns-server', resolverPort], { cwd: ROOT, env: { PATH: process.env.PATH ?? '', EMAIL_FROM: 'Acme <billing@good.test>', BRAND_NAME: 'Acme', BRAND_POSTAL_ADDRESS: '1 Main St' }, timeout: 60_000 }, (err, stdout) =>
      resolve({ code: err ? Number(err.code) : 0, stdout }),
    );
  });
  assert.equal(result.code, 1);
  assert.match(result.stdout, /\[FAIL\] secret LIFELINE_SECRET/);
  assert.match(result.stdout, /\[ok  \] SPF send\.good\.test/);
  assert.match(result.stdout, /\[ok  \] brand BRAND_NAME/);
  assert.match(result.stdout, /Stripe's own customer emails/);
});
