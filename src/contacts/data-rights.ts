// Data rights (GDPR art. 15 and 17): export everything we hold about one contact, and erase the
// personal data everywhere it was copied while keeping the anonymised money figures, so the
// recovery reports (which read invoices / recovery_cases, keyed by Stripe ids) stay the same.
// The list of places personal data lives is in README "Data rights (GDPR)"; keep both in step.
import { createHash } from 'node:crypto';
import { readdir, readFile, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { Sql } from 'postgres';

/** Suppression key for an erased address: we must never mail it again, yet must not keep it. */
export function erasedAddressKey(email: string): string {
  return `sha256:${createHash('sha256').update(email.trim().toLowerCase()).digest('hex')}`;
}

// Keys whose values are personal data wherever they appear (Stripe objects, Segment traits and
// context, event properties). Set to null rather than removed so stored Stripe shapes still parse.
const PERSONAL_KEYS = new Set(
  [
    'email', 'name', 'phone', 'address', 'shipping', 'first_name', 'last_name', 'firstname', 'lastname', 'username',
    'customer_email', 'customer_name', 'customer_phone', 'customer_address', 'customer_shipping', 'receipt_email',
    'billing_details', 'ip', 'useragent', 'user_agent', 'avatar', 'birthday', 'title', 'description',
  ].map((k) => k.toLowerCase()),
);

const ERASED = '[erased]';

/** Replaces personal values in a JSON value: personal keys -> null, strings holding a needle -> '[erased]'. */
export function scrubJson(value: unknown, needles: string[]): unknown {
  if (typeof value === 'string') return scrubText(value, needles);
  if (Array.isArray(value)) return value.map((v) => scrubJson(v, needles));
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      out[k] = PERSONAL_KEYS.has(k.toLowerCase().replace(/[-\s]/g, '_')) && v !== null ? null : scrubJson(v, needles);
    }
    return out;
  }
  return value;
}

function scrubText(text: string, needles: string[]): string {
  let out = text;
  for (const n of needles) {
    if (out.toLowerCase().includes(n)) out = out.replace(new RegExp(n.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'), 'gi'), ERASED);
  }
  return out;
}

type Row = Record<string, unknown>;

/** The contact for `:id` (numeric id, userId or email address), or undefined. */
export async function findContact(sql: Sql, id: string): Promise<Row | undefined> {
  const [contact] = /^\d{1,15}$/.test(id)
    ? await sql`select * from contacts where id = ${Number(id)}`
    : id.includes('@')
      ? await sql`select * from contacts where lower(email) = lower(${id}) order by (user_id is not null) desc, id limit 1`
      : await sql`select * from contacts where user_id = ${id}`;
  return contact;
}

async function linkedCustomerIds(sql: Sql, contact: Row): Promise<string[]> {
  const ids = new Set<string>();
  if (contact.stripe_customer_id) ids.add(contact.stripe_customer_id as string);
  const rows = await sql<{ id: string }[]>`
    select distinct stripe_customer_id as id from domain_events where contact_id = ${contact.id as number} and stripe_customer_id is not null`;
  for (const r of rows) ids.add(r.id);
  return [...ids];
}

/** Everything we hold about one person, as plain JSON. */
export async function exportContact(sql: Sql, contact: Row): Promise<Row> {
  const contactId = contact.id as number;
  const customerIds = await linkedCustomerIds(sql, contact);
  const userIds = [contact.user_id, contact.anonymous_id].filter((v): v is string => typeof v === 'string');
  const runs = await sql`select * from workflow_runs where contact_id = ${contactId} order by id`;
  const runIds = runs.map((r) => r.id as number);
  const messages = await sql`
    select id, run_id, step_id, workflow_key, to_email, template, subject, category, variant, status, status_reason,
           attempts, created_at, sent_at, delivered_at, opened_at, clicked_at, updated_at
    from messages where contact_id = ${contactId} order by created_at, id`;
  const messageIds = messages.map((m) => m.id as string);
  const addresses = [...new Set([contact.email, ...messages.map((m) => m.to_email)].filter((e): e is string => typeof e === 'string').map((e) => e.toLowerCase()))];
  const [accounts, events, traces, messageEvents, customers, subscriptions, invoices, failures, suppressions, productEvents, stripeEvents, webhooks] =
    await Promise.all([
      sql`select a.id, a.group_id, a.stripe_customer_id, a.traits, m.joined_at from accounts a join account_members m on m.account_id = a.id
          where m.contact_id = ${contactId} order by m.joined_at`,
      sql`select id, name, source, source_id, occurred_at, stripe_customer_id, subject_id, properties from domain_events
          where contact_id = ${contactId} order by occurred_at, id`,
      sql`select run_id, at, step_id, kind, detail, data from run_trace where run_id = any(${runIds}::bigint[]) order by id`,
      sql`select message_id, status, at, detail from message_events where message_id = any(${messageIds}::text[]) order by at, id`,
      sql`select * from customers where id = any(${customerIds}::text[])`,
      sql`select * from subscriptions where customer_id = any(${customerIds}::text[]) order by id`,
      sql`select * from invoices where customer_id = any(${customerIds}::text[]) order by id`,
      sql`select * from payment_failures where customer_id = any(${customerIds}::text[]) order by id`,
      sql`select email, scope, reason, created_at from suppressions
          where email = any(${addresses}::text[]) or email = any(${addresses.map(erasedAddressKey)}::text[])`,
      sql`select message_id, kind, user_id, anonymous_id, group_id, event, properties, traits, context, timestamp, received_at
          from product_events where user_id = any(${userIds}::text[]) or anonymous_id = any(${userIds}::text[]) order by id`,
      sql`select id, type, created, payload from stripe_events where customer_id = any(${customerIds}::text[]) order by created, id`,
      sql`select id, run_id, step_id, url, body, status, created_at from webhook_deliveries where run_id = any(${runIds}::bigint[]) order by created_at`,
    ]);
  return {
    exportedFor: { id: contactId, userId: contact.user_id, email: contact.email },
    contact,
    accounts,
    timelineEvents: events,
    stripe: { customers, subscriptions, invoices, paymentFailures: failures, webhookEvents: stripeEvents },
    productEvents,
    workflowRuns: runs.map((r) => ({ ...r, trace: traces.filter((t) => t.run_id === r.id) })),
    messages: messages.map((m) => ({ ...m, events: messageEvents.filter((e) => e.message_id === m.id) })),
    webhookDeliveries: webhooks,
    suppressions,
  };
}

export interface ErasureResult {
  contactId: number;
  addressesSuppressed: number;
  rowsScrubbed: Record<string, number>;
  outboxFilesDeleted: number;
}

/**
 * Erases one contact's personal data. Kept: ids (contact id, Stripe ids), amounts, currencies,
 * statuses and times — what the reports count. Every address we knew for the person becomes a
 * hashed 'all' suppression so it is never mailed again, even if it reappears later.
 */
export async function eraseContact(sql: Sql, contact: Row, options: { outboxDir?: string | undefined; now: Date }): Promise<ErasureResult> {
  const contactId = contact.id as number;
  const customerIds = await linkedCustomerIds(sql, contact);
  const userIds = [contact.user_id, contact.anonymous_id].filter((v): v is string => typeof v === 'string');
  const rowsScrubbed: Record<string, number> = {};
  let addresses: string[] = [];
  let messageIds: string[] = [];
  await sql.begin(async (tx) => {
    const [locked] = await tx`select * from contacts where id = ${contactId} for update`;
    if (!locked) return;
    const messages = await tx<{ id: string; to_email: string | null }[]>`select id, to_email from messages where contact_id = ${contactId}`;
    messageIds = messages.map((m) => m.id);
    const customers = await tx<{ email: string | null; name: string | null }[]>`select email, name from customers where id = any(${customerIds}::text[])`;
    const traits = (locked.traits ?? {}) as Record<string, unknown>;
    addresses = [...new Set(
      [locked.email, traits.email, ...messages.map((m) => m.to_email), ...customers.map((c) => c.email)]
        .filter((e): e is string => typeof e === 'string' && e.includes('@'))
        .map((e) => e.trim().toLowerCase()),
    )];
    const names = [traits.name, traits.firstName, traits.lastName, traits.first_name, traits.last_name, ...customers.map((c) => c.name)]
      .filter((n): n is string => typeof n === 'string' && n.trim().length >= 3)
      .map((n) => n.trim().toLowerCase());
    const needles = [...new Set([...addresses, ...names])];
    const count = (table: string, n: number) => (rowsScrubbed[table] = (rowsScrubbed[table] ?? 0) + n);

    for (const address of addresses) {
      await tx`insert into suppressions (email, scope, reason, created_at) values (${erasedAddressKey(address)}, 'all', 'erased', ${options.now})
               on conflict (email) do update set scope = 'all', reason = 'erased'`;
    }
    count('suppressions', (await tx`delete from suppressions where email = any(${addresses}::text[])`).count);

    count('contacts', (await tx`update contacts set email = null, user_id = null, anonymous_id = null, traits = '{}'::jsonb,
                                  trait_times = '{}'::jsonb, stripe_trait_times = '{}'::jsonb, updated_at = ${options.now} where id = ${contactId}`).count);
    count('messages', (await tx`update messages set to_email = null, subject = ${ERASED}, data = '{}'::jsonb where contact_id = ${contactId}`).count);
    count('message_events', (await tx`update message_events set detail = null where message_id = any(${messageIds}::text[]) and detail is not null`).count);
    const batches = await tx<{ id: string; render_inputs: string }[]>`select id, render_inputs from email_batches where message_ids && ${messageIds}::text[]`;
    for (const b of batches) await tx`update email_batches set render_inputs = ${scrubText(b.render_inputs, needles)} where id = ${b.id}`;
    count('email_batches', batches.length);
    count('customers', (await tx`update customers set email = null, name = null, metadata = '{}'::jsonb where id = any(${customerIds}::text[])`).count);

    // jsonb columns: scrubbed value by value so amounts, currencies, ids and times survive.
    const scrubColumn = async (table: string, key: string, column: string, rows: Row[]) => {
      let n = 0;
      for (const row of rows) {
        const before = row[column];
        if (before == null) continue;
        const after = scrubJson(before, needles);
        if (JSON.stringify(after) === JSON.stringify(before)) continue;
        await tx`update ${tx(table)} set ${tx(column)} = ${tx.json(after as never)} where ${tx(key)} = ${row[key] as string}`;
        n++;
      }
      count(table, n);
    };
    await scrubColumn('domain_events', 'id', 'properties', await tx`select id, properties from domain_events where contact_id = ${contactId}`);
    const runs = await tx`select id, state from workflow_runs where contact_id = ${contactId}`;
    await scrubColumn('workflow_runs', 'id', 'state', runs);
    const runIds = runs.map((r) => r.id as number);
    await scrubColumn('run_trace', 'id', 'data', await tx`select id, data from run_trace where run_id = any(${runIds}::bigint[])`);
    count('run_trace', (await tx`update run_trace set detail = ${ERASED} where run_id = any(${runIds}::bigint[]) and detail ~* ${needles.length ? needles.map((n) => n.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|') : '$^'}`).count);
    await scrubColumn('webhook_deliveries', 'id', 'body', await tx`select id, body from webhook_deliveries where run_id = any(${runIds}::bigint[])`);
    await scrubColumn('stripe_events', 'id', 'payload', await tx`select id, payload from stripe_events where customer_id = any(${customerIds}::text[])`);
    await scrubColumn('subscriptions', 'id', 'items', await tx`select id, items from subscriptions where customer_id = any(${customerIds}::text[])`);
    const productEvents = await tx`select id, properties, traits, context from product_events
                                   where user_id = any(${userIds}::text[]) or anonymous_id = any(${userIds}::text[])`;
    for (const column of ['properties', 'traits', 'context']) await scrubColumn('product_events', 'id', column, productEvents);
    count('payment_failures', (await tx`update payment_failures set message = null where customer_id = any(${customerIds}::text[]) and message is not null`).count);
  });

  // Rendered copies written by the log transport: by message id, then any file naming an address.
  let outboxFilesDeleted = 0;
  if (options.outboxDir) {
    const names = await readdir(options.outboxDir).catch(() => [] as string[]);
    const byId = new Set(messageIds.map((id) => id.replace(/[^a-zA-Z0-9_-]/g, '_')));
    for (const name of names) {
      const file = path.join(options.outboxDir, name);
      let remove = byId.has(name.replace(/\.(html|txt)$/, ''));
      if (!remove && addresses.length) {
        const text = (await readFile(file, 'utf8').catch(() => '')).toLowerCase();
        remove = addresses.some((a) => text.includes(a));
      }
      if (remove && (await unlink(file).then(() => true, () => false))) outboxFilesDeleted++;
    }
  }
  return { contactId, addressesSuppressed: addresses.length, rowsScrubbed, outboxFilesDeleted };
}
