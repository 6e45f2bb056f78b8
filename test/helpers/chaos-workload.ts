// A dunning workload for the outage and crash suites, delivered over real HTTP in phases:
//   1. every customer identifies (product) and subscribes (Stripe)
//   2. most invoices fail (attempt 1); accounts report usage (group)
//   3. recoveries: paid, a second failure, a card update, a cancellation, or nothing; product events
//   4. after a card update the invoice is paid; second failures are paid or written off
// Within a phase each customer has at most one Stripe event, so arrival order inside a phase does
// not change the outcome; between phases the suite waits until everything delivered is processed
// (settled()), as a real timeline spreads these events over days. A seeded generator (mulberry32)
// makes every run of a seed the same workload.
import { setTimeout as sleep } from 'node:timers/promises';
import type { Sql } from '../../src/db/connection.ts';
import { invoice, subscription, envelope } from './stripe.ts';
import { postProduct, postStripe } from './service-process.ts';

export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export type Delivery =
  | { kind: 'stripe'; id: string; event: object }
  | { kind: 'product'; id: string; path: string; body: object };

export interface Workload {
  customers: number;
  phases: Delivery[][];
  /** deliveries in all phases */
  total: number;
}

const emailOf = (c: number) => `chaos${c}@example.test`;

export function chaosWorkload(customers: number, seed: number, startSec: number): Workload {
  const random = prng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!;
  const phases: Delivery[][] = [[], [], [], []];
  let t = startSec;
  const at = () => (t += 1);
  const iso = (s: number) => new Date(s * 1000).toISOString();
  const stripe = (phase: number, c: number, type: string, object: Record<string, unknown>, extra: { previous?: Record<string, unknown> } = {}) => {
    const id = `evt_chaos_${seed}_${c}_${phases[phase]!.length}_${phase}`;
    phases[phase]!.push({ kind: 'stripe', id, event: envelope(type, object, { id, created: at(), ...extra }) });
  };
  const product = (phase: number, c: number, path: string, body: object) => {
    const id = `msg_chaos_${seed}_${c}_${phase}_${phases[phase]!.length}`;
    phases[phase]!.push({ kind: 'product', id, path, body: { ...body, userId: `cu_${c}`, messageId: id, timestamp: iso(at()) } });
  };
  for (let c = 0; c < customers; c++) {
    const cus = `cus_chaos_${c}`;
    const sub = `sub_chaos_${c}`;
    const inv = `in_chaos_${c}`;
    const amount = pick([4900, 9900, 2500]);
    const subObject = (status: string, extra: object = {}) => ({ ...subscription({ id: sub, customer: cus, status, unit_amount: amount }), ...extra });
    const invoiceObject = (status: string, attempts: number) => ({
      ...invoice({
        id: inv, customer: cus, customer_email: emailOf(c), subscription: sub, status, amount_due: amount, attempt_count: attempts,
        next_payment_attempt: status === 'open' ? t + 3 * 86_400 : null, paid_at: status === 'paid' ? t : null, created: startSec - 3_600,
      }),
      customer_name: `Chaos ${c}`,
    });
    product(0, c, '/v1/identify', { traits: { email: emailOf(c), stripeCustomerId: cus, plan: pick(['starter', 'team', 'business']) } });
    stripe(0, c, 'customer.subscription.created', subObject('active'));
    if (random() < 0.75) {
      stripe(1, c, 'invoice.payment_failed', invoiceObject('open', 1));
      product(1, c, '/v1/group', { groupId: `acct_chaos_${c}`, traits: { name: `Account ${c}`, stripeCustomerId: cus, usage_pct: pick([40, 75, 92]) } });
      const outcome = random();
      if (outcome < 0.35) {
        stripe(2, c, 'invoice.paid', invoiceObject('paid', 2));
      } else if (outcome < 0.55) {
        stripe(2, c, 'invoice.payment_failed', invoiceObject('open', 2));
        if (random() < 0.5) stripe(3, c, 'invoice.paid', invoiceObject('paid', 3));
        else stripe(3, c, 'invoice.marked_uncollectible', invoiceObject('uncollectible', 2));
      } else if (outcome < 0.7) {
        const pm = `pm_chaos_${c}`;
        stripe(2, c, 'customer.updated', { id: cus, object: 'customer', email: emailOf(c), name: `Chaos ${c}`, livemode: false, metadata: {}, invoice_settings: { default_payment_method: pm, custom_fields: null, footer: null } }, { previous: { invoice_settings: { default_payment_method: null } } });
        stripe(3, c, 'invoice.paid', invoiceObject('paid', 2));
      } else if (outcome < 0.85) {
        const involuntary = random() < 0.5;
        stripe(2, c, 'customer.subscription.deleted', subObject('canceled', {
          canceled_at: t, ended_at: t,
          cancellation_details: { reason: involuntary ? 'payment_failed' : 'cancellation_requested', feedback: involuntary ? null : pick(['too_expensive', 'unused', 'missing_features']), comment: null },
        }));
      }
    }
    for (let k = Math.floor(random() * 3); k > 0; k--) product(2, c, '/v1/track', { event: pick(['Project Created', 'Teammate Invited', 'Paywall Hit']), properties: { k } });
  }
  // Shuffle inside each phase: arrival order across customers is not the true order.
  for (const phase of phases) {
    for (let i = phase.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [phase[i], phase[j]] = [phase[j]!, phase[i]!];
    }
  }
  return { customers, phases, total: phases.reduce((n, p) => n + p.length, 0) };
}

export interface DeliveryStats {
  /** deliveries acknowledged with 2xx (each at least once) */
  acknowledged: Set<string>;
  /** requests made, including retries after an error, 503 or a lost connection */
  requests: number;
  /** answers that were not 2xx (by status; 0 = no answer) */
  refused: Map<number, number>;
  /** 2xx answers with a status other than 200 */
  unexpected: string[];
  /** deliveries sent again on purpose after their acknowledgement (redelivery, as Stripe does) */
  duplicates: number;
}

export function newStats(): DeliveryStats {
  return { acknowledged: new Set(), requests: 0, refused: new Map(), unexpected: [], duplicates: 0 };
}

/**
 * Delivers one phase with `concurrency` senders; each delivery is retried (with a short pause)
 * until it is acknowledged, like Stripe or an analytics SDK. `duplicateRate` re-delivers that
 * share of acknowledged deliveries once more.
 */
export async function deliverPhase(
  baseUrl: () => string,
  phase: readonly Delivery[],
  stats: DeliveryStats,
  options: { concurrency?: number; duplicateRate?: number; random?: () => number; deadlineMs?: number; gapMs?: number } = {},
): Promise<void> {
  const queue = [...phase];
  const random = options.random ?? Math.random;
  const deadline = Date.now() + (options.deadlineMs ?? 300_000);
  const send = async (d: Delivery): Promise<void> => {
    for (;;) {
      if (Date.now() > deadline) throw new Error(`delivery ${d.id} not acknowledged before the deadline`);
      stats.requests++;
      let status = 0;
      try {
        const res = d.kind === 'stripe' ? await postStripe(baseUrl(), d.event) : await postProduct(baseUrl(), d.path, d.body);
        status = res.status;
        const text = await res.text();
        if (status >= 200 && status < 300) {
          if (status !== 200 || (d.kind === 'product' && text.includes('"rejected":[{'))) stats.unexpected.push(`${d.id}: ${status} ${text}`);
          stats.acknowledged.add(d.id);
          return;
        }
        if (status >= 400 && status < 500) throw new Error(`${d.id}: ${status} ${text}`);
      } catch (err) {
        if (status >= 400 && status < 500) throw err;
        // no answer (the process died mid-request, or is restarting): retry
      }
      stats.refused.set(status, (stats.refused.get(status) ?? 0) + 1);
      await sleep(50 + Math.floor(random() * 100));
    }
  };
  const worker = async () => {
    for (let d = queue.shift(); d; d = queue.shift()) {
      // gapMs: pace the deliveries (a test that needs them to be still arriving at some moment)
      if (options.gapMs) await sleep(options.gapMs);
      await send(d);
      if (options.duplicateRate && random() < options.duplicateRate) {
        stats.duplicates++;
        await send(d);
      }
    }
  };
  await Promise.all(Array.from({ length: options.concurrency ?? 8 }, worker));
}

/** Everything delivered is processed: inboxes empty, facts fed to the engine, no due run or email. */
export async function settled(sql: Sql): Promise<{ done: boolean; detail: Record<string, number> }> {
  const [row] = await sql<{ stripe: number; product: number; facts: number; runs: number; emails: number }[]>`
    select
      (select count(*)::int from stripe_events where processed_at is null and dead_at is null) as stripe,
      (select count(*)::int from product_events where processed_at is null and dead_at is null) as product,
      (select count(*)::int from domain_events where engine_processed_at is null) as facts,
      (select count(*)::int from workflow_runs where status = 'active' and due_at <= now()) as runs,
      (select count(*)::int from messages where status in ('queued', 'sending') and coalesce(next_attempt_at, created_at) <= now() + interval '5 minutes') as emails`;
  const detail = { ...row! };
  return { done: Object.values(detail).every((n) => n === 0), detail };
}

/** Waits until settled(); returns how long it took (ms). */
export async function waitSettled(sql: Sql, timeoutMs: number, onSlow?: (detail: Record<string, number>) => void): Promise<number> {
  const started = Date.now();
  const deadline = started + timeoutMs;
  let last: Record<string, number> = {};
  let reported = started;
  while (Date.now() < deadline) {
    try {
      const s = await settled(sql);
      if (s.done) return Date.now() - started;
      if (onSlow && Date.now() - reported > 10_000) {
        reported = Date.now();
        onSlow(s.detail);
      }
      last = s.detail;
    } catch {
      // the database may be restarting
    }
    await sleep(250);
  }
  throw new Error(`not settled within ${timeoutMs} ms: ${JSON.stringify(last)}`);
}

const CONTACT = `coalesce(c.user_id, 'email:' || c.email, 'cus:' || c.stripe_customer_id, 'contact?')`;

/** What must be the same after a clean run and a run with kills or outages. */
export async function outcome(sql: Sql) {
  const invoices = await sql`select id, status, amount_due, amount_paid, attempt_count from invoices order by id`;
  const subscriptions = await sql`select id, status, cancellation_reason from subscriptions order by id`;
  const runs = await sql.unsafe(`
    select r.workflow_key as workflow, ${CONTACT} as contact, r.status, count(*)::int as n
    from workflow_runs r join contacts c on c.id = r.contact_id group by 1, 2, 3 order by 1, 2, 3`);
  const emails = await sql`
    select to_email as "to", template, status, count(*)::int as n from messages group by 1, 2, 3 order by 1, 2, 3`;
  const facts = await sql`select name, count(*)::int as n from domain_events group by 1 order by 1`;
  const plain = (rows: readonly object[]) => rows.map((r) => ({ ...r }));
  return { invoices: plain(invoices), subscriptions: plain(subscriptions), runs: plain(runs), emails: plain(emails), facts: plain(facts) };
}
