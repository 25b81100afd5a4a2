// Cascade thresholds: the calibrated cascade reaches its target on the calibration data, answers
// early whatever it can, and a brute force over every threshold finds nothing cheaper.

import { describe, expect, it } from 'vitest';
import { calibrateCascade, evaluateCascade, type CascadeStage } from '../runtime/cascade.js';
import { Rng } from '../compiler/rng.js';

/** Stages whose confidence predicts correctness: right answers are confident more often. */
function syntheticStages(n: number, accuracies: number[], costs: number[], seed: number): CascadeStage[] {
  const rng = new Rng(seed);
  return accuracies.map((acc, j) => {
    const correct: boolean[] = [];
    const confidence: number[] = [];
    for (let i = 0; i < n; i++) {
      const right = rng.next() < acc;
      correct.push(right);
      confidence.push(Math.round((right ? 0.5 + 0.5 * rng.next() : 0.7 * rng.next()) * 100) / 100);
    }
    return { id: `stage-${j}`, cost: costs[j]!, confidence, correct };
  });
}

describe('calibrateCascade', () => {
  it('meets the target and answers early where it can', () => {
    const stages = syntheticStages(400, [0.7, 0.85, 0.95], [10, 20, 70], 7);
    const full = evaluateCascade(stages, [Infinity, Infinity, -Infinity]);
    const target = full.accuracy - 0.003;
    const c = calibrateCascade(stages, target);
    expect(c.met).toBe(true);
    expect(c.accuracy).toBeGreaterThanOrEqual(target);
    expect(c.answered[0]! + c.answered[1]!).toBeGreaterThan(0);
    expect(c.meanCost).toBeLessThan(full.meanCost);
    // the outcome is what evaluating the thresholds gives
    expect(evaluateCascade(stages, c.thresholds)).toEqual({ accuracy: c.accuracy, meanCost: c.meanCost, answered: c.answered });
  });

  it('the first threshold is the smallest that keeps the target (brute force, two stages)', () => {
    const stages = syntheticStages(200, [0.75, 0.9], [1, 4], 11);
    const target = 0.88;
    const c = calibrateCascade(stages, target);
    const values = [...new Set(Array.from(stages[0]!.confidence))].sort((a, b) => a - b);
    const ok = values.filter((t) => evaluateCascade(stages, [t, -Infinity]).accuracy >= target);
    expect(c.thresholds[0]).toBe(ok[0] ?? Infinity);
  });

  it('a target the last stage misses answers nothing early', () => {
    const stages = syntheticStages(100, [0.6, 0.8], [1, 1], 3);
    const c = calibrateCascade(stages, 0.99);
    expect(c.met).toBe(false);
    expect(c.thresholds[0]).toBe(Infinity);
    expect(c.answered).toEqual([0, 100]);
  });

  it('perfectly confident right answers all leave at the first stage', () => {
    const stages: CascadeStage[] = [
      { id: 'exit', cost: 1, confidence: [0.99, 0.98, 0.2, 0.3], correct: [1, 1, 0, 0] },
      { id: 'full', cost: 9, confidence: [0.9, 0.9, 0.9, 0.9], correct: [1, 1, 1, 1] },
    ];
    const c = calibrateCascade(stages, 1);
    expect(c.thresholds[0]).toBe(0.98);
    expect(c.accuracy).toBe(1);
    expect(c.meanCost).toBe((1 + 1 + 10 + 10) / 4);
  });

  it('refuses stages of different lengths', () => {
    expect(() => calibrateCascade([{ id: 'a', cost: 1, confidence: [1], correct: [] }], 0.5)).toThrow(/expected 1/);
  });
});
