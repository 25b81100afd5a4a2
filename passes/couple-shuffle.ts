// Channel rules for ShuffleNet-style blocks (couple-channels): the channel shuffle, channel
// splits (Slice or Split on the channel axis) and depthwise convs over the shuffled stream.
//
// A shuffle with g groups is a fixed permutation: input channel j·(C/g) + i becomes output
// channel i·g + j. Nothing is coupled; each segment of the input space is placed anew on the
// output axis (channel-space.ts `positions`). Slicing keeps a prefix of every union, and a
// sliced tensor holds its kept channels in the full tensor's order, so a shuffle of kept
// channels is again a fixed permutation of them (prune-to-rate writes it as one Gather).
//
// A split takes ranges of positions. Each range must hold whole unions (then every union keeps
// its prefix, and the sliced graph's bounds are the kept channels before each bound); a union
// that straddles a bound is cut there: its producers are split at that channel and the walk
// starts again (couple-channels.ts requestSplit). Fine channels a block or a conv group holds
// together cannot be cut, and pin.

import type { Node, Value } from '../compiler/ir.js';
import { knownValue } from '../compiler/shape-inference.js';
import { DataType } from '../compiler/tensor.js';
import { movePositions, resolve, scaleSpace, segmentPositions, spaceWidth, tidySpace, denominatorOf, type Space } from './channel-space.js';
import { normAxis, type CouplingContext } from './couple-channels.js';

interface TrackedAxis {
  axis: number;
  space: Space;
}

function dims(v: Value | null | undefined): (number | string | null)[] | null {
  return v?.shape ?? null;
}

function gcdInt(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

/**
 * Reshape [N, C, ...] → [N, g, C/g, ...], a Transpose swapping axes 1 and 2 that only the next
 * node reads, Reshape back to [N, C, ...]: tracks the last Reshape's output with the input's
 * segments placed anew and records the shuffle. False when the nodes are not that pattern.
 */
export function channelShuffle(node: Node, ctx: CouplingContext, t: TrackedAxis): boolean {
  const inShape = dims(node.inputs[0]);
  const mid = dims(node.outputs[0]);
  if (t.axis !== 1 || !inShape || !mid || mid.length !== inShape.length + 1) return false;
  const [groups, perGroup, width] = [mid[1], mid[2], inShape[1]];
  if (typeof groups !== 'number' || typeof perGroup !== 'number' || typeof width !== 'number' || groups * perGroup !== width) return false;
  if (mid[0] !== inShape[0] || mid.slice(3).some((d, i) => d !== inShape[i + 2] || d === null)) return false;
  const only = (v: Value | undefined): Node | null => (v && v.uses.length === 1 && !ctx.graph.outputs.includes(v) ? v.uses[0]!.node : null);
  const transpose = only(node.outputs[0]);
  const perm = transpose?.op === 'Transpose' ? transpose.attrInts('perm') : undefined;
  if (!transpose || !perm || perm.join(',') !== [0, 2, 1, ...inShape.slice(2).map((_, i) => i + 3)].join(',')) return false;
  const last = only(transpose.outputs[0]);
  const outShape = dims(last?.outputs[0]);
  if (!last || last.op !== 'Reshape' || !outShape || outShape.length !== inShape.length || outShape.some((d, i) => d !== inShape[i])) return false;
  const where = new Array<number>(width);
  const from = new Array<number>(width);
  for (let j = 0; j < groups; j++) {
    for (let i = 0; i < perGroup; i++) {
      where[j * perGroup + i] = i * groups + j;
      from[i * groups + j] = j * perGroup + i;
    }
  }
  const outSpace = tidySpace(movePositions(t.space, where));
  ctx.handled.add(transpose);
  ctx.handled.add(last);
  ctx.analysis.shuffles.push({ first: node, last, inSpace: t.space, outSpace, perm: from });
  ctx.track(last.outputs[0], 1, outSpace);
  return true;
}

/**
 * A depthwise conv (one input channel per group, `perInput` outputs each) over a composed or
 * placed space: output channels p·m .. p·m+m−1 read input channel p, so every input segment gets
 * a part of the output linked to it, placed where its channels go.
 */
export function depthwiseOverParts(node: Node, ctx: CouplingContext, inSpace: Space, perInput: number): void {
  const scaled = scaleSpace(inSpace, perInput);
  const widths = scaled.map((s) => Math.round(resolve(s).root.fineWidth * resolve(s).perFine));
  const parts = ctx.produceParts(node, widths);
  const out: Space = [];
  scaled.forEach((seg, i) => {
    const r = resolve(seg);
    const q = denominatorOf(r.perFine);
    if (q === 0) {
      ctx.pin(inSpace, `${node.label()}: conv groups do not line up with channels`);
    } else {
      r.root.unit = (r.root.unit * q) / gcdInt(r.root.unit, q);
      ctx.link([{ union: seg.union, perFine: seg.perFine }], [{ union: parts[i]!, perFine: 1 }], `${node.label()} (depthwise conv)`);
    }
    out.push(seg.positions ? { union: parts[i]!, perFine: 1, positions: seg.positions } : { union: parts[i]!, perFine: 1 });
  });
  ctx.param(node, 1, 0, out);
  if (node.inputs[2]) ctx.param(node, 2, 0, out);
  ctx.analysis.groupedConvs.push({ node, outSpace: out, outPerGroup: perInput });
  ctx.track(node.outputs[0], 1, out);
}

/**
 * The segments of `t` in each range between consecutive `edges` (ascending axis positions, 0 and
 * the width included), placed from the range's start; null when a union straddles an edge (it
 * is pinned, or its producers are split for the next round: `why` says which).
 */
function cutAt(node: Node, ctx: CouplingContext, t: TrackedAxis, edges: number[]): { ranges: Space[] } | { why: string } {
  const region = (p: number): number => {
    let r = 0;
    while (p >= edges[r + 1]!) r++;
    return r;
  };
  const positions = segmentPositions(t.space);
  const ranges: Space[] = edges.slice(1).map(() => []);
  let split = false;
  for (const [i, seg] of t.space.entries()) {
    const at = positions[i]!;
    const regions = new Set(at.map(region));
    if (regions.size === 1) {
      const r = region(at[0]!);
      ranges[r]!.push({ union: seg.union, perFine: seg.perFine, positions: at.map((p) => p - edges[r]!) });
      continue;
    }
    const r = resolve(seg);
    if (r.perFine < 1) return { why: 'inside a block of channels that moves as one' };
    if (r.root.pinned) {
      // never cut: each range's share is fixed channels of its own
      for (const k of regions) {
        const inside = at.filter((p) => region(p) === k).map((p) => p - edges[k]!);
        ranges[k]!.push({ ...ctx.fixed(inside.length, r.root.pinned)[0]!, positions: inside });
      }
      continue;
    }
    // cut the union where consecutive fine channels fall in different ranges
    const fineRegion = new Map<number, number>();
    for (const [c, p] of at.entries()) {
      const fine = Math.floor(c / r.perFine);
      if ((fineRegion.get(fine) ?? region(p)) !== region(p)) return { why: 'through one channel of a union that a block or group holds together' };
      fineRegion.set(fine, region(p));
    }
    for (let f = 1; f < r.root.fineWidth; f++) {
      const refused = fineRegion.get(f) === fineRegion.get(f - 1) ? null : ctx.requestSplit(r.root, f);
      if (refused) return { why: refused };
    }
    split = true;
  }
  if (split) return { why: '(the layers producing it are split there on the next round)' };
  return { ranges };
}

/** Int64 entries of a constant or a value shape inference folded (a bound built from Shape). */
function knownInts(node: Node, index: number, ctx: CouplingContext): bigint[] | null {
  const v = knownValue(node.inputs[index], ctx.known);
  if (!v || v.dtype !== DataType.INT64 || !v.data.every((e) => typeof e === 'bigint')) return null;
  return v.data as bigint[];
}

/** Record that entry `entry` of input `index` becomes the kept channel count of `space`. */
function rewriteEntry(node: Node, ctx: CouplingContext, index: number, entry: number, space: Space, values: bigint[]): void {
  const rewrite = { node, inputIndex: index, entry, space };
  ctx.analysis.shapeRewrites.push(node.inputs[index]?.const ? rewrite : { ...rewrite, values: [...values] });
}

/** A Slice that keeps channels [s, e) with step 1 (ShuffleNet's chunk into halves, as torch exports it). */
export function sliceChannels(node: Node, ctx: CouplingContext, t: TrackedAxis, k: number): void {
  const width = dims(node.inputs[0])?.[t.axis];
  const fail = (why: string): void => ctx.pin(t.space, `${node.label()} cuts the channel axis ${why}`);
  if (typeof width !== 'number') return fail('of unknown width');
  if (ctx.opset < 10) return fail('with bounds in attributes (export at opset 10 or later, where they are inputs)');
  const starts = knownInts(node, 1, ctx);
  const ends = knownInts(node, 2, ctx);
  const step = node.inputs[4] ? knownInts(node, 4, ctx)?.[k] : 1n;
  if (!starts || !ends || starts[k] === undefined || ends[k] === undefined || step !== 1n) return fail('by bounds slicec cannot see (int64 values known before run time, step 1)');
  const clamp = (b: bigint): number => {
    const n = b < 0n ? b + BigInt(width) : b;
    return Number(n < 0n ? 0n : n > BigInt(width) ? BigInt(width) : n);
  };
  const start = clamp(starts[k]!);
  const end = Math.max(start, clamp(ends[k]!));
  const cut = cutAt(node, ctx, t, [0, start, end, width]);
  if ('why' in cut) return fail(cut.why);
  const [before, inside] = cut.ranges as [Space, Space];
  if (start > 0) rewriteEntry(node, ctx, 1, k, before, starts);
  if (ends[k]! < BigInt(width)) rewriteEntry(node, ctx, 2, k, [...before, ...inside], ends);
  ctx.track(node.outputs[0], t.axis, tidySpace(inside));
}

/**
 * Split on the channel axis: sizes from the `split` input (opset 13 on), or equal parts when it
 * is absent; every output keeps the channels of its range, and its size entry is rewritten.
 */
export function splitChannels(node: Node, ctx: CouplingContext): void {
  const t = ctx.get(node.inputs[0]);
  if (!t) return;
  const rank = dims(node.inputs[0])?.length;
  const axis = rank === undefined ? -1 : normAxis(node.attrInt('axis', 0), rank);
  if (axis !== t.axis) {
    if (rank === undefined) ctx.pin(t.space, `${node.label()} has an input of unknown rank`);
    else for (const o of node.outputs) ctx.track(o, t.axis, t.space);
    return;
  }
  const width = dims(node.inputs[0])?.[t.axis];
  const fail = (why: string): void => ctx.pin(t.space, `${node.label()} cuts the channel axis into parts ${why}`);
  if (typeof width !== 'number') return fail('of unknown width');
  if (ctx.opset < 13) return fail('with sizes in an attribute (export at opset 13 or later, where they are an input)');
  if (node.attrInt('num_outputs', 0) > 0) return fail('given by num_outputs (give the sizes as an input)');
  const count = node.outputs.length;
  const sizes = node.inputs[1] ? knownInts(node, 1, ctx) : width % count === 0 ? new Array<bigint>(count).fill(BigInt(width / count)) : null;
  if (!sizes || sizes.length !== count) return fail('by sizes slicec cannot see');
  const edges = [0];
  for (const s of sizes) edges.push(edges[edges.length - 1]! + Number(s));
  if (edges[count] !== width) return fail('by sizes that do not add up to its width');
  const cut = cutAt(node, ctx, t, edges);
  if ('why' in cut) return fail(cut.why);
  cut.ranges.forEach((range, i) => {
    if (spaceWidth(range) !== Number(sizes[i])) throw new Error(`couple-channels: ${node.label()} output ${i} holds ${spaceWidth(range)} channels, not ${sizes[i]}`);
    rewriteEntry(node, ctx, 1, i, range, sizes);
    ctx.track(node.outputs[i], t.axis, tidySpace(range));
  });
}
