// Row-wise softmax and top-1 of class scores, shared by the exit workers (is a head confident?),
// the cache trainer (teacher targets, agreement) and the cascade (is a rate's answer confident?).
// Confidence is the top softmax probability, the usual score of early-exit and cascade work.

/** softmax of each row of `logits` ([rows, classes], row-major), max-shifted for stability. */
export function softmaxRows(logits: ArrayLike<number>, classes: number): Float32Array {
  const out = new Float32Array(logits.length);
  for (let r = 0; r < logits.length / classes; r++) {
    const base = r * classes;
    let max = -Infinity;
    for (let c = 0; c < classes; c++) max = Math.max(max, logits[base + c]!);
    let sum = 0;
    for (let c = 0; c < classes; c++) sum += (out[base + c] = Math.exp(logits[base + c]! - max));
    for (let c = 0; c < classes; c++) out[base + c]! /= sum;
  }
  return out;
}

/** Per row: the index of the largest value and that value. */
export function topRows(values: ArrayLike<number>, classes: number): { index: Int32Array; value: Float32Array } {
  const rows = values.length / classes;
  const index = new Int32Array(rows);
  const value = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    let best = 0;
    for (let c = 1; c < classes; c++) if (values[r * classes + c]! > values[r * classes + best]!) best = c;
    index[r] = best;
    value[r] = values[r * classes + best]!;
  }
  return { index, value };
}

/** Top softmax probability and class of each row of logits. */
export function confidence(logits: ArrayLike<number>, classes: number): { index: Int32Array; value: Float32Array } {
  return topRows(softmaxRows(logits, classes), classes);
}
