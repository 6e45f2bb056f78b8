// The contract between the pure workflow interpreter and the edges that feed it (the durable
// runner on Postgres, the simulator, the tests). Everything here is plain data: JSON in, JSON out.
// Times are ISO-8601 strings in UTC (e.g. "2026-03-01T10:00:00.000Z").

export type Category = 'transactional' | 'lifecycle' | 'marketing';

// ---------------------------------------------------------------------------------------------
// Conditions. A `path` reads a value from the evaluation scope (see Scope below), e.g.
// "contact.traits.plan", "account.traits.seats", "event.properties.invoiceId",
// "trigger.properties.amountDue", "steps.wait_invite.event.properties.count", "invoice.status",
// "invoice.declineClass", "subscription.status". `ref` compares against another path instead of
// a literal `value` (e.g. the goal's invoice id equals the trigger's invoice id).

export type Operator =
  | 'eq' | 'neq' | 'gt' | 'gte' | 'lt' | 'lte'
  | 'in' | 'nin' | 'contains' | 'exists' | 'not_exists';

export interface Comparison {
  path: string;
  op: Operator;
  value?: unknown;
  ref?: string;
}

/** "did `Paywall Hit` ≥ 3 times in 7 days": counted over the contact's (or account's) timeline. */
export interface CountCondition {
  count: { event: string; within: string /* ISO duration */; where?: Condition; scope?: 'contact' | 'account' };
  op: 'eq' | 'neq' | 'gt' | 'gte' | 'lt' | 'lte';
  value: number;
}

export interface SegmentCondition {
  segment: string; // a named segment from the definition's `segments` map
}

export type Condition =
  | { all: Condition[] }
  | { any: Condition[] }
  | { not: Condition }
  | Comparison
  | CountCondition
  | SegmentCondition;

// ---------------------------------------------------------------------------------------------
// Definitions

export type Trigger =
  | { type: 'event'; event: string; where?: Condition }
  /** Fires when `condition` becomes true for a contact/account after an identify/group. */
  | { type: 'segment'; condition: Condition }
  /** Fires `offset` after the date in trait `trait` (e.g. 3 days after trial_started_at). */
  | { type: 'date_trait'; trait: string; offset: string; subject?: 'contact' | 'account' };

export type EntryRule =
  | { mode: 'once' } // once per contact, ever
  | { mode: 'once_per_key'; key: string /* path, e.g. "trigger.properties.invoiceId" */ }
  | { mode: 'every_time'; cooldown?: string /* ISO duration */ };

export interface EventMatcher {
  event: string;
  where?: Condition;
}

/**
 * An exit: the run ends when a matching fact arrives. `steps` act as it ends (e.g. a Slack alert
 * when a billing-recovery case is lost); only steps that act at once: notify, webhook,
 * update_contact, and branch blocks of those (an ended run cannot wait or hold an email).
 */
export interface ExitMatcher extends EventMatcher {
  steps?: Step[];
}

export type Step =
  | { id: string; type: 'wait'; duration: string }
  | {
      id: string;
      type: 'wait_until';
      /** local time-of-day window in the contact's timezone, "HH:MM" 24h; end exclusive */
      window: { start: string; end: string };
      weekdaysOnly?: boolean;
    }
  | {
      id: string;
      type: 'wait_for_event';
      event: string;
      where?: Condition;
      timeout: string;
      onEvent: Step[];
      onTimeout: Step[];
    }
  | { id: string; type: 'branch'; branches: { when: Condition; steps: Step[]; label?: string }[]; otherwise: Step[] }
  | {
      id: string;
      type: 'split';
      variants: { key: string; weight: number; steps: Step[] }[];
      /** a hold-out group: receives nothing; still tracked for the goal to measure lift */
      holdout?: { weight: number };
    }
  | {
      id: string;
      type: 'send_email';
      template: string;
      subject: string;
      /** per split-variant subject override: { variantKey: subject } */
      subjects?: Record<string, string>;
    }
  | { id: string; type: 'webhook'; url: string; body?: Record<string, unknown> }
  /** an alert to the team: a Slack incoming webhook (the step's URL, else SLACK_WEBHOOK_URL), delivered by a work queue */
  | { id: string; type: 'notify'; channel: 'slack'; text: string; webhookUrl?: string }
  | { id: string; type: 'update_contact'; traits: Record<string, unknown> }
  | { id: string; type: 'exit'; reason?: string };

export type StepType = Step['type'];

export interface WorkflowDefinition {
  key: string;
  name: string;
  description?: string;
  category: Category;
  trigger: Trigger;
  /** Extra condition checked at entry (on top of trigger.where). */
  entryCondition?: Condition;
  entry: EntryRule;
  /** Who receives the emails: the contact itself, or the admins of its account. */
  audience?: 'contact' | 'account_admins';
  goal?: EventMatcher | { condition: Condition };
  exit?: ExitMatcher[];
  /** For lifecycle/marketing: what to do with a send while the account has an open recovery case. */
  duringRecovery?: 'hold' | 'skip';
  /** How long a hold-out (or finished) run keeps listening for the goal, for lift. Default P30D. */
  goalWindow?: string;
  segments?: Record<string, Condition>;
  /** Options a user can toggle without editing steps, e.g. { skipFirstEmail: true }. */
  options?: Record<string, unknown>;
  steps: Step[];
}

// ---------------------------------------------------------------------------------------------
// Runs

export interface EventFact {
  id?: string;
  name: string;
  properties: Record<string, unknown>;
  occurredAt: string;
}

/**
 * `superseded`: not a run but a recorded entry, refused because the fact that would have ended it
 * was delivered first (EntryDecision.superseded): no steps, no emails, left out of reports; the
 * entry rules count it as the run it would have been in event order.
 */
export type RunStatus = 'active' | 'converted' | 'exited' | 'completed' | 'superseded';

export type Wait =
  | { kind: 'time'; until: string } // wait / wait_until
  | { kind: 'event'; event: string; until: string } // wait_for_event (until = timeout)
  | { kind: 'hold'; until: string; reason: HoldReason } // a send held by policy
  | { kind: 'goal'; until: string }; // steps finished (or hold-out): listen for the goal until `until`

export type HoldReason = 'quiet_hours' | 'frequency_cap' | 'dunning_priority';

export interface RunState {
  status: RunStatus;
  /** the step the run is at (waiting on, or about to execute); null when no step is left */
  stepId: string | null;
  wait: Wait | null;
  /** split assignments by split step id; "holdout" for the hold-out group */
  variants: Record<string, string>;
  holdout: boolean;
  vars: {
    trigger: EventFact;
    /** events matched by wait_for_event steps, by step id */
    matched: Record<string, EventFact>;
  };
  startedAt: string;
  endedAt: string | null;
  endReason: string | null;
  /** the goal's time, when converted */
  convertedAt: string | null;
  /**
   * The goal or exit fact that ended the run (absent for other endings and for runs ended
   * before it was recorded): an earlier goal/exit fact delivered after it re-ends the run.
   */
  endedBy?: { id?: string; name: string; occurredAt: string };
}

export type Fact =
  | { type: 'start'; trigger: EventFact }
  | { type: 'event'; event: EventFact }
  | { type: 'timer' };

/** Everything the interpreter may read about the world, gathered by the edge beforehand. */
export interface Context {
  /**
   * splitKey: who the contact is, stably (user id, else Stripe customer, else email): split and
   * hold-out assignment hash it, falling back to `id` (a row id follows delivery order)
   */
  contact: { id: string | number; email: string | null; traits: Record<string, unknown>; splitKey?: string };
  account: { id: string | number; traits: Record<string, unknown> } | null;
  invoice?: Record<string, unknown> | null;
  subscription?: Record<string, unknown> | null;
  /**
   * The Stripe customer the run is about (its invoice's or subscription's), with its MRR in the
   * run's currency (the invoice's, else the subscription's): live subscriptions of that
   * currency only, minor units; other currencies are in mrrByCurrency, never added in.
   */
  customer?: { id: string; currency: string | null; mrr: number | null; mrrByCurrency: Record<string, number> } | null;
  /** Instance settings as they apply to this run (conditions read them as settings.*). */
  settings?: RunSettings;
  /** results of the definition's count conditions, by countKey(condition) */
  counts: Record<string, number>;
  policy: {
    /** the contact's account has an open billing-recovery case */
    recoveryOpen: boolean;
    /** last lifecycle/marketing send to this contact (any workflow), for the frequency cap */
    lastCappedSendAt: string | null;
    /** ISO duration, e.g. "PT24H"; null disables the cap */
    frequencyCap: string | null;
    /** local "HH:MM" window in which lifecycle/marketing sends are held; null disables */
    quietHours: { start: string; end: string } | null;
    /** IANA zone; defaults to UTC when the contact has none or an invalid one */
    timezone: string | null;
    /** the address is suppressed: 'all' (hard bounce) or 'non_transactional' (unsubscribe/complaint) */
    suppressed: 'all' | 'non_transactional' | null;
  };
}

export interface RunSettings {
  /**
   * RECOVERY_ALERT_MRR in the run's currency (customer.currency), minor units; null when no
   * threshold is set for that currency (amounts of different currencies are never compared).
   */
  recoveryAlertMrr: number | null;
  /**
   * SLACK_WEBHOOK_URL is set. When false, a notify step without its own webhookUrl is a traced
   * no-op (nothing to deliver, so nothing to fail or park as a dead letter).
   */
  slackWebhookConfigured: boolean;
}

export type Action =
  | {
      type: 'send_email';
      /** stable, deterministic: `${runKey}:${stepId}` built by the edge; the interpreter gives stepId */
      stepId: string;
      template: string;
      subject: string;
      category: Category;
      variant: string | null;
    }
  | { type: 'webhook'; stepId: string; url: string; body: Record<string, unknown> }
  | { type: 'notify'; stepId: string; channel: 'slack'; text: string; webhookUrl: string | null }
  | { type: 'update_contact'; stepId: string; traits: Record<string, unknown> };

export interface TraceEntry {
  at: string;
  stepId: string | null;
  kind:
    | 'entered' | 'step' | 'wait' | 'woke' | 'timeout' | 'event_matched' | 'branch' | 'split'
    | 'send' | 'send_held' | 'send_skipped' | 'webhook' | 'notify' | 'update_contact'
    | 'goal' | 'exit' | 'completed' | 'ignored' | 'superseded';
  detail: string;
  data?: Record<string, unknown>;
}

export interface AdvanceResult {
  state: RunState;
  actions: Action[];
  trace: TraceEntry[];
}
