// Every gradient rule checked numerically in onnxruntime-node (float32): a tiny graph per op and
// attribute combination, loss ⟨r, f(x)⟩ with a random cotangent r, and the directional
// derivative of the emitted backward graph compared with central differences. Plus the user
// error for an op without a rule, no gradient into integer inputs, BatchNormalization running
// statistics against a hand computation, and whole fixture models.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { isUserError } from '../compiler/diagnostics.js';
import { Graph, Model, Value, tensorType } from '../compiler/ir.js';
import { decodeModel, encodeModel, readModel } from '../compiler/onnx-codec.js';
import { OpBuilder, minIrVersion, type Attrs } from '../compiler/op-builder.js';
import { compile } from '../compiler/pipeline.js';
import { Rng } from '../compiler/rng.js';
import { refreshShapes } from '../compiler/shape-inference.js';
import { DataType, Tensor } from '../compiler/tensor.js';
import { autodiff } from '../passes/autodiff.js';
import { toTrainingMode } from '../passes/training-mode.js';
import { upgradeOpset } from '../passes/upgrade-opset.js';
import { gradcheck, mismatches, spaced, uniform, type Dense, type GradcheckOptions } from './helpers/gradcheck.js';
import { REPO_ROOT } from './helpers/models.js';

interface Net {
  model: Model;
  b: OpBuilder;
  input(name: string, dims: number[], elemType?: number): Value;
  param(name: string, tensor: Tensor): Value;
}

function net(opset = 18): Net {
  const graph = new Graph();
  graph.name = 'case';
  const model = new Model(graph);
  model.irVersion = BigInt(minIrVersion(opset));
  model.opsetImports.set('', BigInt(opset));
  return {
    model,
    b: new OpBuilder(graph, opset),
    input(name, dims, elemType = DataType.FLOAT) {
      const v = new Value(name, tensorType(elemType, dims));
      graph.claimName(name);
      graph.inputs.push(v);
      return v;
    },
    param(name, tensor) {
      return graph.addInitializer(name, tensor, true);
    },
  };
}

interface Case {
  build: (n: Net) => Value;
  wrt: string[];
  /** Input generators by name (default uniform). */
  gen?: Record<string, (dims: number[], rng: Rng) => Dense>;
  opset?: number;
  rtol?: number;
  eps?: number;
  train?: boolean;
  extraFeeds?: GradcheckOptions['extraFeeds'];
}

async function check(c: Case) {
  const n = net(c.opset ?? 18);
  const y = c.build(n);
  n.model.graph.outputs.push(y);
  if (c.train) toTrainingMode(n.model, { dropout: 'mask' });
  const rng = new Rng(11);
  const feeds: Record<string, Dense> = {};
  for (const input of n.model.graph.inputs) {
    const gen = c.gen?.[input.name.endsWith('.keep_mask') ? 'mask' : input.name];
    if (gen) feeds[input.name] = gen(input.shape as number[], rng);
  }
  const res = await gradcheck(n.model, { wrt: c.wrt, feeds, eps: c.eps, extraFeeds: c.extraFeeds });
  expect(mismatches(res.checks, c.rtol ?? 1e-3)).toEqual([]);
  expect(Object.keys(res.gradients).sort()).toEqual([...c.wrt].sort());
  for (const ch of res.checks) expect(Math.abs(ch.analytic)).toBeGreaterThan(0);
  expect(res.backwardNodes.filter((node) => node.domain !== '').map((node) => node.op)).toEqual([]);
  return res;
}

const positive = (dims: number[], rng: Rng): Dense => {
  const t = uniform(dims, rng);
  return { dims, data: t.data.map((v) => v + 1.5) };
};
const wide = (span: number) => (dims: number[], rng: Rng): Dense => spaced(dims, rng, span);
const f32 = (dims: number[], rng: Rng): Tensor => Tensor.float32(dims, rng.uniform(dims.reduce((a, d) => a * d, 1), -1, 1));

function unaryCase(op: string, attrs: Attrs = {}, gen?: (dims: number[], rng: Rng) => Dense, opset?: number): Case {
  return { build: (n) => n.b.op1(op, [n.input('x', [2, 3, 4])], attrs), wrt: ['x'], gen: gen && { x: gen }, opset };
}

function binaryCase(op: string, aDims: number[], bDims: number[], gen?: (dims: number[], rng: Rng) => Dense): Case {
  return {
    build: (n) => n.b.op1(op, [n.input('a', aDims), n.input('b', bDims)]),
    wrt: ['a', 'b'],
    gen: gen && { b: gen },
  };
}

const ELEMENTWISE: Record<string, Case> = {
  'Relu': unaryCase('Relu', {}, wide(1)),
  'LeakyRelu alpha 0.1': unaryCase('LeakyRelu', { alpha: 0.1 }, wide(1)),
  'Sigmoid': unaryCase('Sigmoid'),
  'Elu alpha 0.7': unaryCase('Elu', { alpha: 0.7 }, wide(1)),
  'Softplus': unaryCase('Softplus'),
  'PRelu with a per-channel slope': {
    build: (n) => n.b.op1('PRelu', [n.input('x', [2, 3, 4]), n.input('slope', [3, 1])]), wrt: ['x', 'slope'], gen: { x: wide(1) },
  },
  'Tanh': unaryCase('Tanh'),
  'HardSigmoid alpha 0.3 beta 0.4 (all three pieces)': unaryCase('HardSigmoid', { alpha: 0.3, beta: 0.4 }, wide(3)),
  'HardSwish (all three pieces)': unaryCase('HardSwish', {}, wide(4)),
  'Gelu': unaryCase('Gelu', {}, wide(2), 20),
  'Gelu tanh': unaryCase('Gelu', { approximate: 'tanh' }, wide(2), 20),
  'Erf': unaryCase('Erf'),
  'Sqrt': unaryCase('Sqrt', {}, positive),
  'Exp': unaryCase('Exp'),
  'Log': unaryCase('Log', {}, positive),
  'Abs': unaryCase('Abs', {}, wide(1)),
  'Neg': unaryCase('Neg'),
  'Identity': unaryCase('Identity'),
  'Reciprocal': unaryCase('Reciprocal', {}, positive),
  'Softmax axis 1': unaryCase('Softmax', { axis: 1 }),
  'LogSoftmax axis -1': unaryCase('LogSoftmax', { axis: -1 }),
  'Clip min and max': {
    build: (n) => n.b.clip(n.input('x', [2, 3, 4]), -0.5, 0.5), wrt: ['x'], gen: { x: wide(1) },
  },
  'Clip with bounds as inputs (gradients into the bounds)': {
    build: (n) => n.b.clip(n.input('x', [2, 3, 4]), n.input('lo', []), n.input('hi', [])),
    wrt: ['x', 'lo', 'hi'],
    gen: { x: wide(1), lo: (dims) => ({ dims, data: Float32Array.of(-0.4) }), hi: (dims) => ({ dims, data: Float32Array.of(0.55) }) },
  },
  'Clip max only': {
    build: (n) => n.b.clip(n.input('x', [2, 3, 4]), undefined, 0.25), wrt: ['x'], gen: { x: wide(1) },
  },
  'Pow constant exponent': {
    build: (n) => n.b.op1('Pow', [n.input('x', [2, 3, 4]), n.param('e', Tensor.float32([4], [2.5, 1, 3, 0.5]))]), wrt: ['x'], gen: { x: positive },
  },
  'Cast float to double and back': {
    build: (n) => {
      const d = n.b.cast(n.input('x', [2, 3]), DataType.DOUBLE);
      return n.b.cast(n.b.op1('Tanh', [n.b.mul(d, d)]), DataType.FLOAT);
    },
    wrt: ['x'],
  },
  'Add broadcast on b': binaryCase('Add', [2, 3, 4], [3, 1]),
  'Add broadcast on a': binaryCase('Add', [1, 4], [2, 3, 4]),
  'Sub broadcast on both': binaryCase('Sub', [2, 1, 4], [3, 1]),
  'Mul broadcast on b': binaryCase('Mul', [2, 3, 4], [4]),
  'Mul broadcast on a': binaryCase('Mul', [3, 1], [2, 3, 4]),
  'Div broadcast on b': binaryCase('Div', [2, 3, 4], [3, 1], positive),
  'Div broadcast on a': binaryCase('Div', [4], [2, 3, 4], positive),
  'Max elementwise with broadcasting': binaryCase('Max', [2, 3, 4], [4]),
  'Min elementwise with broadcasting': binaryCase('Min', [3, 1], [2, 3, 4]),
  'Sum of three with broadcasting': {
    build: (n) => n.b.op1('Sum', [n.input('a', [2, 3, 4]), n.input('b', [4]), n.input('c', [3, 1])]), wrt: ['a', 'b', 'c'],
  },
  'Mean of two with broadcasting': binaryCase('Mean', [2, 3, 4], [3, 1]),
  'Where (no gradient to the condition), broadcast values': {
    build: (n) => {
      const cond = n.param('cond', Tensor.fromTyped(DataType.BOOL, [2, 3], Uint8Array.from([1, 0, 1, 0, 0, 1])));
      return n.b.op1('Where', [cond, n.input('a', [2, 3]), n.input('b', [3])]);
    },
    wrt: ['a', 'b'],
  },
  'Constant op feeding Mul': {
    build: (n) => n.b.mul(n.input('x', [2, 3]), n.b.op1('Constant', [], { value: Tensor.float32([3], [1, -2, 3]) })), wrt: ['x'],
  },
};

const LINEAR: Record<string, Case> = {
  'MatMul batched A, 2-D B': { build: (n) => n.b.matMul(n.input('a', [2, 3, 4]), n.input('b', [4, 5])), wrt: ['a', 'b'] },
  'MatMul 2-D A, batched B': { build: (n) => n.b.matMul(n.input('a', [3, 4]), n.input('b', [2, 4, 5])), wrt: ['a', 'b'] },
  'MatMul 1-D A': { build: (n) => n.b.matMul(n.input('a', [4]), n.input('b', [2, 4, 5])), wrt: ['a', 'b'] },
  'MatMul 1-D B': { build: (n) => n.b.matMul(n.input('a', [2, 3, 4]), n.input('b', [4])), wrt: ['a', 'b'] },
  'MatMul broadcast batch dims': { build: (n) => n.b.matMul(n.input('a', [2, 1, 3, 4]), n.input('b', [3, 4, 2])), wrt: ['a', 'b'] },
};
for (const transA of [false, true]) {
  for (const transB of [false, true]) {
    LINEAR[`Gemm transA ${+transA} transB ${+transB} alpha beta, C broadcast`] = {
      build: (n) => n.b.gemm(n.input('a', transA ? [4, 3] : [3, 4]), n.input('b', transB ? [5, 4] : [4, 5]), n.input('c', [5]), { alpha: 0.7, beta: 1.3, transA, transB }),
      wrt: ['a', 'b', 'c'],
    };
  }
}
LINEAR['Gemm full C'] = { build: (n) => n.b.gemm(n.input('a', [3, 4]), n.input('b', [4, 5]), n.input('c', [3, 5])), wrt: ['a', 'b', 'c'] };

function convCase(xDims: number[], wDims: number[], attrs: Attrs, bias = true): Case {
  return {
    build: (n) => {
      const inputs = [n.input('x', xDims), n.input('w', wDims)];
      if (bias) inputs.push(n.input('bias', [wDims[0]!]));
      return n.b.op1('Conv', inputs, attrs);
    },
    wrt: bias ? ['x', 'w', 'bias'] : ['x', 'w'],
  };
}

function convTransposeCase(xDims: number[], wDims: number[], group: number, attrs: Attrs): Case {
  return {
    build: (n) => n.b.op1('ConvTranspose', [n.input('x', xDims), n.input('w', wDims), n.input('bias', [wDims[1]! * group])], { group, ...attrs }),
    wrt: ['x', 'w', 'bias'],
  };
}

function poolCase(op: string, attrs: Attrs, xDims = [2, 3, 7, 6]): Case {
  return { build: (n) => n.b.op1(op, [n.input('x', xDims)], attrs), wrt: ['x'], gen: { x: wide(1) } };
}

const SPATIAL: Record<string, Case> = {
  'Conv 3x3 pads 1': convCase([2, 3, 6, 5], [4, 3, 3, 3], { pads: [1, 1, 1, 1] }),
  'Conv 20 input channels, stride 2, asymmetric pads': convCase([2, 20, 6, 5], [4, 20, 3, 3], { pads: [1, 0, 1, 1], strides: [2, 1] }),
  'Conv asymmetric pads, stride 2': convCase([2, 3, 7, 6], [4, 3, 3, 2], { pads: [0, 1, 2, 0], strides: [2, 2] }),
  'Conv stride 3 with remainder': convCase([1, 2, 8, 7], [3, 2, 2, 3], { strides: [3, 2] }),
  'Conv dilation 2': convCase([2, 3, 7, 7], [4, 3, 3, 3], { dilations: [2, 2], pads: [2, 1, 2, 1] }),
  'Conv group 2, stride 2, dilation 2': convCase([2, 4, 9, 8], [6, 2, 3, 3], { group: 2, strides: [2, 2], dilations: [2, 1], pads: [1, 0, 1, 2] }),
  'Conv depthwise (group = C, multiplier 2)': convCase([2, 3, 6, 6], [6, 1, 3, 3], { group: 3, pads: [1, 1, 1, 1], strides: [2, 1] }),
  'Conv auto_pad SAME_UPPER stride 2, no bias': convCase([2, 3, 7, 6], [4, 3, 3, 3], { auto_pad: 'SAME_UPPER', strides: [2, 2] }, false),
  'Conv auto_pad SAME_LOWER, stride 2': convCase([1, 2, 6, 7], [3, 2, 2, 3], { auto_pad: 'SAME_LOWER', strides: [2, 2] }),
  // 1-D and 3-D convs (and grouped ones) take the batch-folded weight gradient, 2-D ones im2col
  'Conv 3-D, stride 2': convCase([1, 2, 4, 5, 3], [3, 2, 2, 3, 2], { strides: [2, 1, 2], pads: [0, 1, 1, 1, 0, 0] }),
  'Conv 1-D': convCase([2, 3, 9], [4, 3, 3], { strides: [2], pads: [1, 0] }),
  'ConvTranspose stride 2, asymmetric pads, output_padding': convTransposeCase([2, 4, 4, 3], [4, 3, 3, 3], 1, { strides: [2, 2], pads: [1, 0, 0, 1], output_padding: [1, 0] }),
  'ConvTranspose group 2, dilation 2': convTransposeCase([2, 4, 3, 4], [4, 2, 2, 3], 2, { dilations: [2, 2], strides: [1, 2] }),
  'MaxPool overlapping windows (3x3 stride 1)': poolCase('MaxPool', { kernel_shape: [3, 3], strides: [1, 1] }),
  'MaxPool 3x3 stride 2 pads 1 ceil_mode': poolCase('MaxPool', { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1], ceil_mode: 1 }),
  'MaxPool dilation 2': poolCase('MaxPool', { kernel_shape: [2, 2], dilations: [2, 2], strides: [1, 2] }),
  'AveragePool 3x3 stride 2 pads 1, count_include_pad 0': poolCase('AveragePool', { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] }),
  'AveragePool count_include_pad 1': poolCase('AveragePool', { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1], count_include_pad: 1 }),
  'AveragePool ceil_mode, asymmetric pads': poolCase('AveragePool', { kernel_shape: [3, 2], strides: [2, 2], pads: [0, 1, 1, 0], ceil_mode: 1 }),
  'AveragePool ceil_mode, count_include_pad 1': poolCase('AveragePool', { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 0, 1, 0], ceil_mode: 1, count_include_pad: 1 }),
  'AveragePool floor mode leaves a tail unread': poolCase('AveragePool', { kernel_shape: [2, 2], strides: [3, 3] }),
  'AveragePool dilation 2 (opset 19)': { ...poolCase('AveragePool', { kernel_shape: [2, 2], dilations: [2, 2], pads: [1, 0, 1, 1] }), opset: 19 },
  'AveragePool auto_pad SAME_UPPER': poolCase('AveragePool', { kernel_shape: [3, 3], strides: [2, 2], auto_pad: 'SAME_UPPER' }),
  'GlobalAveragePool': poolCase('GlobalAveragePool', {}),
  'Resize nearest x2 (half_pixel, round_prefer_floor)': {
    build: (n) => n.b.resize(n.input('x', [1, 2, 3, 4]), { scales: [1, 1, 2, 2], mode: 'nearest' }), wrt: ['x'],
  },
  'Resize nearest asymmetric floor, sizes': {
    build: (n) => n.b.resize(n.input('x', [1, 2, 3, 4]), { sizes: [1, 2, 7, 5], mode: 'nearest', coordinateTransformationMode: 'asymmetric', nearestMode: 'floor' }), wrt: ['x'],
  },
  'Resize linear x2 half_pixel': {
    build: (n) => n.b.resize(n.input('x', [1, 2, 3, 4]), { scales: [1, 1, 2, 2], mode: 'linear' }), wrt: ['x'],
  },
  'Resize linear align_corners to sizes': {
    build: (n) => n.b.resize(n.input('x', [1, 2, 3, 4]), { sizes: [1, 2, 5, 7], mode: 'linear', coordinateTransformationMode: 'align_corners' }), wrt: ['x'],
  },
  'Resize linear downsample pytorch_half_pixel': {
    build: (n) => n.b.resize(n.input('x', [1, 2, 6, 8]), { scales: [1, 1, 0.5, 0.5], mode: 'linear', coordinateTransformationMode: 'pytorch_half_pixel' }), wrt: ['x'],
  },
};

function normParams(n: Net, c: number): Value[] {
  return [n.input('scale', [c]), n.input('bias', [c])];
}

const NORMS: Record<string, Case> = {
  'BatchNormalization training mode': {
    build: (n) => {
      const rng = new Rng(3);
      return n.b.op1('BatchNormalization', [n.input('x', [3, 4, 2, 3]), ...normParams(n, 4), n.param('mean', f32([4], rng)), n.param('var', Tensor.float32([4], [1, 2, 0.5, 1.5]))], { epsilon: 1e-3, momentum: 0.8 });
    },
    wrt: ['x', 'scale', 'bias'],
    train: true,
  },
  'BatchNormalization inference mode': {
    build: (n) => {
      const rng = new Rng(3);
      return n.b.op1('BatchNormalization', [n.input('x', [3, 4, 2, 3]), ...normParams(n, 4), n.param('mean', f32([4], rng)), n.param('var', Tensor.float32([4], [1, 2, 0.5, 1.5]))]);
    },
    wrt: ['x', 'scale', 'bias'],
  },
  'InstanceNormalization': {
    build: (n) => n.b.instanceNorm(n.input('x', [2, 3, 4, 5]), ...(normParams(n, 3) as [Value, Value]), 1e-4),
    wrt: ['x', 'scale', 'bias'],
  },
  'group norm, InstanceNormalization form (op-builder groupNorm)': {
    build: (n) => n.b.groupNorm(n.input('x', [2, 4, 3, 3]), 2, n.input('gamma', [4, 1, 1]), n.input('beta', [4, 1, 1])),
    wrt: ['x', 'gamma', 'beta'],
  },
  'group norm, InstanceNormalization form with Reshape(Shape(x)) back (insert-group-norm)': {
    build: (n) => {
      const x = n.input('x', [2, 4, 3, 3]);
      const grouped = n.b.reshape(x, [0, 2, -1]);
      const normed = n.b.instanceNorm(grouped, n.param('ones', Tensor.float32([2], [1, 1])), n.param('zeros', Tensor.float32([2], [0, 0])));
      const back = n.b.reshape(normed, n.b.shape(x));
      return n.b.add(n.b.mul(back, n.input('gamma', [4, 1, 1])), n.input('beta', [4, 1, 1]));
    },
    wrt: ['x', 'gamma', 'beta'],
  },
  'group norm, MatMul form (insert-group-norm matrix)': {
    build: (n) => {
      const b = n.b;
      const x = n.input('x', [2, 6, 2, 2]);
      const width = 6;
      const groups = 3;
      const groupOf = [0, 0, 1, 1, 2, 2];
      const avg = new Float32Array(width * groups);
      const expand = new Float32Array(groups * width);
      groupOf.forEach((g, ch) => {
        avg[ch * groups + g] = 1 / 2;
        expand[g * width + ch] = 1;
      });
      const avgV = n.param('gn_average', Tensor.float32([width, groups], avg));
      const expandV = n.param('gn_expand', Tensor.float32([groups, width], expand));
      const meanC = b.reduce('ReduceMean', x, [2, 3], false);
      const squareC = b.reduce('ReduceMean', b.mul(x, x), [2, 3], false);
      const meanG = b.matMul(meanC, avgV);
      const varG = b.sub(b.matMul(squareC, avgV), b.mul(meanG, meanG));
      const rstdG = b.op1('Reciprocal', [b.op1('Sqrt', [b.add(varG, n.param('eps', Tensor.float32([], [1e-5])))])]);
      const meanBack = b.unsqueeze(b.matMul(meanG, expandV), [2, 3]);
      const rstdBack = b.unsqueeze(b.matMul(rstdG, expandV), [2, 3]);
      const normalized = b.mul(b.sub(x, meanBack), rstdBack);
      return b.add(b.mul(normalized, n.input('gamma', [6, 1, 1])), n.input('beta', [6, 1, 1]));
    },
    wrt: ['x', 'gamma', 'beta'],
  },
  'LayerNormalization axis -1': {
    build: (n) => n.b.op1('LayerNormalization', [n.input('x', [2, 3, 4]), n.input('scale', [4]), n.input('bias', [4])], { axis: -1, epsilon: 1e-5 }),
    wrt: ['x', 'scale', 'bias'],
  },
  'LayerNormalization axis 1, scale broadcast': {
    build: (n) => n.b.op1('LayerNormalization', [n.input('x', [2, 3, 4]), n.input('scale', [1, 4]), n.input('bias', [3, 4])], { axis: 1 }),
    wrt: ['x', 'scale', 'bias'],
  },
};

const DATA: Record<string, Case> = {
  'Concat three, negative axis': {
    build: (n) => n.b.concat([n.input('a', [2, 3, 1]), n.input('b', [2, 3, 4]), n.input('c', [2, 3, 2])], -1), wrt: ['a', 'b', 'c'],
  },
  'Split with an unused part': {
    build: (n) => {
      const parts = n.b.split(n.input('x', [2, 7]), 1, [2, 3, 2]);
      return n.b.concat([parts[2]!, parts[0]!], 1);
    },
    wrt: ['x'],
  },
  'Slice steps 1, negative starts': {
    build: (n) => n.b.slice(n.input('x', [3, 5, 4]), [-4, 1], [100, -1], [1, 2]), wrt: ['x'],
  },
  'Slice steps 2 and -1': {
    build: (n) => n.b.slice(n.input('x', [3, 5, 4]), [0, -1], [5, 0], [1, 2], [2, -1]), wrt: ['x'],
  },
  'Gather constant indices with repeats and negatives, axis 1': {
    build: (n) => n.b.gather(n.input('x', [2, 5, 3]), n.param('idx', Tensor.int64([2, 2], [0, -1, 2, 0])), 1), wrt: ['x'],
  },
  'Gather run-time indices with repeats and negatives, axis 0 (embedding)': {
    build: (n) => n.b.gather(n.input('table', [6, 4]), n.input('ids', [3], DataType.INT64), 0),
    wrt: ['table'],
    extraFeeds: { ids: new ort.Tensor('int64', BigInt64Array.from([1n, -2n, 1n]), [3]) },
  },
  'GatherElements run-time indices with negatives, axis 1 (picking label scores)': {
    build: (n) => n.b.op1('GatherElements', [n.input('x', [3, 4]), n.input('labels', [3, 2], DataType.INT64)], { axis: 1 }),
    wrt: ['x'],
    extraFeeds: { labels: new ort.Tensor('int64', BigInt64Array.from([0n, 3n, -1n, 2n, 1n, 1n]), [3, 2]) },
  },
  'GatherElements constant indices, axis 0': {
    build: (n) => n.b.op1('GatherElements', [n.input('x', [3, 4]), n.param('idx', Tensor.int64([2, 4], [0, 2, -1, 1, 1, 1, 0, 2]))], { axis: 0 }),
    wrt: ['x'],
  },
  'Gather scalar index': {
    build: (n) => n.b.gather(n.input('x', [2, 5, 3]), 3, 1), wrt: ['x'],
  },
  'Reshape': { build: (n) => n.b.reshape(n.input('x', [2, 3, 4]), [4, -1]), wrt: ['x'] },
  'Flatten axis 2': { build: (n) => n.b.flatten(n.input('x', [2, 3, 4, 2]), 2), wrt: ['x'] },
  'Transpose': { build: (n) => n.b.transpose(n.input('x', [2, 3, 4]), [2, 0, 1]), wrt: ['x'] },
  'Squeeze': { build: (n) => n.b.squeeze(n.input('x', [2, 1, 4]), [1]), wrt: ['x'] },
  'Unsqueeze negative axis': { build: (n) => n.b.unsqueeze(n.input('x', [2, 4]), [-1]), wrt: ['x'] },
  'Expand': { build: (n) => n.b.op1('Expand', [n.input('x', [3, 1]), n.b.int64Const([2, 3, 4])]), wrt: ['x'] },
  'Pad constant, asymmetric and negative': {
    build: (n) => n.b.pad(n.input('x', [2, 3, 4]), [0, 1, -1, 0, 2, 1], 'constant', 0.5), wrt: ['x'],
  },
  'ReduceMean keepdims 0, negative axes': {
    build: (n) => n.b.reduce('ReduceMean', n.input('x', [2, 3, 4]), [-1, 0], false), wrt: ['x'],
  },
  'ReduceSum keepdims 1': { build: (n) => n.b.reduce('ReduceSum', n.input('x', [2, 3, 4]), [1], true), wrt: ['x'] },
  'ReduceSum without axes reduces all': { build: (n) => n.b.reduce('ReduceSum', n.input('x', [2, 3, 4]), undefined, false), wrt: ['x'] },
  'ReduceMean noop_with_empty_axes': {
    build: (n) => n.b.op1('ReduceMean', [n.input('x', [2, 3])], { noop_with_empty_axes: 1 }), wrt: ['x'],
  },
  'Dropout inference (identity)': { build: (n) => n.b.op1('Dropout', [n.input('x', [2, 3])]), wrt: ['x'] },
  'Dropout training mode with ratio 0 (mask output added to the node)': {
    build: (n) => n.b.op1('Dropout', [n.input('x', [2, 3]), n.b.floatConst([0], []), n.param('training', Tensor.fromTyped(DataType.BOOL, [], Uint8Array.of(1)))]),
    wrt: ['x'],
  },
  'Dropout with a seeded mask (training)': {
    build: (n) => n.b.op1('Tanh', [n.b.op1('Dropout', [n.input('x', [2, 3]), n.b.floatConst([0.25], [])])]),
    wrt: ['x'],
    train: true,
    gen: { mask: (dims) => ({ dims, data: Float32Array.from([1, 0, 1, 1, 0, 1]) }) },
  },
};

describe('autodiff rules match central differences', () => {
  for (const [group, cases] of Object.entries({ elementwise: ELEMENTWISE, linear: LINEAR, spatial: SPATIAL, norms: NORMS, data: DATA })) {
    describe(group, () => {
      for (const [name, c] of Object.entries(cases)) it(name, async () => void (await check(c)));
    });
  }
});

describe('autodiff driver', () => {
  it('sums fan-out with one Sum after the last contribution and names it <value>.grad', async () => {
    const res = await check({
      build: (n) => {
        const x = n.input('x', [2, 3]);
        return n.b.add(n.b.mul(x, x), n.b.op1('Tanh', [x]));
      },
      wrt: ['x'],
    });
    const x = res.model.graph.inputs.find((v) => v.name === 'x')!;
    const grad = res.result.gradients.get(x)!;
    expect(grad.name).toBe('x.grad');
    expect(grad.producer!.op).toBe('Sum');
    expect(grad.producer!.inputs.length).toBe(3);
    expect(res.backwardNodes.filter((node) => node.op === 'Sum').length).toBe(1);
  });

  it('gives every wrt value its own gradient value, even when a rule passes one through', () => {
    const n = net();
    const a = n.input('a', [2, 3]);
    const bias = n.input('bias', [2, 3]);
    const y = n.b.add(a, bias);
    n.model.graph.outputs.push(y);
    refreshShapes(n.model);
    const seed = n.input('dy', [2, 3]);
    const res = autodiff(n.model, { seeds: [{ value: y, grad: seed }], wrt: [a, bias] });
    const ga = res.gradients.get(a)!;
    const gb = res.gradients.get(bias)!;
    expect(ga).not.toBe(gb);
    expect([ga.name, gb.name]).toEqual(['a.grad', 'bias.grad']);
    expect(ga.producer!.inputs[0]).toBe(seed);
  });

  it('gives null for a wrt value that does not reach the seed', () => {
    const n = net();
    const x = n.input('x', [2]);
    const unused = n.input('unused', [2]);
    const y = n.b.op1('Tanh', [x]);
    n.b.op1('Neg', [unused]);
    n.model.graph.outputs.push(y);
    refreshShapes(n.model);
    const seed = n.input('dy', [2]);
    const res = autodiff(n.model, { seeds: [{ value: y, grad: seed }], wrt: [x, unused] });
    expect(res.gradients.get(unused)).toBeNull();
    expect(res.gradients.get(x)).not.toBeNull();
    expect(res.nodes).toBeGreaterThan(0);
  });

  it('refuses an op without a gradient rule with a user error naming it, before emitting anything', () => {
    const n = net();
    const x = n.input('x', [2, 3]);
    const y = n.b.op1('Tanh', [n.b.op1('Cos', [x], {}, { name: 'cosine' })]);
    n.model.graph.outputs.push(y);
    refreshShapes(n.model);
    const before = n.model.graph.nodes.length;
    let caught: unknown;
    try {
      autodiff(n.model, { seeds: [{ value: y, grad: n.input('dy', [2, 3]) }], wrt: [x] });
    } catch (e) {
      caught = e;
    }
    expect(isUserError(caught)).toBe(true);
    expect((caught as Error & { code: string }).code).toBe('SLC009');
    expect((caught as Error).message).toContain('Cos "cosine"');
    expect(n.model.graph.nodes.length).toBe(before);
  });

  it('refuses an opset below 18 and dynamic shapes with user errors', () => {
    const old = net(13);
    const x = old.input('x', [2]);
    const y = old.b.op1('Tanh', [x]);
    old.model.graph.outputs.push(y);
    expect(() => autodiff(old.model, { seeds: [{ value: y, grad: x }], wrt: [x] })).toThrow(/opset 18/);
    const dyn = net();
    const xd = dyn.input('x', ['N' as unknown as number, 2]);
    const yd = dyn.b.op1('Tanh', [xd]);
    dyn.model.graph.outputs.push(yd);
    refreshShapes(dyn.model);
    expect(() => autodiff(dyn.model, { seeds: [{ value: yd, grad: xd }], wrt: [xd] })).toThrow(/static shapes/);
  });

  it('gives no gradient into integer inputs (indices, casts from int, conditions)', async () => {
    const res = await check({
      build: (n) => {
        const x = n.input('x', [4, 3]);
        const k = n.input('k', [3], DataType.INT32);
        const ids = n.input('ids', [2], DataType.INT64);
        const scaled = n.b.mul(x, n.b.cast(k, DataType.FLOAT));
        const picked = n.b.gather(scaled, ids, 0);
        return n.b.op1('Where', [n.b.op1('Greater', [picked, n.b.floatConst([0], [])]), picked, n.b.op1('Neg', [picked])]);
      },
      wrt: ['x'],
      gen: { x: wide(1) },
      extraFeeds: {
        k: new ort.Tensor('int32', Int32Array.from([1, -2, 3]), [3]),
        ids: new ort.Tensor('int64', BigInt64Array.from([3n, 0n]), [2]),
      },
    });
    const graph = res.model.graph;
    const ints = graph.inputs.filter((v) => v.name === 'k' || v.name === 'ids');
    for (const node of res.backwardNodes) {
      for (const o of node.outputs) expect(o.name.startsWith('k.') || o.name.startsWith('ids.')).toBe(false);
    }
    expect(() => autodiff(res.model, { seeds: [], wrt: ints })).toThrow(/not a float/);
  });
});

describe('MaxPool over k×k tiles (SpaceToDepth taps instead of Indices)', () => {
  // Central differences cannot see ties; the Indices form is the reference there: MaxPool's
  // Indices name the first maximum of each window, and both forms must route dY exactly so.
  for (const [k, relu] of [[2, false], [3, false], [2, true]] as const) {
    it(`${relu ? 'after a Relu (its mask applied at pooled size), ' : ''}${k}×${k} stride ${k}: with ties everywhere the gradient equals the Indices form's, value for value`, async () => {
      const dims = [2, 3, 4 * k, 2 * k];
      const rng = new Rng(5);
      const ties: Dense = { dims, data: Float32Array.from({ length: dims.reduce((a, d) => a * d, 1) }, () => Math.floor(rng.next() * 4) - (relu ? 2 : 0)) };
      const gradient = async (indices: boolean) => {
        const n = net();
        const x = n.input('x', dims);
        const [y] = n.b.op('MaxPool', [relu ? n.b.relu(x) : x], { kernel_shape: [k, k], strides: [k, k] }, { outputs: indices ? 2 : 1 });
        n.model.graph.outputs.push(y!);
        const res = await gradcheck(n.model, { wrt: ['x'], feeds: { x: ties } });
        const ops = res.backwardNodes.map((node) => node.op);
        expect(ops.includes('ScatterElements')).toBe(indices);
        expect(ops.includes('SpaceToDepth')).toBe(!indices);
        // after a Relu, one Where masks the gradient: the Relu's own, or the pool's at its size
        if (relu) {
          const greater = res.backwardNodes.filter((node) => node.op === 'Greater');
          expect(greater.map((node) => node.inputs[0])).toEqual([indices ? x : y]);
        }
        return res.gradients.x!.data;
      };
      const tiled = await gradient(false);
      expect([...tiled]).toEqual([...(await gradient(true))]);
      // each window passes its whole cotangent to exactly one element (after a Relu: not where
      // the window's maximum is 0 or less)
      const windows = dims.reduce((a, d) => a * d, 1) / (k * k);
      if (relu) expect(tiled.filter((v) => v !== 0).length).toBeLessThan(windows);
      else expect(tiled.filter((v) => v !== 0).length).toBe(windows);
    });
  }
  it('is not used where windows overlap, are padded or dilated, or do not tile the input', () => {
    const cases: [number[], Attrs][] = [
      [[1, 2, 8, 8], { kernel_shape: [2, 2], strides: [1, 1] }],
      [[1, 2, 8, 8], { kernel_shape: [2, 2], strides: [2, 2], pads: [1, 1, 1, 1] }],
      [[1, 2, 8, 8], { kernel_shape: [2, 2], strides: [2, 2], dilations: [2, 2] }],
      [[1, 2, 7, 8], { kernel_shape: [2, 2], strides: [2, 2] }],
      [[1, 2, 8, 8], { kernel_shape: [2, 3], strides: [2, 3] }],
    ];
    for (const [dims, attrs] of cases) {
      const n = net();
      const y = n.b.op1('MaxPool', [n.input('x', dims)], attrs);
      n.model.graph.outputs.push(y);
      refreshShapes(n.model);
      const seed = new Value('dy', tensorType(DataType.FLOAT, y.shape as number[]));
      n.model.graph.inputs.push(seed);
      autodiff(n.model, { seeds: [{ value: y, grad: seed }], wrt: [n.model.graph.inputs[0]!] });
      expect(n.model.graph.nodes.some((node) => node.op === 'ScatterElements'), JSON.stringify(attrs)).toBe(true);
    }
  });
});

describe('training mode', () => {
  it('BatchNormalization outputs running statistics with the ONNX momentum (hand computation)', async () => {
    const n = net();
    const rng = new Rng(5);
    const dims = [3, 2, 2, 2];
    const mean0 = [0.25, -0.5];
    const var0 = [1.5, 0.75];
    const x = n.input('x', dims);
    const y = n.b.op1('BatchNormalization', [x, n.param('scale', Tensor.float32([2], [1.5, -0.5])), n.param('bias', Tensor.float32([2], [0.1, 0.2])), n.param('mean', Tensor.float32([2], mean0)), n.param('var', Tensor.float32([2], var0))], { epsilon: 1e-3, momentum: 0.7 });
    n.model.graph.outputs.push(y);
    const training = toTrainingMode(n.model, { dropout: 'off' });
    expect(training.runningStats.map((s) => s.input.name)).toEqual(['mean', 'var']);
    n.model.graph.outputs.push(...training.runningStats.map((s) => s.updated));
    refreshShapes(n.model);
    const data = rng.uniform(24, -2, 2);
    const session = await ort.InferenceSession.create(encodeModel(n.model));
    const out = await session.run({ x: new ort.Tensor('float32', data, dims) });
    await session.release();
    for (let ch = 0; ch < 2; ch++) {
      const values: number[] = [];
      for (let b = 0; b < 3; b++) for (let k = 0; k < 4; k++) values.push(data[b * 8 + ch * 4 + k]!);
      const mu = values.reduce((a, v) => a + v, 0) / values.length;
      const variance = values.reduce((a, v) => a + (v - mu) ** 2, 0) / values.length;
      const runningMean = out[training.runningStats[0]!.updated.name]!.data as Float32Array;
      const runningVar = out[training.runningStats[1]!.updated.name]!.data as Float32Array;
      expect(runningMean[ch]).toBeCloseTo(mean0[ch]! * 0.7 + mu * 0.3, 5);
      expect(runningVar[ch]).toBeCloseTo(var0[ch]! * 0.7 + variance * 0.3, 5);
      const yData = out[y.name]!.data as Float32Array;
      const scale = [1.5, -0.5][ch]!;
      const bias = [0.1, 0.2][ch]!;
      expect(yData[8 + ch * 4 + 1]).toBeCloseTo(((data[8 + ch * 4 + 1]! - mu) / Math.sqrt(variance + 1e-3)) * scale + bias, 4);
    }
  });

  it('Dropout off is removed; mask mode makes a mask input', () => {
    const off = net();
    const x = off.input('x', [2, 3]);
    off.model.graph.outputs.push(off.b.op1('Tanh', [off.b.op1('Dropout', [x])]));
    expect(toTrainingMode(off.model, { dropout: 'off' }).dropoutMasks).toEqual([]);
    expect(off.model.graph.nodes.map((node) => node.op)).toEqual(['Tanh']);
    const masked = net();
    masked.model.graph.outputs.push(masked.b.op1('Dropout', [masked.input('x', [2, 3])]));
    const res = toTrainingMode(masked.model, { dropout: 'mask' });
    expect(res.dropoutMasks.length).toBe(1);
    expect(masked.model.graph.inputs).toContain(res.dropoutMasks[0]);
    expect(masked.model.graph.nodes.map((node) => node.op)).toEqual(['Mul', 'Mul']);
  });
});

/** The fixture as the compiler leaves it after insert-group-norm (both group-norm forms). */
async function afterGroupNorm(file: string): Promise<Model> {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-autodiff-'));
  let snapshot: Uint8Array | null = null;
  try {
    await compile({ model: path.join(REPO_ROOT, 'fixtures', file), groups: 4, rates: [1], calibrate: false, norm: 'gn', outDir: path.join(out, 'sliced') }, {
      afterStep: (step, model) => {
        if (step === 'insert-group-norm') snapshot = encodeModel(model);
      },
    });
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
  return decodeModel(snapshot!, null, file);
}

/** A model ready for a train step: opset 18, batch 2, training mode; its float parameters. */
function trainable(model: Model): { model: Model; params: Value[] } {
  upgradeOpset(model, 18);
  for (const input of model.graph.inputs) {
    const t = input.tensorType!;
    input.type = tensorType(t.elemType, [2, ...t.shape!.slice(1)]);
  }
  for (const output of model.graph.outputs) output.type = null;
  refreshShapes(model);
  // the model's own initializers: the training-mode rewrite adds constants (its momentum factors)
  const own = new Set(model.graph.initializers);
  const training = toTrainingMode(model, { dropout: 'off' });
  const stats = new Set(training.runningStats.map((s) => s.input));
  const params = model.graph.initializers.filter((v) => own.has(v) && v.elemType === DataType.FLOAT && !stats.has(v) && v.uses.length > 0);
  return { model, params };
}

describe('whole models after insert-group-norm (InstanceNormalization and MatMul group norms)', () => {
  for (const file of ['lenet-bn.onnx', 'mobilenet-se.onnx']) {
    it(`${file}: each parameter tensor's derivative along its gradient matches within 2%`, async () => {
      const { model, params } = trainable(await afterGroupNorm(file));
      const ops = new Set(model.graph.nodes.map((node) => node.op));
      expect(ops.has('InstanceNormalization')).toBe(true);
      if (file === 'lenet-bn.onnx') expect(ops.has('MatMul')).toBe(true);
      const res = await gradcheck(model, { wrt: params.map((v) => v.name), seed: 13, eps: 1e-4, direction: 'gradient' });
      expect(mismatches(res.checks, 2e-2, 4)).toEqual([]);
      expect(params.filter((v) => !res.gradients[v.name]).map((v) => v.name)).toEqual([]);
    });
  }
});

describe('whole fixture models (train mode, every float parameter)', () => {
  it('lenet-bn.onnx with a mean cross-entropy loss (LogSoftmax, GatherElements, ReduceMean)', async () => {
    const { model, params } = trainable(readModel(path.join(REPO_ROOT, 'fixtures', 'lenet-bn.onnx')));
    const b = new OpBuilder(model.graph, 18);
    const labels = new Value('labels', tensorType(DataType.INT64, [2, 1]));
    model.graph.inputs.push(labels);
    const logProbs = b.op1('LogSoftmax', [model.graph.outputs[0]!], { axis: 1 });
    const picked = b.op1('GatherElements', [logProbs, labels], { axis: 1 });
    const loss = b.op1('Neg', [b.reduce('ReduceMean', picked, undefined, false)], {}, { outputNames: ['loss'] });
    model.graph.outputs = [loss];
    const res = await gradcheck(model, {
      wrt: params.map((v) => v.name), seed: 9, eps: 1e-4, direction: 'gradient',
      extraFeeds: { labels: new ort.Tensor('int64', BigInt64Array.from([3n, 7n]), [2, 1]) },
    });
    // A bias right before a BatchNormalization with batch statistics has a zero gradient (the
    // batch mean takes it away); its difference quotient is rounding noise, so check it is zero.
    const beforeNorm = new Set(model.graph.nodes.filter((n) => n.op === 'BatchNormalization').map((n) => n.inputs[0]!.producer).filter((p) => p?.op === 'Conv' && p.inputs[2]).map((p) => p!.inputs[2]!.name));
    expect(beforeNorm.size).toBeGreaterThan(0);
    for (const ch of res.checks.filter((ch) => beforeNorm.has(ch.name))) expect(Math.abs(ch.analytic)).toBeLessThan(1e-6);
    expect(mismatches(res.checks.filter((ch) => !beforeNorm.has(ch.name)), 2e-2, 4)).toEqual([]);
  });

  for (const file of ['lenet-bn.onnx', 'resnet-small.onnx', 'mobilenet-se.onnx']) {
    it(`${file}: one random direction over all parameters matches a finite difference`, async () => {
      const { model, params } = trainable(readModel(path.join(REPO_ROOT, 'fixtures', file)));
      const res = await gradcheck(model, { wrt: params.map((v) => v.name), joint: true, seed: 3 });
      expect(mismatches(res.checks, 2e-3)).toEqual([]);
      expect(res.backwardNodes.filter((node) => node.domain !== '').map((node) => node.op)).toEqual([]);
      expect(params.filter((v) => !res.gradients[v.name]).map((v) => v.name)).toEqual([]);
    });

    // Per tensor, stepping along its own gradient: the derivative there is |∇|-sized, so a
    // gradient off by a few percent shows. The bound leaves room for ReLU, MaxPool and Clip
    // kinks crossed by the step and for float32 rounding (4× the estimated noise floor).
    it(`${file}: each parameter tensor's derivative along its gradient matches within 2%`, async () => {
      const { model, params } = trainable(readModel(path.join(REPO_ROOT, 'fixtures', file)));
      const res = await gradcheck(model, { wrt: params.map((v) => v.name), seed: 5, eps: 1e-4, direction: 'gradient' });
      expect(mismatches(res.checks, 2e-2, 4)).toEqual([]);
    });
  }
});
