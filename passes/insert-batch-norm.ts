// insert-batch-norm (--norm bn): switchable BatchNorm. Every BatchNormalization is kept (it is
// per channel, so it slices like any per-channel vector), and a sliced layer with no norm after
// it gets one, so that fine-tuning can keep one set of statistics per rate (Slimmable Networks'
// switchable BN); onnxruntime folds each BatchNorm into its layer at load, so a per-rate graph
// pays nothing for it at inference.
//
// Why insert: torch.onnx exports in eval mode fold every BatchNorm into the Conv/Gemm before it,
// so a real model has none left. The inserted norm is the identity on the full model:
// y = (x − μ)/√(σ² + ε)·γ + β with γ = √(σ² + ε) and β = μ gives y = x for any μ, σ². It is
// created with μ = 0, σ² = 1 and calibrate-batch-norm sets μ, σ² to the layer output's
// per-channel statistics on the calibration batch (mean and biased variance over the batch and
// spatial axes), with γ, β to match, so training-mode statistics start where the data is.
//
// onnxruntime folds a BatchNorm into the Conv before it, and into a MatMul with a constant
// right-hand side (its MatMul + BatchNormalization fusion), but not into a Gemm. So a plain
// Gemm layer (alpha = beta = 1, transA = 0, constant weight and bias of its own) becomes
// MatMul(x, Wᵀ) and its bias b moves into the norm: BN(x·Wᵀ) with β = μ + b is still the
// identity on the layer output x·Wᵀ + b, and a BatchNorm in training mode makes a bias before it
// redundant anyway (batch statistics remove it). The weight is stored transposed, [in, out].
//
// Sites get no norm where BatchNormalization cannot or should not go: channels not on axis 1
// (BatchNormalization normalizes axis 1), and 1x1 maps of rank ≥ 3 (squeeze-excitation gates,
// pooled features), as insert-group-norm does.
//
// Per-rate statistics in elastic.onnx (stackRateStatistics): each running mean and variance
// [C] becomes a stacked [G, C] initializer whose row k − 1 serves k active groups; the graph
// Gathers row k − 1 and make-elastic's Slice keeps the first kept(k) entries. At compile time
// every row is the full statistics, so elastic at rate r equals the pruned graph at r; whoever
// re-emits after a per-rate recalibration passes each rate's own statistics as `rows`.

import type { Model, Node, Value } from '../compiler/ir.js';
import { OpBuilder } from '../compiler/op-builder.js';
import { refreshShapes } from '../compiler/shape-inference.js';
import { DataType, Tensor } from '../compiler/tensor.js';
import type { FloatTensor } from '../compiler/calibration-data.js';
import { encodeModel } from '../compiler/onnx-codec.js';
import type { BatchNormEntry, CalibrationSource } from '../compiler/pipeline-types.js';
import type { ChannelAnalysis } from './couple-channels.js';
import { spaceWidth } from './channel-space.js';
import { slicedSpaceTest, type Partition } from './partition-channels.js';
import { emptyAdditions, type AnalysisAdditions } from './analysis-additions.js';
import { agreement, withOutputs, type Agreement, type Runner } from './calibrate-group-norm.js';

const EPSILON = 1e-5;
const MOMENTUM = 0.9;

export interface BatchNormSite {
  kind: 'batchnorm' | 'inserted';
  node: Node;
  /** The model's BatchNorm node, or the layer a norm was inserted after. */
  where: string;
  input: Value;
  scale: Value;
  bias: Value;
  mean: Value;
  variance: Value;
  epsilon: number;
  /** Inserted after a Gemm turned MatMul: the Gemm's bias, now part of β. */
  absorbedBias: Float32Array | null;
}

export interface BatchNormResult {
  sites: BatchNormSite[];
  skipped: { where: string; why: string }[];
  /** The inserted norms' vectors and outputs, for compile() to merge. */
  additions: AnalysisAdditions;
}

function isBatchNorm(node: Node): boolean {
  return node.op === 'BatchNormalization' && node.domain === '';
}

/** True when `v` is normalized already: read by a BatchNorm, directly or through its one consumer (a bias Add). */
function followedByNorm(v: Value): boolean {
  const consumers = v.consumers();
  if (consumers.some((n) => isBatchNorm(n) && n.inputs[0] === v)) return true;
  if (consumers.length !== 1) return false;
  const next = consumers[0]!.outputs[0];
  return !!next && next.consumers().some((n) => isBatchNorm(n) && n.inputs[0] === next);
}

function spatialSize(v: Value): number | null {
  const shape = v.shape;
  if (!shape) return null;
  let n = 1;
  for (let i = 2; i < shape.length; i++) {
    const d = shape[i];
    if (typeof d !== 'number') return null;
    n *= d;
  }
  return n;
}

/**
 * Turn a plain Gemm layer into MatMul(x, Wᵀ) (in place, so the analysis keeps the node and its
 * output) and return its bias, or null when the Gemm is not plain.
 */
function gemmAsMatMul(node: Node, analysis: ChannelAnalysis, additions: AnalysisAdditions, graph: Model['graph']): Float32Array | null {
  const [w, c] = [node.inputs[1], node.inputs[2]];
  const plain = node.op === 'Gemm' && node.attrInt('transA', 0) === 0 && node.attrFloat('alpha', 1) === 1 && node.attrFloat('beta', 1) === 1;
  if (!plain || !w?.const || w.const.dtype !== DataType.FLOAT || w.const.dims.length !== 2 || w.uses.length !== 1) return null;
  const transB = node.attrInt('transB', 0) === 1;
  const out = w.const.dims[transB ? 0 : 1]!;
  if (c && (!c.const || c.const.dtype !== DataType.FLOAT || c.const.size !== out || c.uses.length !== 1)) return null;
  const bias = c ? Float32Array.from(c.const!.numbers()) : new Float32Array(out);
  if (transB) {
    const [rows, cols] = [w.const.dims[0]!, w.const.dims[1]!];
    const data = w.const.data() as Float32Array;
    const transposed = new Float32Array(data.length);
    for (let r = 0; r < rows; r++) for (let k = 0; k < cols; k++) transposed[k * rows + r] = data[r * cols + k]!;
    graph.setConstant(w, Tensor.float32([cols, rows], transposed));
    const axes = analysis.params.get(w);
    if (axes) additions.params.set(w, axes.map((p) => ({ axis: 1 - p.axis, space: p.space })));
  }
  node.op = 'MatMul';
  for (const attr of ['transA', 'transB', 'alpha', 'beta']) node.attributes.delete(attr);
  node.truncateInputs(2);
  return bias;
}

/** `/layer1/conv1/Conv` → `layer1/conv1`: constants are named after the layer they normalize. */
function layerName(node: Node, fallback: string): string {
  if (!node.name) return fallback;
  return node.name.replace(new RegExp(`/${node.op}(_\\d+)?$`), '').replace(/^\//, '') || node.name;
}

/**
 * The model's own BatchNorms in inference form, as sites whose statistics can be kept per rate
 * (`--norm keep` and `bn`); the others are reported skipped.
 */
export function modelBatchNorms(model: Model): Pick<BatchNormResult, 'sites' | 'skipped'> {
  const result: Pick<BatchNormResult, 'sites' | 'skipped'> = { sites: [], skipped: [] };
  for (const node of model.graph.nodes) {
    if (!isBatchNorm(node)) continue;
    const [x, scale, bias, mean, variance] = node.inputs;
    if (!x || !scale?.const || !bias?.const || !mean?.const || !variance?.const) {
      result.skipped.push({ where: node.label(), why: 'its parameters or statistics are computed at run time' });
      continue;
    }
    if (node.outputs.slice(1).some((o) => o.name && o.uses.length > 0)) {
      result.skipped.push({ where: node.label(), why: 'it runs in training mode' });
      continue;
    }
    result.sites.push({ kind: 'batchnorm', node, where: node.label(), input: x, scale, bias, mean, variance, epsilon: node.attrFloat('epsilon', EPSILON), absorbedBias: null });
  }
  return result;
}

export function insertBatchNorm(model: Model, analysis: ChannelAnalysis, partition: Partition): BatchNormResult {
  const graph = model.graph;
  const b = new OpBuilder(graph, model.opset());
  const touchesSliced = slicedSpaceTest(partition);
  const additions = emptyAdditions();
  const result: BatchNormResult = { sites: [], skipped: [], additions };

  const own = modelBatchNorms(model);
  result.sites.push(...own.sites);
  result.skipped.push(...own.skipped);

  for (const layer of analysis.layers) {
    const v = layer.node.outputs[0]!;
    const t = analysis.tracked.get(v);
    if (!t || !touchesSliced(t.space) || followedByNorm(v)) continue;
    const where = layer.node.label();
    const rank = v.shape?.length;
    if (rank === undefined || rank < 2 || t.axis !== 1) {
      result.skipped.push({ where, why: 'its channels are not on axis 1, which BatchNormalization normalizes' });
      continue;
    }
    if (rank >= 3 && spatialSize(v) === 1) {
      result.skipped.push({ where, why: 'a layer on a 1x1 map (a gate or pooled features) gets no inserted norm' });
      continue;
    }
    const width = spaceWidth(t.space);
    const prefix = layerName(layer.node, v.name);
    const vector = (suffix: string, fill: number): Value => b.constant(Tensor.float32([width], new Float32Array(width).fill(fill)), `${prefix}.bn_${suffix}`);
    const absorbedBias = gemmAsMatMul(layer.node, analysis, additions, graph);
    const scale = vector('scale', Math.sqrt(1 + EPSILON));
    const bias = absorbedBias ? b.constant(Tensor.float32([width], absorbedBias), `${prefix}.bn_bias`) : vector('bias', 0);
    const mean = vector('running_mean', 0);
    const variance = vector('running_var', 1);
    const oldUses = v.uses.filter((u) => u.index >= 0).map((u) => ({ node: u.node, index: u.index }));
    const y = b.batchNorm(v, scale, bias, mean, variance, EPSILON, MOMENTUM, { name: `/${prefix}/BatchNormalization` });
    y.type = v.type;
    for (const u of oldUses) u.node.setInput(u.index, y);
    if (graph.outputs.includes(v)) graph.outputs = graph.outputs.map((o) => (o === v ? y : o));
    for (const c of [scale, bias, mean, variance]) additions.params.set(c, [{ axis: 0, space: t.space }]);
    additions.tracked.set(y, { axis: 1, space: t.space });
    result.sites.push({ kind: 'inserted', node: y.producer!, where, input: v, scale, bias, mean, variance, epsilon: EPSILON, absorbedBias });
  }
  graph.removeUnusedInitializers();
  const cycle = graph.sortTopologically();
  if (cycle) throw new Error(`insert-batch-norm produced a cycle through ${cycle[0]!.label()}`);
  return result;
}

/**
 * An inserted BatchNorm that is the identity on `x`, the values it reads: x's per-channel mean μ and
 * variance σ², scale √(σ² + ε), bias μ + b (b: the layer bias it absorbed, 0 where none).
 */
export function identityOn(x: FloatTensor, epsilon: number, absorbedBias?: ArrayLike<number> | null): { mean: Float32Array; variance: Float32Array; scale: Float32Array; bias: Float32Array } {
  const { mean, variance } = channelStatistics(x);
  return {
    mean, variance,
    scale: Float32Array.from(variance, (v) => Math.sqrt(v + epsilon)),
    bias: Float32Array.from(mean, (m, c) => m + (absorbedBias?.[c] ?? 0)),
  };
}

/** Per-channel mean and biased variance of x over every axis but 1. */
function channelStatistics(x: FloatTensor): { mean: Float32Array; variance: Float32Array } {
  const channels = x.dims[1]!;
  const outer = x.dims[0]!;
  const inner = x.data.length / (outer * channels);
  const mean = new Float32Array(channels);
  const variance = new Float32Array(channels);
  for (let c = 0; c < channels; c++) {
    let sum = 0;
    let sq = 0;
    for (let o = 0; o < outer; o++) {
      const base = (o * channels + c) * inner;
      for (let i = 0; i < inner; i++) {
        const v = x.data[base + i]!;
        sum += v;
        sq += v * v;
      }
    }
    const n = outer * inner;
    const m = sum / n;
    mean[c] = m;
    variance[c] = Math.max(0, sq / n - m * m);
  }
  return { mean, variance };
}

export interface BatchNormCalibration {
  source: CalibrationSource;
  batch: number;
  /** Full-rate outputs against the original's before and after the statistics are set. */
  before: Agreement;
  after: Agreement;
}

/**
 * Set the inserted norms' statistics (and γ = √(σ² + ε), β = μ plus any absorbed bias) from `feeds`, in `model` (the
 * model after insert-batch-norm); `original` is the model before it, for the agreement report.
 * Inserted norms are the identity whatever their statistics, so one run observes every site.
 */
export async function calibrateBatchNorm(
  model: Model,
  original: Uint8Array,
  sites: BatchNormSite[],
  feeds: Record<string, FloatTensor>,
  run: Runner,
  source: BatchNormCalibration['source'],
): Promise<BatchNormCalibration> {
  const outputNames = model.graph.outputs.map((o) => o.name);
  const pick = (all: Record<string, FloatTensor>) => Object.fromEntries(outputNames.map((n) => [n, all[n]!]));
  const reference = await run(original, feeds, outputNames);
  const inserted = sites.filter((s) => s.kind === 'inserted');
  const observed = withOutputs(encodeModel(model), [...outputNames, ...new Set(inserted.map((s) => s.input.name))]);
  const current = await run(observed.bytes, feeds, observed.names);
  const before = agreement(reference, pick(current));
  for (const site of inserted) {
    const values = identityOn(current[site.input.name]!, site.epsilon, site.absorbedBias);
    const set = (value: Value, data: Float32Array) => model.graph.setConstant(value, Tensor.float32([data.length], data));
    set(site.mean, values.mean);
    set(site.variance, values.variance);
    set(site.scale, values.scale);
    set(site.bias, values.bias);
  }
  const after = agreement(reference, pick(await run(encodeModel(model), feeds, outputNames)));
  const batch = Object.values(feeds)[0]?.dims[0] ?? 0;
  return { source, batch, before, after };
}

/**
 * A rate's own statistics for the stacked rows: for a statistic (by name) and an active group
 * count k, the values of the channels kept at k (a recalibrating trainer's), or undefined.
 */
export type RateRows = (name: string, activeGroups: number) => Float32Array | undefined;

/**
 * In elastic.onnx, replace each site's running mean and variance by a stacked [G, C] copy whose
 * row activeGroups − 1 is read at run time. `activeGroups` is make-elastic's int64 scalar k.
 * Row k − 1 holds the full statistics, its first entries replaced by `rows(name, k)` if given.
 */
/** The manifest's entries for `sites`; `table` names the per-rate table of a statistic. */
export function batchNormEntries(sites: BatchNormSite[], table: (statistic: string) => string): BatchNormEntry[] {
  return sites.map((s) => ({
    where: s.where,
    kind: s.kind,
    scale: s.scale.name,
    bias: s.bias.name,
    mean: s.mean.name,
    variance: s.variance.name,
    epsilon: s.epsilon,
    elastic: { mean: table(s.mean.name), variance: table(s.variance.name) },
  }));
}

export function stackRateStatistics(elastic: Model, sites: BatchNormSite[], activeGroups: Value, groups: number, rows?: RateRows): BatchNormEntry[] {
  const graph = elastic.graph;
  const b = new OpBuilder(graph, elastic.opset());
  const byName = graph.valuesByName();
  const row = b.sub(activeGroups, b.constant(Tensor.int64([], [1]), 'bn_row_offset'));
  const stacks = new Map<string, string>();
  const stack = (name: string): string => {
    const done = stacks.get(name);
    if (done) return done;
    const value = byName.get(name);
    if (!value?.const || value.const.dtype !== DataType.FLOAT) throw new Error(`insert-batch-norm: statistic ${name} is not a float constant of elastic.onnx`);
    const data = value.const.data() as Float32Array;
    const stacked = new Float32Array(groups * data.length);
    for (let g = 0; g < groups; g++) {
      stacked.set(data, g * data.length);
      const own = rows?.(name, g + 1);
      if (own && own.length > data.length) throw new Error(`insert-batch-norm: ${own.length} statistics for ${name} at ${g + 1} groups, which has ${data.length} channels`);
      if (own) stacked.set(own, g * data.length);
    }
    const table = b.constant(Tensor.float32([groups, data.length], stacked), `${name}_per_rate`);
    graph.replaceAllUses(value, b.gather(table, row, 0));
    // a statistic held by a Constant node (as some exporters write them) leaves that node unused
    if (value.producer && !graph.outputs.includes(value)) graph.removeNode(value.producer);
    stacks.set(name, table.name);
    return table.name;
  };
  const entries = batchNormEntries(sites, stack);
  const cycle = graph.sortTopologically();
  if (cycle) throw new Error(`insert-batch-norm produced a cycle through ${cycle[0]!.label()}`);
  graph.removeUnusedInitializers();
  refreshShapes(elastic);
  return entries;
}
