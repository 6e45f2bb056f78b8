// A global rate limit shared by every worker instance: each request reserves the next free
// slot in one atomic UPDATE (rate_limits.next_slot_at), then waits for it. Ten requests a second
// cost ten tiny updates; no coordinator, no drift between instances.
import type { Queryable } from '../db/connection.ts';

/** Reserves a slot; returns when (ms epoch) the caller may send. */
export async function reserveSlot(db: Queryable, name: string, intervalMs: number, now: Date): Promise<number> {
  const interval = `${intervalMs} milliseconds`;
  const [row] = await db<{ slot: Date }[]>`
    insert into rate_limits (name, next_slot_at) values (${name}, ${now}::timestamptz + ${interval}::interval)
    on conflict (name) do update set next_slot_at = greatest(rate_limits.next_slot_at, ${now}::timestamptz) + ${interval}::interval
    returning next_slot_at - ${interval}::interval as slot`;
  return row!.slot.getTime();
}
