// `slicec eval DIR|MODEL --data SPEC`: per rate, accuracy (or loss) on the data's test split
// (validation, or the training examples when the source has neither), MACs, parameters and the
// median latency of one example, measured on the rate's own inference graph on one thread (the
// rates take turns, one run each per round). For a compiled folder the results go into
// manifest.json (rates[i].accuracy, loss, latencyMs).
//
// `slicec calibrate-cascade DIR --data SPEC`: every rate's top softmax probability and whether
// its answer is right, on the first share of the same split, then the cascade across rates
// (runtime/cascade.ts calibrateCascade) that reaches the target accuracy (default: the widest
// rate's on those samples) at the least mean MACs, over every chain of rates that ends with the
// widest. The calibration samples are spread evenly over the split (indices ⌊k ÷ share⌋; splits
// are often sorted by class); the others are left for measuring. Recorded as manifest.cascade.

import { applyOverrides, type Plan } from './plan.js';
import type { ProgressReporter } from './progress.js';
import { modelCost } from './cost.js';
import { encodeModel } from './onnx-codec.js';
import { loadData } from './finetune.js';
import { recordAccuracy, writeManifest } from './reemit.js';
import { loadTarget } from './train-target.js';
import { buildForwardGraph } from './train-step.js';
import { evaluateRate } from '../runtime/evaluate.js';
import { GraphSession } from '../runtime/graph-session.js';
import { RateRunner } from '../runtime/rate-graphs.js';
import { materialize, type Split } from '../runtime/data.js';
import { calibrateCascade, type CascadeStage } from '../runtime/cascade.js';
import type { ManifestCascade } from '../runtime/adaptive/cascade-spec.js';
import { confidence } from '../runtime/adaptive/math.js';
import { Session, warnCudaFallback } from '../runtime/session.js';
import type { Manifest } from './artifacts.js';
import { ErrorCodes, userError } from './diagnostics.js';
import * as path from 'node:path';

export interface EvalRowOut {
  rate: number;
  accuracy: number | null;
  loss: number;
  macs: number;
  parameters: number;
  latencyMs: number;
}

export interface EvalOptions {
  data: string;
  device?: 'cpu' | 'cuda';
  /** Timed runs per rate for the latency (after 3 warm-up rounds; the rates take turns). */
  latencyRuns?: number;
  cacheDir?: string;
  /** Bars for the examples evaluated per rate and the latency rounds (the CLI's, on a terminal). */
  progress?: ProgressReporter | null;
  /** Image folders: resize every image (plan.json's data.resize, for this run). */
  resize?: NonNullable<Plan['data']['resize']>;
}

export async function evaluateTarget(location: string, opts: EvalOptions): Promise<{ rows: EvalRowOut[]; split: string; samples: number; manifestFile: string | null }> {
  const target = loadTarget(location);
  const plan: Plan = opts.resize ? applyOverrides(target.plan, { data: { resize: opts.resize } }, '--resize') : target.plan;
  const data = await loadData(opts.data, target, plan, opts.cacheDir);
  const [split, name] = data.test ? [data.test, 'test'] : data.val ? [data.val, 'validation'] : [data.train, 'train'];
  const classification = plan.loss.kind === 'cross-entropy';
  const rows: EvalRowOut[] = [];
  const one = materialize(split, [0]).x;
  const timed: { bytes: Uint8Array; input: string }[] = [];
  for (const { rate, model } of target.rates) {
    // the graph as it is on disk: its own weights and (per-rate) statistics, nothing fed
    const graph = buildForwardGraph(model, { lift: () => false, output: plan.loss.output });
    const runner = new RateRunner({ rate, positions: new Map(), build: () => ({ bytes: encodeModel(graph.model), signature: graph.signature }) }, { device: opts.device });
    try {
      const row = await evaluateRate(runner, split, new Map(), new Map(), classification, (done, total) => opts.progress?.update({ step: `evaluate rate ${rate}`, done, total }));
      const entry = target.manifest?.rates.find((r) => r.rate === rate);
      const cost = entry ? { macs: entry.macs, parameters: entry.parameters } : modelCost(model);
      rows.push({ rate, accuracy: row.accuracy, loss: row.loss, macs: cost.macs, parameters: cost.parameters, latencyMs: NaN });
      timed.push({ bytes: encodeModel(model), input: model.graph.inputs.find((v) => !v.const)!.name });
    } finally {
      await runner.release();
    }
  }
  const latencyMs = await latencies(timed, one, opts);
  rows.forEach((row, i) => { row.latencyMs = latencyMs[i]!; });
  let manifestFile: string | null = null;
  if (target.manifest) {
    const manifest = structuredClone(target.manifest);
    recordAccuracy(manifest, rows.map((r) => ({ rate: r.rate, accuracy: r.accuracy, loss: r.loss, samples: split.x.dims[0]! })));
    for (const r of manifest.rates) r.latencyMs = rows.find((x) => x.rate === r.rate)?.latencyMs;
    manifestFile = writeManifest(location, manifest);
  }
  return { rows, split: name, samples: split.x.dims[0]!, manifestFile };
}

/**
 * Batch-1 latency of each graph (ms, median of `latencyRuns` runs after 3 warm-up rounds), all
 * sessions open at once and timed in turns, one run of each graph per round: whatever slows the
 * process for a stretch of time then slows every rate alike. Timed one rate after the other, right
 * after the demo's fine-tune a whole rate's series ran 2–6× slow, and narrow rates read slower
 * than wide ones.
 */
async function latencies(graphs: { bytes: Uint8Array; input: string }[], x: ReturnType<typeof materialize>['x'], opts: EvalOptions): Promise<number[]> {
  const sessions: GraphSession[] = [];
  try {
    for (const g of graphs) sessions.push(await GraphSession.create(g.bytes, { device: opts.device }));
    const times = graphs.map((): number[] => []);
    const runs = opts.latencyRuns ?? 30;
    for (let i = 0; i < runs + 3; i++) {
      for (let k = 0; k < graphs.length; k++) {
        const t0 = performance.now();
        await sessions[k]!.run({ [graphs[k]!.input]: x });
        if (i >= 3) times[k]!.push(performance.now() - t0);
      }
      opts.progress?.update({ step: 'time batch-1 latency', done: i + 1, total: runs + 3 });
    }
    return times.map((t) => [...t].sort((a, b) => a - b)[Math.floor(t.length / 2)]!);
  } finally {
    for (const s of sessions) await s.release();
  }
}

export interface CascadeOptions {
  data: string;
  /** Accuracy the cascade must reach on the calibration samples (default: the widest rate's there). */
  target?: number;
  /** Share of the split used, from its start (default 0.5). */
  share?: number;
  device?: 'cpu' | 'cuda';
  cacheDir?: string;
  /** A bar per rate over the calibration samples (the CLI's, on a terminal). */
  progress?: ProgressReporter | null;
}

/** The calibration samples' indices: `count` spread evenly, ⌊k ÷ share⌋. */
export function calibrationPicks(count: number, share: number): Int32Array {
  return Int32Array.from({ length: count }, (_, k) => Math.floor(k / share));
}

/** Per rate: confidence and correctness of every calibration sample (rates ascending). */
async function rateStages(dir: string, manifest: Manifest, split: Split, picks: Int32Array, device: 'cpu' | 'cuda' | undefined, progress?: ProgressReporter | null): Promise<CascadeStage[]> {
  const input = manifest.inputs[0]!.name;
  const rates = [...manifest.rates].sort((a, b) => a.rate - b.rate);
  const stages: CascadeStage[] = [];
  for (const rate of rates) {
    const session = await Session.create(path.join(dir, rate.file), { device });
    warnCudaFallback(session.fallback);
    const count = picks.length;
    const conf = new Float32Array(count);
    const correct = new Uint8Array(count);
    try {
      for (let start = 0; start < count; start += 500) {
        const n = Math.min(500, count - start);
        const { x, y } = materialize(split, picks.subarray(start, start + n));
        const out = await session.run({ [input]: { dtype: 'float32', dims: x.dims, data: x.data as Float32Array } });
        const logits = Object.values(out)[0]!.data as Float32Array;
        const top = confidence(logits, logits.length / n);
        for (let i = 0; i < n; i++) {
          conf[start + i] = top.value[i]!;
          correct[start + i] = top.index[i] === Number((y.data as BigInt64Array)[i]) ? 1 : 0;
        }
        progress?.update({ step: `rate ${rate.rate}`, done: start + n, total: count });
      }
    } finally {
      await session.release();
    }
    stages.push({ id: `rate-${rate.rate}`, cost: rate.macs, confidence: conf, correct });
  }
  return stages;
}

export async function calibrateCascadeFolder(dir: string, opts: CascadeOptions): Promise<{ cascade: ManifestCascade; fullAccuracy: number; manifestFile: string }> {
  const target = loadTarget(dir);
  if (!target.manifest) throw userError(ErrorCodes.BAD_INPUT_FILE, `calibrate-cascade needs a compiled folder, got ${dir}`, { expected: 'a folder written by slicec compile', found: dir });
  if (target.plan.loss.kind !== 'cross-entropy') throw userError(ErrorCodes.UNSUPPORTED, 'calibrate-cascade needs a classifier', { expected: 'a cross-entropy plan', found: target.plan.loss.kind });
  const share = opts.share ?? 0.5;
  if (!(share > 0 && share <= 1)) throw userError(ErrorCodes.BAD_FLAG, `--share expects a number in (0, 1], got ${share}`, { expected: 'a number in (0, 1]', found: String(share) });
  const data = await loadData(opts.data, target, target.plan, opts.cacheDir);
  const [split, name] = data.test ? [data.test, 'test'] : data.val ? [data.val, 'validation'] : [data.train, 'train'];
  const count = Math.max(1, Math.floor(split.x.dims[0]! * share));
  const all = await rateStages(dir, target.manifest, split, calibrationPicks(count, share), opts.device, opts.progress);
  const widest = all[all.length - 1]!;
  const fullAccuracy = Array.from(widest.correct as Uint8Array).reduce((a, b) => a + b, 0) / count;
  const goal = opts.target ?? fullAccuracy;
  if (!(goal > 0 && goal <= 1)) throw userError(ErrorCodes.BAD_FLAG, `--target expects an accuracy in (0, 1], got ${goal}`, { expected: 'a number in (0, 1]', found: String(goal) });
  // every chain of rates that ends with the widest: the cheapest one that meets the goal
  let best: { stages: CascadeStage[]; result: ReturnType<typeof calibrateCascade> } | null = null;
  for (let mask = 0; mask < 2 ** (all.length - 1); mask++) {
    const stages = [...all.slice(0, -1).filter((_, i) => mask & (1 << i)), widest];
    const result = calibrateCascade(stages, goal);
    // a stage that never answers only costs: the same chain without it is cheaper
    const everyStageAnswers = result.thresholds.slice(0, -1).every(Number.isFinite);
    if (result.met && everyStageAnswers && (!best || result.meanCost < best.result.meanCost)) best = { stages, result };
  }
  if (!best) {
    throw userError(ErrorCodes.BAD_FLAG, `--target ${goal}: not even the widest rate reaches it (${(fullAccuracy * 100).toFixed(2)} %)`, { expected: `a target ≤ ${fullAccuracy}`, found: String(goal) });
  }
  const rateOf = (s: CascadeStage): number => target.manifest!.rates.find((r) => `rate-${r.rate}` === s.id)!.rate;
  const cascade: ManifestCascade = {
    target: goal,
    accuracy: best.result.accuracy,
    meanMacs: best.result.meanCost,
    samples: count,
    data: { spec: opts.data, split: name, share },
    stages: best.stages.map((s, j) => ({ rate: rateOf(s), threshold: j === best!.stages.length - 1 ? null : best!.result.thresholds[j]!, answered: best!.result.answered[j]! })),
  };
  const manifestFile = writeManifest(dir, { ...structuredClone(target.manifest), cascade } as Manifest);
  return { cascade, fullAccuracy, manifestFile };
}
