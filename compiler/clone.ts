// A structural copy of a model with a map from every original value and node to its copy.
//
// Steps that fan out (one graph per rate, one train-step graph per rate) work on copies of the
// analysed model; the analyses refer to the original's values and nodes, so they are carried
// over through this map (passes/remap-analysis.ts), never by node position or value name.
//
// Tensors are shared, not copied: passes replace a constant's data with `graph.setConstant`
// (a new Tensor), they never write into a tensor, so a clone costs a few objects per node, not
// a copy of the weights. Codec-owned leftovers
// (`extra`) and opaque attributes (subgraph bodies) are shared the same way.

import { Graph, Model, Node, Value, type ValueType } from './ir.js';

export interface CloneMap {
  values: Map<Value, Value>;
  nodes: Map<Node, Node>;
}

export interface Cloned {
  model: Model;
  map: CloneMap;
}

function copyType(t: ValueType | null): ValueType | null {
  if (!t || t.kind === 'opaque') return t;
  return { ...t, shape: t.shape ? [...t.shape] : null };
}

function copyValueFields(from: Value, to: Value): void {
  to.type = copyType(from.type);
  to.const = from.const;
  to.docString = from.docString;
  to.extra = from.extra;
  to.declaredType = from.declaredType;
}

export function cloneModel(model: Model): Cloned {
  const values = new Map<Value, Value>();
  const nodes = new Map<Node, Node>();
  const src = model.graph;
  const graph = new Graph();
  graph.name = src.name;
  graph.docString = src.docString;
  graph.extra = src.extra;

  const copyOf = (v: Value): Value => {
    const c = values.get(v);
    if (!c) throw new Error(`clone: ${v.name} is used before it is defined`);
    return c;
  };
  const fresh = (v: Value): Value => {
    const c = new Value(v.name);
    copyValueFields(v, c);
    values.set(v, c);
    graph.claimName(v.name);
    return c;
  };
  for (const v of src.inputs) graph.inputs.push(fresh(v));
  for (const v of src.initializers) graph.initializers.push(values.get(v) ?? fresh(v));
  for (const node of src.nodes) {
    const n = new Node(node.op, node.domain, node.name);
    n.docString = node.docString;
    n.extra = node.extra;
    for (const [name, entry] of node.attributes) {
      n.attributes.set(name, { attr: entry.attr, extra: entry.extra });
    }
    node.inputs.forEach((v, i) => n.setInput(i, v ? copyOf(v) : null));
    for (const v of node.captures) n.addCapture(copyOf(v));
    for (const o of node.outputs) {
      const c = n.addOutput(o.name);
      copyValueFields(o, c);
      values.set(o, c);
    }
    graph.addNode(n);
    nodes.set(node, n);
  }
  graph.outputs = src.outputs.map(copyOf);

  const copy = new Model(graph);
  copy.irVersion = model.irVersion;
  copy.opsetImports = new Map(model.opsetImports);
  copy.producerName = model.producerName;
  copy.producerVersion = model.producerVersion;
  copy.domain = model.domain;
  copy.modelVersion = model.modelVersion;
  copy.docString = model.docString;
  copy.metadataProps = model.metadataProps.map(([k, v]) => [k, v]);
  copy.extra = model.extra;
  copy.baseDir = model.baseDir;
  return { model: copy, map: { values, nodes } };
}
