// partition-channels: split every sliceable union into G ordered contiguous groups.
//
// Group j of a union covers fine channels [b(j-1), b(j)). Boundaries are balanced
// (b(j) ≈ j·W/G, in whole slicing units so grouped convs keep whole conv groups) and, with
// --round-to R, moved to multiples of R where that keeps every group non-empty, so the kernels
// of the kept widths stay fast. At slice rate r the active group count is the smallest k with
// k/G ≥ r (clamped to [1, G]) and every union keeps its first b(k) fine channels.

import type { ChannelAnalysis } from './couple-channels.js';
import { sliceableRoots } from './couple-channels.js';
import { lcm, resolve, type KeptWidths, type Space, type Union } from './channel-space.js';

export interface UnionGroups {
  union: Union;
  /** G+1 ascending boundaries in fine channels: 0 = b0 < b1 ≤ ... ≤ bG = width. */
  boundaries: number[];
  /** The union counts a group norm's groups, not channels (added by insert-group-norm). */
  groupAxis?: boolean;
}

export interface Partition {
  groups: number;
  unions: UnionGroups[];
}

export function partitionChannels(analysis: ChannelAnalysis, groups: number, roundTo = 1): Partition {
  const unions = sliceableRoots(analysis).map((union) => ({ union, boundaries: boundariesFor(union, groups, roundTo) }));
  return { groups, unions };
}

export function boundariesFor(union: Union, groups: number, roundTo: number): number[] {
  const width = union.fineWidth;
  const unit = union.unit;
  const units = width / unit;
  const step = roundTo > 1 ? lcm(unit, roundTo) : unit;
  const out = [0];
  for (let j = 1; j <= groups; j++) {
    if (j === groups) {
      out.push(width);
      break;
    }
    const ideal = (j * width) / groups;
    let b = Math.round(ideal / step) * step;
    const prev = out[j - 1]!;
    // fall back to whole units when rounding would empty this group or pass the end
    if (b <= prev || b >= width) b = Math.max(unit, Math.round((j * units) / groups) * unit);
    b = Math.min(Math.max(b, prev), width);
    out.push(b);
  }
  return out;
}

/** Active group count at a slice rate: the smallest k with k/G ≥ rate, clamped to [1, G]. */
/** Whether a channel space reaches a union the partition slices (where a norm must follow the groups). */
export function slicedSpaceTest(partition: Partition): (space: Space) => boolean {
  const sliceable = new Set(partition.unions.map((g) => g.union));
  return (space) => space.some((s) => sliceable.has(resolve(s).root));
}

export function activeGroups(rate: number, groups: number): number {
  const k = Math.ceil(rate * groups - 1e-9);
  return Math.min(groups, Math.max(1, k));
}

/** Kept fine channels per sliceable root at a slice rate. */
export function keptWidths(partition: Partition, rate: number): KeptWidths {
  const k = activeGroups(rate, partition.groups);
  const kept: KeptWidths = new Map();
  for (const g of partition.unions) kept.set(g.union, g.boundaries[k]!);
  return kept;
}

/** Lines for the text dump's trailing section. */
export function describePartition(partition: Partition): string[] {
  return partition.unions.map((g) => `union ${g.union.id}: width ${g.union.fineWidth} unit ${g.union.unit} groups [${g.boundaries.join(', ')}]`);
}
