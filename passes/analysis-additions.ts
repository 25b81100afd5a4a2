// What a transform adds to the channel analysis, returned rather than written into it.
//
// Transforms that create sliced constants (group norms, folded biases) or new channel spaces
// (the group axis of a group norm) return an AnalysisAdditions; compile() merges it into the
// analysis and partition in view of the reader, so what a step prints is what later steps use.

import type { Graph, Value } from '../compiler/ir.js';
import type { Union } from './channel-space.js';
import type { ChannelAnalysis, ParamAxis, ShapeRewrite, Tracked } from './couple-channels.js';
import type { Partition, UnionGroups } from './partition-channels.js';

export interface AnalysisAdditions {
  /** New unions (ids continue the analysis's numbering) and their groups. */
  unions: Union[];
  groups: UnionGroups[];
  /** Constants to cut, with the axes they are cut on (replacing any earlier entry). */
  params: Map<Value, ParamAxis[]>;
  tracked: Map<Value, Tracked>;
  shapeRewrites: ShapeRewrite[];
}

export function emptyAdditions(): AnalysisAdditions {
  return { unions: [], groups: [], params: new Map(), tracked: new Map(), shapeRewrites: [] };
}

/** Id the next union added on top of `analysis` and `additions` gets. */
export function nextUnionId(analysis: ChannelAnalysis, additions: AnalysisAdditions): number {
  return analysis.unions.length + additions.unions.length;
}

/**
 * Merge what a transform added, then forget constants the transform left unused (a removed
 * BatchNorm's vectors, a replaced bias), so the analysis describes exactly the current graph.
 */
export function mergeAdditions(graph: Graph, analysis: ChannelAnalysis, partition: Partition, additions: AnalysisAdditions): void {
  analysis.unions.push(...additions.unions);
  partition.unions.push(...additions.groups);
  for (const [v, axes] of additions.params) analysis.params.set(v, axes);
  for (const [v, t] of additions.tracked) analysis.tracked.set(v, t);
  analysis.shapeRewrites.push(...additions.shapeRewrites);
  const outputs = new Set(graph.outputs);
  for (const value of [...analysis.params.keys()]) {
    if (value.uses.length === 0 && !outputs.has(value)) analysis.params.delete(value);
  }
}
