// couple-channels: which channel axes must be sliced together.
//
// Walks the graph once in topological order and tracks, for each tensor, the one axis that
// carries channels (axis 1 of a Conv output, the last axis of a Gemm/MatMul output) and the
// space on it (see channel-space.ts). Each op has one rule (table in couple-rules.ts): producers
// open a new union; channel-keeping ops pass the space on; broadcasting ops link the spaces of
// their operands; Concat stitches segments; Flatten/Reshape scale a space into blocks. Constant
// operands (weights, biases, norm vectors, shape constants) are recorded with the space of each
// axis they must be cut on. Anything the rules do not understand pins the unions it touches, with
// a reason, so it is never sliced wrongly. Graph inputs are not tracked (their width is fixed)
// and graph outputs pin what reaches them.
//
// A Slice that takes part of a union's channels (ShuffleNet's channel split) needs the union cut
// in two: slicing keeps a prefix of every union, and the part left behind goes elsewhere. The
// rule then asks for its producers' outputs to be split at that channel, and the walk starts
// again with those layers producing one union per part; it repeats until no rule asks for a
// new split (each round splits at least one layer; the 64th pins what would need more).

import type { Graph, Model, Node, Value } from '../compiler/ir.js';
import { inferShapes, type KnownValues } from '../compiler/shape-inference.js';
import { coupleRules } from './couple-rules.js';
import { headsRule } from './couple-heads.js';
import { Union, denominatorOf, find, isPlaced, lcm, resolve, resolveSpace, segmentPositions, spaceWidth, type Space } from './channel-space.js';

export interface Tracked {
  axis: number;
  space: Space;
  /**
   * The axis holds batch × attention heads (batch outer): its size is not a channel count, and
   * only the rules in couple-heads.ts read it.
   */
  heads?: boolean;
}

export interface ParamAxis {
  axis: number;
  space: Space;
}

export interface GroupedConv {
  node: Node;
  /** Space of the conv output; kept output channels / outPerGroup = new `group`. */
  outSpace: Space;
  outPerGroup: number;
}

export interface ShapeRewrite {
  /** The Reshape (or similar) whose constant shape input holds a sliced size. */
  node: Node;
  inputIndex: number;
  /** Entry of the shape constant to rewrite. */
  entry: number;
  space: Space;
  /**
   * The full-width entries when the input is computed at run time (a Slice bound built from
   * Shape → Gather → Div): the rewrite then writes a constant in its place.
   */
  values?: bigint[];
}

/**
 * A channel shuffle (Reshape [N,g,C/g,...] → Transpose → Reshape [N,C,...]): a fixed permutation
 * of channels. A sliced graph replaces the three nodes by one Gather of the kept channels.
 */
export interface ChannelShuffle {
  first: Node;
  last: Node;
  /** Spaces of the shuffle's input and output (the output places the input's segments anew). */
  inSpace: Space;
  outSpace: Space;
  /** Output channel i holds input channel perm[i]. */
  perm: number[];
}

export interface ChannelAnalysis {
  unions: Union[];
  tracked: Map<Value, Tracked>;
  /** Constant values and the axes they are cut on. */
  params: Map<Value, ParamAxis[]>;
  groupedConvs: GroupedConv[];
  shapeRewrites: ShapeRewrite[];
  shuffles: ChannelShuffle[];
  /**
   * Producer layers in graph order, with the union of their outputs; a layer whose output is
   * split into parts (see the header) lists the union of each part, `union` is the first.
   */
  layers: { node: Node; union: Union; channels: number; parts?: Union[]; follows?: boolean }[];
  /**
   * Normalizations over the channel axis (LayerNormalization, decomposed layer norms) that are
   * left sliceable because insert-group-norm will rewrite them into group norms.
   */
  layerNorms: LayerNormSite[];
}

export interface LayerNormSite {
  /** The normalized tensor and the site's last node's output (before any γ/β). */
  input: Value;
  output: Value;
  /** Nodes of the normalization itself, in graph order (γ/β Mul/Add excluded). */
  nodes: Node[];
  epsilon: number;
}

export interface CoupleOptions {
  /** Layer norms over channels: 'rewrite' keeps them sliceable (they become group norms); 'pin' pins. */
  layerNorms: 'rewrite' | 'pin';
}

/** What a rule may do; passed to every per-op rule. */
export class CouplingContext {
  readonly graph: Graph;
  readonly opset: number;
  readonly analysis: ChannelAnalysis;
  /** (node, input index) pairs a rule claimed as sliced parameters. */
  private readonly claimedUses = new Set<string>();
  private nodeIds = new Map<Node, number>();

  readonly options: CoupleOptions;
  /** Nodes a rule has already accounted for (the inner nodes of a decomposed layer norm). */
  readonly handled = new Set<Node>();
  /** Values of small run-time tensors shape inference folds (e.g. an Expand target [batch, 1, 1]). */
  readonly known: KnownValues;

  /** Output channels at which a layer's output is split into separate unions (ascending cuts). */
  readonly splits: Map<Node, number[]>;
  /** Set when a rule added a split: the walk must start again. */
  splitAdded = false;
  /** False on the last round allowed: a union that would need a split is pinned instead. */
  splitsAllowed = true;
  /** Cuts (node id : channel) this round added. */
  private readonly cutsThisRound = new Set<string>();

  constructor(model: Model, options: CoupleOptions, known: KnownValues, splits: Map<Node, number[]>) {
    this.graph = model.graph;
    this.known = known;
    this.opset = model.opset();
    this.options = options;
    this.splits = splits;
    this.analysis = { unions: [], tracked: new Map(), params: new Map(), groupedConvs: [], shapeRewrites: [], shuffles: [], layers: [], layerNorms: [] };
    model.graph.nodes.forEach((n, i) => this.nodeIds.set(n, i));
  }

  newUnion(width: number): Union {
    const u = new Union(this.analysis.unions.length, width);
    this.analysis.unions.push(u);
    return u;
  }

  /** New unions produced by a layer: one segment, or one per part when its output is split. */
  produce(node: Node, width: number): Space {
    const cuts = (this.splits.get(node) ?? []).filter((c) => c > 0 && c < width);
    const edges = [0, ...cuts, width];
    const space: Space = [];
    for (let i = 1; i < edges.length; i++) {
      const u = this.newUnion(edges[i]! - edges[i - 1]!);
      u.producers.push(node);
      space.push({ union: u, perFine: 1 });
    }
    const parts = space.map((s) => s.union);
    this.analysis.layers.push(parts.length > 1 ? { node, union: parts[0]!, channels: width, parts } : { node, union: parts[0]!, channels: width });
    return space;
  }

  /**
   * New unions of the given widths produced by one layer whose parts follow its input's (a
   * depthwise conv over composed channels): a split of one of them splits the input instead.
   */
  produceParts(node: Node, widths: number[]): Union[] {
    const parts = widths.map((w) => {
      const u = this.newUnion(w);
      u.producers.push(node);
      return u;
    });
    const channels = widths.reduce((a, b) => a + b, 0);
    this.analysis.layers.push({ node, union: parts[0]!, channels, ...(parts.length > 1 ? { parts } : {}), follows: true });
    return parts;
  }

  /**
   * Ask for `root` to be cut at its fine channel `fine`: every layer producing one of its
   * members splits its output there on the next round. Returns why that cannot be done, or null
   * (also when the cut was asked for already).
   */
  requestSplit(root: Union, fine: number): string | null {
    if (!this.splitsAllowed) return 'where its layers would need more splits than slicec makes';
    if (fine % root.unit !== 0) return 'inside a conv group or attention head';
    const members = this.analysis.unions.filter((u) => find(u).root === root);
    const cuts: { node: Node; at: number }[] = [];
    for (const m of members) {
      const at = fine * find(m).ratio;
      if (Math.abs(at - Math.round(at)) > 1e-9) return 'between channels a grouped conv holds together';
      if (m.producers.length === 0) return 'inside channels no layer of its own produces';
      for (const node of m.producers) {
        const layer = this.analysis.layers.find((l) => l.node === node && (l.parts ?? [l.union]).includes(m));
        if (!layer) return 'inside channels no layer of its own produces';
        if (layer.follows) continue;
        // the member is one part of its layer's output: the cut sits after the parts before it
        let offset = 0;
        for (const part of layer.parts ?? [layer.union]) {
          if (part === m) break;
          offset += part.fineWidth;
        }
        cuts.push({ node, at: offset + Math.round(at) });
      }
    }
    if (cuts.length === 0) return 'inside channels no layer of its own produces';
    // a cut asked for in an earlier round is in place: if the union is whole still, the split
    // did not separate it (its parts were coupled again elsewhere)
    if (cuts.every(({ node, at }) => this.splits.get(node)?.includes(at) && !this.cutsThisRound.has(`${this.nodeIds.get(node)}:${at}`))) {
      return 'where slicec could not split the layers producing it';
    }
    for (const { node, at } of cuts) {
      const list = this.splits.get(node) ?? [];
      if (!list.includes(at)) {
        list.push(at);
        list.sort((a, b) => a - b);
        this.splits.set(node, list);
        this.cutsThisRound.add(`${this.nodeIds.get(node)}:${at}`);
        this.splitAdded = true;
      }
    }
    return null;
  }

  /** A pinned union standing for channels slicec does not slice (e.g. a constant in a Concat). */
  fixed(width: number, reason: string): Space {
    const u = this.newUnion(width);
    u.pinned = reason;
    return [{ union: u, perFine: 1 }];
  }

  get(value: Value | null | undefined): Tracked | undefined {
    return value ? this.analysis.tracked.get(value) : undefined;
  }

  track(value: Value | undefined, axis: number, space: Space, heads = false): void {
    if (!value || !value.name) return;
    this.analysis.tracked.set(value, heads ? { axis, space, heads } : { axis, space });
  }

  pin(space: Space | undefined, reason: string): void {
    if (!space) return;
    for (const seg of space) {
      const root = find(seg.union).root;
      if (!root.pinned) root.pinned = reason;
    }
  }

  pinValue(value: Value | null | undefined, reason: string): void {
    this.pin(this.get(value)?.space, reason);
  }

  /** Pin every tracked input of a node (the node is not understood). */
  pinInputs(node: Node, reason: string): void {
    for (const v of [...node.inputs, ...node.captures]) this.pinValue(v, reason);
  }

  /** Identity coupling: channel i of `a` is channel i of `b`. Returns the space to use. */
  link(a: Space, b: Space, reason: string): Space {
    const ra = resolveSpace(a);
    const rb = resolveSpace(b);
    const samePlaces = ra.length === rb.length && sameLayout(a, b);
    if (ra.length === 1 && rb.length === 1 && samePlaces) {
      const [x, y] = [ra[0]!, rb[0]!];
      if (x.root === y.root) {
        if (Math.abs(x.perFine - y.perFine) > 1e-9) this.pin(a, `${reason}: channels are coupled inconsistently`);
        return a;
      }
      // fold y's root under x's root: one fine channel of x.root stands for x.perFine / y.perFine of y.root
      const ratio = x.perFine / y.perFine;
      const yUnitInX = y.root.unit / ratio;
      const q = denominatorOf(yUnitInX);
      const pinned = x.root.pinned ?? y.root.pinned;
      if (q === 0) {
        this.pin(a, `${reason}: channel blocks do not line up`);
        this.pin(b, `${reason}: channel blocks do not line up`);
        return a;
      }
      y.root.parent = x.root;
      y.root.ratio = ratio;
      x.root.unit = lcm(x.root.unit, Math.round(yUnitInX * q));
      x.root.pinned = pinned;
      return a;
    }
    // composed alike (same segment widths at the same places): channel i is channel i, part by part
    if (samePlaces && ra.length > 1) {
      a.forEach((seg, i) => this.link([{ union: seg.union, perFine: seg.perFine }], [{ union: b[i]!.union, perFine: b[i]!.perFine }], reason));
      return a;
    }
    this.pin(a, `${reason}: a concatenation meets differently composed channels`);
    this.pin(b, `${reason}: a concatenation meets differently composed channels`);
    return a;
  }

  /** Record that constant input `index` of `node` is cut on `axis` by `space`. */
  param(node: Node, index: number, axis: number, space: Space): void {
    const value = node.inputs[index];
    if (!value) return;
    if (!value.const) {
      this.pin(space, `${node.label()} reads a weight computed at run time (${value.name})`);
      return;
    }
    if (value.const.dims[axis] !== spaceWidth(space)) {
      this.pin(space, `${node.label()} reads ${value.name}, whose size on axis ${axis} does not match its channels`);
      return;
    }
    this.claimedUses.add(`${this.nodeIds.get(node)}:${index}`);
    const list = this.analysis.params.get(value) ?? [];
    const existing = list.find((p) => p.axis === axis);
    if (existing) {
      this.link(existing.space, space, `shared weight ${value.name}`);
    } else {
      list.push({ axis, space });
      this.analysis.params.set(value, list);
    }
  }

  /** After the walk: a sliced constant read by a use no rule claimed would break that use. */
  checkParamUses(): void {
    for (const [value, axes] of this.analysis.params) {
      for (const use of value.uses) {
        if (!this.claimedUses.has(`${this.nodeIds.get(use.node)}:${use.index}`)) {
          for (const p of axes) this.pin(p.space, `weight ${value.name} is also read by ${use.node.label()}`);
        }
      }
      if (this.graph.outputs.includes(value)) for (const p of axes) this.pin(p.space, `weight ${value.name} is a graph output`);
    }
  }
}

/** Whether two spaces of as many segments put segment i's channels at the same axis positions. */
function sameLayout(a: Space, b: Space): boolean {
  if (!isPlaced(a) && !isPlaced(b)) return a.every((s, i) => spaceWidth([s]) === spaceWidth([b[i]!]));
  const pa = segmentPositions(a);
  const pb = segmentPositions(b);
  return pa.every((list, i) => list.length === pb[i]!.length && list.every((p, j) => p === pb[i]![j]));
}

/** Normalize a possibly negative axis. */
export function normAxis(axis: number, rank: number): number {
  return axis < 0 ? axis + rank : axis;
}

/** Walks at most (each round splits at least one layer output); the last pins what needs more. */
const MAX_ROUNDS = 64;

export function coupleChannels(model: Model, options: CoupleOptions = { layerNorms: 'pin' }): ChannelAnalysis {
  const known = inferShapes(model).known;
  const splits = new Map<Node, number[]>();
  for (let round = 1; ; round++) {
    const ctx = new CouplingContext(model, options, known, splits);
    ctx.splitsAllowed = round < MAX_ROUNDS;
    walk(model, ctx);
    if (!ctx.splitAdded) return ctx.analysis;
  }
}

function walk(model: Model, ctx: CouplingContext): void {
  for (const node of model.graph.nodes) {
    if (ctx.handled.has(node)) continue;
    if (node.inputs.some((v) => ctx.get(v)?.heads)) {
      headsRule(node, ctx);
      continue;
    }
    const rule = node.domain === '' || node.domain === 'ai.onnx' ? coupleRules[node.op] : undefined;
    if (rule) {
      rule(node, ctx);
    } else {
      ctx.pinInputs(node, node.domain ? `reaches ${node.domain}::${node.op}, an op of a custom domain` : `reaches ${node.op}, which slicec does not slice through`);
    }
  }
  for (const out of model.graph.outputs) ctx.pinValue(out, `reaches graph output ${out.name}`);
  ctx.checkParamUses();
}

/** Root unions that can be sliced: unpinned, with at least one producer layer. */
export function sliceableRoots(analysis: ChannelAnalysis): Union[] {
  const roots = new Set<Union>();
  for (const u of analysis.unions) {
    const root = find(u).root;
    if (!root.pinned && root.fineWidth % root.unit === 0 && root.fineWidth / root.unit >= 2 && hasProducer(analysis, root)) roots.add(root);
  }
  return [...roots].sort((a, b) => a.id - b.id);
}

function hasProducer(analysis: ChannelAnalysis, root: Union): boolean {
  return analysis.layers.some((l) => (l.parts ?? [l.union]).some((u) => find(u).root === root));
}

/** Per-layer explanation: sliced or why not. */
export function explainLayers(analysis: ChannelAnalysis): { node: Node; channels: number; union: number; sliced: boolean; reason?: string }[] {
  const sliceable = new Set(sliceableRoots(analysis));
  return analysis.layers.map((l) => {
    // a split output counts as sliced when one of its parts is; `union` names that part
    const roots = (l.parts ?? [l.union]).map((u) => resolve({ union: u, perFine: 1 }).root);
    const sliced = roots.some((r) => sliceable.has(r));
    const root = (sliced ? roots.find((r) => sliceable.has(r)) : roots[0])!;
    let reason: string | undefined;
    if (!sliced) {
      reason = root.pinned ?? (root.fineWidth % root.unit !== 0 ? `conv groups (units of ${root.unit}) do not divide ${root.fineWidth} channels` : root.fineWidth / root.unit < 2 ? 'too few channels to split' : 'no producer');
    }
    return { node: l.node, channels: l.channels, union: root.id, sliced, reason };
  });
}
