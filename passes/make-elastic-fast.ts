// make-elastic-fast: one graph for every compiled rate that runs at about the speed of the
// per-rate graphs, at about the size of one model.
//
// Today's elastic graph (make-elastic.ts) cuts weights with run-time Slices, so onnxruntime
// cannot prepack them, lay convs out as NCHWc or fuse BN/ReLU: it runs 1.2–2.5× slower than the
// pruned graphs. Here the body is a balanced tree of `If` nodes on `slice_rate` whose leaves are
// the pruned graphs themselves (prune-to-rate on a clone per rate). A leaf stores none of its
// weights: each cut weight is a Slice (a Gather for a composed space) with constant bounds of the
// ONE full-size initializer of the outer graph, so the file stays ~1× the model and onnxruntime
// folds every such Slice at load into a branch-local constant, which then gets the fast kernels.
// Unchanged weights go through a full-range Slice for the same reason: a plain outer-scope
// reference is not prepacked. Small constants (shape vectors, scalars) are copied into the leaf.
//
// Rate semantics are make-elastic's: k = clamp(ceil(rate·G − 1e-6), 1, G) active groups. The
// leaf for compiled rate r serves every k in (k of the next smaller compiled rate, k(r)], i.e. a
// rate between compiled rates runs the next compiled rate up; a k above every compiled rate runs
// the largest. The tree compares k (as a float) with k_mid + 0.5 at each split, so a request pays
// ceil(log2 R) If nodes for R distinct rates. With one rate the leaf is inlined.
//
// BatchNorm statistics kept per rate (`statistics`): each is stored once as a [G, C] table
// `<name>_per_rate` whose row k − 1 serves the leaf of k active groups; the leaf cuts its row
// (a Gather with a constant index, then the rate's usual Slice), which onnxruntime folds at load
// like any other cut. At compile time every row is the full statistics; a fine-tune refills each
// row with the statistics recalibrated for its rate (compiler/reemit.ts), so elastic at rate r
// stays equal to the rate file.

import { cloneModel } from '../compiler/clone.js';
import { Graph, Node, Value, tensorType, type Model } from '../compiler/ir.js';
import { encodeGraphAttribute } from '../compiler/onnx-codec.js';
import { OpBuilder } from '../compiler/op-builder.js';
import { DataType, Tensor } from '../compiler/tensor.js';
import type { ChannelAnalysis, ParamAxis } from './couple-channels.js';
import { keptIndices, type KeptWidths } from './channel-space.js';
import { SLICE_RATE_INPUT } from './make-elastic.js';
import { activeGroups, keptWidths, type Partition } from './partition-channels.js';
import { pruneToRate } from './prune-to-rate.js';
import { remapAnalysis } from './remap-analysis.js';

/**
 * Integer constants (shape vectors, axes) with fewer elements are copied into each leaf instead
 * of shared. Float constants are always shared: they are the weights a fine-tune re-emits into
 * the outer graph, so no leaf may keep a copy of its own.
 */
const SHARE_MIN_ELEMENTS = 16;

interface Branch {
  rate: number;
  k: number;
}

export interface ElasticFastOptions {
  /** Float initializers of `model` (BatchNorm running statistics) kept per rate. */
  statistics?: ReadonlySet<Value>;
}

export interface ElasticFast {
  model: Model;
  input: string;
  /** Statistic name → the name of its [G, C] per-rate table in the outer graph. */
  tables: Map<string, string>;
}

/** One elastic model for `rates`; `analysis` describes `model`, which is left unchanged. */
export function makeElasticFast(model: Model, analysis: ChannelAnalysis, partition: Partition, rates: number[], options: ElasticFastOptions = {}): ElasticFast {
  if (rates.length === 0) throw new Error('make-elastic-fast: no rates');
  const branches: Branch[] = [];
  for (const rate of [...rates].sort((a, b) => a - b)) {
    const k = activeGroups(rate, partition.groups);
    if (branches[branches.length - 1]?.k !== k) branches.push({ rate, k });
  }

  const { model: out, map } = cloneModel(model);
  const main = out.graph;
  const outer = (v: Value): Value => {
    const c = map.values.get(v);
    if (!c) throw new Error(`make-elastic-fast: ${v.name} has no copy`);
    return c;
  };
  const templates = model.graph.outputs;
  // The outer graph keeps inputs, initializers and Constant nodes (shared weights live there).
  main.outputs = [];
  for (let i = main.nodes.length - 1; i >= 0; i--) {
    const node = main.nodes[i]!;
    if (node.op !== 'Constant' || node.domain !== '') main.removeNode(node);
  }

  const b = new OpBuilder(main, out.opset());
  const inputName = main.uniqueName(SLICE_RATE_INPUT);
  const rateValue = new Value(inputName, tensorType(DataType.FLOAT, []));
  main.inputs.push(rateValue);
  const scaled = b.sub(b.mul(rateValue, b.floatConst([partition.groups], [], 'slice_groups')), b.floatConst([1e-6], [], 'slice_tolerance'));
  const groupCount = b.op1('Ceil', [scaled], {}, { name: 'slice_k' });

  const ints = new Map<string, Value>();
  /** A shared int64 constant of the outer graph (slice bounds, gather indices). */
  const sharedInts = (values: number[], name: string): Value => {
    const key = values.join(',');
    let v = ints.get(key);
    if (!v) {
      v = b.int64Const(values, name);
      ints.set(key, v);
    }
    return v;
  };

  const tables = new Map<string, string>();
  const tableValues = new Map<Value, Value>();
  const rows = new Map<number, Value>();
  /** The full-size value a leaf of k groups cuts `from` out of: the outer weight, or its statistics row. */
  const source = (from: Value, k: number, leafBuilder: OpBuilder): Value => {
    if (!options.statistics?.has(from)) return outer(from);
    let table = tableValues.get(from);
    if (!table) {
      const data = from.const!.data() as Float32Array;
      const stacked = new Float32Array(partition.groups * data.length);
      for (let g = 0; g < partition.groups; g++) stacked.set(data, g * data.length);
      table = b.constant(Tensor.float32([partition.groups, data.length], stacked), `${from.name}_per_rate`);
      tableValues.set(from, table);
      tables.set(from.name, table.name);
    }
    let row = rows.get(k);
    if (!row) {
      row = b.int64Const([k - 1], `slice_row_${k}`, []);
      rows.set(k, row);
    }
    return leafBuilder.gather(table, row, 0);
  };

  const leaf = (branch: Branch, tag: string): Graph => buildLeaf(model, analysis, keptWidths(partition, branch.rate), (v, lb) => source(v, branch.k, lb), outer, sharedInts, main, tag);

  if (branches.length === 1) {
    inlineLeaf(main, leaf(branches[0]!, 'rate'), templates);
  } else {
    const ifOutputs = (graph: Graph, node: Node, names: string[]): Value[] => {
      templates.forEach((t, i) => {
        const type = t.type?.kind === 'tensor' ? { ...t.type, shape: t.type.shape ? [...t.type.shape] : null } : t.type;
        const o = node.addOutput(names[i]!, type);
        o.docString = t.docString;
      });
      graph.addNode(node);
      return node.outputs;
    };
    const tree = (graph: Graph, lo: number, hi: number, names: string[]): Value[] => {
      const mid = (lo + hi) >> 1;
      const threshold = b.floatConst([branches[mid]!.k + 0.5], [], `slice_k_le_${branches[mid]!.k}`);
      const cond = b.op1('Less', [groupCount, threshold], {}, { name: `slice_tree_${lo}_${hi}` });
      const node = new Node('If', '', main.uniqueName(`slice_tree_${lo}_${hi}`));
      node.setInput(0, cond);
      const sides: [string, number, number][] = [['then_branch', lo, mid], ['else_branch', mid + 1, hi]];
      const captured = new Set<Value>();
      for (const [attrName, from, to] of sides) {
        const body = from === to ? leaf(branches[from]!, `k${branches[from]!.k}`) : subtree(from, to);
        const { attr, captures } = encodeGraphAttribute(attrName, body);
        for (const n of body.nodes) n.detachInputs(); // the body now lives in the attribute
        node.setAttr(attrName, attr);
        for (const v of captures) {
          if (!captured.has(v)) node.addCapture(v);
          captured.add(v);
        }
      }
      return ifOutputs(graph, node, names);
    };
    const subtree = (lo: number, hi: number): Graph => {
      const graph = new Graph();
      graph.name = `slice_tree_${lo}_${hi}`;
      graph.outputs = tree(graph, lo, hi, templates.map((t) => main.uniqueName(`${graph.name}/${t.name}`)));
      return graph;
    };
    // the outer graph's outputs keep the model's names (their old producers are gone)
    main.outputs = tree(main, 0, branches.length - 1, templates.map((t) => t.name));
    main.outputs.forEach((o, i) => (o.extra = templates[i]!.extra));
  }

  main.removeDeadNodes();
  main.removeUnusedInitializers();
  const cycle = main.sortTopologically();
  if (cycle) throw new Error(`make-elastic-fast produced a cycle through ${cycle[0]!.label()}`);
  return { model: out, input: inputName, tables };
}

/**
 * The pruned graph at `kept` as a body without inputs: it reads the model's inputs and the
 * shared weights from the outer graph. ONNX names are unique across nested scopes, so every
 * value it defines is renamed `<tag>_<n>` (unique in the outer graph) and nodes lose their names:
 * the file holds one copy of the graph per rate, and on small models long names would outweigh
 * the weights (the per-rate graphs in slices/ keep the readable names).
 */
function buildLeaf(
  model: Model,
  analysis: ChannelAnalysis,
  kept: KeptWidths,
  cutFrom: (v: Value, b: OpBuilder) => Value,
  outer: (v: Value) => Value,
  sharedInts: (values: number[], name: string) => Value,
  main: Graph,
  tag: string,
): Graph {
  const { model: pruned, map } = cloneModel(model);
  const prunedAnalysis = remapAnalysis(analysis, map);
  pruneToRate(pruned, prunedAnalysis, kept);
  const graph = pruned.graph;
  const source = new Map<Value, Value>();
  for (const [from, to] of map.values) source.set(to, from);

  const inputs = new Set(graph.inputs);
  for (const input of inputs) graph.replaceAllUses(input, outer(source.get(input)!), { outputs: true });
  graph.inputs = [];
  graph.initializers = graph.initializers.filter((v) => !inputs.has(v)); // defaults of inputs

  const b = new OpBuilder(graph, pruned.opset());
  const constants = [...graph.initializers, ...graph.nodes.filter((n) => n.op === 'Constant' && n.domain === '').map((n) => n.outputs[0]!)];
  for (const value of constants) {
    const from = source.get(value);
    const data = value.const;
    if (!from || !data) continue;
    let cut: Value | null = null;
    if (data === from.const) {
      if (data.dims.length > 0 && data.dims[0]! > 0 && (data.dtype === DataType.FLOAT || elements(data) >= SHARE_MIN_ELEMENTS)) {
        cut = sliceShared(b, cutFrom(from, b), [0], [0], [data.dims[0]!], sharedInts);
      }
    } else {
      // prune-to-rate changes only the constants the analysis lists; any other would be stored twice
      const axes = prunedAnalysis.params.get(value);
      if (!axes) throw new Error(`make-elastic-fast: ${value.name} changed but is not a sliced parameter`);
      cut = cutShared(b, cutFrom(from, b), from.const!, axes, kept, data, sharedInts);
    }
    if (!cut) continue;
    graph.replaceAllUses(value, cut, { outputs: true });
    if (value.producer) graph.removeNode(value.producer);
    else graph.initializers = graph.initializers.filter((v) => v !== value);
  }

  // a body output must be computed in the body: outer values and constants go through Identity
  graph.outputs = graph.outputs.map((o) => (o.producer && o.producer.graph === graph ? o : b.op1('Identity', [o])));
  const cycle = graph.sortTopologically();
  if (cycle) throw new Error(`make-elastic-fast: leaf ${tag} has a cycle through ${cycle[0]!.label()}`);
  let count = 0;
  const rename = (v: Value): void => {
    v.name = main.uniqueName(`${tag}_${count++}`);
  };
  graph.initializers.forEach(rename);
  for (const node of graph.nodes) {
    node.name = '';
    for (const o of node.outputs) if (o.name) rename(o);
  }
  graph.name = tag;
  return graph;
}

function elements(t: Tensor): number {
  return t.dims.reduce((n, d) => n * d, 1);
}

/** Slice of an outer value on `axes`; bounds are shared outer constants from opset 10 on. */
function sliceShared(b: OpBuilder, full: Value, axes: number[], starts: number[], ends: number[], sharedInts: (values: number[], name: string) => Value): Value {
  if (b.opset < 10) return b.slice(full, starts, ends, axes);
  return b.slice(full, sharedInts(starts, 'slice_starts'), sharedInts(ends, 'slice_ends'), sharedInts(axes, 'slice_axes'));
}

/**
 * The cut prune-to-rate made of `full` (data `fullData`), as ops on the shared value: one Slice
 * over every axis whose kept channels are one run, then a Gather per axis that keeps several.
 */
function cutShared(
  b: OpBuilder,
  full: Value,
  fullData: Tensor,
  axes: ParamAxis[],
  kept: KeptWidths,
  expected: Tensor,
  sharedInts: (values: number[], name: string) => Value,
): Value {
  const dims = [...fullData.dims];
  const slice = { axes: [] as number[], starts: [] as number[], ends: [] as number[] };
  const gathers: { axis: number; indices: number[] }[] = [];
  for (const p of axes) {
    const indices = keptIndices(p.space, kept);
    if (indices.length === dims[p.axis]) continue;
    const first = indices[0] ?? 0;
    if (indices.every((x, i) => x === first + i)) {
      slice.axes.push(p.axis);
      slice.starts.push(first);
      slice.ends.push(first + indices.length);
    } else {
      gathers.push({ axis: p.axis, indices });
    }
    dims[p.axis] = indices.length;
  }
  if (dims.join(',') !== expected.dims.join(',')) {
    throw new Error(`make-elastic-fast: ${full.name} cut to [${dims.join(',')}], prune-to-rate made [${expected.dims.join(',')}]`);
  }
  let current = full;
  if (slice.axes.length > 0) {
    // ascending axes: onnxruntime leaves an opset-1 Slice with unsorted axes unfolded
    const order = slice.axes.map((_, i) => i).sort((x, y) => slice.axes[x]! - slice.axes[y]!);
    const pick = (list: number[]): number[] => order.map((i) => list[i]!);
    current = sliceShared(b, current, pick(slice.axes), pick(slice.starts), pick(slice.ends), sharedInts);
  }
  for (const g of gathers) current = b.gather(current, sharedInts(g.indices, 'slice_indices'), g.axis);
  return current;
}

/** A single rate: the leaf's nodes and constants move into the outer graph. */
function inlineLeaf(main: Graph, leaf: Graph, templates: Value[]): void {
  for (const v of leaf.initializers) main.initializers.push(v);
  for (const node of leaf.nodes) main.addNode(node);
  main.outputs = leaf.outputs.map((o, i) => {
    const t = templates[i]!;
    o.name = t.name;
    o.extra = t.extra;
    o.docString = t.docString;
    return o;
  });
}
