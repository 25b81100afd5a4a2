// Serving one request through the cascade across rates: each stage's rate in turn, plain; a row
// is answered by the first stage whose top softmax probability reaches that stage's threshold
// (the last stage answers the rest). A later stage runs only when the deadline leaves time for it
// (elapsed + predicted wait + its predicted service); when it does not, the current answers stand.

import type { ServedManifest } from '../manifest.js';
import type { NdArray } from '../ndarray.js';
import type { JobResult } from '../scheduler.js';
import type { InferResult } from '../sliced-model.js';
import type { ManifestCascade } from './cascade-spec.js';
import { confidence } from './math.js';

export interface CascadeContext {
  cascade: ManifestCascade;
  manifest: ServedManifest;
  /** Run the request at rate index `index` (a job of its own, plain). */
  submit(index: number): Promise<JobResult>;
  /** Predicted wait + service of the request at rate index `index`, ms. */
  predictMs(index: number): number;
}

export async function runCascade(ctx: CascadeContext, rows: number, deadlineMs: number, arrivedAt: number, wanted: string[], predictedMs: number): Promise<InferResult> {
  const { stages } = ctx.cascade;
  const rates = ctx.manifest.rates;
  const output = ctx.manifest.outputs[0]!.name;
  let answer: Float32Array | null = null;
  let classes = 0;
  const done = new Uint8Array(rows);
  const ran: number[] = [];
  let macs = 0;
  let queueMs = 0;
  let serviceMs = 0;
  let batchRows = rows;
  for (let j = 0; j < stages.length; j++) {
    const index = rates.findIndex((r) => Math.abs(r.rate - stages[j]!.rate) < 1e-9);
    if (j > 0 && Number.isFinite(deadlineMs) && performance.now() - arrivedAt + ctx.predictMs(index) > deadlineMs) break;
    const result = await ctx.submit(index);
    ran.push(stages[j]!.rate);
    macs += rates[index]!.macs;
    queueMs += result.queueMs;
    serviceMs += result.serviceMs;
    batchRows = result.batchRows;
    const logits = result.outputs[output]!.data as Float32Array;
    classes = logits.length / rows;
    answer ??= new Float32Array(logits.length);
    const top = confidence(logits, classes);
    const threshold = stages[j]!.threshold ?? -Infinity;
    let open = 0;
    for (let i = 0; i < rows; i++) {
      if (done[i]) continue;
      answer.set(logits.subarray(i * classes, (i + 1) * classes), i * classes);
      if (j === stages.length - 1 || top.value[i]! >= threshold) done[i] = 1;
      else open++;
    }
    if (open === 0) break;
  }
  const outputs: Record<string, NdArray> = {};
  if (wanted.includes(output)) outputs[output] = { dtype: 'float32', dims: [rows, classes], data: answer! };
  return { outputs, rate: ran[ran.length - 1]!, queueMs, serviceMs, totalMs: performance.now() - arrivedAt, predictedMs, batchRows, macs, cascade: ran };
}
