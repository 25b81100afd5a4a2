// `slicec finetune DIR` and `slicec train MODEL.onnx`: the plan (plan.json or defaults, flags on
// top), the data checked against the model input, the trainer (runtime/trainer.ts) over every
// rate's graphs, then the trained weights written back (compiler/reemit.ts). Training a plain
// model is the same machinery with one rate, 1.

import * as path from 'node:path';
import { ErrorCodes, userError } from './diagnostics.js';
import { lockOutput } from './folder-lock.js';
import { applyOverrides, validatePlan, type Plan, type PlanOverrides } from './plan.js';
import { reemitCompiled, writeTrainedModel } from './reemit.js';
import { loadTarget, rateSpecs, STATS_BATCH, type TrainTarget } from './train-target.js';
import { loadDataset, materialize, type Dataset, type Split } from '../runtime/data.js';
import { withOutputs } from '../passes/calibrate-group-norm.js';
import { identityOn } from '../passes/insert-batch-norm.js';
import { runFloat } from '../runtime/session.js';
import { encodeModel } from './onnx-codec.js';
import { Trainer, type TrainerResult } from '../runtime/trainer.js';

/** Training examples the inserted BatchNorms of a synthetic-calibrated compile are set from. */
export const INSERTED_CALIBRATION_SAMPLES = 512;

/**
 * An inserted BatchNorm starts as the identity on its calibration batch: statistics μ, σ² of its
 * input there, scale √(σ² + ε), bias μ + b (b, the layer bias it absorbed). Compiled without data
 * that batch is synthetic, so in training mode, which normalizes with the real batches' statistics,
 * it is no longer the identity and the first steps unlearn the model (rate 1 of the bundled CNN
 * fell from 93.05 to 90.64 % in one epoch). Before a first fine-tune of such a folder, each one is
 * set the same way from evenly spaced training examples at rate 1, keeping its b = bias − μ.
 * Returns how many were set (0: calibrated on data, fine-tuned before, or no rate 1).
 */
export async function calibrateInsertedOnData(target: TrainTarget, train: Split): Promise<number> {
  const m = target.manifest;
  const inserted = m?.normalization.batchNorms?.filter((b) => b.kind === 'inserted') ?? [];
  if (!m || m.training || m.normalization.calibration?.source !== 'synthetic' || inserted.length === 0) return 0;
  const widest = target.rates[0]!;
  if (widest.rate !== 1) return 0;
  const count = train.x.dims[0]!;
  const n = Math.min(INSERTED_CALIBRATION_SAMPLES, count);
  const { x } = materialize(train, Int32Array.from({ length: n }, (_, k) => Math.floor((k * count) / n)));
  if (x.dtype !== 'float32') return 0;
  const inputOf = new Map(widest.model.graph.nodes.filter((node) => node.op === 'BatchNormalization').map((node) => [node.inputs[1]!.name, node.inputs[0]!.name]));
  const sites = inserted.map((b) => ({ ...b, input: inputOf.get(b.scale)! }));
  const observed = withOutputs(encodeModel(widest.model), sites.map((s) => s.input));
  const out = await runFloat(observed.bytes, { [target.input.name]: { dims: x.dims, data: x.data as Float32Array } }, observed.names);
  for (const site of sites) {
    const [scale, bias, mean, variance] = [site.scale, site.bias, site.mean, site.variance].map((name) => target.full.get(name)!);
    // the absorbed layer bias, as compile left it: bias − mean
    const values = identityOn(out[site.input]!, site.epsilon, Float64Array.from(bias!, (b, c) => b - mean![c]!));
    scale!.set(values.scale);
    bias!.set(values.bias);
    mean!.set(values.mean);
    variance!.set(values.variance);
  }
  return sites.length;
}

export interface FinetuneOptions {
  /** Where a note to the user goes (stderr in the CLI). */
  note?: (text: string) => void;
  /** The command that asked (its errors name it); without one, `out` decides model or folder. */
  command?: 'finetune' | 'train';
  data: string;
  overrides?: PlanOverrides;
  device?: 'cpu' | 'cuda';
  threads?: number;
  resume?: boolean;
  shuffle?: boolean;
  /** JSON-lines log (default <dir>/training/log.jsonl, or <out>.training/log.jsonl for train). */
  log?: string;
  /** Checkpoint folder (default next to the log). */
  checkpointDir?: string;
  checkpointEvery?: number;
  progress?: boolean;
  /** `train`: where the trained model goes. */
  out?: string;
  cacheDir?: string;
}

export interface FinetuneOutcome {
  target: TrainTarget;
  plan: Plan;
  result: TrainerResult;
  /** Files written (none when the run was interrupted). */
  written: string[];
  logFile: string;
  checkpointDir: string;
}

export async function loadData(spec: string, target: TrainTarget, plan: Plan, cacheDir?: string): Promise<Dataset> {
  return loadDataset(spec, {
    expect: { shape: target.input.shape ?? [], dtype: target.input.dtype },
    valSplit: plan.data.valSplit || undefined,
    resize: plan.data.resize ?? undefined,
    normalize: plan.data.normalize,
    label: plan.loss.label,
    classes: plan.loss.kind === 'cross-entropy' ? target.classes : undefined,
    seed: plan.seed,
    cacheDir,
  });
}

export async function runTraining(location: string, opts: FinetuneOptions): Promise<FinetuneOutcome> {
  const unlock = lockOutput(opts.out ?? location, opts.command ?? (opts.out ? 'train' : 'finetune'));
  try {
    return await runTrainingUnlocked(location, opts);
  } finally {
    unlock();
  }
}

async function runTrainingUnlocked(location: string, opts: FinetuneOptions): Promise<FinetuneOutcome> {
  const target = loadTarget(location);
  if (opts.command === 'finetune' && target.kind === 'model') {
    throw userError(ErrorCodes.BAD_INPUT_FILE, `slicec finetune takes a folder written by slicec compile; ${location} is a plain model`, {
      expected: 'a compiled folder (with manifest.json)', found: 'an ONNX model file',
      hint: `compile it first (slicec ${location} --groups 8), or train it as it is: slicec train ${location} -o trained.onnx`,
    });
  }
  if (opts.command === 'train' && target.kind === 'compiled') {
    throw userError(ErrorCodes.BAD_INPUT_FILE, `slicec train takes a plain ONNX model; ${location} is a compiled folder`, {
      expected: 'an ONNX model file', found: 'a folder written by slicec compile', hint: `fine-tune its rates: slicec finetune ${location}`,
    });
  }
  if (target.kind === 'model' && !opts.out) {
    throw userError(ErrorCodes.BAD_FLAG, 'slicec train needs -o, the file the trained model goes to', { expected: '-o trained.onnx', found: 'no -o' });
  }
  if (target.kind === 'compiled' && opts.out) {
    throw userError(ErrorCodes.BAD_FLAG, '-o is for slicec train; finetune writes the trained weights into the folder', { expected: 'no -o', found: opts.out });
  }
  const context = target.manifest ? { outputs: target.outputs, rates: target.rates.map((r) => r.rate) } : { outputs: target.outputs };
  const plan = validatePlan(applyOverrides(target.plan, opts.overrides ?? {}), target.planFile ?? 'the plan', context);
  const base = target.kind === 'compiled' ? path.join(location, 'training') : `${opts.out}.training`;
  const logFile = opts.log ?? path.join(base, 'log.jsonl');
  const checkpointDir = opts.checkpointDir ?? path.join(base, 'checkpoint');
  const data = await loadData(opts.data, target, plan, opts.cacheDir);
  const params = new Map<string, Float32Array>();
  const runningStats = new Map<string, Float32Array>();
  const recalibrated = opts.resume ? 0 : await calibrateInsertedOnData(target, data.train);
  if (recalibrated > 0) opts.note?.(`the ${recalibrated} inserted BatchNorm${recalibrated > 1 ? 's were' : ' was'} compiled with synthetic inputs: set from ${Math.min(INSERTED_CALIBRATION_SAMPLES, data.train.x.dims[0]!)} training examples before the first step`);
  const specs = rateSpecs(target, plan, Math.min(STATS_BATCH, data.train.x.dims[0]!));
  for (const [name, full] of target.full) {
    const role = target.roles.get(name);
    if (role === 'running-stat') runningStats.set(name, full);
    else if (role === 'weight' || role === 'bias' || ((role === 'norm-scale' || role === 'norm-bias') && plan.normalization.trainAffine)) params.set(name, full);
  }
  const trainer = new Trainer({
    plan, params, runningStats, weightDecay: () => plan.optimizer.weightDecay, rates: specs,
    train: data.train, evalSplit: data.val ?? data.test, classification: plan.loss.kind === 'cross-entropy',
    checkpointDir, logFile, checkpointEvery: opts.checkpointEvery, resume: opts.resume, shuffle: opts.shuffle,
    session: { device: opts.device, threads: opts.threads }, progress: opts.progress,
  });
  try {
    const result = await trainer.run();
    if (result.interrupted) return { target, plan, result, written: [], logFile, checkpointDir };
    const run = { data: opts.data, plan, steps: result.steps, history: result.history, finishedAt: new Date().toISOString() };
    const written = target.kind === 'compiled'
      ? reemitCompiled(target, result, run)
      : [writeTrainedModel(target.rates[0]!.model, opts.out!, result.params, result.rateStats.get(1)!)];
    return { target, plan, result, written, logFile, checkpointDir };
  } finally {
    await trainer.release();
  }
}
