// The parameter map: for every initializer of the full (reordered) model, its role in training
// and how each per-rate graph cuts it. It is the contract between compiler, trainer and
// runtime: gather(full, rate) gives the initializer of the same name in the rate's graph, and a
// trainer writes a trained sub-tensor back by scattering it through the same indices.
//
// A cut axis holds segments in order; segment s starts at `offset` in the full tensor, spans
// round(width(union) · scale) entries, and at a rate keeps the first round(kept(union) · scale),
// where kept(union) is the union's boundary at the rate's active group count (manifest `unions`)
// or its whole width when it is not sliced. This is exactly what prune-to-rate keeps
// (channel-space.ts keptIndices). After a channel shuffle segments are not in order on the axis:
// each then lists `positions`, the axis index of every entry, keeps the first of them, and the
// kept entries of the axis are taken in ascending order.

import type { ManifestParameter, ParameterRole, ParameterSegment } from './artifacts.js';
import type { Model, Value } from './ir.js';
import { DataType, dtypeShortName } from './tensor.js';
import { isPlaced, resolve, segmentPositions } from '../passes/channel-space.js';
import type { ChannelAnalysis } from '../passes/couple-channels.js';

/** Input slots that hold trainable parameters, by op: index → role. */
const SLOTS: Record<string, Record<number, ParameterRole>> = {
  Conv: { 1: 'weight', 2: 'bias' },
  ConvTranspose: { 1: 'weight', 2: 'bias' },
  Gemm: { 0: 'weight', 1: 'weight', 2: 'bias' },
  MatMul: { 0: 'weight', 1: 'weight' },
  PRelu: { 1: 'weight' },
  BatchNormalization: { 1: 'norm-scale', 2: 'norm-bias', 3: 'running-stat', 4: 'running-stat' },
  InstanceNormalization: { 1: 'norm-scale', 2: 'norm-bias' },
  LayerNormalization: { 1: 'norm-scale', 2: 'norm-bias' },
  GroupNormalization: { 1: 'norm-scale', 2: 'norm-bias' },
};

/** The role of a constant read in input slot `index` of `node`, when that slot holds a parameter. */
export function parameterSlotRole(node: { op: string; domain: string }, index: number): ParameterRole | undefined {
  return node.domain === '' ? SLOTS[node.op]?.[index] : undefined;
}

export interface RoleHints {
  /** Constants that are part of an operation, never trained (group-norm helpers). */
  fixed: Set<Value>;
  /** Norm affine vectors inserted by slicec. */
  normScale: Set<Value>;
  normBias: Set<Value>;
}

function roleOf(value: Value, analysis: ChannelAnalysis, hints: RoleHints): ParameterRole {
  if (value.const?.dtype !== DataType.FLOAT || hints.fixed.has(value)) return 'fixed';
  if (hints.normScale.has(value)) return 'norm-scale';
  if (hints.normBias.has(value)) return 'norm-bias';
  for (const use of value.uses) {
    const role = parameterSlotRole(use.node, use.index);
    if (role) return role;
  }
  // per-channel constants of elementwise ops (a bias added after a MatMul, a layer scale) are
  // parameters when they are cut with the channels; lone scalars (GELU's 0.5) are not
  if (analysis.params.has(value)) {
    const op = value.uses[0]?.node.op;
    if (op === 'Add' || op === 'Sub') return 'bias';
    return 'weight';
  }
  return 'fixed';
}

export function buildParameterMap(model: Model, analysis: ChannelAnalysis, hints: RoleHints): ManifestParameter[] {
  // shape constants holding a sliced size are written anew per rate (`<name>_sliced`), not cut
  const rewritten = new Set(analysis.shapeRewrites.map((r) => r.node.inputs[r.inputIndex]));
  const out: ManifestParameter[] = [];
  for (const value of model.graph.initializers) {
    if (rewritten.has(value)) continue;
    const t = value.const!;
    const cuts = (analysis.params.get(value) ?? []).map((p) => {
      let offset = 0;
      const placed = isPlaced(p.space);
      const positions = segmentPositions(p.space);
      const segments = p.space.map((seg, i) => {
        const r = resolve(seg);
        const entry: ParameterSegment = { union: r.root.id, offset, scale: r.perFine };
        if (placed) entry.positions = [...positions[i]!];
        offset += Math.round(r.root.fineWidth * r.perFine);
        return entry;
      });
      return { axis: p.axis, segments };
    });
    out.push({
      name: value.name,
      role: roleOf(value, analysis, hints),
      dtype: dtypeShortName[t.dtype] ?? String(t.dtype),
      dims: [...t.dims],
      cuts,
    });
  }
  return out;
}
