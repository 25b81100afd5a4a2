// Per-op channel rules for couple-channels, one entry per op (facts: shared/notes/channel-coupling.md).
// A rule reads its inputs' tracked channel axes from the context and tracks its outputs; it
// pins whatever it cannot map exactly. Ops without a rule pin their inputs.

import type { Node, Value } from '../compiler/ir.js';
import { normAxis, type CouplingContext } from './couple-channels.js';
import { denominatorOf, isPlaced, placeAt, resolveSpace, scaleSpace, spaceWidth, type Space } from './channel-space.js';
import { knownValue } from '../compiler/shape-inference.js';
import { splitHeads } from './couple-heads.js';
import { channelShuffle, depthwiseOverParts, sliceChannels, splitChannels } from './couple-shuffle.js';

type Rule = (node: Node, ctx: CouplingContext) => void;

function dims(v: Value | null | undefined): (number | string | null)[] | null {
  return v?.shape ?? null;
}

function constInts(v: Value | null | undefined): number[] | null {
  if (!v?.const) return null;
  try {
    return v.const.numbers();
  } catch {
    return null;
  }
}

/** Axes given as an attribute (older opsets) or as the second input (newer). */
function axesOf(node: Node, inputIndex: number): number[] | null | undefined {
  const attr = node.attrInts('axes');
  if (attr) return attr;
  const input = node.inputs[inputIndex];
  if (!input) return undefined; // not given
  return constInts(input);
}

/** The output passes the input's channel axis and space through unchanged. */
const passThrough: Rule = (node, ctx) => {
  const t = ctx.get(node.inputs[0]);
  if (t) ctx.track(node.outputs[0], t.axis, t.space);
};

/** Like passThrough, plus per-channel constant inputs at the given indices cut on axis 0. */
function perChannel(paramInputs: number[]): Rule {
  return (node, ctx) => {
    const t = ctx.get(node.inputs[0]);
    if (!t) return;
    if (t.axis !== 1) {
      ctx.pin(t.space, `${node.label()} normalizes axis 1 but channels are on axis ${t.axis}`);
      return;
    }
    for (const i of paramInputs) {
      const p = node.inputs[i];
      if (p && (p.const?.dims.length ?? 0) >= 1 && (p.const?.dims[0] ?? 1) > 1) ctx.param(node, i, 0, t.space);
      else if (p && !p.const) ctx.pin(t.space, `${node.label()} reads per-channel values computed at run time`);
    }
    ctx.track(node.outputs[0], t.axis, t.space);
  };
}

const conv: Rule = (node, ctx) => {
  const w = node.inputs[1];
  const x = ctx.get(node.inputs[0]);
  const wDims = w?.const?.dims ?? (dims(w) as number[] | null);
  if (!wDims || wDims.some((d) => typeof d !== 'number')) {
    ctx.pin(x?.space, `${node.label()} has a weight of unknown shape`);
    return;
  }
  const group = node.attrInt('group', 1);
  const outChannels = wDims[0]!;
  if (group > 1 && wDims[1] === 1 && x && x.axis === 1 && (x.space.length > 1 || isPlaced(x.space)) && w?.const) {
    depthwiseOverParts(node, ctx, x.space, outChannels / group);
    return;
  }
  const out = ctx.produce(node, outChannels);
  if (!w?.const) {
    ctx.pin(out, `${node.label()} reads a weight computed at run time`);
    ctx.pin(x?.space, `${node.label()} reads a weight computed at run time`);
  }
  if (x && x.axis !== 1) {
    ctx.pin(x.space, `${node.label()} reads channels on axis 1 but they are on axis ${x.axis}`);
    ctx.pin(out, `${node.label()} input channels are not on axis 1`);
  }
  ctx.param(node, 1, 0, out);
  if (node.inputs[2]) ctx.param(node, 2, 0, out);
  if (group === 1) {
    if (x && x.axis === 1) ctx.param(node, 1, 1, x.space);
  } else {
    const inPerGroup = wDims[1]!;
    const outPerGroup = outChannels / group;
    if (!x || x.axis !== 1 || x.space.length !== 1) {
      ctx.pin(out, `${node.label()} is a grouped conv whose input channels are fixed (group j reads input group j, so it keeps the input's width)`);
      ctx.pin(x?.space, `${node.label()} is a grouped conv over composed channels`);
    } else {
      const [rx] = resolveSpace(x.space);
      // a slicing unit must hold whole conv groups: u fine channels are u·perFine input channels
      const q = denominatorOf(rx!.perFine / inPerGroup);
      if (q === 0) {
        ctx.pin(out, `${node.label()}: conv groups do not line up with channels`);
        ctx.pin(x.space, `${node.label()}: conv groups do not line up with channels`);
      } else {
        // input group j feeds output group j: the output is the input's union scaled by Mg/Cg
        const root = rx!.root;
        root.unit = (root.unit * q) / gcdInt(root.unit, q);
        const scaled: Space = [{ union: root, perFine: (rx!.perFine * outPerGroup) / inPerGroup }];
        ctx.link(scaled, out, `${node.label()} (grouped conv)`);
        ctx.analysis.groupedConvs.push({ node, outSpace: out, outPerGroup });
      }
    }
  }
  ctx.track(node.outputs[0], 1, out);
};

function gcdInt(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

const convTranspose: Rule = (node, ctx) => {
  const w = node.inputs[1];
  const x = ctx.get(node.inputs[0]);
  const wDims = w?.const?.dims;
  const group = node.attrInt('group', 1);
  if (!wDims || group !== 1 || node.attrInts('output_shape')) {
    ctx.pin(x?.space, `${node.label()}: grouped or shape-fixed ConvTranspose is not sliced`);
    return;
  }
  const out = ctx.produce(node, wDims[1]!);
  if (x && x.axis === 1) ctx.param(node, 1, 0, x.space);
  else if (x) ctx.pin(x.space, `${node.label()} reads channels on axis 1 but they are on axis ${x.axis}`);
  ctx.param(node, 1, 1, out);
  if (node.inputs[2]) ctx.param(node, 2, 0, out);
  ctx.track(node.outputs[0], 1, out);
};

const gemm: Rule = (node, ctx) => {
  const a = ctx.get(node.inputs[0]);
  const b = node.inputs[1];
  const transA = node.attrInt('transA', 0);
  const transB = node.attrInt('transB', 0);
  const bDims = b?.const?.dims;
  if (!bDims || bDims.length !== 2) {
    ctx.pin(a?.space, `${node.label()} multiplies by a matrix computed at run time`);
    return;
  }
  const kAxisOfA = transA ? 0 : 1;
  const outWidth = transB ? bDims[0]! : bDims[1]!;
  const out = ctx.produce(node, outWidth);
  if (a) {
    if (a.axis === kAxisOfA) ctx.param(node, 1, transB ? 1 : 0, a.space);
    else {
      ctx.pin(a.space, `${node.label()} contracts an axis other than the channel axis`);
      ctx.pin(out, `${node.label()} contracts an axis other than the channel axis`);
    }
  }
  ctx.param(node, 1, transB ? 0 : 1, out);
  const c = node.inputs[2];
  if (c) {
    const cDims = c.const?.dims;
    if (!cDims) ctx.pin(out, `${node.label()} adds a bias computed at run time`);
    else if (cDims.length >= 1 && cDims[cDims.length - 1]! > 1) ctx.param(node, 2, cDims.length - 1, out);
  }
  ctx.track(node.outputs[0], 1, out);
};

const matMul: Rule = (node, ctx) => {
  const a = ctx.get(node.inputs[0]);
  const b = node.inputs[1];
  const bDims = b?.const?.dims;
  const aRank = dims(node.inputs[0])?.length;
  if (!bDims || bDims.length !== 2 || aRank === undefined || aRank < 2) {
    ctx.pinInputs(node, `${node.label()} multiplies two run-time tensors that are not attention heads split by a Reshape [..., -1, head_dim]`);
    return;
  }
  const out = ctx.produce(node, bDims[1]!);
  if (a) {
    if (a.axis === aRank - 1) ctx.param(node, 1, 0, a.space);
    else ctx.pin(a.space, `${node.label()} contracts an axis other than the channel axis`);
  }
  ctx.param(node, 1, 1, out);
  ctx.track(node.outputs[0], aRank - 1, out);
};

/** Broadcasting n-ary ops: operands whose size on the channel axis is not 1 join one space. */
const broadcast: Rule = (node, ctx) => {
  const outRank = dims(node.outputs[0])?.length ?? Math.max(...node.inputs.map((v) => dims(v)?.length ?? 0));
  const inputs = node.inputs.map((v, i) => ({ v, i, t: ctx.get(v), rank: dims(v)?.length ?? v?.const?.dims.length }));
  const trackedAxes = new Set(inputs.filter((x) => x.t).map((x) => x.t!.axis + (outRank - (x.rank ?? outRank))));
  if (trackedAxes.size === 0) return;
  if (trackedAxes.size > 1) {
    ctx.pinInputs(node, `${node.label()} combines channels on different axes`);
    return;
  }
  const outAxis = [...trackedAxes][0]!;
  let space: Space | null = null;
  for (const x of inputs) {
    if (x.t) space = space ? ctx.link(space, x.t.space, node.label()) : x.t.space;
  }
  for (const x of inputs) {
    if (!x.v || x.t) continue;
    const rank = x.rank;
    const axis = rank === undefined ? -1 : outAxis - (outRank - rank);
    if (x.v.const) {
      if (axis >= 0 && x.v.const.dims[axis]! > 1) ctx.param(node, x.i, axis, space!);
      continue;
    }
    const size = axis >= 0 ? dims(x.v)?.[axis] : undefined;
    if (axis < 0 && rank !== undefined) continue; // broadcast from a lower rank
    if (size !== 1) ctx.pin(space!, `${node.label()} combines channels with ${x.v.name}, whose channels slicec does not follow`);
  }
  ctx.track(node.outputs[0], outAxis, space!);
};

const concat: Rule = (node, ctx) => {
  const outRank = dims(node.outputs[0])?.length ?? dims(node.inputs[0])?.length;
  if (outRank === undefined) {
    ctx.pinInputs(node, `${node.label()} has inputs of unknown rank`);
    return;
  }
  const axis = normAxis(node.attrInt('axis', 0), outRank);
  const tracked = node.inputs.map((v) => ctx.get(v));
  const axes = new Set(tracked.filter((t) => t).map((t) => t!.axis));
  if (axes.size === 0) return;
  if (axes.size > 1) {
    ctx.pinInputs(node, `${node.label()} concatenates channels on different axes`);
    return;
  }
  const chanAxis = [...axes][0]!;
  if (chanAxis !== axis) {
    // concatenation along another axis: all inputs share the channel space
    let space: Space | null = null;
    for (const t of tracked) if (t) space = space ? ctx.link(space, t.space, node.label()) : t.space;
    node.inputs.forEach((v, i) => {
      if (tracked[i] || !v) return;
      if (v.const && v.const.dims.length === outRank) ctx.param(node, i, chanAxis, space!);
      else if (!broadcastConstant(v, chanAxis, outRank, space!, ctx)) ctx.pin(space!, `${node.label()} concatenates channels with ${v.name}, whose channels slicec does not follow`);
    });
    ctx.track(node.outputs[0], chanAxis, space!);
    return;
  }
  const parts: Space[] = [];
  for (let i = 0; i < node.inputs.length; i++) {
    const t = tracked[i];
    if (t) {
      parts.push(t.space);
      continue;
    }
    const size = dims(node.inputs[i])?.[axis];
    if (typeof size !== 'number') {
      ctx.pinInputs(node, `${node.label()} concatenates a tensor of unknown width`);
      return;
    }
    if (size > 0) parts.push(ctx.fixed(size, `concatenated with fixed channels at ${node.label()}`));
  }
  // placed inputs (a shuffled tensor) place every segment of the concatenation
  const placed = parts.some(isPlaced);
  const segments: Space = [];
  let offset = 0;
  for (const part of parts) {
    segments.push(...(placed ? placeAt(part, offset) : part));
    offset += spaceWidth(part);
  }
  ctx.track(node.outputs[0], axis, segments);
};

/**
 * A constant repeated along other axes (a class token: Expand(token[1,1,C], [batch,1,1])): the
 * constant is cut with the channels when the Expand target keeps the channel axis (entry 1).
 */
function broadcastConstant(v: Value, axis: number, rank: number, space: Space, ctx: CouplingContext): boolean {
  const expand = v.producer;
  const source = expand?.inputs[0];
  if (expand?.op !== 'Expand' || !source?.const || source.const.dims.length !== rank || v.uses.length !== 1) return false;
  const target = knownValue(expand.inputs[1], ctx.known);
  if (!target || target.data.length !== rank || target.data[axis] !== 1n) return false;
  ctx.param(expand, 0, axis, space);
  ctx.track(v, axis, space);
  return true;
}

/** Ops that cut or reorder the channel axis when they act on it; pass through otherwise. */
function axisSensitive(actsOnAxis: (node: Node, t: { axis: number }, rank: number) => boolean | 'unknown', what: string): Rule {
  return (node, ctx) => {
    const t = ctx.get(node.inputs[0]);
    if (!t) return;
    const rank = dims(node.inputs[0])?.length ?? -1;
    const acts = rank < 0 ? 'unknown' : actsOnAxis(node, t, rank);
    if (acts !== false) {
      ctx.pin(t.space, `${node.label()} ${what}`);
      return;
    }
    for (const o of node.outputs) ctx.track(o, t.axis, t.space);
  };
}

const softmaxLike = axisSensitive((node, t, rank) => normAxis(node.attrInt('axis', -1), rank) === t.axis, 'normalizes over the channel axis');

function softmaxRule(node: Node, ctx: CouplingContext): void {
  const t = ctx.get(node.inputs[0]);
  if (!t) return;
  const rank = dims(node.inputs[0])?.length;
  if (rank === undefined) {
    ctx.pin(t.space, `${node.label()} has an input of unknown rank`);
    return;
  }
  if (ctx.opset < 13) {
    const axis = normAxis(node.attrInt('axis', 1), rank);
    if (t.axis >= axis) {
      ctx.pin(t.space, `${node.label()} normalizes over the channel axis`);
      return;
    }
    ctx.track(node.outputs[0], t.axis, t.space);
    return;
  }
  softmaxLike(node, ctx);
}

const reduce: Rule = (node, ctx) => {
  const t = ctx.get(node.inputs[0]);
  if (!t) return;
  const rank = dims(node.inputs[0])?.length;
  const axes = axesOf(node, 1);
  const noop = node.attrInt('noop_with_empty_axes', 0) === 1;
  if (rank === undefined || axes === null) {
    ctx.pin(t.space, `${node.label()} reduces over axes slicec cannot see`);
    return;
  }
  const list = axes === undefined || axes.length === 0 ? (noop ? [] : [...Array(rank).keys()]) : axes.map((a) => normAxis(a, rank));
  if (list.includes(t.axis) && node.op === 'ReduceMean' && ctx.options.layerNorms === 'rewrite' && list.length === 1 && matchLayerNorm(node, ctx)) return;
  if (list.includes(t.axis)) {
    const hint = node.op === 'ReduceMean' && ctx.options.layerNorms === 'pin' ? '; a layer norm built from it is rewritten into group norms with --norm gn' : '';
    ctx.pin(t.space, `${node.label()} reduces over the channel axis (statistics would change${hint})`);
    return;
  }
  const keep = node.attrInt('keepdims', 1) === 1;
  const axis = keep ? t.axis : t.axis - list.filter((a) => a < t.axis).length;
  ctx.track(node.outputs[0], axis, t.space);
};

/**
 * A layer norm as PyTorch decomposes it before opset 17:
 *   m = ReduceMean(x, [c]); d = Sub(x, m); p = Pow(d, 2) | Mul(d, d); v = ReduceMean(p, [c]);
 *   s = Sqrt(Add(v, eps)); y = Div(d, s)
 * Recorded as a site for insert-group-norm; the statistics nodes are marked handled.
 */
function matchLayerNorm(mean: Node, ctx: CouplingContext): boolean {
  const x = mean.inputs[0]!;
  const only = (v: Value | undefined, op: string): Node | null => {
    const users = v?.consumers() ?? [];
    return users.length === 1 && users[0]!.op === op ? users[0]! : null;
  };
  const sub = only(mean.outputs[0], 'Sub');
  if (!sub || sub.inputs[0] !== x || sub.inputs[1] !== mean.outputs[0]) return false;
  const d = sub.outputs[0]!;
  const users = d.consumers();
  const square = users.find((n) => (n.op === 'Pow' && constInts(n.inputs[1])?.[0] === 2) || (n.op === 'Mul' && n.inputs[0] === d && n.inputs[1] === d));
  const div = users.find((n) => n.op === 'Div' && n.inputs[0] === d);
  if (!square || !div || users.length !== 2) return false;
  const mean2 = only(square.outputs[0], 'ReduceMean');
  if (!mean2 || JSON.stringify(axesOf(mean2, 1)) !== JSON.stringify(axesOf(mean, 1)) || mean2.attrInt('keepdims', 1) !== 1 || mean.attrInt('keepdims', 1) !== 1) return false;
  const add = only(mean2.outputs[0], 'Add');
  const eps = add?.inputs[1]?.const?.numbers()[0];
  if (!add || eps === undefined) return false;
  const sqrt = only(add.outputs[0], 'Sqrt');
  if (!sqrt || only(sqrt.outputs[0], 'Div') !== div || div.inputs[1] !== sqrt.outputs[0]) return false;
  const t = ctx.get(x)!;
  const nodes = [mean, sub, square, mean2, add, sqrt, div];
  for (const n of nodes) ctx.handled.add(n);
  ctx.analysis.layerNorms.push({ input: x, output: div.outputs[0]!, nodes, epsilon: eps });
  ctx.track(div.outputs[0], t.axis, t.space);
  return true;
}

const argReduce = axisSensitive((node, t, rank) => normAxis(node.attrInt('axis', 0), rank) === t.axis, 'picks an index over the channel axis');

const transpose: Rule = (node, ctx) => {
  const t = ctx.get(node.inputs[0]);
  if (!t) return;
  const rank = dims(node.inputs[0])?.length;
  const perm = node.attrInts('perm') ?? (rank === undefined ? undefined : [...Array(rank).keys()].reverse());
  if (!perm) {
    ctx.pin(t.space, `${node.label()} has an unknown permutation`);
    return;
  }
  ctx.track(node.outputs[0], perm.indexOf(t.axis), t.space);
};

const squeeze: Rule = (node, ctx) => {
  const t = ctx.get(node.inputs[0]);
  if (!t) return;
  const shape = dims(node.inputs[0]);
  let axes = axesOf(node, 1);
  if (axes === undefined && shape) axes = shape.map((d, i) => (d === 1 ? i : -1)).filter((i) => i >= 0);
  if (!axes || !shape) {
    ctx.pin(t.space, `${node.label()} squeezes axes slicec cannot see`);
    return;
  }
  const list = axes.map((a) => normAxis(a, shape.length));
  if (list.includes(t.axis)) {
    ctx.pin(t.space, `${node.label()} squeezes the channel axis`);
    return;
  }
  ctx.track(node.outputs[0], t.axis - list.filter((a) => a < t.axis).length, t.space);
};

const unsqueeze: Rule = (node, ctx) => {
  const t = ctx.get(node.inputs[0]);
  if (!t) return;
  const rank = dims(node.inputs[0])?.length;
  const axes = axesOf(node, 1);
  if (!axes || rank === undefined) {
    ctx.pin(t.space, `${node.label()} inserts axes slicec cannot see`);
    return;
  }
  const outRank = rank + axes.length;
  const inserted = new Set(axes.map((a) => normAxis(a, outRank)));
  let seen = -1;
  for (let o = 0; o < outRank; o++) {
    if (inserted.has(o)) continue;
    seen++;
    if (seen === t.axis) {
      ctx.track(node.outputs[0], o, t.space);
      return;
    }
  }
};

/**
 * Flatten and Reshape: the channel axis may merge with the axes after it (channel c becomes
 * the block of features [c·B, (c+1)·B)), which keeps a prefix a prefix. Anything else pins.
 */
function reshapeLike(node: Node, ctx: CouplingContext, shapeConst: { index: number; values: number[] } | null): void {
  const t = ctx.get(node.inputs[0]);
  if (!t) return;
  const inShape = dims(node.inputs[0]);
  const outShape = dims(node.outputs[0]);
  const fail = (why: string): void => ctx.pin(t.space, `${node.label()} ${why}`);
  if (!inShape || !outShape) return fail('has a shape slicec cannot infer');
  const width = inShape[t.axis];
  if (typeof width !== 'number') return fail('has a channel axis of unknown size');
  if (t.axis === inShape.length - 1 && outShape[outShape.length - 1] === width) {
    // only the leading axes are regrouped ([tokens·batch, C] → [tokens, batch, C]): row-major
    // order leaves the last axis, and so every channel, where it was
    const last = outShape.length - 1;
    const entry = shapeConst?.values[last];
    if (shapeConst && entry !== -1 && !(entry === 0 && last === t.axis)) {
      if (entry !== width) return fail('has a shape constant that does not match its output');
      ctx.analysis.shapeRewrites.push({ node, inputIndex: shapeConst.index, entry: last, space: t.space });
    }
    ctx.track(node.outputs[0], last, t.space);
    return;
  }
  // the dims before the channel axis must stay as they are (same prefix of the layout); leading
  // 1s (a batch of 1) make several prefixes match, so take the first that can hold the channels
  const before = key(inShape.slice(0, t.axis));
  let o = 0;
  const fits = (i: number): boolean => key(outShape.slice(0, i)) === before && (typeof outShape[i] !== 'number' || (outShape[i] as number) >= width);
  while (o < outShape.length && !fits(o)) o++;
  if (o >= outShape.length) return fail(isShuffle(node) ? SHUFFLE : 'moves the channel axis in a way slicec cannot map');
  const merged = outShape[o];
  if (typeof merged !== 'number' || merged % width !== 0) return fail(isShuffle(node) ? SHUFFLE : 'splits the channel axis');
  let block = 1;
  let a = t.axis + 1;
  while (block < merged / width && a < inShape.length) {
    const d = inShape[a++];
    if (typeof d !== 'number') return fail('merges channels with an axis of unknown size');
    block *= d;
  }
  if (block !== merged / width) return fail('merges the channel axis unevenly');
  const space = scaleSpace(t.space, block);
  if (shapeConst) {
    const entry = shapeConst.values[o];
    if (entry === undefined) return fail('has a shape constant slicec cannot read');
    if (entry !== -1 && !(entry === 0 && o === t.axis && block === 1)) {
      if (entry !== merged) return fail('has a shape constant that does not match its output');
      ctx.analysis.shapeRewrites.push({ node, inputIndex: shapeConst.index, entry: o, space });
    }
  }
  ctx.track(node.outputs[0], o, space);
}

const SHUFFLE =
  'looks like a channel shuffle but not the form slicec follows (Reshape [N, g, C/g, H, W], then a Transpose ' +
  'swapping axes 1 and 2 that only a Reshape back to [N, C, H, W] reads): the shuffled channels keep their width';

/** Reshape [N, g, C/g, H, W] whose output a Transpose swaps axes 1 and 2 of (ShuffleNet's shuffle). */
function isShuffle(node: Node): boolean {
  const users = node.outputs[0]?.consumers() ?? [];
  const perm = users.length === 1 && users[0]!.op === 'Transpose' ? users[0]!.attrInts('perm') : undefined;
  return !!perm && perm.join(',') === '0,2,1,3,4';
}

function key(ds: (number | string | null)[]): string {
  let product = 1;
  const symbols: string[] = [];
  for (const d of ds) {
    if (typeof d === 'number') product *= d;
    else symbols.push(d === null ? '?' : d);
  }
  if (symbols.includes('?')) return `unknown:${Math.random()}`;
  return `${product}|${symbols.sort().join(',')}`;
}

const reshape: Rule = (node, ctx) => {
  const t = ctx.get(node.inputs[0]);
  if (!t) return;
  if (channelShuffle(node, ctx, t)) return;
  const shapeInput = node.inputs[1];
  const attrShape = node.attrInts('shape');
  if (attrShape) {
    if (attrShape.some((d, i) => d > 0 && d !== dims(node.outputs[0])?.[i])) {
      ctx.pin(t.space, `${node.label()} has a shape attribute slicec cannot rewrite`);
      return;
    }
    reshapeLike(node, ctx, null);
    return;
  }
  const values = constInts(shapeInput);
  if (values && splitHeads(node, ctx, values)) return;
  if (!values) {
    // computed at run time: only safe when it cannot hard-code the channel count
    ctx.pin(t.space, `${node.label()} takes a shape computed at run time that is not the same at every batch size (export with dynamic_axes on the batch dim only, so the other sizes fold to constants)`);
    return;
  }
  reshapeLike(node, ctx, { index: 1, values });
};

const flatten: Rule = (node, ctx) => {
  const t = ctx.get(node.inputs[0]);
  if (!t) return;
  const rank = dims(node.inputs[0])?.length;
  if (rank === undefined) {
    ctx.pin(t.space, `${node.label()} has an input of unknown rank`);
    return;
  }
  const axis = normAxis(node.attrInt('axis', 1), rank);
  if (t.axis < axis) {
    const shape = dims(node.inputs[0])!;
    const onlyOnes = shape.slice(0, axis).every((d, i) => i === t.axis || d === 1);
    if (!onlyOnes) {
      ctx.pin(t.space, `${node.label()} flattens the channel axis into the batch`);
      return;
    }
    ctx.track(node.outputs[0], 0, t.space);
    return;
  }
  const shape = dims(node.inputs[0])!;
  if (shape.slice(axis, t.axis).some((d) => d !== 1)) {
    ctx.pin(t.space, `${node.label()} flattens channels that are not the outermost merged axis (e.g. NHWC), which needs strided indices`);
    return;
  }
  let block = 1;
  for (const d of shape.slice(t.axis + 1)) {
    if (typeof d !== 'number') {
      ctx.pin(t.space, `${node.label()} merges channels with an axis of unknown size`);
      return;
    }
    block *= d;
  }
  ctx.track(node.outputs[0], 1, scaleSpace(t.space, block));
};

const pad: Rule = (node, ctx) => {
  const t = ctx.get(node.inputs[0]);
  if (!t) return;
  const rank = dims(node.inputs[0])?.length;
  const pads = node.attrInts('pads') ?? constInts(node.inputs[1]);
  const axes = node.inputs[3] ? constInts(node.inputs[3]) : null;
  if (!pads || rank === undefined || (node.inputs[3] && !axes)) {
    ctx.pin(t.space, `${node.label()} pads by amounts slicec cannot see`);
    return;
  }
  const axisList = axes ? axes.map((a) => normAxis(a, rank)) : [...Array(rank).keys()];
  const k = axisList.indexOf(t.axis);
  if (k >= 0 && (pads[k] !== 0 || pads[k + axisList.length] !== 0)) {
    ctx.pin(t.space, `${node.label()} pads the channel axis`);
    return;
  }
  ctx.track(node.outputs[0], t.axis, t.space);
};

const resize: Rule = (node, ctx) => {
  const t = ctx.get(node.inputs[0]);
  if (!t) return;
  const inShape = dims(node.inputs[0]);
  const outShape = dims(node.outputs[0]);
  const sizes = node.op === 'Resize' ? constInts(node.inputs[3]) : null;
  if (sizes && sizes.length > t.axis && sizes[t.axis]! > 1) {
    ctx.pin(t.space, `${node.label()} resizes to a fixed channel count`);
    return;
  }
  if (!inShape || !outShape || inShape[t.axis] !== outShape[t.axis]) {
    ctx.pin(t.space, `${node.label()} may change the channel count`);
    return;
  }
  ctx.track(node.outputs[0], t.axis, t.space);
};

const slice: Rule = (node, ctx) => {
  const t = ctx.get(node.inputs[0]);
  if (!t) return;
  const rank = dims(node.inputs[0])?.length;
  let axes: number[] | null;
  if (ctx.opset < 10) axes = node.attrInts('axes') ?? (rank === undefined ? null : [...Array(node.attrInts('starts')?.length ?? rank).keys()]);
  else axes = node.inputs[3] ? constInts(node.inputs[3]) : rank === undefined ? null : [...Array(constInts(node.inputs[1])?.length ?? rank).keys()];
  if (!axes || rank === undefined) {
    ctx.pin(t.space, `${node.label()} slices axes slicec cannot see`);
    return;
  }
  const k = axes.map((a) => normAxis(a, rank)).indexOf(t.axis);
  if (k >= 0) {
    const inW = dims(node.inputs[0])?.[t.axis];
    const outW = dims(node.outputs[0])?.[t.axis];
    if (typeof inW !== 'number' || inW !== outW) {
      sliceChannels(node, ctx, t, k);
      return;
    }
  }
  ctx.track(node.outputs[0], t.axis, t.space);
};

const gather: Rule = (node, ctx) => {
  const t = ctx.get(node.inputs[0]);
  if (!t) return;
  const rank = dims(node.inputs[0])?.length;
  const idxRank = dims(node.inputs[1])?.length ?? node.inputs[1]?.const?.dims.length;
  if (rank === undefined || idxRank === undefined) {
    ctx.pin(t.space, `${node.label()} gathers with indices of unknown rank`);
    return;
  }
  const axis = normAxis(node.attrInt('axis', 0), rank);
  if (axis === t.axis) {
    ctx.pin(t.space, `${node.label()} picks channels by index`);
    return;
  }
  ctx.track(node.outputs[0], t.axis < axis ? t.axis : t.axis + idxRank - 1, t.space);
};

const tile: Rule = (node, ctx) => {
  const t = ctx.get(node.inputs[0]);
  if (!t) return;
  const repeats = constInts(node.inputs[1]);
  if (!repeats || repeats[t.axis] !== 1) {
    ctx.pin(t.space, `${node.label()} repeats the channel axis`);
    return;
  }
  ctx.track(node.outputs[0], t.axis, t.space);
};

const expand: Rule = (node, ctx) => {
  const t = ctx.get(node.inputs[0]);
  if (!t) return;
  const shape = constInts(node.inputs[1]);
  const rank = dims(node.inputs[0])?.length;
  const outRank = dims(node.outputs[0])?.length;
  if (!shape || rank === undefined || outRank === undefined) {
    ctx.pin(t.space, `${node.label()} expands to a shape slicec cannot see`);
    return;
  }
  const outAxis = t.axis + (outRank - rank);
  const entry = shape[outAxis - (outRank - shape.length)];
  if (entry !== undefined && entry !== 1) {
    ctx.pin(t.space, `${node.label()} expands to a fixed channel count`);
    return;
  }
  ctx.track(node.outputs[0], outAxis, t.space);
};

const layerNorm: Rule = (node, ctx) => {
  const t = ctx.get(node.inputs[0]);
  if (!t) return;
  const rank = dims(node.inputs[0])?.length;
  if (rank === undefined) {
    ctx.pin(t.space, `${node.label()} has an input of unknown rank`);
    return;
  }
  const axis = normAxis(node.attrInt('axis', -1), rank);
  if (t.axis >= axis) {
    if (ctx.options.layerNorms === 'rewrite' && axis === rank - 1 && t.axis === rank - 1) {
      // becomes a group norm; γ and β are cut with the channels
      for (const i of [1, 2]) if (node.inputs[i]) ctx.param(node, i, 0, t.space);
      ctx.analysis.layerNorms.push({ input: node.inputs[0]!, output: node.outputs[0]!, nodes: [node], epsilon: node.attrFloat('epsilon', 1e-5) });
      ctx.track(node.outputs[0], t.axis, t.space);
      return;
    }
    ctx.pin(t.space, `${node.label()} normalizes over the channel axis (with --norm gn it is rewritten into group norms)`);
    ctx.track(node.outputs[0], t.axis, t.space); // pinned with its input, so what follows is coupled, not blamed
    return;
  }
  ctx.track(node.outputs[0], t.axis, t.space);
};

const pinAll: (why: string) => Rule = (why) => (node, ctx) => ctx.pinInputs(node, `${node.label()} ${why}`);

/** Ops that only read shapes or produce values unrelated to channels. */
const noChannels: Rule = () => {};

const unaryOps = [
  'Relu', 'LeakyRelu', 'Elu', 'Selu', 'Celu', 'Sigmoid', 'HardSigmoid', 'HardSwish', 'Tanh', 'Softplus',
  'Softsign', 'Erf', 'Gelu', 'Exp', 'Log', 'Sqrt', 'Reciprocal', 'Neg', 'Abs', 'Cast', 'CastLike', 'Identity',
  'Dropout', 'Clip', 'Floor', 'Ceil', 'Round', 'Sign', 'Sin', 'Cos', 'Mish', 'ThresholdedRelu', 'Shrink',
  'Not', 'IsNaN', 'IsInf', 'MaxPool', 'AveragePool', 'LpPool', 'GlobalAveragePool', 'GlobalMaxPool', 'GlobalLpPool',
];

const broadcastOps = [
  'Add', 'Sub', 'Mul', 'Div', 'Pow', 'Max', 'Min', 'Sum', 'Mean', 'Where', 'Equal', 'Greater', 'Less',
  'GreaterOrEqual', 'LessOrEqual', 'And', 'Or', 'Xor', 'Mod', 'PRelu', 'BitShift',
];

export const coupleRules: Record<string, Rule> = {
  Conv: conv,
  ConvTranspose: convTranspose,
  Gemm: gemm,
  MatMul: matMul,
  BatchNormalization: perChannel([1, 2, 3, 4]),
  InstanceNormalization: perChannel([1, 2]),
  LayerNormalization: layerNorm,
  Concat: concat,
  Flatten: flatten,
  Reshape: reshape,
  Transpose: transpose,
  Squeeze: squeeze,
  Unsqueeze: unsqueeze,
  Pad: pad,
  Resize: resize,
  Upsample: resize,
  Split: splitChannels,
  Slice: slice,
  Gather: gather,
  Tile: tile,
  Expand: expand,
  Softmax: softmaxRule,
  LogSoftmax: softmaxRule,
  Hardmax: softmaxRule,
  ArgMax: argReduce,
  ArgMin: argReduce,
  ReduceMean: reduce,
  ReduceSum: reduce,
  ReduceMax: reduce,
  ReduceMin: reduce,
  ReduceProd: reduce,
  ReduceL1: reduce,
  ReduceL2: reduce,
  ReduceLogSumExp: reduce,
  ReduceSumSquare: reduce,
  LRN: pinAll('mixes neighbouring channels (LRN)'),
  GroupNormalization: pinAll('normalizes over channel groups of its own'),
  DepthToSpace: pinAll('moves channels into space'),
  SpaceToDepth: pinAll('moves space into channels'),
  Einsum: pinAll('contracts axes slicec does not follow (Einsum)'),
  If: pinAll('is control flow (If)'),
  Loop: pinAll('is control flow (Loop)'),
  Scan: pinAll('is control flow (Scan)'),
  Shape: noChannels,
  Size: noChannels,
  Constant: noChannels,
  ConstantOfShape: noChannels,
  Range: noChannels,
  NonZero: pinAll('depends on channel values (NonZero)'),
};
for (const op of unaryOps) coupleRules[op] = passThrough;
for (const op of broadcastOps) coupleRules[op] = broadcast;
