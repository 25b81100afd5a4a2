// Evaluation and BatchNorm recalibration of one rate with the weights the trainer holds.
//
// Evaluation runs the rate's eval graph (the inference graph, parameters fed) over a split in
// stored order: accuracy = share of argmax(logits) = label and the mean cross-entropy
// −log softmax(z)[y] for classifiers, mean squared error otherwise.
// Recalibration (switchable BatchNorm, Slimmable Networks): the rate's stats graph runs BN in
// training mode with momentum 0, so each batch returns its own per-channel mean and variance;
// the rate's running statistics become their average over `samples` training examples (equal
// batches, so the mean is exactly the mean over all of them; the variance is the mean of the
// batch variances, what PyTorch's cumulative BN averaging gives). Each rate gets its own.

import { BatchIterator, materialize, type Split } from './data.js';
import type { EvalRow } from './checkpoint.js';
import type { RateRunner } from './rate-graphs.js';

export const EVAL_BATCH = 500;

export async function evaluateRate(runner: RateRunner, split: Split, params: Map<string, Float32Array>, stats: Map<string, Float32Array>, classification: boolean, onProgress?: (done: number, total: number) => void): Promise<EvalRow> {
  const g = (await runner.session('eval'))!;
  const n = split.x.dims[0]!;
  let correct = 0;
  let lossSum = 0;
  for (let start = 0; start < n; start += EVAL_BATCH) {
    const count = Math.min(EVAL_BATCH, n - start);
    const { x, y } = materialize(split, Int32Array.from({ length: count }, (_, i) => start + i));
    const out = await g.session.run(runner.feeds(g.signature, { batch: x }, params, stats));
    const z = out.get(g.signature.outputs[0]!.name)!.data as Float32Array;
    const width = z.length / count;
    for (let i = 0; i < count; i++) {
      if (classification) {
        const label = Number((y.data as BigInt64Array)[i]);
        let best = 0;
        let max = -Infinity;
        for (let c = 0; c < width; c++) if (z[i * width + c]! > max) [max, best] = [z[i * width + c]!, c];
        let sum = 0;
        for (let c = 0; c < width; c++) sum += Math.exp(z[i * width + c]! - max);
        lossSum += Math.log(sum) + max - z[i * width + label]!;
        if (best === label) correct++;
      } else {
        const t = y.data as Float32Array;
        for (let c = 0; c < width; c++) lossSum += (z[i * width + c]! - t[i * width + c]!) ** 2 / width;
      }
    }
    onProgress?.(start + count, n);
  }
  return { rate: runner.rate, accuracy: classification ? correct / n : null, loss: lossSum / n, samples: n };
}

/** The rate's BatchNorm statistics re-estimated on `samples` training examples (null: it has no BatchNorm). */
export async function recalibrateRate(runner: RateRunner, split: Split, params: Map<string, Float32Array>, stats: Map<string, Float32Array>, samples: number, seed: number): Promise<Map<string, Float32Array> | null> {
  const g = await runner.session('stats');
  if (!g) return null;
  const batch = g.signature.batch;
  const batches = Math.max(1, Math.floor(Math.min(samples, split.x.dims[0]!) / batch));
  const it = new BatchIterator(split, { batchSize: batch, seed });
  const sums = new Map<string, Float64Array>();
  for (let b = 0; b < batches; b++) {
    const { x } = it.next();
    const out = await g.session.run(runner.feeds(g.signature, { batch: x }, params, stats));
    for (const o of g.signature.outputs) {
      const v = out.get(o.name)!.data as Float32Array;
      const sum = sums.get(o.parameter!) ?? new Float64Array(v.length);
      for (let i = 0; i < v.length; i++) sum[i] += v[i]!;
      sums.set(o.parameter!, sum);
    }
  }
  return new Map([...sums].map(([name, sum]) => [name, Float32Array.from(sum, (s) => s / batches)]));
}
