// plan.json (format slicec-plan/1): how `slicec finetune` trains a sliced model. compile writes
// one with defaults from the manifest (defaultPlan), flags override fields (applyOverrides), and
// every load is checked (validatePlan) with errors that name the JSON path, what was expected
// and what was found. docs/plan.md describes each field; docs/plan.schema.json is its schema.
//
// The training semantics that the fields imply live here too, as pure functions the trainer
// calls: which rates a batch trains (sampleRates; their losses are summed into one optimizer
// step) and the learning rate at a point of the schedule (learningRate: linear warm-up, then
// cosine  lr_min + (lr − lr_min)·(1 + cos(π·p))/2 over the remaining fraction p, or ×γ at each
// step milestone, or constant). Defaults follow docs/plan.md (model slicing's SGD recipe at a
// tenth of its learning rate, sandwich sampling, in-place distillation for classifiers).

import { ErrorCodes, userError } from './diagnostics.js';
import type { Rng } from './rng.js';
import { checkPlan } from './plan-validate.js';

export const PLAN_FORMAT = 'slicec-plan/1';

export type Sampling =
  /** The full rate, the smallest, and `random` others drawn without replacement. */
  | { mode: 'sandwich'; random: number }
  /** `perBatch` rates drawn uniformly without replacement. */
  | { mode: 'uniform'; perBatch: number }
  /** Every rate in every batch. */
  | { mode: 'round-robin' };

export type Optimizer =
  | { kind: 'sgd'; lr: number; momentum: number; nesterov: boolean; weightDecay: number }
  | { kind: 'adamw'; lr: number; beta1: number; beta2: number; eps: number; weightDecay: number };

export type Schedule =
  | { kind: 'cosine'; warmupEpochs: number; minLr: number }
  | { kind: 'step'; warmupEpochs: number; milestones: number[]; gamma: number }
  | { kind: 'constant'; warmupEpochs: number };

export interface Plan {
  format: typeof PLAN_FORMAT;
  /** Rates trained, descending. */
  rates: number[];
  sampling: Sampling;
  /** In-place distillation: every other rate also learns from the full rate's predictions on the batch. */
  distillation: { enabled: boolean; weight: number; temperature: number };
  /** `output`: the model output the loss reads; `label`: the data array holding targets. */
  loss: { kind: 'cross-entropy' | 'mse'; output: string; label: string };
  optimizer: Optimizer;
  schedule: Schedule;
  epochs: number;
  batchSize: number;
  seed: number;
  /** How examples are prepared: pixel normalization, resize (image folders), held-out fraction. */
  data: {
    normalize: { scale: number; mean: number[]; std: number[] };
    resize: { height: number; width: number; fit: 'cover' | 'fill' | 'contain' } | null;
    valSplit: number;
  };
  /** The compiled normalization and what training does with it. */
  normalization: {
    mode: 'gn' | 'keep' | 'none' | 'bn';
    /** Train the norm layers' scale and shift. */
    trainAffine: boolean;
    /** After training, re-estimate each rate's BatchNorm statistics on `samples` examples (modes keep and bn). */
    recalibrate: { enabled: boolean; samples: number };
  };
}

/** What compile knows when it writes a plan (a manifest's fields). */
export interface PlanDescription {
  rates: number[];
  inputs: { name: string }[];
  outputs: { name: string }[];
  isClassifier: boolean;
  normalization?: 'gn' | 'keep' | 'none' | 'bn';
  /** Warm-up epochs of the schedule (default: 1 with gn, which changes the model's function, else 0). */
  warmupEpochs?: number;
}

export function optimizerDefaults(kind: Optimizer['kind']): Optimizer {
  return kind === 'sgd'
    ? { kind, lr: 0.03, momentum: 0.9, nesterov: true, weightDecay: 1e-4 }
    : { kind, lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 };
}

export function scheduleDefaults(kind: Schedule['kind'], epochs: number, warmupEpochs = 0): Schedule {
  if (kind === 'cosine') return { kind, warmupEpochs, minLr: 0 };
  if (kind === 'step') return { kind, warmupEpochs, milestones: [...new Set([Math.round(epochs * 0.5), Math.round(epochs * 0.75)])].filter((m) => m > warmupEpochs && m < epochs), gamma: 0.1 };
  return { kind, warmupEpochs };
}

export function samplingDefaults(mode: Sampling['mode']): Sampling {
  if (mode === 'sandwich') return { mode, random: 1 };
  if (mode === 'uniform') return { mode, perBatch: 1 };
  return { mode };
}

/** The plan compile writes for a model. */
export function defaultPlan(desc: PlanDescription): Plan {
  const rates = [...desc.rates].sort((a, b) => b - a);
  const output = desc.outputs[0]?.name;
  if (output === undefined || rates.length === 0) throw new Error('defaultPlan needs at least one rate and one output');
  const mode = desc.normalization ?? 'bn';
  const epochs = 10;
  const sampling = rates.length > 2 ? samplingDefaults('sandwich') : samplingDefaults('round-robin');
  return {
    format: PLAN_FORMAT,
    rates,
    sampling,
    distillation: { enabled: desc.isClassifier && rates.length > 1 && rates[0] === 1, weight: 1, temperature: 1 },
    loss: { kind: desc.isClassifier ? 'cross-entropy' : 'mse', output, label: 'y' },
    optimizer: optimizerDefaults('sgd'),
    // inserted group norms change the function, so their first steps need a warm-up; kept or
    // identity-initialized BatchNorms start where the model is and train from the first step
    schedule: scheduleDefaults('cosine', epochs, desc.warmupEpochs ?? (mode === 'gn' && epochs > 1 ? 1 : 0)),
    epochs,
    batchSize: 64,
    seed: 0,
    data: { normalize: { scale: 1 / 255, mean: [0], std: [1] }, resize: null, valSplit: 0 },
    normalization: { mode, trainAffine: true, recalibrate: { enabled: mode === 'keep' || mode === 'bn', samples: 2000 } },
  };
}

type DeepPartial<T> = T extends (infer U)[] ? U[] : T extends object ? { [K in keyof T]?: DeepPartial<T[K]> } : T;
/** Any field of any variant of a tagged union (which fields the result may hold is checked after merging). */
type AnyVariant<T> = Partial<{ [K in T extends unknown ? keyof T : never]: T extends Record<K, infer V> ? V : never }>;

/** Flag overrides: any subset of the plan's fields. */
export type PlanOverrides = DeepPartial<Omit<Plan, 'format' | 'sampling' | 'optimizer' | 'schedule'>> & {
  sampling?: AnyVariant<Sampling>;
  optimizer?: AnyVariant<Optimizer>;
  schedule?: AnyVariant<Schedule>;
};

function mergeDeep(base: unknown, over: unknown): unknown {
  if (over === undefined) return base;
  if (over === null || typeof over !== 'object' || Array.isArray(over) || base === null || typeof base !== 'object' || Array.isArray(base)) return over;
  const out: Record<string, unknown> = { ...(base as Record<string, unknown>) };
  for (const [k, v] of Object.entries(over)) out[k] = mergeDeep(out[k], v);
  return out;
}

/**
 * The plan with flag values put in, checked like a loaded plan (`origin` names the flags in
 * errors). Switching a kind (optimizer, schedule, sampling mode) starts from that kind's defaults.
 */
export function applyOverrides(plan: Plan, overrides: PlanOverrides, origin = 'command-line flags'): Plan {
  const base: Plan = structuredClone(plan);
  const epochs = overrides.epochs ?? plan.epochs;
  if (overrides.optimizer?.kind && overrides.optimizer.kind !== plan.optimizer.kind) base.optimizer = optimizerDefaults(overrides.optimizer.kind);
  if (overrides.schedule?.kind && overrides.schedule.kind !== plan.schedule.kind) {
    base.schedule = scheduleDefaults(overrides.schedule.kind, epochs, Math.min(plan.schedule.warmupEpochs, epochs));
  } else if (base.schedule.kind === 'step' && epochs !== plan.epochs && !overrides.schedule?.milestones) {
    // Milestones count epochs: a new epoch count moves them in proportion unless they are given too.
    base.schedule.milestones = base.schedule.milestones.map((m) => Math.round((m * epochs) / plan.epochs));
  }
  if (overrides.sampling?.mode && overrides.sampling.mode !== plan.sampling.mode) base.sampling = samplingDefaults(overrides.sampling.mode);
  if (overrides.rates) {
    // Fewer rates than the sampling draws: draw what there is, unless the counts are given too.
    const count = overrides.rates.length;
    if (base.sampling.mode === 'sandwich' && overrides.sampling?.random === undefined) base.sampling.random = Math.min(base.sampling.random, Math.max(0, count - 2));
    if (base.sampling.mode === 'uniform' && overrides.sampling?.perBatch === undefined) base.sampling.perBatch = Math.min(base.sampling.perBatch, count);
  }
  return validatePlan(mergeDeep(base, overrides), origin);
}

/** Checks a parsed plan.json; `file` names it in errors. `context` adds checks against the manifest. */
export function validatePlan(json: unknown, file: string, context: { outputs?: string[]; rates?: number[] } = {}): Plan {
  return checkPlan(json, file, context);
}

/** Reads and validates a plan file. */
export function parsePlan(text: string, file: string, context: { outputs?: string[]; rates?: number[] } = {}): Plan {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw userError(ErrorCodes.BAD_INPUT_FILE, `${file} is not valid JSON`, { expected: `a ${PLAN_FORMAT} plan`, found: (e as Error).message });
  }
  return validatePlan(json, file, context);
}

export function formatPlan(plan: Plan): string {
  return `${JSON.stringify(plan, null, 2)}\n`;
}

/** The rates one batch trains, in order (full rate first where drawn). */
export function sampleRates(plan: Pick<Plan, 'rates' | 'sampling'>, rng: Rng): number[] {
  const rates = [...plan.rates].sort((a, b) => b - a);
  const draw = (pool: number[], count: number) => {
    const left = [...pool];
    const picked: number[] = [];
    for (let i = 0; i < count && left.length > 0; i++) picked.push(left.splice(rng.int(left.length), 1)[0]!);
    return picked.sort((a, b) => b - a);
  };
  const s = plan.sampling;
  if (s.mode === 'round-robin' || rates.length === 1) return rates;
  if (s.mode === 'uniform') return draw(rates, s.perBatch);
  return [rates[0]!, ...draw(rates.slice(1, -1), s.random), rates[rates.length - 1]!];
}

/** Learning rate at `epoch` (fractional: epoch index + step / stepsPerEpoch). */
export function learningRate(plan: Pick<Plan, 'optimizer' | 'schedule' | 'epochs'>, epoch: number, stepsPerEpoch: number): number {
  const { lr } = plan.optimizer;
  const s = plan.schedule;
  // Warm-up ramps linearly and reaches lr at its end; the first step already gets a share.
  if (epoch < s.warmupEpochs) return lr * Math.min(1, (epoch + 1 / stepsPerEpoch) / s.warmupEpochs);
  if (s.kind === 'constant') return lr;
  if (s.kind === 'step') return lr * s.gamma ** s.milestones.filter((m) => epoch >= m).length;
  const span = plan.epochs - s.warmupEpochs;
  const progress = span > 0 ? Math.min(1, (epoch - s.warmupEpochs) / span) : 1;
  return s.minLr + (lr - s.minLr) * (1 + Math.cos(Math.PI * progress)) / 2;
}
