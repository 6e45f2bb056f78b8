// The database schema, in one place. drizzle-kit generates the SQL migrations in migrations/
// from this file (`npm run db:generate`); runtime queries are plain SQL kept by domain
// (src/**/…-store.ts) because the hot paths are measurably faster without a query builder.
import { sql } from 'drizzle-orm';
import {
  bigint,
  bigserial,
  boolean,
  index,
  integer,
  jsonb,
  pgTable,
  primaryKey,
  smallint,
  text,
  timestamp,
  uniqueIndex,
} from 'drizzle-orm/pg-core';

const tstz = (name: string) => timestamp(name, { withTimezone: true, mode: 'date' });
const minor = (name: string) => bigint(name, { mode: 'number' });

// ---------------------------------------------------------------------------------------------
// Inboxes: what senders gave us, stored verbatim before we acknowledge. The row itself is the
// work item: a consumer claims unprocessed rows in batches (FOR UPDATE SKIP LOCKED), so the
// HTTP path stays at one INSERT.

export const stripeEvents = pgTable(
  'stripe_events',
  {
    id: text('id').primaryKey(),
    type: text('type').notNull(),
    apiVersion: text('api_version'),
    created: tstz('created').notNull(),
    livemode: boolean('livemode').notNull(),
    requestId: text('request_id'),
    idempotencyKey: text('idempotency_key'),
    objectId: text('object_id'),
    payload: jsonb('payload').notNull(),
    receivedAt: tstz('received_at').notNull().default(sql`now()`),
    deliveries: integer('deliveries').notNull().default(1),
    processedAt: tstz('processed_at'),
    attempts: integer('attempts').notNull().default(0),
    retryAt: tstz('retry_at'),
    lastError: text('last_error'),
    // Work queue (migration 0005): partition by Stripe customer, computed at insert; dead letter.
    // Written by storeStripeEvent from the parsed event (generated columns until migration 0016).
    customerId: text('customer_id'),
    lane: smallint('lane').notNull(),
    deadAt: tstz('dead_at'),
  },
  (t) => [
    index('stripe_events_due_idx').on(t.lane, t.created, t.id).where(sql`processed_at is null and dead_at is null`),
    index('stripe_events_dead_idx').on(t.deadAt).where(sql`dead_at is not null`),
    index('stripe_events_object_idx').on(t.objectId, t.created),
  ],
);

export const productEvents = pgTable(
  'product_events',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    messageId: text('message_id').notNull(),
    kind: text('kind').notNull(), // track | identify | group
    userId: text('user_id'),
    anonymousId: text('anonymous_id'),
    groupId: text('group_id'),
    event: text('event'),
    properties: jsonb('properties'),
    traits: jsonb('traits'),
    context: jsonb('context'),
    timestamp: tstz('timestamp').notNull(),
    receivedAt: tstz('received_at').notNull().default(sql`now()`),
    processedAt: tstz('processed_at'),
    attempts: integer('attempts').notNull().default(0),
    retryAt: tstz('retry_at'),
    lastError: text('last_error'),
    // Work queue (migration 0005): partition by user (else anonymous id), computed at insert.
    lane: smallint('lane').generatedAlwaysAs(sql`hashtext(coalesce(user_id, anonymous_id, message_id)) & 31`),
    deadAt: tstz('dead_at'),
  },
  (t) => [
    uniqueIndex('product_events_message_id_key').on(t.messageId),
    index('product_events_due_idx').on(t.lane, t.id).where(sql`processed_at is null and dead_at is null`),
    index('product_events_dead_idx').on(t.deadAt).where(sql`dead_at is not null`),
  ],
);

/** Work queue partitions (src/work/work-queue.ts): one lease row per (queue, partition). */
export const workPartitions = pgTable(
  'work_partitions',
  {
    queue: text('queue').notNull(),
    partition: integer('partition').notNull(),
    token: bigint('token', { mode: 'number' }).notNull().default(0),
    leaseUntil: tstz('lease_until'),
    claimed: text('claimed').array(),
    servedAt: tstz('served_at'),
  },
  (t) => [primaryKey({ name: 'work_partitions_pk', columns: [t.queue, t.partition] })],
);

// ---------------------------------------------------------------------------------------------
// People: contacts (users) and accounts (companies, Segment groups).

export const contacts = pgTable(
  'contacts',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    userId: text('user_id'),
    anonymousId: text('anonymous_id'),
    email: text('email'),
    stripeCustomerId: text('stripe_customer_id'),
    traits: jsonb('traits').notNull().default(sql`'{}'::jsonb`),
    /** per trait, when the message that set it happened (an older message never overwrites it) */
    traitTimes: jsonb('trait_times').notNull().default(sql`'{}'::jsonb`),
    /**
     * per trait a Stripe event set (email, name), that event's time: the newest Stripe value
     * wins; a trait in trait_times (a product message set it) always wins over Stripe's
     */
    stripeTraitTimes: jsonb('stripe_trait_times').notNull().default(sql`'{}'::jsonb`),
    createdAt: tstz('created_at').notNull(),
    updatedAt: tstz('updated_at').notNull(),
  },
  (t) => [
    uniqueIndex('contacts_user_id_key').on(t.userId),
    uniqueIndex('contacts_anonymous_id_key').on(t.anonymousId).where(sql`user_id is null`),
    index('contacts_email_idx').on(sql`lower(${t.email})`),
    index('contacts_stripe_customer_idx').on(t.stripeCustomerId),
  ],
);

export const accounts = pgTable(
  'accounts',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    groupId: text('group_id').notNull(),
    stripeCustomerId: text('stripe_customer_id'),
    traits: jsonb('traits').notNull().default(sql`'{}'::jsonb`),
    traitTimes: jsonb('trait_times').notNull().default(sql`'{}'::jsonb`),
    createdAt: tstz('created_at').notNull(),
    updatedAt: tstz('updated_at').notNull(),
  },
  (t) => [
    uniqueIndex('accounts_group_id_key').on(t.groupId),
    index('accounts_stripe_customer_idx').on(t.stripeCustomerId),
  ],
);

export const accountMembers = pgTable(
  'account_members',
  {
    accountId: bigint('account_id', { mode: 'number' })
      .notNull()
      .references(() => accounts.id, { onDelete: 'cascade' }),
    contactId: bigint('contact_id', { mode: 'number' })
      .notNull()
      .references(() => contacts.id, { onDelete: 'cascade' }),
    joinedAt: tstz('joined_at').notNull(),
  },
  (t) => [primaryKey({ columns: [t.accountId, t.contactId] }), index('account_members_contact_idx').on(t.contactId)],
);

// ---------------------------------------------------------------------------------------------
// Billing state projected from Stripe. Each row remembers the ordering key of the snapshot it
// holds (version_*), so an older or duplicate delivery can never overwrite a newer one.

export const customers = pgTable(
  'customers',
  {
    id: text('id').primaryKey(),
    email: text('email'),
    name: text('name'),
    deleted: boolean('deleted').notNull().default(false),
    livemode: boolean('livemode').notNull().default(false),
    defaultPaymentMethod: text('default_payment_method'),
    metadata: jsonb('metadata').notNull().default(sql`'{}'::jsonb`),
    contactId: bigint('contact_id', { mode: 'number' }).references(() => contacts.id, { onDelete: 'set null' }),
    versionCreated: tstz('version_created').notNull(),
    versionEventId: text('version_event_id').notNull(),
    updatedAt: tstz('updated_at').notNull(),
  },
  (t) => [index('customers_email_idx').on(sql`lower(${t.email})`), index('customers_contact_idx').on(t.contactId)],
);

export const subscriptions = pgTable(
  'subscriptions',
  {
    id: text('id').primaryKey(),
    customerId: text('customer_id').notNull(),
    status: text('status').notNull(),
    currency: text('currency').notNull(),
    mrrMinor: minor('mrr_minor').notNull(),
    items: jsonb('items').notNull(),
    trialStart: tstz('trial_start'),
    trialEnd: tstz('trial_end'),
    currentPeriodEnd: tstz('current_period_end'),
    cancelAtPeriodEnd: boolean('cancel_at_period_end').notNull().default(false),
    cancelAt: tstz('cancel_at'),
    canceledAt: tstz('canceled_at'),
    endedAt: tstz('ended_at'),
    cancellationReason: text('cancellation_reason'),
    cancellationFeedback: text('cancellation_feedback'),
    cancellationComment: text('cancellation_comment'),
    stripeCreated: tstz('stripe_created'),
    versionRank: integer('version_rank').notNull(),
    versionCreated: tstz('version_created').notNull(),
    versionEventId: text('version_event_id').notNull(),
    updatedAt: tstz('updated_at').notNull(),
  },
  (t) => [index('subscriptions_customer_idx').on(t.customerId)],
);

/**
 * Every subscription snapshot by event time (amounts only): subscription.mrr_changed compares a
 * snapshot with the one before it in event time, whatever order they arrived in.
 */
export const subscriptionVersions = pgTable(
  'subscription_versions',
  {
    subscriptionId: text('subscription_id').notNull(),
    versionCreated: tstz('version_created').notNull(),
    versionEventId: text('version_event_id').notNull(),
    eventType: text('event_type').notNull(),
    customerId: text('customer_id').notNull(),
    status: text('status').notNull(),
    currency: text('currency').notNull(),
    mrrMinor: minor('mrr_minor').notNull(),
  },
  (t) => [primaryKey({ name: 'subscription_versions_pkey', columns: [t.subscriptionId, t.versionCreated, t.versionEventId] })],
);

export const invoices = pgTable(
  'invoices',
  {
    id: text('id').primaryKey(),
    customerId: text('customer_id').notNull(),
    subscriptionId: text('subscription_id'),
    status: text('status').notNull(),
    currency: text('currency').notNull(),
    amountDue: minor('amount_due').notNull(),
    amountPaid: minor('amount_paid').notNull(),
    amountRemaining: minor('amount_remaining').notNull(),
    attemptCount: integer('attempt_count').notNull().default(0),
    nextPaymentAttempt: tstz('next_payment_attempt'),
    hostedInvoiceUrl: text('hosted_invoice_url'),
    billingReason: text('billing_reason'),
    paidAt: tstz('paid_at'),
    stripeCreated: tstz('stripe_created'),
    livemode: boolean('livemode').notNull().default(false),
    versionRank: integer('version_rank').notNull(),
    versionCreated: tstz('version_created').notNull(),
    versionAttempt: integer('version_attempt').notNull(),
    versionEventId: text('version_event_id').notNull(),
    updatedAt: tstz('updated_at').notNull(),
  },
  (t) => [index('invoices_customer_idx').on(t.customerId), index('invoices_subscription_idx').on(t.subscriptionId)],
);

export const paymentFailures = pgTable(
  'payment_failures',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    stripeEventId: text('stripe_event_id').notNull(),
    customerId: text('customer_id'),
    invoiceId: text('invoice_id'),
    paymentIntentId: text('payment_intent_id'),
    chargeId: text('charge_id'),
    amount: minor('amount'),
    currency: text('currency'),
    failureCode: text('failure_code'),
    declineCode: text('decline_code'),
    adviceCode: text('advice_code'),
    declineClass: text('decline_class').notNull(), // hard | soft | sca | unknown
    message: text('message'),
    occurredAt: tstz('occurred_at').notNull(),
  },
  (t) => [
    uniqueIndex('payment_failures_event_key').on(t.stripeEventId),
    index('payment_failures_invoice_idx').on(t.invoiceId),
    index('payment_failures_customer_idx').on(t.customerId, t.occurredAt),
  ],
);

// ---------------------------------------------------------------------------------------------
// The timeline the workflow engine consumes: every processed fact, Stripe-derived or product.

export const domainEvents = pgTable(
  'domain_events',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    name: text('name').notNull(),
    source: text('source').notNull(), // stripe | product
    sourceId: text('source_id').notNull(),
    dedupeKey: text('dedupe_key').notNull(),
    contactId: bigint('contact_id', { mode: 'number' }),
    accountId: bigint('account_id', { mode: 'number' }),
    stripeCustomerId: text('stripe_customer_id'),
    subjectId: text('subject_id'), // the invoice / subscription / payment method it is about
    properties: jsonb('properties').notNull(),
    occurredAt: tstz('occurred_at').notNull(),
    recordedAt: tstz('recorded_at').notNull(),
    /** set once the workflow engine has fed this fact to triggers and waiting runs */
    engineProcessedAt: tstz('engine_processed_at'),
    /** the engine could not apply this fact (dead letter; replay clears it) */
    engineError: text('engine_error'),
    engineDeadAt: tstz('engine_dead_at'),
    /** the engine feed's work-queue bookkeeping (migration 0012): lane by contact, attempts, backoff */
    engineLane: smallint('engine_lane').generatedAlwaysAs(sql`(hashtext(coalesce(contact_id, 0)::text) & 7)`),
    engineAttempts: integer('engine_attempts').notNull().default(0),
    engineRetryAt: tstz('engine_retry_at'),
    /** recorded as consumed because no workflow hears it (migration 0017, workflows/fact-listeners.ts) */
    engineSkipped: boolean('engine_skipped').notNull().default(false),
  },
  (t) => [
    uniqueIndex('domain_events_dedupe_key').on(t.dedupeKey),
    index('domain_events_engine_due_idx').on(t.engineLane, t.id).where(sql`engine_processed_at is null and engine_dead_at is null`),
    index('domain_events_engine_dead_idx').on(t.engineDeadAt).where(sql`engine_dead_at is not null`),
    index('domain_events_contact_idx').on(t.contactId, t.name, t.occurredAt),
    index('domain_events_account_idx').on(t.accountId, t.name, t.occurredAt),
    index('domain_events_customer_idx').on(t.stripeCustomerId, t.occurredAt),
  ],
);

// ---------------------------------------------------------------------------------------------
// Settings the service generates itself (e.g. the signing secret when LIFELINE_SECRET is unset).

export const settings = pgTable('settings', {
  key: text('key').primaryKey(),
  value: text('value').notNull(),
  createdAt: tstz('created_at').notNull(),
});

// ---------------------------------------------------------------------------------------------
// Workflows: definitions are data, versioned; runs pin the version they started on.

export const workflows = pgTable('workflows', {
  key: text('key').primaryKey(),
  currentVersion: integer('current_version').notNull(),
  paused: boolean('paused').notNull().default(false),
  builtin: boolean('builtin').notNull().default(false),
  updatedAt: tstz('updated_at').notNull(),
});

export const workflowVersions = pgTable(
  'workflow_versions',
  {
    key: text('key').notNull(),
    version: integer('version').notNull(),
    definition: jsonb('definition').notNull(),
    createdAt: tstz('created_at').notNull(),
  },
  (t) => [primaryKey({ columns: [t.key, t.version] })],
);

export const workflowRuns = pgTable(
  'workflow_runs',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    workflowKey: text('workflow_key').notNull(),
    version: integer('version').notNull(),
    contactId: bigint('contact_id', { mode: 'number' }).notNull(),
    accountId: bigint('account_id', { mode: 'number' }),
    runKey: text('run_key').notNull(),
    status: text('status').notNull(), // active | converted | exited | completed
    state: jsonb('state').notNull(),
    /** when the run next needs a timer fact; null while it only waits for events */
    dueAt: tstz('due_at'),
    /** when the tick last handed the due run to pg-boss (re-handed if it got lost) */
    queuedAt: tstz('queued_at'),
    /** consecutive failed advances; parked (dead_at) after the engine's bound */
    failures: integer('failures').notNull().default(0),
    lastError: text('last_error'),
    deadAt: tstz('dead_at'),
    triggerEventId: bigint('trigger_event_id', { mode: 'number' }),
    holdout: boolean('holdout').notNull().default(false),
    variant: text('variant'),
    startedAt: tstz('started_at').notNull(),
    endedAt: tstz('ended_at'),
    convertedAt: tstz('converted_at'),
    updatedAt: tstz('updated_at').notNull(),
  },
  (t) => [
    uniqueIndex('workflow_runs_entry_key').on(t.workflowKey, t.contactId, t.runKey),
    index('workflow_runs_due_idx').on(t.dueAt).where(sql`status = 'active' and due_at is not null`),
    index('workflow_runs_active_contact_idx').on(t.contactId).where(sql`status = 'active'`),
    index('workflow_runs_workflow_idx').on(t.workflowKey, t.startedAt),
    index('workflow_runs_dead_idx').on(t.deadAt).where(sql`dead_at is not null`),
  ],
);

/** The decision trace: what each step did and why. */
export const runTrace = pgTable(
  'run_trace',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    runId: bigint('run_id', { mode: 'number' }).notNull(),
    at: tstz('at').notNull(),
    stepId: text('step_id'),
    kind: text('kind').notNull(),
    detail: text('detail').notNull(),
    data: jsonb('data'),
  },
  (t) => [index('run_trace_run_idx').on(t.runId, t.id)],
);

/** One row per email a run decided to send, keyed by (run, step[, recipient]): never twice. */
export const messages = pgTable(
  'messages',
  {
    id: text('id').primaryKey(),
    runId: bigint('run_id', { mode: 'number' }),
    stepId: text('step_id'),
    workflowKey: text('workflow_key'),
    contactId: bigint('contact_id', { mode: 'number' }),
    accountId: bigint('account_id', { mode: 'number' }),
    toEmail: text('to_email'),
    template: text('template').notNull(),
    subject: text('subject').notNull(),
    category: text('category').notNull(),
    variant: text('variant'),
    data: jsonb('data').notNull().default(sql`'{}'::jsonb`),
    status: text('status').notNull(), // queued | sending | sent | delivered | bounced | complained | failed | skipped | dead
    statusReason: text('status_reason'),
    providerId: text('provider_id'),
    attempts: integer('attempts').notNull().default(0),
    /** a sender owns the message until then (a crashed sender's claim expires) */
    lockedUntil: tstz('locked_until'),
    /** not before: backoff after a transient provider error */
    nextAttemptAt: tstz('next_attempt_at'),
    /** the persisted batch this message went to the provider in (once set, only that batch sends it) */
    batchId: text('batch_id'),
    /** which claim holds the message before it is in a batch (fencing: an expired claim cannot record) */
    claimToken: text('claim_token'),
    createdAt: tstz('created_at').notNull(),
    sentAt: tstz('sent_at'),
    deliveredAt: tstz('delivered_at'),
    openedAt: tstz('opened_at'),
    clickedAt: tstz('clicked_at'),
    updatedAt: tstz('updated_at').notNull(),
  },
  (t) => [
    index('messages_contact_idx').on(t.contactId, t.createdAt),
    index('messages_run_idx').on(t.runId),
    index('messages_pending_idx').on(t.createdAt).where(sql`status in ('queued', 'sending') and batch_id is null`),
    index('messages_dead_idx').on(t.updatedAt).where(sql`status = 'dead'`),
    index('messages_provider_idx').on(t.providerId),
  ],
);

/** Each message's status timeline (queued, sent, delivered, bounced, complained, opened, clicked, failed). */
export const messageEvents = pgTable(
  'message_events',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    messageId: text('message_id').notNull(),
    status: text('status').notNull(),
    at: tstz('at').notNull(),
    detail: text('detail'),
    /** provider webhook event id (svix-id), to ignore redeliveries */
    sourceId: text('source_id'),
  },
  (t) => [index('message_events_message_idx').on(t.messageId, t.at), uniqueIndex('message_events_source_key').on(t.sourceId)],
);

/** A global slot clock for the email provider's rate limit, shared by every worker instance. */
export const rateLimits = pgTable('rate_limits', {
  name: text('name').primaryKey(),
  nextSlotAt: tstz('next_slot_at').notNull(),
});

/** A batch of emails as it went (or will go) to the provider: re-sent only as a whole, same key, same payload. */
export const emailBatches = pgTable(
  'email_batches',
  {
    id: text('id').primaryKey(),
    idempotencyKey: text('idempotency_key').notNull(),
    /** members in request order */
    messageIds: text('message_ids').array().notNull(),
    /** JSON of what each member was rendered from, so a re-send renders the identical payload */
    renderInputs: text('render_inputs').notNull(),
    status: text('status').notNull(), // sending | queued | sent | failed | dead
    statusReason: text('status_reason'),
    /** fencing: bumped by every take-over; an outcome is recorded only under the current lease */
    lease: integer('lease').notNull().default(1),
    lockedUntil: tstz('locked_until'),
    nextAttemptAt: tstz('next_attempt_at'),
    /** provider requests started (a crash counts); failures = attempts - rate_limited */
    attempts: integer('attempts').notNull().default(0),
    rateLimited: integer('rate_limited').notNull().default(0),
    createdAt: tstz('created_at').notNull(),
    updatedAt: tstz('updated_at').notNull(),
  },
  (t) => [index('email_batches_pending_idx').on(t.createdAt).where(sql`status in ('queued', 'sending')`)],
);

/** Outgoing workflow webhooks (Slack, CRM), keyed by (run, step), delivered with retries. */
export const webhookDeliveries = pgTable('webhook_deliveries', {
  id: text('id').primaryKey(),
  runId: bigint('run_id', { mode: 'number' }).notNull(),
  stepId: text('step_id').notNull(),
  url: text('url').notNull(),
  body: jsonb('body').notNull(),
  status: text('status').notNull(), // pending | delivered | failed
  attempts: integer('attempts').notNull().default(0),
  lastError: text('last_error'),
  createdAt: tstz('created_at').notNull(),
  deliveredAt: tstz('delivered_at'),
});

/** Segment triggers fire on entering: remember who is inside, per workflow. */
export const segmentMemberships = pgTable(
  'segment_memberships',
  {
    workflowKey: text('workflow_key').notNull(),
    contactId: bigint('contact_id', { mode: 'number' }).notNull(),
    inside: boolean('inside').notNull(),
    changedAt: tstz('changed_at').notNull(),
  },
  (t) => [primaryKey({ columns: [t.workflowKey, t.contactId] })],
);

/** Date-trait triggers (e.g. 3 days after trial_started_at): one pending entry per contact and date. */
export const scheduledEntries = pgTable(
  'scheduled_entries',
  {
    workflowKey: text('workflow_key').notNull(),
    contactId: bigint('contact_id', { mode: 'number' }).notNull(),
    traitValue: text('trait_value').notNull(),
    dueAt: tstz('due_at').notNull(),
    doneAt: tstz('done_at'),
    /** for account-subject date triggers: whose trait */
    accountId: bigint('account_id', { mode: 'number' }),
  },
  (t) => [
    primaryKey({ columns: [t.workflowKey, t.contactId, t.traitValue] }),
    index('scheduled_entries_due_idx').on(t.dueAt).where(sql`done_at is null`),
  ],
);

/** Addresses we must not email: 'all' (hard bounce) or 'non_transactional' (unsubscribe, complaint). */
export const suppressions = pgTable('suppressions', {
  email: text('email').primaryKey(), // lower-cased
  scope: text('scope').notNull(),
  reason: text('reason').notNull(),
  createdAt: tstz('created_at').notNull(),
});

// ---------------------------------------------------------------------------------------------
// Reports: the recovery ledger. One row per recovery case (an invoice with at least one failed
// payment, not the first invoice of a new subscription), recomputed per invoice from the
// timeline whenever a relevant fact arrives (src/reports/recovery-cases.ts); the report reads
// only this table. The definitions of every column are in src/reports/definitions.ts.

export const recoveryCases = pgTable(
  'recovery_cases',
  {
    invoiceId: text('invoice_id').primaryKey(),
    customerId: text('customer_id').notNull(),
    subscriptionId: text('subscription_id'),
    /** lower-case ISO 4217 */
    currency: text('currency').notNull(),
    /** amount due at the first failure, minor units */
    amountDue: minor('amount_due').notNull(),
    firstFailedAt: tstz('first_failed_at').notNull(),
    declineClass: text('decline_class').notNull(), // sca | hard | soft | unknown (worst seen)
    attempts: integer('attempts').notNull(),
    state: text('state').notNull(), // open | recovered | lost | voided
    /** amount_paid of a recovered invoice, else 0 */
    amountRecovered: minor('amount_recovered').notNull().default(0),
    recoveredAt: tstz('recovered_at'),
    /** first time the case was lost (written off, or its subscription ended unpaid) */
    lostAt: tstz('lost_at'),
    voidedAt: tstz('voided_at'),
    /** recovered after it had been lost */
    late: boolean('late').notNull().default(false),
    attribution: text('attribution'), // recovered cases only
    holdout: boolean('holdout').notNull().default(false),
    /** the invoice's billing-recovery run (null: no run, e.g. the workflow was paused) */
    runId: bigint('run_id', { mode: 'number' }),
    /** recovered cases: whole seconds from the first failure to the payment */
    recoverySeconds: bigint('recovery_seconds', { mode: 'number' }),
    computedAt: tstz('computed_at').notNull(),
  },
  (t) => [
    index('recovery_cases_cohort_idx').on(t.firstFailedAt, t.currency),
    index('recovery_cases_customer_idx').on(t.customerId),
    index('recovery_cases_subscription_idx').on(t.subscriptionId),
    // the exact median: ordered recovery times of one currency (see recovery_time_hist)
    index('recovery_cases_recovery_time_idx').on(t.currency, t.recoverySeconds, t.firstFailedAt).where(sql`state = 'recovered'`),
  ],
);

/**
 * recovery_cases rolled up per currency, UTC day of first failure and outcome, maintained with
 * every recomputation (old rows subtracted, new rows added, in the same transaction): the report
 * reads these few rows instead of every case.
 */
export const recoveryDaily = pgTable(
  'recovery_daily',
  {
    currency: text('currency').notNull(),
    /** UTC midnight of the day of first failure */
    day: tstz('day').notNull(),
    state: text('state').notNull(),
    attribution: text('attribution').notNull().default(''), // '' unless recovered
    holdout: boolean('holdout').notNull(),
    hasRun: boolean('has_run').notNull(),
    late: boolean('late').notNull(),
    cases: integer('cases').notNull(),
    amountDue: minor('amount_due').notNull(),
    amountRecovered: minor('amount_recovered').notNull(),
  },
  (t) => [primaryKey({ columns: [t.currency, t.day, t.state, t.attribution, t.holdout, t.hasRun, t.late] })],
);

/** Recovered cases per currency, day of first failure and recovery-time bucket: locates the median. */
export const recoveryTimeHist = pgTable(
  'recovery_time_hist',
  {
    currency: text('currency').notNull(),
    /** UTC midnight of the day of first failure */
    day: tstz('day').notNull(),
    /** width_bucket(recovery_seconds, RECOVERY_TIME_BUCKETS) */
    bucket: integer('bucket').notNull(),
    cases: integer('cases').notNull(),
  },
  (t) => [primaryKey({ columns: [t.currency, t.day, t.bucket] })],
);

/** Invoices whose case must be recomputed at the next refresh (consumed by the refresh). */
export const recoveryDirty = pgTable('recovery_dirty', {
  invoiceId: text('invoice_id').primaryKey(),
  markedAt: tstz('marked_at').notNull(),
});

/** How far the refresh has read each source table (domain_events, payment_failures, …), by id. */
export const recoveryRefreshCursors = pgTable('recovery_refresh_cursors', {
  source: text('source').primaryKey(),
  lastId: bigint('last_id', { mode: 'number' }).notNull(),
  updatedAt: tstz('updated_at').notNull(),
});

/**
 * Ids at or below a cursor that were not visible when the cursor moved (a transaction still in
 * flight, or an id burnt by a rollback / ON CONFLICT DO NOTHING): re-checked at every refresh
 * until they appear or the gap is older than the refresh's gap TTL.
 */
export const recoveryRefreshGaps = pgTable(
  'recovery_refresh_gaps',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    source: text('source').notNull(),
    lo: bigint('lo', { mode: 'number' }).notNull(),
    hi: bigint('hi', { mode: 'number' }).notNull(),
    notedAt: tstz('noted_at').notNull(),
  },
  (t) => [index('recovery_refresh_gaps_source_idx').on(t.source, t.lo)],
);
