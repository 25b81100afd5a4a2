// prune-to-rate: one static, standalone ONNX graph per slice rate.
//
// Works on a clone of the reordered model (compiler/clone.ts) with the analysis carried over to
// the clone (passes/remap-analysis.ts), so every rate starts from the same graph. Every constant recorded by couple-channels is cut to the kept channels of
// each axis (a prefix of every segment of its space), grouped convs get their new `group`, and
// shape constants holding a sliced size are rewritten. Inputs and outputs keep their names,
// shapes and dtypes (couple-channels pinned them); the opset is kept. Shapes are re-inferred.

import type { Model, Value } from '../compiler/ir.js';
import { refreshShapes } from '../compiler/shape-inference.js';
import { Tensor } from '../compiler/tensor.js';
import { gatherAxesShared, type AxisPick, type GatherJob } from '../compiler/tensor-ops.js';
import type { ChannelAnalysis } from './couple-channels.js';
import { keptCount, keptIndices, type KeptWidths } from './channel-space.js';

/** Cut `model` to the kept widths; `analysis` must describe this model's own values and nodes. */
export function pruneToRate(model: Model, analysis: ChannelAnalysis, kept: KeptWidths): void {
  const graph = model.graph;
  const jobs: (GatherJob & { target: Value })[] = [];
  for (const [target, axes] of analysis.params) {
    if (!target.const) throw new Error(`prune-to-rate: ${target.name} is not a constant`);
    const tensor = target.const;
    const picks: AxisPick[] = [];
    for (const p of axes) {
      const indices = keptIndices(p.space, kept);
      if (indices.length !== tensor.dims[p.axis]) picks.push({ axis: p.axis, indices });
    }
    if (picks.length > 0) jobs.push({ target, tensor, picks });
  }
  // one copy per tensor, all in one allocation: the graph's cut weights are freed together
  const cut = gatherAxesShared(jobs);
  jobs.forEach((j, i) => graph.setConstant(j.target, cut[i]!));
  for (const g of analysis.groupedConvs) g.node.setInt('group', keptCount(g.outSpace, kept) / g.outPerGroup);
  for (const r of analysis.shapeRewrites) {
    const node = r.node;
    const shapeValue = node.inputs[r.inputIndex]!;
    const entries = shapeValue.const!.bigints();
    entries[r.entry] = BigInt(keptCount(r.space, kept));
    const fresh = graph.addInitializer(`${shapeValue.name}_sliced`, Tensor.int64([entries.length], entries));
    node.setInput(r.inputIndex, fresh);
  }
  graph.removeUnusedInitializers();
  refreshShapes(model);
}
