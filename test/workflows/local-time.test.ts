import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isInsideWindow, localDateTime, nextLocalTime, parseTimeOfDay, resolveTimeZone, zonedTimeToUtc } from '../../src/workflows/local-time.ts';

test('parses HH:MM and rejects anything else', () => {
  assert.equal(parseTimeOfDay('00:00'), 0);
  assert.equal(parseTimeOfDay('21:30'), 21 * 60 + 30);
  for (const bad of ['24:00', '9:00', '09:60', '0900', '09:00:00', '']) assert.equal(parseTimeOfDay(bad), null, bad);
});

test('unknown or empty zones fall back to UTC', () => {
  assert.equal(resolveTimeZone('Europe/Berlin'), 'Europe/Berlin');
  assert.equal(resolveTimeZone('Mars/Olympus_Mons'), 'UTC');
  assert.equal(resolveTimeZone(''), 'UTC');
  assert.equal(resolveTimeZone(42), 'UTC');
});

test('reads the local wall clock in a zone', () => {
  const local = localDateTime(new Date('2026-03-02T23:30:00Z'), 'Asia/Tokyo');
  assert.deepEqual(local, { year: 2026, month: 3, day: 3, hour: 8, minute: 30, second: 0, weekday: 2 });
});

test('zonedTimeToUtc honours the offset on each side of a DST change', () => {
  // New York moves to EDT (UTC-4) on Sunday 8 March 2026.
  assert.equal(zonedTimeToUtc(2026, 3, 7, 9 * 60, 'America/New_York').toISOString(), '2026-03-07T14:00:00.000Z');
  assert.equal(zonedTimeToUtc(2026, 3, 9, 9 * 60, 'America/New_York').toISOString(), '2026-03-09T13:00:00.000Z');
  // 02:30 does not exist that night: we land after the gap.
  assert.equal(zonedTimeToUtc(2026, 3, 8, 2 * 60 + 30, 'America/New_York').toISOString(), '2026-03-08T07:30:00.000Z');
});

test('windows that wrap midnight', () => {
  const quiet = { start: '21:00', end: '08:00' };
  // Berlin is UTC+1 in early March.
  assert.equal(isInsideWindow(new Date('2026-03-02T20:30:00Z'), 'Europe/Berlin', quiet), true, '21:30 local');
  assert.equal(isInsideWindow(new Date('2026-03-02T06:59:00Z'), 'Europe/Berlin', quiet), true, '07:59 local');
  assert.equal(isInsideWindow(new Date('2026-03-02T07:00:00Z'), 'Europe/Berlin', quiet), false, '08:00 local: end is exclusive');
  assert.equal(isInsideWindow(new Date('2026-03-02T19:59:00Z'), 'Europe/Berlin', quiet), false, '20:59 local');
  assert.equal(isInsideWindow(new Date('2026-03-02T20:30:00Z'), 'UTC', quiet), false, '20:30 in UTC');
});

test('weekdays-only windows count the day the window opened', () => {
  const night = { start: '22:00', end: '06:00' };
  assert.equal(isInsideWindow(new Date('2026-03-07T02:00:00Z'), 'UTC', night, true), true, 'Saturday 02:00 belongs to Friday night');
  assert.equal(isInsideWindow(new Date('2026-03-07T23:00:00Z'), 'UTC', night, true), false, 'Saturday night');
  assert.equal(isInsideWindow(new Date('2026-03-09T02:00:00Z'), 'UTC', night, true), false, 'Monday 02:00 belongs to Sunday night');
});

test('nextLocalTime finds the next wall-clock time, skipping weekends when asked', () => {
  const saturdayNoon = new Date('2026-03-07T12:00:00Z');
  assert.equal(nextLocalTime(saturdayNoon, 'UTC', '09:00').toISOString(), '2026-03-08T09:00:00.000Z');
  assert.equal(nextLocalTime(saturdayNoon, 'UTC', '09:00', true).toISOString(), '2026-03-09T09:00:00.000Z');
  assert.equal(nextLocalTime(saturdayNoon, 'America/New_York', '09:00', true).toISOString(), '2026-03-09T13:00:00.000Z', 'EDT after the change');
  assert.equal(nextLocalTime(new Date('2026-03-02T08:59:00Z'), 'UTC', '09:00').toISOString(), '2026-03-02T09:00:00.000Z', 'later today');
  assert.equal(nextLocalTime(new Date('2026-03-02T09:00:00Z'), 'UTC', '09:00').toISOString(), '2026-03-03T09:00:00.000Z', 'strictly after');
});
