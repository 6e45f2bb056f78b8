// Local time-of-day arithmetic in IANA zones using only Intl (no timezone library): "is it
// inside 09:00–17:00 for this contact?" and "when does 09:00 next happen for this contact?".

export interface LocalDateTime {
  year: number;
  month: number; // 1-12
  day: number;
  hour: number;
  minute: number;
  second: number;
  /** 0 = Sunday … 6 = Saturday */
  weekday: number;
}

export interface TimeWindow {
  start: string; // "HH:MM"
  end: string; // "HH:MM", exclusive; may be earlier than start (wraps midnight)
}

const HH_MM = /^([01]\d|2[0-3]):([0-5]\d)$/;

/** Minutes after midnight of an "HH:MM" string, or null when it is not one. */
export function parseTimeOfDay(value: string): number | null {
  const match = HH_MM.exec(value);
  if (!match) return null;
  return Number(match[1]) * 60 + Number(match[2]);
}

function requireTimeOfDay(value: string): number {
  const minutes = parseTimeOfDay(value);
  if (minutes === null) throw new RangeError(`invalid time of day "${value}", expected HH:MM`);
  return minutes;
}

/** `zone` when Intl knows it, otherwise "UTC". */
export function resolveTimeZone(zone: unknown): string {
  if (typeof zone !== 'string' || zone.trim() === '') return 'UTC';
  try {
    return new Intl.DateTimeFormat('en-US', { timeZone: zone }).resolvedOptions().timeZone;
  } catch {
    return 'UTC';
  }
}

const WEEKDAYS: Record<string, number> = { Sun: 0, Mon: 1, Tue: 2, Wed: 3, Thu: 4, Fri: 5, Sat: 6 };

export function localDateTime(instant: Date, zone: string): LocalDateTime {
  const parts = new Intl.DateTimeFormat('en-US', {
    timeZone: zone,
    hourCycle: 'h23',
    year: 'numeric',
    month: 'numeric',
    day: 'numeric',
    hour: 'numeric',
    minute: 'numeric',
    second: 'numeric',
    weekday: 'short',
  }).formatToParts(instant);
  const field = (type: Intl.DateTimeFormatPartTypes): string => parts.find((part) => part.type === type)?.value ?? '';
  return {
    year: Number(field('year')),
    month: Number(field('month')),
    day: Number(field('day')),
    hour: Number(field('hour')) % 24,
    minute: Number(field('minute')),
    second: Number(field('second')),
    weekday: WEEKDAYS[field('weekday')] ?? 0,
  };
}

/** The zone's offset from UTC at `instant`, in ms (local = UTC + offset). */
function zoneOffsetMs(instant: number, zone: string): number {
  const local = localDateTime(new Date(instant), zone);
  const localAsUtc = Date.UTC(local.year, local.month - 1, local.day, local.hour, local.minute, local.second);
  return localAsUtc - Math.floor(instant / 1000) * 1000;
}

/**
 * The instant at which the wall clock in `zone` shows the given local date and time. Looks the
 * offset up twice so a date across a DST change lands right; a time skipped by a spring-forward
 * gap resolves to a time after the gap (02:30 → 03:30 on a one-hour change).
 */
export function zonedTimeToUtc(year: number, month: number, day: number, minuteOfDay: number, zone: string): Date {
  const wallClock = Date.UTC(year, month - 1, day, 0, minuteOfDay);
  const firstGuess = wallClock - zoneOffsetMs(wallClock, zone);
  const secondGuess = wallClock - zoneOffsetMs(firstGuess, zone);
  const showsWallClock = (guess: number): boolean => guess + zoneOffsetMs(guess, zone) === wallClock;
  if (showsWallClock(secondGuess)) return new Date(secondGuess);
  if (showsWallClock(firstGuess)) return new Date(firstGuess);
  // The wall-clock time does not exist (spring-forward gap): take the later guess, past the gap.
  return new Date(Math.max(firstGuess, secondGuess));
}

function isInside(minuteOfDay: number, start: number, end: number): boolean {
  if (start === end) return false;
  return start < end ? minuteOfDay >= start && minuteOfDay < end : minuteOfDay >= start || minuteOfDay < end;
}

function isWeekday(weekday: number): boolean {
  return weekday >= 1 && weekday <= 5;
}

/** The local calendar date `days` after the given one, with its weekday. */
function shiftDate(year: number, month: number, day: number, days: number): { year: number; month: number; day: number; weekday: number } {
  const shifted = new Date(Date.UTC(year, month - 1, day + days));
  return { year: shifted.getUTCFullYear(), month: shifted.getUTCMonth() + 1, day: shifted.getUTCDate(), weekday: shifted.getUTCDay() };
}

/**
 * Whether `instant` is inside the local window. With `weekdaysOnly`, the window must have opened
 * on a Monday–Friday (so a 22:00–06:00 window opened on Friday still holds on Saturday 02:00).
 */
export function isInsideWindow(instant: Date, zone: string, window: TimeWindow, weekdaysOnly = false): boolean {
  const start = requireTimeOfDay(window.start);
  const end = requireTimeOfDay(window.end);
  const local = localDateTime(instant, zone);
  const minuteOfDay = local.hour * 60 + local.minute;
  if (!isInside(minuteOfDay, start, end)) return false;
  if (!weekdaysOnly) return true;
  const openedYesterday = start > end && minuteOfDay < end;
  const openedOn = openedYesterday ? shiftDate(local.year, local.month, local.day, -1) : local;
  return isWeekday(openedOn.weekday);
}

/**
 * The first instant strictly after `instant` at which the local clock shows `timeOfDay` (on a
 * Monday–Friday when `weekdaysOnly`).
 */
export function nextLocalTime(instant: Date, zone: string, timeOfDay: string, weekdaysOnly = false): Date {
  const minuteOfDay = requireTimeOfDay(timeOfDay);
  const today = localDateTime(instant, zone);
  // Nine days covers "after Friday's start time, on a Saturday" plus DST slop.
  for (let offset = 0; offset <= 9; offset += 1) {
    const date = shiftDate(today.year, today.month, today.day, offset);
    if (weekdaysOnly && !isWeekday(date.weekday)) continue;
    const candidate = zonedTimeToUtc(date.year, date.month, date.day, minuteOfDay, zone);
    if (candidate.getTime() > instant.getTime()) return candidate;
  }
  throw new Error(`no ${timeOfDay} found in ${zone} after ${instant.toISOString()}`);
}
