// A/B of two versions of the train-step compiler: the graph each builds for the Fashion-MNIST CNN
// at every rate's width (forward, cross-entropy, backward, SGD), timed alternately in one process
// by CPU time (medians), beside the largest relative difference between their outputs. The other
// version is a checkout of this repository, for example the commit before a change:
//
//   git worktree add /tmp/slicec-base HEAD~1 && ln -s "$PWD/node_modules" /tmp/slicec-base/
//   npx tsx bench/train-step-ab.ts --base /tmp/slicec-base [--runs 9] [--iters 5] [--batch 64]
//
// The networks come from bench/torch-train-speed.py (python3-torch), as in bench/train-step.ts.

import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Rng } from '../compiler/rng.js';
import { GraphSession, WEIGHTS_AS_INPUTS } from '../runtime/graph-session.js';
import type { NdArray } from '../runtime/npz.js';
import { argValue, median, table } from './common.js';

const RATES = [1, 0.75, 0.5, 0.25];
const base = argValue('--base');
const runs = Number(argValue('--runs') ?? 9);
const iters = Number(argValue('--iters') ?? 5);
const batch = Number(argValue('--batch') ?? 64);
if (!base || !fs.existsSync(path.join(base, 'compiler', 'train-step.ts'))) {
  console.error('usage: npx tsx bench/train-step-ab.ts --base DIR (a checkout of this repository; see the header)');
  process.exit(2);
}
const here = path.resolve(import.meta.dirname, '..');

interface Built {
  session: GraphSession;
  feeds: Map<string, NdArray>;
  nodes: number;
  outputs: Map<string, NdArray>;
}

/** The train step that the compiler under `root` builds for `file`, in a session as the trainer runs it. */
async function build(root: string, file: string, x: NdArray, y: NdArray): Promise<Built> {
  const { readModel, encodeModel } = await import(path.join(root, 'compiler', 'onnx-codec.ts'));
  const { buildTrainStep } = await import(path.join(root, 'compiler', 'train-step.ts'));
  const { tensorToArray } = await import(path.join(root, 'compiler', 'grad.ts'));
  const model = readModel(file);
  const step = buildTrainStep(model, { batch, loss: { kind: 'cross-entropy' }, optimizer: { kind: 'sgd', momentum: 0, nesterov: false, weightDecay: 0 } });
  const weights = new Map(model.graph.initializers.map((v: { name: string; const: unknown }) => [v.name, v.const]));
  const feeds = new Map<string, NdArray>();
  for (const input of step.signature.inputs as { name: string; role: string; parameter?: string }[]) {
    if (input.role === 'batch') feeds.set(input.name, x);
    else if (input.role === 'labels') feeds.set(input.name, y);
    else if (input.role === 'parameter' || input.role === 'running-stat') feeds.set(input.name, tensorToArray(weights.get(input.parameter!)));
    else feeds.set(input.name, { dtype: 'float32', dims: [], data: Float32Array.of(input.role === 'lr' ? 0.01 : 1) });
  }
  const session = await GraphSession.create(encodeModel(step.model), WEIGHTS_AS_INPUTS);
  const outputs = await session.run(feeds);
  return { session, feeds, nodes: step.model.graph.nodes.length, outputs };
}

function cpuMsPerStep(): () => number {
  const start = process.cpuUsage();
  return () => {
    const d = process.cpuUsage(start);
    return (d.user + d.system) / 1000 / iters;
  };
}

async function time(b: Built): Promise<number> {
  const stop = cpuMsPerStep();
  for (let i = 0; i < iters; i++) await b.session.run(b.feeds);
  return stop();
}

/** Largest |a − b| / (|a| + 1e-3) over every output both graphs have, and the outputs only one has. */
function difference(a: Built, b: Built): { worst: number; unmatched: string[] } {
  let worst = 0;
  const unmatched: string[] = [];
  for (const [name, va] of a.outputs) {
    const vb = b.outputs.get(name);
    if (!vb) {
      unmatched.push(name);
      continue;
    }
    for (let i = 0; i < va.data.length; i++) {
      const p = Number(va.data[i]);
      worst = Math.max(worst, Math.abs(p - Number(vb.data[i])) / (Math.abs(p) + 1e-3));
    }
  }
  for (const name of b.outputs.keys()) if (!a.outputs.has(name)) unmatched.push(name);
  return { worst, unmatched };
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-train-ab-'));
  try {
    execFileSync('/usr/bin/python3', [path.join(here, 'bench', 'torch-train-speed.py'), '--runs', '1', '--iters', '1', '--batch', String(batch), '--onnx-dir', dir], { encoding: 'utf8' });
    const rng = new Rng(1);
    const x: NdArray = { dtype: 'float32', dims: [batch, 1, 28, 28], data: rng.uniform(batch * 784, -1, 1) };
    const y: NdArray = { dtype: 'int64', dims: [batch], data: BigInt64Array.from({ length: batch }, (_, i) => BigInt(i % 10)) };
    const rows: string[][] = [];
    for (const rate of RATES) {
      const file = path.join(dir, `fashion_cnn_r${rate}.onnx`);
      const a = await build(path.resolve(base!), file, x, y);
      const b = await build(here, file, x, y);
      await time(a);
      await time(b);
      const ta: number[] = [];
      const tb: number[] = [];
      for (let k = 0; k < runs; k++) {
        ta.push(await time(a));
        tb.push(await time(b));
      }
      const { worst, unmatched } = difference(a, b);
      rows.push([String(rate), median(ta).toFixed(2), median(tb).toFixed(2), (median(tb) / median(ta)).toFixed(3), `${a.nodes} / ${b.nodes}`, worst.toExponential(2), unmatched.join(' ') || '-']);
      await a.session.release();
      await b.session.release();
    }
    console.log(`train step, base ${base} against this checkout: batch ${batch}, one thread, CPU ms per step, medians of ${runs} alternating runs × ${iters} steps`);
    for (const line of table(['rate', 'base ms', 'this ms', 'this ÷ base', 'nodes (base / this)', 'max rel. output diff', 'outputs in one only'], rows)) console.log(line);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

await main();
