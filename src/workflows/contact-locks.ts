// Per-contact serialization for the engine. Every transaction that starts or advances runs takes
// the advisory lock of each contact whose runs it may touch, all of them up front and in
// ascending order, and touches only those contacts' runs. So:
// - two transactions never decide for the same contact at once: the second reads the policy
//   inputs (the frequency cap's last send, open recovery, what the first one queued) after the
//   first committed — two runs of one contact cannot both slip under the cap;
// - they cannot deadlock on each other: every transaction waits only for locks greater than the
//   ones it holds.
// The two-integer form of the advisory lock is a key space of its own (the inbox's one-key
// `hashtext('customer:…')` locks can never collide with these).
import type { Queryable } from '../db/connection.ts';

const ENGINE_CONTACT_LOCKS = 0x11fe13;
const KEY_MOD = 2147483647;

export async function lockContacts(db: Queryable, contactIds: Iterable<number | string>): Promise<void> {
  const ids = [...new Set([...contactIds].map(Number))];
  if (ids.length === 0) return;
  // The ordered subquery fixes the order in which the locks are taken.
  await db`
    select count(pg_advisory_xact_lock(${ENGINE_CONTACT_LOCKS}::int, k))
    from (select distinct (id % ${KEY_MOD})::int as k from unnest(${ids}::bigint[]) as id order by 1) as keys`;
}
