import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DurationError, addDuration, durationError, parseDuration, subtractDuration } from '../../src/workflows/duration.ts';

const iso = (date: Date) => date.toISOString();

test('parses every component of PnYnMnWnDTnHnMnS', () => {
  assert.deepEqual(parseDuration('P1Y2M3W4DT5H6M7.5S'), {
    negative: false, years: 1, months: 2, weeks: 3, days: 4, hours: 5, minutes: 6, seconds: 7.5,
  });
  assert.equal(parseDuration('PT5S').seconds, 5);
  assert.equal(parseDuration('P3D').days, 3);
  assert.equal(parseDuration('P2M').months, 2);
  assert.equal(parseDuration('PT2M').minutes, 2, 'M after T is minutes');
  assert.equal(parseDuration('-P3D').negative, true);
});

test('rejects malformed durations with a message naming the input', () => {
  for (const bad of ['', 'P', 'PT', '3D', 'P3', 'P1.5D', 'PT1H2D', 'P1D2Y', 'p3d', 'P3D ', 'P-3D']) {
    assert.throws(() => parseDuration(bad), (error: unknown) => {
      assert.ok(error instanceof DurationError, `${bad} should throw DurationError`);
      assert.ok(error.message.startsWith(`invalid ISO-8601 duration ${JSON.stringify(bad)}:`), error.message);
      return true;
    });
  }
  assert.equal(durationError('P3D'), null);
  assert.match(durationError('P3X') ?? '', /PnYnMnWnDTnHnMnS/);
});

test('adds fixed units exactly', () => {
  const start = new Date('2026-03-02T10:00:00.000Z');
  assert.equal(iso(addDuration(start, 'PT5S')), '2026-03-02T10:00:05.000Z');
  assert.equal(iso(addDuration(start, 'PT24H')), '2026-03-03T10:00:00.000Z');
  assert.equal(iso(addDuration(start, 'P3D')), '2026-03-05T10:00:00.000Z');
  assert.equal(iso(addDuration(start, 'P1W')), '2026-03-09T10:00:00.000Z');
  assert.equal(iso(addDuration(start, 'PT1H30M')), '2026-03-02T11:30:00.000Z');
  assert.equal(iso(addDuration(start, 'PT0.25S')), '2026-03-02T10:00:00.250Z');
});

test('adds months and years on the UTC calendar, clamping to the end of the month', () => {
  assert.equal(iso(addDuration(new Date('2026-01-31T08:00:00Z'), 'P1M')), '2026-02-28T08:00:00.000Z');
  assert.equal(iso(addDuration(new Date('2028-01-31T08:00:00Z'), 'P1M')), '2028-02-29T08:00:00.000Z', 'leap year');
  assert.equal(iso(addDuration(new Date('2026-12-15T00:00:00Z'), 'P2M')), '2027-02-15T00:00:00.000Z', 'across a year end');
  assert.equal(iso(addDuration(new Date('2028-02-29T12:00:00Z'), 'P1Y')), '2029-02-28T12:00:00.000Z');
  assert.equal(iso(addDuration(new Date('2026-01-31T00:00:00Z'), 'P1M1D')), '2026-03-01T00:00:00.000Z', 'months first, then days');
});

test('negative durations and subtractDuration go back in time', () => {
  const start = new Date('2026-03-31T10:00:00.000Z');
  assert.equal(iso(addDuration(start, '-P3D')), '2026-03-28T10:00:00.000Z');
  assert.equal(iso(subtractDuration(start, 'P1M')), '2026-02-28T10:00:00.000Z');
  assert.equal(iso(subtractDuration(start, 'PT5S')), '2026-03-31T09:59:55.000Z');
});

test('addDuration refuses an invalid date', () => {
  assert.throws(() => addDuration(new Date('nope'), 'P1D'), RangeError);
});
