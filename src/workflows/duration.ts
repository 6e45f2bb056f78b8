// ISO-8601 durations (PnYnMnWnDTnHnMnS) as used by workflow definitions: waits, timeouts,
// cooldowns, goal windows, count windows, date-trait offsets. Years and months are calendar
// units (added in UTC, clamping to the end of a shorter month); everything else is fixed-length.

export interface Duration {
  /** "-P3D": only meaningful for date-trait offsets ("3 days before"); validation rejects it elsewhere */
  negative: boolean;
  years: number;
  months: number;
  weeks: number;
  days: number;
  hours: number;
  minutes: number;
  /** may be fractional ("PT0.5S") */
  seconds: number;
}

export class DurationError extends Error {
  readonly input: unknown;
  constructor(input: unknown, reason: string) {
    super(`invalid ISO-8601 duration ${JSON.stringify(input)}: ${reason}`);
    this.name = 'DurationError';
    this.input = input;
  }
}

const DURATION_PATTERN =
  /^(-)?P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$/;

const MS_PER_SECOND = 1000;
const MS_PER_MINUTE = 60 * MS_PER_SECOND;
const MS_PER_HOUR = 60 * MS_PER_MINUTE;
const MS_PER_DAY = 24 * MS_PER_HOUR;

/** Parses an ISO-8601 duration; throws DurationError with the reason when it is not one. */
export function parseDuration(input: string): Duration {
  if (typeof input !== 'string') throw new DurationError(input, 'expected a string');
  const match = DURATION_PATTERN.exec(input);
  if (!match) throw new DurationError(input, 'expected the form PnYnMnWnDTnHnMnS, e.g. P3D, PT24H, PT5S');
  if (input.endsWith('T')) throw new DurationError(input, '"T" must be followed by hours, minutes or seconds');
  const [, sign, years, months, weeks, days, hours, minutes, seconds] = match;
  if ([years, months, weeks, days, hours, minutes, seconds].every((part) => part === undefined)) {
    throw new DurationError(input, 'at least one component is required, e.g. P1D');
  }
  return {
    negative: sign === '-',
    years: Number(years ?? 0),
    months: Number(months ?? 0),
    weeks: Number(weeks ?? 0),
    days: Number(days ?? 0),
    hours: Number(hours ?? 0),
    minutes: Number(minutes ?? 0),
    seconds: Number(seconds ?? 0),
  };
}

/** The parse error's message, or null when `input` is a valid duration. */
export function durationError(input: string): string | null {
  try {
    parseDuration(input);
    return null;
  } catch (error) {
    return (error as Error).message;
  }
}

function daysInMonthUtc(year: number, monthIndex: number): number {
  return new Date(Date.UTC(year, monthIndex + 1, 0)).getUTCDate();
}

/**
 * `date` + `duration`. Years/months move the calendar date in UTC and clamp the day to the
 * target month's length (Jan 31 + P1M = Feb 28/29); weeks/days/hours/minutes/seconds are exact.
 * A negative duration subtracts.
 */
export function addDuration(date: Date, duration: string | Duration): Date {
  const parsed = typeof duration === 'string' ? parseDuration(duration) : duration;
  const sign = parsed.negative ? -1 : 1;
  let ms = date.getTime();
  if (Number.isNaN(ms)) throw new RangeError('addDuration: invalid date');

  const calendarMonths = sign * (parsed.years * 12 + parsed.months);
  if (calendarMonths !== 0) {
    const start = new Date(ms);
    const totalMonths = start.getUTCFullYear() * 12 + start.getUTCMonth() + calendarMonths;
    const year = Math.floor(totalMonths / 12);
    const monthIndex = totalMonths - year * 12;
    const day = Math.min(start.getUTCDate(), daysInMonthUtc(year, monthIndex));
    const timeOfDay = ms - Date.UTC(start.getUTCFullYear(), start.getUTCMonth(), start.getUTCDate());
    ms = Date.UTC(year, monthIndex, day) + timeOfDay;
  }

  ms +=
    sign *
    ((parsed.weeks * 7 + parsed.days) * MS_PER_DAY +
      parsed.hours * MS_PER_HOUR +
      parsed.minutes * MS_PER_MINUTE +
      Math.round(parsed.seconds * MS_PER_SECOND));
  return new Date(ms);
}

/** `date` − `duration` (e.g. the start of a "within P7D" count window). */
export function subtractDuration(date: Date, duration: string | Duration): Date {
  const parsed = typeof duration === 'string' ? parseDuration(duration) : duration;
  return addDuration(date, { ...parsed, negative: !parsed.negative });
}
