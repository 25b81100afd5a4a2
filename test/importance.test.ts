// --importance activation: channels ordered by mean |activation| on calibration data × L1 of
// their outgoing weights. Dead units (never active on the data, however large their filters)
// go last, where weight order puts them first; the rate-1 graph still equals the original; the
// default follows --calibration and the manifest records the choice.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import type { Manifest } from '../compiler/artifacts.js';
import { Graph, Model, Value, tensorType } from '../compiler/ir.js';
import { OpBuilder } from '../compiler/op-builder.js';
import { encodeTensorProto, readModel, writeModel } from '../compiler/onnx-codec.js';
import { compile } from '../compiler/pipeline.js';
import { Rng } from '../compiler/rng.js';
import { DataType, Tensor } from '../compiler/tensor.js';
import { randomFeeds, REPO_ROOT, type Feeds } from './helpers/models.js';
import { relativeError } from './helpers/compare.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-importance-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const DEAD_BIAS = -1000;

interface Net {
  model: Model;
  b: OpBuilder;
  rng: Rng;
  x: Value;
}

function net(inputDims: number[]): Net {
  const graph = new Graph();
  graph.name = 'importance';
  const model = new Model(graph);
  model.irVersion = 8n;
  model.opsetImports.set('', 13n);
  const x = new Value('input', tensorType(DataType.FLOAT, ['N', ...inputDims]));
  graph.inputs.push(x);
  graph.claimName('input');
  return { model, b: new OpBuilder(graph, 13), rng: new Rng(17), x };
}

/** Weights [out, ...perOut] and biases where the `dead` outputs have 4× larger filters and a bias no input overcomes. */
function layerParams(n: Net, name: string, out: number, perOut: number[], dead: Set<number>): { w: Value; bias: Value } {
  const size = perOut.reduce((p, d) => p * d, 1);
  const w = new Float32Array(out * size);
  const bias = new Float32Array(out);
  for (let o = 0; o < out; o++) {
    const scale = dead.has(o) ? 2 : 0.5;
    for (let i = 0; i < size; i++) w[o * size + i] = (n.rng.next() * 2 - 1) * scale;
    bias[o] = dead.has(o) ? DEAD_BIAS : 0.1;
  }
  return {
    w: n.b.constant(Tensor.float32([out, ...perOut], w), `${name}.weight`),
    bias: n.b.constant(Tensor.float32([out], bias), `${name}.bias`),
  };
}

function linear(n: Net, name: string, x: Value, inputs: number, out: number, dead = new Set<number>()): Value {
  const { w, bias } = layerParams(n, name, out, [inputs], dead);
  return n.b.gemm(x, w, bias, { transB: true }, { name: `/${name}/Gemm` });
}

function finish(n: Net, y: Value, name: string): string {
  y.name = 'output';
  y.type = tensorType(DataType.FLOAT, ['N', 10]);
  n.model.graph.outputs.push(y);
  const file = path.join(tmp, `${name}.onnx`);
  writeModel(n.model, file);
  return file;
}

/** 16 → 32 (8 dead units) → ReLU → 10. */
function mlpWithDeadUnits(): string {
  const n = net([16]);
  const hidden = n.b.relu(linear(n, 'fc1', n.x, 16, 32, new Set([1, 5, 9, 13, 17, 21, 25, 29])));
  return finish(n, linear(n, 'fc2', hidden, 32, 10), 'mlp-dead');
}

/** Conv 3 → 8 (2 dead channels) → ReLU → Flatten of a 4x4 map → Gemm 128 → 10. */
function convWithDeadChannels(): string {
  const n = net([3, 4, 4]);
  const { w, bias } = layerParams(n, 'conv1', 8, [3, 3, 3], new Set([1, 4]));
  const y = n.b.relu(n.b.conv(n.x, w, bias, { kernelShape: [3, 3], pads: [1, 1, 1, 1] }, { name: '/conv1/Conv' }));
  return finish(n, linear(n, 'fc', n.b.flatten(y, 1), 128, 10), 'conv-dead');
}

function calibrationFile(model: string, batch: number): string {
  const input = randomFeeds(readModel(model), 31, batch)!['input']!;
  const file = path.join(tmp, `${path.basename(model, '.onnx')}-calibration.pb`);
  fs.writeFileSync(file, encodeTensorProto(Tensor.fromTyped(1, [...input.dims], input.data as Float32Array, 'input')));
  return file;
}

async function run(model: string, feeds: Feeds): Promise<Record<string, Float32Array>> {
  const session = await ort.InferenceSession.create(model, { intraOpNumThreads: 1, logSeverityLevel: 4 });
  try {
    const out = await session.run(feeds);
    return Object.fromEntries(session.outputNames.map((name) => [name, out[name]!.data as Float32Array]));
  } finally {
    await session.release();
  }
}

/** Positions of dead units in the rate-1 graph (found by their bias) and whether it equals the original. */
async function compileAndLocate(file: string, name: string, bias: string, importance?: 'activation' | 'weight' | 'none', calibration?: string) {
  const outDir = path.join(tmp, `${name}-${importance ?? 'default'}`);
  const result = await compile({ codegen: false, model: file, groups: 4, rates: [0.5, 1], outDir, norm: 'keep', importance, calibration });
  const full = readModel(path.join(outDir, 'slices/rate-1.000.onnx'));
  const values = Array.from(full.graph.valuesByName().get(bias)!.const!.numbers());
  const dead = values.flatMap((v, i) => (v === DEAD_BIAS ? [i] : []));
  const feeds = randomFeeds(readModel(file), 5, 4)!;
  const original = await run(file, feeds);
  const emitted = await run(path.join(outDir, 'slices/rate-1.000.onnx'), feeds);
  const error = Math.max(...Object.entries(original).map(([k, t]) => relativeError(t, emitted[k]!)));
  const manifest = JSON.parse(fs.readFileSync(result.manifestFile, 'utf8')) as Manifest;
  return { dead, width: values.length, error, manifest };
}

describe('--importance activation', () => {
  for (const [name, build, bias, deadCount] of [
    ['mlp', mlpWithDeadUnits, 'fc1.bias', 8],
    ['conv', convWithDeadChannels, 'conv1.bias', 2],
  ] as const) {
    it(`${name}: dead units go last by activation and first by weight; rate 1 is unchanged`, async () => {
      const file = build();
      const calibration = calibrationFile(file, 32);
      const activation = await compileAndLocate(file, name, bias, 'activation', calibration);
      const tail = Array.from({ length: deadCount }, (_, i) => activation.width - deadCount + i);
      expect(activation.dead).toEqual(tail);
      expect(activation.error).toBeLessThan(1e-4);
      expect(activation.manifest.importance).toEqual({ mode: 'activation', source: 'file', batch: 32, unions: 1 });

      const weight = await compileAndLocate(file, name, bias, 'weight');
      expect(weight.dead).toEqual(Array.from({ length: deadCount }, (_, i) => i));
      expect(weight.error).toBeLessThan(1e-4);
      expect(weight.manifest.importance).toEqual({ mode: 'weight' });

      // none keeps the exported order: the dead units stay where the model has them
      const none = await compileAndLocate(file, name, bias, 'none');
      expect(none.dead).toEqual(name === 'mlp' ? [1, 5, 9, 13, 17, 21, 25, 29] : [1, 4]);
      expect(none.error).toBeLessThan(1e-4);
      expect(none.manifest.importance).toEqual({ mode: 'none' });
    });
  }

  it('is the default when calibration data is given, weight otherwise', async () => {
    const file = mlpWithDeadUnits();
    const calibration = calibrationFile(file, 16);
    const withData = await compileAndLocate(file, 'mlp-defaults', 'fc1.bias', undefined, calibration);
    expect(withData.manifest.importance?.mode).toBe('activation');
    expect(withData.dead[0]).toBe(24);
    const without = await compileAndLocate(file, 'mlp-defaults-none', 'fc1.bias');
    expect(without.manifest.importance).toEqual({ mode: 'weight' });
  });

  it('keeps the rate-1 graph equal to the original on the conv fixtures', async () => {
    for (const name of ['resnet-small', 'mobilenet-se', 'concat-net', 'conv-flatten-gemm']) {
      const file = path.join(REPO_ROOT, 'fixtures', `${name}.onnx`);
      const outDir = path.join(tmp, `fixture-${name}`);
      const result = await compile({ codegen: false, model: file, groups: 4, rates: [0.5, 1], outDir, norm: 'keep', importance: 'activation' });
      expect(result.importance.mode).toBe('activation');
      expect(result.importance.source).toBe('synthetic');
      expect(result.importance.unions).toBeGreaterThan(0);
      const feeds = randomFeeds(readModel(file), 6, 2)!;
      const original = await run(file, feeds);
      const full = await run(path.join(outDir, 'slices/rate-1.000.onnx'), feeds);
      for (const [k, t] of Object.entries(original)) expect(relativeError(t, full[k]!)).toBeLessThan(1e-4);
    }
  });
});
