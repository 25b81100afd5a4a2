// The one way passes emit ops. Several ONNX ops changed their signature between opset 9 and 21
// (Slice, Squeeze/Unsqueeze, the reductions, Clip, Split, Pad, Resize): what was an attribute
// became an input. The builder knows the default-domain opset of the graph it writes into and
// emits the form that opset expects, so a pass says what it wants once (`slice(x, [0], [k], [1])`)
// and gets a valid node at every opset.
//
// Names follow the PyTorch exporter: a node `/Slice` (or the name asked for, made unique) with
// outputs `<node name>_output_<i>`, and constants named after the node and the role they play.
// Constants are never shared between nodes: a shared initializer couples its consumers.

import { ErrorCodes, userError } from './diagnostics.js';
import { Graph, Node, Value, type Attribute, type Dim, type ValueType } from './ir.js';
import { DataType, Tensor } from './tensor.js';

/** What an attribute may be given as. Numbers become ints unless integral-looking floats are
 * expected by name (see FLOAT_ATTRIBUTES) or they have a fraction; pass an `Attribute` to force. */
export type AttrValue =
  | number
  | bigint
  | boolean
  | string
  | readonly number[]
  | readonly bigint[]
  | readonly string[]
  | Tensor
  | Attribute;

export type Attrs = Record<string, AttrValue | undefined>;

/** Placement and naming of an emitted node. */
export interface NodeOptions {
  /** Node name (made unique); outputs are named `<name>_output_<i>`. Default `/<OpType>`. */
  name?: string;
  /** Exact output names (made unique when taken). */
  outputNames?: string[];
  /** Output types; outputs have no type unless given. */
  outputTypes?: (ValueType | null)[];
  /** Insert before this node instead of appending. */
  before?: Node;
}

export interface OpOptions extends NodeOptions {
  /** Number of outputs (default 1). */
  outputs?: number;
  /** Operator domain (default: the ONNX default domain ''). */
  domain?: string;
}

/** Integer lists given as numbers/bigints, or as a runtime int64 value where the opset allows. */
export type Ints = readonly (number | bigint)[];
export type IntsOrValue = Ints | Value;

export type ReduceOp =
  | 'ReduceSum' | 'ReduceMean' | 'ReduceMax' | 'ReduceMin' | 'ReduceProd' | 'ReduceL1' | 'ReduceL2'
  | 'ReduceLogSum' | 'ReduceLogSumExp' | 'ReduceSumSquare';

export interface ConvOptions {
  kernelShape?: number[];
  strides?: number[];
  pads?: number[];
  dilations?: number[];
  group?: number;
}

export interface PoolOptions {
  kernelShape: number[];
  strides?: number[];
  pads?: number[];
  /** MaxPool from opset 10 (any value other than all-ones is refused at 9). */
  dilations?: number[];
  /** From opset 10. */
  ceilMode?: boolean;
  /** AveragePool only. */
  countIncludePad?: boolean;
}

export interface GemmOptions {
  alpha?: number;
  beta?: number;
  transA?: boolean;
  transB?: boolean;
}

export interface ResizeOptions {
  /** One scale per axis of x. */
  scales?: readonly number[];
  /** Target sizes per axis of x (opset ≥ 11). */
  sizes?: Ints;
  mode?: 'nearest' | 'linear' | 'cubic';
  /** Opset ≥ 11. */
  coordinateTransformationMode?: string;
  /** Opset ≥ 11. */
  nearestMode?: string;
}

export interface GroupNormOptions extends NodeOptions {
  /** Rank of x when its type is unknown (default: x's rank, else 4). */
  rank?: number;
  /** Shape of x when its type is unknown; a fully known shape (batch aside) avoids a Shape node. */
  shape?: Dim[];
}

/** Attribute names that hold floats even when given an integral number. */
const FLOAT_ATTRIBUTES = new Set([
  'alpha', 'beta', 'gamma', 'epsilon', 'momentum', 'min', 'max', 'value', 'bias', 'lambd', 'ratio',
  'cubic_coeff_a', 'extrapolation_value', 'scale', 'scales', 'mean', 'seed', 'spatial_scale',
  'threshold', 'high', 'low',
]);

const utf8 = new TextEncoder();

function isAttribute(v: unknown): v is Attribute {
  return typeof v === 'object' && v !== null && !(v instanceof Tensor) && !Array.isArray(v) && 'kind' in v;
}

/** Convert a loosely typed attribute value into the IR form. */
export function toAttribute(name: string, v: AttrValue): Attribute {
  if (v instanceof Tensor) return { kind: 'tensor', value: v };
  if (isAttribute(v)) return v;
  if (typeof v === 'boolean') return { kind: 'int', value: v ? 1n : 0n };
  if (typeof v === 'bigint') return { kind: 'int', value: v };
  if (typeof v === 'string') return { kind: 'string', value: utf8.encode(v) };
  if (typeof v === 'number') {
    if (FLOAT_ATTRIBUTES.has(name) || !Number.isInteger(v)) return { kind: 'float', value: v };
    return { kind: 'int', value: BigInt(v) };
  }
  const list = v as readonly (number | bigint | string)[];
  if (list.length > 0 && typeof list[0] === 'string') {
    return { kind: 'strings', value: (list as readonly string[]).map((s) => utf8.encode(s)) };
  }
  const nums = list as readonly (number | bigint)[];
  const floats = FLOAT_ATTRIBUTES.has(name) || nums.some((n) => typeof n === 'number' && !Number.isInteger(n));
  if (floats) return { kind: 'floats', value: nums.map(Number) };
  return { kind: 'ints', value: nums.map((n) => BigInt(n)) };
}

/** The lowest ir_version a model importing the default domain at `opset` must declare. */
export function minIrVersion(opset: number): number {
  if (opset <= 8) return 3;
  if (opset <= 9) return 4;
  if (opset <= 10) return 5;
  if (opset <= 11) return 6;
  if (opset <= 14) return 7;
  if (opset <= 18) return 8;
  if (opset <= 20) return 9;
  if (opset <= 22) return 10;
  return 11;
}

function refuse(what: string, opset: number, needs: number): never {
  throw userError(ErrorCodes.UNSUPPORTED, `${what} needs opset ${needs} or newer; the model imports opset ${opset}`, {
    expected: `default-domain opset >= ${needs}`,
    found: `opset ${opset}`,
    hint: 'upgrade the model to a newer opset (e.g. with onnx.version_converter) and compile again',
  });
}

export class OpBuilder {
  readonly graph: Graph;
  /** Default-domain opset the emitted ops must conform to. */
  readonly opset: number;
  /** Prefix of default node names (`<prefix>/<OpType>`), e.g. the forward node a backward serves. */
  namePrefix = '';

  constructor(graph: Graph, opset: number) {
    this.graph = graph;
    this.opset = opset;
  }

  // ------------------------------------------------------------------ generic

  /** Emit one node and return its outputs. Attributes that are `undefined` are left out. */
  op(opType: string, inputs: (Value | null)[], attrs: Attrs = {}, opts: OpOptions = {}): Value[] {
    return this.emit(opType, inputs, attrs, opts, this.nodeName(opType, opts));
  }

  /** `op` for single-output ops. */
  op1(opType: string, inputs: (Value | null)[], attrs: Attrs = {}, opts: OpOptions = {}): Value {
    return this.op(opType, inputs, attrs, opts)[0]!;
  }

  private nodeName(opType: string, opts: NodeOptions): string {
    return this.graph.uniqueName(opts.name ?? `${this.namePrefix}/${opType}`);
  }

  /** Emit with an already reserved node name. */
  private emit(opType: string, inputs: (Value | null)[], attrs: Attrs, opts: OpOptions, name: string): Value[] {
    const node = new Node(opType, opts.domain ?? '', name);
    inputs.forEach((v, i) => node.setInput(i, v));
    // trailing omitted optional inputs are dropped, as ONNX writers do
    node.truncateInputs(lastPresent(inputs) + 1);
    for (const [key, v] of Object.entries(attrs)) {
      if (v !== undefined) node.setAttr(key, toAttribute(key, v));
    }
    const count = opts.outputs ?? opts.outputNames?.length ?? 1;
    for (let i = 0; i < count; i++) {
      const outName = this.graph.uniqueName(opts.outputNames?.[i] ?? `${name}_output_${i}`);
      node.addOutput(outName, opts.outputTypes?.[i] ?? null);
    }
    this.graph.addNode(node, opts.before);
    return node.outputs;
  }

  // ------------------------------------------------------------------ graph interface

  /** Append a graph input named `name` (made unique) of the given type. */
  input(name: string, type: ValueType): Value {
    const v = new Value(this.graph.uniqueName(name), type);
    this.graph.inputs.push(v);
    return v;
  }

  // ------------------------------------------------------------------ constants

  /** An initializer holding `data`: a Tensor, float32 numbers, or int64 bigints (1-D). */
  constant(data: Tensor | readonly number[] | readonly bigint[], name = 'const'): Value {
    let tensor: Tensor;
    if (data instanceof Tensor) tensor = data.clone();
    else if (data.length > 0 && typeof data[0] === 'bigint') tensor = Tensor.int64([data.length], data as readonly bigint[]);
    else tensor = Tensor.float32([data.length], data as readonly number[]);
    return this.graph.addInitializer(name, tensor);
  }

  /** An int64 initializer; 1-D unless `dims` says otherwise ([] for a scalar). */
  int64Const(values: Ints, name = 'const', dims: number[] = [values.length]): Value {
    return this.graph.addInitializer(name, Tensor.int64(dims, values));
  }

  /** A float32 initializer of the given dims ([] for a scalar). */
  floatConst(values: ArrayLike<number>, dims: number[], name = 'const'): Value {
    return this.graph.addInitializer(name, Tensor.float32(dims, values));
  }

  private intsInput(v: IntsOrValue, name: string): Value {
    return v instanceof Value ? v : this.int64Const(v, name);
  }

  private intsAttr(v: IntsOrValue, what: string, needs: number): Ints {
    if (v instanceof Value) refuse(`${what} given at run time`, this.opset, needs);
    return v;
  }

  /** A scalar of x's float type (float32 unless x is known to be double). */
  private scalarLike(x: Value, value: number, name: string): Value {
    if (x.elemType === DataType.DOUBLE) {
      return this.graph.addInitializer(name, Tensor.fromTyped(DataType.DOUBLE, [], Float64Array.of(value)));
    }
    return this.floatConst([value], [], name);
  }

  // ------------------------------------------------------------------ opset-dependent ops

  /** Slice: attributes before opset 10, int64 inputs from 10. Steps other than 1 need opset 10. */
  slice(x: Value, starts: IntsOrValue, ends: IntsOrValue, axes?: IntsOrValue, steps?: IntsOrValue, opts: NodeOptions = {}): Value {
    const name = this.nodeName('Slice', opts);
    if (this.opset < 10) {
      if (steps !== undefined && (steps instanceof Value || steps.some((s) => BigInt(s) !== 1n))) {
        refuse('Slice with steps other than 1', this.opset, 10);
      }
      const attrs: Attrs = {
        starts: toBigints(this.intsAttr(starts, 'Slice starts', 10)),
        ends: toBigints(this.intsAttr(ends, 'Slice ends', 10)),
        axes: axes === undefined ? undefined : toBigints(this.intsAttr(axes, 'Slice axes', 10)),
      };
      return this.emit('Slice', [x], attrs, opts, name)[0]!;
    }
    const inputs: (Value | null)[] = [x, this.intsInput(starts, `${name}_starts`), this.intsInput(ends, `${name}_ends`)];
    if (axes !== undefined) inputs.push(this.intsInput(axes, `${name}_axes`));
    if (steps !== undefined) {
      if (axes === undefined) throw new Error('slice: steps need axes');
      inputs.push(this.intsInput(steps, `${name}_steps`));
    }
    return this.emit('Slice', inputs, {}, opts, name)[0]!;
  }

  /** Squeeze: axes attribute before 13, input from 13; no axes squeezes every size-1 dim. */
  squeeze(x: Value, axes?: IntsOrValue, opts: NodeOptions = {}): Value {
    return this.axesOp('Squeeze', x, axes, 13, {}, opts);
  }

  /** Unsqueeze: axes attribute before 13, input from 13. */
  unsqueeze(x: Value, axes: IntsOrValue, opts: NodeOptions = {}): Value {
    return this.axesOp('Unsqueeze', x, axes, 13, {}, opts);
  }

  /** A reduction; axes become an input from 13 for ReduceSum and from 18 for the others. */
  reduce(op: ReduceOp | string, x: Value, axes?: IntsOrValue, keepdims: boolean = true, opts: NodeOptions = {}): Value {
    const opType = op.startsWith('Reduce') ? op : `Reduce${op}`;
    const inputFrom = opType === 'ReduceSum' ? 13 : 18;
    return this.axesOp(opType, x, axes, inputFrom, { keepdims: keepdims ? 1 : 0 }, opts);
  }

  private axesOp(opType: string, x: Value, axes: IntsOrValue | undefined, inputFrom: number, attrs: Attrs, opts: NodeOptions): Value {
    const name = this.nodeName(opType, opts);
    if (this.opset < inputFrom) {
      const axesAttr = axes === undefined ? undefined : toBigints(this.intsAttr(axes, `${opType} axes`, inputFrom));
      return this.emit(opType, [x], { axes: axesAttr, ...attrs }, opts, name)[0]!;
    }
    const inputs: (Value | null)[] = [x];
    if (axes !== undefined) inputs.push(this.intsInput(axes, `${name}_axes`));
    return this.emit(opType, inputs, attrs, opts, name)[0]!;
  }

  /** Clip: min/max attributes before 11, optional scalar inputs from 11. */
  clip(x: Value, min?: number | Value, max?: number | Value, opts: NodeOptions = {}): Value {
    const name = this.nodeName('Clip', opts);
    if (this.opset < 11) {
      if (min instanceof Value || max instanceof Value) refuse('Clip bounds given at run time', this.opset, 11);
      return this.emit('Clip', [x], { min, max }, opts, name)[0]!;
    }
    const bound = (b: number | Value | undefined, role: string): Value | null => {
      if (b === undefined) return null;
      return b instanceof Value ? b : this.scalarLike(x, b, `${name}_${role}`);
    };
    return this.emit('Clip', [x, bound(min, 'min'), bound(max, 'max')], {}, opts, name)[0]!;
  }

  /**
   * Split along `axis` into the given sizes, or into `sizes` equal parts when it is a number.
   * Sizes: attribute before 13, input from 13; equal parts take `num_outputs` from 18.
   */
  split(x: Value, axis: number, sizes: Ints | number, opts: NodeOptions = {}): Value[] {
    const name = this.nodeName('Split', opts);
    if (typeof sizes === 'number') {
      const attrs: Attrs = { axis, num_outputs: this.opset >= 18 ? sizes : undefined };
      return this.emit('Split', [x], attrs, { ...opts, outputs: sizes }, name);
    }
    const outOpts: OpOptions = { ...opts, outputs: sizes.length };
    if (this.opset < 13) return this.emit('Split', [x], { axis, split: toBigints(sizes) }, outOpts, name);
    return this.emit('Split', [x, this.int64Const(sizes, `${name}_split`)], { axis }, outOpts, name);
  }

  /** Pad: pads/value attributes before 11, inputs from 11 (`pads` is [begin..., end...]). */
  pad(x: Value, pads: IntsOrValue, mode: 'constant' | 'reflect' | 'edge' | 'wrap' = 'constant', value?: number, opts: NodeOptions = {}): Value {
    const name = this.nodeName('Pad', opts);
    if (mode === 'wrap' && this.opset < 19) refuse('Pad mode "wrap"', this.opset, 19);
    if (this.opset < 11) {
      const attrs: Attrs = { mode, pads: toBigints(this.intsAttr(pads, 'Pad pads', 11)), value: mode === 'constant' ? value : undefined };
      return this.emit('Pad', [x], attrs, opts, name)[0]!;
    }
    const inputs: (Value | null)[] = [x, this.intsInput(pads, `${name}_pads`)];
    if (mode === 'constant' && value !== undefined) inputs.push(this.scalarLike(x, value, `${name}_value`));
    return this.emit('Pad', inputs, { mode }, opts, name)[0]!;
  }

  /**
   * Resize by scales or to sizes: Upsample(x, scales) at opset 9, Resize(x, scales) at 10,
   * Resize(x, roi, scales[, sizes]) at 11-12 (roi and scales required, possibly empty), and
   * Resize(x, '', scales) / Resize(x, '', '', sizes) from 13.
   */
  resize(x: Value, r: ResizeOptions, opts: NodeOptions = {}): Value {
    if ((r.scales === undefined) === (r.sizes === undefined)) throw new Error('resize: give exactly one of scales and sizes');
    const mode = r.mode ?? 'nearest';
    if (this.opset < 11) {
      if (r.sizes !== undefined) refuse('Resize to target sizes', this.opset, 11);
      if (mode === 'cubic') refuse('Resize mode "cubic"', this.opset, 11);
      const opType = this.opset < 10 ? 'Upsample' : 'Resize';
      const name = this.nodeName(opType, opts);
      return this.emit(opType, [x, this.floatConst(r.scales!, [r.scales!.length], `${name}_scales`)], { mode }, opts, name)[0]!;
    }
    const name = this.nodeName('Resize', opts);
    const attrs: Attrs = {
      coordinate_transformation_mode: r.coordinateTransformationMode,
      mode,
      nearest_mode: r.nearestMode,
    };
    const empty = (role: string): Value => this.floatConst([], [0], `${name}_${role}`);
    const scales = r.scales !== undefined ? this.floatConst(r.scales, [r.scales.length], `${name}_scales`) : null;
    const sizes = r.sizes !== undefined ? this.int64Const(r.sizes, `${name}_sizes`) : null;
    if (this.opset < 13) {
      return this.emit('Resize', [x, empty('roi'), scales ?? empty('scales'), sizes], attrs, opts, name)[0]!;
    }
    return this.emit('Resize', [x, null, scales, sizes], attrs, opts, name)[0]!;
  }

  // ------------------------------------------------------------------ shape ops

  /** Gather with constant indices (a number gives a scalar index, dropping the axis). */
  gather(x: Value, indices: Ints | number | Value, axis = 0, opts: NodeOptions = {}): Value {
    const name = this.nodeName('Gather', opts);
    let idx: Value;
    if (indices instanceof Value) idx = indices;
    else if (typeof indices === 'number') idx = this.int64Const([indices], `${name}_indices`, []);
    else idx = this.int64Const(indices, `${name}_indices`);
    return this.emit('Gather', [x, idx], { axis }, opts, name)[0]!;
  }

  reshape(x: Value, shape: IntsOrValue, opts: NodeOptions = {}): Value {
    const name = this.nodeName('Reshape', opts);
    return this.emit('Reshape', [x, this.intsInput(shape, `${name}_shape`)], {}, opts, name)[0]!;
  }

  shape(x: Value, opts: NodeOptions = {}): Value {
    return this.op1('Shape', [x], {}, opts);
  }

  concat(xs: Value[], axis: number, opts: NodeOptions = {}): Value {
    return this.op1('Concat', xs, { axis }, opts);
  }

  transpose(x: Value, perm: number[], opts: NodeOptions = {}): Value {
    return this.op1('Transpose', [x], { perm }, opts);
  }

  flatten(x: Value, axis = 1, opts: NodeOptions = {}): Value {
    return this.op1('Flatten', [x], { axis }, opts);
  }

  cast(x: Value, to: DataType, opts: NodeOptions = {}): Value {
    return this.op1('Cast', [x], { to: BigInt(to) }, opts);
  }

  // ------------------------------------------------------------------ layers

  /** Conv with every attribute written out (as exporters do) when the kernel rank is known. */
  conv(x: Value, w: Value, b: Value | null = null, c: ConvOptions = {}, opts: NodeOptions = {}): Value {
    const kernelShape = c.kernelShape ?? knownDims(w)?.slice(2);
    const spatial = kernelShape?.length;
    const ones = spatial === undefined ? undefined : new Array<number>(spatial).fill(1);
    const attrs: Attrs = {
      dilations: c.dilations ?? ones,
      group: c.group ?? 1,
      kernel_shape: kernelShape,
      pads: c.pads ?? (spatial === undefined ? undefined : new Array<number>(2 * spatial).fill(0)),
      strides: c.strides ?? ones,
    };
    return this.op1('Conv', b ? [x, w, b] : [x, w], attrs, opts);
  }

  gemm(a: Value, b: Value, c: Value | null = null, g: GemmOptions = {}, opts: NodeOptions = {}): Value {
    const attrs: Attrs = {
      alpha: g.alpha,
      beta: g.beta,
      transA: g.transA === undefined ? undefined : g.transA ? 1 : 0,
      transB: g.transB === undefined ? undefined : g.transB ? 1 : 0,
    };
    return this.op1('Gemm', c ? [a, b, c] : [a, b], attrs, opts);
  }

  matMul(a: Value, b: Value, opts: NodeOptions = {}): Value {
    return this.op1('MatMul', [a, b], {}, opts);
  }

  batchNorm(x: Value, scale: Value, bias: Value, mean: Value, variance: Value, epsilon = 1e-5, momentum = 0.9, opts: NodeOptions = {}): Value {
    return this.op1('BatchNormalization', [x, scale, bias, mean, variance], { epsilon, momentum }, opts);
  }

  instanceNorm(x: Value, scale: Value, bias: Value, epsilon = 1e-5, opts: NodeOptions = {}): Value {
    return this.op1('InstanceNormalization', [x, scale, bias], { epsilon }, opts);
  }

  maxPool(x: Value, p: PoolOptions, opts: NodeOptions = {}): Value {
    return this.op1('MaxPool', [x], this.poolAttrs('MaxPool', p), opts);
  }

  averagePool(x: Value, p: PoolOptions, opts: NodeOptions = {}): Value {
    const attrs = this.poolAttrs('AveragePool', p);
    if (p.countIncludePad !== undefined) attrs.count_include_pad = p.countIncludePad ? 1 : 0;
    return this.op1('AveragePool', [x], attrs, opts);
  }

  private poolAttrs(opType: string, p: PoolOptions): Attrs {
    if (this.opset < 10) {
      if (p.ceilMode) refuse(`${opType} with ceil_mode`, this.opset, 10);
      if (p.dilations?.some((d) => d !== 1)) refuse(`${opType} with dilations`, this.opset, 10);
    }
    if (opType === 'AveragePool' && p.dilations?.some((d) => d !== 1) && this.opset < 19) refuse('AveragePool with dilations', this.opset, 19);
    return {
      ceil_mode: p.ceilMode === undefined || this.opset < 10 ? undefined : p.ceilMode ? 1 : 0,
      dilations: opType === 'MaxPool' && this.opset >= 10 ? p.dilations : undefined,
      kernel_shape: p.kernelShape,
      pads: p.pads,
      strides: p.strides,
    };
  }

  globalAveragePool(x: Value, opts: NodeOptions = {}): Value {
    return this.op1('GlobalAveragePool', [x], {}, opts);
  }

  // ------------------------------------------------------------------ elementwise

  add(a: Value, b: Value, opts: NodeOptions = {}): Value {
    return this.op1('Add', [a, b], {}, opts);
  }

  sub(a: Value, b: Value, opts: NodeOptions = {}): Value {
    return this.op1('Sub', [a, b], {}, opts);
  }

  mul(a: Value, b: Value, opts: NodeOptions = {}): Value {
    return this.op1('Mul', [a, b], {}, opts);
  }

  div(a: Value, b: Value, opts: NodeOptions = {}): Value {
    return this.op1('Div', [a, b], {}, opts);
  }

  relu(x: Value, opts: NodeOptions = {}): Value {
    return this.op1('Relu', [x], {}, opts);
  }

  hardSigmoid(x: Value, alpha = 0.2, beta = 0.5, opts: NodeOptions = {}): Value {
    return this.op1('HardSigmoid', [x], { alpha, beta }, opts);
  }

  // ------------------------------------------------------------------ composites

  /**
   * GroupNorm as PyTorch exports it, valid at every opset from 9:
   * Reshape[0,G,-1] → InstanceNormalization(ones[G], zeros[G]) → Reshape back → Mul γ → Add β.
   * γ and β are per channel: arrays of C numbers (stored as [C,1,...]) or values already shaped
   * to broadcast; null skips the affine step. The reshape back uses a constant when x's shape is
   * known past the batch dim, else Shape(x).
   */
  groupNorm(x: Value, groups: number, gamma: readonly number[] | Value | null, beta: readonly number[] | Value | null, epsilon = 1e-5, opts: GroupNormOptions = {}): Value {
    const base = this.graph.uniqueName(opts.name ?? '/GroupNorm');
    const at: NodeOptions = { before: opts.before };
    const shape = opts.shape ?? x.shape;
    const rank = opts.rank ?? shape?.length ?? 4;
    const grouped = this.reshape(x, [0, groups, -1], { ...at, name: `${base}/Reshape` });
    const ones = this.floatConst(new Array<number>(groups).fill(1), [groups], `${base}.instance_norm.weight`);
    const zeros = this.floatConst(new Array<number>(groups).fill(0), [groups], `${base}.instance_norm.bias`);
    const normed = this.instanceNorm(grouped, ones, zeros, epsilon, { ...at, name: `${base}/InstanceNormalization` });
    const known = shape !== null && shape.length === rank && shape.slice(1).every((d) => typeof d === 'number');
    const backShape: IntsOrValue = known ? [0, ...(shape.slice(1) as number[])] : this.shape(x, { ...at, name: `${base}/Shape` });
    const isLast = gamma === null && beta === null;
    let y = this.reshape(normed, backShape, { ...at, name: `${base}/Reshape_1`, ...(isLast ? lastNames(opts) : {}) });
    const perChannel = (v: readonly number[] | Value, role: string): Value => {
      if (v instanceof Value) return v;
      const dims = [v.length, ...new Array<number>(Math.max(rank - 2, 0)).fill(1)];
      return this.floatConst(v, dims, `${base}.${role}`);
    };
    if (gamma !== null) {
      y = this.mul(y, perChannel(gamma, 'weight'), { ...at, name: `${base}/Mul`, ...(beta === null ? lastNames(opts) : {}) });
    }
    if (beta !== null) {
      y = this.add(y, perChannel(beta, 'bias'), { ...at, name: `${base}/Add`, ...lastNames(opts) });
    }
    return y;
  }
}

/** The dims of a constant or fully typed value. */
function knownDims(v: Value): number[] | undefined {
  if (v.const) return v.const.dims;
  const shape = v.shape;
  if (!shape || !shape.every((d) => typeof d === 'number')) return undefined;
  return shape as number[];
}

function lastNames(opts: NodeOptions): NodeOptions {
  return { outputNames: opts.outputNames, outputTypes: opts.outputTypes };
}

function lastPresent(inputs: (Value | null)[]): number {
  for (let i = inputs.length - 1; i >= 0; i--) if (inputs[i]) return i;
  return -1;
}

function toBigints(v: Ints): bigint[] {
  return v.map((n) => BigInt(n));
}
