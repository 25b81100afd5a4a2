// Flags of `slicec finetune` and `slicec train`: parsed into plan overrides (compiler/plan.ts
// applyOverrides checks the merged plan like a loaded plan.json, naming the flags in errors) and
// run options. Shared so both commands accept exactly the same plan flags.

import type { Command } from 'commander';
import { ErrorCodes, userError } from './diagnostics.js';
import type { PlanOverrides } from './plan.js';

function bad(flag: string, expected: string, value: string): Error {
  return userError(ErrorCodes.BAD_FLAG, `${flag} expects ${expected}, got "${value}"`, { expected, found: `"${value}"`, hint: 'see the command\'s --help' });
}

const number = (flag: string, check: (n: number) => boolean, expected: string) => (value: string): number => {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || !check(n)) throw bad(flag, expected, value);
  return n;
};

const integer = (flag: string, min: number) => number(flag, (n) => Number.isInteger(n) && n >= min, `an integer ≥ ${min}`);

const choice = <T extends string>(flag: string, values: readonly T[]) => (value: string): T => {
  if (!(values as readonly string[]).includes(value)) throw bad(flag, values.join(', '), value);
  return value as T;
};

function rates(value: string): number[] {
  const list = value.split(',').map((p) => Number(p.trim()));
  if (list.some((r) => !(r > 0 && r <= 1))) throw bad('--rates', 'comma-separated rates in (0, 1]', value);
  return list.sort((a, b) => b - a);
}

export type Resize = { height: number; width: number; fit: 'cover' | 'fill' | 'contain' };

/** `--resize HxW[:fit]`: every image of a folder to H×W, fit cover (default), fill or contain. */
export function parseResize(value: string): Resize {
  const m = /^(\d+)x(\d+)(?::(cover|fill|contain))?$/.exec(value.trim());
  if (!m || Number(m[1]) < 1 || Number(m[2]) < 1) throw bad('--resize', 'HxW or HxW:fit (fit cover, fill or contain), e.g. 32x32', value);
  return { height: Number(m[1]), width: Number(m[2]), fit: (m[3] ?? 'cover') as Resize['fit'] };
}

export const RESIZE_HELP = 'image folders: resize every image to H×W (fit cover, fill or contain; default cover)';

export interface TrainFlags {
  data: string;
  epochs?: number;
  batchSize?: number;
  lr?: number;
  optimizer?: 'sgd' | 'adamw';
  momentum?: number;
  nesterov?: boolean;
  weightDecay?: number;
  schedule?: 'cosine' | 'step' | 'constant';
  warmup?: number;
  seed?: number;
  rates?: number[];
  sampling?: 'sandwich' | 'uniform' | 'round-robin';
  distill?: boolean;
  valSplit?: number;
  resize?: Resize;
  recalibrate?: boolean;
  shuffle: boolean;
  resume?: boolean;
  device?: 'cpu' | 'cuda';
  threads?: number;
  log?: string;
  checkpointEvery?: number;
  out?: string;
  json?: boolean;
}

/** The plan and run flags; the rate flags only where there are rates to pick (finetune, not train). */
export function addTrainFlags(cmd: Command, opts: { rates: boolean }): Command {
  cmd
    .requiredOption('--data <spec>', 'fashion-mnist | mnist | file.npz | x.npy,y.npy | a folder of class sub-folders of images')
    .option('--epochs <n>', 'passes over the training set', integer('--epochs', 1))
    .option('--batch-size <n>', 'examples per batch', integer('--batch-size', 1))
    .option('--lr <x>', 'peak learning rate', number('--lr', (n) => n > 0, 'a number > 0'))
    .option('--optimizer <kind>', 'sgd or adamw', choice('--optimizer', ['sgd', 'adamw'] as const))
    .option('--momentum <m>', 'sgd momentum in [0, 1)', number('--momentum', (n) => n >= 0 && n < 1, 'a number in [0, 1)'))
    .option('--nesterov', 'sgd: Nesterov momentum')
    .option('--no-nesterov', 'sgd: plain momentum')
    .option('--weight-decay <x>', 'weight decay ≥ 0', number('--weight-decay', (n) => n >= 0, 'a number ≥ 0'))
    .option('--schedule <kind>', 'cosine, step or constant', choice('--schedule', ['cosine', 'step', 'constant'] as const))
    .option('--warmup <epochs>', 'linear warm-up epochs', number('--warmup', (n) => n >= 0, 'a number ≥ 0'))
    .option('--seed <n>', 'seed of shuffles, rate draws and the validation split', integer('--seed', 0));
  if (opts.rates) {
    cmd
      .option('--rates <list>', 'rates trained (compiled ones)', rates)
      .option('--sampling <mode>', 'sandwich, uniform or round-robin', choice('--sampling', ['sandwich', 'uniform', 'round-robin'] as const))
      .option('--no-distill', 'no in-place distillation from the full rate');
  }
  return cmd
    .option('--val-split <f>', 'fraction of the training examples held out', number('--val-split', (n) => n >= 0 && n < 1, 'a fraction in [0, 1)'))
    .option('--resize <HxW[:fit]>', RESIZE_HELP, parseResize)
    .option('--no-recalibrate', 'keep the BatchNorm statistics tracked during training')
    .option('--no-shuffle', 'visit the examples in stored order every epoch')
    .option('--resume', 'continue from the last checkpoint')
    .option('--device <d>', 'cpu or cuda (cuda falls back to cpu with a warning)', choice('--device', ['cpu', 'cuda'] as const))
    .option('--threads <n>', 'onnxruntime threads per graph (default 1)', integer('--threads', 1))
    .option('--log <file>', 'JSON-lines log of every step and evaluation')
    .option('--checkpoint-every <steps>', 'also checkpoint every N steps (always at each epoch\'s end)', integer('--checkpoint-every', 1))
    .option('--json', 'print the result as JSON');
}

export function planOverrides(f: TrainFlags): PlanOverrides {
  const o: PlanOverrides = {};
  if (f.epochs !== undefined) o.epochs = f.epochs;
  if (f.batchSize !== undefined) o.batchSize = f.batchSize;
  if (f.seed !== undefined) o.seed = f.seed;
  if (f.rates) o.rates = f.rates;
  const optimizer: NonNullable<PlanOverrides['optimizer']> = {};
  if (f.optimizer) optimizer.kind = f.optimizer;
  if (f.lr !== undefined) optimizer.lr = f.lr;
  if (f.momentum !== undefined) optimizer.momentum = f.momentum;
  // plain SGD: Nesterov needs momentum, so --momentum 0 turns it off unless asked for
  if (f.nesterov !== undefined) optimizer.nesterov = f.nesterov;
  if (f.momentum === 0 && optimizer.nesterov === undefined) optimizer.nesterov = false;
  if (f.weightDecay !== undefined) optimizer.weightDecay = f.weightDecay;
  if (Object.keys(optimizer).length > 0) o.optimizer = optimizer;
  const schedule: NonNullable<PlanOverrides['schedule']> = {};
  if (f.schedule) schedule.kind = f.schedule;
  if (f.warmup !== undefined) schedule.warmupEpochs = f.warmup;
  if (Object.keys(schedule).length > 0) o.schedule = schedule;
  if (f.sampling) o.sampling = { mode: f.sampling };
  if (f.distill === false) o.distillation = { enabled: false };
  if (f.valSplit !== undefined || f.resize) o.data = { ...(f.valSplit !== undefined ? { valSplit: f.valSplit } : {}), ...(f.resize ? { resize: f.resize } : {}) };
  if (f.recalibrate === false) o.normalization = { recalibrate: { enabled: false } };
  return o;
}
