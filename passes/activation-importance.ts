// activation-importance (--importance activation): channel importance from what the channels
// carry on calibration data, for reorder-channels.
//
// Filter norms say little about a trained network: a ReLU unit that never fires keeps a large
// filter, so ordering by weight L1 can put dead units first (shared/notes/training-recipe.md).
// Here the importance of channel j of a tensor x read by a layer is
//   mean over the data of |x_j|  ×  L1 of the layer's weights that read x_j (its outgoing weights),
// (for x after a ReLU, |x_j| is the post-activation value itself), and a slicing unit of a union
// sums this over every entry of every tensor in the union that a layer reads (residual unions
// are read by several layers; a Flatten into a Gemm gives a channel H·W entries). A unit that is
// never active scores 0 and goes last. Readers understood: Conv and ConvTranspose (input 0,
// constant weight), Gemm with transA = 0 and MatMul with a constant right-hand weight.
// The model runs once in onnxruntime, with every such x added as a graph output.

import type { Model, Node, Value } from '../compiler/ir.js';
import { encodeModel } from '../compiler/onnx-codec.js';
import type { FloatTensor } from '../compiler/calibration-data.js';
import { DataType, type Tensor } from '../compiler/tensor.js';
import { l1PerIndex } from '../compiler/tensor-ops.js';
import type { ChannelAnalysis } from './couple-channels.js';
import { resolve, segmentPositions, spaceWidth, type Union } from './channel-space.js';
import type { Partition } from './partition-channels.js';
import { withOutputs, type Runner } from './calibrate-group-norm.js';

/** A layer reading a tracked tensor through constant weights. */
interface Reader {
  x: Value;
  /** L1 of the weights that read each entry of x's channel axis. */
  outgoing: Float64Array;
}

/** L1 of a conv weight [O, I/g, k...] per input channel c: its rows in c's group, column c mod I/g. */
function convOutgoing(w: Tensor, group: number): Float64Array {
  const [out, perGroup] = [w.dims[0]!, w.dims[1]!];
  const kernel = w.size / (out * perGroup);
  const outPerGroup = out / group;
  const data = w.view() as Float32Array;
  const sums = new Float64Array(perGroup * group);
  for (let c = 0; c < sums.length; c++) {
    const g = Math.floor(c / perGroup);
    const column = c % perGroup;
    let s = 0;
    for (let o = g * outPerGroup; o < (g + 1) * outPerGroup; o++) {
      const base = (o * perGroup + column) * kernel;
      for (let i = 0; i < kernel; i++) s += Math.abs(data[base + i]!);
    }
    sums[c] = s;
  }
  return sums;
}

function readerOf(node: Node, analysis: ChannelAnalysis): Reader | null {
  if (node.domain !== '') return null;
  const x = node.inputs[0];
  const w = node.inputs[1]?.const;
  if (!x || !w || w.dtype !== DataType.FLOAT || x.elemType !== DataType.FLOAT) return null;
  const t = analysis.tracked.get(x);
  if (!t) return null;
  const rank = x.shape?.length ?? 0;
  let outgoing: Float64Array;
  if (node.op === 'Conv' && t.axis === 1) outgoing = convOutgoing(w, node.attrInt('group', 1));
  else if (node.op === 'ConvTranspose' && t.axis === 1) outgoing = l1PerIndex(w, 0);
  else if (node.op === 'Gemm' && node.attrInt('transA', 0) === 0 && t.axis === 1) outgoing = l1PerIndex(w, node.attrInt('transB', 0) ? 1 : 0);
  else if (node.op === 'MatMul' && w.dims.length >= 2 && t.axis === rank - 1) outgoing = l1PerIndex(w, w.dims.length - 2);
  else return null;
  return outgoing.length === spaceWidth(t.space) ? { x, outgoing } : null;
}

/** Mean |x| per entry of `axis`. */
function meanAbsolute(x: FloatTensor, axis: number): Float64Array {
  const width = x.dims[axis]!;
  let outer = 1;
  for (let i = 0; i < axis; i++) outer *= x.dims[i]!;
  const inner = x.data.length / (outer * width);
  const sums = new Float64Array(width);
  for (let o = 0; o < outer; o++) {
    for (let c = 0; c < width; c++) {
      const base = (o * width + c) * inner;
      let s = 0;
      for (let i = 0; i < inner; i++) s += Math.abs(x.data[base + i]!);
      sums[c]! += s;
    }
  }
  const n = outer * inner;
  for (let c = 0; c < width; c++) sums[c]! /= n;
  return sums;
}

/**
 * Per sliceable union read by at least one understood layer: the importance of each slicing
 * unit, in the union's current channel order. Unions no such layer reads are left out (their
 * order falls back to weights).
 */
export async function activationImportance(
  model: Model,
  analysis: ChannelAnalysis,
  partition: Partition,
  feeds: Record<string, FloatTensor>,
  run: Runner,
): Promise<Map<Union, Float64Array>> {
  const roots = new Set(partition.unions.map((g) => g.union));
  const readers = model.graph.nodes.map((n) => readerOf(n, analysis)).filter((r): r is Reader => r !== null);
  const scores = new Map<Union, Float64Array>();
  if (readers.length === 0) return scores;
  const names = [...new Set(readers.map((r) => r.x.name))];
  const observed = withOutputs(encodeModel(model, { dropValueInfo: true }), names);
  const values = await run(observed.bytes, feeds, observed.names);
  for (const { x, outgoing } of readers) {
    const t = analysis.tracked.get(x)!;
    const activation = meanAbsolute(values[x.name]!, t.axis);
    const positions = segmentPositions(t.space);
    t.space.forEach((seg, i) => {
      const r = resolve(seg);
      if (!roots.has(r.root)) return;
      let score = scores.get(r.root);
      if (!score) scores.set(r.root, (score = new Float64Array(r.root.fineWidth / r.root.unit)));
      const block = Math.round(r.root.unit * r.perFine);
      for (let u = 0; u < score.length; u++) {
        for (let j = 0; j < block; j++) {
          const at = positions[i]![u * block + j]!;
          score[u]! += activation[at]! * outgoing[at]!;
        }
      }
    });
  }
  return scores;
}
