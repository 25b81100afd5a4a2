// upgradeOpset: small models at opsets 6-12 holding each op whose signature or meaning changed
// are raised to 13 (and 18), verified, encoded and run next to the original in onnxruntime-node
// on the same random inputs; the outputs must be identical. Models ORT cannot run at their old
// opset are checked against results computed here or recorded by ONNX's test suite.
//
// Sessions use the basic graph optimizations only: the extended ones (NCHWc convolutions) are
// picked per opset and would change float rounding for reasons that have nothing to do with the
// upgrade.

import { fromBinary } from '@bufbuild/protobuf';
import { TensorProtoSchema } from 'onnx-buf';
import * as ort from 'onnxruntime-node';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ErrorCodes, UserError } from '../compiler/diagnostics.js';
import { Graph, Model, Value, tensorType, type Dim, type Node } from '../compiler/ir.js';
import { decodeModel, decodeModelProto, encodeModel, readModel } from '../compiler/onnx-codec.js';
import { OpBuilder, minIrVersion } from '../compiler/op-builder.js';
import { DataType } from '../compiler/tensor.js';
import { verifyModel } from '../compiler/verifier.js';
import { upgradeOpset } from '../passes/upgrade-opset.js';
import {
  fixtureModels,
  randomFeeds,
  recordedFeeds,
  tensorProtoToOrt,
  testdataModels,
  type Feeds,
} from './helpers/models.js';

const INT64_MAX = 9223372036854775807n;

const SESSION_OPTIONS: ort.InferenceSession.SessionOptions = {
  graphOptimizationLevel: 'basic',
  intraOpNumThreads: 1,
  interOpNumThreads: 1,
  logSeverityLevel: 4,
};

type Outputs = Record<string, ort.Tensor>;

async function run(bytes: Uint8Array, feeds: Feeds): Promise<Outputs> {
  const session = await ort.InferenceSession.create(bytes, SESSION_OPTIONS);
  try {
    return await session.run(feeds);
  } finally {
    await session.release();
  }
}

function bytesOf(t: ort.Tensor): Buffer {
  const d = t.data as ArrayBufferView | string[];
  if (Array.isArray(d)) return Buffer.from(JSON.stringify(d));
  return Buffer.from(d.buffer, d.byteOffset, d.byteLength);
}

/** Outputs equal bit for bit, by name. */
function expectIdentical(expected: Outputs, actual: Outputs): void {
  expect(Object.keys(actual).sort()).toEqual(Object.keys(expected).sort());
  for (const name of Object.keys(expected)) {
    const a = expected[name]!;
    const b = actual[name]!;
    expect(b.type, name).toBe(a.type);
    expect([...b.dims], name).toEqual([...a.dims]);
    if (!bytesOf(a).equals(bytesOf(b))) throw new Error(`output ${name} differs after the upgrade`);
  }
}

/** Largest |a-b| / max(1, |b|) over the elements (Infinity when the shapes differ). */
function relativeError(actual: ort.Tensor, expected: ort.Tensor): number {
  if ([...actual.dims].join(',') !== [...expected.dims].join(',')) return Infinity;
  const a = actual.data as ArrayLike<number | bigint>;
  const b = expected.data as ArrayLike<number | bigint>;
  let worst = 0;
  for (let i = 0; i < b.length; i++) {
    const e = Number(b[i]);
    if (Number.isNaN(e) && Number.isNaN(Number(a[i]))) continue;
    const d = Math.abs(Number(a[i]) - e) / Math.max(1, Math.abs(e));
    if (!(d <= worst)) worst = Number.isNaN(d) ? Infinity : d;
  }
  return worst;
}

// ---------------------------------------------------------------- building small models

interface InputSpec {
  name: string;
  shape: Dim[];
  dtype?: DataType;
}

function newModel(opset: number, inputs: InputSpec[]): { model: Model; b: OpBuilder; xs: Value[] } {
  const graph = new Graph();
  graph.name = 'upgrade_test';
  const model = new Model(graph);
  model.irVersion = BigInt(minIrVersion(opset));
  model.opsetImports.set('', BigInt(opset));
  const xs = inputs.map((s) => {
    const v = new Value(s.name, tensorType(s.dtype ?? DataType.FLOAT, s.shape));
    graph.claimName(s.name);
    graph.inputs.push(v);
    return v;
  });
  return { model, b: new OpBuilder(graph, opset), xs };
}

function nodeOf(model: Model, op: string): Node {
  const node = model.graph.nodes.find((n) => n.op === op);
  if (!node) throw new Error(`no ${op} node`);
  return node;
}

interface Case {
  name: string;
  opsets: number[];
  inputs: InputSpec[];
  build(b: OpBuilder, xs: Value[], opset: number, model: Model): Value[];
  /** Extra checks on the upgraded model. */
  check?(model: Model, opset: number): void;
}

const X4: InputSpec = { name: 'x', shape: ['N', 3, 4, 5] };

const cases: Case[] = [
  {
    name: 'Slice attributes → inputs',
    opsets: [7, 9],
    inputs: [X4],
    build: (b, [x]) => [b.slice(x!, [1, 0], [3, INT64_MAX], [1, 2]), b.slice(x!, [-3], [-1], [3]), b.slice(x!, [0, 1], [1, 3])],
    check: (m) => {
      const s = nodeOf(m, 'Slice');
      expect(s.attributes.size).toBe(0);
      expect(s.inputs[2]!.const!.bigints()).toEqual([3n, INT64_MAX]);
      expect(s.inputs[2]!.const!.dtype).toBe(DataType.INT64);
    },
  },
  {
    name: 'Clip min/max attributes → scalar inputs of the input type',
    opsets: [7, 9, 10],
    inputs: [X4],
    build: (b, [x]) => [b.clip(x!, -0.3, 0.4), b.clip(x!, undefined, 0.1), b.clip(x!, -0.2)],
    check: (m) => {
      const clips = m.graph.nodes.filter((n) => n.op === 'Clip');
      expect(clips[1]!.inputs[1]).toBeNull();
      expect(clips[1]!.inputs[2]!.const!.dims).toEqual([]);
      expect(clips[0]!.inputs[1]!.const!.dtype).toBe(DataType.FLOAT);
    },
  },
  {
    name: 'Pad pads/value attributes → inputs',
    opsets: [7, 9, 10],
    inputs: [X4],
    build: (b, [x]) => [
      b.pad(x!, [0, 0, 1, 2, 0, 0, 2, 1], 'constant', 1.5),
      b.pad(x!, [0, 0, 1, 1, 0, 0, 1, 1], 'reflect'),
      b.pad(x!, [0, 0, 0, 2, 0, 0, 1, 0], 'edge'),
      b.pad(x!, [0, 1, 0, 0, 0, 0, 0, 1]),
    ],
  },
  {
    name: 'TopK k attribute → input',
    opsets: [7, 9],
    inputs: [X4],
    build: (b, [x]) => b.op('TopK', [x!], { axis: 3, k: 3 }, { outputs: 2 }),
    check: (m) => expect(nodeOf(m, 'TopK').inputs[1]!.const!.bigints()).toEqual([3n]),
  },
  {
    name: 'Upsample (scales attribute) → Resize',
    opsets: [7],
    inputs: [X4],
    build: (b, [x]) => [
      b.op1('Upsample', [x!], { mode: 'nearest', scales: [1, 1, 2, 3] }),
      b.op1('Upsample', [x!], { mode: 'linear', scales: [1, 1, 2, 2] }),
    ],
    check: (m) => {
      const r = nodeOf(m, 'Resize');
      expect(r.attrString('coordinate_transformation_mode')).toBe('asymmetric');
      expect(r.attrString('nearest_mode')).toBe('floor');
      expect(m.graph.nodes.some((n) => n.op === 'Upsample')).toBe(false);
    },
  },
  {
    name: 'Upsample (scales input) and Resize-10 → Resize',
    opsets: [9, 10],
    inputs: [X4],
    build: (b, [x], opset) => [
      b.resize(x!, { scales: [1, 1, 2, 3], mode: 'nearest' }),
      b.resize(x!, { scales: [1, 1, 3, 2], mode: 'linear' }),
      b.resize(x!, { scales: [1, 1, 1.5, 2.5], mode: 'nearest' }),
      // Upsample only enlarges; Resize-10 may shrink
      ...(opset >= 10 ? [b.resize(x!, { scales: [1, 1, 0.5, 0.6], mode: 'linear' })] : []),
    ],
  },
  {
    name: 'Dropout ratio attribute → input, unused mask dropped',
    opsets: [7, 9, 10, 11],
    inputs: [X4],
    build: (b, [x]) => [b.op('Dropout', [x!], { ratio: 0.3 }, { outputs: 2 })[0]!],
    check: (m, opset) => {
      const d = nodeOf(m, 'Dropout');
      expect(d.attributes.has('ratio')).toBe(false);
      expect(d.inputs[1]!.const!.numbers()[0]).toBeCloseTo(0.3);
      // the mask changed type at 10; from 10 on it is kept
      expect(d.outputs.length).toBe(opset < 10 ? 1 : 2);
    },
  },
  {
    name: 'Squeeze/Unsqueeze axes attribute → input',
    opsets: [7, 11, 12],
    inputs: [{ name: 'x', shape: [2, 1, 3, 1] }],
    build: (b, [x], opset) => [
      b.unsqueeze(b.squeeze(x!, [1]), [0, 3]),
      b.squeeze(x!),
      opset >= 11 ? b.unsqueeze(x!, [-1]) : b.unsqueeze(x!, [4]),
      opset >= 11 ? b.squeeze(x!, [-1, 1]) : b.squeeze(x!, [3, 1]),
    ],
    check: (m) => {
      const sq = m.graph.nodes.filter((n) => n.op === 'Squeeze');
      expect(sq[0]!.inputs[1]!.const!.bigints()).toEqual([1n]);
      expect(sq[1]!.inputs.length).toBe(1);
    },
  },
  {
    name: 'ReduceSum axes attribute → input; other reductions untouched at 13',
    opsets: [7, 11, 12],
    inputs: [X4],
    build: (b, [x]) => [
      b.reduce('ReduceSum', x!, [1, 2], false),
      b.reduce('ReduceSum', x!),
      b.reduce('ReduceSum', x!, [3], true),
      b.reduce('ReduceMean', x!, [2], true),
      b.reduce('ReduceMax', x!, [1, 3], false),
    ],
  },
  {
    name: 'Split split attribute → input',
    opsets: [7, 11, 12],
    inputs: [{ name: 'x', shape: ['N', 6, 4] }],
    build: (b, [x]) => [...b.split(x!, 1, [1, 2, 3]), ...b.split(x!, 2, 2)],
  },
  {
    name: 'Softmax/LogSoftmax/Hardmax 2-D coercion',
    opsets: [7, 11, 12],
    inputs: [X4, { name: 'y', shape: [3, 7] }, { name: 'z', shape: [2, 3, 4] }],
    build: (b, [x, y, z], opset) => {
      const outs: Value[] = [];
      for (const op of ['Softmax', 'LogSoftmax', 'Hardmax']) {
        outs.push(b.op1(op, [x!], { axis: 1 }));
        outs.push(b.op1(op, [x!], {}));
        outs.push(b.op1(op, [x!], { axis: 3 }));
        outs.push(b.op1(op, [y!], {}));
        outs.push(b.op1(op, [z!], { axis: opset >= 11 ? -2 : 1 }));
        outs.push(b.op1(op, [z!], { axis: 0 }));
      }
      return outs;
    },
    check: (m) => {
      for (const n of m.graph.nodes.filter((k) => k.op === 'Softmax')) expect(n.attributes.has('axis')).toBe(true);
    },
  },
  {
    name: 'BatchNormalization spatial=1 dropped',
    opsets: [7],
    inputs: [X4],
    build: (b, [x]) => {
      const c = (vals: number[], name: string): Value => b.floatConst(vals, [3], name);
      const y = b.batchNorm(x!, c([1, 2, 0.5], 'scale'), c([0.1, -0.2, 0.3], 'bias'), c([0.5, 0, -0.5], 'mean'), c([1, 2, 0.25], 'var'));
      y.producer!.setInt('spatial', 1);
      return [y];
    },
    check: (m) => expect(nodeOf(m, 'BatchNormalization').attributes.has('spatial')).toBe(false),
  },
  {
    name: 'Scatter → ScatterElements',
    opsets: [9, 10],
    inputs: [{ name: 'x', shape: [2, 3] }],
    build: (b, [x]) => {
      const idx = b.int64Const([1, 0, 2, 0, 2, 1], 'idx', [2, 3]);
      const upd = b.floatConst([1, 2, 3, 4, 5, 6], [2, 3], 'upd');
      return [b.op1('Scatter', [x!, idx, upd], { axis: 1 })];
    },
    check: (m) => expect(nodeOf(m, 'ScatterElements').attrInt('axis')).toBe(1),
  },
  {
    name: 'unchanged ops stay as they are',
    opsets: [7, 9],
    inputs: [{ name: 'x', shape: ['N', 2, 8, 8] }],
    build: (b, [x]) => {
      const w = b.floatConst(Array.from({ length: 4 * 2 * 9 }, (_, i) => Math.sin(i)), [4, 2, 3, 3], 'w');
      let y = b.relu(b.conv(x!, w, null, { pads: [1, 1, 1, 1] }));
      y = b.maxPool(y, { kernelShape: [2, 2], strides: [2, 2] });
      y = b.flatten(y, 1);
      const g = b.floatConst(Array.from({ length: 64 * 5 }, (_, i) => Math.cos(i) / 8), [64, 5], 'g');
      return [b.gemm(y, g, b.floatConst([1, 2, 3, 4, 5], [5], 'c')), b.concat([x!, x!], 1)];
    },
    check: (m) => expect(m.graph.nodes.map((n) => n.op)).toEqual(['Conv', 'Relu', 'MaxPool', 'Flatten', 'Gemm', 'Concat']),
  },
];

/** Build the case at `opset`, upgrade a copy to `target`, and compare both runs. */
async function checkCase(c: Case, opset: number, target: number): Promise<void> {
  const { model, b, xs } = newModel(opset, c.inputs);
  model.graph.outputs = c.build(b, xs, opset, model);
  const before = encodeModel(model);
  const inputNames = model.graph.inputs.map((v) => v.name);
  const outputNames = model.graph.outputs.map((v) => v.name);
  const nodeNames = model.graph.nodes.map((n) => n.name).filter((n) => n);
  const result = upgradeOpset(model, target);
  expect(result.upgraded).toBe(true);
  expect(result.from).toBe(opset);
  expect(model.opset('')).toBe(target);
  expect(model.irVersion).toBe(BigInt(minIrVersion(target)));
  verifyModel(model, { mode: 'pass', step: 'upgrade-opset' });
  expect(model.graph.inputs.map((v) => v.name)).toEqual(inputNames);
  expect(model.graph.outputs.map((v) => v.name)).toEqual(outputNames);
  const names = new Set(model.graph.nodes.map((n) => n.name));
  for (const n of nodeNames) expect(names.has(n), `node ${n} kept`).toBe(true);
  c.check?.(model, opset);
  const after = encodeModel(model);
  // the encoded model reads back at the new opset and still verifies
  verifyModel(decodeModel(after, null), { mode: 'pass', step: 'upgrade-opset (re-read)' });
  for (const seed of [1, 2]) {
    const feeds = randomFeeds(model, seed + opset)!;
    expectIdentical(await run(before, feeds), await run(after, feeds));
  }
}

describe('upgradeOpset on small models', () => {
  for (const c of cases) {
    for (const opset of c.opsets) {
      it(`${c.name} (opset ${opset} → 13)`, () => checkCase(c, opset, 13));
    }
    it(`${c.name} (opset ${c.opsets[0]} → 18)`, () => checkCase(c, c.opsets[0]!, 18));
  }
});

// ---------------------------------------------------------------- models ORT cannot run as they are

/** Run `model` (upgraded) and compare with `expected` computed here. */
async function runUpgraded(model: Model, feeds: Feeds): Promise<Outputs> {
  verifyModel(model, { mode: 'pass', step: 'upgrade-opset' });
  return run(encodeModel(model), feeds);
}

function floats(t: ort.Tensor): number[] {
  return [...(t.data as Float32Array)];
}

describe('upgradeOpset on opset-6 forms', () => {
  it('turns legacy broadcasting with axis into numpy broadcasting (constant and run-time B)', async () => {
    const { model, b, xs } = newModel(6, [{ name: 'a', shape: [2, 3, 2, 2] }, { name: 'bias', shape: [3] }]);
    const [a, bias] = xs as [Value, Value];
    const c = b.floatConst([10, 20, 30], [3], 'c');
    const y1 = b.op1('Add', [a, c], { broadcast: 1, axis: 1 });
    const y2 = b.op1('Mul', [a, bias], { broadcast: 1, axis: 1 });
    const y3 = b.op1('Sub', [a, b.floatConst([1, 2], [2], 'd')], { broadcast: 1 });
    model.graph.outputs = [y1, y2, y3];
    const r = upgradeOpset(model, 13);
    expect(r.converted.length).toBe(3);
    for (const n of model.graph.nodes) expect(n.attributes.has('broadcast')).toBe(false);
    expect(c.const!.dims).toEqual([3, 1, 1]);
    const av = Float32Array.from({ length: 24 }, (_, i) => i / 4 - 3);
    const bv = Float32Array.of(0.5, -1, 2);
    const out = await runUpgraded(model, { a: new ort.Tensor('float32', av, [2, 3, 2, 2]), bias: new ort.Tensor('float32', bv, [3]) });
    const ch = (i: number): number => Math.floor(i / 4) % 3;
    expect(floats(out[y1.name]!)).toEqual([...av].map((v, i) => Math.fround(v + [10, 20, 30][ch(i)]!)));
    expect(floats(out[y2.name]!)).toEqual([...av].map((v, i) => Math.fround(v * bv[ch(i)]!)));
    expect(floats(out[y3.name]!)).toEqual([...av].map((v, i) => Math.fround(v - [1, 2][i % 2]!)));
  });

  it('drops BatchNormalization is_test/consumed_inputs, Gemm broadcast and Dropout is_test', async () => {
    const { model, b, xs } = newModel(6, [{ name: 'x', shape: [2, 3] }]);
    const c = (vals: number[], name: string): Value => b.floatConst(vals, [3], name);
    const bn = b.batchNorm(xs[0]!, c([1, 2, 3], 's'), c([0, 1, 0], 'b'), c([0, 0, 1], 'm'), c([1, 1, 4], 'v'));
    bn.producer!.setInt('is_test', 1);
    bn.producer!.setInts('consumed_inputs', [0, 0, 0, 1, 1]);
    const d = b.op1('Dropout', [bn], { ratio: 0.5, is_test: 1 });
    const g = b.gemm(d, b.floatConst([1, 0, 0, 1, 1, 1], [3, 2], 'w'), b.floatConst([5, 6], [2], 'gc'));
    g.producer!.setInt('broadcast', 1);
    model.graph.outputs = [g];
    upgradeOpset(model, 13);
    for (const n of model.graph.nodes) {
      for (const a of ['is_test', 'consumed_inputs', 'broadcast']) expect(n.attributes.has(a)).toBe(false);
    }
    const out = await runUpgraded(model, { x: new ort.Tensor('float32', Float32Array.of(1, 2, 3, 4, 5, 6), [2, 3]) });
    const bnRef = (v: number, k: number): number => (v - [0, 0, 1][k]!) / Math.sqrt([1, 1, 4][k]! + 1e-5) * [1, 2, 3][k]! + [0, 1, 0][k]!;
    const rows = [[1, 2, 3], [4, 5, 6]].map((r) => r.map((v, k) => bnRef(v, k)));
    const ref = rows.flatMap(([p, q, s]) => [p! + s! + 5, q! + s! + 6]);
    floats(out[g.name]!).forEach((v, i) => expect(v).toBeCloseTo(ref[i]!, 4));
  });

  it('moves a PRelu-6 per-channel slope to axis 1', async () => {
    const { model, b, xs } = newModel(6, [{ name: 'x', shape: [1, 2, 1, 3] }]);
    const y = b.op1('PRelu', [xs[0]!, b.floatConst([0.5, 0.25], [2], 'slope')]);
    model.graph.outputs = [y];
    upgradeOpset(model, 13);
    const out = await runUpgraded(model, { x: new ort.Tensor('float32', Float32Array.of(-1, 1, -2, -4, 4, -8), [1, 2, 1, 3]) });
    expect(floats(out[y.name]!)).toEqual([-0.5, 1, -1, -1, 4, -2]);
  });

  it('turns ImageScaler into Mul and Add with per-channel bias', async () => {
    const { model, b, xs } = newModel(7, [{ name: 'x', shape: [1, 2, 1, 2] }]);
    const y = b.op1('ImageScaler', [xs[0]!], { scale: 2, bias: [1, -1] }, { name: 'scaler', outputNames: ['y'] });
    model.graph.outputs = [y];
    const r = upgradeOpset(model, 13);
    expect(r.converted).toEqual(['ImageScaler "scaler"']);
    expect(model.graph.nodes.map((n) => n.op)).toEqual(['Mul', 'Add']);
    expect(model.graph.outputs[0]!.name).toBe('y');
    const out = await runUpgraded(model, { x: new ort.Tensor('float32', Float32Array.of(1, 2, 3, 4), [1, 2, 1, 2]) });
    expect(floats(out.y!)).toEqual([3, 5, 5, 7]);
  });
});

// ---------------------------------------------------------------- contract and refusals

function expectRefusal(model: Model, target: number, pattern: RegExp): void {
  const before = encodeModel(model);
  let error: unknown;
  try {
    upgradeOpset(model, target);
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(UserError);
  expect((error as UserError).code).toBe(ErrorCodes.UNSUPPORTED);
  expect((error as UserError).message).toMatch(pattern);
  expect((error as UserError).details.hint).toBeTruthy();
  // nothing changed
  expect(Buffer.from(encodeModel(model)).equals(Buffer.from(before))).toBe(true);
}

describe('upgradeOpset contract', () => {
  it('is a no-op at or above the target and never downgrades', () => {
    const { model, b, xs } = newModel(13, [X4]);
    model.graph.outputs = [b.relu(xs[0]!)];
    const before = encodeModel(model);
    expect(upgradeOpset(model, 13)).toEqual({ upgraded: false, from: 13, converted: [], replaced: new Map() });
    expect(upgradeOpset(model, 11)).toEqual({ upgraded: false, from: 13, converted: [], replaced: new Map() });
    expect(Buffer.from(encodeModel(model)).equals(Buffer.from(before))).toBe(true);
  });

  it('raises the IR version only when it is lower than the target needs', () => {
    const { model, b, xs } = newModel(9, [X4]);
    model.graph.outputs = [b.relu(xs[0]!)];
    model.irVersion = 9n;
    upgradeOpset(model, 11);
    expect(model.irVersion).toBe(9n);
    const low = newModel(7, [X4]);
    low.model.graph.outputs = [low.b.relu(low.xs[0]!)];
    low.model.irVersion = 3n;
    upgradeOpset(low.model, 11);
    expect(low.model.irVersion).toBe(6n);
    upgradeOpset(low.model, 13);
    expect(low.model.irVersion).toBe(7n);
    upgradeOpset(low.model, 18);
    expect(low.model.irVersion).toBe(8n);
  });

  it('gives Clip bounds the input type (double, float16)', () => {
    const { model, b, xs } = newModel(9, [
      { name: 'xd', shape: [2, 3], dtype: DataType.DOUBLE },
      { name: 'xh', shape: [2, 3], dtype: DataType.FLOAT16 },
    ]);
    model.graph.outputs = [b.clip(xs[0]!, -0.25, 0.5), b.clip(xs[1]!, -1.5, 65504)];
    upgradeOpset(model, 13);
    verifyModel(model, { mode: 'pass', step: 'upgrade-opset' });
    const [cd, ch] = model.graph.nodes;
    expect(cd!.inputs[1]!.const!.dtype).toBe(DataType.DOUBLE);
    expect(cd!.inputs[1]!.const!.numbers()).toEqual([-0.25]);
    expect(ch!.inputs[1]!.const!.dtype).toBe(DataType.FLOAT16);
    // float16 bits: -1.5 = 0xBE00, 65504 = 0x7BFF
    expect([...ch!.inputs[1]!.const!.data()]).toEqual([0xbe00]);
    expect([...ch!.inputs[2]!.const!.data()]).toEqual([0x7bff]);
  });

  it('stops at the opset asked for (Slice inputs at 10, Clip attributes kept)', () => {
    const { model, b, xs } = newModel(9, [X4]);
    model.graph.outputs = [b.clip(b.slice(xs[0]!, [1], [3], [1]), 0, 1)];
    const r = upgradeOpset(model, 10);
    expect(r.converted).toEqual([expect.stringMatching(/^Slice/)]);
    expect(nodeOf(model, 'Slice').inputs.length).toBe(4);
    expect(nodeOf(model, 'Clip').attrFloat('max')).toBe(1);
    verifyModel(model, { mode: 'pass', step: 'upgrade-opset' });
  });

  it('splits into num_outputs parts at 18', () => {
    const { model, b, xs } = newModel(11, [{ name: 'x', shape: [2, 6] }]);
    model.graph.outputs = b.split(xs[0]!, 1, 3);
    upgradeOpset(model, 18);
    expect(nodeOf(model, 'Split').attrInt('num_outputs')).toBe(3);
    expect(nodeOf(model, 'Split').inputs.length).toBe(1);
  });

  it('refuses BatchNormalization with spatial=0', () => {
    const { model, b, xs } = newModel(7, [X4]);
    const c = (name: string): Value => b.floatConst(new Array(60).fill(1), [3, 4, 5], name);
    const y = b.batchNorm(xs[0]!, c('s'), c('b'), c('m'), c('v'));
    y.producer!.setInt('spatial', 0);
    model.graph.outputs = [y];
    expectRefusal(model, 13, /^cannot raise opset of BatchNormalization from 7 to 13: spatial=0/);
  });

  it('refuses a nearest Resize-10 that shrinks an axis', () => {
    const { model, b, xs } = newModel(10, [X4]);
    model.graph.outputs = [b.slice(xs[0]!, [0], [1], [0]), b.resize(xs[0]!, { scales: [1, 1, 0.5, 1], mode: 'nearest' })];
    expectRefusal(model, 13, /^cannot raise opset of Resize from 10 to 13/);
  });

  it('refuses a Dropout whose mask is used across opset 10', () => {
    const { model, b, xs } = newModel(9, [X4]);
    model.graph.outputs = b.op('Dropout', [xs[0]!], { ratio: 0.2 }, { outputs: 2 });
    expectRefusal(model, 13, /^cannot raise opset of Dropout from 9 to 13: its mask output is used/);
  });

  it('refuses Scan-8, removed experimental ops, unknown ops and targets past 18', () => {
    const scan = newModel(8, [X4]);
    scan.model.graph.outputs = [scan.b.op1('Scan', [null, scan.xs[0]!], { num_scan_inputs: 1 })];
    expectRefusal(scan.model, 13, /^cannot raise opset of Scan from 8 to 13/);
    const crop = newModel(7, [X4]);
    crop.model.graph.outputs = [crop.b.op1('Crop', [crop.xs[0]!], { border: [0, 0, 1, 1] })];
    expectRefusal(crop.model, 13, /^cannot raise opset of Crop from 7 to 13: Crop was an experimental op/);
    const odd = newModel(9, [X4]);
    odd.model.graph.outputs = [odd.b.op1('NotAnOnnxOp', [odd.xs[0]!])];
    expectRefusal(odd.model, 13, /^cannot raise opset of NotAnOnnxOp from 9 to 13/);
    const far = newModel(9, [X4]);
    far.model.graph.outputs = [far.b.relu(far.xs[0]!)];
    expectRefusal(far.model, 21, /from 9 to 21/);
  });

  it('leaves custom-domain nodes alone', () => {
    const { model, b, xs } = newModel(9, [X4]);
    model.opsetImports.set('com.example', 1n);
    model.graph.outputs = [b.op1('Slice', [xs[0]!], { starts: [0] }, { domain: 'com.example' })];
    upgradeOpset(model, 13);
    expect(nodeOf(model, 'Slice').attributes.has('starts')).toBe(true);
    expect(model.opsetImports.get('com.example')).toBe(1n);
  });
});

// ---------------------------------------------------------------- real models

describe('upgradeOpset on the fixtures', () => {
  const models = fixtureModels();
  it('finds fixtures', () => expect(models.length).toBeGreaterThan(0));
  for (const c of models) {
    for (const target of [13, 18]) {
      it(`${c.name} → ${target}`, async () => {
        const bytes = fs.readFileSync(c.file);
        const model = readModel(c.file);
        const from = model.opset('');
        const r = upgradeOpset(model, target);
        expect(r.upgraded).toBe(from < target);
        verifyModel(model, { mode: 'pass', step: 'upgrade-opset' });
        const feeds = randomFeeds(model, 7)!;
        expectIdentical(await run(bytes, feeds), await run(encodeModel(model), feeds));
      });
    }
  }
});

interface Tally {
  identical: string[];
  recorded: string[];
  failed: string[];
}

const tally: Tally = { identical: [], recorded: [], failed: [] };

afterAll(() => {
  const total = tally.identical.length + tally.recorded.length + tally.failed.length;
  if (total === 0) return;
  const passed = tally.identical.length + tally.recorded.length;
  console.log(
    `upgrade-opset on ONNX test models: ${passed}/${total} pass ` +
      `(${tally.identical.length} identical to the original in ORT, ${tally.recorded.length} match the recorded outputs where ORT cannot run the original)` +
      (tally.failed.length ? `; failed: ${tally.failed.join(', ')}` : ''),
  );
});

describe.each(['pytorch-converted', 'pytorch-operator'] as const)('upgradeOpset on %s', (group) => {
  for (const c of testdataModels(group)) {
    for (const target of [13, 18]) {
      it(`${c.name} → ${target}`, async () => {
        try {
          const bytes = fs.readFileSync(c.file);
          const feeds = recordedFeeds(c.dataDir!, decodeModelProto(bytes));
          expect(feeds).not.toBeNull();
          const model = readModel(c.file);
          const r = upgradeOpset(model, target);
          expect(r.upgraded).toBe(true);
          verifyModel(model, { mode: 'pass', step: 'upgrade-opset' });
          const upgraded = await run(encodeModel(model), feeds!);
          let original: Outputs | null = null;
          try {
            original = await run(bytes, feeds!);
          } catch {
            // ORT 1.29 has no kernels for some opset-6 ops; compare with the recorded outputs
          }
          if (original) {
            expectIdentical(original, upgraded);
            tally.identical.push(`${c.name} → ${target}`);
          } else {
            const names = model.graph.outputs.map((o) => o.name);
            names.forEach((name, i) => {
              const file = path.join(c.dataDir!, `output_${i}.pb`);
              const expected = tensorProtoToOrt(fromBinary(TensorProtoSchema, fs.readFileSync(file)));
              expect(relativeError(upgraded[name]!, expected), name).toBeLessThanOrEqual(1e-4);
            });
            tally.recorded.push(`${c.name} → ${target}`);
          }
        } catch (e) {
          tally.failed.push(`${c.name} → ${target}`);
          throw e;
        }
      });
    }
  }
});
