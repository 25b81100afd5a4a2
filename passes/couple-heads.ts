// Attention heads for couple-channels: the head is the unit that q, k, v and the output
// projection are cut by.
//
// PyTorch's multi-head attention splits q = [T, B, H·hd] into heads with Reshape [T, B·H, hd]
// (target [T, -1, hd]) and works on the B·H axis: Transpose, q·kᵀ and attn·v (MatMuls batched
// over B·H), Softmax over keys, then merges back with Reshape [T·B, H·hd] before the output
// projection. In row-major order position b·H + h of the B·H axis is head h of sample b, so
// keeping the first h' heads of every sample keeps a whole-head prefix of the channels on both
// sides, and the -1 entries let each Reshape follow the kept head count by itself.
//
// Exports that give heads an axis of their own (Reshape [B, T, H, hd], Transpose to [B, H, T, hd])
// are followed the same way, with the H entry of the target rewritten per rate.
//
// Such an axis is tracked with `heads` set: one position stands for hd channels of the union
// (perFine = channels/hd), and the union is cut in whole heads (unit hd). Its size is not a
// channel count (the batch is folded in), so only the ops below may read it: everything else
// pins. Batched MatMuls couple q with k and the scores with v, so q, k and v keep the same heads.

import type { Node } from '../compiler/ir.js';
import { lcm, resolve, spaceWidth, type Space } from './channel-space.js';
import type { CouplingContext } from './couple-channels.js';
import { coupleRules } from './couple-rules.js';

/** Ops that keep each position of the heads axis where it is (or move the axis: Transpose). */
const KEEPING = new Set(['Transpose', 'Softmax', 'LogSoftmax', 'Cast', 'Identity', 'Dropout', 'Relu', 'Sigmoid', 'Tanh', 'Exp', 'Erf', 'Sqrt', 'Neg']);
const BROADCASTING = new Set(['Add', 'Sub', 'Mul', 'Div', 'Where', 'Max', 'Min']);

/**
 * A head split of a last-axis channel space, tracked as a heads axis:
 *  - Reshape [..., X, H·hd] → [..., X·H, hd] (PyTorch's attention; target entry -1 for X·H, or
 *    the number X·H when X is fixed, rewritten per rate);
 *  - Reshape [..., X, H·hd] → [..., X, H, hd] (the layout of many transformer exports; the H
 *    entry of the target is rewritten per rate unless it is -1).
 * Returns false (touching nothing) when the Reshape is neither.
 */
export function splitHeads(node: Node, ctx: CouplingContext, target: number[]): boolean {
  const t = ctx.get(node.inputs[0]);
  const inShape = node.inputs[0]?.shape;
  const outShape = node.outputs[0]?.shape;
  if (!t || t.heads || !inShape || !outShape || t.space.length !== 1 || t.space[0]!.positions) return false;
  const rank = inShape.length;
  const axis = t.axis;
  const own = outShape.length === rank + 1; // heads get an axis of their own
  if (rank < 2 || axis !== rank - 1 || (outShape.length !== rank && !own) || target.length !== outShape.length) return false;
  const width = inShape[axis];
  const headDim = outShape[outShape.length - 1];
  if (typeof width !== 'number' || typeof headDim !== 'number' || headDim <= 0 || width % headDim !== 0 || width === headDim) return false;
  const unchanged = own ? axis : axis - 1;
  for (let i = 0; i < unchanged; i++) if (outShape[i] === null || outShape[i] !== inShape[i]) return false;
  const headsAxis = own ? axis : axis - 1;
  if (target[outShape.length - 1] !== headDim) return false;
  // a fixed batch X (e.g. 1) gives X·H as a number: rewritten per rate to X·(kept heads)
  const batch = inShape[axis - 1];
  const fixedBatch = !own && typeof batch === 'number' && target[axis - 1] === batch * (width / headDim);
  if (own ? outShape[axis] !== width / headDim || (target[axis] !== -1 && target[axis] !== width / headDim) : target[axis - 1] !== -1 && !fixedBatch) return false;
  const { root, perFine } = resolve(t.space[0]!);
  const finePerHead = headDim / perFine;
  if (!Number.isInteger(finePerHead)) return false;
  root.unit = lcm(root.unit, finePerHead);
  const space = t.space.map((s) => ({ union: s.union, perFine: s.perFine / headDim }));
  if (own && target[axis] !== -1) ctx.analysis.shapeRewrites.push({ node, inputIndex: 1, entry: axis, space });
  if (fixedBatch) ctx.analysis.shapeRewrites.push({ node, inputIndex: 1, entry: axis - 1, space: t.space.map((s) => ({ union: s.union, perFine: (s.perFine * (batch as number)) / headDim })) });
  ctx.track(node.outputs[0], headsAxis, space, true);
  return true;
}

/** The rule for any node that reads a heads axis. */
export function headsRule(node: Node, ctx: CouplingContext): void {
  const tracked = node.inputs.map((v) => ctx.get(v));
  const pinAll = (why: string): void => ctx.pinInputs(node, `${node.label()} ${why}`);
  if (node.domain !== '') return pinAll('reads attention heads in a custom op');
  if (tracked.some((t) => t && !t.heads)) return pinAll('combines attention heads with channels laid out differently');
  if (node.op === 'Shape' || node.op === 'Size') return;
  if (node.op === 'MatMul') return batchedMatMul(node, ctx);
  if (node.op === 'Reshape') return mergeHeads(node, ctx);
  if (BROADCASTING.has(node.op) && !broadcastOnly(node, ctx)) return pinAll('combines attention heads with a tensor that is not broadcast over them');
  if (!KEEPING.has(node.op) && !BROADCASTING.has(node.op)) return pinAll(`reads attention heads merged with the batch axis, which slicec does not follow through ${node.op}`);
  coupleRules[node.op]!(node, ctx);
  for (const o of node.outputs) {
    const t = ctx.get(o);
    if (t) ctx.track(o, t.axis, t.space, true);
  }
}

/** Untracked operands of a broadcasting op have size 1 (or no dim) on the heads axis. */
function broadcastOnly(node: Node, ctx: CouplingContext): boolean {
  const outRank = node.outputs[0]?.shape?.length;
  if (outRank === undefined) return false;
  let axis = -1;
  node.inputs.forEach((v) => {
    const t = ctx.get(v);
    if (t && v?.shape) axis = t.axis + (outRank - v.shape.length);
  });
  return node.inputs.every((v) => {
    if (!v || ctx.get(v)) return true;
    const ds = v.const?.dims ?? v.shape;
    if (!ds) return false;
    const at = axis - (outRank - ds.length);
    return at < 0 || ds[at] === 1;
  });
}

/** q·kᵀ and attn·v: batched over the heads axis, which couples both operands. */
function batchedMatMul(node: Node, ctx: CouplingContext): void {
  const [a, b] = node.inputs;
  const out = node.outputs[0];
  const pin = (why: string): void => ctx.pinInputs(node, `${node.label()} ${why}`);
  const ra = a?.shape?.length;
  const rb = b?.shape?.length;
  const ro = out?.shape?.length;
  if (!a || !b || ra === undefined || rb === undefined || ro === undefined || ra < 2 || rb < 2) return pin('multiplies attention heads of unknown rank');
  const ta = ctx.get(a);
  const tb = ctx.get(b);
  if ((ta && ta.axis >= ra - 2) || (tb && tb.axis >= rb - 2)) return pin('contracts over attention heads');
  const ax = ta ? ta.axis + (ro - ra) : null;
  const bx = tb ? tb.axis + (ro - rb) : null;
  if (ax !== null && bx !== null && ax !== bx) return pin('multiplies heads on different axes');
  const axis = (ax ?? bx)!;
  for (const [v, t, r] of [[a, ta, ra], [b, tb, rb]] as const) {
    if (t) continue;
    const at = axis - (ro - r);
    if (at >= 0 && (v.const?.dims ?? v.shape)?.[at] !== 1) return pin('multiplies attention heads by a tensor that is not split into the same heads');
  }
  const space: Space = ta && tb ? ctx.link(ta.space, tb.space, node.label()) : (ta ?? tb)!.space;
  ctx.track(out, axis, space, true);
}

/** Reshape [..., X·H, R...] → [..., H·R] (heads back into channels, last axis). */
function mergeHeads(node: Node, ctx: CouplingContext): void {
  const t = ctx.get(node.inputs[0])!;
  const inShape = node.inputs[0]?.shape;
  const outShape = node.outputs[0]?.shape;
  const target = node.inputs[1]?.const?.numbers();
  const fail = (why: string): void => ctx.pin(t.space, `${node.label()} ${why}`);
  if (!inShape || !outShape || !target || target.length !== outShape.length) return fail('reshapes attention heads by a shape slicec cannot see');
  const rest = inShape.slice(t.axis + 1);
  if (rest.some((d) => typeof d !== 'number')) return fail('merges attention heads with an axis of unknown size');
  const block = (rest as number[]).reduce((p, d) => p * d, 1);
  const last = outShape.length - 1;
  const width = spaceWidth(t.space) * block;
  if (outShape[last] !== width || (target[last] !== width && target[last] !== -1)) return fail('reshapes attention heads other than back into the last axis');
  const space = t.space.map((s) => ({ union: s.union, perFine: s.perFine * block }));
  // a -1 there follows the kept heads by itself
  if (target[last] === width) ctx.analysis.shapeRewrites.push({ node, inputIndex: 1, entry: last, space });
  ctx.track(node.outputs[0], last, space);
}

