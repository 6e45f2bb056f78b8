// The contacts behind many Stripe customers at once: contactForCustomer (contact-store.ts) for a
// whole projection batch in a few statements, with the same outcome as calling it at each point
// of the batch where one-at-a-time projection would. Rules: a customer keeps the contact it is
// linked to (which gets the billing email if it had none); else the contact carrying its Stripe
// id, else one with its email (identified users first, then the oldest), which gets the Stripe
// id if it had none; else a new contact made from the customer's email and name.
//
// Traits: every call carries the email and name the event gives (a subscription carries neither;
// an invoice, a customer and a checkout both), each with the time of the Stripe event that set it
// (contacts.stripe_trait_times). Per trait, the newest Stripe value wins, whatever order the
// events arrive in; a trait a product message set (contacts.trait_times: identify) is the
// person's own and always wins over Stripe's billing details. The email column follows the
// email trait when Stripe's wins, and is otherwise only filled when empty. So a contact ends with
// the same traits whichever Stripe event, or identify, arrived first.
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
  /** a product message set the trait (contacts.trait_times has it) */
  own_email: boolean;
  own_name: boolean;
  /** when the Stripe event that set the trait happened (ISO), if one did */
  stripe_email_at: string | null;
  stripe_name_at: string | null;
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
           jsonb_exists(k.trait_times, 'email') as own_email, jsonb_exists(k.trait_times, 'name') as own_name,
           k.stripe_trait_times->>'email' as stripe_email_at, k.stripe_trait_times->>'name' as stripe_name_at
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
  /** when the Stripe event that gave the email / name happened (ms) */
  emailAt: number;
  nameAt: number;
}

export interface ContactChanges {
  /**
   * existing contacts that get Stripe traits (`patch`, with their times; applied per trait by
   * lifeline_stripe_won, which re-checks the rule against the row) or, if they have none, `email`
   */
  fills: { id: number; email: string | null; patch: Record<string, unknown>; times: Record<string, string> }[];
  /** existing contacts without a Stripe id that get this customer's */
  links: { id: number; cid: string }[];
  /** new contacts, each made by (and carrying the Stripe id of) its creator */
  creates: { cid: string; email: string | null; traits: Record<string, unknown>; times: Record<string, string> }[];
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
  /** traits a product message set: Stripe never overwrites them */
  own: Set<string>;
  /** per Stripe trait, the time of the value it holds (ms) */
  stripeAt: Map<string, number>;
  /** the Stripe traits this batch gives it, with their times */
  patch: Record<string, unknown>;
  times: Record<string, string>;
  filled: boolean;
  linked: boolean;
}

/** One call's email and name onto a contact, per trait by Stripe time (see the file comment). */
function applyPoint(k: SimContact, p: ContactPoint): void {
  for (const [key, value, at] of [['email', p.email, p.emailAt], ['name', p.name, p.nameAt]] as const) {
    if (!value) continue;
    const held = k.stripeAt.get(key);
    if (!k.own.has(key) && (held === undefined || held <= at)) {
      k.stripeAt.set(key, at);
      k.patch[key] = value;
      k.times[key] = new Date(at).toISOString();
      if (key === 'email') k.email = value;
      k.filled = true;
    } else if (key === 'email' && k.email === null) {
      k.email = value;
      k.filled = true;
    }
  }
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
    own: new Set([...(c.own_email ? ['email'] : []), ...(c.own_name ? ['name'] : [])]),
    stripeAt: new Map([
      ...(c.stripe_email_at ? [['email', Date.parse(c.stripe_email_at)] as const] : []),
      ...(c.stripe_name_at ? [['name', Date.parse(c.stripe_name_at)] as const] : []),
    ]),
    patch: {},
    times: {},
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
  const creates: { cid: string; sim: SimContact }[] = [];
  // (stripe_customer_id = cid) desc nulls last: this customer's, then another's, then none.
  const rank = (k: SimContact, cid: string) => (k.stripeCustomerId === cid ? 0 : k.stripeCustomerId !== null ? 1 : 2);
  for (const p of points) {
    const current = linkOf.get(p.cid);
    if (current) {
      applyPoint(current, p);
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
      applyPoint(found, p);
      continue;
    }
    const sim: SimContact = { id: null, order: next++, creator: p.cid, stripeCustomerId: p.cid, identified: false, email: null, own: new Set(), stripeAt: new Map(), patch: {}, times: {}, filled: false, linked: false };
    applyPoint(sim, p);
    contacts.push(sim);
    linkOf.set(p.cid, sim);
    creates.push({ cid: p.cid, sim });
    assigns.push({ cid: p.cid, contact: null, creator: p.cid });
  }
  return {
    fills: contacts.filter((k) => k.id !== null && k.filled).map((k) => ({ id: k.id!, email: k.email, patch: k.patch, times: k.times })),
    links: contacts.filter((k) => k.id !== null && k.linked).map((k) => ({ id: k.id!, cid: k.stripeCustomerId! })),
    // A new contact filled later in the batch is simply created with that email and traits.
    creates: creates.map(({ cid, sim }) => ({ cid, email: sim.email, traits: sim.patch, times: sim.times })),
    assigns,
  };
}

/** Writes the changes: up to three statements, issued together (pipelined). */
export async function applyContactChanges(db: Queryable, changes: ContactChanges, now: Date): Promise<void> {
  const pending: Promise<unknown>[] = [];
  if (changes.fills.length > 0) {
    // The rule is applied again against the row as it is now (lifeline_stripe_won, migration
    // 0014): every SET expression reads the row before this update.
    pending.push(db`
      update contacts k set
        email = case when lifeline_stripe_won(k.trait_times, k.stripe_trait_times, u.patch, u.times) ? 'email'
                     then u.patch->>'email' else coalesce(k.email, u.email) end,
        traits = k.traits || lifeline_stripe_won(k.trait_times, k.stripe_trait_times, u.patch, u.times),
        stripe_trait_times = k.stripe_trait_times || lifeline_stripe_won(k.trait_times, k.stripe_trait_times, u.times, u.times)
      from jsonb_to_recordset(${JSON.stringify(changes.fills)}::text::jsonb) as u(id bigint, email text, patch jsonb, times jsonb)
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
        insert into contacts (email, stripe_customer_id, traits, stripe_trait_times, created_at, updated_at)
        select c.email, c.cid, c.traits, c.times, ${now}, ${now}
        from jsonb_to_recordset(${JSON.stringify(creates)}::text::jsonb) as c(cid text, email text, traits jsonb, times jsonb, n int)
        order by c.n
        returning id, stripe_customer_id)
      update customers cu set contact_id = coalesce(a.contact, created.id)
      from jsonb_to_recordset(${JSON.stringify(changes.assigns)}::text::jsonb) as a(cid text, contact bigint, creator text)
      left join created on created.stripe_customer_id = a.creator
      where cu.id = a.cid`.execute());
  }
  await Promise.all(pending);
}
