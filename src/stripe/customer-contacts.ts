// The contacts behind many Stripe customers at once: contactForCustomer (contact-store.ts) for a
// whole projection batch in a few statements, with the same outcome as calling it at each point
// of the batch where one-at-a-time projection would. Rules: a customer keeps the contact it is
// linked to (which gets the billing email if it had none); else the contact carrying its Stripe
// id, else one with its email (identified users first, then the oldest), which gets the Stripe
// id if it had none; else a new contact made from the customer's email and name. A contact no
// user has identified yet also gets the `email` and `name` traits it lacks whenever an event
// carries them, so it ends with the same traits whichever Stripe event arrived first (a
// subscription carries neither; an invoice both).
//
// How: read (before the batch writes anything) the batch's customers and every contact that
// could match any of them, replay the calls in memory in batch order (planContacts), then write
// the differences in three statements (applyContactChanges).
import type { Queryable } from '../db/connection.ts';

/**
 * Per-customer transaction-scoped advisory locks (contactForCustomer's key), taken in the order
 * given: callers pass the ids sorted, so two transactions never wait on each other in a cycle.
 */
export async function lockCustomers(db: Queryable, sortedIds: string[]): Promise<void> {
  if (sortedIds.length === 0) return;
  await db`
    select count(pg_advisory_xact_lock(hashtext('customer:' || u.id)))
    from unnest(${sortedIds}::text[]) with ordinality as u(id, n)`.execute();
}

export interface StoredCustomer {
  id: string;
  email: string | null;
  name: string | null;
  deleted: boolean;
  version_created: Date;
  version_event_id: string;
  contact_id: number | null;
}

export interface CandidateContact {
  id: number;
  stripe_customer_id: string | null;
  identified: boolean;
  email: string | null;
  has_email_trait: boolean;
  has_name_trait: boolean;
}

/** The customers rows as they are before the batch (issue before the batch's upserts). */
export function readCustomers(db: Queryable, ids: string[]): Promise<StoredCustomer[]> {
  if (ids.length === 0) return Promise.resolve([]);
  return db<StoredCustomer[]>`
    select id, email, name, deleted, version_created, version_event_id, contact_id
    from customers where id = any(${ids}::text[])`.execute();
}

/**
 * Every contact a call for these customers could find: linked to one of them, carrying one of
 * their Stripe ids, or with one of the emails they have or the batch gives them.
 */
export function readCandidateContacts(db: Queryable, ids: string[], emails: string[]): Promise<CandidateContact[]> {
  if (ids.length === 0) return Promise.resolve([]);
  const lower = [...new Set(emails.map((e) => e.toLowerCase()))];
  return db<CandidateContact[]>`
    -- A union of index look-ups (one OR across them would scan every contact).
    select k.id, k.stripe_customer_id, (k.user_id is not null) as identified, k.email,
           jsonb_exists(k.traits, 'email') as has_email_trait, jsonb_exists(k.traits, 'name') as has_name_trait
    from contacts k
    where k.id in (
      select c.contact_id from customers c where c.id = any(${ids}::text[]) and c.contact_id is not null
      union
      select k2.id from contacts k2 where k2.stripe_customer_id = any(${ids}::text[])
      union
      select k3.id from contacts k3 where lower(k3.email) = any(${lower}::text[])
      union
      select k4.id from customers c join contacts k4 on lower(k4.email) = lower(c.email)
      where c.id = any(${ids}::text[]) and c.email is not null)`.execute();
}

/** One contactForCustomer call of the one-at-a-time projection, in batch order. */
export interface ContactPoint {
  cid: string;
  email: string | null;
  name: string | null;
}

export interface ContactChanges {
  /** existing contacts that get an email (if they have none) and traits they lack */
  fills: { id: number; email: string | null; patch: Record<string, unknown> }[];
  /** existing contacts without a Stripe id that get this customer's */
  links: { id: number; cid: string }[];
  /** new contacts, each made by (and carrying the Stripe id of) its creator */
  creates: { cid: string; email: string | null; traits: Record<string, unknown> }[];
  /** customers that get a contact: an existing one, or the one `creator` makes */
  assigns: { cid: string; contact: number | null; creator: string | null }[];
}

interface SimContact {
  id: number | null;
  /** order among contacts: existing ids, then new ones in creation order */
  order: number;
  creator: string | null;
  stripeCustomerId: string | null;
  identified: boolean;
  email: string | null;
  /** traits keys it has, and the ones this batch adds */
  traitKeys: Set<string>;
  patch: Record<string, unknown>;
  filled: boolean;
  linked: boolean;
}

/** Replays contactForCustomer at every point, in order, in memory. */
export function planContacts(customers: StoredCustomer[], candidates: CandidateContact[], points: ContactPoint[]): ContactChanges {
  const contacts: SimContact[] = candidates.map((c) => ({
    id: c.id,
    order: c.id,
    creator: null,
    stripeCustomerId: c.stripe_customer_id,
    identified: c.identified,
    email: c.email,
    traitKeys: new Set([...(c.has_email_trait ? ['email'] : []), ...(c.has_name_trait ? ['name'] : [])]),
    patch: {},
    filled: false,
    linked: false,
  }));
  const byId = new Map(contacts.map((c) => [c.id!, c]));
  const linkOf = new Map<string, SimContact>();
  for (const c of customers) {
    const k = c.contact_id !== null ? byId.get(c.contact_id) : undefined;
    if (k) linkOf.set(c.id, k);
  }
  let next = Number.MAX_SAFE_INTEGER / 2;
  const assigns: ContactChanges['assigns'] = [];
  const creates: (ContactChanges['creates'][number] & { sim: SimContact })[] = [];
  // (stripe_customer_id = cid) desc nulls last: this customer's, then another's, then none.
  const rank = (k: SimContact, cid: string) => (k.stripeCustomerId === cid ? 0 : k.stripeCustomerId !== null ? 1 : 2);
  for (const p of points) {
    const current = linkOf.get(p.cid);
    if (current) {
      if (p.email && current.email === null) {
        current.email = p.email;
        current.filled = true;
      }
      if (!current.identified) {
        for (const [key, value] of [['email', p.email], ['name', p.name]] as const) {
          if (value && !current.traitKeys.has(key)) {
            current.traitKeys.add(key);
            current.patch[key] = value;
            current.filled = true;
          }
        }
      }
      continue;
    }
    const email = p.email?.toLowerCase() ?? null;
    let found: SimContact | undefined;
    for (const k of contacts) {
      if (!(k.stripeCustomerId === p.cid || (email !== null && k.email?.toLowerCase() === email))) continue;
      if (!found || rank(k, p.cid) < rank(found, p.cid) || (rank(k, p.cid) === rank(found, p.cid) && (Number(k.identified) > Number(found.identified) || (k.identified === found.identified && k.order < found.order)))) found = k;
    }
    if (found) {
      if (found.stripeCustomerId === null) {
        found.stripeCustomerId = p.cid;
        found.linked = true;
      }
      linkOf.set(p.cid, found);
      assigns.push({ cid: p.cid, contact: found.id, creator: found.creator });
      continue;
    }
    const traits = { ...(p.email ? { email: p.email } : {}), ...(p.name ? { name: p.name } : {}) };
    const sim: SimContact = { id: null, order: next++, creator: p.cid, stripeCustomerId: p.cid, identified: false, email: p.email, traitKeys: new Set(Object.keys(traits)), patch: {}, filled: false, linked: false };
    contacts.push(sim);
    linkOf.set(p.cid, sim);
    creates.push({ cid: p.cid, email: p.email, traits, sim });
    assigns.push({ cid: p.cid, contact: null, creator: p.cid });
  }
  return {
    fills: contacts.filter((k) => k.id !== null && k.filled).map((k) => ({ id: k.id!, email: k.email, patch: k.patch })),
    links: contacts.filter((k) => k.id !== null && k.linked).map((k) => ({ id: k.id!, cid: k.stripeCustomerId! })),
    // A new contact filled later in the batch is simply created with that email and traits.
    creates: creates.map(({ sim, ...c }) => ({ ...c, email: sim.email, traits: { ...sim.patch, ...c.traits } })),
    assigns,
  };
}

/** Writes the changes: up to three statements, issued together (pipelined). */
export async function applyContactChanges(db: Queryable, changes: ContactChanges, now: Date): Promise<void> {
  const pending: Promise<unknown>[] = [];
  if (changes.fills.length > 0) {
    pending.push(db`
      update contacts k set email = coalesce(k.email, u.email), traits = u.patch || k.traits
      from jsonb_to_recordset(${JSON.stringify(changes.fills)}::text::jsonb) as u(id bigint, email text, patch jsonb)
      where k.id = u.id`.execute());
  }
  if (changes.links.length > 0) {
    pending.push(db`
      update contacts k set stripe_customer_id = u.cid
      from jsonb_to_recordset(${JSON.stringify(changes.links)}::text::jsonb) as u(id bigint, cid text)
      where k.id = u.id and k.stripe_customer_id is null`.execute());
  }
  if (changes.assigns.length > 0) {
    // New contacts (in order: ids follow the one-at-a-time order) and the customers' links.
    const creates = changes.creates.map((c, n) => ({ ...c, n }));
    pending.push(db`
      with created as (
        insert into contacts (email, stripe_customer_id, traits, created_at, updated_at)
        select c.email, c.cid, c.traits, ${now}, ${now}
        from jsonb_to_recordset(${JSON.stringify(creates)}::text::jsonb) as c(cid text, email text, traits jsonb, n int)
        order by c.n
        returning id, stripe_customer_id)
      update customers cu set contact_id = coalesce(a.contact, created.id)
      from jsonb_to_recordset(${JSON.stringify(changes.assigns)}::text::jsonb) as a(cid text, contact bigint, creator text)
      left join created on created.stripe_customer_id = a.creator
      where cu.id = a.cid`.execute());
  }
  await Promise.all(pending);
}
