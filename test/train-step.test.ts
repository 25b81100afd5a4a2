// Train-step graphs on every fixture at every compiled rate: one SGD step on a fixed batch lowers
// the loss, the graph reads only the rate's kept sub-tensors (no gradient of a dropped channel
// exists to compute), every node is a default-domain op, and the updated parameters come back
// with the shapes they went in with.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import type { Manifest } from '../compiler/artifacts.js';
import { encodeModel, readModel } from '../compiler/onnx-codec.js';
import { compile } from '../compiler/pipeline.js';
import { tensorToArray } from '../compiler/grad.js';
import { buildTrainStep } from '../compiler/train-step.js';
import { Rng } from '../compiler/rng.js';
import { GraphSession, WEIGHTS_AS_INPUTS } from '../runtime/graph-session.js';
import { Exporter } from '../fixtures/exporter.js';
import type { NdArray } from '../runtime/npz.js';
import { fixtureModels, REPO_ROOT } from './helpers/models.js';
import { runBin } from './helpers/cli.js';

const BATCH = 4;
const LR = 1e-3;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-train-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const REAL = [
  ...['cnn_bn', 'resnet_block', 'dw_se', 'mlp_ln', 'transformer'].map((n) => ({ name: `PyTorch export ${n}`, file: path.join(REPO_ROOT, 'test', 'data', 'torch-refs', `${n}.onnx`) })),
  { name: 'PaddleOCR cls', file: path.join(REPO_ROOT, 'node_modules', '@gutenye', 'ocr-models', 'assets', 'ch_ppocr_mobile_v2.0_cls_infer.onnx'), inputShapes: { x: [BATCH, 3, 48, 96] } },
];

interface Case {
  name: string;
  file: string;
  norm: 'gn' | 'keep' | 'none';
  inputShapes?: Record<string, number[]>;
}

// every fixture after each --norm mode (so every op those modes emit is differentiated), and
// real exports with the default
const CASES: Case[] = [
  ...fixtureModels().flatMap((f) => (['gn', 'keep', 'none'] as const).map((norm) => ({ name: `${f.name} --norm ${norm}`, file: f.file, norm }))),
  ...REAL.map((r) => ({ ...r, norm: 'gn' as const })),
];

describe('one SGD step lowers the loss at every rate', () => {
  for (const fixture of CASES) {
    it(fixture.name, async () => {
      const outDir = path.join(tmp, `${path.basename(fixture.file, '.onnx')}-${fixture.norm}`);
      await compile({ codegen: false, model: fixture.file, groups: 4, rates: [0.25, 0.5, 1], norm: fixture.norm, calibrate: false, outDir, log: () => {} });
      const manifest = JSON.parse(fs.readFileSync(path.join(outDir, 'manifest.json'), 'utf8')) as Manifest;
      const rng = new Rng(7);
      for (const rate of manifest.rates) {
        const model = readModel(path.join(outDir, rate.file));
        const logitsDims = model.graph.outputs[0]!.shape!;
        const classes = Number(logitsDims[logitsDims.length - 1]);
        const step = buildTrainStep(model, { batch: BATCH, loss: { kind: 'cross-entropy' }, optimizer: { kind: 'sgd', momentum: 0, nesterov: false, weightDecay: 0 }, inputShapes: fixture.inputShapes });
        expect(step.model.graph.nodes.every((n) => n.domain === '')).toBe(true);
        const initial = new Map(model.graph.initializers.map((v) => [v.name, v.const!]));
        for (const n of model.graph.nodes) if (n.op === 'Constant' && n.outputs[0]?.const) initial.set(n.outputs[0].name, n.outputs[0].const);
        const feeds = new Map<string, NdArray>();
        for (const input of step.signature.inputs) {
          const count = input.shape.reduce((a, d) => a * d, 1);
          if (input.role === 'parameter' || input.role === 'running-stat') {
            const t = initial.get(input.parameter!);
            if (!t) throw new Error(`no tensor for ${input.name} (${input.parameter})`);
            // the graph reads exactly the rate's tensor: kept channels only
            expect(input.shape, input.name).toEqual(t.dims);
            feeds.set(input.name, tensorToArray(t));
          } else if (input.role === 'batch') {
            feeds.set(input.name, { dtype: 'float32', dims: input.shape, data: rng.uniform(count, -1, 1) });
          } else if (input.role === 'labels') {
            feeds.set(input.name, { dtype: 'int64', dims: input.shape, data: BigInt64Array.from({ length: count }, (_, i) => BigInt(i % classes)) });
          } else if (input.role === 'lr') {
            feeds.set(input.name, { dtype: 'float32', dims: [], data: Float32Array.of(LR) });
          } else if (input.role === 'step') {
            feeds.set(input.name, { dtype: 'float32', dims: [], data: Float32Array.of(1) });
          } else {
            throw new Error(`unexpected input ${input.name} (${input.role})`);
          }
        }
        const session = await GraphSession.create(encodeModel(step.model));
        const first = await session.run(feeds);
        const updated = step.signature.outputs.filter((o) => o.role === 'parameter');
        expect(updated.length).toBeGreaterThan(0);
        for (const o of updated) {
          const input = step.signature.inputs.find((i) => i.role === 'parameter' && i.parameter === o.parameter)!;
          expect(first.get(o.name)!.dims).toEqual(input.shape);
          feeds.set(input.name, first.get(o.name)!);
        }
        const second = await session.run(feeds);
        await session.release();
        const before = Number(first.get('loss')!.data[0]);
        const after = Number(second.get('loss')!.data[0]);
        expect(after, `rate ${rate.rate}: ${before} → ${after}`).toBeLessThan(before);
      }
    });
  }
});

describe('BatchNormalization in a train step', () => {
  // onnxruntime's BatchNormalization writes its statistics outputs into the buffers of its
  // statistics inputs, and its optimizer merges equal small initializers: a step must feed that
  // node buffers nothing else reads. Two norms of the same width 4 give it equal constants to merge.
  // (The running statistics' values are checked against PyTorch in grad-oracle.test.ts.)
  it('leaves the fed arrays as they were and gives the same numbers at every optimization level', async () => {
    const e = new Exporter({ opset: 18, irVersion: 8, seed: 3 });
    let h = e.relu('r1', e.batchNorm('bn1', e.conv('c1', e.input('x', [2, 6, 6]), 2, 4, { kernel: 3, pad: 1, bias: true }), 4));
    h = e.relu('r2', e.batchNorm('bn2', e.conv('c2', h, 4, 4, { kernel: 3, pad: 1 }), 4));
    const model = e.output(e.linear('fc', e.flatten(e.b.op1('GlobalAveragePool', [h])), 4, 3), 'logits', [3]);
    const step = buildTrainStep(model, { batch: BATCH, loss: { kind: 'cross-entropy' }, optimizer: { kind: 'sgd', momentum: 0.9, nesterov: false, weightDecay: 0 } });
    const initial = new Map(model.graph.initializers.map((v) => [v.name, v.const!]));
    const rng = new Rng(11);
    const feeds = new Map<string, NdArray>();
    for (const input of step.signature.inputs) {
      const count = input.shape.reduce((a, d) => a * d, 1);
      if (input.role === 'parameter' || input.role === 'running-stat') feeds.set(input.name, { dtype: 'float32', dims: input.shape, data: Float32Array.from(initial.get(input.parameter!)!.numbers()) });
      else if (input.role === 'batch' || input.role === 'optimizer-state') feeds.set(input.name, { dtype: 'float32', dims: input.shape, data: rng.uniform(count, -1, 1) });
      else if (input.role === 'labels') feeds.set(input.name, { dtype: 'int64', dims: input.shape, data: BigInt64Array.from({ length: count }, (_, i) => BigInt(i % 3)) });
      else feeds.set(input.name, { dtype: 'float32', dims: [], data: Float32Array.of(input.role === 'lr' ? 0.1 : 1) });
    }
    const copies = new Map([...feeds].map(([name, a]) => [name, Array.from(a.data as Float32Array)]));
    const bytes = encodeModel(step.model);
    const results: Map<string, number[]>[] = [];
    for (const opts of [WEIGHTS_AS_INPUTS, {}]) {
      const session = await GraphSession.create(bytes, opts);
      const out = await session.run(feeds);
      await session.release();
      results.push(new Map([...out].map(([name, a]) => [name, Array.from(a.data as Float32Array)])));
    }
    // the reference: no graph optimizations at all
    const plain = await ort.InferenceSession.create(bytes, { graphOptimizationLevel: 'disabled' });
    const out = await plain.run(Object.fromEntries([...feeds].map(([name, a]) => [name, new ort.Tensor(a.dtype as 'float32', a.data as Float32Array, a.dims)])));
    await plain.release();
    for (const [name, data] of copies) expect(Array.from(feeds.get(name)!.data as Float32Array), name).toEqual(data);
    const stats = step.signature.outputs.filter((o) => o.role === 'running-stat');
    expect(stats.length).toBe(4);
    for (const o of step.signature.outputs.filter((o) => o.role !== 'logits')) {
      const want = Array.from(out[o.name]!.data as Float32Array);
      for (const got of results) {
        const worst = Math.max(...want.map((v, i) => Math.abs(v - got.get(o.name)![i]!) / (Math.abs(v) + 1e-3)));
        expect(worst, o.name).toBeLessThan(1e-4);
      }
    }
  });
});

describe('slicec train-graphs', () => {
  it('writes one graph per rate and records every input and output with its role', async () => {
    const outDir = path.join(tmp, 'train-graphs');
    expect(runBin([path.join(REPO_ROOT, 'fixtures', 'lenet-bn.onnx'), '--groups', '4', '--rates', '0.5,1', '--norm', 'keep', '-o', outDir]).code).toBe(0);
    const run = runBin(['train-graphs', outDir, '--batch', '8', '--json']);
    expect(run.code, run.stderr).toBe(0);
    const manifest = JSON.parse(fs.readFileSync(path.join(outDir, 'manifest.json'), 'utf8')) as Manifest;
    expect(manifest.train!.graphs.map((g) => g.rate)).toEqual([0.5, 1]);
    for (const g of manifest.train!.graphs) {
      const session = await GraphSession.create(path.join(outDir, g.file));
      expect([...session.inputNames].sort()).toEqual(g.signature.inputs.map((i) => i.name).sort());
      expect([...session.outputNames].sort()).toEqual(g.signature.outputs.map((o) => o.name).sort());
      await session.release();
      const roles = new Set(g.signature.inputs.map((i) => i.role));
      for (const role of ['batch', 'labels', 'parameter', 'running-stat', 'optimizer-state', 'lr', 'step']) expect(roles.has(role as never), role).toBe(true);
      expect(g.signature.inputs.find((i) => i.role === 'batch')!.shape[0]).toBe(8);
    }
    const bad = runBin(['train-graphs', path.join(tmp, 'missing')]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('error SLC010');
  });

  it('trains weights, biases and norm vectors only: fixed constants (group-norm matrices) stay inputs of no update', () => {
    const outDir = path.join(tmp, 'train-graphs-gn');
    expect(runBin([path.join(REPO_ROOT, 'fixtures', 'concat-net.onnx'), '--groups', '4', '--rates', '0.5,1', '--norm', 'gn', '-o', outDir]).code).toBe(0);
    expect(runBin(['train-graphs', outDir, '--batch', '4']).code).toBe(0);
    const manifest = JSON.parse(fs.readFileSync(path.join(outDir, 'manifest.json'), 'utf8')) as Manifest;
    const roles = new Map(manifest.parameters.map((p) => [p.name, p.role]));
    expect([...roles.values()].filter((r) => r === 'fixed').length).toBeGreaterThan(0);
    for (const g of manifest.train!.graphs) {
      const trained = g.signature.inputs.filter((i) => i.role === 'parameter').map((i) => roles.get(i.parameter!));
      expect(trained.length).toBeGreaterThan(0);
      for (const role of trained) expect(['weight', 'bias', 'norm-scale', 'norm-bias', undefined]).toContain(role);
    }
  });
});
