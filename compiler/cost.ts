// Parameter and multiply-accumulate counts of a model, per sample. Counted from the graph's own
// shapes, so it is an independent check of what a pass claims. Every MatMul/Gemm/Conv counts,
// including products of two activations (attention scores and their weighted sums).
//
// Per sample: shapes are inferred with a symbolic batch (dim 0 of the graph inputs) set to 1, so
// dims computed from the batch (a [tokens, batch·heads, d] attention layout, a [batch·tokens, d]
// Gemm) count one sample wherever the batch axis ends up; a fixed batch B (dim 0 of the first
// input) divides the total. Other symbolic dims (e.g. image sizes) count as 1. MACs of a node are
// (output elements) × (summed inputs per output).

import type { Dim, Model, Node } from './ir.js';
import { refreshShapes } from './shape-inference.js';
import { DataType } from './tensor.js';

export interface Cost {
  parameters: number;
  macs: number;
}

function numeric(ds: Dim[] | null | undefined): number[] | null {
  if (!ds) return null;
  return ds.map((d) => (typeof d === 'number' ? d : 1));
}

function product(ds: number[]): number {
  let p = 1;
  for (const d of ds) p *= d;
  return p;
}

const FLOAT_TYPES = new Set<number>([DataType.FLOAT, DataType.FLOAT16, DataType.BFLOAT16, DataType.DOUBLE]);

/** Multiply-adds of one node over all of its output (not per sample). */
export function nodeMacs(node: Node): number {
  const out = numeric(node.outputs[0]?.shape);
  const w = numeric(node.inputs[1]?.shape ?? node.inputs[1]?.const?.dims ?? null);
  const x = numeric(node.inputs[0]?.shape);
  if (!out) return 0;
  switch (node.op) {
    case 'Conv': {
      if (!w) return 0;
      // each output element sums over (C/group)·kernel inputs
      return product(out) * product(w.slice(1));
    }
    case 'ConvTranspose': {
      if (!w || !x) return 0;
      // each input element is spread over (M/group)·kernel outputs
      return product(x) * product(w.slice(1));
    }
    case 'Gemm': {
      if (!x) return 0;
      const k = node.attrInt('transA', 0) ? x[0]! : x[1]!;
      return product(out) * k;
    }
    case 'MatMul': {
      if (!x) return 0;
      return product(out) * x[x.length - 1]!;
    }
    default:
      return 0;
  }
}

export function modelCost(model: Model): Cost {
  const graph = model.graph;
  let parameters = 0;
  for (const init of graph.initializers) {
    if (init.const && FLOAT_TYPES.has(init.const.dtype)) parameters += init.const.size;
  }
  for (const node of graph.nodes) {
    const c = node.outputs[0]?.const;
    if (node.op === 'Constant' && c && FLOAT_TYPES.has(c.dtype)) parameters += c.size;
  }
  const inputs = graph.inputs.filter((v) => !v.const && v.tensorType?.shape);
  const symbolic = inputs.some((v) => typeof v.tensorType!.shape![0] === 'string');
  const saved = inputs.map((v) => v.type);
  if (symbolic) {
    for (const v of inputs) v.type = { ...v.tensorType!, shape: v.tensorType!.shape!.map((d, i) => (i === 0 && typeof d === 'string' ? 1 : d)) };
    refreshShapes(model);
  }
  let macs = 0;
  for (const node of graph.nodes) macs += nodeMacs(node);
  if (symbolic) {
    inputs.forEach((v, i) => (v.type = saved[i]!));
    refreshShapes(model);
  }
  const batch = inputs[0]?.tensorType?.shape?.[0];
  return { parameters, macs: typeof batch === 'number' && batch > 0 ? macs / batch : macs };
}
