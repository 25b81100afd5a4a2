// `slicec finetune DIR` and `slicec train MODEL.onnx`: the plan (plan.json or defaults, flags on
// top), the data checked against the model input, the trainer (runtime/trainer.ts) over every
// rate's graphs, then the trained weights written back (compiler/reemit.ts). Training a plain
// model is the same machinery with one rate, 1.

import * as path from 'node:path';
import { ErrorCodes, userError } from './diagnostics.js';
import { applyOverrides, validatePlan, type Plan, type PlanOverrides } from './plan.js';
import { reemitCompiled, writeTrainedModel } from './reemit.js';
import { loadTarget, rateSpecs, type TrainTarget } from './train-target.js';
import { loadDataset, type Dataset } from '../runtime/data.js';
import { Trainer, type TrainerResult } from '../runtime/trainer.js';

export interface FinetuneOptions {
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
  const specs = rateSpecs(target, plan);
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
