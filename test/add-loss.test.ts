// add-loss: the emitted loss matches PyTorch (test/data/optimizer-refs/loss.json, from
// scripts/make-optimizer-refs.py) and a float64 computation here; the emitted gradient matches
// PyTorch's autograd and central differences of the graph's own loss output.

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { isUserError } from '../compiler/diagnostics.js';
import { Model, tensorType, type Dim, type Value } from '../compiler/ir.js';
import { encodeModel } from '../compiler/onnx-codec.js';
import { OpBuilder } from '../compiler/op-builder.js';
import { printModel } from '../compiler/printer.js';
import { verifyModel } from '../compiler/verifier.js';
import { DataType } from '../compiler/tensor.js';
import { addLoss, type LossResult, type LossSpec } from '../passes/add-loss.js';
import { REPO_ROOT, Rng } from './helpers/models.js';

interface LossCase {
  name: string;
  spec: LossSpec;
  shape: [number, number];
  logits: number[];
  labels: number[];
  teacher?: number[];
  loss: number;
  grad: number[];
}

const REFS = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'test/data/optimizer-refs/loss.json'), 'utf8')) as { cases: LossCase[] };

/** A graph whose input `logits` feeds the loss; loss and gradient become its outputs. */
function lossModel(spec: LossSpec, shape: Dim[]): { model: Model; result: LossResult } {
  const model = new Model();
  model.opsetImports.set('', 18n);
  model.graph.name = 'train';
  const logits = new OpBuilder(model.graph, 18).input('logits', tensorType(DataType.FLOAT, shape));
  const result = addLoss(model, logits, spec);
  model.graph.outputs.push(result.loss, result.logitsGrad);
  verifyModel(model, { mode: 'pass', step: 'add-loss' });
  return { model, result };
}

interface Batch {
  logits: Float32Array;
  /** Class indices (cross-entropy) or float targets (mse). */
  labels: number[];
  teacher?: Float32Array;
}

type Runner = (batch: Batch) => Promise<{ loss: number; grad: Float32Array }>;

async function runner(model: Model, spec: LossSpec, shape: number[]): Promise<{ run: Runner; close: () => Promise<void> }> {
  const session = await ort.InferenceSession.create(encodeModel(model), { intraOpNumThreads: 1, interOpNumThreads: 1, logSeverityLevel: 3 });
  const gradName = model.graph.outputs[1]!.name;
  const run: Runner = async (batch) => {
    const feeds: Record<string, ort.Tensor> = { logits: new ort.Tensor('float32', batch.logits, shape) };
    feeds.labels = spec.kind === 'mse'
      ? new ort.Tensor('float32', Float32Array.from(batch.labels), shape)
      : new ort.Tensor('int64', BigInt64Array.from(batch.labels.map(BigInt)), [shape[0]!]);
    if (batch.teacher) feeds.teacher_probs = new ort.Tensor('float32', batch.teacher, shape);
    const out = await session.run(feeds);
    return { loss: (out.loss!.data as Float32Array)[0]!, grad: out[gradName]!.data as Float32Array };
  };
  return { run, close: () => session.release() };
}

// ---------------------------------------------------------------- float64 references

function logSoftmaxRow(z: ArrayLike<number>, from: number, c: number, scale: number): number[] {
  let max = -Infinity;
  for (let j = 0; j < c; j++) max = Math.max(max, z[from + j]! / scale);
  let sum = 0;
  for (let j = 0; j < c; j++) sum += Math.exp(z[from + j]! / scale - max);
  const lse = max + Math.log(sum);
  return Array.from({ length: c }, (_, j) => z[from + j]! / scale - lse);
}

/** The loss of the conventions in passes/add-loss.ts, in float64. */
function referenceLoss(spec: LossSpec, shape: number[], batch: Batch): number {
  const numel = shape.reduce((a, d) => a * d, 1);
  if (spec.kind === 'mse') {
    let sum = 0;
    for (let i = 0; i < numel; i++) sum += (batch.logits[i]! - batch.labels[i]!) ** 2;
    return sum / numel;
  }
  const [n, c] = shape as [number, number];
  const w = spec.distill?.weight ?? 0;
  const t = spec.distill?.temperature ?? 1;
  let ce = 0;
  let kd = 0;
  for (let r = 0; r < n; r++) {
    ce -= logSoftmaxRow(batch.logits, r * c, c, 1)[batch.labels[r]!]!;
    if (batch.teacher) {
      const soft = logSoftmaxRow(batch.logits, r * c, c, t);
      for (let j = 0; j < c; j++) kd -= batch.teacher[r * c + j]! * soft[j]!;
    }
  }
  return ((1 - w) * ce) / n + (w * t * t * kd) / n;
}

function seededBatch(spec: LossSpec, shape: number[], seed: number, scale: number): Batch {
  const rng = new Rng(seed);
  const numel = shape.reduce((a, d) => a * d, 1);
  const logits = Float32Array.from({ length: numel }, () => (rng.next() * 2 - 1) * scale);
  if (spec.kind === 'mse') return { logits, labels: Array.from({ length: numel }, () => Math.fround(rng.next() * 2 - 1)) };
  const [n, c] = shape as [number, number];
  const labels = Array.from({ length: n }, () => rng.int(c));
  if (!spec.distill) return { logits, labels };
  const teacher = new Float32Array(numel);
  for (let r = 0; r < n; r++) {
    const row = logSoftmaxRow(Array.from({ length: c }, () => rng.next() * 4), 0, c, spec.distill.temperature);
    row.forEach((v, j) => (teacher[r * c + j] = Math.exp(v)));
  }
  return { logits, labels, teacher };
}

function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

function maxRelativeError(actual: ArrayLike<number>, expected: ArrayLike<number>, floor: number): number {
  let worst = 0;
  for (let i = 0; i < expected.length; i++) {
    worst = Math.max(worst, Math.abs(actual[i]! - expected[i]!) / Math.max(Math.abs(expected[i]!), floor));
  }
  return worst;
}

// ---------------------------------------------------------------- tests

const SPECS: { name: string; spec: LossSpec }[] = [
  { name: 'cross-entropy', spec: { kind: 'cross-entropy' } },
  { name: 'distill w=0.3 T=2', spec: { kind: 'cross-entropy', distill: { weight: 0.3, temperature: 2 } } },
  { name: 'in-place distill w=1 T=1', spec: { kind: 'cross-entropy', distill: { weight: 1, temperature: 1 } } },
  { name: 'distill w=0 T=4', spec: { kind: 'cross-entropy', distill: { weight: 0, temperature: 4 } } },
  { name: 'mse', spec: { kind: 'mse' } },
];

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-add-loss-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('add-loss against PyTorch', () => {
  for (const ref of REFS.cases) {
    it(ref.name, async () => {
      const { model } = lossModel(ref.spec, ref.shape);
      const { run, close } = await runner(model, ref.spec, ref.shape);
      const batch: Batch = { logits: Float32Array.from(ref.logits), labels: ref.labels, teacher: ref.teacher && Float32Array.from(ref.teacher) };
      const out = await run(batch);
      await close();
      expect(Math.abs(out.loss - ref.loss) / Math.abs(ref.loss)).toBeLessThan(1e-6);
      expect(maxRelativeError(out.grad, ref.grad, 1e-3)).toBeLessThan(1e-5);
      expect(Math.abs(referenceLoss(ref.spec, ref.shape, batch) - ref.loss) / Math.abs(ref.loss)).toBeLessThan(1e-12);
    });
  }
});

describe('add-loss against float64 and central differences', () => {
  const shape = [8, 7];
  for (const { name, spec } of SPECS) {
    it(name, async () => {
      const { model } = lossModel(spec, shape);
      const { run, close } = await runner(model, spec, shape);
      try {
        for (const [seed, scale] of [[1, 3], [2, 0.5]] as const) {
          const batch = seededBatch(spec, shape, seed, scale);
          const { loss, grad } = await run(batch);
          const expected = referenceLoss(spec, shape, batch);
          expect(Math.abs(loss - expected) / Math.abs(expected)).toBeLessThan(1e-5);
          // ⟨u, ∇L⟩ against (L(Z + εu) − L(Z − εu)) / 2ε for a random direction u
          const rng = new Rng(seed + 10);
          const u = Float32Array.from(grad, () => rng.next() * 2 - 1);
          const eps = 1e-2;
          const plus = await run({ ...batch, logits: batch.logits.map((z, i) => z + eps * u[i]!) });
          const minus = await run({ ...batch, logits: batch.logits.map((z, i) => z - eps * u[i]!) });
          const numeric = (plus.loss - minus.loss) / (2 * eps);
          const analytic = dot(u, grad);
          expect(Math.abs(numeric - analytic)).toBeLessThan(1e-3 * Math.max(Math.abs(analytic), 1e-2));
        }
      } finally {
        await close();
      }
    });
  }

  it('stays finite and exact for confident logits (LogSoftmax, not Log of Softmax)', async () => {
    const spec: LossSpec = { kind: 'cross-entropy', distill: { weight: 0.5, temperature: 1 } };
    const { model } = lossModel(spec, shape);
    expect(model.graph.nodes.some((n) => n.op === 'Log' || n.op === 'Softmax')).toBe(false);
    const { run, close } = await runner(model, spec, shape);
    const batch = seededBatch(spec, shape, 3, 200);
    const { loss, grad } = await run(batch);
    await close();
    const expected = referenceLoss(spec, shape, batch);
    expect(expected).toBeGreaterThan(50);
    expect(Math.abs(loss - expected) / expected).toBeLessThan(1e-5);
    expect(grad.every(Number.isFinite)).toBe(true);
  });
});

describe('add-loss graph interface', () => {
  it('adds readable, deterministic inputs and names, default-domain ops only', () => {
    const spec: LossSpec = { kind: 'cross-entropy', distill: { weight: 0.3, temperature: 2 } };
    const first = lossModel(spec, [4, 3]);
    const { labels, teacher, loss, logitsGrad } = first.result;
    expect(first.model.graph.inputs.map((v) => v.name)).toEqual(['logits', 'labels', 'teacher_probs']);
    expect(labels.type).toEqual(tensorType(DataType.INT64, [4]));
    expect(teacher?.type).toEqual(tensorType(DataType.FLOAT, [4, 3]));
    expect([loss.name, logitsGrad.name]).toEqual(['loss', 'logits.grad']);
    expect(loss.type).toEqual(tensorType(DataType.FLOAT, []));
    expect(logitsGrad.type).toEqual(tensorType(DataType.FLOAT, [4, 3]));
    expect(first.model.graph.nodes.every((n) => n.domain === '')).toBe(true);
    expect(printModel(lossModel(spec, [4, 3]).model)).toBe(printModel(first.model));
    const mse = lossModel({ kind: 'mse' }, [2, 3, 4]).result;
    expect(mse.labels.type).toEqual(tensorType(DataType.FLOAT, [2, 3, 4]));
    expect(mse.teacher).toBeNull();
  });

  it('reads logits produced inside the graph, and does not touch the graph outputs', () => {
    const model = new Model();
    model.opsetImports.set('', 18n);
    const b = new OpBuilder(model.graph, 18);
    const x = b.input('x', tensorType(DataType.FLOAT, [5, 4]));
    const w = b.floatConst(new Array<number>(12).fill(0.5), [4, 3], 'fc.weight');
    const logits: Value = b.matMul(x, w, { outputTypes: [tensorType(DataType.FLOAT, [5, 3])] });
    model.graph.outputs.push(logits);
    addLoss(model, logits, { kind: 'cross-entropy' });
    expect(model.graph.outputs).toEqual([logits]);
    expect(model.graph.inputs.map((v) => v.name)).toEqual(['x', 'labels']);
    verifyModel(model, { mode: 'pass', step: 'add-loss' });
  });

  it('passes onnx.checker with full shape inference', () => {
    const PYTHON = '/usr/bin/python3';
    const check = 'import sys, onnx\nfor f in sys.argv[1:]: onnx.checker.check_model(onnx.load(f), full_check=True)';
    const files = SPECS.map(({ spec }, i) => {
      const file = path.join(tmp, `loss-${i}.onnx`);
      fs.writeFileSync(file, encodeModel(lossModel(spec, spec.kind === 'mse' ? [2, 3, 4] : [4, 3]).model));
      return file;
    });
    const run = spawnSync(PYTHON, ['-c', check, ...files], { encoding: 'utf8' });
    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
  });
});

describe('add-loss user errors', () => {
  const codeOf = (fn: () => unknown): string | null => {
    try {
      fn();
    } catch (e) {
      return isUserError(e) ? e.code : `not a user error: ${String(e)}`;
    }
    return null;
  };
  it('SLC009 for logits without a static [N, C] float shape', () => {
    expect(codeOf(() => lossModel({ kind: 'cross-entropy' }, ['N', 10]))).toBe('SLC009');
    expect(codeOf(() => lossModel({ kind: 'cross-entropy' }, [2, 3, 4]))).toBe('SLC009');
  });
  it('SLC007 for loss settings that cannot be used', () => {
    expect(codeOf(() => lossModel({ kind: 'hinge' } as unknown as LossSpec, [2, 3]))).toBe('SLC007');
    expect(codeOf(() => lossModel({ kind: 'mse', distill: { weight: 0.5, temperature: 1 } }, [2, 3]))).toBe('SLC007');
    expect(codeOf(() => lossModel({ kind: 'cross-entropy', distill: { weight: 1.5, temperature: 1 } }, [2, 3]))).toBe('SLC007');
    expect(codeOf(() => lossModel({ kind: 'cross-entropy', distill: { weight: 0.5, temperature: 0 } }, [2, 3]))).toBe('SLC007');
    expect(codeOf(() => lossModel({ kind: 'cross-entropy', distill: { weight: Number.NaN, temperature: 1 } }, [2, 3]))).toBe('SLC007');
  });
});
