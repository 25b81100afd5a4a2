// Test helper: rewrite the entries of every sliced constant that a rate drops.

import { cloneModel } from '../../compiler/clone.js';
import type { Model } from '../../compiler/ir.js';
import { Tensor } from '../../compiler/tensor.js';
import { keptIndices, type KeptWidths } from '../../passes/channel-space.js';
import type { ChannelAnalysis } from '../../passes/couple-channels.js';
import { remapAnalysis } from '../../passes/remap-analysis.js';

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
