// Gradient rules for autodiff, one entry per op. Each rule receives the forward node and the
// gradients of its outputs and emits the vector-Jacobian product for each input as plain ONNX
// ops (opset ≥ 18). Rules are written as if shapes matched; where an input was broadcast the
// rule ends with `sumTo`, the one place broadcasting is undone. Inputs that hold shapes, axes,
// indices, conditions, exponents or running statistics get null (no gradient).
//
// Verified forms (shared notes on gradients): Relu Where(X > 0, dY, 0); Sigmoid dY·Y·(1−Y);
// Tanh dY·(1−Y²); Softmax Y·(dY − Σ dY·Y); LogSoftmax dY − exp(Y)·Σ dY; Concat splits, Slice
// pads, Transpose inverts, Reshape reshapes back. The long forms (Conv, ConvTranspose, pooling,
// Resize, the normalizations) live in conv-gradients.ts.

import { tensorType, type Node, type Value } from '../compiler/ir.js';
import { DataType } from '../compiler/tensor.js';
import { range, unsupportedOp, type GradContext, type GradRule } from './autodiff.js';
import {
  averagePoolGrad, batchNormGrad, convGrad, convTransposeGrad, globalAveragePoolGrad, instanceNormGrad, layerNormGrad, maxPoolGrad,
  resizeGrad,
} from './conv-gradients.js';

type Unary = (c: GradContext, x: Value, y: Value, g: Value, node: Node) => Value;

function unary(f: Unary): GradRule {
  return (c, node, dY) => [f(c, node.inputs[0]!, node.outputs[0]!, dY[0]!, node)];
}

/** Where(cond, g, 0); `like` gives the float type of the zero. */
function mask(c: GradContext, cond: Value, g: Value, like: Value): Value {
  return c.b.op1('Where', [cond, g, c.scalar(0, like)]);
}

function normalizeAxis(axis: number, rank: number): number {
  return axis < 0 ? axis + rank : axis;
}

/** The gradient of an elementwise op with broadcasting: `f` gives each needed input's
 * gradient at the output's shape, `sumTo` reduces it to the input's shape. */
function broadcasting(f: (c: GradContext, node: Node, g: Value, i: number) => Value | null): GradRule {
  return (c, node, [g]) => node.inputs.map((input, i) => {
    if (!input || !c.needs(input)) return null;
    const grad = f(c, node, g!, i);
    return grad && c.sumTo(grad, node.outputs[0]!, input);
  });
}

function swapLast(c: GradContext, v: Value, rank: number): Value {
  const perm = range(0, rank);
  [perm[rank - 2], perm[rank - 1]] = [perm[rank - 1]!, perm[rank - 2]!];
  return c.b.transpose(v, perm);
}

/** MatMul with NumPy semantics: 1-D operands are promoted to matrices, batch dims broadcast. */
const matMul: GradRule = (c, node, [g]) => {
  const [a, bm] = [node.inputs[0]!, node.inputs[1]!];
  const ad = c.dims(a);
  const bd = c.dims(bm);
  const a2d = ad.length === 1 ? [1, ad[0]!] : ad;
  const b2d = bd.length === 1 ? [bd[0]!, 1] : bd;
  const batch = broadcastShape(a2d.slice(0, -2), b2d.slice(0, -2));
  const g2d = [...batch, a2d[a2d.length - 2]!, b2d[b2d.length - 1]!];
  const g2 = ad.length === 1 || bd.length === 1 ? c.b.reshape(g!, c.ints(g2d)) : g!;
  const a2 = ad.length === 1 ? c.b.reshape(a, c.ints(a2d)) : a;
  const b2 = bd.length === 1 ? c.b.reshape(bm, c.ints(b2d)) : bm;
  const back = (grad: Value, from: number[], to2d: number[], to: number[]): Value => {
    const reduced = c.unbroadcast(grad, from, to2d);
    return to.length === 1 ? c.b.reshape(reduced, c.ints(to)) : reduced;
  };
  const dA = c.needs(a) ? back(c.b.matMul(g2, swapLast(c, b2, b2d.length)), [...batch, ...a2d.slice(-2)], a2d, ad) : null;
  const dB = c.needs(bm) ? back(c.b.matMul(swapLast(c, a2, a2d.length), g2), [...batch, ...b2d.slice(-2)], b2d, bd) : null;
  return [dA, dB];
};

function broadcastShape(p: number[], q: number[]): number[] {
  const rank = Math.max(p.length, q.length);
  const out: number[] = [];
  for (let i = 0; i < rank; i++) {
    const x = p[p.length - rank + i] ?? 1;
    const y = q[q.length - rank + i] ?? 1;
    out.push(x === 1 ? y : x);
  }
  return out;
}

/** Y = α·op(A)·op(B) + β·C: each gradient is again a Gemm (without C). */
const gemm: GradRule = (c, node, [g]) => {
  const [a, bm, cm] = node.inputs;
  const alpha = node.attrFloat('alpha', 1);
  const beta = node.attrFloat('beta', 1);
  const tA = node.attrInt('transA', 0) === 1;
  const tB = node.attrInt('transB', 0) === 1;
  const dA = !c.needs(a!) ? null
    : tA ? c.b.gemm(bm!, g!, null, { alpha, transA: tB, transB: true })
    : c.b.gemm(g!, bm!, null, { alpha, transB: !tB });
  const dB = !c.needs(bm!) ? null
    : tB ? c.b.gemm(g!, a!, null, { alpha, transA: true, transB: tA })
    : c.b.gemm(a!, g!, null, { alpha, transA: !tA });
  let dC: Value | null = null;
  if (cm && c.needs(cm)) {
    const scaled = beta === 1 ? g! : c.b.mul(g!, c.scalar(beta, cm));
    dC = c.sumTo(scaled, node.outputs[0]!, cm);
  }
  return [dA, dB, dC];
};

/** ReduceSum/ReduceMean (axes as an input, opset ≥ 18): broadcast the gradient back. */
function reduction(mean: boolean): GradRule {
  return (c, node, [g]) => {
    const x = node.inputs[0]!;
    const xd = c.dims(x);
    let axes = c.constInts(node.inputs[1] ?? null, node, 'axes') ?? [];
    if (axes.length === 0) {
      if (node.attrInt('noop_with_empty_axes', 0) === 1) return [g!];
      axes = range(0, xd.length);
    }
    axes = axes.map((a) => normalizeAxis(a, xd.length));
    const kept = xd.map((d, i) => (axes.includes(i) ? 1 : d));
    let grad = node.attrInt('keepdims', 1) === 1 ? g! : c.b.reshape(g!, c.ints(kept));
    if (mean) grad = c.b.mul(grad, c.scalar(1 / axes.reduce((n, a) => n * xd[a]!, 1), x));
    return [c.b.op1('Expand', [grad, c.ints(xd)]), null];
  };
}

const reshapeBack: GradRule = (c, node, [g]) => [c.b.reshape(g!, c.ints(c.dims(node.inputs[0]!))), null];

/** Slice: Pad back when every step is 1, otherwise scatter into zeros at the flat positions read. */
const slice: GradRule = (c, node, [g]) => {
  const x = node.inputs[0]!;
  const xd = c.dims(x);
  const starts = c.constInts(node.inputs[1]!, node, 'starts')!;
  const ends = c.constInts(node.inputs[2]!, node, 'ends')!;
  const axes = (c.constInts(node.inputs[3] ?? null, node, 'axes') ?? range(0, starts.length)).map((a) => normalizeAxis(a, xd.length));
  const steps = c.constInts(node.inputs[4] ?? null, node, 'steps') ?? starts.map(() => 1);
  const first = xd.map(() => 0);
  const step = xd.map(() => 1);
  const count = [...xd];
  axes.forEach((axis, k) => {
    const d = xd[axis]!;
    const s = steps[k]!;
    const clampIndex = (v: number, lo: number, hi: number): number => Math.min(Math.max(v < 0 ? v + d : v, lo), hi);
    const start = s > 0 ? clampIndex(starts[k]!, 0, d) : clampIndex(starts[k]!, 0, d - 1);
    const end = s > 0 ? clampIndex(ends[k]!, 0, d) : clampIndex(ends[k]!, -1, d - 1);
    first[axis] = start;
    step[axis] = s;
    count[axis] = Math.max(0, Math.ceil((end - start) / s));
  });
  if (step.every((s) => s === 1)) {
    const pads = [...first, ...xd.map((d, i) => d - first[i]! - count[i]!)];
    return [c.b.pad(g!, c.ints(pads)), null, null, null, null];
  }
  const positions = flatPositions(xd, first, step, count);
  const size = xd.reduce((n, d) => n * d, 1);
  const flat = c.b.reshape(g!, c.ints([positions.length]));
  const scattered = c.b.op1('ScatterElements', [c.zeros([size], x), c.ints(positions), flat], { axis: 0 });
  return [c.b.reshape(scattered, c.ints(xd)), null, null, null, null];
};

/** Row-major flat indices into `dims` of the grid first + step·i, i < count, in row-major order. */
function flatPositions(dims: number[], first: number[], step: number[], count: number[]): number[] {
  let out = [0];
  for (let axis = 0; axis < dims.length; axis++) {
    const next: number[] = [];
    for (const base of out) for (let i = 0; i < count[axis]!; i++) next.push(base * dims[axis]! + first[axis]! + step[axis]! * i);
    out = next;
  }
  return out;
}

/** Indices as int64 in [0, d): constants wrapped here, run-time ones by Where(i < 0, i + d, i). */
function wrappedIndices(c: GradContext, indices: Value, d: number): Value {
  const b = c.b;
  if (indices.const) {
    const values = indices.const.numbers().map((i) => (i < 0 ? i + d : i));
    return b.int64Const(values, `${b.namePrefix}/indices`, [...c.dims(indices)]);
  }
  const asInt64 = indices.elemType === DataType.INT64 ? indices : b.cast(indices, DataType.INT64);
  return b.op1('Where', [b.op1('Less', [asInt64, c.ints([0])]), b.add(asInt64, c.ints([d])), asInt64]);
}

/** GatherElements: ScatterElements(add) of the gradient into zeros at the same indices. */
const gatherElements: GradRule = (c, node, [g]) => {
  const [x, indices] = [node.inputs[0]!, node.inputs[1]!];
  const xd = c.dims(x);
  const axis = normalizeAxis(node.attrInt('axis', 0), xd.length);
  const idx = wrappedIndices(c, indices, xd[axis]!);
  return [c.b.op1('ScatterElements', [c.zeros(xd, x), idx, g!], { axis, reduction: 'add' }), null];
};

/** Gather: ScatterND(add) of the gradient rows into zeros, with the gathered axis moved first. */
const gather: GradRule = (c, node, [g]) => {
  const [x, indices] = [node.inputs[0]!, node.inputs[1]!];
  const b = c.b;
  const xd = c.dims(x);
  const axis = normalizeAxis(node.attrInt('axis', 0), xd.length);
  const q = c.dims(indices).length;
  const rank = xd.length + q - 1;
  const toFront = [...range(axis, axis + q), ...range(0, axis), ...range(axis + q, rank)];
  const rows = toFront.every((p, i) => p === i) ? g! : b.transpose(g!, toFront);
  const d = xd[axis]!;
  const idx = b.unsqueeze(wrappedIndices(c, indices, d), c.ints([-1]));
  const frontDims = [d, ...xd.slice(0, axis), ...xd.slice(axis + 1)];
  const summed = b.op1('ScatterND', [c.zeros(frontDims, x), idx, rows], { reduction: 'add' });
  const back = [...range(1, axis + 1), 0, ...range(axis + 1, xd.length)];
  return [axis === 0 ? summed : b.transpose(summed, back), null];
};

/** Pad (constant mode): slice the padding off, pad back what a negative pad cropped. */
const pad: GradRule = (c, node, [g]) => {
  const x = node.inputs[0]!;
  if (node.attrString('mode', 'constant') !== 'constant') throw unsupportedOp(node, `Pad mode "${node.attrString('mode')}" has no gradient rule`);
  const xd = c.dims(x);
  const pads = c.constInts(node.inputs[1]!, node, 'pads')!;
  const axes = (c.constInts(node.inputs[3] ?? null, node, 'axes') ?? range(0, xd.length)).map((a) => normalizeAxis(a, xd.length));
  const begin = xd.map(() => 0);
  const end = xd.map(() => 0);
  axes.forEach((axis, k) => {
    begin[axis] = pads[k]!;
    end[axis] = pads[k + axes.length]!;
  });
  const yd = c.dims(node.outputs[0]!);
  let grad = g!;
  if (begin.some((p) => p > 0) || end.some((p) => p > 0)) {
    grad = c.b.slice(grad, c.ints(begin.map((p) => Math.max(p, 0))), c.ints(end.map((p, i) => yd[i]! - Math.max(p, 0))));
  }
  if (begin.some((p) => p < 0) || end.some((p) => p < 0)) {
    grad = c.b.pad(grad, c.ints([...begin, ...end].map((p) => Math.max(-p, 0))));
  }
  return [grad, null, null, null];
};

/** Max/Min: the gradient goes to the inputs equal to the result, split evenly on ties. */
const extremum: GradRule = (c, node, [g]) => {
  const y = node.outputs[0]!;
  if (node.inputs.length === 1) return [g!];
  const hits = node.inputs.map((input) => c.b.cast(c.b.op1('Equal', [input!, y]), y.elemType!));
  const count = c.b.op1('Sum', hits);
  return node.inputs.map((input, i) => (c.needs(input!) ? c.sumTo(c.b.mul(g!, c.b.div(hits[i]!, count)), y, input!) : null));
};

const dropout: GradRule = (c, node, [g]) => {
  const [x, ratioInput, trainingInput] = node.inputs;
  const training = trainingInput ? (c.constInts(trainingInput, node, 'training_mode')![0] ?? 0) !== 0 : false;
  if (!training) return [g!, null, null];
  if (ratioInput && !ratioInput.const) throw unsupportedOp(node, 'its ratio is computed at run time');
  const ratio = ratioInput ? ratioInput.const!.numbers()[0]! : 0.5;
  const y = node.outputs[0]!;
  const keptMask = node.outputs[1] ?? node.addOutput(c.b.graph.uniqueName(`${y.name}.mask`), tensorType(DataType.BOOL, c.dims(x!)));
  return [c.b.mul(g!, c.b.mul(c.b.cast(keptMask, x!.elemType!), c.scalar(1 / (1 - ratio), x!))), null, null];
};

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);

const gelu: Unary = (c, x, _y, g, node) => {
  const b = c.b;
  const k = (v: number): Value => c.scalar(v, x);
  if (node.attrString('approximate', 'none') === 'tanh') {
    // y = ½x(1 + tanh u), u = √(2/π)(x + 0.044715x³)
    const x2 = b.mul(x, x);
    const t = b.op1('Tanh', [b.mul(k(SQRT_2_OVER_PI), b.add(x, b.mul(k(0.044715), b.mul(x2, x))))]);
    const du = b.mul(k(SQRT_2_OVER_PI), b.add(k(1), b.mul(k(3 * 0.044715), x2)));
    const half = b.mul(k(0.5), b.add(k(1), t));
    const slope = b.add(half, b.mul(b.mul(k(0.5), x), b.mul(b.sub(k(1), b.mul(t, t)), du)));
    return b.mul(g, slope);
  }
  // y = xΦ(x): dy/dx = Φ(x) + x·φ(x)
  const cdf = b.mul(k(0.5), b.add(k(1), b.op1('Erf', [b.mul(x, k(Math.SQRT1_2))])));
  const pdf = b.mul(k(1 / Math.sqrt(2 * Math.PI)), b.op1('Exp', [b.mul(k(-0.5), b.mul(x, x))]));
  return b.mul(g, b.add(cdf, b.mul(x, pdf)));
};

/** Clip: x gets dY where min ≤ x ≤ max; a bound gets dY where it clipped. */
const clip: GradRule = (c, node, [g]) => {
  const [x, min, max] = node.inputs;
  const y = node.outputs[0]!;
  const conds: Value[] = [];
  if (min) conds.push(c.b.op1('GreaterOrEqual', [x!, min]));
  if (max) conds.push(c.b.op1('LessOrEqual', [x!, max]));
  if (conds.length === 0) return [g!];
  const cond = conds.length === 2 ? c.b.op1('And', conds) : conds[0]!;
  const bound = (v: Value | null | undefined, op: string): Value | null =>
    v && c.needs(v) ? c.sumTo(mask(c, c.b.op1(op, [x!, v]), g!, x!), y, v) : null;
  return [c.needs(x!) ? mask(c, cond, g!, x!) : null, bound(min, 'Less'), bound(max, 'Greater')];
};

const softmax: GradRule = (c, node, [g]) => {
  const y = node.outputs[0]!;
  const axes = [normalizeAxis(node.attrInt('axis', -1), c.dims(y).length)];
  return [c.b.mul(y, c.b.sub(g!, c.b.reduce('ReduceSum', c.b.mul(g!, y), axes, true)))];
};

const logSoftmax: GradRule = (c, node, [g]) => {
  const y = node.outputs[0]!;
  const axes = [normalizeAxis(node.attrInt('axis', -1), c.dims(y).length)];
  return [c.b.sub(g!, c.b.mul(c.b.op1('Exp', [y]), c.b.reduce('ReduceSum', g!, axes, true)))];
};

export const GRADIENT_RULES: Record<string, GradRule> = {
  // elementwise, one input
  Identity: unary((_c, _x, _y, g) => g),
  Neg: unary((c, _x, _y, g) => c.b.op1('Neg', [g])),
  Exp: unary((c, _x, y, g) => c.b.mul(g, y)),
  Log: unary((c, x, _y, g) => c.b.div(g, x)),
  Abs: unary((c, x, _y, g) => c.b.mul(g, c.b.op1('Sign', [x]))),
  Sqrt: unary((c, _x, y, g) => c.b.div(g, c.b.add(y, y))),
  Reciprocal: unary((c, _x, y, g) => c.b.op1('Neg', [c.b.mul(g, c.b.mul(y, y))])),
  // a tiled MaxPool right after may have applied this mask at its own, smaller, resolution
  Relu: unary((c, x, _y, g, n) => (c.claimed(n) ? g : mask(c, c.b.op1('Greater', [x, c.scalar(0, x)]), g, x))),
  LeakyRelu: unary((c, x, _y, g, n) => c.b.op1('Where', [c.b.op1('Greater', [x, c.scalar(0, x)]), g, c.b.mul(g, c.scalar(n.attrFloat('alpha', 0.01), x))])),
  Elu: unary((c, x, y, g, n) => c.b.op1('Where', [c.b.op1('Greater', [x, c.scalar(0, x)]), g, c.b.mul(g, c.b.add(y, c.scalar(n.attrFloat('alpha', 1), x)))])),
  Softplus: unary((c, x, _y, g) => c.b.mul(g, c.b.op1('Sigmoid', [x]))),
  Sigmoid: unary((c, x, y, g) => c.b.mul(g, c.b.mul(y, c.b.sub(c.scalar(1, x), y)))),
  Tanh: unary((c, x, y, g) => c.b.mul(g, c.b.sub(c.scalar(1, x), c.b.mul(y, y)))),
  Erf: unary((c, x, _y, g) => c.b.mul(g, c.b.mul(c.scalar(2 / Math.sqrt(Math.PI), x), c.b.op1('Exp', [c.b.op1('Neg', [c.b.mul(x, x)])])))),
  Gelu: unary(gelu),
  HardSigmoid: unary((c, x, _y, g, n) => {
    const alpha = n.attrFloat('alpha', 0.2);
    const z = c.b.add(c.b.mul(x, c.scalar(alpha, x)), c.scalar(n.attrFloat('beta', 0.5), x));
    const inside = c.b.op1('And', [c.b.op1('Greater', [z, c.scalar(0, x)]), c.b.op1('Less', [z, c.scalar(1, x)])]);
    return mask(c, inside, c.b.mul(g, c.scalar(alpha, x)), x);
  }),
  HardSwish: unary((c, x, _y, g) => {
    const inner = c.b.mul(g, c.b.add(c.b.mul(x, c.scalar(1 / 3, x)), c.scalar(0.5, x)));
    const upper = c.b.op1('Where', [c.b.op1('Greater', [x, c.scalar(3, x)]), g, inner]);
    return c.b.op1('Where', [c.b.op1('Less', [x, c.scalar(-3, x)]), c.scalar(0, x), upper]);
  }),
  Clip: clip,
  Cast: unary((c, x, _y, g) => c.b.cast(g, x.elemType!)),
  Dropout: dropout,
  Softmax: softmax,
  LogSoftmax: logSoftmax,
  Constant: () => [],
  // elementwise with broadcasting
  Add: broadcasting((_c, _n, g) => g),
  Sub: broadcasting((c, _n, g, i) => (i === 0 ? g : c.b.op1('Neg', [g]))),
  Mul: broadcasting((c, n, g, i) => c.b.mul(g, n.inputs[1 - i]!)),
  Div: broadcasting((c, n, g, i) => (i === 0 ? c.b.div(g, n.inputs[1]!) : c.b.op1('Neg', [c.b.div(c.b.mul(g, n.outputs[0]!), n.inputs[1]!)]))),
  Pow: broadcasting((c, n, g, i) => {
    if (i === 1) return null;
    const [x, e] = [n.inputs[0]!, n.inputs[1]!];
    const exponent = e.elemType === x.elemType ? e : c.b.cast(e, x.elemType!);
    return c.b.mul(g, c.b.mul(exponent, c.b.op1('Pow', [x, c.b.sub(exponent, c.scalar(1, x))])));
  }),
  Sum: broadcasting((_c, _n, g) => g),
  Mean: broadcasting((c, n, g) => c.b.mul(g, c.scalar(1 / n.inputs.length, n.outputs[0]!))),
  PRelu: broadcasting((c, n, g, i) => {
    const [x, slope] = [n.inputs[0]!, n.inputs[1]!];
    const positive = c.b.op1('Greater', [x, c.scalar(0, x)]);
    return i === 0
      ? c.b.op1('Where', [positive, g, c.b.mul(g, slope)])
      : c.b.op1('Where', [positive, c.scalar(0, x), c.b.mul(g, x)]);
  }),
  Max: extremum,
  Min: extremum,
  Where: broadcasting((c, n, g, i) => {
    if (i === 0) return null;
    const zero = c.scalar(0, n.outputs[0]!);
    return c.b.op1('Where', i === 1 ? [n.inputs[0]!, g, zero] : [n.inputs[0]!, zero, g]);
  }),
  // linear algebra and layers
  MatMul: matMul,
  Gemm: gemm,
  Conv: convGrad,
  ConvTranspose: convTransposeGrad,
  MaxPool: maxPoolGrad,
  AveragePool: averagePoolGrad,
  GlobalAveragePool: globalAveragePoolGrad,
  Resize: resizeGrad,
  BatchNormalization: batchNormGrad,
  InstanceNormalization: instanceNormGrad,
  LayerNormalization: layerNormGrad,
  ReduceSum: reduction(false),
  ReduceMean: reduction(true),
  // data movement
  Reshape: reshapeBack,
  Flatten: reshapeBack,
  Squeeze: reshapeBack,
  Unsqueeze: reshapeBack,
  Transpose: (c, node, [g]) => {
    const rank = c.dims(node.inputs[0]!).length;
    const perm = node.attrInts('perm') ?? range(0, rank).reverse();
    const inverse = new Array<number>(rank);
    perm.forEach((p, i) => (inverse[p] = i));
    return [c.b.transpose(g!, inverse)];
  },
  Expand: (c, node, [g]) => [c.sumTo(g!, node.outputs[0]!, node.inputs[0]!), null],
  Concat: (c, node, [g]) => {
    if (node.inputs.length === 1) return [g!];
    const rank = c.dims(node.outputs[0]!).length;
    const axis = normalizeAxis(node.attrInt('axis', 0), rank);
    return c.b.split(g!, axis, node.inputs.map((v) => c.dims(v!)[axis]!));
  },
  Split: (c, node, dY) => {
    const rank = c.dims(node.inputs[0]!).length;
    const parts = node.outputs.map((o, i) => dY[i] ?? c.zeros(c.dims(o), o));
    return [c.b.concat(parts, normalizeAxis(node.attrInt('axis', 0), rank)), null];
  },
  Slice: slice,
  Gather: gather,
  GatherElements: gatherElements,
  Pad: pad,
};
