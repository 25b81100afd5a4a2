// The long gradient forms, in standard ops only (verified forms, shared notes on gradients):
// Conv, ConvTranspose, MaxPool, AveragePool, GlobalAveragePool, Resize and the normalizations.
//
// - Conv input gradient: ConvTranspose(dY, W) with the forward group, strides, dilations and
//   pads, and output_padding = (H + pad_begin + pad_end − ((k−1)·d + 1)) mod s so the result is
//   exactly H wide. No auto_pad or output_shape on it: runtimes redistribute pads their own way.
//   With asymmetric pads: ConvTranspose without pads, then Slice/Pad (same numbers; the CUDA
//   provider would run the padded form on the CPU).
// - Conv weight gradient, 2-D without groups: im2col, the input's kernel taps (strided Slices)
//   stacked and multiplied with dY in one MatMul, while the taps stay under 64 MB.
// - Conv weight gradient otherwise: ONNX has no batch groups, so the batch is folded into channels:
//   X → [Cg, G·N, S], dY → [G·Mg, N, So], Conv(X', dY', group G, strides = forward dilations,
//   dilations = forward strides, forward pads), cut to the kernel, swap the first two axes.
//   dW[k] = Σ_o dY[o]·X[o·s + k·d − p] is exactly that correlation.
// - ConvTranspose is the adjoint of Conv with the same weight: its input gradient is that Conv,
//   its weight gradient the Conv weight gradient with the roles of input and output swapped.
// - MaxPool: the forward node also outputs Indices (flat over N·C·H·W); the gradient scatters dY
//   there with ScatterElements(reduction add), which stays right when windows overlap. A 2-D
//   pool over k×k tiles (the common 2×2 stride 2) keeps its plain forward and routes dY to the
//   first tap equal to the maximum instead (SpaceToDepth taps, Concats back): same result.
// - AveragePool: depthwise ConvTranspose of dY/count with a ones kernel, then crop the padding
//   (and pad the tail a floor-mode pool never read); count is a constant per output position.
// - Resize (nearest, linear) is linear and separable: per resized axis Y = A·X with a constant
//   [out, in] interpolation matrix built here from the coordinate rules, so dX = Aᵀ·dY per axis.
// - Normalizations (BatchNormalization with batch or running statistics, InstanceNormalization,
//   LayerNormalization; group norms are built from these): with x̂ the normalized input and
//   isd = 1/σ, dX = isd·(g − mean(g) − x̂·mean(g·x̂)) with g = dY·γ and means over the normalized
//   axes; dγ = Σ dY·x̂, dβ = Σ dY. Running statistics get no gradient. With batch statistics the
//   channel norms fold γ, isd and the means into per-channel factors (batchStatisticsGrad).

import { tensorType, type Node, type Value } from '../compiler/ir.js';
import { DataType } from '../compiler/tensor.js';
import { range, unsupportedOp, type GradContext } from './autodiff.js';

interface Window {
  kernel: number[];
  strides: number[];
  dilations: number[];
  /** [begin..., end...] */
  pads: number[];
}

const product = (dims: readonly number[]): number => dims.reduce((n, d) => n * d, 1);

/** Kernel, strides, dilations and explicit pads of a Conv or pool (auto_pad resolved). */
function windowOf(node: Node, spatialIn: number[], kernel: number[]): Window {
  const n = spatialIn.length;
  const strides = node.attrInts('strides') ?? new Array<number>(n).fill(1);
  const dilations = node.attrInts('dilations') ?? new Array<number>(n).fill(1);
  const autoPad = node.attrString('auto_pad', 'NOTSET');
  let pads = node.attrInts('pads') ?? new Array<number>(2 * n).fill(0);
  if (autoPad === 'VALID') pads = new Array<number>(2 * n).fill(0);
  if (autoPad === 'SAME_UPPER' || autoPad === 'SAME_LOWER') {
    pads = new Array<number>(2 * n).fill(0);
    spatialIn.forEach((size, i) => {
      const out = Math.ceil(size / strides[i]!);
      const total = Math.max(0, (out - 1) * strides[i]! + (kernel[i]! - 1) * dilations[i]! + 1 - size);
      const small = Math.floor(total / 2);
      pads[i] = autoPad === 'SAME_UPPER' ? small : total - small;
      pads[i + n] = total - pads[i]!;
    });
  }
  return { kernel, strides, dilations, pads };
}

/**
 * dW of a Conv whose input `input` is [N, G·Cg, S] and whose output gradient `dOut` is
 * [N, G·Mg, So] (dims given: backward values carry no type yet); the result is [G·Mg, Cg, kernel].
 */
function convWeightGrad(c: GradContext, input: Value, inputDims: number[], dOut: Value, dOutDims: number[], group: number, win: Window): Value {
  if (group === 1 && inputDims.length === 4 && product(win.kernel) * inputDims[1]! * inputDims[0]! * product(dOutDims.slice(2)) <= IM2COL_MAX_ELEMENTS) {
    return im2colWeightGrad(c, input, inputDims, dOut, dOutDims, win);
  }
  const b = c.b;
  const [n, channels, ...spatial] = inputDims;
  const [, outChannels, ...outSpatial] = dOutDims;
  const cg = channels! / group;
  const mg = outChannels! / group;
  const rest = range(3, 3 + spatial.length);
  let folded: Value;
  let kernel: Value;
  if (group === 1) {
    folded = b.transpose(input, [1, 0, ...range(2, 2 + spatial.length)]);
    kernel = b.transpose(dOut, [1, 0, ...range(2, 2 + spatial.length)]);
  } else {
    const x5 = b.transpose(b.reshape(input, c.ints([n!, group, cg, ...spatial])), [2, 1, 0, ...rest]);
    folded = b.reshape(x5, c.ints([cg, group * n!, ...spatial]));
    const g5 = b.transpose(b.reshape(dOut, c.ints([n!, group, mg, ...outSpatial])), [1, 2, 0, ...rest]);
    kernel = b.reshape(g5, c.ints([group * mg, n!, ...outSpatial]));
  }
  const full = b.conv(folded, kernel, null, {
    kernelShape: outSpatial, strides: win.dilations, dilations: win.strides, pads: win.pads, group,
  });
  const k = spatial.length;
  const fullSize = spatial.map((size, i) =>
    Math.floor((size + win.pads[i]! + win.pads[i + k]! - ((outSpatial[i]! - 1) * win.strides[i]! + 1)) / win.dilations[i]!) + 1);
  const cut = fullSize.some((size, i) => size !== win.kernel[i])
    ? b.slice(full, c.ints(win.kernel.map(() => 0)), c.ints(win.kernel), c.ints(range(2, 2 + k)))
    : full;
  return b.transpose(cut, [1, 0, ...range(2, 2 + k)]);
}

/**
 * The largest im2col matrix (k·C rows × N·Ho·Wo columns, float32 elements: 64 MB) a 2-D weight
 * gradient builds; past it, the batch-folded Conv, which onnxruntime runs one channel at a time.
 *
 * The im2col form is one GEMM with a long inner dimension, where the folded Conv's output is only
 * the kernel's positions and onnxruntime's Conv runs far from its GEMM speed. Measured in the
 * Fashion-MNIST CNN's train step at batch 64 (onnxruntime profile per step, the 32→64 layer at
 * 14×14): 8.6 → 5.6 ms with 32 input channels, 3.3 → 2.2 ms with 16, 1.26 → 0.6 ms with 8.
 */
const IM2COL_MAX_ELEMENTS = 16 << 20;

/**
 * dW[m, c, i, j] = Σ over n and output positions o of dY[n, m, o] · Xpad[n, c, o·s + (i, j)·d]:
 * the input's k taps (strided Slices of Xpad with the batch moved behind the channels, [C, N,
 * Ho, Wo] each) stacked into [k·C, N·Ho·Wo], times dY as [N·Ho·Wo, M]: one MatMul.
 */
function im2colWeightGrad(c: GradContext, input: Value, inputDims: number[], dOut: Value, dOutDims: number[], win: Window): Value {
  const b = c.b;
  const [n, channels] = inputDims;
  const [, outChannels, outH, outW] = dOutDims;
  const [kh, kw] = win.kernel;
  const padded = win.pads.some((p) => p !== 0) ? b.pad(input, c.ints([0, 0, win.pads[0]!, win.pads[1]!, 0, 0, win.pads[2]!, win.pads[3]!])) : input;
  const xT = b.transpose(padded, [1, 0, 2, 3]);
  const taps: Value[] = [];
  for (let i = 0; i < kh!; i++) {
    for (let j = 0; j < kw!; j++) {
      const start = [i * win.dilations[0]!, j * win.dilations[1]!];
      const end = [start[0]! + (outH! - 1) * win.strides[0]! + 1, start[1]! + (outW! - 1) * win.strides[1]! + 1];
      taps.push(b.slice(xT, c.ints(start), c.ints(end), c.ints([2, 3]), c.ints(win.strides)));
    }
  }
  const rows = n! * outH! * outW!;
  const cols = b.reshape(taps.length === 1 ? taps[0]! : b.concat(taps, 0), c.ints([kh! * kw! * channels!, rows]));
  const dYt = b.reshape(b.transpose(dOut, [0, 2, 3, 1]), c.ints([rows, outChannels!]));
  const dw = b.matMul(cols, dYt);
  return b.transpose(b.reshape(dw, c.ints([kh!, kw!, channels!, outChannels!])), [3, 2, 0, 1]);
}

/**
 * A ConvTranspose without pads covers the padded input from its first window on; cut it back to
 * the input: crop the leading pads and zero-fill a tail no window read (floor-mode remainders).
 */
function unpad(c: GradContext, full: Value, win: Window, spatial: number[], outSpatial: number[]): Value {
  const k = spatial.length;
  const covered = outSpatial.map((o, i) => (o - 1) * win.strides[i]! + (win.kernel[i]! - 1) * win.dilations[i]! + 1);
  const needsCrop = spatial.some((s, i) => win.pads[i]! > 0 || covered[i]! > s);
  const cropped = needsCrop
    ? c.b.slice(full, c.ints(win.pads.slice(0, k)), c.ints(spatial.map((s, i) => win.pads[i]! + s)), c.ints(range(2, 2 + k)))
    : full;
  const tail = spatial.map((s, i) => Math.max(0, win.pads[i]! + s - covered[i]!));
  return tail.some((t) => t > 0) ? c.b.pad(cropped, c.ints([0, 0, ...spatial.map(() => 0), 0, 0, ...tail])) : cropped;
}

function biasGrad(c: GradContext, g: Value, rank: number): Value {
  return c.reduce('ReduceSum', g, [0, ...range(2, rank)], rank, false);
}

export function convGrad(c: GradContext, node: Node, dY: (Value | null)[]): (Value | null)[] {
  const g = dY[0]!;
  const [x, w, bias] = node.inputs;
  const xd = c.dims(x!);
  const wd = c.dims(w!);
  const group = node.attrInt('group', 1);
  const win = windowOf(node, xd.slice(2), wd.slice(2));
  const k = win.kernel.length;
  let dX: Value | null = null;
  if (c.needs(x!) && win.kernel.some((_, i) => win.pads[i] !== win.pads[i + k])) {
    // asymmetric pads: the unpadded form (CUDA runs ConvTranspose with asymmetric pads on the CPU)
    const full = c.b.op1('ConvTranspose', [g, w!], { dilations: win.dilations, group, kernel_shape: win.kernel, strides: win.strides });
    dX = unpad(c, full, win, xd.slice(2), c.dims(node.outputs[0]!).slice(2));
  } else if (c.needs(x!)) {
    const outputPadding = win.kernel.map((size, i) =>
      (xd[2 + i]! + win.pads[i]! + win.pads[i + k]! - ((size - 1) * win.dilations[i]! + 1)) % win.strides[i]!);
    dX = c.b.op1('ConvTranspose', [g, w!], {
      dilations: win.dilations, group, kernel_shape: win.kernel, output_padding: outputPadding, pads: win.pads, strides: win.strides,
    });
  }
  const dW = c.needs(w!) ? convWeightGrad(c, x!, xd, g, c.dims(node.outputs[0]!), group, win) : null;
  const dB = bias && c.needs(bias) ? biasGrad(c, g, xd.length) : null;
  return [dX, dW, dB];
}

export function convTransposeGrad(c: GradContext, node: Node, dY: (Value | null)[]): (Value | null)[] {
  const g = dY[0]!;
  const [x, w, bias] = node.inputs;
  if (node.attrString('auto_pad', 'NOTSET') !== 'NOTSET' || node.attr('output_shape')) {
    throw unsupportedOp(node, 'auto_pad or output_shape on ConvTranspose', 'give explicit pads and output_padding');
  }
  const xd = c.dims(x!);
  const group = node.attrInt('group', 1);
  const k = xd.length - 2;
  const win: Window = {
    kernel: c.dims(w!).slice(2),
    strides: node.attrInts('strides') ?? new Array<number>(k).fill(1),
    dilations: node.attrInts('dilations') ?? new Array<number>(k).fill(1),
    pads: node.attrInts('pads') ?? new Array<number>(2 * k).fill(0),
  };
  const dX = c.needs(x!) ? c.b.conv(g, w!, null, { kernelShape: win.kernel, strides: win.strides, dilations: win.dilations, pads: win.pads, group }) : null;
  // the equivalent Conv reads this node's output and writes its input
  const dW = c.needs(w!) ? convWeightGrad(c, g, c.dims(node.outputs[0]!), x!, xd, group, win) : null;
  const dB = bias && c.needs(bias) ? biasGrad(c, g, xd.length) : null;
  return [dX, dW, dB];
}

export function maxPoolGrad(c: GradContext, node: Node, dY: (Value | null)[]): (Value | null)[] {
  const [x, y] = [node.inputs[0]!, node.outputs[0]!];
  if (node.attrInt('storage_order', 0) !== 0) throw unsupportedOp(node, 'MaxPool with storage_order 1');
  const tiled = tiledWindow(node, c.dims(x));
  if (tiled > 0 && !node.outputs[1]) {
    // After a Relu: the gradient reaches only each window's maximum, where the Relu's mask is
    // (max > 0), so it is applied to dY here, at a k²-th of the size, and the Relu passes it on.
    const afterRelu = x.producer?.op === 'Relu' && c.claimProducer(x, node);
    const g = afterRelu ? c.b.op1('Where', [c.b.op1('Greater', [y, c.scalar(0, x)]), dY[0]!, c.scalar(0, x)]) : dY[0]!;
    return [tiledMaxPoolGrad(c, x, y, g, tiled)];
  }
  const indices = node.outputs[1] ?? node.addOutput(c.b.graph.uniqueName(`${y.name}.indices`), tensorType(DataType.INT64, c.dims(y)));
  const count = product(c.dims(y));
  const flat = (v: Value): Value => c.b.reshape(v, c.ints([count]));
  const scattered = c.b.op1('ScatterElements', [c.zeros([product(c.dims(x))], x), flat(indices), flat(dY[0]!)], { axis: 0, reduction: 'add' });
  return [c.b.reshape(scattered, c.ints(c.dims(x)))];
}

/**
 * The window size k when a 2-D MaxPool tiles its input with k×k windows (kernel = strides, no
 * pads or dilation, H and W multiples of k), else 0.
 */
function tiledWindow(node: Node, xd: number[]): number {
  if (xd.length !== 4) return 0;
  const kernel = node.attrInts('kernel_shape') ?? [];
  const k = kernel[0] ?? 0;
  const strides = node.attrInts('strides') ?? [1, 1];
  const dilations = node.attrInts('dilations') ?? [1, 1];
  const autoPad = node.attrString('auto_pad', 'NOTSET');
  if (k < 2 || kernel.length !== 2 || kernel[1] !== k) return 0;
  if (!strides.every((s) => s === k) || !dilations.every((d) => d === 1)) return 0;
  if ((node.attrInts('pads') ?? []).some((p) => p !== 0) || (autoPad !== 'NOTSET' && autoPad !== 'VALID')) return 0;
  return xd[2]! % k === 0 && xd[3]! % k === 0 ? k : 0;
}

/**
 * MaxPool over k×k tiles without an Indices output (onnxruntime's MaxPool with Indices takes a
 * generic kernel, 5× slower than the plain one): SpaceToDepth lays each window's taps out as k²
 * channel blocks in row-major window order, and the gradient goes to the first tap equal to the
 * pooled maximum (Equal and two Wheres per tap pass what is left on), which is the element
 * MaxPool's Indices name, ties included; Concats put the taps back.
 */
function tiledMaxPoolGrad(c: GradContext, x: Value, y: Value, dY: Value, k: number): Value {
  const b = c.b;
  const channels = c.dims(x)[1]!;
  const taps = b.split(b.op1('SpaceToDepth', [x], { blocksize: k }), 1, new Array<number>(k * k).fill(channels));
  const zero = c.scalar(0, x);
  const parts: Value[] = [];
  let rest = dY;
  for (const tap of taps.slice(0, -1)) {
    const first = b.op1('Equal', [tap, y]);
    parts.push(b.op1('Where', [first, rest, zero]));
    rest = b.op1('Where', [first, zero, rest]);
  }
  parts.push(rest);
  // back to [N, C, H, W]: each window row's taps side by side along W, then the rows along H (two
  // Concats; onnxruntime's DepthToSpace, a 6-D transpose, takes 1.8× as long)
  const [n, , h, w] = c.dims(x);
  const rows: Value[] = [];
  for (let i = 0; i < k; i++) {
    const row = b.concat(parts.slice(i * k, (i + 1) * k).map((p) => b.unsqueeze(p, [4])), 4);
    rows.push(b.reshape(row, c.ints([n!, channels, h! / k, 1, w!])));
  }
  return b.reshape(b.concat(rows, 3), c.ints([n!, channels, h!, w!]));
}

export function averagePoolGrad(c: GradContext, node: Node, dY: (Value | null)[]): (Value | null)[] {
  const [x, y] = [node.inputs[0]!, node.outputs[0]!];
  const xd = c.dims(x);
  const yd = c.dims(y);
  const spatial = xd.slice(2);
  const win = windowOf(node, spatial, node.attrInts('kernel_shape')!);
  const k = spatial.length;
  const includePad = node.attrInt('count_include_pad', 0) === 1;
  // window element counts, separable per axis: taps inside the input (or the padded input)
  const counts = spatial.map((size, i) => range(0, yd[2 + i]!).map((o) => {
    const lo = includePad ? -win.pads[i]! : 0;
    const hi = includePad ? size + win.pads[i + k]! : size;
    let taps = 0;
    for (let t = 0; t < win.kernel[i]!; t++) {
      const at = o * win.strides[i]! - win.pads[i]! + t * win.dilations[i]!;
      if (at >= lo && at < hi) taps++;
    }
    return taps;
  }));
  const outSpatial = yd.slice(2);
  const inverse = new Float64Array(product(outSpatial));
  for (let flat = 0; flat < inverse.length; flat++) {
    let rest = flat;
    let count = 1;
    for (let i = k - 1; i >= 0; i--) {
      count *= counts[i]![rest % outSpatial[i]!]!;
      rest = Math.floor(rest / outSpatial[i]!);
    }
    inverse[flat] = count > 0 ? 1 / count : 0;
  }
  const scaled = c.b.mul(dY[0]!, c.floats(inverse, [1, 1, ...outSpatial], x));
  const ones = c.floats(new Float64Array(xd[1]! * product(win.kernel)).fill(1), [xd[1]!, 1, ...win.kernel], x);
  const spread = c.b.op1('ConvTranspose', [scaled, ones], {
    dilations: win.dilations, group: xd[1]!, kernel_shape: win.kernel, strides: win.strides,
  });
  return [unpad(c, spread, win, spatial, outSpatial)];
}

export function globalAveragePoolGrad(c: GradContext, node: Node, dY: (Value | null)[]): (Value | null)[] {
  const x = node.inputs[0]!;
  const xd = c.dims(x);
  const scaled = c.b.mul(dY[0]!, c.scalar(1 / product(xd.slice(2)), x));
  return [c.b.op1('Expand', [scaled, c.ints(xd)])];
}

/** Batch statistics over `axes`: the centred input x − mean and isd = 1/√(var + ε), so x̂ = centred·isd. */
function standardize(c: GradContext, x: Value, axes: number[], epsilon: number): { centered: Value; isd: Value } {
  const b = c.b;
  const rank = c.dims(x).length;
  const centered = b.sub(x, c.reduce('ReduceMean', x, axes, rank, true));
  const variance = c.reduce('ReduceMean', b.mul(centered, centered), axes, rank, true);
  return { centered, isd: inverseStd(c, variance, epsilon, x) };
}

/** 1/√(variance + ε), in `like`'s float type. */
function inverseStd(c: GradContext, variance: Value, epsilon: number, like: Value): Value {
  return c.b.op1('Reciprocal', [c.b.op1('Sqrt', [c.b.add(variance, c.scalar(epsilon, like))])]);
}

/** dX = isd·(g − mean(g) − x̂·mean(g·x̂)), g the gradient of x̂, means over `axes`. */
function normalizedInputGrad(c: GradContext, g: Value, xhat: Value, isd: Value, axes: number[]): Value {
  const b = c.b;
  const meanG = b.reduce('ReduceMean', g, axes, true);
  const meanGX = b.reduce('ReduceMean', b.mul(g, xhat), axes, true);
  return b.mul(isd, b.sub(b.sub(g, meanG), b.mul(xhat, meanGX)));
}

function noGradOnExtraOutputs(node: Node, dY: (Value | null)[]): void {
  if (dY.slice(1).some((g) => g !== null)) throw unsupportedOp(node, 'a gradient reaches one of its statistics outputs');
}

/** Channel-wise (axis 1) normalization: BatchNormalization and InstanceNormalization. */
function channelNormGrad(kind: 'batch' | 'instance', c: GradContext, node: Node, dY: (Value | null)[]): (Value | null)[] {
  noGradOnExtraOutputs(node, dY);
  const g = dY[0]!;
  const [x, scale, bias, mean, variance] = node.inputs as Value[];
  const b = c.b;
  const xd = c.dims(x);
  const perChannel = (v: Value): Value => onChannelAxis(c, v, xd);
  const epsilon = node.attrFloat('epsilon', 1e-5);
  const sumAxes = [0, ...range(2, xd.length)];
  const batchStats = kind === 'instance' || node.attrInt('training_mode', 0) === 1;
  // with momentum 0 the node's extra outputs are, by ONNX's definition, its batch statistics (the
  // training-mode rewrite sets it)
  const own = kind === 'batch' && node.attrFloat('momentum', 0.9) === 0 && node.outputs[1] && node.outputs[2]
    ? { mean: perChannel(node.outputs[1]), variance: perChannel(node.outputs[2]) }
    : null;
  if (batchStats) return batchStatisticsGrad(c, g, x, scale, bias, kind === 'batch' ? sumAxes : range(2, xd.length), sumAxes, epsilon, own);
  // running statistics: a fixed per-channel affine map
  const isd = perChannel(inverseStd(c, variance, epsilon, x));
  const dX = c.needs(x) ? b.mul(g, b.mul(perChannel(scale), isd)) : null;
  const dScale = c.needs(scale) ? c.reduce('ReduceSum', b.mul(g, b.mul(b.sub(x, perChannel(mean)), isd)), sumAxes, xd.length, false) : null;
  const dBias = c.needs(bias) ? c.reduce('ReduceSum', g, sumAxes, xd.length, false) : null;
  return [dX, dScale, dBias, null, null];
}

/** A per-channel vector [C] as [C, 1, …] so it broadcasts over an [N, C, …] activation of dims `xd`. */
function onChannelAxis(c: GradContext, v: Value, xd: number[]): Value {
  return c.b.reshape(v, c.ints([xd[1]!, ...new Array<number>(xd.length - 2).fill(1)]));
}

/**
 * A channel norm with batch statistics over `statAxes`, in few passes over the activation: with
 * c = x − mean, isd = 1/√(mean(c²) + ε), m₁ = mean(dY) and m₂ = mean(dY·c) (per statistic), the
 * input gradient isd·γ·(dY − m₁ − x̂·mean(dY·x̂)) is a·dY + k·c + β' with per-statistic a = γ·isd,
 * k = −a·isd²·m₂ and β' = −a·m₁; dγ = Σ isd·m₂·count and dβ = Σ m₁·count, summed over the
 * statistics. With `stats` (the forward node's own batch mean and variance, per channel) the
 * backward does not reduce the activation for them again: seven passes over the activation,
 * eleven without them, sixteen in the textbook form (x̂ and γ·dY are never materialized).
 */
function batchStatisticsGrad(
  c: GradContext, g: Value, x: Value, scale: Value, bias: Value, statAxes: number[], sumAxes: number[], epsilon: number,
  stats: { mean: Value; variance: Value } | null,
): (Value | null)[] {
  const b = c.b;
  const xd = c.dims(x);
  const count = product(statAxes.map((a) => xd[a]!));
  const { centered, isd } = stats
    ? { centered: b.sub(x, stats.mean), isd: inverseStd(c, stats.variance, epsilon, x) }
    : standardize(c, x, statAxes, epsilon);
  const meanDY = c.reduce('ReduceMean', g, statAxes, xd.length, true);
  const meanDYC = c.reduce('ReduceMean', b.mul(g, centered), statAxes, xd.length, true);
  // the statistics' own axes reduced away: [C] from [1, C, 1…] (batch) or [N, C, 1…] (instance)
  const toChannels = (v: Value): Value => {
    const rest = sumAxes.filter((a) => !statAxes.includes(a));
    return b.reshape(rest.length > 0 ? b.reduce('ReduceSum', v, rest, true) : v, c.ints([xd[1]!]));
  };
  let dX: Value | null = null;
  if (c.needs(x)) {
    const a = b.mul(onChannelAxis(c, scale, xd), isd);
    const k = b.op1('Neg', [b.mul(b.mul(a, b.mul(isd, isd)), meanDYC)]);
    const shift = b.op1('Neg', [b.mul(a, meanDY)]);
    if (statAxes.length === sumAxes.length) {
      // per-channel factors: a·dY + β' is one inference-mode BatchNormalization (mean 0, variance
      // 1, ε 0), one pass where a Mul and an Add take two
      const vec = (v: Value): Value => b.reshape(v, c.ints([xd[1]!]));
      const zeros = c.floats(new Float64Array(xd[1]!), [xd[1]!], x);
      const ones = c.floats(new Float64Array(xd[1]!).fill(1), [xd[1]!], x);
      dX = b.add(b.batchNorm(g, vec(a), vec(shift), zeros, ones, 0), b.mul(centered, k));
    } else {
      dX = b.add(b.add(b.mul(g, a), b.mul(centered, k)), shift);
    }
  }
  const dScale = c.needs(scale) ? toChannels(b.mul(b.mul(isd, meanDYC), c.scalar(count, x))) : null;
  const dBias = c.needs(bias) ? toChannels(b.mul(meanDY, c.scalar(count, x))) : null;
  return [dX, dScale, dBias, null, null];
}

export function layerNormGrad(c: GradContext, node: Node, dY: (Value | null)[]): (Value | null)[] {
  noGradOnExtraOutputs(node, dY);
  const g = dY[0]!;
  const [x, scale, bias] = node.inputs;
  const y = node.outputs[0]!;
  const rank = c.dims(x!).length;
  const axes = range((node.attrInt('axis', -1) + rank) % rank, rank);
  const { centered, isd } = standardize(c, x!, axes, node.attrFloat('epsilon', 1e-5));
  const xhat = c.b.mul(centered, isd);
  const dX = c.needs(x!) ? normalizedInputGrad(c, c.b.mul(g, scale!), xhat, isd, axes) : null;
  const dScale = c.needs(scale!) ? c.sumTo(c.b.mul(g, xhat), y, scale!) : null;
  const dBias = bias && c.needs(bias) ? c.sumTo(g, y, bias) : null;
  return [dX, dScale, dBias];
}

export function batchNormGrad(c: GradContext, node: Node, dY: (Value | null)[]): (Value | null)[] {
  return channelNormGrad('batch', c, node, dY);
}

export function instanceNormGrad(c: GradContext, node: Node, dY: (Value | null)[]): (Value | null)[] {
  return channelNormGrad('instance', c, node, dY);
}

/** Source coordinate of output index `o` on one axis (ONNX Resize coordinate_transformation_mode). */
function sourceCoordinate(node: Node, mode: string, o: number, scale: number, inSize: number, outSize: number): number {
  switch (mode) {
    case 'half_pixel': return (o + 0.5) / scale - 0.5;
    case 'pytorch_half_pixel': return outSize > 1 ? (o + 0.5) / scale - 0.5 : 0;
    case 'align_corners': return outSize === 1 ? 0 : (o * (inSize - 1)) / (outSize - 1);
    case 'asymmetric': return o / scale;
    case 'half_pixel_symmetric': {
      const adjustment = outSize / (scale * inSize);
      return (inSize / 2) * (1 - adjustment) + (o + 0.5) / scale - 0.5;
    }
    default: throw unsupportedOp(node, `Resize coordinate_transformation_mode "${mode}"`);
  }
}

function nearestIndex(node: Node, mode: string, x: number): number {
  switch (mode) {
    case 'round_prefer_floor': return x - Math.floor(x) === 0.5 ? Math.floor(x) : Math.round(x);
    case 'round_prefer_ceil': return Math.round(x);
    case 'floor': return Math.floor(x);
    case 'ceil': return Math.ceil(x);
    default: throw unsupportedOp(node, `Resize nearest_mode "${mode}"`);
  }
}

/** The [out, in] matrix of one resized axis. */
function interpolationMatrix(node: Node, inSize: number, outSize: number, scale: number): Float64Array {
  const mode = node.attrString('mode', 'nearest');
  const transform = node.attrString('coordinate_transformation_mode', 'half_pixel');
  const a = new Float64Array(outSize * inSize);
  for (let o = 0; o < outSize; o++) {
    const x = sourceCoordinate(node, transform, o, scale, inSize, outSize);
    if (mode === 'nearest') {
      const i = Math.min(Math.max(nearestIndex(node, node.attrString('nearest_mode', 'round_prefer_floor'), x), 0), inSize - 1);
      a[o * inSize + i] = 1;
    } else {
      const clamped = Math.min(Math.max(x, 0), inSize - 1);
      const i0 = Math.floor(clamped);
      const i1 = Math.min(i0 + 1, inSize - 1);
      a[o * inSize + i0] += 1 - (clamped - i0);
      a[o * inSize + i1] += clamped - i0;
    }
  }
  return a;
}

export function resizeGrad(c: GradContext, node: Node, dY: (Value | null)[]): (Value | null)[] {
  const [x, , scalesInput, sizesInput] = node.inputs;
  const mode = node.attrString('mode', 'nearest');
  if (mode !== 'nearest' && mode !== 'linear') throw unsupportedOp(node, `Resize mode "${mode}"`);
  if (node.attrInt('antialias', 0) !== 0 || node.attrInt('exclude_outside', 0) !== 0) throw unsupportedOp(node, 'Resize with antialias or exclude_outside');
  const xd = c.dims(x!);
  const yd = c.dims(node.outputs[0]!);
  const axes = (node.attrInts('axes') ?? range(0, xd.length)).map((a) => (a < 0 ? a + xd.length : a));
  const scaleOf = new Map<number, number>();
  if (scalesInput && scalesInput.const && scalesInput.const.size > 0) {
    const scales = scalesInput.const.numbers();
    axes.forEach((axis, i) => scaleOf.set(axis, scales[i]!));
  } else if (sizesInput) {
    const sizes = c.constInts(sizesInput, node, 'sizes')!;
    const ratios = axes.map((axis, i) => sizes[i]! / xd[axis]!);
    const policy = node.attrString('keep_aspect_ratio_policy', 'stretch');
    const common = policy === 'not_larger' ? Math.min(...ratios) : policy === 'not_smaller' ? Math.max(...ratios) : null;
    axes.forEach((axis, i) => scaleOf.set(axis, common ?? ratios[i]!));
  } else {
    throw unsupportedOp(node, 'its scales or sizes are computed at run time');
  }
  let g = dY[0]!;
  const last = xd.length - 1;
  for (const axis of axes) {
    const scale = scaleOf.get(axis)!;
    if (xd[axis] === yd[axis] && scale === 1) continue;
    const matrix = interpolationMatrix(node, xd[axis]!, yd[axis]!, scale);
    const swap = range(0, xd.length);
    [swap[axis], swap[last]] = [last, axis];
    const moved = axis === last ? g : c.b.transpose(g, swap);
    const applied = c.b.matMul(moved, c.floats(matrix, [yd[axis]!, xd[axis]!], x!));
    g = axis === last ? applied : c.b.transpose(applied, swap);
  }
  return [g, null, null, null];
}
