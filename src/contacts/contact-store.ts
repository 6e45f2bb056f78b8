// SQL for contacts (people) and accounts (companies), and how they link to Stripe customers.
import type { Queryable } from '../db/connection.ts';

export interface ContactRow {
  id: number;
  user_id: string | null;
  anonymous_id: string | null;
  email: string | null;
  stripe_customer_id: string | null;
  traits: Record<string, unknown>;
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
 * user id first appears, so one person stays one contact.
 */
export async function upsertContact(
  db: Queryable,
  identity: { userId: string | null; anonymousId: string | null },
  traits: Record<string, unknown>,
  now: Date,
): Promise<ContactRow> {
  const { email, stripeCustomerId } = identityTraits(traits);
  const patch = JSON.stringify(traits);
  let existing: ContactRow | undefined;
  if (identity.userId) {
    [existing] = await db<ContactRow[]>`select * from contacts where user_id = ${identity.userId}`;
    if (!existing) {
      // Adopt an anonymous or Stripe-created contact for the same person.
      [existing] = await db<ContactRow[]>`
        select * from contacts
        where user_id is null
          and ((${identity.anonymousId}::text is not null and anonymous_id = ${identity.anonymousId})
            or (${stripeCustomerId}::text is not null and stripe_customer_id = ${stripeCustomerId})
            or (${email}::text is not null and lower(email) = lower(${email})))
        order by (anonymous_id = ${identity.anonymousId}) desc nulls last, id
        limit 1`;
    }
  } else if (identity.anonymousId) {
    [existing] = await db<ContactRow[]>`select * from contacts where anonymous_id = ${identity.anonymousId} and user_id is null`;
  }
  let row: ContactRow | undefined;
  if (existing) {
    [row] = await db<ContactRow[]>`
      update contacts set
        user_id = coalesce(user_id, ${identity.userId}),
        anonymous_id = coalesce(anonymous_id, ${identity.anonymousId}),
        email = coalesce(${email}, email),
        stripe_customer_id = coalesce(${stripeCustomerId}, stripe_customer_id),
        traits = traits || ${patch}::text::jsonb,
        updated_at = ${now}
      where id = ${existing.id}
      returning *`;
  } else {
    // on conflict: a concurrent worker created the same user a moment ago; merge into it.
    [row] = await db<ContactRow[]>`
      insert into contacts (user_id, anonymous_id, email, stripe_customer_id, traits, created_at, updated_at)
      values (${identity.userId}, ${identity.userId ? identity.anonymousId : identity.anonymousId}, ${email}, ${stripeCustomerId}, ${patch}::text::jsonb, ${now}, ${now})
      on conflict (user_id) do update set
        email = coalesce(excluded.email, contacts.email),
        stripe_customer_id = coalesce(excluded.stripe_customer_id, contacts.stripe_customer_id),
        traits = contacts.traits || excluded.traits,
        updated_at = excluded.updated_at
      returning *`;
  }
  if (!row) throw new Error('contact upsert returned no row');
  await linkContactToCustomers(db, row);
  return row;
}

/** Point Stripe customers at this contact: by explicit stripeCustomerId trait, else by email. */
async function linkContactToCustomers(db: Queryable, contact: ContactRow): Promise<void> {
  if (contact.stripe_customer_id) {
    await db`update customers set contact_id = ${contact.id} where id = ${contact.stripe_customer_id} and contact_id is distinct from ${contact.id}`;
  } else if (contact.email) {
    const linked = await db<{ id: string }[]>`
      update customers set contact_id = ${contact.id}
      where lower(email) = lower(${contact.email}) and (contact_id is null or contact_id in (
        select id from contacts where user_id is null and id <> ${contact.id}))
      returning id`;
    if (linked.length === 1) {
      await db`update contacts set stripe_customer_id = ${linked[0]!.id} where id = ${contact.id} and stripe_customer_id is null`;
    }
  }
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
  if (current?.contact_id) return current.contact_id;
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

export async function upsertAccount(db: Queryable, groupId: string, traits: Record<string, unknown>, now: Date): Promise<{ id: number; traits: Record<string, unknown> }> {
  const { stripeCustomerId } = identityTraits(traits);
  const [row] = await db<{ id: number; traits: Record<string, unknown> }[]>`
    insert into accounts (group_id, stripe_customer_id, traits, created_at, updated_at)
    values (${groupId}, ${stripeCustomerId}, ${JSON.stringify(traits)}::text::jsonb, ${now}, ${now})
    on conflict (group_id) do update set
      stripe_customer_id = coalesce(excluded.stripe_customer_id, accounts.stripe_customer_id),
      traits = accounts.traits || excluded.traits,
      updated_at = excluded.updated_at
    returning id, traits`;
  return row!;
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
