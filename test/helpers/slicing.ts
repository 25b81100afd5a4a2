// Test helper: rewrite the entries of every sliced constant that a rate drops.

import { cloneModel } from '../../compiler/clone.js';
import type { Model } from '../../compiler/ir.js';
import { decodeModel, encodeModel } from '../../compiler/onnx-codec.js';
import { Tensor } from '../../compiler/tensor.js';
import { keptIndices, type KeptWidths } from '../../passes/channel-space.js';
import { coupleChannels, type ChannelAnalysis } from '../../passes/couple-channels.js';
import { keptWidths, partitionChannels } from '../../passes/partition-channels.js';
import { pruneToRate } from '../../passes/prune-to-rate.js';
import { remapAnalysis } from '../../passes/remap-analysis.js';
import { reorderChannels } from '../../passes/reorder-channels.js';

/** A clone of the analysed model with the analysis carried over to it. */
export function copyWithAnalysis(model: Model, analysis: ChannelAnalysis): { model: Model; analysis: ChannelAnalysis } {
  const { model: copy, map } = cloneModel(model);
  return { model: copy, analysis: remapAnalysis(analysis, map) };
}

/** Apply `change` to every dropped entry of every constant the analysis cuts; returns how many. */
export function editDropped(copy: Model, analysis: ChannelAnalysis, kept: KeptWidths, change: (x: number, i: number) => number): number {
  const byName = copy.graph.valuesByName();
  let touched = 0;
  for (const [value, axes] of analysis.params) {
    const target = byName.get(value.name)!;
    const data = target.const!.data() as Float32Array;
    const dims = target.const!.dims;
    for (const p of axes) {
      const keep = new Set(keptIndices(p.space, kept));
      let inner = 1;
      for (let i = p.axis + 1; i < dims.length; i++) inner *= dims[i]!;
      for (let i = 0; i < data.length; i++) {
        if (!keep.has(Math.floor(i / inner) % dims[p.axis]!)) {
          data[i] = change(data[i]!, i);
          touched++;
        }
      }
    }
    copy.graph.setConstant(target, Tensor.fromTyped(target.const!.dtype, [...dims], data));
  }
  return touched;
}

/**
 * `model` (shape-inferred) coupled, partitioned into `groups` and reordered in place; its graph
 * pruned to `rate`, and a copy of the full graph with every dropped weight zeroed (`zeroed`:
 * how many), which must compute what the pruned one does.
 */
export function prunedAndMasked(model: Model, groups: number, rate: number): { analysis: ChannelAnalysis; kept: KeptWidths; pruned: Model; masked: Model; zeroed: number } {
  const analysis = coupleChannels(model);
  const partition = partitionChannels(analysis, groups);
  reorderChannels(model.graph, analysis, partition);
  const snapshot = encodeModel(model);
  const kept = keptWidths(partition, rate);
  const { model: pruned, analysis: prunedAnalysis } = copyWithAnalysis(model, analysis);
  pruneToRate(pruned, prunedAnalysis, kept);
  const masked = decodeModel(snapshot, null);
  const zeroed = editDropped(masked, analysis, kept, () => 0);
  return { analysis, kept, pruned, masked, zeroed };
}
