// fold-constants: turn what is constant in fact into constants couple-channels can cut.
//
// PyTorch's exporter deduplicates equal initializers (zero biases, equal norm scales, repeated
// blocks' weights) and feeds the copies through `Identity` nodes, so one tensor reaches several
// layers and the layers would have to be cut alike, or be pinned. An Identity of a constant is
// that constant: each such output becomes an initializer of its own (sharing the stored bytes
// until a rate cuts it), so every consumer is cut by its own channels.
//
// Reshape targets are built at run time from Shape → Gather → Unsqueeze → Concat so the batch
// stays dynamic. Shape inference folds those chains element by element (a number, or a symbol
// such as the batch dim). A target whose elements are numbers, except symbols that equal the
// input's dim at the same position (written 0: copy that dim) and at most one other unknown
// (written -1: inferred from the element count), is the same at every batch size: it becomes a
// constant, so the channel entry is one couple-channels can rewrite at each rate. The chain
// nodes nothing else reads are removed.

import type { Model, Node, Value } from '../compiler/ir.js';
import { inferShapes, type KnownValues } from '../compiler/shape-inference.js';
import { Tensor } from '../compiler/tensor.js';

export interface FoldResult {
  /** Identity outputs of constants that became initializers of their own. */
  aliases: number;
  /** Reshape targets computed at run time that became constants. */
  shapes: number;
  /** Nodes removed because nothing read their outputs any more. */
  removed: number;
}

export function foldConstants(model: Model): FoldResult {
  const graph = model.graph;
  const overridable = new Set(graph.inputs);
  let aliases = 0;
  for (const node of [...graph.nodes]) {
    if (node.op !== 'Identity' || node.domain !== '') continue;
    const input = node.inputs[0];
    const output = node.outputs[0];
    if (!input?.const || overridable.has(input) || !output || graph.outputs.includes(output)) continue;
    const copy = graph.addInitializer(`${output.name}_folded`, input.const.clone());
    graph.replaceAllUses(output, copy);
    graph.removeNode(node);
    renameTo(copy, output.name, graph);
    aliases++;
  }

  const { known } = inferShapes(model);
  let shapes = 0;
  for (const node of graph.nodes) {
    if (node.op !== 'Reshape' || node.domain !== '') continue;
    const target = node.inputs[1];
    if (!target || target.const) continue;
    const entries = constantTarget(node, target, known);
    if (!entries) continue;
    const constant = graph.addInitializer(`${target.name}_folded`, Tensor.int64([entries.length], entries));
    node.setInput(1, constant);
    shapes++;
  }
  const removed = shapes > 0 ? graph.removeDeadNodes() : 0;
  if (shapes > 0) graph.removeUnusedInitializers();
  return { aliases, shapes, removed };
}

/** The folded copy takes the name of the Identity output it replaces (the name users know). */
function renameTo(value: Value, name: string, graph: Model['graph']): void {
  value.name = name;
  value.const!.name = name;
  graph.claimName(name);
}

/** The constant a run-time Reshape target always equals, or null when it may vary. */
function constantTarget(node: Node, target: Value, known: KnownValues): bigint[] | null {
  const k = known.get(target);
  const inShape = node.inputs[0]?.shape;
  if (!k || k.dims.length !== 1 || !inShape) return null;
  const allowZero = node.attrInt('allowzero', 0) === 1;
  const out: bigint[] = [];
  let inferred = k.data.some((e) => e === -1n);
  for (let i = 0; i < k.data.length; i++) {
    const e = k.data[i];
    if (typeof e === 'bigint') {
      if (allowZero && e === 0n) return null;
      out.push(e);
    } else if (typeof e === 'string' && inShape[i] === e && !allowZero) {
      out.push(0n);
    } else if (!inferred && (e === null || typeof e === 'string')) {
      inferred = true;
      out.push(-1n);
    } else {
      return null;
    }
  }
  return out;
}
