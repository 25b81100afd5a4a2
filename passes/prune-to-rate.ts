// prune-to-rate: one static, standalone ONNX graph per slice rate.
//
// Works on a fresh copy of the reordered model (decoded from its bytes, so every rate starts
// from the same graph; nodes keep their order, so analysis results are matched by node index
// and constant name). Every constant recorded by couple-channels is cut to the kept channels of
// each axis (a prefix of every segment of its space), grouped convs get their new `group`, and
// shape constants holding a sliced size are rewritten. Inputs and outputs keep their names,
// shapes and dtypes (couple-channels pinned them); the opset is kept. Shapes are re-inferred.

import type { Model } from '../compiler/ir.js';
import { refreshShapes } from '../compiler/shape-inference.js';
import { Tensor } from '../compiler/tensor.js';
import { gatherAxis } from '../compiler/tensor-ops.js';
import type { ChannelAnalysis } from './couple-channels.js';
import { keptCount, keptIndices, type KeptWidths } from './channel-space.js';

/**
 * Cut `copy` (a structural copy of the model the analysis was made on) to the kept widths.
 * `originalNodes` is the analysed model's node list, used to match nodes by position.
 */
export function pruneToRate(copy: Model, analysis: ChannelAnalysis, originalNodes: readonly object[], kept: KeptWidths): void {
  const graph = copy.graph;
  if (graph.nodes.length !== originalNodes.length) throw new Error('prune-to-rate: the copy does not match the analysed model');
  const nodeAt = new Map<object, number>();
  originalNodes.forEach((n, i) => nodeAt.set(n, i));
  const byName = graph.valuesByName();

  for (const [value, axes] of analysis.params) {
    const target = byName.get(value.name);
    if (!target?.const) throw new Error(`prune-to-rate: constant ${value.name} is missing from the copy`);
    let tensor = target.const;
    for (const p of axes) {
      const indices = keptIndices(p.space, kept);
      if (indices.length !== tensor.dims[p.axis]) tensor = gatherAxis(tensor, p.axis, indices);
    }
    if (tensor !== target.const) graph.setConstant(target, tensor);
  }
  for (const g of analysis.groupedConvs) {
    const node = graph.nodes[nodeAt.get(g.node)!]!;
    node.setInt('group', keptCount(g.outSpace, kept) / g.outPerGroup);
  }
  for (const r of analysis.shapeRewrites) {
    const node = graph.nodes[nodeAt.get(r.node)!]!;
    const shapeValue = node.inputs[r.inputIndex]!;
    const entries = shapeValue.const!.bigints();
    entries[r.entry] = BigInt(keptCount(r.space, kept));
    const fresh = graph.addInitializer(`${shapeValue.name}_sliced`, Tensor.int64([entries.length], entries));
    node.setInput(r.inputIndex, fresh);
  }
  graph.removeUnusedInitializers();
  refreshShapes(copy);
}
