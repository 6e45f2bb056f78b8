// SQL for contacts (people) and accounts (companies), and how they link to Stripe customers.
import type { Queryable } from '../db/connection.ts';

export interface ContactRow {
  id: number;
  user_id: string | null;
  anonymous_id: string | null;
  email: string | null;
  stripe_customer_id: string | null;
  traits: Record<string, unknown>;
  /** per trait, when the message that set it happened (ISO); see lifeline_newer in migration 0005 */
  trait_times?: Record<string, string>;
  /** per trait a Stripe event set, that event's time (ISO); see src/stripe/customer-contacts.ts */
  stripe_trait_times?: Record<string, string>;
  created_at: Date;
  updated_at: Date;
}

/** The time of every key of a trait patch: the time of the message that carried it. */
export function traitTimes(traits: Record<string, unknown>, at: Date | null): Record<string, string> {
  if (!at) return {};
  const iso = at.toISOString();
  const times: Record<string, string> = {};
  for (const key of Object.keys(traits)) times[key] = iso;
  return times;
}

/**
 * Transaction-scoped advisory locks on identity keys ('user:…', 'anon:…', 'email:…',
 * 'customer:…'; the customer key is contactForCustomer's), taken in one statement in sorted
 * order. Every inbox batch takes the keys of everything it may touch before any row lock, so
 * two batches (two lanes, two instances, a Stripe and a product batch) never wait on each other
 * in a cycle: the one that comes second waits at its first statement, holding nothing.
 */
export async function lockIdentities(db: Queryable, keys: Iterable<string>): Promise<void> {
  const sorted = [...new Set(keys)].sort();
  if (sorted.length === 0) return;
  await db`
    select count(pg_advisory_xact_lock(hashtext(k.key)))
    from unnest(${sorted}::text[]) with ordinality as k(key, n)`;
}

const asText = (v: unknown): string | null => (typeof v === 'string' && v.trim() !== '' ? v.trim() : null);

/** Traits that double as identity: Segment's `email`, and our link to a Stripe customer. */
export function identityTraits(traits: Record<string, unknown> | null | undefined): { email: string | null; stripeCustomerId: string | null } {
  return {
    email: asText(traits?.email),
    stripeCustomerId: asText(traits?.stripeCustomerId) ?? asText(traits?.stripe_customer_id),
  };
}

/**
 * Find or create the contact for a Segment identity and merge `traits` into it. A contact
 * created earlier from a Stripe customer (email only) or an anonymous visit is adopted when the
 * user id first appears, so one person stays one contact; when the user id already has a
 * contact, such unidentified contacts of the same person are merged into it (their history,
 * memberships and Stripe customers move over).
 */
export async function upsertContact(
  db: Queryable,
  identity: { userId: string | null; anonymousId: string | null },
  traits: Record<string, unknown>,
  now: Date,
  /** when the message carrying `traits` happened: an older message never overwrites a newer trait */
  traitsAt: Date | null = null,
): Promise<ContactRow> {
  const { email, stripeCustomerId } = identityTraits(traits);
  const patch = JSON.stringify(traits);
  const times = JSON.stringify(traitTimes(traits, traitsAt));
  let existing: ContactRow | undefined;
  let others: ContactRow[] = [];
  if (identity.userId) {
    [existing] = await db<ContactRow[]>`select * from contacts where user_id = ${identity.userId} for update`;
    // Unidentified contacts of the same person: the anonymous visitor, the contact made for the
    // Stripe customer (explicit link, or the same email). Never another identified user. Only
    // identities the contact does not already carry can find new ones (keeps tracks cheap).
    const known = (a: string | null, b: string | null | undefined, fold = false) =>
      a === null || (b != null && (fold ? a.toLowerCase() === b.toLowerCase() : a === b));
    const same = new Map<number, ContactRow>();
    if (!known(identity.anonymousId, existing?.anonymous_id)) {
      for (const c of await db<ContactRow[]>`select * from contacts where user_id is null and anonymous_id = ${identity.anonymousId} for update`) same.set(c.id, c);
    }
    if (!known(stripeCustomerId, existing?.stripe_customer_id)) {
      for (const c of await db<ContactRow[]>`select * from contacts where user_id is null and stripe_customer_id = ${stripeCustomerId} order by id for update`) same.set(c.id, c);
    }
    if (!known(email, existing?.email, true)) {
      for (const c of await db<ContactRow[]>`select * from contacts where user_id is null and lower(email) = lower(${email}) order by id for update`) same.set(c.id, c);
    }
    // The anonymous visitor first (it is adopted when the user id is new), then oldest first.
    const found = [...same.values()].sort((a, b) => Number(b.anonymous_id === identity.anonymousId) - Number(a.anonymous_id === identity.anonymousId) || a.id - b.id);
    if (existing) others = found;
    else [existing, ...others] = found;
  } else if (identity.anonymousId) {
    // Prefer the unidentified visitor; else the identified contact this device belongs to (an
    // anonymous event can be processed after the identify that named it, e.g. a retried batch).
    [existing] = await db<ContactRow[]>`select * from contacts where anonymous_id = ${identity.anonymousId} and user_id is null`;
    if (!existing) {
      // (Once per new visitor; contacts_anonymous_id_key only covers unidentified contacts.)
      [existing] = await db<ContactRow[]>`
        select * from contacts where anonymous_id = ${identity.anonymousId}
        order by updated_at desc, id desc
        limit 1`;
    }
  }
  let row: ContactRow | undefined;
  if (existing) {
    [row] = await db<ContactRow[]>`
      update contacts set
        user_id = coalesce(user_id, ${identity.userId}),
        anonymous_id = coalesce(anonymous_id, ${identity.anonymousId}),
        email = case when lifeline_newer(trait_times, ${patch}::text::jsonb, ${times}::text::jsonb) ? 'email' or trait_times->>'email' is null
                     then coalesce(${email}, email) else email end,
        stripe_customer_id = coalesce(${stripeCustomerId}, stripe_customer_id),
        traits = traits || lifeline_newer(trait_times, ${patch}::text::jsonb, ${times}::text::jsonb),
        trait_times = trait_times || lifeline_newer(trait_times, ${times}::text::jsonb, ${times}::text::jsonb),
        updated_at = ${now}
      where id = ${existing.id}
      returning *`;
  } else {
    // on conflict: a concurrent worker created the same user a moment ago; merge into it.
    [row] = await db<ContactRow[]>`
      insert into contacts (user_id, anonymous_id, email, stripe_customer_id, traits, trait_times, created_at, updated_at)
      values (${identity.userId}, ${identity.anonymousId}, ${email}, ${stripeCustomerId}, ${patch}::text::jsonb, ${times}::text::jsonb, ${now}, ${now})
      on conflict (user_id) do update set
        email = case when lifeline_newer(contacts.trait_times, excluded.traits, excluded.trait_times) ? 'email' or contacts.trait_times->>'email' is null
                     then coalesce(excluded.email, contacts.email) else contacts.email end,
        stripe_customer_id = coalesce(excluded.stripe_customer_id, contacts.stripe_customer_id),
        traits = contacts.traits || lifeline_newer(contacts.trait_times, excluded.traits, excluded.trait_times),
        trait_times = contacts.trait_times || lifeline_newer(contacts.trait_times, excluded.trait_times, excluded.trait_times),
        updated_at = excluded.updated_at
      returning *`;
  }
  if (!row) throw new Error('contact upsert returned no row');
  for (const other of others) row = await mergeContact(db, row, other, now);
  row.stripe_customer_id = await linkContactToCustomers(db, row);
  return row;
}

/**
 * Contacts for user ids seen for the first time, with nothing else to adopt or link (what
 * upsertContact creates for such a user), in one statement; traits follow as patches.
 */
export async function createBareContacts(db: Queryable, userIds: string[], now: Date): Promise<void> {
  const sorted = [...new Set(userIds)].sort();
  if (sorted.length === 0) return;
  await db`
    insert into contacts (user_id, traits, trait_times, created_at, updated_at)
    select u, '{}'::jsonb, '{}'::jsonb, ${now}, ${now} from unnest(${sorted}::text[]) with ordinality as x(u, n) order by n
    on conflict (user_id) do nothing`;
}

/**
 * Fold the unidentified contact `from` into `into`: its timeline, memberships and Stripe
 * customers move over, its traits fill keys `into` lacks, and it is deleted.
 */
async function mergeContact(db: Queryable, into: ContactRow, from: ContactRow, now: Date): Promise<ContactRow> {
  await db`update domain_events set contact_id = ${into.id} where contact_id = ${from.id}`;
  await db`
    insert into account_members (account_id, contact_id, joined_at)
    select account_id, ${into.id}, joined_at from account_members where contact_id = ${from.id}
    on conflict (account_id, contact_id) do update set joined_at = least(account_members.joined_at, excluded.joined_at)`;
  await db`update customers set contact_id = ${into.id} where contact_id = ${from.id}`;
  // Workflow history follows the person: runs (unless `into` already has a run for the same
  // workflow and key — then the duplicate stays ended with the old contact), messages, entries.
  await db`
    update workflow_runs r set contact_id = ${into.id}
    where r.contact_id = ${from.id}
      and not exists (select 1 from workflow_runs o where o.contact_id = ${into.id} and o.workflow_key = r.workflow_key and o.run_key = r.run_key)`;
  await db`update workflow_runs set status = 'exited', due_at = null, ended_at = ${now} where contact_id = ${from.id} and status = 'active'`;
  await db`update messages set contact_id = ${into.id} where contact_id = ${from.id}`;
  await db`delete from segment_memberships where contact_id = ${from.id}`;
  await db`update scheduled_entries set contact_id = ${into.id} where contact_id = ${from.id}
           and not exists (select 1 from scheduled_entries s where s.contact_id = ${into.id} and s.workflow_key = scheduled_entries.workflow_key and s.trait_value = scheduled_entries.trait_value)`;
  await db`delete from contacts where id = ${from.id}`;
  // Traits: the known contact's win, the merged one's fill gaps (with the times they came with).
  const [row] = await db<ContactRow[]>`
    update contacts set
      anonymous_id = coalesce(anonymous_id, ${from.anonymous_id}),
      email = coalesce(email, ${from.email}),
      stripe_customer_id = coalesce(stripe_customer_id, ${from.stripe_customer_id}),
      traits = ${JSON.stringify(from.traits ?? {})}::text::jsonb || traits,
      trait_times = (${JSON.stringify(from.trait_times ?? {})}::text::jsonb - array(select jsonb_object_keys(traits))) || trait_times,
      stripe_trait_times = (${JSON.stringify(from.stripe_trait_times ?? {})}::text::jsonb - array(select jsonb_object_keys(traits))) || stripe_trait_times,
      created_at = least(created_at, ${from.created_at}),
      updated_at = ${now}
    where id = ${into.id}
    returning *`;
  if (!row) throw new Error('contact merge returned no row');
  return row;
}

/**
 * Point Stripe customers at this contact: by explicit stripeCustomerId trait, else by email.
 * Returns the contact's Stripe customer id afterwards.
 */
async function linkContactToCustomers(db: Queryable, contact: ContactRow): Promise<string | null> {
  if (contact.stripe_customer_id) {
    // A try-lock on the customer's key: a Stripe batch that holds it links the contact itself;
    // waiting here (after row locks) could close a cycle with it.
    await db`update customers set contact_id = ${contact.id} where id = ${contact.stripe_customer_id} and contact_id is distinct from ${contact.id}
             and pg_try_advisory_xact_lock(hashtext('customer:' || id))`;
    return contact.stripe_customer_id;
  }
  if (contact.email) {
    const linked = await db<{ id: string }[]>`
      update customers set contact_id = ${contact.id}
      where lower(email) = lower(${contact.email}) and (contact_id is null or contact_id in (
        select id from contacts where user_id is null and id <> ${contact.id}))
        and pg_try_advisory_xact_lock(hashtext('customer:' || id))
      returning id`;
    if (linked.length === 1) {
      const [row] = await db<{ stripe_customer_id: string | null }[]>`
        update contacts set stripe_customer_id = coalesce(stripe_customer_id, ${linked[0]!.id}) where id = ${contact.id}
        returning stripe_customer_id`;
      return row?.stripe_customer_id ?? null;
    }
  }
  return null;
}

/**
 * The contact behind a Stripe customer, created from the customer's email when no identify has
 * named it yet (a failed card still needs someone to email). Serialized per customer by the
 * caller's transaction-scoped advisory lock.
 */
export async function contactForCustomer(
  db: Queryable,
  customer: { id: string; email: string | null; name: string | null },
  now: Date,
): Promise<number> {
  await db`select pg_advisory_xact_lock(hashtext(${'customer:' + customer.id}))`;
  const [current] = await db<{ contact_id: number | null }[]>`select contact_id from customers where id = ${customer.id}`;
  if (current?.contact_id) {
    // A contact made before Stripe told us the billing email (e.g. from a subscription event)
    // gets it as soon as an invoice or customer event carries it.
    if (customer.email) await db`update contacts set email = ${customer.email} where id = ${current.contact_id} and email is null`;
    return current.contact_id;
  }
  const [found] = await db<{ id: number }[]>`
    select id from contacts
    where stripe_customer_id = ${customer.id}
       or (${customer.email}::text is not null and lower(email) = lower(${customer.email}))
    order by (stripe_customer_id = ${customer.id}) desc nulls last, (user_id is not null) desc, id
    limit 1`;
  let contactId = found?.id;
  if (contactId === undefined) {
    const traits = JSON.stringify({ ...(customer.email ? { email: customer.email } : {}), ...(customer.name ? { name: customer.name } : {}) });
    const [created] = await db<{ id: number }[]>`
      insert into contacts (email, stripe_customer_id, traits, created_at, updated_at)
      values (${customer.email}, ${customer.id}, ${traits}::text::jsonb, ${now}, ${now})
      returning id`;
    contactId = created!.id;
  } else {
    await db`update contacts set stripe_customer_id = coalesce(stripe_customer_id, ${customer.id}) where id = ${contactId}`;
  }
  await db`update customers set contact_id = ${contactId} where id = ${customer.id}`;
  return contactId;
}

/**
 * The account of a group id, created if missing. With traits (a `group` call), they are merged
 * per trait by message time and the row is locked; without, an existing account is only read
 * (a track event must not lock an account its co-workers' events share).
 */
export async function upsertAccount(db: Queryable, groupId: string, traits: Record<string, unknown>, now: Date, traitsAt: Date | null = null): Promise<{ id: number; traits: Record<string, unknown> }> {
  const ids = await ensureAccounts(db, [groupId], now);
  if (Object.keys(traits).length > 0) await patchAccounts(db, [{ groupId, traits, times: traitTimes(traits, traitsAt) }], now);
  const [row] = await db<{ id: number; traits: Record<string, unknown> }[]>`select id, traits from accounts where id = ${ids.get(groupId)!}`;
  return row!;
}

/**
 * Accounts for many group ids: missing ones created (sorted, one statement, so two batches
 * creating the same accounts wait in one order), existing ones only read. Returns group id → id.
 */
export async function ensureAccounts(db: Queryable, groupIds: string[], now: Date): Promise<Map<string, number>> {
  const sorted = [...new Set(groupIds)].sort();
  if (sorted.length === 0) return new Map();
  await db`
    insert into accounts (group_id, traits, created_at, updated_at)
    select g, '{}'::jsonb, ${now}, ${now} from unnest(${sorted}::text[]) with ordinality as x(g, n) order by n
    on conflict (group_id) do nothing`;
  const rows = await db<{ id: number; group_id: string }[]>`select id, group_id from accounts where group_id = any(${sorted}::text[])`;
  return new Map(rows.map((r) => [r.group_id, r.id]));
}

/**
 * Account traits from many `group` calls at once: per account, per trait, the value of the
 * latest message wins (also against what is stored). Rows are locked in group id order first.
 */
export async function patchAccounts(db: Queryable, patches: { groupId: string; traits: Record<string, unknown>; times: Record<string, string> }[], now: Date): Promise<void> {
  if (patches.length === 0) return;
  const sorted = [...patches].sort((a, b) => (a.groupId < b.groupId ? -1 : a.groupId > b.groupId ? 1 : 0));
  // FOR NO KEY UPDATE (what the UPDATE takes): it does not conflict with the key-share lock a
  // membership insert takes on its account (foreign key), so members can be added meanwhile.
  await db`select id from accounts where group_id = any(${sorted.map((p) => p.groupId)}::text[]) order by group_id for no key update`;
  await db`
    update accounts a set
      stripe_customer_id = coalesce(p.customer, a.stripe_customer_id),
      traits = a.traits || lifeline_newer(a.trait_times, p.traits::jsonb, p.times::jsonb),
      trait_times = a.trait_times || lifeline_newer(a.trait_times, p.times::jsonb, p.times::jsonb),
      updated_at = ${now}
    from unnest(${sorted.map((p) => p.groupId)}::text[], ${sorted.map((p) => JSON.stringify(p.traits))}::text[],
                ${sorted.map((p) => JSON.stringify(p.times))}::text[], ${sorted.map((p) => identityTraits(p.traits).stripeCustomerId)}::text[])
      as p(group_id, traits, times, customer)
    where a.group_id = p.group_id`;
}

/**
 * Identify traits for many existing contacts at once (the batch path's common case: no identity
 * change), merged per trait by message time like upsertContact.
 */
export async function patchContacts(db: Queryable, patches: { id: number; traits: Record<string, unknown>; times: Record<string, string> }[], now: Date): Promise<void> {
  if (patches.length === 0) return;
  const sorted = [...patches].sort((a, b) => a.id - b.id);
  await db`
    update contacts c set
      traits = c.traits || lifeline_newer(c.trait_times, p.traits::jsonb, p.times::jsonb),
      trait_times = c.trait_times || lifeline_newer(c.trait_times, p.times::jsonb, p.times::jsonb),
      updated_at = ${now}
    from unnest(${sorted.map((p) => p.id)}::bigint[], ${sorted.map((p) => JSON.stringify(p.traits))}::text[], ${sorted.map((p) => JSON.stringify(p.times))}::text[])
      as p(id, traits, times)
    where c.id = p.id`;
}

/** Memberships for many (account, contact) pairs, in a stable order. */
export async function addAccountMembers(db: Queryable, pairs: { accountId: number; contactId: number }[], now: Date): Promise<void> {
  if (pairs.length === 0) return;
  const sorted = [...new Map(pairs.map((p) => [`${p.accountId}:${p.contactId}`, p])).values()].sort((a, b) => a.accountId - b.accountId || a.contactId - b.contactId);
  await db`
    insert into account_members (account_id, contact_id, joined_at)
    select a, c, ${now} from unnest(${sorted.map((p) => p.accountId)}::bigint[], ${sorted.map((p) => p.contactId)}::bigint[]) with ordinality as x(a, c, n)
    order by n
    on conflict do nothing`;
}

export async function addAccountMember(db: Queryable, accountId: number, contactId: number, now: Date): Promise<void> {
  await db`
    insert into account_members (account_id, contact_id, joined_at) values (${accountId}, ${contactId}, ${now})
    on conflict do nothing`;
}

/** The account a Stripe customer pays for (B2B: the group with that stripeCustomerId trait). */
export async function accountForCustomer(db: Queryable, customerId: string, contactId: number | null): Promise<number | null> {
  const [byCustomer] = await db<{ id: number }[]>`select id from accounts where stripe_customer_id = ${customerId} order by id limit 1`;
  if (byCustomer) return byCustomer.id;
  if (contactId === null) return null;
  const [byMember] = await db<{ account_id: number }[]>`select account_id from account_members where contact_id = ${contactId} order by joined_at limit 1`;
  return byMember?.account_id ?? null;
}
