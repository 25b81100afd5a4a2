// add-optimizer: three consecutive steps of the emitted update, each fed the state the previous
// one returned, match torch.optim.SGD (momentum, Nesterov, weight decay) and torch.optim.AdamW
// (test/data/optimizer-refs/optimizer.json, from scripts/make-optimizer-refs.py) and a float64
// implementation here; and add-loss + add-optimizer compose into a train step that learns and
// runs alike in onnxruntime-node and onnxruntime-web.

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import * as ortWeb from 'onnxruntime-web';
import { afterAll, describe, expect, it } from 'vitest';
import { isUserError } from '../compiler/diagnostics.js';
import { Model, tensorType, type Dim, type Value } from '../compiler/ir.js';
import { encodeModel } from '../compiler/onnx-codec.js';
import { OpBuilder } from '../compiler/op-builder.js';
import { verifyModel } from '../compiler/verifier.js';
import { DataType } from '../compiler/tensor.js';
import { addLoss } from '../passes/add-loss.js';
import { addOptimizer, type OptimizerResult, type OptimizerSpec, type ParamGrad, type StateRole } from '../passes/add-optimizer.js';
import { REPO_ROOT, Rng } from './helpers/models.js';

interface RefStep {
  lr: number;
  grads: Record<string, number[]>;
  params: Record<string, number[]>;
  state: Record<string, Partial<Record<StateRole, number[]>>>;
}

interface RefCase {
  name: string;
  spec: OptimizerSpec;
  params: { name: string; shape: number[]; init: number[] }[];
  steps: RefStep[];
}

const REFS = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'test/data/optimizer-refs/optimizer.json'), 'utf8')) as { cases: RefCase[] };

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-add-optimizer-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Parameters and their gradients as graph inputs (`<p>`, `<p>.grad`), then the optimizer. */
function optimizerModel(params: { name: string; shape: Dim[]; weightDecay?: number }[], spec: OptimizerSpec): { model: Model; result: OptimizerResult } {
  const model = new Model();
  model.opsetImports.set('', 18n);
  model.graph.name = 'train';
  const b = new OpBuilder(model.graph, 18);
  const values = params.map((p) => b.input(p.name, tensorType(DataType.FLOAT, p.shape)));
  const pairs: ParamGrad[] = params.map((p, i) => ({
    param: values[i]!,
    grad: b.input(`${p.name}.grad`, tensorType(DataType.FLOAT, p.shape)),
    weightDecay: p.weightDecay,
  }));
  const result = addOptimizer(model, pairs, spec);
  verifyModel(model, { mode: 'pass', step: 'add-optimizer' });
  return { model, result };
}

type Store = Map<string, Float32Array>;

/** Runs one step: feeds params, state, grads, lr and t; returns the updated params and state by input name. */
async function stepOnce(session: ort.InferenceSession, result: OptimizerResult, current: Store, grads: Store, lr: number, t: number): Promise<Store> {
  const feeds: Record<string, ort.Tensor> = {
    [result.lr.name]: new ort.Tensor('float32', Float32Array.of(lr), []),
    [result.step.name]: new ort.Tensor('float32', Float32Array.of(t), []),
  };
  for (const u of result.updates) {
    const dims = u.param.shape as number[];
    feeds[u.param.name] = new ort.Tensor('float32', current.get(u.param.name)!, dims);
    feeds[`${u.param.name}.grad`] = new ort.Tensor('float32', grads.get(u.param.name)!, dims);
    for (const s of u.state) feeds[s.input.name] = new ort.Tensor('float32', current.get(s.input.name)!, dims);
  }
  const out = await session.run(feeds);
  const next: Store = new Map();
  for (const u of result.updates) {
    next.set(u.param.name, out[u.updated.name]!.data as Float32Array);
    for (const s of u.state) next.set(s.input.name, out[s.output.name]!.data as Float32Array);
  }
  return next;
}

/** Parameters at their initial values, every state tensor at zeros. */
function initialStore(result: OptimizerResult, init: (name: string) => ArrayLike<number>): Store {
  const store: Store = new Map();
  for (const u of result.updates) {
    const w = Float32Array.from(init(u.param.name));
    store.set(u.param.name, w);
    for (const s of u.state) store.set(s.input.name, new Float32Array(w.length));
  }
  return store;
}

async function session(model: Model): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(encodeModel(model), { intraOpNumThreads: 1, interOpNumThreads: 1, logSeverityLevel: 3 });
}

/** Largest |a − e| relative to the largest |e|: float32 rounding of a whole tensor. */
function relativeError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  let worst = 0;
  let scale = 0;
  for (let i = 0; i < expected.length; i++) {
    worst = Math.max(worst, Math.abs(actual[i]! - expected[i]!));
    scale = Math.max(scale, Math.abs(expected[i]!));
  }
  return worst / scale;
}

/** Largest |a − e| / max(|e|, floor) over the elements. */
function maxRelativeError(actual: ArrayLike<number>, expected: ArrayLike<number>, floor = 1e-3): number {
  let worst = 0;
  for (let i = 0; i < expected.length; i++) {
    worst = Math.max(worst, Math.abs(actual[i]! - expected[i]!) / Math.max(Math.abs(expected[i]!), floor));
  }
  return worst;
}

// ---------------------------------------------------------------- float64 reference

interface State64 {
  w: number[];
  v: number[];
  m: number[];
}

/** One step of the PyTorch conventions in passes/add-optimizer.ts, in float64. */
function referenceStep(spec: OptimizerSpec, wd: number, s: State64, g: ArrayLike<number>, lr: number, t: number): State64 {
  const next: State64 = { w: [...s.w], v: [...s.v], m: [...s.m] };
  for (let i = 0; i < s.w.length; i++) {
    const w = s.w[i]!;
    if (spec.kind === 'sgd') {
      const d = g[i]! + wd * w;
      const v = spec.momentum * s.v[i]! + d;
      next.v[i] = v;
      next.w[i] = w - lr * (spec.momentum === 0 ? d : spec.nesterov ? d + spec.momentum * v : v);
    } else {
      const m = spec.beta1 * s.m[i]! + (1 - spec.beta1) * g[i]!;
      const v = spec.beta2 * s.v[i]! + (1 - spec.beta2) * g[i]! ** 2;
      const mHat = m / (1 - spec.beta1 ** t);
      const vHat = v / (1 - spec.beta2 ** t);
      next.m[i] = m;
      next.v[i] = v;
      next.w[i] = w * (1 - lr * wd) - (lr * mHat) / (Math.sqrt(vHat) + spec.eps);
    }
  }
  return next;
}

// ---------------------------------------------------------------- tests

describe('add-optimizer against torch.optim', () => {
  for (const ref of REFS.cases) {
    it(`${ref.name}: 3 steps`, async () => {
      const { model, result } = optimizerModel(ref.params, ref.spec);
      const s = await session(model);
      const inits = new Map(ref.params.map((p) => [p.name, p.init]));
      let current = initialStore(result, (name) => inits.get(name)!);
      const float64: State64[] = ref.params.map((p) => ({ w: p.init, v: p.init.map(() => 0), m: p.init.map(() => 0) }));
      for (let k = 0; k < ref.steps.length; k++) {
        const step = ref.steps[k]!;
        const grads: Store = new Map(Object.entries(step.grads).map(([n, g]) => [n, Float32Array.from(g)]));
        const before = new Map(current);
        current = await stepOnce(s, result, current, grads, step.lr, k + 1);
        for (const [i, u] of result.updates.entries()) {
          const name = u.param.name;
          const torchParam = step.params[name]!;
          expect(relativeError(current.get(name)!, torchParam), `${name} after step ${k + 1}`).toBeLessThan(1e-6);
          // the update itself, not only the updated weight (w' ≈ w hides errors in a small step)
          const start = before.get(name)!;
          const delta = current.get(name)!.map((w, j) => w - start[j]!);
          const torchDelta = torchParam.map((w, j) => w - start[j]!);
          expect(relativeError(delta, torchDelta), `${name} update at step ${k + 1}`).toBeLessThan(2e-5);
          expect(u.state.map((st) => st.role).sort()).toEqual(Object.keys(step.state[name]!).sort());
          for (const st of u.state) {
            expect(relativeError(current.get(st.input.name)!, step.state[name]![st.role]!), `${st.input.name} after step ${k + 1}`).toBeLessThan(1e-6);
          }
          float64[i] = referenceStep(ref.spec, ref.spec.weightDecay, float64[i]!, step.grads[name]!, step.lr, k + 1);
          expect(relativeError(float64[i]!.w, torchParam), `float64 ${name} after step ${k + 1}`).toBeLessThan(1e-6);
        }
      }
      await s.release();
    });
  }
});

describe('add-optimizer details', () => {
  it('computes AdamW bias corrections in float64 (first step of zero weights is −lr·g / (|g| + ε))', async () => {
    const spec: OptimizerSpec = { kind: 'adamw', beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1 };
    const { model, result } = optimizerModel([{ name: 'w', shape: [64] }], spec);
    const s = await session(model);
    const rng = new Rng(5);
    const g = Float32Array.from({ length: 64 }, () => rng.normal());
    const out = await stepOnce(s, result, initialStore(result, () => new Float32Array(64)), new Map([['w', g]]), 0.01, 1);
    await s.release();
    // m̂ = g and √v̂ = |g| exactly; float32 bias corrections would be off by about 6e-6 here
    const expected = Array.from(g, (x) => (-0.01 * x) / (Math.abs(x) + 1e-8));
    expect(maxRelativeError(out.get('w')!, expected)).toBeLessThan(1e-6);
  });

  it('per-parameter weight decay overrides the spec (biases without decay)', async () => {
    for (const spec of [
      { kind: 'adamw', beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.5 },
      { kind: 'sgd', momentum: 0.5, nesterov: true, weightDecay: 0.5 },
    ] satisfies OptimizerSpec[]) {
      const { model, result } = optimizerModel([{ name: 'w', shape: [2, 3] }, { name: 'b', shape: [3], weightDecay: 0 }], spec);
      const s = await session(model);
      const rng = new Rng(9);
      const init = new Map([['w', rng.uniform(6, -1, 1)], ['b', rng.uniform(3, -1, 1)]]);
      let current = initialStore(result, (name) => init.get(name)!);
      const refs = new Map([...init].map(([n, w]) => [n, { w: [...w], m: [...w].map(() => 0), v: [...w].map(() => 0) } as State64]));
      for (let t = 1; t <= 3; t++) {
        const grads: Store = new Map([['w', rng.uniform(6, -1, 1)], ['b', rng.uniform(3, -1, 1)]]);
        current = await stepOnce(s, result, current, grads, 0.1, t);
        for (const [name, wd] of [['w', 0.5], ['b', 0]] as const) {
          refs.set(name, referenceStep(spec, wd, refs.get(name)!, grads.get(name)!, 0.1, t));
          expect(maxRelativeError(current.get(name)!, refs.get(name)!.w), `${spec.kind} ${name} step ${t}`).toBeLessThan(1e-5);
        }
      }
      await s.release();
    }
  });

  it('names inputs and outputs after the parameters, deterministically', () => {
    const params = [{ name: 'conv1.weight', shape: [4, 3, 3, 3] }, { name: 'fc.bias', shape: [10] }];
    const sgd = optimizerModel(params, { kind: 'sgd', momentum: 0.9, nesterov: true, weightDecay: 1e-4 }).model.graph;
    expect(sgd.inputs.map((v) => v.name).slice(4)).toEqual(['lr', 'step', 'conv1.weight.momentum', 'fc.bias.momentum']);
    expect(sgd.outputs.map((v) => v.name)).toEqual(['conv1.weight.updated', 'conv1.weight.momentum.updated', 'fc.bias.updated', 'fc.bias.momentum.updated']);
    const plain = optimizerModel(params, { kind: 'sgd', momentum: 0, nesterov: false, weightDecay: 0 });
    expect(plain.model.graph.inputs.map((v) => v.name).slice(4)).toEqual(['lr', 'step']);
    expect(plain.result.updates.every((u) => u.state.length === 0)).toBe(true);
    const adam = optimizerModel(params, { kind: 'adamw', beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 }).model.graph;
    expect(adam.inputs.map((v) => v.name).slice(6)).toEqual(['conv1.weight.adam_m', 'conv1.weight.adam_v', 'fc.bias.adam_m', 'fc.bias.adam_v']);
    expect(adam.outputs.map((v) => v.name)).toEqual([
      'conv1.weight.updated', 'conv1.weight.adam_m.updated', 'conv1.weight.adam_v.updated',
      'fc.bias.updated', 'fc.bias.adam_m.updated', 'fc.bias.adam_v.updated',
    ]);
    for (const v of [...adam.inputs, ...adam.outputs]) expect(v.type).not.toBeNull();
    expect(adam.nodes.every((n) => n.domain === '')).toBe(true);
  });

  it('passes onnx.checker with full shape inference', () => {
    const params = [{ name: 'w', shape: [3, 2] }, { name: 'b', shape: [2] }];
    const specs: OptimizerSpec[] = [
      { kind: 'sgd', momentum: 0.9, nesterov: true, weightDecay: 1e-4 },
      { kind: 'sgd', momentum: 0, nesterov: false, weightDecay: 0 },
      { kind: 'adamw', beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 },
    ];
    const files = specs.map((spec, i) => {
      const file = path.join(tmp, `optimizer-${i}.onnx`);
      fs.writeFileSync(file, encodeModel(optimizerModel(params, spec).model));
      return file;
    });
    const check = 'import sys, onnx\nfor f in sys.argv[1:]: onnx.checker.check_model(onnx.load(f), full_check=True)';
    const run = spawnSync('/usr/bin/python3', ['-c', check, ...files], { encoding: 'utf8' });
    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
  });
});

describe('add-loss and add-optimizer compose into a train step', () => {
  const [n, f, c] = [32, 4, 3];

  /** Softmax regression: logits = x·W, cross-entropy, the backward by hand, then the optimizer. */
  function trainStep(spec: OptimizerSpec): { model: Model; opt: OptimizerResult } {
    const model = new Model();
    model.opsetImports.set('', 18n);
    const b = new OpBuilder(model.graph, 18);
    const x = b.input('x', tensorType(DataType.FLOAT, [n, f]));
    const w = b.input('fc.weight', tensorType(DataType.FLOAT, [f, c]));
    const logits = b.matMul(x, w, { outputTypes: [tensorType(DataType.FLOAT, [n, c])] });
    const loss = addLoss(model, logits, { kind: 'cross-entropy' });
    // d loss / d W = xᵀ · d loss / d logits
    const xT = b.transpose(x, [1, 0], { outputTypes: [tensorType(DataType.FLOAT, [f, n])] });
    const grad: Value = b.matMul(xT, loss.logitsGrad, { outputTypes: [tensorType(DataType.FLOAT, [f, c])] });
    const opt = addOptimizer(model, [{ param: w, grad }], spec);
    model.graph.outputs.push(loss.loss);
    verifyModel(model, { mode: 'pass', step: 'train-step' });
    return { model, opt };
  }

  /** A separable three-class problem: Gaussian blobs around random centers. */
  function problem(): { xs: Float32Array; labels: BigInt64Array } {
    const rng = new Rng(21);
    const centers = Array.from({ length: c }, () => Array.from({ length: f }, () => rng.normal() * 3));
    const labels = Array.from({ length: n }, (_, i) => i % c);
    const xs = Float32Array.from({ length: n * f }, (_, k) => centers[labels[Math.floor(k / f)]!]![k % f]! + rng.normal() * 0.5);
    return { xs, labels: BigInt64Array.from(labels.map(BigInt)) };
  }

  /** Feeds for step t: the problem, the weights and state carried over (by input name), lr and t. */
  function feeds(opt: OptimizerResult, carried: Store, t: number): Record<string, { type: 'float32' | 'int64'; data: Float32Array | BigInt64Array; dims: number[] }> {
    const { xs, labels } = problem();
    const out: Record<string, { type: 'float32' | 'int64'; data: Float32Array | BigInt64Array; dims: number[] }> = {
      x: { type: 'float32', data: xs, dims: [n, f] },
      labels: { type: 'int64', data: labels, dims: [n] },
      lr: { type: 'float32', data: Float32Array.of(0.05), dims: [] },
      step: { type: 'float32', data: Float32Array.of(t), dims: [] },
    };
    for (const [name, data] of carried) out[name] = { type: 'float32', data, dims: [f, c] };
    return out;
  }

  for (const spec of [
    { kind: 'sgd', momentum: 0.9, nesterov: true, weightDecay: 1e-4 },
    { kind: 'adamw', beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 1e-2 },
  ] satisfies OptimizerSpec[]) {
    it(`softmax regression learns a separable problem (${spec.kind})`, async () => {
      const { model, opt } = trainStep(spec);
      const s = await session(model);
      let carried = initialStore(opt, () => new Float32Array(f * c));
      const losses: number[] = [];
      for (let t = 1; t <= 30; t++) {
        const inputs = feeds(opt, carried, t);
        const out = await s.run(Object.fromEntries(Object.entries(inputs).map(([k, v]) => [k, new ort.Tensor(v.type, v.data, v.dims)])));
        losses.push((out.loss!.data as Float32Array)[0]!);
        const u = opt.updates[0]!;
        carried = new Map([[u.param.name, out[u.updated.name]!.data as Float32Array], ...u.state.map((st) => [st.input.name, out[st.output.name]!.data as Float32Array] as const)]);
      }
      await s.release();
      expect(losses[0]).toBeCloseTo(Math.log(c), 5);
      expect(losses.at(-1)!).toBeLessThan(0.1 * losses[0]!);
    });
  }

  it('runs the same in onnxruntime-web (wasm) as in onnxruntime-node', async () => {
    const { model, opt } = trainStep({ kind: 'adamw', beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 1e-2 });
    const rng = new Rng(4);
    const carried: Store = new Map([['fc.weight', rng.uniform(f * c, -1, 1)], ['fc.weight.adam_m', rng.uniform(f * c, -0.1, 0.1)], ['fc.weight.adam_v', rng.uniform(f * c, 0, 0.01)]]);
    const inputs = feeds(opt, carried, 3);
    const bytes = encodeModel(model);
    const node = await ort.InferenceSession.create(bytes, { intraOpNumThreads: 1, interOpNumThreads: 1 });
    const nodeOut = await node.run(Object.fromEntries(Object.entries(inputs).map(([k, v]) => [k, new ort.Tensor(v.type, v.data, v.dims)])));
    await node.release();
    ortWeb.env.wasm.numThreads = 1;
    const web = await ortWeb.InferenceSession.create(bytes);
    const webOut = await web.run(Object.fromEntries(Object.entries(inputs).map(([k, v]) => [k, new ortWeb.Tensor(v.type, v.data, v.dims)])));
    await web.release();
    for (const name of model.graph.outputs.map((o) => o.name)) {
      expect(relativeError(webOut[name]!.data as Float32Array, nodeOut[name]!.data as Float32Array), name).toBeLessThan(1e-6);
    }
  });
});

describe('add-optimizer errors', () => {
  const codeOf = (fn: () => unknown): string | null => {
    try {
      fn();
    } catch (e) {
      return isUserError(e) ? e.code : 'internal';
    }
    return null;
  };
  const params = [{ name: 'w', shape: [2] }];
  it('SLC007 for hyperparameters PyTorch refuses too', () => {
    expect(codeOf(() => optimizerModel(params, { kind: 'sgd', momentum: 0, nesterov: true, weightDecay: 0 }))).toBe('SLC007');
    expect(codeOf(() => optimizerModel(params, { kind: 'sgd', momentum: -0.5, nesterov: false, weightDecay: 0 }))).toBe('SLC007');
    expect(codeOf(() => optimizerModel(params, { kind: 'sgd', momentum: 0.9, nesterov: false, weightDecay: 0, dampening: 0.1 as 0 }))).toBe('SLC007');
    expect(codeOf(() => optimizerModel(params, { kind: 'adamw', beta1: 1, beta2: 0.999, eps: 1e-8, weightDecay: 0 }))).toBe('SLC007');
    expect(codeOf(() => optimizerModel(params, { kind: 'adamw', beta1: 0.9, beta2: 0.999, eps: -1, weightDecay: 0 }))).toBe('SLC007');
    expect(codeOf(() => optimizerModel(params, { kind: 'adamw', beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: Number.NaN }))).toBe('SLC007');
    expect(codeOf(() => optimizerModel(params, { kind: 'lamb' } as unknown as OptimizerSpec))).toBe('SLC007');
    expect(codeOf(() => optimizerModel([{ name: 'w', shape: [2], weightDecay: -1 }], { kind: 'sgd', momentum: 0, nesterov: false, weightDecay: 0 }))).toBe('SLC007');
  });
  it('SLC009 for parameters that are not static float32 tensors', () => {
    expect(codeOf(() => optimizerModel([{ name: 'w', shape: ['N', 2] }], { kind: 'sgd', momentum: 0, nesterov: false, weightDecay: 0 }))).toBe('SLC009');
    const model = new Model();
    model.opsetImports.set('', 18n);
    const b = new OpBuilder(model.graph, 18);
    const half = b.input('h', tensorType(DataType.FLOAT16, [2]));
    expect(codeOf(() => addOptimizer(model, [{ param: half, grad: half }], { kind: 'sgd', momentum: 0, nesterov: false, weightDecay: 0 }))).toBe('SLC009');
  });
  it('an internal error for a parameter that is not a graph input', () => {
    const model = new Model();
    model.opsetImports.set('', 18n);
    const b = new OpBuilder(model.graph, 18);
    const w = b.floatConst([1, 2], [2], 'w');
    expect(codeOf(() => addOptimizer(model, [{ param: w, grad: w }], { kind: 'sgd', momentum: 0, nesterov: false, weightDecay: 0 }))).toBe('internal');
  });
});
