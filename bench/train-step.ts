// Train-step speed: slicec's train-step graph (forward + cross-entropy + backward + SGD, standard
// ONNX ops in onnxruntime-node) against the forward of the same network, and against Debian's
// PyTorch 1.13 on the same networks, one thread each, in one run.
//
// The networks are the Fashion-MNIST CNN at widths r = 1, .75, .5, .25 (what each slice rate's
// graph holds), exported by bench/torch-train-speed.py, which also times PyTorch on them. The
// PyTorch timing runs between two halves of slicec's runs, so a change of machine load hits both.
// Targets: train step ≤ 3× the forward time (backward is about 2× forward FLOPs); train samples/s
// at least PyTorch's. A second table splits the step's onnxruntime kernel profile into the
// products (convs, their gradients, GEMMs) and the rest, against the forwards' kernel time.
//
//   npx tsx bench/train-step.ts [--runs 7] [--iters 10] [--batch 64]

import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { tensorToArray } from '../compiler/grad.js';
import { encodeModel, readModel } from '../compiler/onnx-codec.js';
import { Rng } from '../compiler/rng.js';
import { DataType } from '../compiler/tensor.js';
import { cloneModel } from '../compiler/clone.js';
import { buildTrainStep, TRAIN_OPSET } from '../compiler/train-step.js';
import { toTrainingMode } from '../passes/training-mode.js';
import { upgradeOpset } from '../passes/upgrade-opset.js';
import { GraphSession, WEIGHTS_AS_INPUTS } from '../runtime/graph-session.js';
import type { NdArray } from '../runtime/npz.js';
import { argValue, median, nowMs, profileKernels, table } from './common.js';

const RATES = [1, 0.75, 0.5, 0.25];
const runs = Number(argValue('--runs') ?? 7);
const iters = Number(argValue('--iters') ?? 10);
const batch = Number(argValue('--batch') ?? 64);

interface Cell {
  /** The graphs as bytes, for the kernel profiles. */
  bytes: { forward: Uint8Array; inputForward: Uint8Array; train: Uint8Array };
  forward: GraphSession;
  forwardFeeds: Map<string, NdArray>;
  /** The same network's forward with batch statistics (BatchNorm in training mode), as a train step runs it. */
  trainingForward: GraphSession;
  trainingForwardMs: number[];
  /**
   * That forward again with its float weights as graph inputs, fed every run, as a train step
   * takes them: onnxruntime cannot prepack them or lay the convs out in NCHWc blocks.
   */
  inputForward: GraphSession;
  inputForwardFeeds: Map<string, NdArray>;
  inputForwardMs: number[];
  train: GraphSession;
  /** The same train step in a session at onnxruntime's default level ('all': NCHWc layout on). */
  trainAllLevel: GraphSession;
  trainAllLevelMs: number[];
  trainFeeds: Map<string, NdArray>;
  /** Updated-parameter output → the input it feeds on the next step. */
  loop: [string, string][];
  forwardMs: number[];
  trainMs: number[];
}

async function prepare(file: string, rng: Rng): Promise<Cell> {
  const model = readModel(file);
  const x: NdArray = { dtype: 'float32', dims: [batch, 1, 28, 28], data: rng.uniform(batch * 784, -1, 1) };
  const y: NdArray = { dtype: 'int64', dims: [batch], data: BigInt64Array.from({ length: batch }, (_, i) => BigInt(i % 10)) };
  const step = buildTrainStep(model, { batch, loss: { kind: 'cross-entropy' }, optimizer: { kind: 'sgd', momentum: 0, nesterov: false, weightDecay: 0 } });
  const weights = new Map(model.graph.initializers.map((v) => [v.name, v.const!]));
  const trainFeeds = new Map<string, NdArray>();
  for (const input of step.signature.inputs) {
    if (input.role === 'batch') trainFeeds.set(input.name, x);
    else if (input.role === 'labels') trainFeeds.set(input.name, y);
    else if (input.role === 'parameter' || input.role === 'running-stat') trainFeeds.set(input.name, tensorToArray(weights.get(input.parameter!)!));
    else if (input.role === 'lr') trainFeeds.set(input.name, { dtype: 'float32', dims: [], data: Float32Array.of(0.01) });
    else if (input.role === 'step') trainFeeds.set(input.name, { dtype: 'float32', dims: [], data: Float32Array.of(1) });
  }
  const loop: [string, string][] = [];
  for (const o of step.signature.outputs) {
    if (o.role !== 'parameter' && o.role !== 'running-stat') continue;
    const input = step.signature.inputs.find((i) => i.role === o.role && i.parameter === o.parameter)!;
    loop.push([o.name, input.name]);
  }
  const forwardBytes = fs.readFileSync(file);
  const forward = await GraphSession.create(forwardBytes);
  const { model: inTraining } = cloneModel(model);
  upgradeOpset(inTraining, TRAIN_OPSET);
  toTrainingMode(inTraining, { dropout: 'off' });
  const trainingForward = await GraphSession.create(encodeModel(inTraining));
  const forwardFeeds = new Map([[forward.inputNames[0]!, x]]);
  const { model: withInputs } = cloneModel(inTraining);
  const inputForwardFeeds = new Map(forwardFeeds);
  for (const v of withInputs.graph.initializers) {
    if (v.const?.dtype !== DataType.FLOAT) continue;
    inputForwardFeeds.set(v.name, tensorToArray(v.const));
    v.const = null;
    withInputs.graph.inputs.push(v);
  }
  withInputs.graph.initializers = withInputs.graph.initializers.filter((v) => v.const);
  // both as the trainer runs them (no NCHWc layout: it needs constant weights)
  const bytes = { forward: forwardBytes, inputForward: encodeModel(withInputs), train: encodeModel(step.model) };
  const inputForward = await GraphSession.create(bytes.inputForward, WEIGHTS_AS_INPUTS);
  const train = await GraphSession.create(bytes.train, WEIGHTS_AS_INPUTS);
  const trainAllLevel = await GraphSession.create(bytes.train);
  return { bytes, forward, forwardFeeds, trainingForward, trainingForwardMs: [], inputForward, inputForwardFeeds, inputForwardMs: [], train, trainAllLevel, trainAllLevelMs: [], trainFeeds, loop, forwardMs: [], trainMs: [] };
}

async function timeRun(cell: Cell): Promise<void> {
  let start = nowMs();
  for (let i = 0; i < iters; i++) await cell.forward.run(cell.forwardFeeds);
  cell.forwardMs.push((nowMs() - start) / iters);
  start = nowMs();
  for (let i = 0; i < iters; i++) await cell.trainingForward.run(cell.forwardFeeds);
  cell.trainingForwardMs.push((nowMs() - start) / iters);
  start = nowMs();
  for (let i = 0; i < iters; i++) await cell.inputForward.run(cell.inputForwardFeeds);
  cell.inputForwardMs.push((nowMs() - start) / iters);
  start = nowMs();
  for (let i = 0; i < iters; i++) {
    const out = await cell.train.run(cell.trainFeeds);
    for (const [from, to] of cell.loop) cell.trainFeeds.set(to, out.get(from)!);
  }
  cell.trainMs.push((nowMs() - start) / iters);
  start = nowMs();
  for (let i = 0; i < iters; i++) await cell.trainAllLevel.run(cell.trainFeeds);
  cell.trainAllLevelMs.push((nowMs() - start) / iters);
}

/** The products: what FLOPs count (the convs, their input gradients and the GEMMs). */
const PRODUCTS = new Set(['Conv', 'ConvTranspose', 'MatMul', 'Gemm']);

/** Kernel time per run (ms) of the products and of everything else, from onnxruntime's profile (10 runs). */
async function kernelTimes(bytes: Uint8Array, level: 'all' | 'extended', feeds: Map<string, NdArray>, dir: string, tag: string): Promise<{ products: number; rest: number }> {
  const ortFeeds = Object.fromEntries([...feeds].map(([name, a]) => [name, new ort.Tensor(a.dtype, a.data as never, a.dims)]));
  const options = { intraOpNumThreads: 1, interOpNumThreads: 1, logSeverityLevel: 3 as const, graphOptimizationLevel: level };
  const profile = await profileKernels(bytes, ortFeeds, options, dir, tag, { minRuns: 10 });
  let products = 0;
  for (const [op, slot] of profile.ops) if (PRODUCTS.has(op)) products += slot.ms;
  return { products, rest: profile.kernelMs - products };
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-train-bench-'));
  try {
    // writes the networks and times PyTorch once, so the files exist for slicec's cells
    const torchArgs = ['bench/torch-train-speed.py', '--runs', String(runs), '--iters', String(iters), '--batch', String(batch), '--onnx-dir', dir];
    const rng = new Rng(1);
    const first = execFileSync('/usr/bin/python3', torchArgs, { encoding: 'utf8' });
    const cells = new Map<number, Cell>();
    for (const r of RATES) cells.set(r, await prepare(path.join(dir, `fashion_cnn_r${r}.onnx`), rng));
    for (const cell of cells.values()) await timeRun(cell); // warm-up
    for (const cell of cells.values()) {
      cell.forwardMs.length = 0;
      cell.trainingForwardMs.length = 0;
      cell.inputForwardMs.length = 0;
      cell.trainMs.length = 0;
      cell.trainAllLevelMs.length = 0;
    }
    const half = Math.ceil(runs / 2);
    for (let k = 0; k < half; k++) for (const cell of cells.values()) await timeRun(cell);
    const second = execFileSync('/usr/bin/python3', torchArgs.slice(0, -2), { encoding: 'utf8' });
    for (let k = half; k < runs; k++) for (const cell of cells.values()) await timeRun(cell);

    const torchRows = (text: string): Map<number, { forward: number; train: number }> => {
      const rows = new Map<number, { forward: number; train: number }>();
      for (const line of text.split('\n')) {
        const cols = line.split('|').map((c) => c.trim()).filter((c) => c.length > 0);
        const rate = Number(cols[1]);
        if (cols.length >= 6 && RATES.includes(rate)) rows.set(rate, { forward: Number(cols[cols.length - 2]!.replace(/,/g, '')), train: Number(cols[cols.length - 1]!.replace(/,/g, '')) });
      }
      return rows;
    };
    const t1 = torchRows(first);
    const t2 = torchRows(second);
    console.log(`slicec train step vs forward and vs PyTorch, batch ${batch}, one thread, ${runs} runs × ${iters} batches (medians)`);
    console.log(first.split('\n')[0]);
    console.log('');
    const rows = RATES.map((r) => {
      const cell = cells.get(r)!;
      const fwd = median(cell.forwardMs);
      const trn = median(cell.trainMs);
      const torchTrain = (t1.get(r)!.train + t2.get(r)!.train) / 2;
      const torchForward = (t1.get(r)!.forward + t2.get(r)!.forward) / 2;
      const ours = (batch * 1000) / trn;
      const trainingFwd = median(cell.trainingForwardMs);
      const inputFwd = median(cell.inputForwardMs);
      const allLevel = median(cell.trainAllLevelMs);
      return [String(r), ((batch * 1000) / fwd).toFixed(0), ((batch * 1000) / trainingFwd).toFixed(0), ((batch * 1000) / inputFwd).toFixed(0), ours.toFixed(0), (trn / fwd).toFixed(2), (trn / trainingFwd).toFixed(2), (trn / inputFwd).toFixed(2), (allLevel / trn).toFixed(3), torchForward.toFixed(0), torchTrain.toFixed(0), (ours / torchTrain).toFixed(2)];
    });
    // "batch-stat fwd": the forward as the train step runs it (BatchNorm with batch statistics, so
    // onnxruntime cannot fold it into the conv); "input-weight fwd": that forward with the weights
    // fed as graph inputs, as the train step takes them, which is the train step's own forward.
    // "'all' ÷ 'extended'": the same train step in a session at onnxruntime's default level, timed
    // beside it (the trainer uses 'extended', WEIGHTS_AS_INPUTS).
    const header = ['rate', 'fwd/s', 'batch-stat fwd/s', 'input-weight fwd/s', 'train/s', 'train÷fwd time', 'train÷batch-stat fwd', 'train÷input-weight fwd', "'all' ÷ 'extended'", 'torch fwd/s', 'torch train/s', 'train vs torch'];
    for (const line of table(header, rows)) console.log(line);

    // Where the train step's time goes, from onnxruntime's per-kernel profile: the products alone
    // (what a train step cannot skip: forward conv, input gradient, weight gradient, the GEMMs)
    // against the forwards' whole kernel time. Their ratio is the floor of train ÷ fwd for any
    // train step built on onnxruntime's kernels, however cheap everything else became.
    const floorRows: string[][] = [];
    for (const r of RATES) {
      const cell = cells.get(r)!;
      const train = await kernelTimes(cell.bytes.train, 'extended', cell.trainFeeds, dir, `train-${r}`);
      const fwd = await kernelTimes(cell.bytes.forward, 'all', cell.forwardFeeds, dir, `fwd-${r}`);
      const inputFwd = await kernelTimes(cell.bytes.inputForward, 'extended', cell.inputForwardFeeds, dir, `input-fwd-${r}`);
      const fwdAll = fwd.products + fwd.rest;
      const inputAll = inputFwd.products + inputFwd.rest;
      floorRows.push([
        String(r), (train.products + train.rest).toFixed(2), train.products.toFixed(2), train.rest.toFixed(2), fwdAll.toFixed(2), inputAll.toFixed(2),
        ((train.products + train.rest) / fwdAll).toFixed(2), (train.products / fwdAll).toFixed(2), (train.products / inputAll).toFixed(2), (train.rest / inputAll).toFixed(2),
      ]);
    }
    console.log('');
    console.log('kernel time per step (ms, onnxruntime profile, 10 runs): the products (Conv, ConvTranspose, MatMul, Gemm) and the rest');
    const floorHeader = ['rate', 'train', 'train products', 'train rest', 'fwd', 'input-weight fwd', 'train÷fwd', 'products÷fwd (floor)', 'products÷input-weight fwd', 'rest÷input-weight fwd'];
    for (const line of table(floorHeader, floorRows)) console.log(line);
    for (const cell of cells.values()) {
      await cell.forward.release();
      await cell.trainingForward.release();
      await cell.inputForward.release();
      await cell.train.release();
      await cell.trainAllLevel.release();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

await main();
