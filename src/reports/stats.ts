// Small, dependency-free statistics for the reports: the normal distribution, two-proportion
// intervals and tests, medians. Formulas are spelled out in definitions.ts.

/** z for a two-sided 95% interval. */
export const Z95 = 1.959963984540054;

/**
 * Complementary error function, W. J. Cody's rational Chebyshev approximations (as in Cephes /
 * most libm): relative error below 1e-15 over the real line.
 */
export function erfc(x: number): number {
  if (Number.isNaN(x)) return Number.NaN;
  const ax = Math.abs(x);
  let result: number;
  if (ax < 0.5) {
    // erf via its own approximation, erfc = 1 - erf
    const t = x * x;
    const top = (((0.1857777061846031526730 * t + 3.161123743870565596947) * t + 113.8641541510501556495) * t + 377.4852376853020208137) * t + 3209.377589138469472562;
    const bottom = (((t + 23.60129095234412093499) * t + 244.0246379344441733056) * t + 1282.616526077372275645) * t + 2844.236833439170622273;
    return 1 - (x * top) / bottom;
  }
  if (ax < 4) {
    const top =
      (((((((2.15311535474403846343e-8 * ax + 0.564188496988670089180) * ax + 8.88314979438837594118) * ax + 66.1191906371416294775) * ax +
        298.635138197400131132) * ax + 881.952221241769090411) * ax + 1712.04761263407058314) * ax + 2051.07837782607146532) * ax +
      1230.33935479799725272;
    const bottom =
      (((((((ax + 15.7449261107098347253) * ax + 117.693950891312499305) * ax + 537.181101862009857509) * ax + 1621.38957456669018874) * ax +
        3290.79923573345962678) * ax + 4362.61909014324715820) * ax + 3439.36767414372163696) * ax + 1230.33935480374942043;
    result = Math.exp(-ax * ax) * (top / bottom);
  } else {
    const z = 1 / (ax * ax);
    const top = ((((0.0163153871373020978498 * z + 0.305326634961232344035) * z + 0.360344899949804439429) * z + 0.125781726111229246204) * z + 0.0160837851487422766278) * z + 6.58749161529837803157e-4;
    const bottom = ((((z + 2.56852019228982242072) * z + 1.87295284992346725209) * z + 0.527905102951428412248) * z + 0.0605183413124413191178) * z + 2.33520497626869185443e-3;
    const r = (z * top) / bottom;
    result = (Math.exp(-ax * ax) / ax) * (1 / Math.sqrt(Math.PI) - r);
  }
  return x < 0 ? 2 - result : result;
}

/** P(Z > z) for a standard normal Z. */
export function normalSurvival(z: number): number {
  return 0.5 * erfc(z / Math.SQRT2);
}

export interface ProportionComparison {
  /** p1 - p2, in percentage points */
  differencePoints: number;
  /** 95% interval of the difference, in points (unpooled standard error) */
  ci95: [number, number];
  /** two-sided p-value of the pooled two-proportion z-test */
  pValue: number;
  z: number | null;
}

/**
 * Compares x1/n1 with x2/n2: difference, unpooled 95% interval (Wald, clamped to [-100, 100]
 * points), pooled z-test. Null when a group is empty.
 */
export function compareProportions(x1: number, n1: number, x2: number, n2: number): ProportionComparison | null {
  if (n1 <= 0 || n2 <= 0) return null;
  const p1 = x1 / n1;
  const p2 = x2 / n2;
  const diff = p1 - p2;
  const se = Math.sqrt((p1 * (1 - p1)) / n1 + (p2 * (1 - p2)) / n2);
  const pooled = (x1 + x2) / (n1 + n2);
  const sePooled = Math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2));
  let z: number | null = null;
  let pValue: number;
  if (sePooled === 0) {
    pValue = 1; // both groups all-0% or all-100%: no evidence of a difference
  } else {
    z = diff / sePooled;
    pValue = Math.min(1, 2 * normalSurvival(Math.abs(z)));
  }
  // A difference of two proportions lies in [-1, 1]: the Wald interval is clamped to it.
  const clamp = (v: number) => Math.min(100, Math.max(-100, v * 100));
  return { differencePoints: diff * 100, ci95: [clamp(diff - Z95 * se), clamp(diff + Z95 * se)], pValue, z };
}

/** Median with linear interpolation between the two middle values (PostgreSQL percentile_cont(0.5)). */
export function median(values: number[]): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = (sorted.length - 1) / 2;
  const lo = sorted[Math.floor(mid)]!;
  const hi = sorted[Math.ceil(mid)]!;
  return lo + (hi - lo) * (mid - Math.floor(mid));
}

export const ratio = (num: number, den: number): number | null => (den > 0 ? num / den : null);
