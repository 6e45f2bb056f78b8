// Turns a stored Segment message into contacts, accounts and a timeline fact.
import type { Queryable } from '../db/connection.ts';
import { addAccountMember, upsertAccount, upsertContact } from '../contacts/contact-store.ts';
import { recordDomainEvent } from '../timeline/domain-event-store.ts';

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

export async function processProductEvent(db: Queryable, row: ProductEventRow, now: Date): Promise<void> {
  const identity = { userId: row.user_id, anonymousId: row.anonymous_id };
  const contact = await upsertContact(db, identity, row.kind === 'identify' ? (row.traits ?? {}) : {}, now);
  let accountId: number | null = null;
  if (row.group_id) {
    const account = await upsertAccount(db, row.group_id, row.kind === 'group' ? (row.traits ?? {}) : {}, now);
    await addAccountMember(db, account.id, contact.id, now);
    accountId = account.id;
  }
  const name = row.kind === 'track' ? row.event! : row.kind;
  const properties =
    row.kind === 'track'
      ? (row.properties ?? {})
      : { ...(row.kind === 'group' ? { groupId: row.group_id } : {}), traits: row.traits ?? {} };
  await recordDomainEvent(
    db,
    {
      name,
      source: 'product',
      sourceId: row.message_id,
      dedupeKey: `product:${row.message_id}`,
      contactId: contact.id,
      accountId,
      stripeCustomerId: contact.stripe_customer_id,
      subjectId: null,
      properties,
      occurredAt: row.timestamp,
    },
    now,
  );
}
