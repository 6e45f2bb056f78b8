// The HMAC secret for outgoing webhook signatures and email tokens (unsubscribe, click links).
// LIFELINE_SECRET wins; without it, one is generated on first start and kept in the database,
// so every instance signs alike and links in sent emails keep working across restarts.
import { randomBytes } from 'node:crypto';
import type { Sql } from '../db/connection.ts';

export async function loadSigningSecret(sql: Sql, configured: string | undefined, now: Date): Promise<string> {
  if (configured) return configured;
  await sql`
    insert into settings (key, value, created_at) values ('signing_secret', ${randomBytes(32).toString('base64url')}, ${now})
    on conflict (key) do nothing`;
  const [row] = await sql<{ value: string }[]>`select value from settings where key = 'signing_secret'`;
  return row!.value;
}
