// Carry a channel analysis over to a clone of the model it was made on.
//
// Unions and spaces describe channels, not graph objects, so they are shared; everything that
// names a value or a node (parameters, tracked tensors, grouped convs, shape rewrites, shuffles, layers,
// layer-norm sites) is translated through the clone's map. Entries whose value or node the
// clone lacks are an internal error: a clone holds every value of its source.

import type { CloneMap } from '../compiler/clone.js';
import type { Node, Value } from '../compiler/ir.js';
import type { ChannelAnalysis } from './couple-channels.js';

export function remapAnalysis(analysis: ChannelAnalysis, map: CloneMap): ChannelAnalysis {
  const value = (v: Value): Value => {
    const c = map.values.get(v);
    if (!c) throw new Error(`remap-analysis: ${v.name} has no copy`);
    return c;
  };
  const node = (n: Node): Node => {
    const c = map.nodes.get(n);
    if (!c) throw new Error(`remap-analysis: ${n.label()} has no copy`);
    return c;
  };
  return {
    unions: analysis.unions,
    tracked: new Map([...analysis.tracked].filter(([v]) => map.values.has(v)).map(([v, t]) => [value(v), t])),
    params: new Map([...analysis.params].map(([v, axes]) => [value(v), axes])),
    groupedConvs: analysis.groupedConvs.map((g) => ({ ...g, node: node(g.node) })),
    shapeRewrites: analysis.shapeRewrites.map((r) => ({ ...r, node: node(r.node) })),
    shuffles: analysis.shuffles.map((s) => ({ ...s, first: node(s.first), last: node(s.last) })),
    layers: analysis.layers.map((l) => ({ ...l, node: node(l.node) })),
    layerNorms: analysis.layerNorms
      .filter((s) => s.nodes.every((n) => map.nodes.has(n)))
      .map((s) => ({ ...s, input: value(s.input), output: value(s.output), nodes: s.nodes.map(node) })),
  };
}

/**
 * Follow values that a transform replaced (upgrade-opset's take-overs): tracked tensors are
 * re-keyed to the value that now stands for them. Constants and layer nodes are never replaced.
 */
export function applyReplacements(analysis: ChannelAnalysis, replaced: Map<Value, Value>): ChannelAnalysis {
  if (replaced.size === 0) return analysis;
  const tracked = new Map(analysis.tracked);
  for (const [from, to] of replaced) {
    const t = tracked.get(from);
    if (t) tracked.set(to, t);
  }
  return { ...analysis, tracked };
}
