// prune-to-rate: one static, standalone ONNX graph per slice rate.
//
// Works on a clone of the reordered model (compiler/clone.ts) with the analysis carried over to
// the clone (passes/remap-analysis.ts), so every rate starts from the same graph. Every constant recorded by couple-channels is cut to the kept channels of
// each axis (a prefix of every segment of its space), grouped convs get their new `group`, and
// shape constants holding a sliced size are rewritten. Inputs and outputs keep their names,
// shapes and dtypes (couple-channels pinned them); the opset is kept. Shapes are re-inferred.
// A channel shuffle whose channels are cut becomes one Gather: the sliced tensors hold the kept
// channels in the full tensor's order, and the kept channels of a shuffle's output are a fixed
// reordering of those of its input (output i holds input perm[i]), which the Reshape/Transpose
// pair no longer computes once the shuffled groups keep different channels.

import type { Model, Node, Value } from '../compiler/ir.js';
import { refreshShapes } from '../compiler/shape-inference.js';
import { Tensor } from '../compiler/tensor.js';
import { gatherAxesShared, type AxisPick, type GatherJob } from '../compiler/tensor-ops.js';
import { OpBuilder } from '../compiler/op-builder.js';
import type { ChannelAnalysis, ChannelShuffle } from './couple-channels.js';
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
  // one new constant per rewritten input (a Split's sizes rewrite every entry); the input is a
  // constant, or absent or computed at run time, and then `values` holds its entries
  const sites: { node: Node; index: number; name: string; entries: bigint[] }[] = [];
  for (const r of analysis.shapeRewrites) {
    let site = sites.find((x) => x.node === r.node && x.index === r.inputIndex);
    if (!site) {
      const input = r.node.inputs[r.inputIndex];
      const entries = input?.const ? input.const.bigints() : [...r.values!];
      site = { node: r.node, index: r.inputIndex, name: input?.name ?? `${r.node.name}_input${r.inputIndex}`, entries };
      sites.push(site);
    }
    site.entries[r.entry] = BigInt(keptCount(r.space, kept));
  }
  for (const site of sites) {
    const fresh = graph.addInitializer(`${site.name}_sliced`, Tensor.int64([site.entries.length], site.entries));
    site.node.setInput(site.index, fresh);
  }
  let gathered = 0;
  for (const s of analysis.shuffles) if (gatherShuffle(model, s, kept)) gathered++;
  // the shuffles' Reshape targets were computed from run-time shapes: those chains are dead now
  if (gathered > 0) graph.removeDeadNodes();
  graph.removeUnusedInitializers();
  refreshShapes(model);
}

/** Replace a cut shuffle by Gather(x, indices, axis 1); false when it keeps every channel. */
function gatherShuffle(model: Model, s: ChannelShuffle, kept: KeptWidths): boolean {
  const keptIn = keptIndices(s.inSpace, kept);
  if (keptIn.length === s.perm.length) return false;
  const rank = new Map(keptIn.map((p, i) => [p, i]));
  const indices = keptIndices(s.outSpace, kept).map((p) => {
    const at = rank.get(s.perm[p]!);
    if (at === undefined) throw new Error(`prune-to-rate: ${s.last.label()} keeps output channel ${p} but not the input channel it shows`);
    return at;
  });
  const graph = model.graph;
  const b = new OpBuilder(graph, model.opset());
  const output = s.last.outputs[0]!;
  const index = graph.addInitializer(`${output.name}_kept`, Tensor.int64([indices.length], indices.map(BigInt)));
  const result = b.gather(s.first.inputs[0]!, index, 1, { before: s.last, name: `${s.last.name}_gather` });
  graph.replaceAllUses(output, result, { outputs: true });
  const name = output.name;
  for (const node of [s.last, s.first.outputs[0]!.uses[0]!.node, s.first]) graph.removeNode(node);
  result.name = name;
  return true;
}
