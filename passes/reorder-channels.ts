// reorder-channels: permute each sliceable union's channels so the most important lead.
//
// Slicing keeps leading groups, so what leads matters. Importance of a slicing unit is the L1
// mass of every constant cut with the union (producer filters, biases, norm vectors, consumer
// columns), each tensor normalized by its own total so no single tensor dominates. Units are
// sorted by importance, descending and stable. Applying one permutation to every constant that
// is cut on the union's axes is function-preserving: the producers emit channels in the new
// order and every consumer reads them in that order (rate 1 equals the original model).
// A caller may pass its own scores per union (activation-importance.ts); unions it leaves out
// keep the weight scores.

import type { Graph } from '../compiler/ir.js';
import { gatherAxes, isIdentity, l1PerAxes, type AxisPick } from '../compiler/tensor-ops.js';
import type { ChannelAnalysis } from './couple-channels.js';
import { permutedIndices, resolve, segmentPositions, type Union } from './channel-space.js';
import type { Partition } from './partition-channels.js';

export interface Reordering {
  /** Per union: units in their new order (new position i holds old unit perm[i]). */
  perms: Map<Union, number[]>;
}

export function unitImportance(analysis: ChannelAnalysis, roots: Set<Union>): Map<Union, Float64Array> {
  const scores = new Map<Union, Float64Array>();
  for (const root of roots) scores.set(root, new Float64Array(root.fineWidth / root.unit));
  for (const [value, axes] of analysis.params) {
    const tensor = value.const!;
    const perAxis = l1PerAxes(tensor, axes.map((p) => p.axis));
    for (const [k, p] of axes.entries()) {
      const sums = perAxis[k]!;
      let total = 0;
      for (const s of sums) total += s;
      if (total === 0) continue;
      const positions = segmentPositions(p.space);
      p.space.forEach((seg, i) => {
        const r = resolve(seg);
        const score = scores.get(r.root);
        if (!score) return;
        const at = positions[i]!;
        const block = Math.round(r.root.unit * r.perFine);
        for (let u = 0; u < score.length; u++) {
          let s = 0;
          for (let j = 0; j < block; j++) s += sums[at[u * block + j]!]!;
          score[u]! += s / total;
        }
      });
    }
  }
  return scores;
}

export function reorderChannels(graph: Graph, analysis: ChannelAnalysis, partition: Partition, scores?: Map<Union, Float64Array>): Reordering {
  const roots = new Set(partition.unions.map((g) => g.union));
  const importance = unitImportance(analysis, roots);
  for (const [root, score] of scores ?? []) if (importance.has(root)) importance.set(root, score);
  const perms = new Map<Union, number[]>();
  for (const [root, score] of importance) {
    const order = [...score.keys()].sort((a, b) => score[b]! - score[a]! || a - b);
    if (!isIdentity(order, order.length)) perms.set(root, order);
  }
  for (const [value, axes] of analysis.params) {
    const tensor = value.const!;
    // every cut axis of a tensor is permuted in one copy, not one copy per axis
    const picks: AxisPick[] = [];
    for (const p of axes) {
      const indices = permutedIndices(p.space, perms);
      if (!isIdentity(indices, tensor.dims[p.axis]!)) picks.push({ axis: p.axis, indices });
    }
    if (picks.length > 0) graph.setConstant(value, gatherAxes(tensor, picks));
  }
  return { perms };
}
