// Latency profile per rate: service time as `intercept + slope · batch` (INFaaS's per-variant
// model), fitted by least squares on a short measurement at load, then corrected online by an
// exponentially weighted moving average of observed ÷ predicted, so a slowdown from co-located
// work (or a faster warm cache) moves every prediction of that rate within a few requests. A
// correction that is not refreshed relaxes back toward the fitted line (half-life `relaxMs`):
// a rate that looked slow during a burst of interference would otherwise never be chosen again,
// and so never be measured again.

export interface LatencySample {
  batch: number;
  ms: number;
}

export interface LinearFit {
  intercept: number;
  slope: number;
}

/** Least-squares line through the samples; one distinct batch size gives a line through the origin's slope. */
export function fitLine(samples: readonly LatencySample[]): LinearFit {
  if (samples.length === 0) throw new Error('fitLine needs samples');
  const n = samples.length;
  const meanB = samples.reduce((s, x) => s + x.batch, 0) / n;
  const meanMs = samples.reduce((s, x) => s + x.ms, 0) / n;
  let sxx = 0;
  let sxy = 0;
  for (const x of samples) {
    sxx += (x.batch - meanB) ** 2;
    sxy += (x.batch - meanB) * (x.ms - meanMs);
  }
  if (sxx === 0) return { intercept: 0, slope: meanMs / meanB };
  const slope = Math.max(0, sxy / sxx);
  return { intercept: Math.max(0, meanMs - slope * meanB), slope };
}

export interface RateProfileSnapshot {
  intercept: number;
  slope: number;
  /** Current observed ÷ fitted correction. */
  factor: number;
  observed: number;
}

export class LatencyProfile {
  private readonly factors: number[];
  private readonly counts: number[];
  private readonly observedAt: number[];

  constructor(
    private readonly fits: LinearFit[],
    /** EWMA weight of each new observation. */
    private readonly alpha = 0.1,
    private readonly relaxMs = 2000,
  ) {
    this.factors = fits.map(() => 1);
    this.counts = fits.map(() => 0);
    this.observedAt = fits.map(() => 0);
  }

  static fromSamples(samples: readonly LatencySample[][], alpha?: number, relaxMs?: number): LatencyProfile {
    return new LatencyProfile(samples.map(fitLine), alpha, relaxMs);
  }

  /** The correction of rate `index` at `now`: the EWMA, relaxed toward 1 since it was last fed. */
  private factor(index: number, now: number): number {
    const idle = Math.max(0, now - this.observedAt[index]!);
    return 1 + (this.factors[index]! - 1) * 0.5 ** (idle / this.relaxMs);
  }

  get size(): number {
    return this.fits.length;
  }

  /** Predicted service time of `batch` rows at rate index `index`, ms. */
  predict(index: number, batch: number, now = performance.now()): number {
    const fit = this.fits[index]!;
    return (fit.intercept + fit.slope * batch) * this.factor(index, now);
  }

  /** Fold one observed service time into the correction of that rate. */
  observe(index: number, batch: number, ms: number, now = performance.now()): void {
    const fit = this.fits[index]!;
    const base = fit.intercept + fit.slope * batch;
    if (!(base > 0) || !Number.isFinite(ms) || ms < 0) return;
    const ratio = ms / base;
    this.factors[index] = (1 - this.alpha) * this.factor(index, now) + this.alpha * ratio;
    this.observedAt[index] = now;
    this.counts[index]! += 1;
  }

  snapshot(): RateProfileSnapshot[] {
    const now = performance.now();
    return this.fits.map((f, i) => ({ intercept: f.intercept, slope: f.slope, factor: this.factor(i, now), observed: this.counts[i]! }));
  }
}

/**
 * Arrivals per ms, exponentially decayed with time constant `tauMs`: each arrival adds 1/τ and
 * the sum decays by e^(−Δt/τ), so a steady stream of λ per ms reads λ, and a 10× step is
 * followed within about 2τ.
 */
export class ArrivalRate {
  private value = 0;
  private last = Number.NaN;

  constructor(private readonly tauMs = 1000) {}

  /** Count one arrival at `now` (ms, performance.now()). */
  arrive(now: number): void {
    this.value = this.at(now) + 1 / this.tauMs;
    this.last = now;
  }

  /** The rate at `now`, arrivals per ms. */
  at(now: number): number {
    if (Number.isNaN(this.last)) return 0;
    return this.value * Math.exp(-Math.max(0, now - this.last) / this.tauMs);
  }
}
