// A Stripe customer's MRR as the product counts it: the sum of its live subscriptions (active,
// trialing, past due, unpaid) per currency, in minor units. Currencies are never added together.
import type { Queryable } from '../db/connection.ts';

/** MRR per currency (minor units) of each given customer; a customer without live subscriptions maps to {}. */
export async function liveMrrByCustomer(db: Queryable, customerIds: readonly string[]): Promise<Map<string, Record<string, number>>> {
  const ids = [...new Set(customerIds)];
  const byCustomer = new Map<string, Record<string, number>>(ids.map((id) => [id, {}]));
  if (ids.length === 0) return byCustomer;
  const rows = await db<{ customer_id: string; currency: string; mrr: string }[]>`
    select customer_id, currency, sum(mrr_minor)::text as mrr from subscriptions
    where customer_id = any(${ids}::text[]) and status in ('active', 'trialing', 'past_due', 'unpaid')
    group by customer_id, currency order by customer_id, currency`;
  for (const row of rows) byCustomer.get(row.customer_id)![row.currency] = Number(row.mrr);
  return byCustomer;
}
