// The written definitions behind every number the reports return. They are part of each
// answer (`definition`), so a figure can always be audited against the rule that produced it.
// Keep them in step with the SQL in recovery-cases.ts, recovery-report.ts and workflow-report.ts.

export const RECOVERY_WORKFLOW = 'billing-recovery';

/** Decline classes from worst to best; a case keeps the worst one seen. */
export const DECLINE_PRECEDENCE = ['sca', 'hard', 'soft', 'unknown'] as const;

/** Attribution buckets, in the order they are tried (first match wins). */
export const ATTRIBUTION_BUCKETS = ['paid_on_card_update', 'portal_update', 'payment_method_updated', 'clicked', 'emailed', 'card_updater', 'stripe_retry_only'] as const;
export type AttributionBucket = (typeof ATTRIBUTION_BUCKETS)[number];

export const CASE_STATES = ['open', 'recovered', 'lost', 'voided'] as const;
export type CaseState = (typeof CASE_STATES)[number];

export const RECOVERY_DEFINITION = `Recovery report: definitions

Source. Every figure is computed from the timeline of facts projected from Stripe events (domain_events, whose occurred_at is the Stripe event's "created" time), the payment_failures rows (charge / payment_intent / invoice failures), the invoices table (newest Stripe snapshot of each invoice), and the billing-recovery workflow's runs and messages. Facts are ordered by Stripe's event time, never by arrival, and are deduplicated, so redelivered or out-of-order webhooks give the same ledger. The ledger (recovery_cases) is recomputed per invoice whenever one of its facts arrives; every report refreshes it first.

Recovery case. One per invoice that has at least one failed-payment fact (invoice.payment_failed or invoice.payment_action_required), except invoices whose billing_reason is "subscription_create" (the first payment of a new subscription is not a recovery). The invoice's billing_reason is read from the invoice snapshot, else from the first failure fact.

Per case:
- currency: the invoice's currency (first failure fact, else invoice), lower-case ISO 4217. Amounts are integers in the currency's minor unit (cents for usd/eur, yen for jpy); figures of different currencies are never added together.
- amount_due: the invoice's amount_due at the first failure (from the earliest failure fact).
- first_failed_at: the Stripe event time of the earliest failure fact (ties broken by attempt count, fact name, dedupe key: never by arrival).
- attempts: the greater of the highest attempt_count carried by the invoice's failure facts and the number of distinct attempts seen (at least 1).
- decline_class: the worst class among the payment failures linked to the invoice, with precedence sca > hard > soft > unknown (sca: the customer must authenticate; hard: the card must be replaced; soft: a retry may succeed; unknown: no decline detail). Linked failures: rows of payment_failures for the invoice, plus charge / payment_intent failures without an invoice id that share a payment intent with one of the invoice's failures, or that belong to the same customer within 15 minutes of one of them.
- payment time: the invoice's status_transitions.paid_at, else the Stripe time of its invoice.paid fact, else the time of the paid snapshot.
- state, decided from the set of facts (so the arrival order cannot change it):
  * recovered: the invoice was paid (an invoice.paid fact, or a paid snapshot). Payment is final: a paid invoice cannot be voided or written off.
  * voided: not paid, and voided (invoice.voided fact or void snapshot). Reported apart: neither recovered nor lost, and excluded from the recovery-rate denominator.
  * lost: not paid, not voided, and either marked uncollectible (invoice.marked_uncollectible fact or uncollectible snapshot) or its subscription ended while the invoice was unpaid (subscription.canceled fact, or a subscription status change to canceled or unpaid, or such a subscription snapshot).
  * open: none of the above (still unpaid and collectible).
  Among these facts the newest by Stripe event time decides, which under Stripe's rules (paid and void are terminal, uncollectible can still be paid or voided) is exactly the precedence above.
- lost_at: the earliest time the case became lost (written off, or subscription ended).
- late: recovered, and paid after lost_at (a lost case that was paid later is recovered, flagged late).
- amount_recovered / recovered_at: the invoice's amount_paid and the payment time, for recovered cases (0 / empty otherwise).
- attribution (recovered cases only), judged on facts in the window [first_failed_at, payment time), first match wins:
  1. paid_on_card_update: our immediate payment attempt after the customer's card changed (invoices.pay, RECOVERY_PAY_ON_CARD_UPDATE) succeeded for this invoice: a card_update_payments row for the invoice with outcome "paid", decided at or after first_failed_at (a paid invoice is final, so no upper bound);
  2. portal_update: the customer opened a Stripe Billing Portal session through our update-card link (/billing/update/…, card_update_sessions with outcome "portal") in the window, and a payment_method.updated fact for the customer followed that session before the payment (the customer updated their card through our link; Stripe's retry, not ours, then collected);
  3. payment_method_updated: a payment_method.updated fact for the customer (a new default card or payment method, not through our link);
  4. clicked: a click on an email of the invoice's billing-recovery run (an email.clicked fact for one of its messages, or the message's clicked_at);
  5. emailed: an email of that run was sent (sent_at) in the window;
  6. card_updater: a payment_method.automatically_updated fact for the customer (the card network updated the card);
  7. stripe_retry_only: none of the above (Stripe's automatic retries alone).
- holdout: the invoice's billing-recovery run (workflow_runs with workflow_key "billing-recovery" and run_key = invoice id) was assigned to the hold-out group of a split (it received no emails). Cases with no run at all are neither treated nor hold-out.

Report (GET /v1/reports/recovery?from&to[&currency]). The cohort is the cases whose first_failed_at is in [from, to), dates taken as UTC midnights; it is grouped per currency.
- failed: every case of the cohort; amount = sum of amount_due.
- recovered: recovered cases; amount = sum of amount_recovered.
- lost, open, voided: cases in that state; amount = sum of amount_due.
- recoveryRate = recovered.amount / (failed.amount - voided.amount); null when the denominator is 0.
- medianHoursToRecover: the median of (payment time - first_failed_at), in whole seconds, over recovered cases (the mean of the two middle values for an even count), divided by 3600; null when there are none.
- byAttribution: for each of the seven buckets, the count of recovered cases and the sum of their amount_recovered (all seven are always present; they add up to recovered).
- holdout: cases = hold-out cases in the cohort; recoveryRate = the same amount-based rate over hold-out cases only; liftPoints = (treated recoveryRate - hold-out recoveryRate) x 100, where treated cases are those whose run is not a hold-out; ci95 = 95% confidence interval of the difference, in points, computed on case counts: p = recovered cases / non-voided cases in each group, difference p_treated - p_holdout, standard error sqrt(p1(1-p1)/n1 + p2(1-p2)/n2) (normal approximation, unpooled), interval = difference +/- 1.959964 x SE, x 100, clamped to [-100, 100]. pValue: two-sided two-proportion z-test on the same counts, with the pooled proportion. null when a group has no non-voided case.
- monthly: per currency and calendar month (UTC) of first failure: cases, failed amount, voided amount, recovered amount and recovery rate (same formula).
- CSV (?format=csv or Accept: text/csv): the case-level ledger of the same cohort, one row per case, RFC 4180 quoting; timestamps in ISO 8601 UTC; amounts in minor units. Its rows add up to the JSON totals.`;

export const WORKFLOW_DEFINITION = `Workflow report: definitions

Cohort: the workflow's runs whose started_at is in [from, to), dates taken as UTC midnights. Entries recorded as superseded (refused because the fact that would have ended the run was delivered before its trigger; no step ran, no email went out) are not runs and are left out.
- entered: runs in the cohort. active / converted / exited / completed: runs by current status (converted = the goal was reached).
- steps (funnel, in the order of the current definition, then steps only older versions had): reached = runs whose decision trace has an entry for the step; sent = the step's messages with a sent_at; clicked = the step's messages with a clicked_at.
- conversionRate = converted / entered (null when entered is 0).
- KPI by workflow:
  * activation: activationRate = converted / entered; medianHoursToValue = median hours from started_at to converted_at over converted runs.
  * onboarding: completionRate = converted / entered.
  * expansion, expansion-usage: upgradeConversionRate = converted / entered; mrrGained per currency = sum of the "delta" of the subscription.mrr_changed fact that converted each run (the goal fact: same name, same contact or account, occurred_at = converted_at).
  * billing-recovery: recoveredRevenue per currency = sum of amount_recovered of the recovery cases (see the recovery report) of the cohort's runs (run_key = invoice id), hold-out runs included; involuntaryChurn = subscriptions canceled with reason payment_failed (subscription.canceled fact, properties.reason) / subscriptions at risk (distinct subscriptions of those recovery cases). recoveriesByAction: for each attribution bucket of the recovery report (paid_on_card_update, portal_update, payment_method_updated, clicked, emailed, card_updater, stripe_retry_only), the number of recovered cases of the cohort's runs in that bucket and their amount_recovered per currency: how many recoveries each action produced.
  * win-back: reactivationRate = converted / entered; mrrReactivated per currency = sum of the "mrr" of the subscription.created fact that converted each run.
  * any other workflow: conversionRate.
- variants (split tests; a run's variant is its latest split assignment, hold-out runs excluded): entered, converted, conversionRate per variant. The control is the first variant of the first split in the current definition (else the first variant in alphabetical order). For every other variant: difference = rate - control rate, in points; ci95 = difference +/- 1.959964 x sqrt(p1(1-p1)/n1 + p2(1-p2)/n2) (unpooled, normal approximation), x 100, clamped to [-100, 100]; pValue = two-sided two-proportion z-test with the pooled proportion: z = (p1 - p2) / sqrt(p(1-p)(1/n1 + 1/n2)), p = (x1 + x2) / (n1 + n2). Null when a group is empty (pValue is 1 when both groups convert at 0% or 100%).
- holdout: hold-out runs against all other runs of the cohort (treated): rates, liftPoints = (treated rate - hold-out rate) x 100, with the same interval and test.`;
