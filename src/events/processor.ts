// Turns stored Segment messages into contacts, accounts and timeline facts: a claimed batch (one
// partition of the inbox: the messages of some users, in order) in a few set-based statements,
// or one message at a time (the fallback that isolates a message that fails).
//
// Lock discipline (why lanes cannot deadlock): first the advisory keys of every identity the
// batch may touch (users, anonymous ids, emails, Stripe customers; sorted, one statement), then
// accounts (created sorted in one statement; only `group` calls lock existing rows, sorted),
// then contacts (their identities are already ours), memberships, facts (unique per message).
import type { Queryable } from '../db/connection.ts';
import {
  addAccountMember,
  addAccountMembers,
  createBareContacts,
  ensureAccounts,
  identityTraits,
  lockIdentities,
  patchAccounts,
  patchContacts,
  traitTimes,
  upsertAccount,
  upsertContact,
  type ContactRow,
} from '../contacts/contact-store.ts';
import { recordDomainEvent, recordDomainEvents, type DomainEventInput } from '../timeline/domain-event-store.ts';
import type { ListenedNames } from '../workflows/fact-listeners.ts';

export interface ProductEventRow {
  id: number;
  message_id: string;
  kind: 'track' | 'identify' | 'group';
  user_id: string | null;
  anonymous_id: string | null;
  group_id: string | null;
  event: string | null;
  properties: Record<string, unknown> | null;
  traits: Record<string, unknown> | null;
  timestamp: Date;
}

function fact(row: ProductEventRow, contact: { id: number; stripe_customer_id: string | null }, accountId: number | null): DomainEventInput {
  const properties =
    row.kind === 'track'
      ? (row.properties ?? {})
      : { ...(row.kind === 'group' ? { groupId: row.group_id } : {}), traits: row.traits ?? {} };
  return {
    name: row.kind === 'track' ? row.event! : row.kind,
    source: 'product',
    sourceId: row.message_id,
    dedupeKey: `product:${row.message_id}`,
    contactId: contact.id,
    accountId,
    stripeCustomerId: contact.stripe_customer_id,
    subjectId: null,
    properties,
    occurredAt: row.timestamp,
  };
}

/** One message on its own (the fallback path). */
export async function processProductEvent(db: Queryable, row: ProductEventRow, now: Date, listened?: ListenedNames): Promise<void> {
  const identity = { userId: row.user_id, anonymousId: row.anonymous_id };
  const contact = await upsertContact(db, identity, row.kind === 'identify' ? (row.traits ?? {}) : {}, now, row.timestamp);
  let accountId: number | null = null;
  if (row.group_id) {
    const account = await upsertAccount(db, row.group_id, row.kind === 'group' ? (row.traits ?? {}) : {}, now, row.timestamp);
    await addAccountMember(db, account.id, contact.id, now);
    accountId = account.id;
  }
  await recordDomainEvent(db, fact(row, contact, accountId), now, listened);
}

/**
 * Create the accounts that inbox items name, in autocommit statements before their batch
 * transaction (idempotent: an account is a group id and empty traits until a `group` call
 * fills them; the batch patches traits under its own locks).
 */
export async function ensureProductAccounts(db: Queryable, ids: string[], now: Date): Promise<void> {
  const rows = await db<{ group_id: string }[]>`
    select distinct group_id from product_events where id = any(${ids}::bigint[]) and group_id is not null`;
  if (rows.length === 0) return;
  const groupIds = rows.map((r) => r.group_id);
  const known = await db<{ group_id: string }[]>`select group_id from accounts where group_id = any(${groupIds}::text[])`;
  if (known.length < groupIds.length) await ensureAccounts(db, groupIds, now);
}

/** The identity keys a batch locks first (see lockIdentities). */
export async function productIdentityKeys(db: Queryable, rows: ProductEventRow[]): Promise<Set<string>> {
  const keys = new Set<string>();
  const users = new Set<string>();
  const anons = new Set<string>();
  for (const row of rows) {
    if (row.user_id) {
      keys.add(`user:${row.user_id}`);
      users.add(row.user_id);
    }
    if (row.anonymous_id) {
      keys.add(`anon:${row.anonymous_id}`);
      anons.add(row.anonymous_id);
    }
    if (row.kind === 'identify') {
      const { email, stripeCustomerId } = identityTraits(row.traits);
      if (email) keys.add(`email:${email.toLowerCase()}`);
      if (stripeCustomerId) keys.add(`customer:${stripeCustomerId}`);
    }
  }
  // What the contacts already carry (a Stripe batch reaches them by these).
  const stored = await db<{ email: string | null; stripe_customer_id: string | null }[]>`
    select email, stripe_customer_id from contacts where user_id in (select unnest(${[...users]}::text[]))
    union select email, stripe_customer_id from contacts where anonymous_id in (select unnest(${[...anons]}::text[]))`;
  for (const c of stored) {
    if (c.email) keys.add(`email:${c.email.toLowerCase()}`);
    if (c.stripe_customer_id) keys.add(`customer:${c.stripe_customer_id}`);
  }
  return keys;
}

/**
 * A batch of messages (in inbox order) in a few statements. Messages that change who a contact
 * is (a new user, a new anonymous id or email or Stripe customer on a known user) go through
 * upsertContact one at a time, in order; the common case (tracks and trait updates of known
 * contacts) is set-based. All or nothing: the caller runs it in a savepoint and falls back to
 * processProductEvent per message if it throws. The caller has taken the identity locks.
 * `listened`: the fact names some workflow hears (FactListeners.current, taken in this
 * transaction); facts of other names are recorded as consumed by the engine.
 */
export async function processProductBatch(db: Queryable, rows: ProductEventRow[], now: Date, listened?: ListenedNames): Promise<void> {
  if (rows.length === 0) return;
  // 1. Accounts: create the missing ones (sorted), then `group` traits (sorted, per trait latest).
  const accounts = await ensureAccounts(db, rows.flatMap((r) => (r.group_id ? [r.group_id] : [])), now);
  const groupPatches = new Map<string, { groupId: string; traits: Record<string, unknown>; times: Record<string, string> }>();
  for (const row of rows) {
    if (row.kind !== 'group' || !row.group_id || !row.traits) continue;
    const p = groupPatches.get(row.group_id) ?? { groupId: row.group_id, traits: {}, times: {} };
    mergePatch(p, row.traits, row.timestamp);
    groupPatches.set(row.group_id, p);
  }
  await patchAccounts(db, [...groupPatches.values()], now);

  // 2. Contacts as they are now.
  let byUser = new Map<string, ContactRow>();
  let byAnon = new Map<string, ContactRow>();
  let unidentifiedAnons = new Set<string>();
  let stale = true;
  const greater = (a: readonly number[], b: readonly number[]) => a[0]! > b[0]! || (a[0] === b[0] && (a[1]! > b[1]! || (a[1] === b[1] && a[2]! > b[2]!)));
  const refresh = async () => {
    const users = [...new Set(rows.flatMap((r) => (r.user_id ? [r.user_id] : [])))];
    const anons = [...new Set(rows.flatMap((r) => (r.anonymous_id ? [r.anonymous_id] : [])))];
    // A semi-join per key, not `user_id = any($1) or anonymous_id = any($2)`: on a contacts
    // table that grew faster than its statistics the OR form is a sequential scan comparing
    // every row with every id of the batch (5–8 ms per batch at 2,000 contacts); this form hashes
    // the batch's ids, or seeks each in its index once the statistics know the table's size.
    const found = await db<ContactRow[]>`
      select id, user_id, anonymous_id, email, stripe_customer_id, updated_at from contacts where user_id in (select unnest(${users}::text[]))
      union select id, user_id, anonymous_id, email, stripe_customer_id, updated_at from contacts where anonymous_id in (select unnest(${anons}::text[]))`;
    byUser = new Map();
    byAnon = new Map();
    unidentifiedAnons = new Set();
    // For an anonymous message: the unidentified visitor, else the latest identified contact of the device.
    const rank = (c: ContactRow) => [c.user_id === null ? 1 : 0, c.updated_at.getTime(), c.id] as const;
    for (const c of found) {
      if (c.user_id) byUser.set(c.user_id, c);
      if (!c.anonymous_id) continue;
      if (c.user_id === null) unidentifiedAnons.add(c.anonymous_id);
      const prev = byAnon.get(c.anonymous_id);
      if (!prev || greater(rank(c), rank(prev))) byAnon.set(c.anonymous_id, c);
    }
    stale = false;
  };

  /** The contact of a message when it changes nothing about who the contact is; else null. */
  const simple = (row: ProductEventRow): ContactRow | null => {
    const { email, stripeCustomerId } = row.kind === 'identify' ? identityTraits(row.traits) : { email: null, stripeCustomerId: null };
    let c: ContactRow | undefined;
    if (row.user_id) {
      c = byUser.get(row.user_id);
      if (!c) return null;
      const a = row.anonymous_id;
      if (a !== null && a !== c.anonymous_id && (c.anonymous_id === null || unidentifiedAnons.has(a))) return null;
    } else if (row.anonymous_id) {
      c = byAnon.get(row.anonymous_id);
      if (!c) return null;
    }
    if (!c) return null;
    if (email && email.toLowerCase() !== (c.email ?? '').toLowerCase()) return null;
    if (stripeCustomerId && stripeCustomerId !== c.stripe_customer_id) return null;
    return c;
  };

  const contactPatches = new Map<number, { id: number; traits: Record<string, unknown>; times: Record<string, string> }>();
  const members: { accountId: number; contactId: number }[] = [];
  const facts: DomainEventInput[] = [];
  const flush = async () => {
    await patchContacts(db, [...contactPatches.values()], now);
    await addAccountMembers(db, members, now);
    await recordDomainEvents(db, facts, now, listened);
    contactPatches.clear();
    members.length = 0;
    facts.length = 0;
  };

  // New users whose first message here changes nothing else about identity (no anonymous id to
  // adopt, no email or Stripe customer to link): created together, as upsertContact would
  // create each one, instead of one round of statements per user. Their identity keys are
  // locked, so no one else creates them meanwhile.
  await refresh();
  const firstOfUser = new Map<string, ProductEventRow>();
  for (const row of rows) if (row.user_id && !firstOfUser.has(row.user_id)) firstOfUser.set(row.user_id, row);
  const newUsers = [...firstOfUser.values()]
    .filter((row) => {
      if (byUser.has(row.user_id!) || row.anonymous_id !== null) return false;
      const { email, stripeCustomerId } = row.kind === 'identify' ? identityTraits(row.traits) : { email: null, stripeCustomerId: null };
      return email === null && stripeCustomerId === null;
    })
    .map((row) => row.user_id!);
  if (newUsers.length > 0) {
    await createBareContacts(db, newUsers, now);
    stale = true;
  }

  for (const row of rows) {
    if (stale) await refresh();
    const accountId = row.group_id ? (accounts.get(row.group_id) ?? null) : null;
    let contact: { id: number; stripe_customer_id: string | null } | null = simple(row);
    if (contact) {
      if (row.kind === 'identify' && row.traits && Object.keys(row.traits).length > 0) {
        const p = contactPatches.get(contact.id) ?? { id: contact.id, traits: {}, times: {} };
        mergePatch(p, row.traits, row.timestamp);
        contactPatches.set(contact.id, p);
      }
      if (accountId !== null) members.push({ accountId, contactId: contact.id });
      facts.push(fact(row, contact, accountId));
      continue;
    }
    // Identity changes (create, adopt, merge, link) one at a time, after what came before.
    await flush();
    const c = await upsertContact(db, { userId: row.user_id, anonymousId: row.anonymous_id }, row.kind === 'identify' ? (row.traits ?? {}) : {}, now, row.timestamp);
    contact = c;
    if (accountId !== null) await addAccountMember(db, accountId, c.id, now);
    await recordDomainEvent(db, fact(row, c, accountId), now, listened);
    stale = true;
  }
  await flush();
}

/** Fold one message's traits into a patch: per key, the value of the latest message wins (ties: the later one). */
function mergePatch(p: { traits: Record<string, unknown>; times: Record<string, string> }, traits: Record<string, unknown>, at: Date): void {
  const times = traitTimes(traits, at);
  for (const [key, value] of Object.entries(traits)) {
    const prev = p.times[key];
    if (prev === undefined || Date.parse(prev) <= at.getTime()) {
      p.traits[key] = value;
      p.times[key] = times[key]!;
    }
  }
}
