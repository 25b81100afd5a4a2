// Parameter and multiply-accumulate counts of a model, per sample (symbolic dims count as 1).
// Counted from the graph's own shapes, so it is an independent check of what a pass claims.

import type { Dim, Model, Node } from './ir.js';
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

export function nodeMacs(node: Node): number {
  const out = numeric(node.outputs[0]?.shape);
  const w = numeric(node.inputs[1]?.shape ?? node.inputs[1]?.const?.dims ?? null);
  const x = numeric(node.inputs[0]?.shape);
  if (!out) return 0;
  switch (node.op) {
    case 'Conv': {
      if (!w) return 0;
      // each output element sums over (C/group)·kernel inputs
      return product(out.slice(1)) * product(w.slice(1));
    }
    case 'ConvTranspose': {
      if (!w || !x) return 0;
      return product(x.slice(1)) * product(w.slice(1));
    }
    case 'Gemm': {
      if (!x) return 0;
      const k = node.attrInt('transA', 0) ? x[0]! : x[1]!;
      return product(out.slice(1)) * k;
    }
    case 'MatMul': {
      if (!x) return 0;
      const k = x[x.length - 1]!;
      return product(out.slice(1)) * k;
    }
    default:
      return 0;
  }
}

export function modelCost(model: Model): Cost {
  let parameters = 0;
  for (const init of model.graph.initializers) {
    if (init.const && FLOAT_TYPES.has(init.const.dtype)) parameters += init.const.size;
  }
  let macs = 0;
  for (const node of model.graph.nodes) {
    const c = node.outputs[0]?.const;
    if (node.op === 'Constant' && c && FLOAT_TYPES.has(c.dtype)) parameters += c.size;
    macs += nodeMacs(node);
  }
  return { parameters, macs };
}
