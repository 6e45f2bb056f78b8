// The contacts behind many Stripe customers at once: contactForCustomer (contact-store.ts) for a
// whole projection batch in a few statements. Same rules: a customer keeps the contact it is
// linked to (which gets the billing email if it had none); else the contact carrying its
// Stripe id, else one with its email (identified users first, then the oldest); else a new
// contact made from the customer's email and name. Customers of one batch that share an email
// and have no contact yet get one contact between them (the first creates it, the next find it
// by email), as they would one at a time.
import type { Queryable } from '../db/connection.ts';

export interface CustomerIdentity {
  id: string;
  /** email/name the batch's events carried (used when the customers row has none) */
  email: string | null;
  name: string | null;
}

/**
 * Per-customer transaction-scoped advisory locks (contactForCustomer's key), taken in the order
 * given: callers pass the ids sorted, so two transactions never wait on each other in a cycle.
 */
export async function lockCustomers(db: Queryable, sortedIds: string[]): Promise<void> {
  if (sortedIds.length === 0) return;
  await db`
    select count(pg_advisory_xact_lock(hashtext('customer:' || u.id)))
    from unnest(${sortedIds}::text[]) with ordinality as u(id, n)`;
}

interface Looked {
  cid: string;
  contact_id: number | null;
  email: string | null;
  name: string | null;
  found: number | null;
}

/**
 * Two steps so a caller can pipeline them with its other statements: `looked` reads what exists
 * (issued at once; run it after the customers rows are written, with the customers locked), and
 * `apply()` (issue it after `looked` resolved) links, fills and creates, and sets
 * customers.contact_id. Afterwards every given customer has a contact.
 */
export function resolveCustomerContacts(db: Queryable, identities: CustomerIdentity[], now: Date): { looked: Promise<void>; apply(): Promise<void> } {
  if (identities.length === 0) return { looked: Promise.resolve(), apply: () => Promise.resolve() };
  let rows: Looked[] = [];
  const looked = (async () => {
    const input = identities.map((i, n) => ({ n, cid: i.id, email: i.email, name: i.name }));
    const result = await db<Looked[]>`
      select u.cid, c.contact_id, coalesce(c.email, u.email) as email, coalesce(c.name, u.name) as name,
             case when c.contact_id is null then (
               select k.id from contacts k
               where k.stripe_customer_id = u.cid
                  or (coalesce(c.email, u.email) is not null and lower(k.email) = lower(coalesce(c.email, u.email)))
               order by (k.stripe_customer_id = u.cid) desc nulls last, (k.user_id is not null) desc, k.id
               limit 1) end as found
      from jsonb_to_recordset(${JSON.stringify(input)}::text::jsonb) as u(n int, cid text, email text, name text)
      left join customers c on c.id = u.cid
      order by u.n`;
    rows = [...result];
  })();

  async function apply(): Promise<void> {
    const fills = new Map<number, string>();
    const links = new Map<number, string>();
    const creators = new Map<string, string>(); // lower(email) → the customer that creates the contact
    const assign: { n?: number; cid: string; contact: number | null; creator: string | null; email: string | null; traits: Record<string, unknown> | null }[] = [];
    for (const r of rows) {
      if (r.contact_id !== null) {
        // A contact made before Stripe told us the billing email gets it now.
        if (r.email && !fills.has(r.contact_id)) fills.set(r.contact_id, r.email);
        continue;
      }
      if (r.found !== null) {
        if (!links.has(r.found)) links.set(r.found, r.cid);
        assign.push({ cid: r.cid, contact: r.found, creator: null, email: null, traits: null });
        continue;
      }
      const key = r.email?.toLowerCase() ?? null;
      const creator = key !== null ? creators.get(key) : undefined;
      if (creator !== undefined) {
        assign.push({ cid: r.cid, contact: null, creator, email: null, traits: null });
        continue;
      }
      if (key !== null) creators.set(key, r.cid);
      const traits = { ...(r.email ? { email: r.email } : {}), ...(r.name ? { name: r.name } : {}) };
      assign.push({ cid: r.cid, contact: null, creator: r.cid, email: r.email, traits });
    }
    const pending: Promise<unknown>[] = [];
    if (fills.size > 0) {
      const input = [...fills].map(([id, email]) => ({ id, email }));
      pending.push(db`
        update contacts k set email = u.email
        from jsonb_to_recordset(${JSON.stringify(input)}::text::jsonb) as u(id bigint, email text)
        where k.id = u.id and k.email is null`);
    }
    if (links.size > 0) {
      const input = [...links].sort(([a], [b]) => a - b).map(([id, cid]) => ({ id, cid }));
      pending.push(db`
        update contacts k set stripe_customer_id = coalesce(k.stripe_customer_id, u.cid)
        from jsonb_to_recordset(${JSON.stringify(input)}::text::jsonb) as u(id bigint, cid text)
        where k.id = u.id and k.stripe_customer_id is null`);
    }
    if (assign.length > 0) {
      assign.forEach((a, n) => (a.n = n));
      // New contacts (one per creator) and every unlinked customer's contact_id, in one statement.
      pending.push(db`
        with a as (
          select * from jsonb_to_recordset(${JSON.stringify(assign)}::text::jsonb)
            as a(cid text, contact bigint, creator text, email text, traits jsonb, n bigint)),
        created as (
          insert into contacts (email, stripe_customer_id, traits, created_at, updated_at)
          select a.email, a.cid, a.traits, ${now}, ${now} from a where a.creator = a.cid order by a.n
          returning id, stripe_customer_id)
        update customers c set contact_id = coalesce(a.contact, created.id)
        from a left join created on created.stripe_customer_id = a.creator
        where c.id = a.cid`);
    }
    await Promise.all(pending);
  }
  return { looked, apply };
}
