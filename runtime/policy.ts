// The rate policy: a pure function from what is known about each rate (accuracy, predicted service
// time) and the load (predicted queue wait) to the rate a request is served at.
//
// Latency-constrained mode (after SLO-aware neural networks and INFaaS): among the rates that
// meet the accuracy floor and that the arrival rate can sustain (λ · service ≤ workers · ρ, the
// queue's stability condition), take the most accurate one whose predicted wait + service time
// fits the remaining budget; ties go to the cheaper rate. When nothing fits, serve the smallest
// allowed rate (the answer is late by the least), or shed when the caller asked for it.
// Accuracy per rate comes from the manifest when an eval recorded it; otherwise rates are ranked
// by their value (a wider slice is never worse than a narrower one of the same weights).
//
// Accuracy-constrained mode (objective 'compute', what a request's minAccuracy asks for): among
// the options that meet the floor, are sustainable and fit the budget, the one that spends the
// fewest MACs (ties: the more accurate). Combined with a deadline this is "least compute meeting
// A within S"; when no option meeting A fits S, the floor wins as in latency mode (the smallest
// allowed option, late, or shed). Options are not only rates: the runtime adds a rate served with
// early exits and a cascade across rates, each with its measured accuracy and mean MACs.

export interface RateOption {
  rate: number;
  /** Higher is better; comparable across options. */
  accuracy: number;
  /** Predicted service time of this request at this rate, ms. */
  serviceMs: number;
  /** Mean MACs per sample (needed by objective 'compute'; default: ranked by `rate`). */
  macs?: number;
}

export interface PolicyRequest {
  /** Time left until the deadline, ms (Infinity: no deadline). */
  budgetMs: number;
  /** Accuracy floor; options below it are not used when any option meets it. */
  minAccuracy?: number;
  /** Refuse the request instead of answering late when no rate fits. */
  shed?: boolean;
  /** 'latency' (default): the most accurate option in time; 'compute': the cheapest that meets minAccuracy in time. */
  objective?: 'latency' | 'compute';
}

export interface PolicyLoad {
  /** Predicted wait before a worker starts this request, ms. */
  waitMs: number;
  /**
   * The longest service time the current arrival rate sustains (workers × target utilization ÷
   * arrivals per ms). A slower rate would grow the queue even when it is empty right now, so it
   * is left out (the smallest allowed rate stays, whatever its time).
   */
  maxServiceMs?: number;
}

export type Decision =
  | { kind: 'serve'; index: number; predictedMs: number; meetsDeadline: boolean }
  | { kind: 'shed'; predictedMs: number };

export function chooseRate(options: readonly RateOption[], request: PolicyRequest, load: PolicyLoad): Decision {
  if (options.length === 0) throw new Error('chooseRate needs at least one rate');
  let allowed = options.map((_, i) => i);
  if (request.minAccuracy !== undefined) {
    const floor = request.minAccuracy;
    const meeting = allowed.filter((i) => options[i]!.accuracy >= floor);
    // An unreachable floor leaves only the most accurate rate: the closest to what was asked.
    allowed = meeting.length > 0 ? meeting : [mostAccurate(options, allowed)];
  }
  if (load.maxServiceMs !== undefined) {
    const sustainable = allowed.filter((i) => options[i]!.serviceMs <= load.maxServiceMs!);
    allowed = sustainable.length > 0 ? sustainable : [smallest(options, allowed)];
  }
  const prefer = request.objective === 'compute' && request.minAccuracy !== undefined ? cheaper : better;
  let best = -1;
  for (const i of allowed) {
    const o = options[i]!;
    if (load.waitMs + o.serviceMs > request.budgetMs) continue;
    if (best < 0 || prefer(o, options[best]!)) best = i;
  }
  if (best >= 0) return { kind: 'serve', index: best, predictedMs: load.waitMs + options[best]!.serviceMs, meetsDeadline: true };
  const cheapest = smallest(options, allowed);
  const predictedMs = load.waitMs + options[cheapest]!.serviceMs;
  if (request.shed) return { kind: 'shed', predictedMs };
  return { kind: 'serve', index: cheapest, predictedMs, meetsDeadline: false };
}

function better(a: RateOption, b: RateOption): boolean {
  return a.accuracy > b.accuracy || (a.accuracy === b.accuracy && a.serviceMs < b.serviceMs);
}

function cost(o: RateOption): number {
  return o.macs ?? o.rate;
}

function cheaper(a: RateOption, b: RateOption): boolean {
  return cost(a) < cost(b) || (cost(a) === cost(b) && better(a, b));
}

/**
 * The smallest rate, not the smallest prediction: on thin models neighbouring rates differ by
 * less than the profile's noise, and the smallest rate is the one that is reliably cheapest.
 */
function smallest(options: readonly RateOption[], indices: number[]): number {
  return indices.reduce((a, b) => (options[b]!.rate < options[a]!.rate ? b : a));
}

function mostAccurate(options: readonly RateOption[], indices: number[]): number {
  return indices.reduce((a, b) => (better(options[b]!, options[a]!) ? b : a));
}

/**
 * Accuracy used to rank rates: the recorded one when every rate has it, else the rate itself.
 * `recorded` tells whether an accuracy floor can be honoured.
 */
export function rankAccuracy(rates: readonly { rate: number; accuracy?: number }[]): { values: number[]; recorded: boolean } {
  const recorded = rates.length > 0 && rates.every((r) => typeof r.accuracy === 'number' && Number.isFinite(r.accuracy));
  return { values: rates.map((r) => (recorded ? r.accuracy! : r.rate)), recorded };
}
