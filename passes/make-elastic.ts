// make-elastic: one graph for every rate. The model gets one more input, `slice_rate` (a float
// scalar); the active group count is k = clamp(ceil(rate·G), 1, G), and every constant that
// prune-to-rate would cut is cut at run time instead:
//  - a one-segment space keeps a prefix: Slice(W, [0], [kept], [axis]) with kept = T[k] for a
//    per-union boundary table T (in channels of that space);
//  - a composed space (channel Concat) keeps a prefix of every segment: Gather(W, idx, axis) with
//    idx = Concat(Range(offset_s, offset_s + kept_s)); a placed space (after a channel shuffle)
//    takes idx from a table of the kept indices per active group count, idx = T[k][:kept];
//  - a channel shuffle becomes Gather(x, T[k][:kept], axis 1) with the indices prune-to-rate
//    would write, from one more table;
//  - shape constants holding a sliced size get that entry from the same tables;
//  - grouped and depthwise convs cannot change `group` at run time, so their input is padded
//    with zero channels back to full width, the full conv runs, and its output is sliced: conv
//    group j reads only input group j, so the kept outputs equal the pruned conv's. Over a
//    composed or placed input the kept channels are not a prefix: a Gather puts each back in
//    its place (dropped ones read a zero channel) and another takes the kept outputs.
// Group norms need nothing special: their constants are cut on the group axis (ones[k],
// Reshape[0,k,-1], A[:kept,:k]), so only active groups are normalized.
// Run-time Slice bounds need opset 10 and run-time Pad/Range 11, so compile() raises an older
// graph to opset 11 first (the upgrade-opset step).

import { Value, tensorType, type Model, type Node } from '../compiler/ir.js';
import { OpBuilder } from '../compiler/op-builder.js';
import { refreshShapes } from '../compiler/shape-inference.js';
import { DataType, Tensor } from '../compiler/tensor.js';
import type { ChannelAnalysis } from './couple-channels.js';
import { isPlaced, keptIndices, resolve, spaceWidth, type KeptWidths, type Space, type Union } from './channel-space.js';
import type { Partition } from './partition-channels.js';

export const SLICE_RATE_INPUT = 'slice_rate';
/** Run-time Slice bounds need opset 10 and run-time Pad/Range 11: compile() raises the copy first. */
export const ELASTIC_MIN_OPSET = 11;

/** Make `copy` elastic; `analysis` must describe this model's own values and nodes. */
export function makeElastic(copy: Model, analysis: ChannelAnalysis, partition: Partition): { input: string; activeGroups: Value } {
  const graph = copy.graph;
  const params = [...analysis.params].map(([value, axes]) => {
    if (!value.const) throw new Error(`make-elastic: ${value.name} is not a constant`);
    return { value, axes };
  });
  const grouped = analysis.groupedConvs.map((g) => ({
    node: g.node,
    inSpace: analysis.tracked.get(g.node.inputs[0]!)!.space,
    outSpace: g.outSpace,
  }));
  const rewrites = analysis.shapeRewrites;

  if (copy.opset() < ELASTIC_MIN_OPSET) throw new Error(`make-elastic: the copy is at opset ${copy.opset()}; upgrade-opset raises it to ${ELASTIC_MIN_OPSET} first`);
  const b = new OpBuilder(graph, copy.opset());
  const groups = partition.groups;
  const bounds = new Map<Union, number[]>(partition.unions.map((g) => [g.union, g.boundaries]));

  const inputName = graph.uniqueName(SLICE_RATE_INPUT);
  const rateValue = new Value(inputName, tensorType(DataType.FLOAT, []));
  graph.inputs.push(rateValue);
  // k = clamp(ceil(rate·G − 1e-6), 1, G) as an int64 scalar
  const scaled = b.sub(b.mul(rateValue, b.constant(Tensor.float32([], [groups]), 'slice_groups')), b.constant(Tensor.float32([], [1e-6]), 'slice_tolerance'));
  const clamped = b.op1('Max', [b.op1('Min', [b.op1('Ceil', [scaled]), b.constant(Tensor.float32([], [groups]), 'slice_max')]), b.constant(Tensor.float32([], [1]), 'slice_min')]);
  const k = b.cast(clamped, DataType.INT64);

  // every run-time size and every small int constant is built once and shared by its users
  const int64Values = new Map<string, Value>();
  const int64 = (values: number[], name: string): Value => {
    const key = `${name}:${values.join(',')}`;
    let v = int64Values.get(key);
    if (!v) {
      v = b.int64Const(values, name);
      int64Values.set(key, v);
    }
    return v;
  };
  const tables = new Map<string, Value>();
  /** Kept channels of one segment as an int64 scalar, or null when it never shrinks. */
  const keptScalar = (root: Union, perFine: number): Value | null => {
    const boundaries = bounds.get(root);
    if (!boundaries) return null;
    const key = `${root.id}:${perFine}`;
    let v = tables.get(key);
    if (!v) {
      const table = b.int64Const(boundaries.map((x) => Math.round(x * perFine)), `slice_table_u${root.id}`);
      v = b.gather(table, k, 0);
      tables.set(key, v);
    }
    return v;
  };
  const fullWidth = (root: Union, perFine: number): number => Math.round(root.fineWidth * perFine);
  const lengths = new Map<string, Value | null>();
  /** Kept channels of a whole space as an int64 [1] tensor (null when it never shrinks). */
  const keptLength = (space: Space): Value | null => {
    const key = space.map((seg) => {
      const r = resolve(seg);
      return `${r.root.id}:${r.perFine}`;
    }).join('+');
    if (!lengths.has(key)) lengths.set(key, buildKeptLength(space));
    return lengths.get(key)!;
  };
  const buildKeptLength = (space: Space): Value | null => {
    const parts: Value[] = [];
    let shrinks = false;
    for (const seg of space) {
      const r = resolve(seg);
      const kept = keptScalar(r.root, r.perFine);
      if (kept) shrinks = true;
      parts.push(kept ?? b.constant(Tensor.int64([], [fullWidth(r.root, r.perFine)]), 'slice_full'));
    }
    if (!shrinks) return null;
    // Add, not Sum: Sum takes float types only
    const total = parts.slice(1).reduce((acc, part) => b.add(acc, part), parts[0]!);
    return b.reshape(total, int64([1], 'slice_one_d'));
  };
  /** Indices kept on a composed space (a prefix of every segment). */
  const keptIndexList = (space: Space): Value => {
    const pieces: Value[] = [];
    let offset = 0;
    for (const seg of space) {
      const r = resolve(seg);
      const kept = keptScalar(r.root, r.perFine) ?? b.constant(Tensor.int64([], [fullWidth(r.root, r.perFine)]), 'slice_full');
      const start = b.constant(Tensor.int64([], [offset]), 'slice_offset');
      pieces.push(b.op1('Range', [start, b.add(start, kept), b.constant(Tensor.int64([], [1]), 'slice_step')]));
      offset += fullWidth(r.root, r.perFine);
    }
    return pieces.length === 1 ? pieces[0]! : b.concat(pieces, 0);
  };

  /** Kept widths of every sliced root at k active groups. */
  const keptAt = (k: number): KeptWidths => new Map([...bounds].map(([root, b]) => [root, b[k]!]));
  /** An int64 table with one row per active group count 0..G (rows padded with 0 to `width`), row k picked at run time. */
  const rowAtK = (rows: number[][], width: number, name: string): Value => {
    const flat: bigint[] = [];
    for (const row of rows) for (let i = 0; i < width; i++) flat.push(BigInt(row[i] ?? 0));
    const table = b.constant(Tensor.int64([rows.length, width], flat), name);
    return b.gather(table, k, 0);
  };
  const rowsPerK = (fn: (kept: KeptWidths) => number[]): number[][] => Array.from({ length: groups + 1 }, (_, j) => fn(keptAt(j)));
  const placedIndices = new Map<Space, Value>();
  /** Kept indices of a placed space: row k of a table, cut to the kept count. */
  const placedIndexList = (space: Space): Value => {
    let v = placedIndices.get(space);
    if (!v) {
      const row = rowAtK(rowsPerK((kept) => keptIndices(space, kept)), spaceWidth(space), 'slice_kept_table');
      v = b.slice(row, int64([0], 'slice_start'), keptLength(space) ?? int64([spaceWidth(space)], 'slice_full'), int64([0], 'slice_axis'));
      placedIndices.set(space, v);
    }
    return v;
  };
  const indexList = (space: Space): Value => (isPlaced(space) ? placedIndexList(space) : keptIndexList(space));

  const groupedWeights = new Map<Node, { w: Value | null; bias: Value | null }>();
  for (const g of grouped) groupedWeights.set(g.node, { w: g.node.inputs[1] ?? null, bias: g.node.inputs[2] ?? null });

  for (const { value, axes } of params) {
    const uses = value.uses.filter((u) => u.index >= 0).map((u) => ({ node: u.node, index: u.index }));
    let current = value;
    for (const p of axes) {
      const sliced = p.space.some((s) => bounds.has(resolve(s).root));
      if (!sliced) continue;
      if (p.space.length === 1 && !isPlaced(p.space)) {
        const kept = keptLength(p.space)!;
        current = b.slice(current, int64([0], 'slice_start'), kept, int64([p.axis], 'slice_axis'));
      } else {
        current = b.gather(current, indexList(p.space), p.axis);
      }
    }
    if (current === value) continue;
    for (const u of uses) {
      const keepFull = groupedWeights.get(u.node);
      if (keepFull && (u.index === 1 || u.index === 2)) continue; // grouped convs read full weights
      u.node.setInput(u.index, current);
    }
  }

  for (const g of grouped) {
    const x = g.node.inputs[0]!;
    const inKept = keptLength(g.inSpace);
    const outKept = keptLength(g.outSpace);
    if (!inKept || !outKept) continue;
    const rank = x.shape?.length ?? 4;
    const width = spaceWidth(g.inSpace);
    const full = b.constant(Tensor.int64([1], [width]), 'slice_full_in');
    const missing = b.sub(full, inKept);
    const zerosBefore = b.int64Const(new Array(rank + 1).fill(0), 'slice_pad_zero');
    const zerosAfter = b.int64Const(new Array(rank - 2).fill(0), 'slice_pad_zero');
    const pads = b.concat([zerosBefore, missing, zerosAfter], 0);
    let padded = b.pad(x, pads, 'constant', undefined, { before: g.node });
    const prefix = g.inSpace.length === 1 && !isPlaced(g.inSpace);
    if (!prefix) {
      // full position p reads its rank among the kept channels, a dropped one the first zero
      const places = rowsPerK((kept) => {
        const keptIn = keptIndices(g.inSpace, kept);
        const rankOf = new Map(keptIn.map((p, i) => [p, i]));
        return Array.from({ length: width }, (_, p) => rankOf.get(p) ?? keptIn.length);
      });
      padded = b.gather(padded, rowAtK(places, width, 'slice_place_table'), 1, { before: g.node });
    }
    g.node.setInput(0, padded);
    const y = g.node.outputs[0]!;
    const uses = y.uses.map((u) => ({ node: u.node, index: u.index }));
    const cut = prefix ? b.slice(y, int64([0], 'slice_start'), outKept, int64([1], 'slice_axis')) : b.gather(y, indexList(g.outSpace), 1);
    for (const u of uses) u.node.setInput(u.index, cut);
    if (graph.outputs.includes(y)) graph.outputs = graph.outputs.map((o) => (o === y ? cut : o));
  }

  for (const s of analysis.shuffles) {
    if (!keptLength(s.inSpace)) continue;
    // output i shows input perm[i]: its place among the kept input channels, per k
    const places = rowsPerK((kept) => {
      const rankOf = new Map(keptIndices(s.inSpace, kept).map((p, i) => [p, i]));
      return keptIndices(s.outSpace, kept).map((p) => rankOf.get(s.perm[p]!)!);
    });
    const row = rowAtK(places, s.perm.length, 'slice_shuffle_table');
    const indices = b.slice(row, int64([0], 'slice_start'), keptLength(s.outSpace)!, int64([0], 'slice_axis'));
    const output = s.last.outputs[0]!;
    const gathered = b.gather(s.first.inputs[0]!, indices, 1, { before: s.last });
    graph.replaceAllUses(output, gathered, { outputs: true });
    const name = output.name;
    for (const node of [s.last, s.first.outputs[0]!.uses[0]!.node, s.first]) graph.removeNode(node);
    gathered.name = name;
  }
  if (analysis.shuffles.length > 0) graph.removeDeadNodes();

  // one run-time vector per rewritten input (a Split's sizes rewrite every entry)
  const sites: { node: Node; index: number; entries: bigint[]; kept: Map<number, Value> }[] = [];
  for (const r of rewrites) {
    let site = sites.find((x) => x.node === r.node && x.index === r.inputIndex);
    if (!site) {
      const input = r.node.inputs[r.inputIndex];
      site = { node: r.node, index: r.inputIndex, entries: input?.const ? input.const.bigints() : [...r.values!], kept: new Map() };
      sites.push(site);
    }
    const kept = keptLength(r.space);
    if (kept) site.kept.set(r.entry, kept);
  }
  for (const site of sites) {
    if (site.kept.size === 0) continue;
    const parts: Value[] = [];
    let run: bigint[] = [];
    site.entries.forEach((e, i) => {
      const kept = site.kept.get(i);
      if (!kept) {
        run.push(e);
        return;
      }
      if (run.length > 0) parts.push(b.int64Const(run, 'slice_shape'));
      run = [];
      parts.push(kept);
    });
    if (run.length > 0) parts.push(b.int64Const(run, 'slice_shape'));
    site.node.setInput(site.index, parts.length === 1 ? parts[0]! : b.concat(parts, 0));
  }

  const cycle = graph.sortTopologically();
  if (cycle) throw new Error(`make-elastic produced a cycle through ${cycle[0]!.label()}`);
  graph.removeUnusedInitializers();
  refreshShapes(copy);
  return { input: inputName, activeGroups: k };
}
