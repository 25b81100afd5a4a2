// add-exits: choose early-exit points in a model, cut it into segments there, and build a small
// classifier head for each exit (Abedi et al., arXiv 2209.08625: cache models at intermediate
// layers, trained online from the model's own final predictions).
//
// A value can be an exit only where it is the single live activation: walking the nodes in
// topological order, after its producer every other activation is dead, so the graph splits there
// into a prefix that computes it and a suffix that reads nothing else. Of these cuts, block
// boundaries are preferred (a residual Add or the activation right after it, a pooling output):
// inside a stage the representation is half-formed. Points whose remaining backbone is less than
// MIN_REST of the model's MACs are skipped (an exit there saves too little), and so are points
// whose smallest head would cost more than HEAD_BUDGET of the remaining backbone.
//
// Heads: average pool of a spatial activation [C, H, W] to a g×g grid → Flatten → Gemm(C·g²→Hd)
// → Relu → Gemm(Hd→K). A global pool keeps only which features fire, not where; early layers'
// features mean little without their place, so the grid is the largest g ≤ GRID_MAX (and ≤ H, W)
// whose head, hidden width Hd ≥ HIDDEN_MIN, fits: C·H·W (the pool's adds) + (C·g² + K)·Hd ≤
// HEAD_BUDGET · rest MACs, with Hd the largest ≤ HIDDEN_MAX that fits. When no grid fits, the
// global pool (g = 1) with the largest Hd ≥ K that fits, or one Gemm(C→K). The grid pool is
// adaptive pooling: kernel = stride = ⌈H/g⌉, padded at both ends to g·⌈H/g⌉ with the padding left
// out of the averages. Weights are seeded He-uniform (before the Relu) and Xavier-uniform (the
// logits), biases zero: heads are trained online, against the final model's softmax.

import { ErrorCodes, userError } from '../compiler/diagnostics.js';
import { cloneModel } from '../compiler/clone.js';
import { nodeMacs } from '../compiler/cost.js';
import { Model, Value, tensorType, type Dim, type Node, type ValueType } from '../compiler/ir.js';
import { OpBuilder } from '../compiler/op-builder.js';
import { Rng } from '../compiler/rng.js';
import { refreshShapes } from '../compiler/shape-inference.js';
import { DataType } from '../compiler/tensor.js';

/** A head may cost at most this share of the backbone that follows its exit. */
export const HEAD_BUDGET = 0.05;
/** Exits need at least this share of the model's MACs still ahead of them. */
export const MIN_REST = 0.2;
/** Two automatic exits are at least this share of the model's MACs apart. */
export const MIN_GAP = 0.1;
/** At most this many exits are chosen automatically. */
export const MAX_AUTO_EXITS = 3;
/** Widest hidden layer of a head. */
export const HIDDEN_MAX = 128;
/** Finest pooling grid of a head (g×g cells). */
export const GRID_MAX = 4;
/** Narrowest hidden layer a head on a pooling grid finer than 1×1 is given. */
export const HIDDEN_MIN = 32;

const POOLS = new Set(['MaxPool', 'AveragePool', 'GlobalAveragePool', 'GlobalMaxPool', 'LpPool', 'GlobalLpPool']);
const ACTIVATIONS = new Set(['Relu', 'LeakyRelu', 'Clip', 'Sigmoid', 'HardSigmoid', 'HardSwish', 'Elu', 'Selu', 'Gelu', 'Tanh', 'PRelu', 'Softplus', 'Mish']);

export type ExitSpec = 'auto' | string[];

/** A value where the model can be cut: the only live activation after its producer. */
export interface ExitCandidate {
  value: Value;
  node: Node;
  /** Position of the producer in the node list. */
  position: number;
  /** Elements per sample of the activation. */
  activation: number;
  /** Share of the model's MACs computed before the value (per sample, full width). */
  macsBefore: number;
  /** Share still ahead of it. */
  macsRest: number;
  kind: 'residual' | 'pooling' | 'inside';
  chosen: boolean;
  reason: string;
}

export interface ExitPlan {
  /** Chosen cuts in topological order. */
  exits: ExitCandidate[];
  /** Every cut considered, with why it was (not) chosen. */
  candidates: ExitCandidate[];
  classes: number;
}

function percent(x: number): string {
  return `${(x * 100).toFixed(1)}%`;
}

function perSample(shape: Dim[] | null): number | null {
  if (!shape || shape.length < 2) return null;
  let n = 1;
  for (const d of shape.slice(1)) {
    if (typeof d !== 'number') return null;
    n *= d;
  }
  return n;
}

/** Class count K of the model's first output, which must be float [N, K]. */
export function classCount(model: Model): number {
  const out = model.graph.outputs[0];
  const shape = out?.shape;
  const k = shape?.[1];
  if (!out || out.elemType !== DataType.FLOAT || shape?.length !== 2 || typeof k !== 'number') {
    throw userError(ErrorCodes.UNSUPPORTED, 'early exits need a classifier: the first output must be float32 [N, classes]', {
      expected: 'an output of shape [N, K] with K a number',
      found: out ? `${out.name}: [${shape?.join(', ') ?? '?'}]` : 'no output',
      hint: 'compile without --exits',
    });
  }
  return k;
}

/** Every cut of the graph (see the header), with its cost position. */
function findCuts(model: Model): Omit<ExitCandidate, 'kind' | 'chosen' | 'reason'>[] {
  const graph = model.graph;
  const macs = graph.nodes.map((n) => nodeMacs(n));
  const total = macs.reduce((a, b) => a + b, 0) || 1;
  const remaining = new Map<Value, number>();
  const isOutput = new Set(graph.outputs);
  for (const v of graph.inputs) if (!v.const) remaining.set(v, isOutput.has(v) ? Infinity : v.uses.length);
  const cuts: Omit<ExitCandidate, 'kind' | 'chosen' | 'reason'>[] = [];
  let done = 0;
  graph.nodes.forEach((node, position) => {
    for (const v of [...node.inputs, ...node.captures]) {
      if (!v || !remaining.has(v)) continue;
      const left = remaining.get(v)! - 1;
      if (left > 0) remaining.set(v, left);
      else remaining.delete(v);
    }
    for (const o of node.outputs) {
      const count = isOutput.has(o) ? Infinity : o.uses.length;
      if (count > 0 && !o.const) remaining.set(o, count);
    }
    done += macs[position]!;
    if (remaining.size !== 1 || position === graph.nodes.length - 1) return;
    const value = [...remaining.keys()][0]!;
    const activation = perSample(value.shape);
    if (value.producer !== node || isOutput.has(value) || value.elemType !== DataType.FLOAT || activation === null) return;
    cuts.push({ value, node, position, activation, macsBefore: done / total, macsRest: (total - done) / total });
  });
  return cuts;
}

function kindOf(node: Node): ExitCandidate['kind'] {
  if (POOLS.has(node.op)) return 'pooling';
  const residualAdd = (n: Node | null): boolean => n?.op === 'Add' && n.inputs.filter((v) => v && !v.const).length === 2;
  if (residualAdd(node)) return 'residual';
  if (ACTIVATIONS.has(node.op) && residualAdd(node.inputs[0]?.producer ?? null)) return 'residual';
  return 'inside';
}

/** MACs per sample of the smallest head (global pool, one Gemm C→K) reading an activation of `shape`. */
function smallestHeadMacs(shape: Dim[], activation: number, classes: number): number {
  return (shape.length > 2 ? activation : 0) + (shape[1] as number) * classes;
}

/** Choose exits: `auto` by the rules in the header, or the layers named (node, value or module). */
export function planExits(model: Model, spec: ExitSpec): ExitPlan {
  const classes = classCount(model);
  const totalMacs = model.graph.nodes.reduce((a, n) => a + nodeMacs(n), 0);
  const cuts = findCuts(model);
  const candidates: ExitCandidate[] = cuts.map((c) => ({ ...c, kind: kindOf(c.node), chosen: false, reason: '' }));
  const headTooBig = (c: ExitCandidate): boolean => smallestHeadMacs(c.value.shape!, c.activation, classes) > HEAD_BUDGET * c.macsRest * totalMacs;
  if (spec === 'auto') chooseAuto(candidates, headTooBig);
  else chooseNamed(model, candidates, spec, headTooBig);
  return { exits: candidates.filter((c) => c.chosen), candidates, classes };
}

function chooseAuto(candidates: ExitCandidate[], headTooBig: (c: ExitCandidate) => boolean): void {
  const eligible: ExitCandidate[] = [];
  for (const c of candidates) {
    const next = c.value.consumers();
    const closedByActivation = c.kind === 'residual' && c.node.op === 'Add' && next.length === 1 && candidates.some((o) => o.node === next[0] && o.kind === 'residual');
    if (c.kind === 'inside') c.reason = 'inside a stage (not after a residual Add or a pooling)';
    else if (closedByActivation) c.reason = 'the activation after it ends the block';
    else if (c.macsRest < MIN_REST) c.reason = `too close to the end: ${percent(c.macsRest)} of the MACs remain (needs ≥ ${percent(MIN_REST)})`;
    else if (headTooBig(c)) c.reason = `even a one-layer head would cost more than ${percent(HEAD_BUDGET)} of the remaining MACs`;
    else eligible.push(c);
  }
  // small activations first (cheap heads, compact features), earlier ones first among equals
  eligible.sort((a, b) => a.activation - b.activation || a.position - b.position);
  const chosen: ExitCandidate[] = [];
  for (const c of eligible) {
    const near = chosen.find((o) => Math.abs(o.macsBefore - c.macsBefore) < MIN_GAP);
    if (near) c.reason = `too close to the exit after ${near.node.name || near.value.name}: ${percent(Math.abs(near.macsBefore - c.macsBefore))} of the MACs apart (needs ≥ ${percent(MIN_GAP)})`;
    else if (chosen.length >= MAX_AUTO_EXITS) c.reason = `ranked below the ${MAX_AUTO_EXITS} chosen exits (larger activation or later)`;
    else chosen.push(c);
  }
  chosen.sort((a, b) => a.position - b.position);
  chosen.forEach((c, id) => {
    c.chosen = true;
    c.reason = `exit ${id}: ${c.kind === 'pooling' ? 'after pooling' : 'ends a residual block'}, ${c.activation} values per sample, ${percent(c.macsBefore)} of the MACs before it`;
  });
}

/** A name matches a node name, its output's name, or a module path inside the node name. */
function matches(node: Node, name: string): boolean {
  return node.name === name || node.outputs.some((o) => o.name === name) || node.name.includes(`/${name}/`);
}

function chooseNamed(model: Model, candidates: ExitCandidate[], names: string[], headTooBig: (c: ExitCandidate) => boolean): void {
  const cutList = candidates.map((c) => c.node.name || c.value.name).join(', ');
  for (const name of names) {
    const hits = candidates.filter((c) => matches(c.node, name));
    if (hits.length === 0) {
      const inGraph = model.graph.nodes.some((n) => matches(n, name));
      throw userError(ErrorCodes.BAD_FLAG, inGraph ? `--exits: the model cannot be cut after ${name}` : `--exits: no layer named ${name}`, {
        expected: 'a node name, value name or module path (e.g. layer1.0) where one activation alone carries the model on',
        found: inGraph ? `${name}: other activations are still live there (inside a block)` : name,
        hint: `places that can be exits: ${cutList || 'none'}; or use --exits auto`,
      });
    }
    // a module's exit is its last cut (its output)
    const c = hits[hits.length - 1]!;
    if (headTooBig(c) || c.macsRest <= 0) {
      throw userError(ErrorCodes.BAD_FLAG, `--exits: an exit after ${name} would cost more than ${percent(HEAD_BUDGET)} of the rest of the model`, {
        expected: `an exit with a head of at most ${percent(HEAD_BUDGET)} of the remaining MACs`,
        found: `${name}: ${percent(c.macsRest)} of the MACs remain`,
        hint: 'choose an earlier layer',
      });
    }
    c.chosen = true;
  }
  let id = 0;
  for (const c of candidates) {
    c.reason = c.chosen ? `exit ${id++}: named by --exits, ${c.activation} values per sample, ${percent(c.macsBefore)} of the MACs before it` : 'not named by --exits';
  }
}

/** The values in `model` (a clone of the planned one) cut at `cuts`, as standalone models. */
export function splitSegments(model: Model, cuts: Value[]): Model[] {
  const segments: Model[] = [];
  for (let k = 0; k <= cuts.length; k++) {
    const { model: segment, map } = cloneModel(model);
    const graph = segment.graph;
    const copy = (v: Value): Value => map.values.get(v)!;
    if (k < cuts.length) graph.outputs = [copy(cuts[k]!)];
    if (k > 0) {
      const boundary = copy(cuts[k - 1]!);
      const input = new Value(boundary.name, copyType(boundary.type));
      graph.replaceAllUses(boundary, input);
      graph.inputs = [input];
    }
    graph.removeDeadNodes();
    graph.removeUnusedInitializers();
    if (k === 0) graph.inputs = graph.inputs.filter((v) => v.uses.length > 0 || v.const || graph.outputs.includes(v));
    refreshShapes(segment);
    segments.push(segment);
  }
  return segments;
}

function copyType(t: ValueType | null): ValueType | null {
  return t && t.kind === 'tensor' ? { ...t, shape: t.shape ? [...t.shape] : null } : t;
}

export interface Head {
  model: Model;
  /** Pooling grid side g (1: global pool; null: the activation is not spatial). */
  grid: number | null;
  /** Hidden width; null for a one-layer head. */
  hidden: number | null;
  /** MACs per sample of its Gemms (the pool's adds not counted). */
  macs: number;
}

function overBudget(what: string, macs: number, budget: number): Error {
  return userError(ErrorCodes.UNSUPPORTED, `an exit head on ${what} would cost more than ${percent(HEAD_BUDGET)} of the model after it`, {
    expected: `a head of at most ${Math.floor(budget)} MACs`,
    found: `${macs} MACs for the smallest head`,
    hint: 'choose an earlier exit or fewer rates',
  });
}

/** Hidden width for a head within `budget` MACs (null: one layer); throws when even that is over. */
export function headWidth(channels: number, classes: number, budget: number): number | null {
  const hidden = Math.min(HIDDEN_MAX, Math.floor(budget / (channels + classes)));
  if (hidden >= classes) return hidden;
  if (channels * classes <= budget) return null;
  throw overBudget(`${channels} channels`, channels * classes, budget);
}

/** The head's form for an activation of per-sample `shape` ([C] or [C, H, W, ...]) within `budget` MACs. */
export function headForm(shape: number[], classes: number, budget: number): { grid: number | null; features: number; hidden: number | null } {
  const channels = shape[0]!;
  const spatial = shape.slice(1);
  if (spatial.length === 0) return { grid: null, features: channels, hidden: headWidth(channels, classes, budget) };
  const poolAdds = shape.reduce((a, b) => a * b, 1);
  const rest = budget - poolAdds;
  for (let g = Math.min(GRID_MAX, ...spatial); g > 1; g--) {
    const features = channels * g ** spatial.length;
    const hidden = Math.min(HIDDEN_MAX, Math.floor(rest / (features + classes)));
    if (hidden >= HIDDEN_MIN) return { grid: g, features, hidden };
  }
  if (rest < channels * classes) throw overBudget(`${shape.join('×')} values`, poolAdds + channels * classes, budget);
  return { grid: 1, features: channels, hidden: headWidth(channels, classes, rest) };
}

/** Average pool of `x` (per-sample spatial sizes `spatial`) to a grid of g cells per side. */
function gridPool(b: OpBuilder, x: Value, spatial: number[], g: number): Value {
  if (g === 1) return b.globalAveragePool(x, { name: '/head/GlobalAveragePool' });
  const kernel = spatial.map((n) => Math.ceil(n / g));
  const pad = spatial.map((n, i) => g * kernel[i]! - n);
  const pads = [...pad.map((p) => Math.floor(p / 2)), ...pad.map((p) => Math.ceil(p / 2))];
  return b.averagePool(x, { kernelShape: kernel, strides: kernel, pads, countIncludePad: false }, { name: '/head/AveragePool' });
}

/**
 * A head reading `boundary` (an activation of a rate graph; its name and type become the head's
 * input), within `budget` MACs per sample. The output is `logits`, float [N, classes].
 */
export function buildHead(source: Model, boundary: Value, classes: number, budget: number, seed: number): Head {
  const shape = boundary.shape!;
  const perSampleShape = shape.slice(1) as number[];
  const { grid, features, hidden } = headForm(perSampleShape, classes, budget);
  const model = new Model();
  model.irVersion = source.irVersion;
  model.opsetImports = new Map([['', BigInt(source.opset())]]);
  model.producerName = 'slicec';
  model.graph.name = 'exit_head';
  const b = new OpBuilder(model.graph, source.opset());
  const input = b.input(boundary.name, tensorType(DataType.FLOAT, [...shape]));
  let x = input;
  if (grid !== null) x = b.flatten(gridPool(b, x, perSampleShape.slice(1), grid), 1, { name: '/head/Flatten' });
  const rng = new Rng(seed);
  const dense = (what: string, from: Value, inWidth: number, outWidth: number, weights: Float32Array, outputName?: string): Value => {
    const w = b.floatConst(weights, [outWidth, inWidth], `head.${what}.weight`);
    const bias = b.floatConst(new Float32Array(outWidth), [outWidth], `head.${what}.bias`);
    return b.gemm(from, w, bias, { alpha: 1, beta: 1, transB: true }, { name: `/head/${what}/Gemm`, ...(outputName ? { outputNames: [outputName] } : {}) });
  };
  const xavier = (fanIn: number, fanOut: number): Float32Array => {
    const bound = Math.sqrt(6 / (fanIn + fanOut));
    return rng.uniform(fanIn * fanOut, -bound, bound);
  };
  let logits: Value;
  if (hidden === null) {
    logits = dense('fc', x, features, classes, xavier(features, classes), 'logits');
  } else {
    const h = b.relu(dense('fc1', x, features, hidden, rng.he(features * hidden, features)), { name: '/head/Relu' });
    logits = dense('fc2', h, hidden, classes, xavier(hidden, classes), 'logits');
  }
  model.graph.outputs = [logits];
  refreshShapes(model);
  const macs = hidden === null ? features * classes : (features + classes) * hidden;
  return { model, grid, hidden, macs };
}
