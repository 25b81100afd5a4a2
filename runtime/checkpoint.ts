// Trainer checkpoints: everything a run needs to continue exactly where it stopped. Two files in
// the checkpoint folder: `weights-<step>.npz` (full-size parameters `param/<name>`, optimizer
// slots `slot/<kind>/<name>`, each rate's BatchNorm statistics `stats/<rate>/<name>`) and
// `state.json` (step, data cursor, rate-sampling RNG position, optimizer step, evaluations so
// far, and the weights file it belongs to). The npz is written first under its own name, then
// state.json atomically replaces the previous one (write + rename), then the old npz goes: a
// kill at any moment leaves a consistent pair.

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { BatchCursor } from './data.js';
import { ErrorCodes, isUserError, userError } from '../compiler/diagnostics.js';
import { readNpz, writeFileAtomic, writeNpz, type NdArray } from './npz.js';
import type { OptimizerState } from './optimizer.js';

export const CHECKPOINT_FORMAT = 'slicec-checkpoint/1';

export interface EvalRow {
  rate: number;
  accuracy: number | null;
  loss: number;
  samples: number;
}

export interface EpochRecord {
  epoch: number;
  rates: EvalRow[];
}

export interface CheckpointState {
  format: typeof CHECKPOINT_FORMAT;
  /** Optimizer steps done (batches trained). */
  step: number;
  /** The training data iterator's position: resuming replays the batches that came next. */
  cursor: BatchCursor;
  /** Rate draws use an Rng seeded from (seed, step): its whole state is this pair. */
  rng: { seed: number; step: number };
  /** Epochs whose end-of-epoch evaluation is done. */
  epochsDone: number;
  history: EpochRecord[];
  /** A digest of the plan: resuming under another plan is refused. */
  plan: string;
  /** What the run trains on (trainer.ts dataDigest): resuming on other data is refused. Absent in older checkpoints. */
  data?: string;
  weightsFile: string;
}

export interface TrainerTensors {
  params: Map<string, Float32Array>;
  optimizer: OptimizerState;
  rateStats: Map<number, Map<string, Float32Array>>;
}

const f32 = (data: Float32Array): NdArray => ({ dtype: 'float32', dims: [data.length], data });

export function saveCheckpoint(dir: string, state: Omit<CheckpointState, 'format' | 'weightsFile'>, tensors: TrainerTensors): void {
  fs.mkdirSync(dir, { recursive: true });
  const arrays = new Map<string, NdArray>();
  for (const [name, w] of tensors.params) arrays.set(`param/${name}`, f32(w));
  for (const [name, slots] of tensors.optimizer.slots) for (const [kind, s] of slots) arrays.set(`slot/${kind}/${name}`, f32(s));
  for (const [rate, stats] of tensors.rateStats) for (const [name, s] of stats) arrays.set(`stats/${rate}/${name}`, f32(s));
  arrays.set('optimizer_step', { dtype: 'int64', dims: [], data: BigInt64Array.of(BigInt(tensors.optimizer.step)) });
  const weightsFile = `weights-${state.step}.npz`;
  writeNpz(path.join(dir, weightsFile), arrays);
  const full: CheckpointState = { format: CHECKPOINT_FORMAT, ...state, weightsFile };
  writeFileAtomic(path.join(dir, 'state.json'), new TextEncoder().encode(`${JSON.stringify(full, null, 2)}\n`));
  // every other weights file belongs to an earlier state (or to a broken one a fresh run replaced)
  for (const f of fs.readdirSync(dir)) if (/^weights-\d+\.npz$/.test(f) && f !== weightsFile) fs.rmSync(path.join(dir, f), { force: true });
}

function unusable(file: string, found: string): Error {
  return userError(ErrorCodes.BAD_INPUT_FILE, `cannot resume from ${file}`, {
    expected: `a ${CHECKPOINT_FORMAT} checkpoint written by slicec`, found,
    hint: 'start again without --resume (the checkpoint is replaced), or put back the checkpoint folder as the run left it',
  });
}

export function readState(dir: string): CheckpointState | null {
  const file = path.join(dir, 'state.json');
  if (!fs.existsSync(file)) return null;
  let state: CheckpointState;
  try {
    state = JSON.parse(fs.readFileSync(file, 'utf8')) as CheckpointState;
  } catch (e) {
    throw unusable(file, `unreadable JSON (${e instanceof Error ? e.message : String(e)})`);
  }
  if (state?.format !== CHECKPOINT_FORMAT) throw unusable(file, `format ${JSON.stringify(state?.format ?? null)}`);
  if (typeof state.weightsFile !== 'string' || !/^weights-\d+\.npz$/.test(state.weightsFile)) throw unusable(file, `weights file ${JSON.stringify(state.weightsFile ?? null)}`);
  return state;
}

/** Loads a checkpoint's tensors into `into` (same names and sizes as the run being resumed). */
export function loadTensors(dir: string, state: CheckpointState, into: TrainerTensors): void {
  const file = path.join(dir, state.weightsFile);
  if (!fs.existsSync(file)) throw unusable(file, 'no such file (state.json names it)');
  let arrays: Map<string, NdArray>;
  try {
    arrays = readNpz(file);
  } catch (e) {
    if (!isUserError(e)) throw e;
    throw unusable(file, e.message);
  }
  const copy = (key: string, target: Float32Array) => {
    const a = arrays.get(key);
    if (!a || a.dtype !== 'float32' || a.data.length !== target.length) throw unusable(file, `${key} missing or of another size or type`);
    target.set(a.data as Float32Array);
  };
  for (const [name, w] of into.params) copy(`param/${name}`, w);
  for (const [name, slots] of into.optimizer.slots) for (const [kind, s] of slots) copy(`slot/${kind}/${name}`, s);
  for (const [rate, stats] of into.rateStats) for (const [name, s] of stats) copy(`stats/${rate}/${name}`, s);
  const step = arrays.get('optimizer_step');
  if (!step || step.dtype !== 'int64' || step.data.length !== 1) throw unusable(file, 'optimizer_step missing');
  into.optimizer.step = Number((step.data as BigInt64Array)[0]);
}
