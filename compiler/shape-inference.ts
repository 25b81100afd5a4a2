// Shape inference: gives every node output a dtype and a shape so later passes know channel
// counts and spatial sizes. It walks the (topologically sorted) nodes once, applying per-op
// shape rules that follow the ONNX operator specs for the model's opset.
//
// Shape computations exported by PyTorch (`Shape → Gather → Unsqueeze → Concat → Reshape`) are
// folded on the side: small integer tensors whose values are known are tracked in a map, element
// by element, where an element is a number, a symbol (a symbolic dim read by `Shape`, e.g. 'N')
// or unknown. Symbols survive the ops that move elements around and the identities x+0, x*1,
// x/1, so a symbolic batch dim reaches the Reshape target and stays symbolic. The folded values
// never enter the IR: this is an analysis.

import { type Dim, type Model, type Node, type TensorType, type Value } from './ir.js';
import { DataType, type Tensor } from './tensor.js';

/** One element of a known tensor: an exact integer, a float, a symbol, or unknown (null). */
export type Elem = bigint | number | string | null;

/** A small tensor whose elements are (partly) known. Integer and bool elements are bigints. */
export interface KnownValue {
  dtype: number;
  dims: number[];
  data: Elem[];
}

export type KnownValues = Map<Value, KnownValue>;

export interface InferOptions {
  /** Recompute every output type instead of keeping declared ones (after a pass changed shapes). */
  overwrite?: boolean;
}

export interface InferResult {
  /** Nodes with a named output left without a shape (unsupported op, custom domain, data-dependent rank). */
  unknown: Node[];
  /** Values of small tensors folded along the way (shape computations). */
  known: KnownValues;
}

/** Largest tensor the folding tracks; shape computations are far smaller. */
const MAX_KNOWN = 4096;

/**
 * Infer and set `type` on every node output of the main graph. Without `overwrite`, declared
 * dims win and only unknown ranks and dims are filled in; ops it cannot handle keep whatever
 * type they had.
 */
export function inferShapes(model: Model, opts: InferOptions = {}): InferResult {
  const opset = model.opset('');
  const known: KnownValues = new Map();
  const unknown: Node[] = [];
  for (const init of model.graph.initializers) {
    if (!init.type && init.const) init.type = { kind: 'tensor', elemType: init.const.dtype, shape: [...init.const.dims] };
  }
  for (const node of model.graph.nodes) {
    const inferred = node.domain === '' || node.domain === 'ai.onnx' ? safeInfer(node, opset, known) : null;
    let complete = true;
    node.outputs.forEach((out, i) => {
      if (!out.name) return;
      const t = inferred?.[i] ?? null;
      out.type = opts.overwrite ? (t ?? out.type) : mergeTypes(out.type, t);
      if (out.type === null || (out.type.kind === 'tensor' && out.type.shape === null)) complete = false;
    });
    if (!complete) unknown.push(node);
    if (node.domain === '' || node.domain === 'ai.onnx') safeFold(node, opset, known);
  }
  return { unknown, known };
}

function mergeTypes(existing: Value['type'], inferred: TensorType | null): Value['type'] {
  if (!inferred) return existing;
  if (!existing) return inferred;
  if (existing.kind !== 'tensor') return existing;
  const elemType = existing.elemType || inferred.elemType;
  if (!existing.shape) return { ...existing, elemType, shape: inferred.shape };
  if (!inferred.shape || inferred.shape.length !== existing.shape.length) return { ...existing, elemType };
  const shape = existing.shape.map((d, i) => (d === null ? inferred.shape![i]! : d));
  return { ...existing, elemType, shape };
}

function safeInfer(node: Node, opset: number, known: KnownValues): (TensorType | null)[] | null {
  try {
    return inferNode(node, opset, known);
  } catch (e) {
    // the verifier has checked arity and attributes before inference runs: a throw is a bug
    throw new Error(`shape inference failed on ${node.label()}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
}

function safeFold(node: Node, opset: number, known: KnownValues): void {
  try {
    foldNode(node, opset, known);
  } catch {
    // folding is best effort
  }
}

// ---------------------------------------------------------------- value access

function shapeOf(v: Value | null | undefined): Dim[] | null {
  return v?.tensorType?.shape ?? null;
}

function elemOf(v: Value | null | undefined): number {
  return v?.tensorType?.elemType ?? 0;
}

function tt(elemType: number, shape: Dim[] | null): TensorType {
  return { kind: 'tensor', elemType, shape };
}

function isIntType(dtype: number): boolean {
  return [DataType.INT64, DataType.INT32, DataType.INT16, DataType.INT8, DataType.UINT8, DataType.UINT16,
    DataType.UINT32, DataType.UINT64, DataType.BOOL].includes(dtype);
}

function knownFromTensor(t: Tensor): KnownValue | null {
  if (t.size > MAX_KNOWN) return null;
  if (isIntType(t.dtype)) return { dtype: t.dtype, dims: [...t.dims], data: t.bigints() };
  if (t.dtype === DataType.FLOAT || t.dtype === DataType.DOUBLE) return { dtype: t.dtype, dims: [...t.dims], data: t.numbers() };
  return null;
}

/** The known value of `v`: from the folding map, or its constant data when small. */
export function knownValue(v: Value | null | undefined, known?: KnownValues): KnownValue | null {
  if (!v) return null;
  const k = known?.get(v);
  if (k) return k;
  if (v.const) {
    const fromConst = knownFromTensor(v.const);
    if (fromConst && known) known.set(v, fromConst);
    return fromConst;
  }
  return null;
}

/** Integer elements of a small constant or folded tensor when all are known exactly. */
export function constValue(v: Value | null | undefined, known?: KnownValues): bigint[] | null {
  const k = knownValue(v, known);
  if (!k) return null;
  const out: bigint[] = [];
  for (const e of k.data) {
    if (typeof e === 'bigint') out.push(e);
    else if (typeof e === 'number' && Number.isInteger(e)) out.push(BigInt(e));
    else return null;
  }
  return out;
}

function constInts(v: Value | null | undefined, known: KnownValues): number[] | null {
  return constValue(v, known)?.map(Number) ?? null;
}

function constFloats(v: Value | null | undefined, known: KnownValues): number[] | null {
  const k = knownValue(v, known);
  if (!k || k.data.some((e) => typeof e !== 'number' && typeof e !== 'bigint')) return null;
  return k.data.map(Number);
}

function present(v: Value | null | undefined): v is Value {
  return !!v && v.name !== '';
}

// ---------------------------------------------------------------- dim arithmetic

function normAxis(axis: number, rank: number): number {
  return axis < 0 ? axis + rank : axis;
}

/** Multidirectional broadcast of one aligned position: 1s drop out, a number > 1 wins. */
function broadcastDim(dims: Dim[]): Dim {
  let num: number | null = null;
  let sym: string | null = null;
  let unclear = false;
  for (const d of dims) {
    if (d === 1) continue;
    if (typeof d === 'number') num = num === null ? d : Math.max(num, d);
    else if (d === null) unclear = true;
    else if (sym === null) sym = d;
    else if (sym !== d) unclear = true;
  }
  if (num !== null) return num;
  if (unclear) return null;
  return sym ?? 1;
}

function broadcastShapes(shapes: (Dim[] | null)[]): Dim[] | null {
  if (shapes.length === 0 || shapes.some((s) => s === null)) return null;
  const rank = Math.max(...shapes.map((s) => s!.length));
  const out: Dim[] = [];
  for (let i = 0; i < rank; i++) {
    const column: Dim[] = [];
    for (const s of shapes) {
      const j = s!.length - rank + i;
      if (j >= 0) column.push(s![j]!);
    }
    out.push(broadcastDim(column));
  }
  return out;
}

/** Product of dims: exact when all are numbers, a symbol times 1s stays the symbol. */
function dimProduct(dims: Dim[]): Dim {
  let num = 1;
  let sym: string | null = null;
  let symbols = 0;
  for (const d of dims) {
    if (d === 0) return 0;
    if (typeof d === 'number') num *= d;
    else if (d === null) return null;
    else {
      sym = d;
      symbols++;
    }
  }
  if (symbols === 0) return num;
  return symbols === 1 && num === 1 ? sym : null;
}

function dimAdd(a: Dim, b: number): Dim {
  if (b === 0) return a;
  return typeof a === 'number' ? a + b : null;
}

function dimMul(a: Dim, b: number): Dim {
  if (b === 1) return a;
  return typeof a === 'number' ? a * b : null;
}

function dimDiv(a: Dim, b: number): Dim {
  if (b === 1) return a;
  return typeof a === 'number' ? Math.floor(a / b) : null;
}

/** The dim a Reshape -1 stands for: input elements over the other target dims, symbols cancelling. */
function inferredDim(input: Dim[], others: Dim[]): Dim {
  const factor = (dims: Dim[]) => {
    let num = 1;
    const syms: string[] = [];
    for (const d of dims) {
      if (d === null) return null;
      if (typeof d === 'number') num *= d;
      else syms.push(d);
    }
    return { num, syms };
  };
  const a = factor(input);
  const b = factor(others);
  if (!a || !b) return null;
  for (const s of [...b.syms]) {
    const at = a.syms.indexOf(s);
    if (at >= 0) {
      a.syms.splice(at, 1);
      b.syms.splice(b.syms.indexOf(s), 1);
    }
  }
  if (b.syms.length > 0 || b.num === 0) return null;
  if (a.syms.length === 0) return a.num % b.num === 0 ? a.num / b.num : null;
  if (a.syms.length === 1 && a.num === b.num) return a.syms[0]!;
  return null;
}

/** Output size of one spatial axis of a convolution or pooling window. */
function windowOut(input: Dim, kernel: number, stride: number, dilation: number, padBegin: number, padEnd: number,
  autoPad: string, ceilMode: boolean): Dim {
  const extent = (kernel - 1) * dilation + 1;
  if (autoPad === 'SAME_UPPER' || autoPad === 'SAME_LOWER') {
    if (typeof input !== 'number') return stride === 1 ? input : null;
    return Math.ceil(input / stride);
  }
  const valid = autoPad === 'VALID';
  const begin = valid ? 0 : padBegin;
  const pads = valid ? 0 : padBegin + padEnd;
  if (typeof input !== 'number') return extent === 1 && stride === 1 && pads === 0 ? input : null;
  const span = input + pads - extent;
  if (span < 0) return null;
  let out = (ceilMode ? Math.ceil(span / stride) : Math.floor(span / stride)) + 1;
  // the last window must start inside the input or its left padding
  if (ceilMode && (out - 1) * stride >= input + begin) out--;
  return out;
}

// ---------------------------------------------------------------- per-op rules

const UNARY = new Set([
  'Abs', 'Acos', 'Acosh', 'Asin', 'Asinh', 'Atan', 'Atanh', 'Ceil', 'Cos', 'Cosh', 'Elu', 'Erf', 'Exp', 'Floor',
  'HardSigmoid', 'HardSwish', 'Hardmax', 'LeakyRelu', 'Log', 'Mish', 'Neg', 'Reciprocal', 'Relu', 'Round', 'Selu',
  'Shrink', 'Sigmoid', 'Sin', 'Sinh', 'Softplus', 'Softsign', 'Sqrt', 'Tan', 'Tanh', 'ThresholdedRelu', 'Celu',
  'Gelu', 'BitwiseNot', 'Not', 'Sign', 'Clip', 'LRN', 'InstanceNormalization', 'GroupNormalization',
  'MeanVarianceNormalization', 'LpNormalization', 'Softmax', 'LogSoftmax', 'CumSum', 'Trilu', 'ReverseSequence',
  'Scatter', 'ScatterElements', 'ScatterND', 'Swish',
]);

const COMPARE = new Set(['Equal', 'Greater', 'Less', 'GreaterOrEqual', 'LessOrEqual', 'And', 'Or', 'Xor']);
const BROADCAST = new Set(['Add', 'Sub', 'Mul', 'Div', 'Pow', 'Max', 'Min', 'Sum', 'Mean', 'Mod', 'PRelu',
  'BitShift', 'BitwiseAnd', 'BitwiseOr', 'BitwiseXor']);

const REDUCE = new Set(['ReduceMean', 'ReduceSum', 'ReduceMax', 'ReduceMin', 'ReduceProd', 'ReduceL1', 'ReduceL2',
  'ReduceLogSum', 'ReduceLogSumExp', 'ReduceSumSquare']);

/** Output types of one node (null entries where unknown), or null when the op is not understood. */
export function inferNode(node: Node, opset: number, known: KnownValues = new Map()): (TensorType | null)[] | null {
  const x = node.inputs[0];
  const xs = shapeOf(x);
  const xe = elemOf(x);
  const op = node.op;
  if (UNARY.has(op)) return [tt(xe, xs)];
  if (op === 'IsNaN' || op === 'IsInf') return [tt(DataType.BOOL, xs)];
  if (BROADCAST.has(op) || COMPARE.has(op) || op === 'Where') {
    const shape = broadcastShapes(node.inputs.map(shapeOf));
    const elem = COMPARE.has(op) ? DataType.BOOL : op === 'Where' ? elemOf(node.inputs[1]) : xe;
    return [tt(elem, shape)];
  }
  if (REDUCE.has(op)) return [tt(xe, reduceShape(node, opset, known, xs))];
  switch (op) {
    case 'Identity':
      return x?.type?.kind === 'tensor' ? [x.type] : null;
    case 'Cast':
      return [tt(node.attrInt('to', 0), xs)];
    case 'CastLike':
      return [tt(elemOf(node.inputs[1]), xs)];
    case 'Dropout': {
      const maskType = opset >= 10 ? DataType.BOOL : xe;
      return [tt(xe, xs), tt(maskType, xs)];
    }
    case 'BatchNormalization': {
      const channels: Dim[] | null = xs && xs.length >= 2 ? [xs[1]!] : null;
      const statElem = elemOf(node.inputs[3]) || xe;
      return [tt(xe, xs), tt(statElem, channels), tt(statElem, channels), tt(statElem, channels), tt(statElem, channels)];
    }
    case 'LayerNormalization': {
      const axis = xs ? normAxis(node.attrInt('axis', -1), xs.length) : 0;
      const stat = xs ? [...xs.slice(0, axis), ...xs.slice(axis).map(() => 1)] : null;
      const stash = node.attrInt('stash_type', 1);
      return [tt(xe, xs), tt(stash, stat), tt(stash, stat)];
    }
    case 'Conv':
    case 'ConvInteger':
      return [tt(op === 'ConvInteger' ? DataType.INT32 : xe, convShape(node, xs, shapeOf(node.inputs[1])))];
    case 'QLinearConv':
      return [tt(elemOf(node.inputs[7]), convShape(node, xs, shapeOf(node.inputs[3])))];
    case 'ConvTranspose':
      return [tt(xe, convTransposeShape(node, xs, shapeOf(node.inputs[1])))];
    case 'MaxPool':
    case 'AveragePool':
    case 'LpPool': {
      const shape = poolShape(node, xs);
      return [tt(xe, shape), tt(DataType.INT64, shape)];
    }
    case 'GlobalAveragePool':
    case 'GlobalMaxPool':
    case 'GlobalLpPool':
      return [tt(xe, xs ? xs.map((d, i) => (i < 2 ? d : 1)) : null)];
    case 'MaxUnpool':
      return [tt(xe, maxUnpoolShape(node, xs, known))];
    case 'Gemm':
      return [tt(xe, gemmShape(node, xs, shapeOf(node.inputs[1])))];
    case 'MatMul':
      return [tt(xe, matmulShape(xs, shapeOf(node.inputs[1])))];
    case 'MatMulInteger':
      return [tt(DataType.INT32, matmulShape(xs, shapeOf(node.inputs[1])))];
    case 'QLinearMatMul':
      return [tt(elemOf(node.inputs[7]), matmulShape(xs, shapeOf(node.inputs[3])))];
    case 'Flatten': {
      if (!xs) return [tt(xe, null)];
      const axis = normAxis(node.attrInt('axis', 1), xs.length);
      return [tt(xe, [dimProduct(xs.slice(0, axis)), dimProduct(xs.slice(axis))])];
    }
    case 'Reshape':
      return [tt(xe, reshapeShape(node, opset, known, xs))];
    case 'Transpose': {
      if (!xs) return [tt(xe, null)];
      const perm = node.attrInts('perm') ?? xs.map((_, i) => xs.length - 1 - i);
      return [tt(xe, perm.map((p) => xs[p] ?? null))];
    }
    case 'Concat':
      return [tt(xe || elemOf(node.inputs.find(present)), concatShape(node))];
    case 'Split':
      return splitShapes(node, opset, known, xs).map((s) => tt(xe, s));
    case 'Slice':
      return [tt(xe, sliceShape(node, opset, known, xs))];
    case 'Squeeze':
      return [tt(xe, squeezeShape(node, opset, known, xs))];
    case 'Unsqueeze':
      return [tt(xe, unsqueezeShape(node, opset, known, xs))];
    case 'Gather': {
      const is = shapeOf(node.inputs[1]);
      if (!xs || !is) return [tt(xe, null)];
      const axis = normAxis(node.attrInt('axis', 0), xs.length);
      return [tt(xe, [...xs.slice(0, axis), ...is, ...xs.slice(axis + 1)])];
    }
    case 'GatherElements':
      return [tt(xe, shapeOf(node.inputs[1]))];
    case 'GatherND':
      return [tt(xe, gatherNDShape(node, xs, shapeOf(node.inputs[1])))];
    case 'Shape': {
      if (!xs) return [tt(DataType.INT64, [null])];
      const [start, end] = shapeRange(node, opset, xs.length);
      return [tt(DataType.INT64, [Math.max(0, end - start)])];
    }
    case 'Size':
      return [tt(DataType.INT64, [])];
    case 'Expand': {
      const target = knownValue(node.inputs[1], known);
      const targetShape = target ? target.data.map(elemToDim) : lengthOnly(shapeOf(node.inputs[1]));
      return [tt(xe, targetShape ? broadcastShapes([xs, targetShape]) : null)];
    }
    case 'Tile': {
      const repeats = constInts(node.inputs[1], known);
      if (!xs) return [tt(xe, null)];
      return [tt(xe, xs.map((d, i) => (repeats ? dimMul(d, repeats[i]!) : null)))];
    }
    case 'Pad':
      return [tt(xe, padShape(node, opset, known, xs))];
    case 'Resize':
    case 'Upsample':
      return [tt(xe, resizeShape(node, opset, known, xs))];
    case 'ConstantOfShape': {
      const value = node.attrTensor('value');
      const target = knownValue(x, known);
      const shape = target ? target.data.map(elemToDim) : lengthOnly(xs);
      return [tt(value?.dtype ?? DataType.FLOAT, shape)];
    }
    case 'Constant':
      return [constantType(node)];
    case 'Range': {
      const [start, limit, delta] = [0, 1, 2].map((i) => constFloats(node.inputs[i], known)?.[0]);
      const count = start !== undefined && limit !== undefined && delta !== undefined && delta !== 0
        ? Math.max(Math.ceil((limit - start) / delta), 0) : null;
      return [tt(xe, [count])];
    }
    case 'ArgMax':
    case 'ArgMin': {
      if (!xs) return [tt(DataType.INT64, null)];
      const axis = normAxis(node.attrInt('axis', 0), xs.length);
      const keep = node.attrInt('keepdims', 1) !== 0;
      return [tt(DataType.INT64, keep ? xs.map((d, i) => (i === axis ? 1 : d)) : xs.filter((_, i) => i !== axis))];
    }
    case 'TopK': {
      if (!xs) return [tt(xe, null), tt(DataType.INT64, null)];
      const axis = normAxis(node.attrInt('axis', -1), xs.length);
      const k = opset >= 10 ? constInts(node.inputs[1], known)?.[0] ?? null : node.attrInt('k') ?? null;
      const shape = xs.map((d, i) => (i === axis ? k : d));
      return [tt(xe, shape), tt(DataType.INT64, shape)];
    }
    case 'Einsum':
      return [tt(xe, einsumShape(node))];
    case 'DepthToSpace':
    case 'SpaceToDepth': {
      if (!xs || xs.length !== 4) return [tt(xe, null)];
      const b = node.attrInt('blocksize', 1);
      const [n, c, h, w] = xs;
      return op === 'DepthToSpace'
        ? [tt(xe, [n!, dimDiv(c!, b * b), dimMul(h!, b), dimMul(w!, b)])]
        : [tt(xe, [n!, dimMul(c!, b * b), dimDiv(h!, b), dimDiv(w!, b)])];
    }
    case 'NonZero':
      return [tt(DataType.INT64, [xs ? xs.length : null, null])];
    case 'NonMaxSuppression':
      return [tt(DataType.INT64, [null, 3])];
    case 'Compress': {
      const axis = node.attrInt('axis');
      if (axis === undefined || !xs) return [tt(xe, [null])];
      const a = normAxis(axis, xs.length);
      return [tt(xe, xs.map((d, i) => (i === a ? null : d)))];
    }
    case 'OneHot': {
      const is = shapeOf(x);
      const depth = constFloats(node.inputs[1], known)?.[0];
      const valueElem = elemOf(node.inputs[2]);
      if (!is) return [tt(valueElem, null)];
      const axis = normAxis(node.attrInt('axis', -1), is.length + 1);
      const shape: Dim[] = [...is];
      shape.splice(axis, 0, depth === undefined ? null : Math.trunc(depth));
      return [tt(valueElem, shape)];
    }
    case 'QuantizeLinear': {
      const zeroPoint = node.inputs[2];
      const elem = present(zeroPoint) ? elemOf(zeroPoint) : node.attrInt('output_dtype', 0) || DataType.UINT8;
      return [tt(elem, xs)];
    }
    case 'DequantizeLinear':
      return [tt(opset >= 19 ? elemOf(node.inputs[1]) || DataType.FLOAT : DataType.FLOAT, xs)];
    case 'DynamicQuantizeLinear':
      return [tt(DataType.UINT8, xs), tt(DataType.FLOAT, []), tt(DataType.UINT8, [])];
    case 'EyeLike':
    case 'RandomNormalLike':
    case 'RandomUniformLike':
    case 'Bernoulli':
      return [tt(node.attrInt('dtype', 0) || xe, xs)];
    case 'RandomNormal':
    case 'RandomUniform': {
      const shape = node.attrInts('shape');
      return [tt(node.attrInt('dtype', DataType.FLOAT), shape ?? null)];
    }
    case 'Multinomial':
      return [tt(node.attrInt('dtype', DataType.INT32), xs ? [xs[0]!, node.attrInt('sample_size', 1)] : null)];
    case 'Det':
      return [tt(xe, xs ? xs.slice(0, -2) : null)];
    case 'GridSample': {
      const gs = shapeOf(node.inputs[1]);
      return [tt(xe, xs && gs ? [xs[0]!, xs[1]!, ...gs.slice(1, -1)] : null)];
    }
    case 'RoiAlign': {
      const rois = shapeOf(node.inputs[1]);
      return [tt(xe, [rois?.[0] ?? null, xs?.[1] ?? null, node.attrInt('output_height', 1), node.attrInt('output_width', 1)])];
    }
    case 'BlackmanWindow':
    case 'HammingWindow':
    case 'HannWindow':
      return [tt(node.attrInt('output_datatype', DataType.FLOAT), [constInts(x, known)?.[0] ?? null])];
    case 'RNN':
    case 'GRU':
    case 'LSTM':
      return recurrentShapes(node, xs).map((s) => tt(xe, s));
    default:
      return null;
  }
}

function elemToDim(e: Elem): Dim {
  if (typeof e === 'bigint') return Number(e);
  if (typeof e === 'number') return Number.isInteger(e) ? e : null;
  return e;
}

/** A 1-D shape tensor of known length but unknown values gives a rank and unknown dims. */
function lengthOnly(shape: Dim[] | null): Dim[] | null {
  if (!shape || shape.length !== 1 || typeof shape[0] !== 'number') return null;
  return new Array<Dim>(shape[0]).fill(null);
}

function constantType(node: Node): TensorType | null {
  const out = node.outputs[0]!;
  if (out.const) return tt(out.const.dtype, [...out.const.dims]);
  const value = node.attrTensor('value');
  if (value) return tt(value.dtype, [...value.dims]);
  if (node.attr('value_float')) return tt(DataType.FLOAT, []);
  if (node.attr('value_int')) return tt(DataType.INT64, []);
  if (node.attr('value_string')) return tt(DataType.STRING, []);
  const floats = node.attrFloats('value_floats');
  if (floats) return tt(DataType.FLOAT, [floats.length]);
  const ints = node.attrInts('value_ints');
  if (ints) return tt(DataType.INT64, [ints.length]);
  const strings = node.attr('value_strings');
  if (strings?.kind === 'strings') return tt(DataType.STRING, [strings.value.length]);
  return null;
}

function windowAttrs(node: Node, spatial: number, kernel: number[]) {
  const pads = node.attrInts('pads') ?? new Array<number>(spatial * 2).fill(0);
  return {
    strides: node.attrInts('strides') ?? new Array<number>(spatial).fill(1),
    dilations: node.attrInts('dilations') ?? new Array<number>(spatial).fill(1),
    padBegin: pads.slice(0, spatial),
    padEnd: pads.slice(spatial, spatial * 2),
    autoPad: node.attrString('auto_pad', 'NOTSET'),
    kernel,
  };
}

function convShape(node: Node, xs: Dim[] | null, ws: Dim[] | null): Dim[] | null {
  const rank = xs?.length ?? ws?.length;
  if (rank === undefined) return null;
  const spatial = rank - 2;
  const kernel = node.attrInts('kernel_shape') ?? ws?.slice(2).map((d) => (typeof d === 'number' ? d : NaN));
  const out: Dim[] = [xs?.[0] ?? null, ws?.[0] ?? null];
  for (let i = 0; i < spatial; i++) {
    if (!xs || !kernel || Number.isNaN(kernel[i])) {
      out.push(null);
      continue;
    }
    const a = windowAttrs(node, spatial, kernel);
    out.push(windowOut(xs[i + 2]!, kernel[i]!, a.strides[i]!, a.dilations[i]!, a.padBegin[i]!, a.padEnd[i]!, a.autoPad, false));
  }
  return out;
}

function convTransposeShape(node: Node, xs: Dim[] | null, ws: Dim[] | null): Dim[] | null {
  const rank = xs?.length ?? ws?.length;
  if (rank === undefined) return null;
  const spatial = rank - 2;
  const group = node.attrInt('group', 1);
  const out: Dim[] = [xs?.[0] ?? null, ws ? dimMul(ws[1]!, group) : null];
  const outputShape = node.attrInts('output_shape');
  if (outputShape) return [...out, ...outputShape.slice(outputShape.length - spatial)];
  const kernel = node.attrInts('kernel_shape') ?? ws?.slice(2).map((d) => (typeof d === 'number' ? d : NaN));
  const outputPadding = node.attrInts('output_padding') ?? new Array<number>(spatial).fill(0);
  for (let i = 0; i < spatial; i++) {
    const input = xs?.[i + 2] ?? null;
    if (!kernel || Number.isNaN(kernel[i]) || typeof input !== 'number') {
      out.push(null);
      continue;
    }
    const a = windowAttrs(node, spatial, kernel);
    if (a.autoPad === 'SAME_UPPER' || a.autoPad === 'SAME_LOWER') {
      out.push(input * a.strides[i]!);
      continue;
    }
    const pads = a.autoPad === 'VALID' ? 0 : a.padBegin[i]! + a.padEnd[i]!;
    out.push(a.strides[i]! * (input - 1) + outputPadding[i]! + (kernel[i]! - 1) * a.dilations[i]! + 1 - pads);
  }
  return out;
}

function poolShape(node: Node, xs: Dim[] | null): Dim[] | null {
  const kernel = node.attrInts('kernel_shape');
  if (!xs) return null;
  if (!kernel) return xs.map((d, i) => (i < 2 ? d : null));
  const spatial = xs.length - 2;
  const a = windowAttrs(node, spatial, kernel);
  const ceilMode = node.attrInt('ceil_mode', 0) !== 0;
  const out: Dim[] = [xs[0]!, xs[1]!];
  for (let i = 0; i < spatial; i++) {
    out.push(windowOut(xs[i + 2]!, kernel[i]!, a.strides[i]!, a.dilations[i]!, a.padBegin[i]!, a.padEnd[i]!, a.autoPad, ceilMode));
  }
  return out;
}

function maxUnpoolShape(node: Node, xs: Dim[] | null, known: KnownValues): Dim[] | null {
  if (present(node.inputs[2])) return constInts(node.inputs[2], known) ?? lengthOnly(shapeOf(node.inputs[2]));
  const kernel = node.attrInts('kernel_shape');
  if (!xs || !kernel) return null;
  const a = windowAttrs(node, xs.length - 2, kernel);
  return xs.map((d, i) => {
    if (i < 2) return d;
    const k = i - 2;
    return typeof d === 'number' ? (d - 1) * a.strides[k]! + kernel[k]! - a.padBegin[k]! - a.padEnd[k]! : null;
  });
}

function gemmShape(node: Node, as: Dim[] | null, bs: Dim[] | null): Dim[] | null {
  const m = as ? (node.attrInt('transA', 0) ? as[1] : as[0]) ?? null : null;
  const n = bs ? (node.attrInt('transB', 0) ? bs[0] : bs[1]) ?? null : null;
  return [m, n];
}

function matmulShape(as: Dim[] | null, bs: Dim[] | null): Dim[] | null {
  if (!as || !bs || as.length === 0 || bs.length === 0) return null;
  const a = as.length === 1 ? [1, as[0]!] : as;
  const b = bs.length === 1 ? [bs[0]!, 1] : bs;
  const batch = broadcastShapes([a.slice(0, -2), b.slice(0, -2)]);
  if (!batch) return null;
  const out: Dim[] = [...batch];
  if (as.length !== 1) out.push(a[a.length - 2]!);
  if (bs.length !== 1) out.push(b[b.length - 1]!);
  return out;
}

function reshapeShape(node: Node, opset: number, known: KnownValues, xs: Dim[] | null): Dim[] | null {
  const target = knownValue(node.inputs[1], known);
  const attrShape = opset < 5 ? node.attrInts('shape') : undefined;
  const elems: Dim[] | null = target ? target.data.map(elemToDim) : attrShape ?? null;
  if (!elems) return lengthOnly(shapeOf(node.inputs[1]));
  const allowZero = node.attrInt('allowzero', 0) !== 0;
  const out = elems.map((d, i) => (d === 0 && !allowZero ? xs?.[i] ?? null : d));
  const minus = out.indexOf(-1);
  if (minus >= 0) out[minus] = xs ? inferredDim(xs, out.filter((_, i) => i !== minus)) : null;
  return out;
}

function concatShape(node: Node): Dim[] | null {
  const shapes = node.inputs.filter(present).map(shapeOf);
  const first = shapes.find((s) => s !== null);
  if (!first) return null;
  const axis = normAxis(node.attrInt('axis', 0), first.length);
  return first.map((_, i) => {
    const column = shapes.map((s) => (s ? s[i] ?? null : null));
    if (i !== axis) return column.find((d) => typeof d === 'number') ?? column.find((d) => d !== null) ?? null;
    let sum = 0;
    let sym: Dim = null;
    for (const d of column) {
      if (typeof d === 'number') sum += d;
      else if (d === null || sym !== null) return null;
      else sym = d;
    }
    return sym === null ? sum : sum === 0 ? sym : null;
  });
}

function splitShapes(node: Node, opset: number, known: KnownValues, xs: Dim[] | null): (Dim[] | null)[] {
  const count = node.outputs.length;
  if (!xs) return new Array(count).fill(null);
  const axis = normAxis(node.attrInt('axis', 0), xs.length);
  const dim = xs[axis]!;
  let sizes: (number | null)[] | null = node.attrInts('split') ?? (opset < 18 || present(node.inputs[1]) ? constInts(node.inputs[1], known) : null);
  if (!sizes && !present(node.inputs[1])) {
    const parts = opset >= 18 ? node.attrInt('num_outputs', count) : count;
    if (typeof dim === 'number') {
      const chunk = Math.ceil(dim / parts);
      sizes = Array.from({ length: count }, (_, i) => Math.max(0, Math.min(chunk, dim - chunk * i)));
    }
  }
  return Array.from({ length: count }, (_, i) => xs.map((d, j) => (j === axis ? sizes?.[i] ?? null : d)));
}

/** Start and stop of one axis of a Slice, clamped as the spec says. */
function sliceRange(dim: number, start: number, end: number, step: number): number {
  if (step > 0) {
    const s = Math.min(Math.max(start < 0 ? start + dim : start, 0), dim);
    const e = Math.min(Math.max(end < 0 ? end + dim : end, 0), dim);
    return Math.max(0, Math.ceil((e - s) / step));
  }
  const s = Math.min(Math.max(start < 0 ? start + dim : start, 0), dim - 1);
  const e = Math.min(Math.max(end < 0 ? end + dim : end, -1), dim - 1);
  return Math.max(0, Math.ceil((s - e) / -step));
}

interface SliceSpec {
  starts: number[] | null;
  ends: number[] | null;
  axes: number[] | null;
  steps: number[] | null;
}

function sliceSpec(node: Node, opset: number, known: KnownValues): SliceSpec {
  if (opset < 10) {
    return { starts: node.attrInts('starts') ?? null, ends: node.attrInts('ends') ?? null, axes: node.attrInts('axes') ?? null, steps: null };
  }
  const get = (i: number) => constValue(node.inputs[i], known)?.map((b) => Number(b)) ?? null;
  return { starts: get(1), ends: get(2), axes: present(node.inputs[3]) ? get(3) : null, steps: present(node.inputs[4]) ? get(4) : null };
}

function sliceShape(node: Node, opset: number, known: KnownValues, xs: Dim[] | null): Dim[] | null {
  if (!xs) return null;
  const spec = sliceSpec(node, opset, known);
  const axesGiven = opset < 10 ? node.attr('axes') !== undefined : present(node.inputs[3]);
  let axes = spec.axes;
  if (!axes && !axesGiven) {
    const n = spec.starts?.length ?? spec.ends?.length ?? lengthOnly(shapeOf(node.inputs[1]))?.length;
    if (n !== undefined) axes = Array.from({ length: n }, (_, i) => i);
  }
  if (!axes) return xs.map(() => null);
  const out = [...xs];
  axes.forEach((rawAxis, k) => {
    const axis = normAxis(rawAxis, xs.length);
    const dim = xs[axis]!;
    const start = spec.starts?.[k];
    const end = spec.ends?.[k];
    const step = spec.steps?.[k] ?? 1;
    if (start === undefined || end === undefined) out[axis] = null;
    else if (typeof dim === 'number') out[axis] = sliceRange(dim, start, end, step);
    else out[axis] = start === 0 && end >= 2 ** 62 && step === 1 ? dim : null;
  });
  return out;
}

function axesOf(node: Node, opset: number, inputFrom: number, known: KnownValues): number[] | 'unknown' | null {
  if (opset < inputFrom) return node.attrInts('axes') ?? null;
  if (!present(node.inputs[1])) return null;
  return constInts(node.inputs[1], known) ?? 'unknown';
}

function squeezeShape(node: Node, opset: number, known: KnownValues, xs: Dim[] | null): Dim[] | null {
  const axes = axesOf(node, opset, 13, known);
  if (!xs || axes === 'unknown') return null;
  if (axes === null) return xs.some((d) => typeof d !== 'number') ? null : xs.filter((d) => d !== 1);
  const drop = new Set(axes.map((a) => normAxis(a, xs.length)));
  return xs.filter((_, i) => !drop.has(i));
}

function unsqueezeShape(node: Node, opset: number, known: KnownValues, xs: Dim[] | null): Dim[] | null {
  const axes = axesOf(node, opset, 13, known);
  if (!xs || axes === 'unknown' || axes === null) return null;
  const rank = xs.length + axes.length;
  const add = new Set(axes.map((a) => normAxis(a, rank)));
  const out: Dim[] = [];
  let next = 0;
  for (let i = 0; i < rank; i++) out.push(add.has(i) ? 1 : xs[next++] ?? null);
  return out;
}

function reduceShape(node: Node, opset: number, known: KnownValues, xs: Dim[] | null): Dim[] | null {
  const keep = node.attrInt('keepdims', 1) !== 0;
  const axes = axesOf(node, opset, node.op === 'ReduceSum' ? 13 : 18, known);
  if (!xs) return null;
  if (axes === 'unknown') return keep ? xs.map(() => null) : null;
  if (axes === null || axes.length === 0) {
    if (node.attrInt('noop_with_empty_axes', 0) !== 0) return xs;
    return keep ? xs.map(() => 1) : [];
  }
  const reduced = new Set(axes.map((a) => normAxis(a, xs.length)));
  if (keep) return xs.map((d, i) => (reduced.has(i) ? 1 : d));
  return xs.filter((_, i) => !reduced.has(i));
}

function gatherNDShape(node: Node, xs: Dim[] | null, is: Dim[] | null): Dim[] | null {
  if (!xs || !is) return null;
  const last = is[is.length - 1];
  if (typeof last !== 'number') return null;
  const batch = node.attrInt('batch_dims', 0);
  return [...is.slice(0, -1), ...xs.slice(batch + last)];
}

function shapeRange(node: Node, opset: number, rank: number): [number, number] {
  if (opset < 15) return [0, rank];
  const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + rank : v, 0), rank);
  return [clamp(node.attrInt('start', 0)), clamp(node.attrInt('end', rank))];
}

function padShape(node: Node, opset: number, known: KnownValues, xs: Dim[] | null): Dim[] | null {
  if (!xs) return null;
  const pads = opset < 11 ? node.attrInts(opset < 2 ? 'paddings' : 'pads') ?? null : constInts(node.inputs[1], known);
  if (!pads) return xs.map(() => null);
  const axes = opset >= 18 && present(node.inputs[3]) ? constInts(node.inputs[3], known) : xs.map((_, i) => i);
  if (!axes) return xs.map(() => null);
  const out = [...xs];
  axes.forEach((a, k) => {
    const axis = normAxis(a, xs.length);
    out[axis] = dimAdd(xs[axis]!, pads[k]! + pads[k + axes.length]!);
  });
  return out;
}

function resizeShape(node: Node, opset: number, known: KnownValues, xs: Dim[] | null): Dim[] | null {
  if (!xs) return null;
  let scales: number[] | null = null;
  let sizes: number[] | null = null;
  if (node.op === 'Upsample') {
    scales = opset < 9 ? node.attrFloats('scales') ?? null : constFloats(node.inputs[1], known);
  } else if (opset < 11) {
    scales = constFloats(node.inputs[1], known);
  } else {
    if (present(node.inputs[3])) sizes = constInts(node.inputs[3], known);
    if (present(node.inputs[2])) scales = constFloats(node.inputs[2], known);
    if (scales && scales.length === 0) scales = null;
    if (!sizes && !scales) return xs.map(() => null);
  }
  const axes = (opset >= 18 && node.attrInts('axes')?.map((a) => normAxis(a, xs.length))) || xs.map((_, i) => i);
  const out = [...xs];
  if (sizes) {
    if (node.attrString('keep_aspect_ratio_policy', 'stretch') !== 'stretch') return xs.map(() => null);
    axes.forEach((a, k) => (out[a] = sizes![k] ?? null));
    return out;
  }
  if (!scales) return xs.map(() => null);
  axes.forEach((a, k) => {
    const d = xs[a]!;
    const s = scales![k]!;
    out[a] = s === 1 ? d : typeof d === 'number' ? Math.floor(d * s + 1e-9) : null;
  });
  return out;
}

function einsumShape(node: Node): Dim[] | null {
  const equation = node.attrString('equation', '').replace(/\s+/g, '');
  const [lhs, rhs] = equation.split('->') as [string, string | undefined];
  const terms = lhs.split(',');
  const letters = new Map<string, Dim[]>();
  const counts = new Map<string, number>();
  const ellipses: Dim[][] = [];
  for (let t = 0; t < terms.length; t++) {
    const shape = shapeOf(node.inputs[t]);
    if (!shape) return null;
    const [before, after] = terms[t]!.includes('...') ? terms[t]!.split('...') as [string, string] : [terms[t]!, null];
    const ellipsisRank = shape.length - before.length - (after?.length ?? 0);
    if (after !== null) ellipses.push(shape.slice(before.length, before.length + ellipsisRank));
    const named = after === null ? before : before + after;
    const dims = after === null ? shape : [...shape.slice(0, before.length), ...shape.slice(before.length + ellipsisRank)];
    [...named].forEach((ch, i) => {
      letters.set(ch, [...(letters.get(ch) ?? []), dims[i]!]);
      counts.set(ch, (counts.get(ch) ?? 0) + 1);
    });
  }
  const ellipsis = ellipses.length > 0 ? broadcastShapes(ellipses) : [];
  if (!ellipsis) return null;
  const output = rhs ?? (ellipses.length ? '...' : '') + [...counts].filter(([, c]) => c === 1).map(([ch]) => ch).sort().join('');
  const out: Dim[] = [];
  const [b, a] = output.includes('...') ? output.split('...') as [string, string] : [output, null];
  for (const ch of b) out.push(broadcastDim(letters.get(ch) ?? [null]));
  if (a !== null) {
    out.push(...ellipsis);
    for (const ch of a) out.push(broadcastDim(letters.get(ch) ?? [null]));
  }
  return out;
}

function recurrentShapes(node: Node, xs: Dim[] | null): (Dim[] | null)[] {
  const hidden = node.attrInt('hidden_size') ?? null;
  const directions = node.attrString('direction', 'forward') === 'bidirectional' ? 2 : 1;
  const batchFirst = node.attrInt('layout', 0) !== 0;
  const seq = xs ? xs[batchFirst ? 1 : 0]! : null;
  const batch = xs ? xs[batchFirst ? 0 : 1]! : null;
  const y: Dim[] = batchFirst ? [batch, seq, directions, hidden] : [seq, directions, batch, hidden];
  const state: Dim[] = batchFirst ? [batch, directions, hidden] : [directions, batch, hidden];
  return [y, state, state];
}

// ---------------------------------------------------------------- folding of known values

function setKnown(known: KnownValues, v: Value | undefined, k: KnownValue | null): void {
  if (v && v.name && k && k.data.length <= MAX_KNOWN) known.set(v, k);
}

function numericShape(v: Value | undefined): number[] | null {
  const s = shapeOf(v);
  return s && s.every((d) => typeof d === 'number') ? (s as number[]) : null;
}

function stridesOf(dims: number[]): number[] {
  const strides = new Array<number>(dims.length).fill(1);
  for (let i = dims.length - 2; i >= 0; i--) strides[i] = strides[i + 1]! * dims[i + 1]!;
  return strides;
}

function count(dims: number[]): number {
  return dims.reduce((a, b) => a * b, 1);
}

/** Elementwise map over broadcast inputs. */
function broadcastFold(inputs: KnownValue[], dtype: number, f: (elems: Elem[]) => Elem): KnownValue | null {
  const dims = broadcastShapes(inputs.map((k) => k.dims));
  if (!dims || dims.some((d) => typeof d !== 'number')) return null;
  const outDims = dims as number[];
  const total = count(outDims);
  if (total > MAX_KNOWN) return null;
  const sources = inputs.map((k) => {
    const pad = outDims.length - k.dims.length;
    const strides = stridesOf(k.dims);
    return outDims.map((_, i) => (i < pad || k.dims[i - pad] === 1 ? 0 : strides[i - pad]!));
  });
  const outStrides = stridesOf(outDims);
  const data: Elem[] = new Array(total);
  for (let flat = 0; flat < total; flat++) {
    const elems = inputs.map((k, j) => {
      let at = 0;
      for (let i = 0; i < outDims.length; i++) at += Math.floor(flat / outStrides[i]!) % outDims[i]! * sources[j]![i]!;
      return k.data[at] ?? null;
    });
    data[flat] = f(elems);
  }
  return { dtype, dims: outDims, data };
}

function arith(op: string, a: Elem, b: Elem): Elem {
  if (typeof a === 'bigint' && typeof b === 'bigint') {
    switch (op) {
      case 'Add': return a + b;
      case 'Sub': return a - b;
      case 'Mul': return a * b;
      case 'Div': return b === 0n ? null : a / b;
      case 'Mod': return b === 0n ? null : ((a % b) + b) % b;
      case 'Max': return a > b ? a : b;
      case 'Min': return a < b ? a : b;
      case 'Equal': return BigInt(a === b);
      case 'Less': return BigInt(a < b);
      case 'Greater': return BigInt(a > b);
      case 'LessOrEqual': return BigInt(a <= b);
      case 'GreaterOrEqual': return BigInt(a >= b);
      case 'And': return BigInt(a !== 0n && b !== 0n);
      case 'Or': return BigInt(a !== 0n || b !== 0n);
      default: return null;
    }
  }
  if ((typeof a === 'number' || typeof a === 'bigint') && (typeof b === 'number' || typeof b === 'bigint')) {
    const x = Number(a);
    const y = Number(b);
    switch (op) {
      case 'Add': return x + y;
      case 'Sub': return x - y;
      case 'Mul': return x * y;
      case 'Div': return x / y;
      case 'Pow': return x ** y;
      case 'Max': return Math.max(x, y);
      case 'Min': return Math.min(x, y);
      case 'Equal': return BigInt(x === y);
      case 'Less': return BigInt(x < y);
      case 'Greater': return BigInt(x > y);
      default: return null;
    }
  }
  // symbols: only the identities that keep a dim unchanged
  const isOne = (e: Elem) => e === 1n || e === 1;
  const isZero = (e: Elem) => e === 0n || e === 0;
  if (typeof a === 'string') {
    if ((op === 'Add' || op === 'Sub') && isZero(b)) return a;
    if ((op === 'Mul' || op === 'Div') && isOne(b)) return a;
    if (op === 'Equal' && b === a) return 1n;
  }
  if (typeof b === 'string') {
    if (op === 'Add' && isZero(a)) return b;
    if (op === 'Mul' && isOne(a)) return b;
  }
  return null;
}

function castElem(e: Elem, to: number): Elem {
  if (e === null || typeof e === 'string') return isIntType(to) && to !== DataType.BOOL ? e : null;
  if (to === DataType.BOOL) return BigInt(Number(e) !== 0);
  if (isIntType(to)) return typeof e === 'bigint' ? e : Number.isFinite(e) ? BigInt(Math.trunc(e)) : null;
  if (to === DataType.FLOAT || to === DataType.DOUBLE) return Number(e);
  return null;
}

function unaryElem(op: string, e: Elem): Elem {
  if (typeof e === 'bigint') {
    switch (op) {
      case 'Neg': return -e;
      case 'Abs': return e < 0n ? -e : e;
      case 'Not': return BigInt(e === 0n);
      case 'Floor': case 'Ceil': case 'Round': return e;
      default: return null;
    }
  }
  if (typeof e === 'number') {
    switch (op) {
      case 'Neg': return -e;
      case 'Abs': return Math.abs(e);
      case 'Floor': return Math.floor(e);
      case 'Ceil': return Math.ceil(e);
      case 'Sqrt': return Math.sqrt(e);
      default: return null;
    }
  }
  return null;
}

function sliceFold(k: KnownValue, spec: SliceSpec): KnownValue | null {
  if (!spec.starts || !spec.ends) return null;
  const axes = spec.axes ?? spec.starts.map((_, i) => i);
  const begin = k.dims.map(() => 0);
  const step = k.dims.map(() => 1);
  const outDims = [...k.dims];
  axes.forEach((raw, j) => {
    const axis = normAxis(raw, k.dims.length);
    const dim = k.dims[axis]!;
    const st = spec.steps?.[j] ?? 1;
    let s = spec.starts![j]!;
    s = s < 0 ? s + dim : s;
    s = st > 0 ? Math.min(Math.max(s, 0), dim) : Math.min(Math.max(s, 0), dim - 1);
    begin[axis] = s;
    step[axis] = st;
    outDims[axis] = sliceRange(dim, spec.starts![j]!, spec.ends![j]!, st);
  });
  const inStrides = stridesOf(k.dims);
  const outStrides = stridesOf(outDims);
  const total = count(outDims);
  const data: Elem[] = new Array(total);
  for (let flat = 0; flat < total; flat++) {
    let at = 0;
    for (let i = 0; i < outDims.length; i++) {
      const coord = Math.floor(flat / outStrides[i]!) % outDims[i]!;
      at += (begin[i]! + coord * step[i]!) * inStrides[i]!;
    }
    data[flat] = k.data[at] ?? null;
  }
  return { dtype: k.dtype, dims: outDims, data };
}

function gatherFold(k: KnownValue, indices: KnownValue, axisAttr: number): KnownValue | null {
  const axis = normAxis(axisAttr, k.dims.length);
  const outer = count(k.dims.slice(0, axis));
  const inner = count(k.dims.slice(axis + 1));
  const dim = k.dims[axis]!;
  const data: Elem[] = [];
  for (let o = 0; o < outer; o++) {
    for (const raw of indices.data) {
      if (typeof raw !== 'bigint') return null;
      const idx = Number(raw) < 0 ? Number(raw) + dim : Number(raw);
      for (let i = 0; i < inner; i++) data.push(k.data[(o * dim + idx) * inner + i] ?? null);
    }
  }
  return { dtype: k.dtype, dims: [...k.dims.slice(0, axis), ...indices.dims, ...k.dims.slice(axis + 1)], data };
}

function concatFold(parts: KnownValue[], axisAttr: number): KnownValue | null {
  const rank = parts[0]!.dims.length;
  const axis = normAxis(axisAttr, rank);
  const outer = count(parts[0]!.dims.slice(0, axis));
  const data: Elem[] = [];
  for (let o = 0; o < outer; o++) {
    for (const p of parts) {
      const chunk = count(p.dims.slice(axis));
      data.push(...p.data.slice(o * chunk, (o + 1) * chunk));
    }
  }
  const dims = [...parts[0]!.dims];
  dims[axis] = parts.reduce((s, p) => s + p.dims[axis]!, 0);
  return { dtype: parts[0]!.dtype, dims, data };
}

function reduceFold(op: string, k: KnownValue): Elem {
  let acc: Elem = op === 'ReduceProd' ? 1n : op === 'ReduceSum' ? 0n : null;
  if (typeof acc === 'bigint' && k.dtype !== DataType.INT64 && k.dtype !== DataType.INT32) acc = Number(acc);
  for (const e of k.data) {
    if (acc === null) acc = e;
    else if (op === 'ReduceProd') acc = arith('Mul', acc, e);
    else if (op === 'ReduceSum') acc = arith('Add', acc, e);
    else if (op === 'ReduceMax') acc = arith('Max', acc, e);
    else if (op === 'ReduceMin') acc = arith('Min', acc, e);
    else return null;
  }
  return acc;
}

/** Track the value of `node`'s outputs when its inputs are known (shape computations). */
function foldNode(node: Node, opset: number, known: KnownValues): void {
  const out = node.outputs[0];
  const outElem = elemOf(out);
  const input = (i: number) => knownValue(node.inputs[i], known);
  const op = node.op;
  switch (op) {
    case 'Constant': {
      if (out?.const) knownValue(out, known);
      return;
    }
    case 'Shape': {
      const xs = shapeOf(node.inputs[0]);
      if (!xs) return;
      const [start, end] = shapeRange(node, opset, xs.length);
      const data = xs.slice(start, end).map((d) => (typeof d === 'number' ? BigInt(d) : d));
      setKnown(known, out, { dtype: DataType.INT64, dims: [data.length], data });
      return;
    }
    case 'Size': {
      const xs = shapeOf(node.inputs[0]);
      const total = xs ? dimProduct(xs) : null;
      if (typeof total === 'number') setKnown(known, out, { dtype: DataType.INT64, dims: [], data: [BigInt(total)] });
      return;
    }
    case 'Identity':
    case 'Reshape':
    case 'Flatten':
    case 'Squeeze':
    case 'Unsqueeze': {
      const k = input(0);
      const dims = numericShape(out);
      if (k && dims && count(dims) === k.data.length) setKnown(known, out, { dtype: k.dtype, dims, data: k.data });
      return;
    }
    case 'Cast': {
      const k = input(0);
      const to = node.attrInt('to', 0);
      if (k) setKnown(known, out, { dtype: to, dims: k.dims, data: k.data.map((e) => castElem(e, to)) });
      return;
    }
    case 'Neg':
    case 'Abs':
    case 'Not':
    case 'Floor':
    case 'Ceil':
    case 'Sqrt': {
      const k = input(0);
      if (k) setKnown(known, out, { dtype: k.dtype, dims: k.dims, data: k.data.map((e) => unaryElem(op, e)) });
      return;
    }
    case 'Gather': {
      const k = input(0);
      const indices = input(1);
      if (k && indices) setKnown(known, out, gatherFold(k, indices, node.attrInt('axis', 0)));
      return;
    }
    case 'Slice': {
      const k = input(0);
      if (k) setKnown(known, out, sliceFold(k, sliceSpec(node, opset, known)));
      return;
    }
    case 'Concat': {
      const parts = node.inputs.filter(present).map((v) => knownValue(v, known));
      if (parts.length > 0 && parts.every((p) => p !== null)) setKnown(known, out, concatFold(parts as KnownValue[], node.attrInt('axis', 0)));
      return;
    }
    case 'Where': {
      const parts = [input(0), input(1), input(2)];
      if (parts.every((p) => p !== null)) {
        setKnown(known, out, broadcastFold(parts as KnownValue[], parts[1]!.dtype, ([c, a, b]) =>
          c === 1n ? a! : c === 0n ? b! : a === b ? a! : null));
      }
      return;
    }
    case 'Expand': {
      const k = input(0);
      const dims = numericShape(out);
      if (k && dims) setKnown(known, out, broadcastFold([k, { dtype: k.dtype, dims, data: new Array(count(dims)).fill(0n) }], k.dtype, ([a]) => a!));
      return;
    }
    case 'ConstantOfShape': {
      const dims = numericShape(out);
      const value = node.attrTensor('value');
      const fill = value ? knownFromTensor(value)?.data[0] ?? null : 0;
      if (dims && count(dims) <= MAX_KNOWN) setKnown(known, out, { dtype: outElem, dims, data: new Array(count(dims)).fill(fill) });
      return;
    }
    case 'Range': {
      const [start, limit, delta] = [input(0), input(1), input(2)].map((k) => k?.data[0]);
      const n = shapeOf(out)?.[0];
      if (typeof n !== 'number' || n > MAX_KNOWN || start === undefined || delta === undefined || limit === undefined) return;
      const data: Elem[] = [];
      for (let i = 0; i < n; i++) data.push(arith('Add', start, arith('Mul', delta, typeof delta === 'bigint' ? BigInt(i) : i)));
      setKnown(known, out, { dtype: outElem, dims: [n], data });
      return;
    }
    default:
      break;
  }
  if (BROADCAST.has(op) || COMPARE.has(op)) {
    if (!node.inputs.every((v) => v && (known.has(v) || v.const))) return;
    const parts = node.inputs.map((v) => knownValue(v, known));
    if (parts.length < 2 || parts.some((p) => p === null)) return;
    const fold = broadcastFold(parts as KnownValue[], outElem || parts[0]!.dtype, (elems) => {
      let acc: Elem = elems[0]!;
      for (let i = 1; i < elems.length; i++) acc = arith(op === 'Sum' ? 'Add' : op, acc, elems[i]!);
      return acc;
    });
    setKnown(known, out, fold);
    return;
  }
  if (op === 'ReduceProd' || op === 'ReduceSum' || op === 'ReduceMax' || op === 'ReduceMin') {
    const k = input(0);
    const dims = numericShape(out);
    // only whole-tensor reductions, the form shape code uses
    if (k && dims && count(dims) === 1 && reduceShape(node, opset, known, k.dims)?.every((d) => d === 1)) {
      setKnown(known, out, { dtype: k.dtype, dims, data: [reduceFold(op, k)] });
    }
  }
}

/**
 * Recompute every intermediate type after a pass changed shapes. Graph outputs keep their
 * declared types (their names, dtypes and symbolic dims are the model's contract).
 */
export function refreshShapes(model: Model): void {
  const graph = model.graph;
  const outputTypes = graph.outputs.map((o) => o.type);
  for (const node of graph.nodes) for (const o of node.outputs) if (!o.const) o.type = null;
  inferShapes(model, { overwrite: true });
  graph.outputs.forEach((o, i) => {
    o.type = outputTypes[i] ?? o.type;
  });
}

export interface ShapeMismatch {
  node: Node;
  output: Value;
  declared: TensorType;
  inferred: TensorType;
}

/**
 * Re-infer every node output without writing anything and list the outputs whose type says
 * something inference contradicts: another dtype, another rank, or another number for a dim
 * both know. What a pass left unknown or symbolic is not a contradiction.
 */
export function shapeMismatches(model: Model): ShapeMismatch[] {
  const opset = model.opset('');
  const known: KnownValues = new Map();
  const out: ShapeMismatch[] = [];
  for (const node of model.graph.nodes) {
    if (node.domain !== '' && node.domain !== 'ai.onnx') continue;
    const inferred = inferNode(node, opset, known);
    node.outputs.forEach((o, i) => {
      const declared = o.tensorType;
      const t = inferred?.[i];
      if (!declared || !t || !o.name) return;
      if (contradicts(declared, t)) out.push({ node, output: o, declared, inferred: t });
    });
    foldNode(node, opset, known);
  }
  return out;
}

function contradicts(a: TensorType, b: TensorType): boolean {
  if (a.elemType !== 0 && b.elemType !== 0 && a.elemType !== b.elemType) return true;
  if (!a.shape || !b.shape) return false;
  if (a.shape.length !== b.shape.length) return true;
  return a.shape.some((d, i) => typeof d === 'number' && typeof b.shape![i] === 'number' && d !== b.shape![i]);
}
