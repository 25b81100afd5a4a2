// insert-group-norm: every sliced layer gets a group normalization whose groups are exactly its
// slice groups, so the statistics of kept groups never depend on dropped ones (the model-slicing
// recipe; shared/notes/training-recipe.md).
//
// Sites: a BatchNormalization on a sliced union becomes a group norm; a layer norm over a sliced
// feature axis (LayerNormalization or PyTorch's decomposition) becomes one; a sliced layer with
// no normalization after it gets one inserted after its output. A site whose groups would hold
// fewer than MIN_GROUP_ELEMENTS values is left alone (its statistics would be degenerate), and
// so are inserted norms on 1x1 maps (squeeze-excitation gates, pooled features); a BatchNorm left
// alone still slices (it is per channel), and layer norms are always rewritten.
//
// Two emitted forms, both standard ops that every runtime runs at any opset ≥ 9:
//  - contiguous equal groups on axis 1: Reshape[0,G,-1] → InstanceNormalization(1, 0) →
//    Reshape(Shape(x)) → Mul γ → Add β (how PyTorch exports GroupNorm; fast in onnxruntime);
//  - anything else (unequal or non-contiguous groups, channels last): group statistics by
//    matrices, mean_g = mean_c · A with A[c,g] = 1/|g| for c in g, broadcast back by B[g,c] = 1,
//    var_g = E[x²]_g − mean_g², y = (x − mean)·rsqrt(var + ε)·γ + β.
// Slicing cuts every constant of a site on its channel axis and on its group axis: kept groups
// are a prefix, so Reshape[0,k,-1], ones[k] and A[:kept,:k] are exactly the norm of the kept
// groups. γ and β start at 1 and 0; calibrate-group-norm fits them to the original model.

import type { Model, Node, Value } from '../compiler/ir.js';
import { OpBuilder } from '../compiler/op-builder.js';
import { Tensor } from '../compiler/tensor.js';
import type { ChannelAnalysis } from './couple-channels.js';
import { Union, resolve, segmentPositions, type Space } from './channel-space.js';
import { slicedSpaceTest, type Partition } from './partition-channels.js';
import { emptyAdditions, nextUnionId, type AnalysisAdditions } from './analysis-additions.js';

export type NormMode = 'gn' | 'keep' | 'none';

/** Fewer values than this per group make group statistics meaningless. */
const MIN_GROUP_ELEMENTS = 8;

export interface GroupNormSite {
  kind: 'batchnorm' | 'layernorm' | 'inserted';
  form: 'instance-norm' | 'matrix';
  /** The tensor normalized (in the transformed model). */
  input: Value;
  /** The site's output (in the transformed model). */
  output: Value;
  /** Name of the value in the model before this pass that the output should reproduce. */
  targetName: string;
  axis: number;
  /** Group (0-based, among the site's groups) of every channel at full width. */
  groupOf: Int32Array;
  groups: number;
  epsilon: number;
  gamma: Value;
  beta: Value;
  /** Constants of the normalization itself (unit scales, averaging matrices, epsilon): never trained. */
  fixed: Value[];
}

export interface GroupNormResult {
  sites: GroupNormSite[];
  skipped: { where: string; why: string }[];
  /** Group-axis unions, the new norm constants and their spaces, for compile() to merge. */
  additions: AnalysisAdditions;
}

interface SiteGroups {
  groupOf: Int32Array;
  groups: number;
  /** Boundaries of the site's groups as a partition of G slice groups (prefix counts). */
  boundaries: number[];
  equalContiguous: boolean;
}

/** Channel → slice-group assignment of a space (pinned segments join the first group). */
function siteGroups(space: Space, partition: Partition): SiteGroups | null {
  const G = partition.groups;
  const bounds = new Map(partition.unions.map((g) => [g.union, g.boundaries]));
  const perChannel: number[] = [];
  const positions = segmentPositions(space);
  space.forEach((seg, s) => {
    const r = resolve(seg);
    const width = Math.round(r.root.fineWidth * r.perFine);
    const b = bounds.get(r.root);
    for (let c = 0; c < width; c++) {
      const at = positions[s]![c]!;
      if (!b) {
        perChannel[at] = 1;
        continue;
      }
      const fine = Math.floor(c / r.perFine);
      let j = 1;
      while (fine >= b[j]!) j++;
      perChannel[at] = j;
    }
  });
  const used = new Set(perChannel);
  if (used.size < 2) return null;
  // slice group j → site group index, dropping empty slice groups
  const index = new Map<number, number>();
  const boundaries = [0];
  for (let j = 1; j <= G; j++) {
    if (used.has(j)) index.set(j, index.size);
    boundaries.push(index.size);
  }
  const groupOf = Int32Array.from(perChannel, (j) => index.get(j)!);
  const size = perChannel.length / index.size;
  let equalContiguous = space.length === 1 && Number.isInteger(size);
  for (let c = 0; equalContiguous && c < groupOf.length; c++) if (groupOf[c] !== Math.floor(c / size)) equalContiguous = false;
  return { groupOf, groups: index.size, boundaries, equalContiguous };
}

function spatialSize(v: Value, axis: number): number | null {
  const shape = v.shape;
  if (!shape) return null;
  let n = 1;
  for (let i = 0; i < shape.length; i++) {
    if (i === 0 || i === axis) continue;
    const d = shape[i];
    if (typeof d !== 'number') return null;
    n *= d;
  }
  return n;
}

export function insertGroupNorm(model: Model, analysis: ChannelAnalysis, partition: Partition): GroupNormResult {
  const graph = model.graph;
  const b = new OpBuilder(graph, model.opset());
  const touchesSliced = slicedSpaceTest(partition);
  const groupUnions = new Map<string, Union>();
  const additions = emptyAdditions();
  const result: GroupNormResult = { sites: [], skipped: [], additions };

  const groupSpaceFor = (groups: SiteGroups): Space => {
    const key = groups.boundaries.join(',');
    let u = groupUnions.get(key);
    if (!u) {
      u = new Union(nextUnionId(analysis, additions), groups.groups);
      additions.unions.push(u);
      additions.groups.push({ union: u, boundaries: groups.boundaries, groupAxis: true });
      groupUnions.set(key, u);
    }
    return [{ union: u, perFine: 1 }];
  };

  interface Candidate {
    kind: GroupNormSite['kind'];
    input: Value;
    replaced: Value;
    remove: Node[];
    epsilon: number;
    where: string;
    gammaInit?: Float32Array;
    betaInit?: Float32Array;
  }
  const candidates: Candidate[] = [];
  const normalized = new Set<Value>();
  for (const node of graph.nodes) {
    if (node.op !== 'BatchNormalization' || node.domain !== '') continue;
    const x = node.inputs[0]!;
    const t = analysis.tracked.get(x);
    if (!t || !touchesSliced(t.space) || node.outputs.slice(1).some((o) => o.name && o.uses.length > 0)) continue;
    candidates.push({ kind: 'batchnorm', input: x, replaced: node.outputs[0]!, remove: [node], epsilon: node.attrFloat('epsilon', 1e-5), where: node.label() });
    normalized.add(x);
  }
  for (const site of analysis.layerNorms) {
    const t = analysis.tracked.get(site.input);
    if (!t || !touchesSliced(t.space)) continue;
    const ln = site.nodes.length === 1 ? site.nodes[0]! : null;
    candidates.push({
      kind: 'layernorm',
      input: site.input,
      replaced: site.output,
      remove: [...site.nodes].reverse(),
      epsilon: site.epsilon,
      where: (ln ?? site.nodes[0]!).label(),
      gammaInit: ln?.inputs[1]?.const ? Float32Array.from(ln.inputs[1].const.numbers()) : undefined,
      betaInit: ln?.inputs[2]?.const ? Float32Array.from(ln.inputs[2].const.numbers()) : undefined,
    });
    normalized.add(site.input);
  }
  for (const layer of analysis.layers) {
    const v = layer.node.outputs[0]!;
    const t = analysis.tracked.get(v);
    if (!t || !touchesSliced(t.space) || normalized.has(v)) continue;
    const consumers = v.consumers();
    if (consumers.length === 1 && normalized.has(consumers[0]!.outputs[0]!)) continue;
    candidates.push({ kind: 'inserted', input: v, replaced: v, remove: [], epsilon: 1e-5, where: layer.node.label() });
  }

  for (const c of candidates) {
    const t = analysis.tracked.get(c.input)!;
    const rank = c.input.shape?.length;
    const groups = siteGroups(t.space, partition);
    if (!groups && c.kind === 'layernorm') {
      // every channel is in one slice group (--groups 1, or too few channels), so every rate
      // keeps them all: the layer norm's statistics never change and it stays as it is
      result.skipped.push({ where: c.where, why: 'its channels form one slice group, kept at every rate' });
      continue;
    }
    if (!groups || rank === undefined || rank < 2 || (t.axis !== 1 && t.axis !== rank - 1)) {
      if (c.kind === 'layernorm') throw new Error(`insert-group-norm: cannot rewrite the layer norm at ${c.where}, whose channels are sliced`);
      result.skipped.push({ where: c.where, why: 'the channels do not form at least two slice groups on a supported axis' });
      continue;
    }
    const spatial = spatialSize(c.input, t.axis);
    if (c.kind === 'inserted' && spatial === 1 && rank >= 3) {
      result.skipped.push({ where: c.where, why: 'a layer on a 1x1 map (a gate or pooled features) gets no inserted norm' });
      continue;
    }
    const minGroup = Math.min(...countGroups(groups));
    // unknown spatial dims (a fully convolutional model) are taken to be large enough; a layer
    // norm is always rewritten (left as it is, its statistics would change with the rate)
    if (c.kind !== 'layernorm' && spatial !== null && spatial * minGroup < MIN_GROUP_ELEMENTS) {
      result.skipped.push({ where: c.where, why: `groups would hold fewer than ${MIN_GROUP_ELEMENTS} values (${spatial} positions × ${minGroup} channels)` });
      continue;
    }
    const width = groups.groupOf.length;
    const channelSpace = t.space;
    const groupSpace = groupSpaceFor(groups);
    const oldUses = c.replaced.uses.map((u) => ({ ...u }));
    const isOutput = graph.outputs.includes(c.replaced);

    // constants are named after the layer whose norm they are (`bn1.gn_gamma`), not a counter
    const prefix = siteName(c);
    const affineDims = t.axis === 1 ? [width, ...Array(rank - 2).fill(1)] : [width];
    const gamma = b.constant(Tensor.float32(affineDims, c.gammaInit ?? new Float32Array(width).fill(1)), `${prefix}.gn_gamma`);
    const beta = b.constant(Tensor.float32(affineDims, c.betaInit ?? new Float32Array(width)), `${prefix}.gn_beta`);
    let normalizedValue: Value;
    let form: GroupNormSite['form'];
    const fixed: Value[] = [];
    if (groups.equalContiguous && t.axis === 1 && rank >= 2) {
      form = 'instance-norm';
      const shape3 = b.int64Const([0, groups.groups, -1], `${prefix}.gn_groups_shape`);
      const grouped = b.reshape(c.input, shape3);
      const reshapeNode = grouped.producer!;
      const ones = b.constant(Tensor.float32([groups.groups], new Float32Array(groups.groups).fill(1)), `${prefix}.gn_ones`);
      const zeros = b.constant(Tensor.float32([groups.groups], new Float32Array(groups.groups)), `${prefix}.gn_zeros`);
      fixed.push(shape3, ones, zeros);
      const inorm = b.instanceNorm(grouped, ones, zeros, c.epsilon);
      normalizedValue = b.reshape(inorm, b.shape(c.input));
      additions.shapeRewrites.push({ node: reshapeNode, inputIndex: 1, entry: 1, space: groupSpace });
      additions.params.set(ones, [{ axis: 0, space: groupSpace }]);
      additions.params.set(zeros, [{ axis: 0, space: groupSpace }]);
    } else {
      form = 'matrix';
      const A = new Float32Array(width * groups.groups);
      const B = new Float32Array(groups.groups * width);
      const sizes = countGroups(groups);
      for (let ch = 0; ch < width; ch++) {
        const g = groups.groupOf[ch]!;
        A[ch * groups.groups + g] = 1 / sizes[g]!;
        B[g * width + ch] = 1;
      }
      const avg = b.constant(Tensor.float32([width, groups.groups], A), `${prefix}.gn_average`);
      const expand = b.constant(Tensor.float32([groups.groups, width], B), `${prefix}.gn_expand`);
      additions.params.set(avg, [{ axis: 0, space: channelSpace }, { axis: 1, space: groupSpace }]);
      additions.params.set(expand, [{ axis: 0, space: groupSpace }, { axis: 1, space: channelSpace }]);
      const spatialAxes = t.axis === 1 ? [...Array(rank).keys()].slice(2) : [];
      const square = b.mul(c.input, c.input);
      const meanC = spatialAxes.length ? b.reduce('ReduceMean', c.input, spatialAxes, false) : c.input;
      const squareC = spatialAxes.length ? b.reduce('ReduceMean', square, spatialAxes, false) : square;
      const meanG = b.matMul(meanC, avg);
      const varG = b.sub(b.matMul(squareC, avg), b.mul(meanG, meanG));
      const eps = b.constant(Tensor.float32([], [c.epsilon]), `${prefix}.gn_epsilon`);
      fixed.push(avg, expand, eps);
      const rstdG = b.op1('Reciprocal', [b.op1('Sqrt', [b.add(varG, eps)])]);
      let meanBack = b.matMul(meanG, expand);
      let rstdBack = b.matMul(rstdG, expand);
      if (spatialAxes.length) {
        meanBack = b.unsqueeze(meanBack, spatialAxes);
        rstdBack = b.unsqueeze(rstdBack, spatialAxes);
      }
      normalizedValue = b.mul(b.sub(c.input, meanBack), rstdBack);
    }
    const output = b.add(b.mul(normalizedValue, gamma), beta);
    additions.params.set(gamma, [{ axis: 0, space: channelSpace }]);
    additions.params.set(beta, [{ axis: 0, space: channelSpace }]);
    additions.tracked.set(output, { axis: t.axis, space: channelSpace });
    output.type = c.replaced.type;

    for (const u of oldUses) if (u.index >= 0) u.node.setInput(u.index, output);
    if (isOutput) graph.outputs = graph.outputs.map((o) => (o === c.replaced ? output : o));
    for (const n of c.remove) if (n.outputs.every((o) => o.uses.length === 0)) graph.removeNode(n);
    result.sites.push({
      kind: c.kind, form, input: c.input, output, targetName: c.replaced.name, axis: t.axis,
      groupOf: groups.groupOf, groups: groups.groups, epsilon: c.epsilon, gamma, beta, fixed,
    });
  }
  graph.removeDeadNodes();
  graph.removeUnusedInitializers();
  const cycle = graph.sortTopologically();
  if (cycle) throw new Error(`insert-group-norm produced a cycle through ${cycle[0]!.label()}`);
  return result;
}

function siteName(c: { remove: Node[]; input: Value }): string {
  const node = c.remove[0] ?? c.input.producer;
  if (!node?.name) return c.input.name;
  // PyTorch names nodes `/bn1/BatchNormalization`: keep the module path
  return node.name.replace(new RegExp(`/${node.op}(_\\d+)?$`), '').replace(/^\//, '') || node.name;
}

function countGroups(groups: SiteGroups): number[] {
  const sizes = new Array<number>(groups.groups).fill(0);
  for (const g of groups.groupOf) sizes[g]!++;
  return sizes;
}

