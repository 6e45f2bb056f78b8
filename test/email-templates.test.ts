// Email templates: every template compiles strictly and renders; footers, escaping, broken
// templates and money formatting. No database.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { cp, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Handlebars from 'handlebars';
import { formatMoney } from '../src/email/money.ts';
import { DEFAULT_TEMPLATE_DIR, loadTemplates, type Brand, type TemplateCatalog } from '../src/email/template-catalog.ts';
import { TemplateError } from '../src/email/template-error.ts';
import { htmlToPlainText, type RenderData } from '../src/email/template-render.ts';
import { sampleData } from '../src/email/template-samples.ts';
import { templateKeys } from '../src/workflows/compile.ts';
import { builtinDefinitions } from '../src/workflows/builtin/index.ts';

const brand: Brand = {
  productName: 'Acme Analytics',
  primaryColor: '#0b7285',
  postalAddress: 'Acme Analytics Inc., 548 Market St #12345, San Francisco, CA 94104',
  locale: 'en-US',
};
const escapeHtml = (s: string) => Handlebars.escapeExpression(s);

let catalog: TemplateCatalog;
const tempDirs: string[] = [];

before(async () => {
  catalog = await loadTemplates({ brand });
});

after(async () => {
  for (const dir of tempDirs) await rm(dir, { recursive: true, force: true });
});

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'lifeline-emails-'));
  tempDirs.push(dir);
  return dir;
}

const META = JSON.stringify({ subject: 'Hello', preheader: 'Hi there', category: 'lifecycle', description: 'test' });

function page(body: string): string {
  return ['<mjml>', '  <mj-body>', '    <mj-section>', '      <mj-column>', body, '      </mj-column>', '    </mj-section>', '  </mj-body>', '</mjml>', ''].join('\n');
}

describe('catalog', () => {
  test('has a template for every template key of the built-in workflows, with the workflow category', () => {
    for (const definition of builtinDefinitions) {
      for (const key of templateKeys(definition)) {
        const meta = catalog.meta(key);
        assert.ok(meta, `template ${key} (workflow ${definition.key}) is missing`);
        assert.equal(meta.category, definition.category, `${key}: category`);
      }
    }
  });

  test('every template in emails/ is in the catalog, with complete metadata', async () => {
    const files = (await readdir(DEFAULT_TEMPLATE_DIR)).filter((f) => f.endsWith('.mjml')).map((f) => f.slice(0, -5));
    assert.deepEqual(catalog.keys(), files.sort());
    assert.ok(files.length >= 25);
    for (const key of catalog.keys()) {
      const meta = catalog.meta(key);
      assert.ok(meta);
      assert.equal(meta.key, key);
      for (const field of ['subject', 'preheader', 'description'] as const) assert.ok(meta[field].length > 0, `${key}.${field}`);
      assert.ok(['transactional', 'lifecycle', 'marketing'].includes(meta.category));
    }
  });

  test('every template renders HTML and text with its sample data', () => {
    for (const key of catalog.keys()) {
      const data = sampleData(key);
      const email = catalog.render(key, data);
      const action = data.links.action;
      assert.ok(action, `${key}: sample has an action link`);
      assert.ok(email.subject.trim().length > 0, `${key}: subject`);
      assert.ok(!/[\r\n]/.test(email.subject), `${key}: one-line subject`);
      assert.ok(email.preheader.length > 0, `${key}: preheader`);
      assert.ok(email.html.startsWith('<!doctype html>'), `${key}: html document`);
      assert.ok(!/\{\{|\}\}|\[\[brand/.test(email.html), `${key}: no unrendered placeholders`);
      assert.ok(email.html.includes(`href="${escapeHtml(action)}"`), `${key}: html has the action link`);
      assert.ok(email.html.includes(escapeHtml(brand.postalAddress)), `${key}: html has the postal address`);
      assert.ok(email.html.includes(brand.primaryColor), `${key}: brand colour`);
      assert.ok(email.text.trim().length > 100, `${key}: text part`);
      assert.ok(email.text.includes(action), `${key}: text has the action link`);
      assert.ok(email.text.includes(brand.postalAddress), `${key}: text has the postal address`);
      assert.ok(!email.text.includes('{{'), `${key}: text has no placeholders`);
      assert.ok(email.text.split('\n').every((line) => line.length <= 80 || /https?:\/\//.test(line)), `${key}: text wrapped at 80`);
      assert.equal(email.category, catalog.meta(key)?.category);
    }
  });

  test('an unknown key throws', () => {
    assert.throws(() => catalog.render('no-such-template', sampleData('no-such-template')), TemplateError);
    assert.equal(catalog.meta('no-such-template'), undefined);
  });
});

describe('footer', () => {
  test('marketing and lifecycle emails carry the unsubscribe link', () => {
    for (const key of ['winback-generic', 'expansion-paywall', 'onboarding-day1', 'activation-create-project']) {
      const data = sampleData(key);
      const unsubscribe = data.links.unsubscribe!;
      const email = catalog.render(key, data);
      assert.ok(email.html.includes(`href="${escapeHtml(unsubscribe)}"`), `${key}: html unsubscribe`);
      assert.ok(email.text.includes(unsubscribe), `${key}: text unsubscribe`);
      assert.match(email.text, /Unsubscribe/);
    }
  });

  test('transactional emails never show an unsubscribe link, even when one is given', () => {
    for (const key of catalog.keys().filter((k) => catalog.meta(k)?.category === 'transactional')) {
      const data = sampleData(key);
      const email = catalog.render(key, { ...data, links: { ...data.links, unsubscribe: 'https://links.example.com/u/should-not-appear' } });
      assert.ok(!email.html.includes('should-not-appear'), key);
      assert.ok(!email.text.includes('should-not-appear'), key);
      assert.ok(!/unsubscribe/i.test(email.html.replace(/unsubscribed/gi, '')), `${key}: no unsubscribe wording`);
    }
  });

  test('a marketing email without an unsubscribe link shows none (no empty link)', () => {
    const data = sampleData('winback-checkin');
    const email = catalog.render('winback-checkin', { ...data, links: { ...data.links, unsubscribe: null } });
    assert.ok(!/Unsubscribe/.test(email.html));
    assert.ok(!email.html.includes('href=""'));
  });

  test('the sending workflow category overrides the template category', () => {
    const data = sampleData('dunning-soft-1');
    const email = catalog.render('dunning-soft-1', { ...data, category: 'marketing' });
    assert.equal(email.category, 'marketing');
    assert.ok(email.html.includes(escapeHtml(data.links.unsubscribe!)));
  });

  test('the logo replaces the product name in the header when set', async () => {
    const withLogo = await loadTemplates({ brand: { ...brand, logoUrl: 'https://cdn.example.com/logo.png' }, dir: await minimalDirWithPartials() });
    const email = withLogo.render('hello', sampleData('hello'));
    assert.ok(email.html.includes('src="https://cdn.example.com/logo.png"'));
    assert.ok(email.html.includes('alt="Acme Analytics"'));
  });
});

async function minimalDirWithPartials(): Promise<string> {
  const dir = await tempDir();
  await cp(path.join(DEFAULT_TEMPLATE_DIR, 'partials'), path.join(dir, 'partials'), { recursive: true });
  await writeFile(
    path.join(dir, 'hello.mjml'),
    [
      '<mjml lang="{{locale}}">',
      '  <mj-include path="./partials/head.mjml" />',
      '  <mj-body>',
      '    <mj-include path="./partials/header.mjml" />',
      '    <mj-include path="./partials/button.mjml" />',
      '    <mj-include path="./partials/footer.mjml" />',
      '  </mj-body>',
      '</mjml>',
      '',
    ].join('\n'),
  );
  await writeFile(path.join(dir, 'hello.json'), META);
  return dir;
}

describe('plain-text part', () => {
  const words = (text: string) => text.replace(/\s+/g, ' ').trim();
  const variants = (key: string): [string, RenderData][] => {
    const data = sampleData(key);
    return [
      ['sample', data],
      ['marketing footer', { ...data, category: 'marketing' }],
      ['no unsubscribe link', { ...data, links: { ...data.links, unsubscribe: null } }],
      ['no invoice', { ...data, invoice: null }],
      ['no first name, German', { ...data, contact: { email: 'x@example.com', traits: {} }, locale: 'de-DE' }],
      ['markup and entities in traits', { ...data, contact: { ...data.contact, firstName: 'Ann & <Bob> "B"' }, account: { traits: { name: 'A&amp;B <i>Co</i>' } } }],
    ];
  };

  test('every template has a text template compiled at start-up (no per-send HTML conversion)', () => {
    for (const key of catalog.keys()) assert.equal(catalog.textStrategy(key), 'compiled', key);
  });

  test('the compiled text says word for word what html-to-text makes of the rendered HTML', () => {
    for (const key of catalog.keys()) {
      for (const [name, data] of variants(key)) {
        const email = catalog.render(key, data);
        assert.equal(words(email.text), words(htmlToPlainText(email.html)), `${key} (${name})`);
        assert.ok(!/[\uE000\uE001]|\{\{|<br/.test(email.text), `${key} (${name}): no tokens, placeholders or markup`);
        assert.ok(!/\n{3}/.test(email.text), `${key} (${name}): at most one blank line in a row`);
        assert.ok(email.text.split('\n').every((line) => line.length <= 80 || !line.trim().includes(' ')), `${key} (${name}): wrapped at 80`);
      }
    }
  });

  test('a multi-line postal address keeps its lines; list items wrap under their text', async () => {
    const multi = await loadTemplates({ brand: { ...brand, postalAddress: 'Acme Analytics Inc.\n548 Market St #12345\nSan Francisco, CA 94104' } });
    const email = multi.render('onboarding-day1', sampleData('onboarding-day1'));
    assert.match(email.text, /^Acme Analytics Inc\.\n548 Market St #12345\nSan Francisco, CA 94104$/m);
    const lines = email.text.split('\n');
    const item = lines.findIndex((l) => /^ 3\. Invite your team/.test(l));
    assert.ok(item >= 0, 'numbered list item');
    assert.match(lines[item + 1]!, /^ {4}\S/, 'continuation indented under the item text');
  });

  test('a template with a raw {{{…}}} expression falls back to converting the rendered HTML', async () => {
    const dir = await tempDir();
    await writeFile(path.join(dir, 'raw.mjml'), page('<mj-text>Hello {{{trigger.properties.snippet}}} and {{firstName}}</mj-text>'));
    await writeFile(path.join(dir, 'raw.json'), META);
    const raw = await loadTemplates({ brand, dir });
    assert.equal(raw.textStrategy('raw'), 'converted');
    const email = raw.render('raw', { ...sampleData('raw'), trigger: { properties: { snippet: '<b>bold</b> words' } } });
    assert.match(email.text, /Hello bold words and/);
    assert.ok(!email.text.includes('<b>'));
  });
});

describe('personalization', () => {
  test('{{…}} escapes HTML from traits and names', () => {
    const data = sampleData('expansion-paywall');
    const evil = '<script>alert("x")</script>';
    const email = catalog.render('expansion-paywall', {
      ...data,
      contact: { ...data.contact, firstName: `Eve${evil}` },
      account: { traits: { ...data.account!.traits, name: `Evil Corp ${evil}`, plan: '<b>Team</b>' } },
      trigger: { properties: { feature: evil } },
    });
    assert.ok(!email.html.includes('<script>'), 'no raw script tag');
    assert.ok(!email.html.includes('<b>Team</b>'));
    assert.ok(email.html.includes('Evil Corp &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;'));
    assert.ok(email.html.includes('Eve&lt;script&gt;'));
    // the text part shows the text as typed (it is plain text)
    assert.ok(email.text.includes('Evil Corp <script>'));
  });

  test('a step subject overrides the default; Handlebars works there and stays one plain-text line', () => {
    const data = sampleData('dunning-soft-1');
    const email = catalog.render('dunning-soft-1', {
      ...data,
      contact: { ...data.contact, firstName: 'Ann & <Bob>' },
      subject: '{{firstName}}, {{money invoice.amountDue invoice.currency}} is overdue\r\nBcc: x@example.com',
    });
    assert.equal(email.subject, 'Ann & <Bob>, $49.00 is overdue Bcc: x@example.com');
    assert.ok(email.html.includes('<title>Ann &amp; &lt;Bob&gt;, $49.00 is overdue'));
    assert.equal(catalog.render('dunning-soft-1', data).subject, catalog.meta('dunning-soft-1')?.subject);
  });

  test('first name falls back to "there"', () => {
    const data = sampleData('onboarding-day1');
    const email = catalog.render('onboarding-day1', { ...data, contact: { email: 'x@example.com', firstName: null, traits: {} } });
    assert.match(email.text, /Hi there,/);
    const fromTraits = catalog.render('onboarding-day1', { ...data, contact: { email: 'x@example.com', traits: { first_name: 'Lea' } } });
    assert.match(fromTraits.text, /Hi Lea,/);
  });

  test('dunning shows the amount in the contact locale and currency, and the invoice link', () => {
    const data = sampleData('dunning-soft-1');
    const email = catalog.render('dunning-soft-1', {
      ...data,
      locale: 'de-DE',
      invoice: { ...data.invoice!, amountDue: 4900, amountRemaining: 4900, currency: 'eur', nextPaymentAttempt: '2026-03-14T10:00:00Z' },
    });
    assert.ok(email.html.includes('49,00\u00a0€'));
    assert.ok(email.html.includes('14. März 2026'));
    assert.ok(email.html.includes('lang="de-DE"'));
    assert.ok(email.preheader.includes('49,00\u00a0€'));
  });

  test('amount remaining wins over amount due (partial payments)', () => {
    const data = sampleData('dunning-soft-2');
    const email = catalog.render('dunning-soft-2', { ...data, invoice: { ...data.invoice!, amountDue: 10000, amountRemaining: 2500 } });
    assert.ok(email.text.includes('$25.00'));
    assert.ok(!email.text.includes('$100.00'));
  });

  test('the final notice shows the deadline; without one it still reads well', () => {
    const data = sampleData('dunning-final');
    const email = catalog.render('dunning-final', { ...data, invoice: { ...data.invoice!, dueDate: '2026-04-02T15:00:00Z', nextPaymentAttempt: null } });
    assert.match(email.text, /paid by April 2, 2026/);
    // dates are shown in the contact's time zone (traits.timezone), else UTC
    const tokyo = catalog.render('dunning-final', {
      ...data,
      timeZone: 'Asia/Tokyo',
      invoice: { ...data.invoice!, dueDate: '2026-04-02T20:00:00Z', nextPaymentAttempt: null },
    });
    assert.match(tokyo.text, /paid by April 3, 2026/);
    const noDeadline = catalog.render('dunning-final', { ...data, invoice: { ...data.invoice!, dueDate: null, nextPaymentAttempt: null } });
    assert.match(noDeadline.text, /in the next few\s+days/);
  });

  test('the trigger may be the whole fact or only its properties', () => {
    const data = sampleData('dunning-soft-3');
    const whole = catalog.render('dunning-soft-3', { ...data, trigger: { name: 'invoice.payment_failed', properties: { attemptCount: 4 } } });
    const props = catalog.render('dunning-soft-3', { ...data, trigger: { attemptCount: 4 } });
    assert.match(whole.text, /tried 4 times/);
    assert.equal(props.text, whole.text);
  });

  test('without links.action, dunning falls back to the hosted invoice URL', () => {
    const data = sampleData('dunning-soft-1');
    const email = catalog.render('dunning-soft-1', { ...data, links: { unsubscribe: null } });
    assert.ok(email.text.includes(data.invoice!.hostedInvoiceUrl!));
  });

  test('the win-back offer shows the coupon code', () => {
    const data = sampleData('winback-offer');
    const email = catalog.render('winback-offer', { ...data, options: { couponCode: 'SPRING30' } });
    assert.ok(email.html.includes('SPRING30'));
    assert.ok(email.text.includes('SPRING30'));
    const none = catalog.render('winback-offer', { ...data, options: {} });
    assert.ok(!none.html.includes('class="code"'));
    assert.ok(!none.text.includes('Use this code'));
  });

  test('expansion shows usage from account traits', () => {
    const data = sampleData('expansion-usage-limit');
    const email = catalog.render('expansion-usage-limit', data);
    assert.match(email.text, /9,240 of 10,000 tracked contacts used \(92%\)/);
    const de = catalog.render('expansion-usage-limit', { ...data, locale: 'de-DE' });
    assert.match(de.text, /9\.240 of 10\.000/);
    const pctOnly = catalog.render('expansion-paywall', { ...data, account: { traits: { usage_pct: 95 } } });
    assert.match(pctOnly.text, /95% of your plan used/);
  });
});

describe('broken templates stop loading', () => {
  async function expectLoadError(files: Record<string, string>, pattern: RegExp, withPartials = false): Promise<TemplateError> {
    const dir = await tempDir();
    if (withPartials) await cp(path.join(DEFAULT_TEMPLATE_DIR, 'partials'), path.join(dir, 'partials'), { recursive: true });
    for (const [name, content] of Object.entries(files)) await writeFile(path.join(dir, name), content);
    let caught: unknown;
    try {
      await loadTemplates({ dir, brand });
    } catch (error) {
      caught = error;
    }
    assert.ok(caught instanceof TemplateError, `expected a TemplateError, got ${String(caught)}`);
    assert.match(caught.message, pattern);
    return caught;
  }

  test('an invalid MJML tag names the file and line', async () => {
    const error = await expectLoadError(
      { 'bad.mjml': page('        <mj-text>Hi {{firstName}}</mj-text>\n        <mj-textt>typo</mj-textt>'), 'bad.json': META },
      /bad\.mjml:6: <mj-textt> Element mj-textt doesn't exist/,
    );
    assert.equal(error.line, 6);
    assert.match(error.file ?? '', /bad\.mjml$/);
  });

  test('an invalid attribute value names the file and line', async () => {
    await expectLoadError(
      { 'bad.mjml': page('        <mj-button href="{{links.action}}" background-color="not-a-colour">Go</mj-button>'), 'bad.json': META },
      /bad\.mjml:5: <mj-button> Attribute background-color has invalid value/,
    );
  });

  test('an error inside a partial names the partial and where it is included', async () => {
    const dir = await tempDir();
    await writeFile(path.join(dir, 'ok.mjml'), page('        <mj-text>fine</mj-text>').replace('  <mj-body>', '  <mj-body>\n    <mj-include path="./partials/footer.mjml" />'));
    await writeFile(path.join(dir, 'ok.json'), META);
    await cp(path.join(DEFAULT_TEMPLATE_DIR, 'partials'), path.join(dir, 'partials'), { recursive: true });
    await writeFile(path.join(dir, 'partials', 'footer.mjml'), '<mj-section>\n  <mj-column>\n    <mj-image width="lots" src="x.png" />\n  </mj-column>\n</mj-section>\n');
    await assert.rejects(loadTemplates({ dir, brand }), (error: unknown) => {
      assert.ok(error instanceof TemplateError);
      assert.match(error.message, /partials\/footer\.mjml:3: <mj-image>/);
      assert.match(error.message, /included at line 3 of .*ok\.mjml/);
      return true;
    });
  });

  test('unclosed Handlebars names the file and line', async () => {
    const error = await expectLoadError(
      { 'bad.mjml': page('        <mj-text>Hi</mj-text>\n        <mj-text>{{#if contact.email}}Hi</mj-text>'), 'bad.json': META },
      /bad\.mjml:6: Handlebars: \{\{#if\}\} is never closed/,
    );
    assert.equal(error.line, 6);
    await expectLoadError(
      { 'bad.mjml': page('        <mj-text>Hi {{firstName</mj-text>'), 'bad.json': META },
      /bad\.mjml:5: Handlebars: Parse error on line 5/,
    );
    await expectLoadError(
      { 'bad.mjml': page('        <mj-text>{{#if a}}x{{/unless}}</mj-text>'), 'bad.json': META },
      /bad\.mjml:5: Handlebars: if doesn't match unless/,
    );
  });

  test('an unclosed MJML tag names the file and line (MJML itself would silently drop content)', async () => {
    await expectLoadError(
      { 'bad.mjml': page('        <mj-text>Hi {{firstName}},\n        <mj-button href="{{links.action}}">Go</mj-button>'), 'bad.json': META },
      /bad\.mjml:5: <mj-text> is not closed \(found <\/mj-column> on line 7\)/,
    );
  });

  test('a block helper around MJML elements (outside mj-raw) is caught, not silently dropped', async () => {
    await expectLoadError(
      { 'bad.mjml': page('        {{#if options.couponCode}}\n        <mj-text>Code: {{options.couponCode}}</mj-text>\n        {{/if}}'), 'bad.json': META },
      /bad\.mjml:5: \{\{#if options\.couponCode\}\} does not reach the compiled HTML/,
    );
  });

  test('a missing mj-include names the file and line', async () => {
    await expectLoadError(
      { 'bad.mjml': page('        <mj-text>Hi</mj-text>').replace('  <mj-body>', '  <mj-body>\n    <mj-include path="./partials/missing.mjml" />'), 'bad.json': META },
      /bad\.mjml:3: mj-include failed/,
    );
  });

  test('an unknown helper is a start-up error, not a send-time error', async () => {
    await expectLoadError(
      { 'bad.mjml': page('        <mj-text>\n          {{monee invoice.amountDue "usd"}}\n        </mj-text>'), 'bad.json': META },
      /bad\.mjml:6: Handlebars: .*unknown helper monee/,
    );
  });

  test('broken Handlebars in a partial names the partial', async () => {
    const dir = await tempDir();
    await cp(path.join(DEFAULT_TEMPLATE_DIR, 'partials'), path.join(dir, 'partials'), { recursive: true });
    await writeFile(path.join(dir, 'partials', 'button.mjml'), '<mj-section>\n  <mj-column>\n    <mj-button href="{{links.action}">Go</mj-button>\n  </mj-column>\n</mj-section>\n');
    await writeFile(path.join(dir, 'ok.mjml'), page('        <mj-text>fine</mj-text>'));
    await writeFile(path.join(dir, 'ok.json'), META);
    await assert.rejects(loadTemplates({ dir, brand }), /partials\/button\.mjml:3: Handlebars/);
  });

  test('missing or invalid metadata names the file', async () => {
    const ok = page('        <mj-text>fine</mj-text>');
    await expectLoadError({ 'a.mjml': ok }, /a\.mjml: metadata .*a\.json is missing/);
    await expectLoadError({ 'a.mjml': ok, 'a.json': '{\n  "subject": "Hi",\n  "preheader": "x",\n  "category": "promo",\n  "description": "d"\n}\n' }, /a\.json:4: "category" must be one of transactional \| lifecycle \| marketing/);
    await expectLoadError({ 'a.mjml': ok, 'a.json': '{\n  "subject": "Hi",\n  "category": "lifecycle",\n  "description": "d"\n}\n' }, /a\.json: "preheader" must be a non-empty string/);
    await expectLoadError({ 'a.mjml': ok, 'a.json': '{\n  "subject": "Hi",\n  "preheader": "x",\n  "category": "lifecycle",\n  "description": "d",\n  "subjct": "typo"\n}\n' }, /a\.json:6: unknown metadata field "subjct"/);
    await expectLoadError({ 'a.mjml': ok, 'a.json': '{\n  "subject": "Hi",\n  "preheader": "x"\n  "category": "lifecycle"\n}\n' }, /a\.json:4: invalid JSON/);
    await expectLoadError({ 'a.mjml': ok, 'a.json': '{\n  "subject": "Hi {{#if x}}",\n  "preheader": "x",\n  "category": "lifecycle",\n  "description": "d"\n}\n' }, /a\.json:2: Handlebars in "subject"/);
    await expectLoadError({ 'a.mjml': ok, 'a.json': META, 'orphan.json': META }, /orphan\.json: metadata without a template/);
  });

  test('invalid brand settings are rejected', async () => {
    await assert.rejects(loadTemplates({ brand: { ...brand, primaryColor: 'blue; background:url(x)' } }), /primaryColor must be a hex colour/);
    await assert.rejects(loadTemplates({ brand: { ...brand, postalAddress: ' ' } }), /postalAddress is required/);
    await assert.rejects(loadTemplates({ brand: { ...brand, logoUrl: 'javascript:alert(1)' } }), /logoUrl must be an http\(s\) URL/);
  });
});

describe('formatMoney', () => {
  test('USD', () => {
    assert.equal(formatMoney(4900, 'usd', 'en-US'), '$49.00');
    assert.equal(formatMoney(123456, 'usd', 'en-US'), '$1,234.56');
    assert.equal(formatMoney(5, 'USD', 'en-US'), '$0.05');
  });

  test('EUR depends on the locale', () => {
    assert.equal(formatMoney(4900, 'eur', 'en-IE'), '€49.00');
    assert.equal(formatMoney(4900, 'eur', 'de-DE'), '49,00\u00a0€');
    assert.equal(formatMoney(4900, 'eur', 'en-US'), '€49.00');
    assert.equal(formatMoney(123456, 'eur', 'de-DE'), '1.234,56\u00a0€');
    assert.notEqual(formatMoney(4900, 'eur', 'de-DE'), formatMoney(4900, 'eur', 'en-US'));
  });

  test('JPY is zero-decimal', () => {
    assert.equal(formatMoney(4900, 'jpy', 'en-US'), '¥4,900');
    assert.equal(formatMoney(4900, 'jpy', 'ja-JP'), '￥4,900');
  });

  test('BHD and KWD have three decimals', () => {
    assert.equal(formatMoney(1234, 'bhd', 'en'), 'BHD\u00a01.234');
    assert.equal(formatMoney(49000, 'kwd', 'en'), 'KWD\u00a049.000');
    assert.equal(formatMoney(1234, 'kwd', 'ar-KW').includes('١٫٢٣٤') || formatMoney(1234, 'kwd', 'ar-KW').includes('1.234'), true);
  });

  test('ISK and HUF follow Stripe (two-decimal API amounts)', () => {
    assert.equal(formatMoney(50000, 'isk', 'en'), 'ISK\u00a0500');
    assert.equal(formatMoney(1234500, 'huf', 'en'), 'HUF\u00a012,345');
    assert.equal(formatMoney(1234550, 'huf', 'en'), 'HUF\u00a012,345.50');
  });

  test('unknown currencies and locales do not throw', () => {
    assert.equal(formatMoney(1234, 'xyz', 'en-US'), '12.34\u00a0XYZ');
    assert.equal(formatMoney(1234, 'xyz', 'de-DE'), '12,34\u00a0XYZ');
    assert.equal(formatMoney(1234, 'not a currency', 'en-US'), '12.34\u00a0NOT A CURRENCY');
    assert.equal(formatMoney(4900, 'usd', 'en_US'), '$49.00');
    assert.equal(formatMoney(4900, 'usd', '!!'), '$49.00');
    assert.equal(formatMoney(Number.NaN, 'usd', 'en'), '');
  });
});
