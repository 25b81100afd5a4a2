// The sliced-model trainer: one set of full-size weights and optimizer state, trained through
// every rate's train-step graph (compiler/train-step.ts), on onnxruntime-node.
//
// A step draws the batch's rates (plan.ts sampleRates; sandwich by default), runs each rate's
// graph in gradient mode on the batch (the rate's kept sub-tensors gathered from the full
// weights), scatter-adds every rate's gradients into one full-size gradient and applies the
// optimizer once (runtime/optimizer.ts). That is exactly one optimizer step on the summed
// losses — what PyTorch's `sum(losses).backward(); opt.step()` does — whereas running per-rate
// update graphs one after another would step several times per batch, each rate seeing weights
// the previous rate already moved, and move momentum once per rate. Gradient graphs also serve
// every optimizer with the same graphs. With distillation, the full rate runs first and its
// softmax(logits / T) (a constant, no gradient) is the teacher of the batch's other rates.
//
// Rates keep their own BatchNorm running statistics (never shared: a narrow rate's channel
// means differ from the full rate's), updated by their train graphs and re-estimated at the end
// (evaluate.ts). Each epoch every compiled rate is evaluated. Checkpoints (checkpoint.ts) each
// epoch, every `checkpointEvery` steps and on SIGINT or SIGTERM; a resumed run replays the same batches and
// rate draws: the data cursor and the step index are the whole random state.

import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ErrorCodes, userError } from '../compiler/diagnostics.js';
import { learningRate, sampleRates, type Plan } from '../compiler/plan.js';
import { Rng } from '../compiler/rng.js';
import { loadTensors, readState, saveCheckpoint, type CheckpointState, type EpochRecord, type EvalRow, type TrainerTensors } from './checkpoint.js';
import { BatchIterator, type Split } from './data.js';
import { evaluateRate, recalibrateRate } from './evaluate.js';
import { applyUpdate, initialState } from './optimizer.js';
import { RateRunner, type RateSpec } from './rate-graphs.js';
import { TrainProgress } from './train-progress.js';
import type { GraphSessionOptions } from './graph-session.js';

export interface TrainerOptions {
  plan: Plan;
  /** Full-size trainable parameters (updated in place). */
  params: Map<string, Float32Array>;
  /** Full-size BatchNorm statistics; each rate starts from its part of them. */
  runningStats: Map<string, Float32Array>;
  weightDecay: (name: string) => number;
  /** Every compiled rate, descending; the plan's rates are trained, all are evaluated. */
  rates: RateSpec[];
  train: Split;
  /** Evaluated each epoch (a validation or test split); null: none. */
  evalSplit: Split | null;
  classification: boolean;
  /** Checkpoints go here. */
  checkpointDir: string;
  /** JSON lines of every step and evaluation. */
  logFile: string;
  checkpointEvery?: number;
  resume?: boolean;
  shuffle?: boolean;
  session?: GraphSessionOptions;
  progress?: boolean;
}

export interface TrainerResult {
  params: Map<string, Float32Array>;
  /** Each rate's BatchNorm statistics after training (recalibrated when the plan says so). */
  rateStats: Map<number, Map<string, Float32Array>>;
  /** The last evaluation of every rate (after recalibration). */
  final: EvalRow[];
  history: EpochRecord[];
  steps: number;
  interrupted: boolean;
  /** Seconds in graph runs vs. the whole of the steps, graph building excluded (the trainer's own share is the rest). */
  timing: { stepSeconds: number; graphSeconds: number };
}

/** 32-bit mix of (seed, step) so that every step's rate draw stands alone. */
function stepSeed(seed: number, step: number): number {
  return (Math.imul(seed ^ 0x85ebca6b, 0x9e3779b1) ^ Math.imul(step + 1, 0xc2b2ae35)) >>> 0;
}

function planDigest(plan: Plan): string {
  return JSON.stringify(plan);
}

/**
 * What the run trains on: the examples' count and shape, a hash of every label and of a strided
 * sample of the inputs (at most 2^20 values), and the pixel table. Resuming on other data would
 * replay a data cursor meant for these examples.
 */
export function dataDigest(train: Split): string {
  const hash = createHash('sha256');
  const bytes = (a: ArrayBufferView) => hash.update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
  hash.update(JSON.stringify({ x: [train.x.dtype, ...train.x.dims], y: [train.y.dtype, ...train.y.dims] }));
  bytes(train.y.data as ArrayBufferView);
  const x = train.x.data as ArrayLike<number> & ArrayBufferView;
  const stride = Math.max(1, Math.ceil(x.length / (1 << 20)));
  const sample = new Float64Array(Math.ceil(x.length / stride));
  for (let i = 0, k = 0; i < x.length; i += stride, k++) sample[k] = Number(x[i]);
  bytes(sample);
  if (train.levels) bytes(train.levels);
  return `${train.x.dims[0]} examples, sha256 ${hash.digest('hex').slice(0, 16)}`;
}

function softmax(z: Float32Array, width: number, temperature: number): Float32Array {
  const out = new Float32Array(z.length);
  for (let r = 0; r < z.length / width; r++) {
    let max = -Infinity;
    for (let c = 0; c < width; c++) max = Math.max(max, z[r * width + c]! / temperature);
    let sum = 0;
    for (let c = 0; c < width; c++) sum += (out[r * width + c] = Math.exp(z[r * width + c]! / temperature - max));
    for (let c = 0; c < width; c++) out[r * width + c] = out[r * width + c]! / sum;
  }
  return out;
}

export class Trainer {
  private readonly runners: RateRunner[];
  private readonly tensors: TrainerTensors;
  private readonly grads = new Map<string, Float32Array>();
  private interrupted = false;

  constructor(private readonly opts: TrainerOptions) {
    this.runners = opts.rates.map((r) => new RateRunner(r, opts.session ?? {}));
    const rateStats = new Map<number, Map<string, Float32Array>>();
    for (const runner of this.runners) {
      rateStats.set(runner.rate, new Map([...opts.runningStats].map(([name, full]) => [name, Float32Array.from(runner.part(name, full))])));
    }
    this.tensors = { params: opts.params, optimizer: initialState(opts.plan.optimizer, opts.params), rateStats };
    for (const [name, w] of opts.params) this.grads.set(name, new Float32Array(w.length));
  }

  private runner(rate: number): RateRunner {
    const r = this.runners.find((x) => Math.abs(x.rate - rate) < 1e-9);
    if (!r) throw new Error(`rate ${rate} is not compiled`);
    return r;
  }

  /** One batch: every drawn rate's gradients summed, one update. Returns the per-rate losses. */
  private async step(step: number, x: Split['x'], y: Split['y'], rates: number[], lr: number): Promise<{ losses: number[]; graphSeconds: number }> {
    const { plan } = this.opts;
    for (const g of this.grads.values()) g.fill(0);
    const distill = plan.distillation.enabled && rates.length > 1;
    let teacher: Float32Array | null = null;
    // the teacher is the widest trained rate (plan validation asks for rate 1 when distilling)
    const full = this.runner(plan.rates[0]!);
    if (distill && !rates.includes(full.rate)) {
      const g = (await full.session('eval'))!;
      const out = await g.session.run(full.feeds(g.signature, { batch: x }, this.tensors.params, this.tensors.rateStats.get(full.rate)!));
      const z = out.get(g.signature.outputs[0]!.name)!;
      teacher = softmax(z.data as Float32Array, z.dims[1]!, plan.distillation.temperature);
    }
    const losses: number[] = [];
    let graphSeconds = 0;
    for (const rate of rates) {
      const runner = this.runner(rate);
      const kind = distill && rate !== full.rate && teacher ? 'distill' : 'grad';
      const g = (await runner.session(kind))!;
      const stats = this.tensors.rateStats.get(rate)!;
      const width = g.signature.outputs.find((o) => o.role === 'logits')!.shape[1]!;
      const teacherArray = teacher ? { dtype: 'float32' as const, dims: [x.dims[0]!, width], data: teacher } : undefined;
      const feeds = runner.feeds(g.signature, { batch: x, labels: y, teacher: teacherArray }, this.tensors.params, stats);
      const t0 = performance.now();
      const out = await g.session.run(feeds);
      graphSeconds += (performance.now() - t0) / 1000;
      for (const o of g.signature.outputs) {
        const value = out.get(o.name)!;
        if (o.role === 'loss') losses.push(Number(value.data[0]));
        else if (o.role === 'running-stat') stats.get(o.parameter!)!.set(value.data as Float32Array);
        else if (o.role === 'logits' && distill && rate === full.rate) teacher = softmax(value.data as Float32Array, width, plan.distillation.temperature);
        else if (o.role === 'gradient') {
          const acc = this.grads.get(o.parameter!)!;
          const part = value.data as Float32Array;
          const positions = runner.spec.positions.get(o.parameter!);
          if (positions) for (let i = 0; i < positions.length; i++) acc[positions[i]!] += part[i]!;
          else for (let i = 0; i < part.length; i++) acc[i] += part[i]!;
        }
      }
    }
    const bad = losses.findIndex((l) => !Number.isFinite(l));
    if (bad >= 0) {
      // no update: the weights, the folder and the last checkpoint stay as they were
      throw userError(ErrorCodes.DIVERGED, `training diverged: the loss at rate ${rates[bad]} is ${losses[bad]} at step ${step + 1}`, {
        expected: 'a finite loss', found: String(losses[bad]),
        hint: `start again with a lower learning rate (it was ${lr.toPrecision(3)} at this step; --lr sets the peak), or check the data for extreme values; the folder keeps its weights`,
      });
    }
    applyUpdate(plan.optimizer, this.tensors.optimizer, this.tensors.params, this.grads, lr, this.opts.weightDecay);
    return { losses, graphSeconds };
  }

  async evaluateAll(): Promise<EvalRow[]> {
    const split = this.opts.evalSplit;
    if (!split) return [];
    const rows: EvalRow[] = [];
    for (const runner of this.runners) rows.push(await evaluateRate(runner, split, this.tensors.params, this.tensors.rateStats.get(runner.rate)!, this.opts.classification));
    return rows;
  }

  async run(): Promise<TrainerResult> {
    const { plan, checkpointDir } = this.opts;
    const it0 = new BatchIterator(this.opts.train, { batchSize: plan.batchSize, seed: plan.seed, shuffle: this.opts.shuffle ?? true });
    const stepsPerEpoch = it0.batchesPerEpoch;
    let state: Omit<CheckpointState, 'format' | 'weightsFile'> = {
      step: 0, cursor: it0.cursor, rng: { seed: plan.seed, step: 0 }, epochsDone: 0, history: [], plan: planDigest(plan), data: dataDigest(this.opts.train),
    };
    const saved = this.opts.resume ? readState(checkpointDir) : null;
    if (this.opts.resume && !saved) {
      throw userError(ErrorCodes.BAD_FLAG, `--resume: no checkpoint in ${checkpointDir}`, { expected: 'a run of this model that was stopped', found: 'no state.json', hint: 'start without --resume' });
    }
    if (saved) {
      if (saved.plan !== state.plan) {
        throw userError(ErrorCodes.BAD_FLAG, `--resume: the checkpoint in ${checkpointDir} was made with another plan`, {
          expected: 'the plan and flags of the stopped run', found: 'a different plan', hint: 'repeat the flags of the first run, or start without --resume',
        });
      }
      if (saved.data !== undefined && saved.data !== state.data) {
        throw userError(ErrorCodes.BAD_FLAG, `--resume: the checkpoint in ${checkpointDir} was made on other training data`, {
          expected: `the stopped run's data (${saved.data})`, found: state.data!, hint: 'give the --data of the first run (and the same --val-split and --seed), or start without --resume',
        });
      }
      loadTensors(checkpointDir, saved, this.tensors);
      state = { step: saved.step, cursor: saved.cursor, rng: saved.rng, epochsDone: saved.epochsDone, history: saved.history, plan: saved.plan, data: state.data };
    } else {
      // a fresh run: an older run's log and checkpoint must not be mistaken for this one's
      fs.rmSync(this.opts.logFile, { force: true });
      fs.rmSync(checkpointDir, { recursive: true, force: true });
    }
    fs.mkdirSync(path.dirname(this.opts.logFile), { recursive: true });
    const log = (entry: object) => fs.appendFileSync(this.opts.logFile, `${JSON.stringify(entry)}\n`);
    const it = new BatchIterator(this.opts.train, { batchSize: plan.batchSize, shuffle: this.opts.shuffle ?? true, start: state.cursor });
    const total = stepsPerEpoch * plan.epochs;
    const progress = new TrainProgress(this.opts.progress ?? false, total, state.step);
    // Ctrl-C, and the SIGTERM a scheduler or `docker stop` sends: finish the step, save, exit 130
    const onSigint = () => {
      this.interrupted = true;
    };
    process.once('SIGINT', onSigint);
    process.once('SIGTERM', onSigint);
    const save = () => saveCheckpoint(checkpointDir, { ...state, cursor: it.cursor, rng: { seed: plan.seed, step: state.step } }, this.tensors);
    let stepSeconds = 0;
    let graphSeconds = 0;
    let setupSeconds = this.runners.reduce((a, r) => a + r.setupSeconds, 0);
    try {
      while (state.step < total && !this.interrupted) {
        const epoch = Math.floor(state.step / stepsPerEpoch);
        const inEpoch = state.step % stepsPerEpoch;
        const t0 = performance.now();
        const batch = it.next();
        const rates = sampleRates(plan, new Rng(stepSeed(plan.seed, state.step)));
        const lr = learningRate(plan, epoch + inEpoch / stepsPerEpoch, stepsPerEpoch);
        const result = await this.step(state.step, batch.x, batch.y, rates, lr);
        // building a graph the first time a rate is drawn is setup, not step time
        const setup = this.runners.reduce((a, r) => a + r.setupSeconds, 0);
        const seconds = (performance.now() - t0) / 1000 - (setup - setupSeconds);
        setupSeconds = setup;
        stepSeconds += seconds;
        graphSeconds += result.graphSeconds;
        state.step += 1;
        const loss = result.losses.reduce((a, b) => a + b, 0);
        log({ type: 'step', step: state.step, epoch: epoch + 1, rates, losses: result.losses, loss, lr, samplesPerSecond: plan.batchSize / seconds });
        progress.update(state.step, { epoch: epoch + 1, loss, rates, samplesPerSecond: plan.batchSize / seconds });
        if (state.step % stepsPerEpoch === 0) {
          const rows = await this.evaluateAll();
          state.history.push({ epoch: epoch + 1, rates: rows });
          state.epochsDone = epoch + 1;
          log({ type: 'eval', epoch: epoch + 1, rates: rows });
          progress.note(`epoch ${epoch + 1}: ${rows.map((r) => `${r.rate}: ${r.accuracy !== null ? `${(r.accuracy * 100).toFixed(2)} %` : r.loss.toPrecision(4)}`).join('  ')}`);
          save();
        } else if (this.opts.checkpointEvery && state.step % this.opts.checkpointEvery === 0) {
          save();
        }
      }
      if (this.interrupted) {
        save();
        return this.result(state, [], true, { stepSeconds, graphSeconds });
      }
    } finally {
      process.removeListener('SIGINT', onSigint);
      process.removeListener('SIGTERM', onSigint);
      progress.stop();
    }
    const recal = plan.normalization.recalibrate;
    if (recal.enabled) {
      for (const runner of this.runners) {
        const stats = this.tensors.rateStats.get(runner.rate)!;
        const fresh = await recalibrateRate(runner, this.opts.train, this.tensors.params, stats, recal.samples, plan.seed);
        if (fresh) for (const [name, v] of fresh) stats.get(name)!.set(v);
      }
    }
    const final = await this.evaluateAll();
    log({ type: 'final', recalibrated: recal.enabled, rates: final });
    return this.result(state, final, false, { stepSeconds, graphSeconds });
  }

  private result(state: { step: number; history: EpochRecord[] }, final: EvalRow[], interrupted: boolean, timing: TrainerResult['timing']): TrainerResult {
    return { params: this.tensors.params, rateStats: this.tensors.rateStats, final, history: state.history, steps: state.step, interrupted, timing };
  }

  async release(): Promise<void> {
    for (const r of this.runners) await r.release();
  }
}
