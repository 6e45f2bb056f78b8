// Progress lines go to stderr (stdout carries only the final table).
const t0 = performance.now();

export function progress(scope: string, message: string): void {
  const s = ((performance.now() - t0) / 1000).toFixed(1).padStart(6);
  process.stderr.write(`[bench ${s}s] ${scope}: ${message}\n`);
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export function fmt(n: number, digits = 0): string {
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export function median(values: number[]): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Outside load above this many cores during a timed phase makes it "noisy". */
export const NOISY_OTHER_CORES = 0.25;

export interface Paired {
  value: number;
  baseline: number;
  /** median of the per-round ratios */
  ratio: number;
  /** e.g. "median of 3 rounds" or "median of 2 of 3 rounds (1 noisy round left out)" */
  basis: string;
}

/**
 * Combine interleaved rounds: per-round ratio = value[r] / baseline[r]. Rounds where outside load
 * hit either side are left out when at least one clean round remains; the medians are taken over
 * the rounds kept.
 */
export function pairRounds(rounds: { value: number; baseline: number; noisy: boolean }[]): Paired {
  const clean = rounds.filter((r) => !r.noisy);
  const kept = clean.length > 0 ? clean : rounds;
  const n = rounds.length;
  let basis: string;
  if (n === 1) basis = rounds[0]!.noisy ? 'NOISY: outside load during the run' : '';
  else if (clean.length === n) basis = `median of ${n} rounds`;
  else if (clean.length > 0) basis = `median of ${kept.length} of ${n} rounds; ${n - kept.length} noisy left out`;
  else basis = `median of ${n} rounds, ALL NOISY: outside load during every round`;
  return {
    value: median(kept.map((r) => r.value)),
    baseline: median(kept.map((r) => r.baseline)),
    ratio: median(kept.map((r) => r.value / r.baseline)),
    basis,
  };
}
