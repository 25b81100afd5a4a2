import { describe, expect, it } from 'vitest';
import * as ort from 'onnxruntime-node';
import { Graph, Model, Value, tensorType, type Dim } from '../compiler/ir.js';
import { encodeModel } from '../compiler/onnx-codec.js';
import { OpBuilder, minIrVersion } from '../compiler/op-builder.js';
import { DataType } from '../compiler/tensor.js';

const INT64_MAX = 9223372036854775807n;
const OPSETS = [9, 11, 13, 18, 21];

/** A dense float tensor in row-major order, for the JS references. */
interface Nd {
  shape: number[];
  data: Float32Array;
}

function strides(shape: number[]): number[] {
  const s = new Array<number>(shape.length).fill(1);
  for (let i = shape.length - 2; i >= 0; i--) s[i] = s[i + 1]! * shape[i + 1]!;
  return s;
}

function at(x: Nd, idx: number[]): number {
  const s = strides(x.shape);
  let off = 0;
  for (let i = 0; i < idx.length; i++) off += idx[i]! * s[i]!;
  return x.data[off]!;
}

/** Build a tensor of `shape` whose element at each multi-index is `fn(index)`. */
function generate(shape: number[], fn: (idx: number[]) => number): Nd {
  const size = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(size);
  const idx = new Array<number>(shape.length).fill(0);
  for (let k = 0; k < size; k++) {
    data[k] = fn(idx);
    for (let d = shape.length - 1; d >= 0; d--) {
      if (++idx[d]! < shape[d]!) break;
      idx[d] = 0;
    }
  }
  return { shape, data };
}

function randomInput(shape: number[], seed: number): Nd {
  let s = seed;
  return generate(shape, () => {
    s = (s * 1103515245 + 12345) % 2147483648;
    return Math.round(((s / 2147483648) * 4 - 2) * 64) / 64;
  });
}

function sliceRef(x: Nd, starts: number[], ends: number[], axes: number[], steps: number[]): Nd {
  const begin = new Array<number>(x.shape.length).fill(0);
  const step = new Array<number>(x.shape.length).fill(1);
  const shape = [...x.shape];
  axes.forEach((a, i) => {
    const end = Math.min(ends[i]!, x.shape[a]!);
    begin[a] = starts[i]!;
    step[a] = steps[i]!;
    shape[a] = Math.ceil((end - starts[i]!) / steps[i]!);
  });
  return generate(shape, (idx) => at(x, idx.map((v, d) => begin[d]! + v * step[d]!)));
}

function reduceRef(x: Nd, axes: number[], keep: boolean, kind: 'sum' | 'mean' | 'max'): Nd {
  const kept = x.shape.map((d, i) => (axes.includes(i) ? 1 : d));
  const reducedShape = axes.map((a) => x.shape[a]!);
  const count = reducedShape.reduce((a, b) => a * b, 1);
  const full = generate(kept, (idx) => {
    let acc = kind === 'max' ? -Infinity : 0;
    generate(reducedShape, (r) => {
      const src = [...idx];
      axes.forEach((a, i) => (src[a] = r[i]!));
      const v = at(x, src);
      acc = kind === 'max' ? Math.max(acc, v) : acc + v;
      return 0;
    });
    return kind === 'mean' ? acc / count : acc;
  });
  return keep ? full : { shape: x.shape.filter((_, i) => !axes.includes(i)), data: full.data };
}

function padRef(x: Nd, pads: number[], mode: 'constant' | 'reflect', value: number): Nd {
  const r = x.shape.length;
  const shape = x.shape.map((d, i) => d + pads[i]! + pads[i + r]!);
  return generate(shape, (idx) => {
    const src = idx.map((v, d) => v - pads[d]!);
    if (mode === 'constant') {
      return src.every((v, d) => v >= 0 && v < x.shape[d]!) ? at(x, src) : value;
    }
    const mirrored = src.map((v, d) => {
      const n = x.shape[d]!;
      if (v < 0) return -v;
      if (v >= n) return 2 * (n - 1) - v;
      return v;
    });
    return at(x, mirrored);
  });
}

function groupNormRef(x: Nd, groups: number, gamma: number[], beta: number[], eps: number): Nd {
  const [n, c] = x.shape as [number, number];
  const spatial = x.shape.slice(2).reduce((a, b) => a * b, 1);
  const per = (c / groups) * spatial;
  const out = new Float32Array(x.data.length);
  for (let b = 0; b < n; b++) {
    for (let g = 0; g < groups; g++) {
      const off = (b * c + (g * c) / groups) * spatial;
      let mean = 0;
      for (let i = 0; i < per; i++) mean += x.data[off + i]!;
      mean /= per;
      let variance = 0;
      for (let i = 0; i < per; i++) variance += (x.data[off + i]! - mean) ** 2;
      variance /= per;
      for (let i = 0; i < per; i++) {
        const ch = (g * c) / groups + Math.floor(i / spatial);
        out[off + i] = ((x.data[off + i]! - mean) / Math.sqrt(variance + eps)) * gamma[ch]! + beta[ch]!;
      }
    }
  }
  return { shape: x.shape, data: out };
}

function map(x: Nd, fn: (v: number) => number): Nd {
  return { shape: x.shape, data: x.data.map(fn) };
}

function newModel(opset: number, inputShape: Dim[]): { model: Model; b: OpBuilder; x: Value } {
  const graph = new Graph();
  graph.name = 'test';
  const model = new Model(graph);
  model.irVersion = BigInt(minIrVersion(opset));
  model.opsetImports.set('', BigInt(opset));
  const x = new Value('x', tensorType(DataType.FLOAT, inputShape));
  graph.claimName('x');
  graph.inputs.push(x);
  return { model, b: new OpBuilder(graph, opset), x };
}

async function run(model: Model, x: Nd): Promise<Record<string, Nd>> {
  for (const o of model.graph.outputs) o.type ??= tensorType(DataType.FLOAT, null);
  const session = await ort.InferenceSession.create(encodeModel(model));
  const result = await session.run({ x: new ort.Tensor('float32', x.data, x.shape) });
  const out: Record<string, Nd> = {};
  for (const [name, t] of Object.entries(result)) out[name] = { shape: [...t.dims].map(Number), data: t.data as Float32Array };
  return out;
}

function expectClose(actual: Nd | undefined, expected: Nd, tol = 1e-5): void {
  expect(actual).toBeDefined();
  expect(actual!.shape).toEqual(expected.shape);
  for (let i = 0; i < expected.data.length; i++) {
    const e = expected.data[i]!;
    if (Math.abs(actual!.data[i]! - e) > tol * (1 + Math.abs(e))) {
      throw new Error(`element ${i}: got ${actual!.data[i]}, expected ${e}`);
    }
  }
}

describe.each(OPSETS)('OpBuilder at opset %i', (opset) => {
  const shape = [2, 6, 4, 5];
  const input = randomInput(shape, opset);

  it('emits slice, squeeze, unsqueeze, gather and reshape that run and match', async () => {
    const { model, b, x } = newModel(opset, ['N', 6, 4, 5]);
    const outs = [
      b.slice(x, [1, 0], [5, 3], [1, 3]),
      b.slice(x, [2], [INT64_MAX], [1]),
      b.squeeze(b.unsqueeze(x, [0]), [0]),
      b.unsqueeze(x, [1, 4]),
      b.gather(x, [3, 1], 1),
      b.reshape(x, [0, -1]),
    ];
    if (opset >= 10) outs.push(b.slice(x, [0, 4], [6, 0], [1, 3], [2, -2]));
    model.graph.outputs = outs;
    const got = Object.values(await run(model, input));
    expectClose(got[0], sliceRef(input, [1, 0], [5, 3], [1, 3], [1, 1]));
    expectClose(got[1], sliceRef(input, [2], [6], [1], [1]));
    expectClose(got[2], input);
    expectClose(got[3], { shape: [2, 1, 6, 4, 1, 5], data: input.data });
    expectClose(got[4], generate([2, 2, 4, 5], (i) => at(input, [i[0]!, [3, 1][i[1]!]!, i[2]!, i[3]!])));
    expectClose(got[5], { shape: [2, 120], data: input.data });
    if (opset >= 10) {
      expectClose(got[6], generate([2, 3, 4, 2], (i) => at(input, [i[0]!, 2 * i[1]!, i[2]!, 4 - 2 * i[3]!])));
    }
    // the form matches the opset
    const slice = model.graph.nodes.find((n) => n.op === 'Slice')!;
    expect(slice.inputs.length).toBe(opset < 10 ? 1 : 4);
    const unsq = model.graph.nodes.find((n) => n.op === 'Unsqueeze')!;
    expect(unsq.attr('axes') !== undefined).toBe(opset < 13);
  });

  it('keeps INT64_MAX exact in Slice ends', () => {
    const { model, b, x } = newModel(opset, ['N', 6, 4, 5]);
    b.slice(x, [2], [INT64_MAX], [1]);
    const node = model.graph.nodes[0]!;
    const ends = opset < 10 ? node.attr('ends') : { kind: 'ints', value: node.inputs[2]!.const!.bigints() };
    expect(ends).toEqual({ kind: 'ints', value: [INT64_MAX] });
  });

  it('refuses Slice steps at opset 9 only', () => {
    const { b, x } = newModel(opset, ['N', 6, 4, 5]);
    const sliceWithSteps = (): Value => b.slice(x, [0], [6], [1], [2]);
    if (opset < 10) expect(sliceWithSteps).toThrow(/opset 10/);
    else expect(sliceWithSteps).not.toThrow();
  });

  it('emits reductions that run and match', async () => {
    const { model, b, x } = newModel(opset, ['N', 6, 4, 5]);
    model.graph.outputs = [
      b.reduce('ReduceSum', x, [2, 3], false),
      b.reduce('ReduceMean', x, [1], true),
      b.reduce('ReduceMax', x, [3], false),
    ];
    const got = Object.values(await run(model, input));
    expectClose(got[0], reduceRef(input, [2, 3], false, 'sum'));
    expectClose(got[1], reduceRef(input, [1], true, 'mean'));
    expectClose(got[2], reduceRef(input, [3], false, 'max'));
    const sum = model.graph.nodes.find((n) => n.op === 'ReduceSum')!;
    const mean = model.graph.nodes.find((n) => n.op === 'ReduceMean')!;
    expect(sum.inputs.length).toBe(opset >= 13 ? 2 : 1);
    expect(mean.inputs.length).toBe(opset >= 18 ? 2 : 1);
  });

  it('emits clip, split and pad that run and match', async () => {
    const { model, b, x } = newModel(opset, ['N', 6, 4, 5]);
    const [s0, s1] = b.split(x, 1, [2, 4]);
    const thirds = b.split(x, 1, 3);
    model.graph.outputs = [
      b.clip(x, -0.5, 0.75),
      b.clip(x, undefined, 0.25),
      s0!,
      s1!,
      ...thirds,
      b.pad(x, [0, 0, 1, 2, 0, 0, 2, 1], 'constant', 1.5),
      b.pad(x, [0, 0, 1, 1, 0, 0, 2, 1], 'reflect'),
    ];
    const got = Object.values(await run(model, input));
    expectClose(got[0], map(input, (v) => Math.min(Math.max(v, -0.5), 0.75)));
    expectClose(got[1], map(input, (v) => Math.min(v, 0.25)));
    expectClose(got[2], sliceRef(input, [0], [2], [1], [1]));
    expectClose(got[3], sliceRef(input, [2], [6], [1], [1]));
    for (let k = 0; k < 3; k++) expectClose(got[4 + k], sliceRef(input, [2 * k], [2 * k + 2], [1], [1]));
    expectClose(got[7], padRef(input, [0, 0, 1, 2, 0, 0, 2, 1], 'constant', 1.5));
    expectClose(got[8], padRef(input, [0, 0, 1, 1, 0, 0, 2, 1], 'reflect', 0));
  });

  it('emits resize that runs and matches nearest upsampling', async () => {
    const { model, b, x } = newModel(opset, ['N', 6, 4, 5]);
    model.graph.outputs = [b.resize(x, { scales: [1, 1, 2, 2], mode: 'nearest' })];
    const got = Object.values(await run(model, input));
    expectClose(got[0], generate([2, 6, 8, 10], (i) => at(input, [i[0]!, i[1]!, i[2]! >> 1, i[3]! >> 1])));
  });

  it('emits groupNorm that runs and matches a JS group norm', async () => {
    const gamma = [0.5, 1, 1.5, -1, 2, 0.25];
    const beta = [0.1, -0.2, 0.3, 0, 0.5, -1];
    for (const known of [true, false]) {
      const { model, b, x } = newModel(opset, known ? ['N', 6, 4, 5] : ['N', 6, 'H', 'W']);
      model.graph.outputs = [b.groupNorm(x, 3, gamma, beta, 1e-5, { outputNames: ['y'] })];
      expect(model.graph.nodes.some((n) => n.op === 'Shape')).toBe(!known);
      const got = await run(model, input);
      expectClose(got.y, groupNormRef(input, 3, gamma, beta, 1e-5), 1e-4);
    }
  });
});

describe('OpBuilder basics', () => {
  it('names nodes and outputs the way PyTorch does, uniquely', () => {
    const { b, x } = newModel(13, ['N', 6, 4, 5]);
    const r1 = b.relu(x, { name: '/act/Relu' });
    const r2 = b.relu(r1, { name: '/act/Relu' });
    expect(r1.name).toBe('/act/Relu_output_0');
    expect(r1.producer!.name).toBe('/act/Relu');
    expect(r2.producer!.name).not.toBe('/act/Relu');
    expect(r2.name).not.toBe(r1.name);
  });

  it('types attributes: integers as ints, known float names and fractions as floats', () => {
    const { b, x } = newModel(13, ['N', 6, 4, 5]);
    const y = b.op1('HardSigmoid', [x], { alpha: 1, beta: 0.5 });
    const g = b.op1('Foo', [x], { k: 3, ks: [1, 2], f: 0.5, flag: true, mode: 'a' }, { domain: 'custom' });
    expect(y.producer!.attr('alpha')).toEqual({ kind: 'float', value: 1 });
    expect(g.producer!.attr('k')).toEqual({ kind: 'int', value: 3n });
    expect(g.producer!.attr('ks')).toEqual({ kind: 'ints', value: [1n, 2n] });
    expect(g.producer!.attr('f')).toEqual({ kind: 'float', value: 0.5 });
    expect(g.producer!.attr('flag')).toEqual({ kind: 'int', value: 1n });
    expect(g.producer!.attrString('mode')).toBe('a');
    expect(g.producer!.domain).toBe('custom');
  });

  it('inserts before a given node and keeps use-lists', () => {
    const { model, b, x } = newModel(13, ['N', 6, 4, 5]);
    const r = b.relu(x);
    const n = b.op('Split', [x], { axis: 1 }, { outputs: 2, before: r.producer! });
    expect(n).toHaveLength(2);
    expect(model.graph.nodes[0]!.op).toBe('Split');
    expect(x.uses.map((u) => u.node.op).sort()).toEqual(['Relu', 'Split']);
  });
});
