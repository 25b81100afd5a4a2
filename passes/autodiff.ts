// autodiff: reverse-mode differentiation of an ONNX graph into default-domain ops only, so the
// backward pass runs in any ONNX runtime (no com.microsoft gradient ops, no training build).
//
// Math: for y = f(x) and a cotangent ȳ = ∂L/∂y, the vector-Jacobian product x̄ = ȳ·∂f/∂x is
// computed node by node in reverse topological order (the chain rule). A value read by several
// nodes receives the sum of their contributions. Only nodes on a path from a `wrt` value to a
// seed are differentiated; integer, bool and shape/index inputs get no gradient.
//
// Each op has one small rule (gradient-rules.ts; Conv, ConvTranspose, pooling and Resize in
// conv-gradients.ts) written as if shapes matched; broadcasting is undone in one place
// (`unbroadcast`). Shapes are static (call refreshShapes first), so every shape and index is an
// int64 constant rather than a Shape→Gather chain. Backward values are named `<value>.grad` and
// backward nodes `<forward node>.grad/<Op>`.

import { ErrorCodes, userError } from '../compiler/diagnostics.js';
import type { Model, Node, Value } from '../compiler/ir.js';
import { OpBuilder } from '../compiler/op-builder.js';
import { inferShapes } from '../compiler/shape-inference.js';
import { DataType, Tensor } from '../compiler/tensor.js';
import { GRADIENT_RULES } from './gradient-rules.js';

export interface AutodiffOptions {
  /** Gradients of some forward values given as graph values (e.g. d loss / d logits). */
  seeds: { value: Value; grad: Value }[];
  /** Values to differentiate with respect to: graph inputs or initializers of float type. */
  wrt: Value[];
}

export interface AutodiffResult {
  /** For every wrt value its gradient value (same shape), or null when it does not reach a seed. */
  gradients: Map<Value, Value | null>;
  /** Backward nodes emitted. */
  nodes: number;
}

/** What a gradient rule may use besides the forward node. */
export interface GradContext {
  b: OpBuilder;
  /** True when the value depends on a wrt value, i.e. a gradient into it is wanted. */
  needs(v: Value): boolean;
  /** The static dims of a value (a user error when they are not all known). */
  dims(v: Value): number[];
  /** Sum a gradient of shape `from` down to the shape `to` it was broadcast from. */
  unbroadcast(g: Value, from: readonly number[], to: readonly number[]): Value;
  /** `unbroadcast(g, dims(output), dims(input))`. */
  sumTo(g: Value, output: Value, input: Value): Value;
  /** A scalar of `like`'s float type. */
  scalar(value: number, like: Value): Value;
  /** A float tensor of `like`'s type (float32 or double) with the given dims. */
  floats(values: ArrayLike<number>, dims: number[], like: Value): Value;
  /** A 1-D int64 constant. */
  ints(values: readonly (number | bigint)[]): Value;
  /** A constant integer input as numbers (a user error when it is computed at run time). */
  constInts(v: Value | null, node: Node, what: string): number[] | null;
  /**
   * ReduceSum or ReduceMean of a rank-`rank` value over `axes`. When the axes hold a trailing run
   * and others ([0, 2, 3] of NCHW) the run goes first: onnxruntime reduces [2, 3] then [0] of a
   * [64, 32, 28, 28] tensor 2.6× as fast as [0, 2, 3] at once (a one-off timing, bench/README.md).
   */
  reduce(op: 'ReduceSum' | 'ReduceMean', x: Value, axes: readonly number[], rank: number, keepdims: boolean): Value;
  /** Zeros of the given dims and `like`'s type (ConstantOfShape). */
  zeros(dims: readonly number[], like: Value): Value;
  /**
   * A rule that applies the gradient of `v`'s producer itself (a MaxPool applying its input Relu's
   * mask at pooled resolution) claims it here: true, and the producer's rule then passes its
   * gradient through, when this rule's node is v's only forward use and v is neither a seed nor a
   * graph output (so this rule's is the only gradient v gets).
   */
  claimProducer(v: Value, node: Node): boolean;
  /** True for a node whose gradient a later node's rule already applied (see claimProducer). */
  claimed(node: Node): boolean;
}

/** Given the forward node and the gradients of its outputs (null where none), the gradients of
 * its inputs (null for non-differentiable inputs or where the rule gives none). */
export type GradRule = (c: GradContext, node: Node, dY: (Value | null)[]) => (Value | null)[];

const FLOAT_TYPES = new Set<number>([DataType.FLOAT, DataType.DOUBLE, DataType.FLOAT16, DataType.BFLOAT16]);

function isFloat(v: Value): boolean {
  const t = v.elemType;
  return t !== null && FLOAT_TYPES.has(t);
}

/** The integers from, from + 1, ..., to − 1 (axis lists). */
export function range(from: number, to: number): number[] {
  const out: number[] = [];
  for (let i = from; i < to; i++) out.push(i);
  return out;
}

export function unsupportedOp(node: Node, why: string, hint = 'rewrite the model without it, or differentiate a smaller part'): Error {
  return userError(ErrorCodes.UNSUPPORTED, `cannot differentiate ${node.label()}: ${why}`, {
    expected: 'an op with a gradient rule (passes/gradient-rules.ts)',
    found: `${node.domain ? `${node.domain}::` : ''}${node.op}`,
    hint,
  });
}

function makeContext(model: Model, b: OpBuilder, reached: Set<Value>, current: () => Node | null, forward: { nodes: Set<Node>; seeds: Set<Value> }): GradContext {
  const claimedNodes = new Set<Node>();
  const graph = model.graph;
  const dims = (v: Value): number[] => {
    const shape = v.shape;
    if (!shape || !shape.every((d) => typeof d === 'number')) {
      const at = current();
      throw userError(ErrorCodes.UNSUPPORTED, `autodiff needs static shapes; ${v.name} has shape ${shape ? `[${shape.join(',')}]` : 'unknown'}${at ? ` at ${at.label()}` : ''}`, {
        expected: 'every value between the parameters and the loss with numeric dims',
        found: shape ? `[${shape.join(',')}]` : 'no shape',
        hint: 'fix the batch dim of the graph inputs and run refreshShapes before autodiff',
      });
    }
    return shape as number[];
  };
  const floats = (values: ArrayLike<number>, shape: number[], like: Value): Value => {
    if (like.elemType === DataType.DOUBLE) {
      return graph.addInitializer(`${b.namePrefix}/const`, Tensor.fromTyped(DataType.DOUBLE, shape, Float64Array.from(values)));
    }
    if (like.elemType !== DataType.FLOAT) throw unsupportedOp(current()!, `gradients of ${like.name} would need ${like.elemType} constants; only float32 and double are supported`);
    return b.floatConst(values, shape, `${b.namePrefix}/const`);
  };
  const ints = (values: readonly (number | bigint)[]): Value => b.int64Const(values, `${b.namePrefix}/const`);
  const reduce = (op: 'ReduceSum' | 'ReduceMean', x: Value, axes: readonly number[], rank: number, keepdims: boolean): Value => {
    const sorted = axes.map((a) => (a + rank) % rank).sort((p, q) => p - q);
    let first = sorted.length;
    while (first > 0 && sorted[first - 1] === rank - sorted.length + first - 1) first--;
    if (first === 0 || first === sorted.length) return b.reduce(op, x, ints(sorted), keepdims);
    const inner = b.reduce(op, x, ints(sorted.slice(first)), true);
    return b.reduce(op, inner, ints(keepdims ? sorted.slice(0, first) : sorted), keepdims);
  };
  const unbroadcast = (g: Value, from: readonly number[], to: readonly number[]): Value => {
    if (from.length === to.length && from.every((d, i) => d === to[i])) return g;
    const lead = from.length - to.length;
    const axes: number[] = [];
    for (let i = 0; i < from.length; i++) {
      if (i < lead || (to[i - lead] === 1 && from[i] !== 1)) axes.push(i);
    }
    // an empty axes input would reduce everything: emit no ReduceSum when nothing is broadcast
    let out = axes.length > 0 ? reduce('ReduceSum', g, axes, from.length, true) : g;
    if (lead !== 0) out = b.reshape(out, ints(to));
    return out;
  };
  return {
    b,
    needs: (v) => reached.has(v),
    dims,
    unbroadcast,
    sumTo: (g, output, input) => unbroadcast(g, dims(output), dims(input)),
    reduce,
    scalar: (value, like) => floats([value], [], like),
    floats,
    ints,
    constInts: (v, node, what) => {
      if (v === null) return null;
      if (!v.const) throw unsupportedOp(node, `its ${what} (${v.name}) is computed at run time`, 'make it a constant (constant folding) before autodiff');
      return v.const.numbers();
    },
    claimProducer: (v, node) => {
      const uses = v.uses.filter((u) => forward.nodes.has(u.node));
      const only = uses.length === 1 && uses[0]!.node === node && !forward.seeds.has(v) && !model.graph.outputs.includes(v);
      if (only && v.producer) claimedNodes.add(v.producer);
      return only && v.producer !== null;
    },
    claimed: (node) => claimedNodes.has(node),
    zeros: (shape, like) => {
      const value = like.elemType === DataType.DOUBLE
        ? Tensor.fromTyped(DataType.DOUBLE, [1], Float64Array.of(0))
        : Tensor.float32([1], [0]);
      return b.op1('ConstantOfShape', [ints(shape)], { value });
    },
  };
}

/** Appends the backward pass to model.graph (which must have default-domain opset ≥ 18 and
 *  static shapes on every value reached; call refreshShapes/inferShapes first). */
export function autodiff(model: Model, opts: AutodiffOptions): AutodiffResult {
  const graph = model.graph;
  const opset = model.opset('');
  if (opset < 18) {
    throw userError(ErrorCodes.UNSUPPORTED, `autodiff needs default-domain opset 18 or newer; the model imports opset ${opset}`, {
      expected: 'opset >= 18', found: `opset ${opset}`, hint: 'upgrade the model first (passes/upgrade-opset.ts upgradeOpset(model, 18))',
    });
  }
  for (const w of opts.wrt) {
    if (!(graph.inputs.includes(w) || w.isInitializer) || !isFloat(w)) {
      throw new Error(`autodiff: ${w.name} is not a float graph input or initializer`);
    }
  }
  const nodesBefore = graph.nodes.length;
  const forwardNodes = new Set(graph.nodes);

  // values that depend on a wrt value (through float edges only) ...
  const reached = new Set<Value>(opts.wrt);
  for (const node of graph.nodes) {
    if (!node.inputs.some((v) => v !== null && reached.has(v))) continue;
    for (const o of node.outputs) if (isFloat(o)) reached.add(o);
  }
  // ... and nodes with such an input and an output on the way to a seed, last first
  const reaching = new Set<Value>(opts.seeds.map((s) => s.value));
  const needed: Node[] = [];
  for (let i = graph.nodes.length - 1; i >= 0; i--) {
    const node = graph.nodes[i]!;
    if (!node.outputs.some((o) => reaching.has(o))) continue;
    for (const v of node.inputs) if (v) reaching.add(v);
    if (node.inputs.some((v) => v !== null && reached.has(v)) && node.outputs.some((o) => reached.has(o) && reaching.has(o))) needed.push(node);
  }
  const b = new OpBuilder(graph, opset);
  let current: Node | null = null;
  const c = makeContext(model, b, reached, () => current, { nodes: forwardNodes, seeds: new Set(opts.seeds.map((s) => s.value)) });
  // refuse before emitting anything: ops without a rule, values without static shapes
  for (const node of needed) {
    if ((node.domain !== '' && node.domain !== 'ai.onnx') || !GRADIENT_RULES[node.op]) {
      throw unsupportedOp(node, 'no gradient rule for this op');
    }
    current = node;
    for (const v of [...node.inputs, ...node.outputs]) if (v && reached.has(v)) c.dims(v);
  }
  const contributions = new Map<Value, Value[]>();
  const contribute = (v: Value, g: Value): void => {
    const list = contributions.get(v);
    if (list) list.push(g);
    else contributions.set(v, [g]);
  };
  /** Backward values renamed `<value>.grad`, and the value each is named after. */
  const namedAfter = new Map<Value, Value>();
  const emitted = (v: Value): boolean => v.producer !== null && !forwardNodes.has(v.producer);
  /** The gradient of v: its one contribution or their Sum (emitted now, after the last one). */
  const gradientOf = (v: Value): Value | null => {
    const list = contributions.get(v);
    if (!list) return null;
    b.namePrefix = `${v.name}.grad`;
    const g = list.length === 1 ? list[0]! : b.op1('Sum', list);
    if (emitted(g) && !namedAfter.has(g)) {
      g.name = graph.uniqueName(`${v.name}.grad`);
      namedAfter.set(g, v);
    }
    contributions.set(v, [g]);
    return g;
  };

  for (const seed of opts.seeds) {
    if (reached.has(seed.value)) contribute(seed.value, seed.grad);
  }
  for (const node of needed) {
    const dY = node.outputs.map((o) => (reached.has(o) ? gradientOf(o) : null));
    if (dY.every((g) => g === null)) continue;
    current = node;
    b.namePrefix = `${node.name || node.outputs[0]!.name}.grad`;
    const dX = GRADIENT_RULES[node.op]!(c, node, dY);
    node.inputs.forEach((input, i) => {
      const g = dX[i];
      if (input && g && reached.has(input)) contribute(input, g);
    });
  }
  current = null;

  // every wrt value gets a gradient of its own, named after it (a shared or forward value, such
  // as a seed passed through unchanged, is copied by an Identity), so each can be a graph output
  const gradients = new Map<Value, Value | null>();
  for (const w of opts.wrt) {
    const g = gradientOf(w);
    if (g && namedAfter.get(g) !== w) {
      b.namePrefix = `${w.name}.grad`;
      gradients.set(w, b.op1('Identity', [g], {}, { outputNames: [`${w.name}.grad`] }));
    } else {
      gradients.set(w, g);
    }
  }
  inferShapes(model);
  for (const [w, g] of gradients) {
    if (g && g.shape && w.shape && g.shape.join(',') !== w.shape.join(',')) {
      throw new Error(`autodiff: the gradient of ${w.name} has shape [${g.shape.join(',')}], expected [${w.shape.join(',')}]`);
    }
  }
  return { gradients, nodes: graph.nodes.length - nodesBefore };
}
