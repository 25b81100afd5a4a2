// Confidence cascades: thresholds for answering early, calibrated from an eval run.
//
// A cascade is a list of stages in the order a request meets them (the exits of a low rate, that
// rate's full output, a higher rate, ...). A request is answered by the first stage whose
// confidence (e.g. the top softmax probability) is ≥ that stage's threshold; the last stage always
// answers. Given, per stage and per calibration sample, the confidence and whether the stage's
// answer was right, calibrateCascade picks the thresholds greedily, stage by stage: each the
// smallest value for which the whole cascade (later stages not yet answering, so the last stage
// takes the rest) still reaches the target accuracy. Every accepted choice keeps the cascade at or
// above the target, so the final one is too (on the calibration data; held-out data may differ,
// which is why the runtime recalibrates as traffic drifts). Pure functions, no onnxruntime.

export interface CascadeStage {
  /** What the stage is, for reports (e.g. `rate-0.250/exit-0`). */
  id: string;
  /** Cost of evaluating this stage after the previous one was (MACs per sample, incremental). */
  cost: number;
  /** Per sample: the stage's confidence in its answer. */
  confidence: ArrayLike<number>;
  /** Per sample: whether its answer was right (true/false or 1/0). */
  correct: ArrayLike<boolean | number>;
}

export interface CascadeOutcome {
  accuracy: number;
  /** Mean cost per sample: a sample answered at stage j paid stages 0..j. */
  meanCost: number;
  /** Samples answered per stage. */
  answered: number[];
}

export interface CascadeCalibration extends CascadeOutcome {
  /** One per stage; the last is always -Infinity (it answers everything left). Infinity: never answers. */
  thresholds: number[];
  target: number;
  /** False when even the last stage alone misses the target (then no stage answers early). */
  met: boolean;
}

function checkStages(stages: CascadeStage[]): number {
  if (stages.length === 0) throw new Error('cascade: no stages');
  const n = stages[0]!.confidence.length;
  for (const s of stages) {
    if (s.confidence.length !== n || s.correct.length !== n) throw new Error(`cascade: stage ${s.id} has ${s.confidence.length} confidences and ${s.correct.length} answers, expected ${n}`);
  }
  return n;
}

/** Accuracy, cost and answers per stage of a cascade with the given thresholds. */
export function evaluateCascade(stages: CascadeStage[], thresholds: number[]): CascadeOutcome {
  const n = checkStages(stages);
  const answered = new Array<number>(stages.length).fill(0);
  let right = 0;
  let cost = 0;
  for (let i = 0; i < n; i++) {
    let spent = 0;
    for (let j = 0; j < stages.length; j++) {
      const s = stages[j]!;
      spent += s.cost;
      if (j === stages.length - 1 || s.confidence[i]! >= thresholds[j]!) {
        answered[j]!++;
        if (s.correct[i]) right++;
        break;
      }
    }
    cost += spent;
  }
  return { accuracy: n > 0 ? right / n : 0, meanCost: n > 0 ? cost / n : 0, answered };
}

/** The smallest thresholds, stage by stage, that keep the cascade's accuracy ≥ `target` (see the header). */
export function calibrateCascade(stages: CascadeStage[], target: number): CascadeCalibration {
  const n = checkStages(stages);
  const last = stages[stages.length - 1]!;
  const thresholds = stages.map((_, j) => (j === stages.length - 1 ? -Infinity : Infinity));
  // samples not yet answered, and the right answers of those already answered
  let open = Array.from({ length: n }, (_, i) => i);
  let rightSoFar = 0;
  let lastRightOpen = open.reduce((a, i) => a + (last.correct[i] ? 1 : 0), 0);
  const met = n > 0 && lastRightOpen / n >= target;
  for (let j = 0; met && j < stages.length - 1; j++) {
    const s = stages[j]!;
    // answering the most confident first: sweep down the confidences, a tie enters as a whole
    const order = [...open].sort((a, b) => s.confidence[b]! - s.confidence[a]!);
    let here = 0;
    let lastHere = 0;
    let best = -1;
    for (let k = 0; k < order.length; k++) {
      const i = order[k]!;
      if (s.correct[i]) here++;
      if (last.correct[i]) lastHere++;
      const tieContinues = k + 1 < order.length && s.confidence[order[k + 1]!] === s.confidence[i];
      if (tieContinues) continue;
      if ((rightSoFar + here + lastRightOpen - lastHere) / n >= target) best = k;
    }
    if (best < 0) continue;
    thresholds[j] = s.confidence[order[best]!]!;
    const leaving = new Set(order.slice(0, best + 1));
    for (const i of leaving) {
      if (s.correct[i]) rightSoFar++;
      if (last.correct[i]) lastRightOpen--;
    }
    open = open.filter((i) => !leaving.has(i));
  }
  return { ...evaluateCascade(stages, thresholds), thresholds, target, met };
}

export interface SelectiveStage {
  /** Per sample: the stage's confidence; NaN where the sample never reached the stage. */
  confidence: ArrayLike<number>;
  /** Per sample: whether the stage's answer agrees with the reference (the final model's, or the label). */
  agree: ArrayLike<boolean | number>;
}

export interface SelectiveThreshold {
  /** Infinity when no threshold reaches the target on enough samples. */
  threshold: number;
  /** Samples the stage answers at that threshold (among those that reached it). */
  answered: number;
  /** Agreement among the answered ones (NaN when none). */
  agreement: number;
}

/**
 * Thresholds for early exits that each answer only where they agree with the reference: stage by
 * stage over the samples earlier stages left, the smallest threshold whose answered samples agree
 * at least `target` of the time, counted with one disagreement added (agreed ÷ (answered + 1)), so
 * that a stage must answer about 1 ÷ (1 − target) samples without a miss before it may answer at
 * all, and at least `minAnswered`. This is the per-stage condition (each exit is switched on only
 * when its own answers agree), stricter than calibrateCascade's whole-cascade target, which lets
 * an early stage spend the slack the later ones leave.
 */
export function calibrateSelective(stages: SelectiveStage[], target: number, minAnswered = 1): SelectiveThreshold[] {
  const n = stages[0]?.confidence.length ?? 0;
  let open = Array.from({ length: n }, (_, i) => i);
  return stages.map((s) => {
    const reached = open.filter((i) => !Number.isNaN(s.confidence[i]!));
    const order = reached.sort((a, b) => s.confidence[b]! - s.confidence[a]!);
    let agreed = 0;
    let best = -1;
    let bestAgreed = 0;
    for (let k = 0; k < order.length; k++) {
      if (s.agree[order[k]!]) agreed++;
      const tieContinues = k + 1 < order.length && s.confidence[order[k + 1]!] === s.confidence[order[k]!];
      if (tieContinues) continue;
      if (k + 1 >= minAnswered && agreed / (k + 2) >= target) {
        best = k;
        bestAgreed = agreed;
      }
    }
    if (best < 0) return { threshold: Infinity, answered: 0, agreement: Number.NaN };
    const leaving = new Set(order.slice(0, best + 1));
    open = open.filter((i) => !leaving.has(i));
    return { threshold: s.confidence[order[best]!]!, answered: best + 1, agreement: bestAgreed / (best + 1) };
  });
}
