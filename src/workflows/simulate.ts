// The simulator: one run of a definition on a virtual clock over a timeline of events, with no
// I/O. It calls the very functions the durable engine calls — matchesTrigger, segmentEntered,
// dateTriggerDueAt, scheduledEntryCurrent, entryDecision, startRun, advance (which applies
// sendPolicy) — and builds the Context and trigger facts the way the engine's edge does
// (context-loader.ts, fact-feed.ts, run-entry.ts, due-runs.ts), so a simulation and a real run
// of one timeline give one trace.
//
// The send policy is the caller's: `policy` defaults to NO_POLICY here (no cap, no quiet hours),
// and the simulate route passes the instance's (config.policy) unless the request overrides it.

import type { AdvanceResult, Context, EventFact, RunState, TraceEntry, WorkflowDefinition } from './types.ts';
import { collectCountConditions, countKey, countMatchingEvents } from './conditions.ts';
import { addDuration, parseDuration } from './duration.ts';
import {
  advance,
  buildScope,
  dateTriggerDueAt,
  DEFAULT_GOAL_WINDOW,
  entryDecision,
  entryGuardEventNames,
  matchesTrigger,
  runEventNames,
  scheduledEntryCurrent,
  segmentEntered,
  startRun,
} from './interpreter.ts';

export interface SimulationInput {
  contact: Context['contact'];
  account?: Context['account'];
  invoice?: Record<string, unknown> | null;
  subscription?: Record<string, unknown> | null;
  /** the run's Stripe customer and its MRR (Context.customer) */
  customer?: Context['customer'];
  /** instance settings as they apply to the run (the route passes this instance's: runSettings) */
  settings?: Context['settings'];
  /** send policy; unset fields are NO_POLICY's. `timezone` unset = the contact's, else the account's */
  policy?: Partial<Context['policy']>;
  /**
   * any order; sorted by occurredAt. `identify` events update the contact's traits and `group`
   * events the account's (creating it, named by properties.groupId, when the profile has none);
   * traits are read from properties.traits, else from properties.
   */
  timeline: EventFact[];
  /** events before `start` count for counts and traits but cannot trigger */
  start?: string;
  /** stop once the next timer is after this; default: last event + goal window + 1 day */
  until?: string;
}

export interface SimulatedSend {
  at: string;
  stepId: string;
  template: string;
  subject: string;
}

/** A team alert a notify step would post (the trace also shows skipped ones and why). */
export interface SimulatedAlert {
  at: string;
  stepId: string;
  channel: 'slack';
  text: string;
}

export interface SimulationResult {
  entered: boolean;
  reason: string;
  trace: TraceEntry[];
  sends: SimulatedSend[];
  alerts: SimulatedAlert[];
  final: RunState | null;
}

/** No cross-workflow policy at all: every send goes out when its step is reached. */
export const NO_POLICY: Readonly<Context['policy']> = Object.freeze({
  recoveryOpen: false,
  lastCappedSendAt: null,
  frequencyCap: null,
  quietHours: null,
  timezone: null,
  suppressed: null,
});

/** Facts the simulator may deliver in one simulation (timers and events). */
export const MAX_SIMULATED_STEPS = 400;

const DAY_MS = 24 * 60 * 60 * 1000;

function timeOf(event: EventFact): number {
  return Date.parse(event.occurredAt);
}

function traitsOf(event: EventFact): Record<string, unknown> {
  const traits = event.properties['traits'];
  return traits !== null && typeof traits === 'object' && !Array.isArray(traits)
    ? (traits as Record<string, unknown>)
    : event.properties;
}

const str = (value: unknown): string | null => (typeof value === 'string' && value !== '' ? value : null);

/** A date-trait entry scheduled by a fact (or by the profile), as the engine's scheduled_entries. */
interface ScheduledEntry {
  value: string;
  dueAt: Date;
  /** when the date became known: the engine enters at its next tick after max(dueAt, knownAt) */
  knownMs: number;
}

export function simulate(definition: WorkflowDefinition, input: SimulationInput): SimulationResult {
  const timeline = input.timeline
    .map((event, index) => ({ event, index }))
    .sort((a, b) => timeOf(a.event) - timeOf(b.event) || a.index - b.index)
    .map(({ event }) => event);
  const startMs = input.start ? Date.parse(input.start) : Number.NEGATIVE_INFINITY;
  const countConditions = collectCountConditions(definition);
  const guardNames = new Set(entryGuardEventNames(definition));
  // Mutable: the simulation's own sends move lastCappedSendAt, as messages do for the engine.
  const policy: Context['policy'] = { ...NO_POLICY, ...input.policy };

  /** Contact and account as of `nowMs`, after timeline events [0, limit) that occurred by then. */
  const profileAt = (nowMs: number, limit = timeline.length): { contact: Context['contact']; account: Context['account']; seen: EventFact[] } => {
    const seen = timeline.slice(0, limit).filter((event) => timeOf(event) <= nowMs);
    let contactTraits = { ...input.contact.traits };
    let account = input.account ? { ...input.account, traits: { ...input.account.traits } } : null;
    for (const event of seen) {
      if (event.name === 'identify') contactTraits = { ...contactTraits, ...traitsOf(event) };
      if (event.name === 'group') {
        account ??= { id: str(event.properties['groupId']) ?? 'simulated', traits: {} };
        account = { ...account, traits: { ...account.traits, ...traitsOf(event) } };
      }
    }
    return { contact: { ...input.contact, traits: contactTraits }, account, seen };
  };

  /** The world as of `nowMs`, seeing timeline events [0, limit) that occurred by then. */
  const contextAt = (nowMs: number, limit = timeline.length): Context => {
    const { contact, account, seen } = profileAt(nowMs, limit);
    const context: Context = {
      contact,
      account,
      invoice: input.invoice ?? null,
      subscription: input.subscription ?? null,
      customer: input.customer ?? null,
      ...(input.settings ? { settings: input.settings } : {}),
      counts: {},
      // The engine's zone: the contact's timezone trait, else its account's (context-loader.ts).
      policy: {
        ...policy,
        timezone: input.policy?.timezone ?? str(contact.traits['timezone']) ?? str(account?.traits['timezone']) ?? null,
      },
    };
    const baseScope = buildScope(definition, context, { now: new Date(nowMs) });
    for (const condition of countConditions) {
      context.counts[countKey(condition)] = countMatchingEvents(condition, seen, new Date(nowMs), baseScope);
    }
    return context;
  };

  /** Guard facts (goal/exit events) the engine would already have recorded: those before `limit`. */
  const knownBefore = (limit: number): EventFact[] => timeline.slice(0, limit).filter((event) => guardNames.has(event.name));

  // 1. Entry.
  let trigger: EventFact | null = null;
  let enteredAt = 0;
  let triggerIndex = -1;
  let reason = 'no timeline event fired the trigger';
  const tryEnter = (candidate: EventFact, context: Context, nowMs: number, limit: number): boolean => {
    const decision = entryDecision(definition, candidate, context, [], new Date(nowMs), knownBefore(limit));
    reason = decision.reason;
    return decision.enter;
  };
  const rule = definition.trigger;
  if (rule.type === 'date_trait') {
    // As the engine: an identify (contact subject) or group (account subject) fact schedules an
    // entry at trait date + offset; the profile's traits count as scheduled from the start. At
    // fire time the trait is re-read (scheduledEntryCurrent), so a moved date voids the entry
    // made for the old one. A date learned after it was due enters when it is learned.
    const subject = rule.subject ?? 'contact';
    const schedulingFact = subject === 'account' ? 'group' : 'identify';
    const traitsOfSubject = (profile: { contact: Context['contact']; account: Context['account'] }) =>
      subject === 'account' ? (profile.account?.traits ?? {}) : profile.contact.traits;
    const entries: ScheduledEntry[] = [];
    const schedule = (traits: Record<string, unknown>, knownMs: number): void => {
      const value = traits[rule.trait];
      const dueAt = dateTriggerDueAt(definition, traits);
      if (dueAt && value !== undefined && value !== null) entries.push({ value: String(value), dueAt, knownMs });
    };
    schedule(traitsOfSubject(profileAt(Number.NEGATIVE_INFINITY, 0)), Number.NEGATIVE_INFINITY);
    timeline.forEach((event, index) => {
      if (event.name === schedulingFact) schedule(traitsOfSubject(profileAt(timeOf(event), index + 1)), timeOf(event));
    });
    if (entries.length === 0) reason = `${subject} trait ${rule.trait} is not a date`;
    const fireMs = (entry: ScheduledEntry) => Math.max(entry.dueAt.getTime(), entry.knownMs);
    for (const entry of [...entries].sort((a, b) => fireMs(a) - fireMs(b))) {
      if (entry.dueAt.getTime() < startMs) {
        reason = `trigger was due at ${entry.dueAt.toISOString()}, before the simulation start`;
        continue;
      }
      const atMs = fireMs(entry);
      const current = scheduledEntryCurrent(definition, traitsOfSubject(profileAt(atMs)), { traitValue: entry.value, dueAt: entry.dueAt });
      if (!current.current) {
        reason = `scheduled entry for ${entry.value} is stale: ${current.explain}`;
        continue;
      }
      // The engine's scheduled-entry fact (enterScheduled in due-runs.ts).
      const candidate: EventFact = {
        name: `date:${rule.trait}`,
        properties: { trait: rule.trait, value: entry.value },
        occurredAt: entry.dueAt.toISOString(),
      };
      const limit = timeline.filter((event) => timeOf(event) <= atMs).length;
      if (tryEnter(candidate, contextAt(atMs), atMs, limit)) {
        trigger = candidate;
        enteredAt = atMs;
        triggerIndex = limit - 1;
        break;
      }
    }
  } else {
    for (const [index, event] of timeline.entries()) {
      if (timeOf(event) < startMs) continue;
      if (rule.type === 'event') {
        const context = contextAt(timeOf(event), index + 1);
        const match = matchesTrigger(definition, event, context);
        if (!match.match) {
          if (event.name === rule.event) reason = `trigger not matched: ${match.explain}`;
          continue;
        }
        if (tryEnter(event, context, timeOf(event), index)) {
          trigger = event;
          enteredAt = timeOf(event);
          triggerIndex = index;
          break;
        }
      } else {
        if (event.name !== 'identify' && event.name !== 'group') continue;
        const entered = segmentEntered(definition, contextAt(timeOf(event), index), contextAt(timeOf(event), index + 1));
        if (!entered.entered) {
          reason = `segment not entered: ${entered.explain}`;
          continue;
        }
        // The engine enters a segment on a "segment:<key>" fact (fact-feed.ts handleEvent).
        const candidate: EventFact = { ...event, name: `segment:${definition.key}` };
        if (tryEnter(candidate, contextAt(timeOf(event), index + 1), timeOf(event), index)) {
          trigger = candidate;
          enteredAt = timeOf(event);
          triggerIndex = index;
          break;
        }
      }
    }
  }
  if (!trigger) return { entered: false, reason, trace: [], sends: [], alerts: [], final: null };

  // 2. Run: deliver timers and later events in time order.
  const trace: TraceEntry[] = [];
  const sends: SimulatedSend[] = [];
  const alerts: SimulatedAlert[] = [];
  const collect = (outcome: AdvanceResult, at: Date): RunState => {
    trace.push(...outcome.trace);
    for (const action of outcome.actions) {
      if (action.type === 'notify') alerts.push({ at: at.toISOString(), stepId: action.stepId, channel: action.channel, text: action.text });
      if (action.type !== 'send_email') continue;
      sends.push({ at: at.toISOString(), stepId: action.stepId, template: action.template, subject: action.subject });
      if (action.category !== 'transactional') policy.lastCappedSendAt = at.toISOString();
    }
    return outcome.state;
  };

  const startAt = new Date(enteredAt);
  let state = collect(startRun(definition, trigger, contextAt(enteredAt, triggerIndex + 1), startAt), startAt);

  const delivered = runEventNames(definition);
  const pending = timeline
    .slice(triggerIndex + 1)
    .filter((event) => timeOf(event) >= enteredAt)
    .filter((event) => delivered === 'all' || delivered.includes(event.name));
  const lastEventMs = Math.max(enteredAt, ...timeline.map(timeOf));
  const untilMs = input.until
    ? Date.parse(input.until)
    : addDuration(new Date(lastEventMs), definition.goalWindow ?? DEFAULT_GOAL_WINDOW).getTime() + DAY_MS;

  let next = 0;
  for (let deliveries = 0; deliveries < MAX_SIMULATED_STEPS && state.status === 'active'; deliveries += 1) {
    const event = pending[next];
    const eventMs = event ? timeOf(event) : Number.POSITIVE_INFINITY;
    const timerMs = state.wait ? Date.parse(state.wait.until) : Number.POSITIVE_INFINITY;
    const atMs = Math.min(eventMs, timerMs);
    if (!Number.isFinite(atMs) || atMs > untilMs) break;
    const at = new Date(atMs);
    // A timer due at the same instant as an event fires first: the wait was over by then.
    if (timerMs <= eventMs) {
      state = collect(advance(definition, state, { type: 'timer' }, contextAt(atMs), at), at);
    } else if (event) {
      const index = timeline.indexOf(event);
      state = collect(advance(definition, state, { type: 'event', event }, contextAt(atMs, index + 1), at), at);
      next += 1;
    }
  }
  return { entered: true, reason, trace, sends, alerts, final: state };
}

// ---------------------------------------------------------------------------------------------
// The policy a simulation runs under: the instance's by default, overridable per request.

/** The instance-wide part of the policy (config.policy). */
export interface InstancePolicy {
  frequencyCap: string | null;
  quietHours: { start: string; end: string } | null;
}

export type PolicyResolution = { ok: true; policy: Context['policy'] } | { ok: false; message: string };

const HH_MM = /^([01]\d|2[0-3]):([0-5]\d)$/;
const POLICY_FIELDS = ['frequencyCap', 'quietHours', 'recoveryOpen', 'lastCappedSendAt', 'timezone', 'suppressed'] as const;

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * The policy for a simulation request. `override` absent: the instance's frequency cap and quiet
 * hours (what a real run gets), nothing else. `"none"`: no policy at all. An object: the
 * instance's policy with these fields replaced — `frequencyCap` (ISO duration, or null/"off"),
 * `quietHours` ({start, end} or "HH:MM-HH:MM", or null/"off"), `recoveryOpen` (boolean),
 * `lastCappedSendAt` (ISO time or null), `timezone` (IANA zone or null = the contact's trait,
 * else the account's), `suppressed` ("all", "non_transactional" or null).
 */
export function resolveSimulationPolicy(instance: InstancePolicy, override: unknown): PolicyResolution {
  const base: Context['policy'] = { ...NO_POLICY, frequencyCap: instance.frequencyCap, quietHours: instance.quietHours };
  if (override === undefined) return { ok: true, policy: base };
  if (override === 'none') return { ok: true, policy: { ...NO_POLICY } };
  if (!isObject(override)) return { ok: false, message: 'policy must be "none" or an object with fields ' + POLICY_FIELDS.join(', ') };
  const policy = { ...base };
  for (const [field, value] of Object.entries(override)) {
    const fail = (expected: string): PolicyResolution => ({ ok: false, message: `policy.${field} ${JSON.stringify(value)} is invalid: expected ${expected}` });
    switch (field) {
      case 'frequencyCap': {
        if (value === null || value === 'off') {
          policy.frequencyCap = null;
          break;
        }
        let valid = false;
        try {
          valid = typeof value === 'string' && !parseDuration(value).negative && addDuration(new Date(0), value).getTime() > 0;
        } catch {
          valid = false;
        }
        if (!valid) return fail('a positive ISO-8601 duration like PT24H, or null / "off"');
        policy.frequencyCap = value as string;
        break;
      }
      case 'quietHours': {
        if (value === null || value === 'off') {
          policy.quietHours = null;
          break;
        }
        const [start, end] = typeof value === 'string' ? value.split('-') : isObject(value) ? [value['start'], value['end']] : [];
        if (typeof start !== 'string' || typeof end !== 'string' || !HH_MM.test(start) || !HH_MM.test(end) || start === end) {
          return fail('{"start":"HH:MM","end":"HH:MM"} or "HH:MM-HH:MM" (24 h, start ≠ end), or null / "off"');
        }
        policy.quietHours = { start, end };
        break;
      }
      case 'recoveryOpen':
        if (typeof value !== 'boolean') return fail('true or false');
        policy.recoveryOpen = value;
        break;
      case 'lastCappedSendAt':
        if (value !== null && (typeof value !== 'string' || Number.isNaN(Date.parse(value)))) return fail('an ISO-8601 date-time, or null');
        policy.lastCappedSendAt = value === null ? null : new Date(value).toISOString();
        break;
      case 'timezone': {
        if (value === null) {
          policy.timezone = null;
          break;
        }
        let zone: string | null = null;
        try {
          zone = typeof value === 'string' && value !== '' ? new Intl.DateTimeFormat('en-US', { timeZone: value }).resolvedOptions().timeZone : null;
        } catch {
          zone = null;
        }
        if (!zone) return fail('an IANA time zone such as Europe/Paris, or null');
        policy.timezone = value as string;
        break;
      }
      case 'suppressed':
        if (value !== null && value !== 'all' && value !== 'non_transactional') return fail('"all", "non_transactional" or null');
        policy.suppressed = value;
        break;
      default:
        return { ok: false, message: `policy.${field} is not a policy field (${POLICY_FIELDS.join(', ')})` };
    }
  }
  return { ok: true, policy };
}
