// fold-shape-chains: once every dim is static (a train-step graph with its batch fixed), the
// Shape → Gather → Unsqueeze → Concat chains exporters build for dynamic sizes compute
// constants. Shape inference already folds them along the way; this pass writes the folded
// integer tensors in as initializers so later passes (autodiff: Slice starts, Reshape targets)
// see constants, and drops the chains that fed them.

import type { Model } from '../compiler/ir.js';
import { inferShapes } from '../compiler/shape-inference.js';
import { DataType, Tensor } from '../compiler/tensor.js';

const INTEGER_TYPES = new Set<number>([DataType.INT64, DataType.INT32]);

export function foldShapeChains(model: Model): number {
  const graph = model.graph;
  const { known } = inferShapes(model, { overwrite: true });
  let folded = 0;
  for (const node of graph.nodes) {
    for (const out of node.outputs) {
      const k = known.get(out);
      if (!k || out.const || !INTEGER_TYPES.has(k.dtype) || out.uses.length === 0) continue;
      if (!k.data.every((e) => typeof e === 'bigint')) continue;
      const values = k.data as bigint[];
      const tensor = k.dtype === DataType.INT64
        ? Tensor.int64([...k.dims], values)
        : Tensor.fromTyped(DataType.INT32, [...k.dims], Int32Array.from(values, Number));
      const constant = graph.addInitializer(`${out.name}.folded`, tensor);
      graph.replaceAllUses(out, constant, { outputs: false });
      folded++;
    }
  }
  if (folded > 0) {
    graph.removeDeadNodes();
    graph.removeUnusedInitializers();
  }
  return folded;
}
