// fold-constants: turn what is constant in fact into constants couple-channels can cut.
//
// PyTorch's exporter deduplicates equal initializers (zero biases, equal norm scales, repeated
// blocks' weights) and feeds the copies through `Identity` nodes, so one tensor reaches several
// layers and the layers would have to be cut alike, or be pinned. An Identity of a constant is
// that constant: each such output becomes an initializer of its own (sharing the stored bytes
// until a rate cuts it), so every consumer is cut by its own channels. Likewise for the other
// ops an export leaves on constants when constant folding is off (Transpose(W) before a MatMul,
// Unsqueeze of a bias): their outputs become initializers, evaluated here.
//
// Reshape targets are built at run time from Shape → Gather → Unsqueeze → Concat so the batch
// stays dynamic. Shape inference folds those chains element by element (a number, or a symbol
// such as the batch dim). A target whose elements are numbers, except symbols that equal the
// input's dim at the same position (written 0: copy that dim) and at most one other unknown
// (written -1: inferred from the element count), is the same at every batch size: it becomes a
// constant, so the channel entry is one couple-channels can rewrite at each rate. The chain
// nodes nothing else reads are removed.
//
// Fused projections: attention computes q, k and v with one MatMul by W[D, 3D] (plus a bias)
// and cuts its output with three Slices on the last axis (a Split before opset 10). Each part
// [s, e) equals a MatMul by the columns W[:, s:e] (and bias[s:e]): out[..., j] =
// Σ_d x[..., d]·W[d, j] + b[j] reads column j only. Split that way, q, k and v are layers of
// their own whose heads can be cut.

import type { Model, Node, Value } from '../compiler/ir.js';
import { OpBuilder } from '../compiler/op-builder.js';
import { constValue, inferShapes, type KnownValues } from '../compiler/shape-inference.js';
import { Tensor, type TypedArray } from '../compiler/tensor.js';
import { gatherAxis } from '../compiler/tensor-ops.js';

export interface FoldResult {
  /** Outputs of ops on constants only (Identity aliases, Transpose(W), ...) that became initializers. */
  aliases: number;
  /** Fused MatMul projections cut by Slices (or a Split) that became one MatMul per part. */
  projections: number;
  /** Reshape targets computed at run time that became constants. */
  shapes: number;
  /** Nodes removed because nothing read their outputs any more. */
  removed: number;
}

export function foldConstants(model: Model): FoldResult {
  const graph = model.graph;
  const overridable = new Set(graph.inputs);
  let aliases = 0;
  for (const node of [...graph.nodes]) {
    const input = node.inputs[0];
    const output = node.outputs[0];
    if (node.domain !== '' || !input?.const || overridable.has(input) || !output || graph.outputs.includes(output)) continue;
    if (node.inputs.slice(1).some((v) => v && (!v.const || overridable.has(v)))) continue;
    const folded = evaluate(node, input.const);
    if (!folded) continue;
    // the constant keeps the name of the output it replaces (the name users know)
    const constant = graph.addInitializer(output.name, folded, true);
    graph.replaceAllUses(output, constant);
    graph.removeNode(node);
    aliases++;
  }

  let projections = 0;
  const builder = new OpBuilder(graph, model.opset());
  const before = inferShapes(model).known;
  for (const node of [...graph.nodes]) {
    if (node.op === 'MatMul' && node.domain === '' && splitProjection(node, before, builder)) projections++;
  }
  const { known } = inferShapes(model);
  let shapes = 0;
  for (const node of graph.nodes) {
    if (node.op !== 'Reshape' || node.domain !== '') continue;
    const target = node.inputs[1];
    if (!target || target.const) continue;
    const entries = constantTarget(node, target, known);
    if (!entries) continue;
    const constant = graph.addInitializer(`${target.name}_folded`, Tensor.int64([entries.length], entries));
    node.setInput(1, constant);
    shapes++;
  }
  const removed = shapes + projections > 0 ? graph.removeDeadNodes() : 0;
  if (shapes + projections > 0) graph.removeUnusedInitializers();
  return { aliases, projections, shapes, removed };
}

/**
 * The value of a node on a constant: Identity (a copy sharing the bytes), Transpose (an export
 * without constant folding feeds MatMul by Transpose(W)) and the ops that only change dims
 * (Reshape, Flatten, Squeeze, Unsqueeze; their output shape, known from shape inference). Null
 * for anything else.
 */
function evaluate(node: Node, x: Tensor): Tensor | null {
  if (node.op === 'Identity') return x.clone();
  if (node.op === 'Transpose') {
    const perm = node.attrInts('perm') ?? x.dims.map((_, i) => x.dims.length - 1 - i);
    return x.storage.kind === 'string' ? null : transpose(x, perm);
  }
  if (['Reshape', 'Flatten', 'Squeeze', 'Unsqueeze'].includes(node.op)) {
    const dims = node.outputs[0]?.shape;
    if (!dims || dims.some((d) => typeof d !== 'number')) return null;
    const copy = x.clone();
    copy.dims = dims as number[];
    return copy;
  }
  return null;
}

/** out[i₀..] = x[i at perm], row-major: output axis k is input axis perm[k]. */
function transpose(x: Tensor, perm: number[]): Tensor {
  const src = x.view();
  const rank = x.dims.length;
  const outDims = perm.map((p) => x.dims[p]!);
  const inStrides = new Array<number>(rank).fill(1);
  for (let i = rank - 2; i >= 0; i--) inStrides[i] = inStrides[i + 1]! * x.dims[i + 1]!;
  const stride = perm.map((p) => inStrides[p]!);
  const out = new (src.constructor as new (n: number) => TypedArray)(src.length);
  const index = new Array<number>(rank).fill(0);
  let from = 0;
  for (let i = 0; i < out.length; i++) {
    (out as Float32Array)[i] = (src as Float32Array)[from]!;
    for (let k = rank - 1; k >= 0; k--) {
      index[k]!++;
      from += stride[k]!;
      if (index[k]! < outDims[k]!) break;
      from -= stride[k]! * outDims[k]!;
      index[k] = 0;
    }
  }
  return Tensor.fromTyped(x.dtype, outDims, out);
}

/** The constant a run-time Reshape target always equals, or null when it may vary. */
function constantTarget(node: Node, target: Value, known: KnownValues): bigint[] | null {
  const k = known.get(target);
  const inShape = node.inputs[0]?.shape;
  if (!k || k.dims.length !== 1 || !inShape) return null;
  const allowZero = node.attrInt('allowzero', 0) === 1;
  const out: bigint[] = [];
  let inferred = k.data.some((e) => e === -1n);
  for (let i = 0; i < k.data.length; i++) {
    const e = k.data[i];
    if (typeof e === 'bigint') {
      if (allowZero && e === 0n) return null;
      out.push(e);
    } else if (typeof e === 'string' && inShape[i] === e && !allowZero) {
      out.push(0n);
    } else if (!inferred && (e === null || typeof e === 'string')) {
      inferred = true;
      out.push(-1n);
    } else {
      return null;
    }
  }
  return out;
}

/**
 * MatMul(x, W[K, N]) (+ a constant bias[N]) read only by Slices of the last axis with known
 * bounds and step 1, or by one Split of the last axis (and by Shape): each part [s, e) becomes
 * MatMul(x, W[:, s:e]) (+ bias[s:e]).
 * Returns whether it rewrote the projection; the fused MatMul goes when nothing reads it.
 */
function splitProjection(matMul: Node, known: KnownValues, builder: OpBuilder): boolean {
  const graph = builder.graph;
  const [x, w] = matMul.inputs;
  const wDims = w?.const?.dims;
  const product = matMul.outputs[0]!;
  const rank = product.shape?.length;
  if (!x || !wDims || wDims.length !== 2 || rank === undefined || graph.outputs.includes(product)) return false;
  const n = wDims[1]!;
  let out = product;
  let bias: Tensor | null = null;
  let biasFirst = false;
  const users = product.consumers();
  if (users.length === 1 && users[0]!.op === 'Add') {
    const add = users[0]!;
    const other = add.inputs[0] === product ? add.inputs[1] : add.inputs[0];
    if (!other?.const || other.const.dims.length !== 1 || other.const.dims[0] !== n || graph.outputs.includes(add.outputs[0]!)) return false;
    bias = other.const;
    biasFirst = add.inputs[0] !== product;
    out = add.outputs[0]!;
  }
  // Shape reads only the (static) size: the bounds of the Slices are computed from it
  const cuts = out.consumers().filter((c) => c.op !== 'Shape');
  const parts = cuts.length === 1 ? splitParts(cuts[0]!, out, rank, n, known, builder.opset) : sliceParts(cuts, out, rank, n, known);
  if (!parts || parts.length < 2) return false;
  parts.forEach((part, i) => {
    const [start, end] = part.range;
    const columns = Array.from({ length: end - start }, (_, j) => start + j);
    const at = { before: part.node, name: `${matMul.name || '/MatMul'}_part${i}` };
    let y = builder.matMul(x, builder.constant(gatherAxis(w!.const!, 1, columns), `${w!.name}_part${i}`), at);
    if (bias) {
      const b = builder.constant(gatherAxis(bias, 0, columns), `${bias.name || 'bias'}_part${i}`);
      y = biasFirst ? builder.add(b, y, { before: part.node }) : builder.add(y, b, { before: part.node });
    }
    graph.replaceAllUses(part.output, y, { outputs: true });
  });
  return true;
}

interface Part {
  node: Node;
  output: Value;
  range: [number, number];
}

function sliceParts(slices: Node[], v: Value, rank: number, width: number, known: KnownValues): Part[] | null {
  const parts: Part[] = [];
  for (const s of slices) {
    const range = lastAxisRange(s, v, rank, width, known);
    if (!range) return null;
    parts.push({ node: s, output: s.outputs[0]!, range });
  }
  return parts;
}

/** The parts of a Split of the last axis (sizes from the attribute before opset 13, the input from 13; equal without). */
function splitParts(split: Node, v: Value, rank: number, width: number, known: KnownValues, opset: number): Part[] | null {
  if (split.op !== 'Split' || split.inputs[0] !== v) return null;
  const axis = split.attrInt('axis', 0);
  if (axis !== -1 && axis !== rank - 1) return null;
  const given = opset < 13 ? split.attrInts('split') : split.inputs[1] ? constValue(split.inputs[1], known)?.map(Number) : undefined;
  if (given === null) return null;
  const count = split.outputs.length;
  const sizes = given ?? (width % count === 0 ? new Array<number>(count).fill(width / count) : null);
  if (!sizes || sizes.length !== count || sizes.reduce((a, b) => a + b, 0) !== width) return null;
  let start = 0;
  return split.outputs.map((output, i) => {
    const range: [number, number] = [start, start + sizes[i]!];
    start += sizes[i]!;
    return { node: split, output, range };
  });
}

/** [start, end) of a Slice of `v` that cuts only the last axis with step 1, or null. */
function lastAxisRange(s: Node, v: Value, rank: number, width: number, known: KnownValues): [number, number] | null {
  if (s.op !== 'Slice' || s.inputs[0] !== v) return null;
  const attr = (name: string): bigint[] | null | undefined => s.attrInts(name)?.map(BigInt);
  const input = (i: number): bigint[] | null | undefined => (s.inputs[i] ? constValue(s.inputs[i], known) : undefined);
  // attributes before opset 10, inputs from 10
  const starts = attr('starts') ?? input(1);
  const ends = attr('ends') ?? input(2);
  const axes = attr('axes') ?? input(3) ?? [BigInt(rank - 1)];
  const steps = input(4) ?? [1n];
  if (!starts || !ends || !axes || !steps || starts.length !== 1 || ends.length !== 1 || axes.length !== 1 || steps[0] !== 1n) return null;
  const axis = Number(axes[0]!);
  if (axis !== -1 && axis !== rank - 1) return null;
  const clamp = (e: bigint): number => {
    const i = e < 0n ? BigInt(width) + e : e;
    return Number(i < 0n ? 0n : i > BigInt(width) ? BigInt(width) : i);
  };
  const [start, end] = [clamp(starts[0]!), clamp(ends[0]!)];
  return end > start ? [start, end] : null;
}
