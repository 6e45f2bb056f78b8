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
  },
  (t) => [
    index('stripe_events_unprocessed_idx').on(t.created, t.id).where(sql`processed_at is null`),
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
  },
  (t) => [
    uniqueIndex('product_events_message_id_key').on(t.messageId),
    index('product_events_unprocessed_idx').on(t.id).where(sql`processed_at is null`),
  ],
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
  },
  (t) => [
    uniqueIndex('domain_events_dedupe_key').on(t.dedupeKey),
    index('domain_events_contact_idx').on(t.contactId, t.name, t.occurredAt),
    index('domain_events_account_idx').on(t.accountId, t.name, t.occurredAt),
    index('domain_events_customer_idx').on(t.stripeCustomerId, t.occurredAt),
  ],
);
