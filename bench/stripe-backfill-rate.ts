// Backfill rate against the local fake Stripe API (real SDK over HTTP, real Postgres projection):
// objects/s without a rate limit and with the fake limiting requests per second like Stripe
// (25 req/s in test mode, 100 in live mode). Needs DATABASE_URL (an admin URL: a scratch
// database is created and dropped).
//   DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres ./node_modules/.bin/node bench/stripe-backfill-rate.ts [customers=2000] [limit=25]
import { systemClock } from '../src/clock.ts';
import { createSql } from '../src/db/connection.ts';
import { runBackfill } from '../src/stripe/backfill.ts';
import { FakeStripeApi, fakeCustomer } from '../test/helpers/fake-stripe-api.ts';
import { createTestDatabase } from '../test/helpers/database.ts';
import { invoice, subscription } from '../test/helpers/stripe.ts';

const customers = Number(process.argv[2] ?? 2000);
const limits = (process.argv[3] ?? '25').split(',').map(Number);

async function once(rateLimit: number | undefined): Promise<void> {
  const fake = await FakeStripeApi.start();
  const db = await createTestDatabase();
  const sql = createSql(db.url, { max: 4 });
  try {
    const now = Math.floor(Date.now() / 1000);
    const cs = Array.from({ length: customers }, (_, i) => fakeCustomer({ id: `cus_${i}`, email: `c${i}@example.test`, created: now - 1_000_000 + i }));
    fake.add('/v1/customers', cs);
    fake.add('/v1/subscriptions', cs.map((c, i) => ({ ...subscription({ id: `sub_${i}`, customer: c.id as string, status: i % 10 === 0 ? 'past_due' : 'active' }), created: now - 900_000 + i })));
    fake.add('/v1/invoices', cs.filter((_, i) => i % 10 === 0).map((c, k) => invoice({ id: `in_${k}`, customer: c.id as string, subscription: `sub_${k * 10}`, attempt_count: 1, created: now - 80_000 + k })));
    fake.rateLimit(rateLimit);
    const summary = await runBackfill({ sql, stripe: fake.client({ maxNetworkRetries: 10 }), clock: systemClock }, {});
    const seconds = summary.elapsedMs / 1000;
    console.log(
      `${rateLimit ? `rate limit ${rateLimit} req/s` : 'no rate limit'}: ${summary.total} objects in ${seconds.toFixed(2)} s = ${(summary.total / seconds).toFixed(0)} objects/s; ` +
        `${fake.requests.length} requests, ${fake.faultsServed.rateLimited} answered 429, ${summary.retried} retried`,
    );
  } finally {
    await sql.end();
    await fake.close();
    await db.drop();
  }
}

await once(undefined);
for (const limit of limits) await once(limit);
