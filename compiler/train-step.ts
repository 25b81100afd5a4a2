// Train-step graphs: one rate's inference graph turned into a graph that takes its parameters,
// optimizer state and a batch, and returns the loss, the logits, the updated parameters, the
// updated optimizer state and the updated running statistics — all in default-domain ops at
// opset 18, so any ONNX runtime runs a training step.
//
// Recipe (each step a pass of its own): clone → upgrade-opset 18 → fix the batch dim → shapes →
// fold-shape-chains (run-time size computations become constants) →
// training-mode (BatchNorm batch statistics, Dropout off or masked) → lift parameters and running
// statistics from initializers to graph inputs → add-loss (loss and its closed-form gradient
// w.r.t. the logits) → autodiff from that seed → add-optimizer, or, without an optimizer, the
// gradients themselves as outputs (`slicec grad`). The graph holds only the rate's kept
// sub-tensors, so no gradient of a dropped channel is ever computed.
//
// Shapes are static: the batch size is fixed per graph. Trainers drop the last partial batch of
// an epoch (or build a second graph for it); evaluation uses the inference graphs, whose batch
// stays dynamic.

import type { Model, Value } from './ir.js';
import { cloneModel } from './clone.js';
import { ErrorCodes, userError } from './diagnostics.js';
import { refreshShapes } from './shape-inference.js';
import { DataType, dtypeShortName } from './tensor.js';
import { verifyModel } from './verifier.js';
import { parameterSlotRole } from './parameter-map.js';
import { addLoss, type LossSpec } from '../passes/add-loss.js';
import { addOptimizer, type OptimizerSpec } from '../passes/add-optimizer.js';
import { autodiff } from '../passes/autodiff.js';
import { foldShapeChains } from '../passes/fold-shape-chains.js';
import { toTrainingMode } from '../passes/training-mode.js';
import { upgradeOpset } from '../passes/upgrade-opset.js';

export const TRAIN_OPSET = 18;

export type TrainInputRole = 'parameter' | 'optimizer-state' | 'running-stat' | 'batch' | 'labels' | 'teacher' | 'lr' | 'step' | 'dropout-mask' | 'input';
export type TrainOutputRole = 'loss' | 'logits' | 'parameter' | 'gradient' | 'optimizer-state' | 'running-stat';

export interface TrainValue<R> {
  name: string;
  role: R;
  /** The initializer (full-model name) a parameter, its state, gradient or statistic belongs to. */
  parameter?: string;
  /** Optimizer state kind (momentum, adam-m, adam-v). */
  state?: string;
  dtype: string;
  shape: number[];
}

export interface TrainStepSignature {
  batch: number;
  opset: number;
  inputs: TrainValue<TrainInputRole>[];
  outputs: TrainValue<TrainOutputRole>[];
}

export interface TrainStepOptions {
  batch: number;
  loss: LossSpec;
  /** null: no update, the graph returns every parameter's gradient instead. */
  optimizer: OptimizerSpec | null;
  /** Graph output holding the logits (default: the first output). */
  output?: string;
  dropout?: 'off' | 'mask';
  /** Which float initializers are trained (default: all but running statistics). */
  trainable?: (name: string) => boolean;
  /** Weight decay per parameter (e.g. 0 for biases and norm vectors); default the optimizer's. */
  weightDecay?: (name: string) => number | undefined;
  /** Sizes of an input's symbolic dims other than the batch (e.g. an image size), by input name. */
  inputShapes?: Record<string, number[]>;
}

function staticShape(v: Value): number[] {
  const shape = v.shape;
  if (!shape || !shape.every((d) => typeof d === 'number')) throw new Error(`train-step: ${v.name} has no static shape`);
  return shape as number[];
}

function describe<R>(v: Value, role: R, extra: { parameter?: string; state?: string } = {}): TrainValue<R> {
  return { name: v.name, role, ...extra, dtype: dtypeShortName[v.elemType ?? 0] ?? String(v.elemType), shape: staticShape(v) };
}

/**
 * Set the leading (batch) dim of every graph input to `batch` and the other symbolic dims from
 * `given`; a symbolic dim left over is refused.
 */
function fixInputShapes(model: Model, batch: number, given: Record<string, number[]>): void {
  for (const input of model.graph.inputs) {
    const t = input.tensorType;
    if (!t?.shape) continue;
    const sizes = given[input.name];
    if (sizes && (sizes.length !== t.shape.length || sizes.some((d, i) => typeof t.shape![i] === 'number' && t.shape![i] !== d && i > 0))) {
      throw userError(ErrorCodes.BAD_INPUT_FILE, `the data's shape does not fit input ${input.name}`, {
        expected: `[${t.shape.join(', ')}]`,
        found: `[${sizes.join(', ')}]`,
        hint: 'resize the data to the size the model reads',
      });
    }
    const shape = t.shape.map((d, i) => (typeof d === 'number' ? d : i === 0 ? batch : (sizes?.[i] ?? d)));
    const free = shape.find((d) => typeof d !== 'number');
    if (free !== undefined) {
      throw userError(ErrorCodes.UNSUPPORTED, `input ${input.name} has a symbolic dimension other than the batch`, {
        expected: 'inputs whose only symbolic dimension is the leading batch dimension',
        found: `${input.name}: [${t.shape.join(', ')}]`,
        hint: 'give the data\'s size (the trainer takes it from the data), or export the model with fixed sizes',
      });
    }
    input.type = { ...t, shape };
  }
}

/**
 * Constant nodes that feed a layer's weight, bias or norm slot (Paddle exports hold weights in
 * them) become initializers, so every weight is lifted to a graph input the same way. Other
 * Constant nodes (GELU's 0.5, an epsilon) are part of an operation and stay.
 */
function constantNodesToInitializers(model: Model): Value[] {
  const graph = model.graph;
  const moved: Value[] = [];
  for (const node of [...graph.nodes]) {
    if (node.op !== 'Constant' || node.domain !== '' || !node.outputs[0]?.const) continue;
    const value = node.outputs[0];
    if (!value.uses.some((u) => parameterSlotRole(u.node, u.index))) continue;
    graph.nodes.splice(graph.nodes.indexOf(node), 1);
    node.outputs.length = 0;
    node.graph = null;
    value.producer = null;
    graph.initializers.push(value);
    moved.push(value);
  }
  return moved;
}

export function buildTrainStep(source: Model, opts: TrainStepOptions): { model: Model; signature: TrainStepSignature } {
  const { model } = cloneModel(source);
  const graph = model.graph;
  // only the model's own weights are trained, not constants the upgrade adds (Clip bounds)
  const own = new Set(graph.initializers);
  upgradeOpset(model, TRAIN_OPSET);
  fixInputShapes(model, opts.batch, opts.inputShapes ?? {});
  // the outputs' declared (symbolic) types are the inference graph's contract, not this graph's
  for (const o of graph.outputs) o.type = null;
  refreshShapes(model);
  foldShapeChains(model);
  const originalInputs = graph.inputs.filter((v) => !v.const);

  const logits = opts.output ? graph.outputs.find((o) => o.name === opts.output) : graph.outputs[0];
  if (!logits) {
    throw userError(ErrorCodes.BAD_FLAG, `the model has no output named ${opts.output}`, {
      expected: `one of ${graph.outputs.map((o) => o.name).join(', ')}`,
      found: String(opts.output),
    });
  }
  for (const v of constantNodesToInitializers(model)) own.add(v);
  const training = toTrainingMode(model, { dropout: opts.dropout ?? 'off' });
  const stats = new Set(training.runningStats.map((s) => s.input));

  // parameters and running statistics become graph inputs (fed by the trainer each step)
  const trainable = opts.trainable ?? (() => true);
  const params = graph.initializers.filter((v) => own.has(v) && v.elemType === DataType.FLOAT && v.uses.length > 0 && !stats.has(v) && trainable(v.name));
  const lifted = new Set<Value>([...params, ...stats]);
  graph.initializers = graph.initializers.filter((v) => !lifted.has(v));
  for (const v of lifted) {
    v.const = null;
    graph.inputs.push(v);
  }

  const loss = addLoss(model, logits, opts.loss);
  const { gradients } = autodiff(model, { seeds: [{ value: logits, grad: loss.logitsGrad }], wrt: params });
  const withGrad = params.filter((p) => gradients.get(p));

  const inputs: TrainValue<TrainInputRole>[] = originalInputs.map((v) => describe(v, 'batch' as TrainInputRole));
  const outputs: TrainValue<TrainOutputRole>[] = [];
  graph.outputs = [loss.loss, logits];
  inputs.push(describe(loss.labels, 'labels'));
  if (loss.teacher) inputs.push(describe(loss.teacher, 'teacher'));
  for (const mask of training.dropoutMasks) inputs.push(describe(mask, 'dropout-mask'));
  for (const p of params) inputs.push(describe(p, 'parameter', { parameter: p.name }));
  for (const s of training.runningStats) inputs.push(describe(s.input, 'running-stat', { parameter: s.input.name }));

  if (opts.optimizer) {
    const result = addOptimizer(model, withGrad.map((p) => ({ param: p, grad: gradients.get(p)!, weightDecay: opts.weightDecay?.(p.name) })), opts.optimizer);
    inputs.push(describe(result.lr, 'lr'), describe(result.step, 'step'));
    // add-optimizer made the updated parameters and states graph outputs; keep them in its order
    graph.outputs = [loss.loss, logits];
    for (const u of result.updates) {
      graph.outputs.push(u.updated);
      for (const s of u.state) {
        inputs.push(describe(s.input, 'optimizer-state', { parameter: u.param.name, state: s.role }));
        graph.outputs.push(s.output);
      }
    }
    refreshShapes(model);
    for (const u of result.updates) {
      outputs.push(describe(u.updated, 'parameter', { parameter: u.param.name }));
      for (const s of u.state) outputs.push(describe(s.output, 'optimizer-state', { parameter: u.param.name, state: s.role }));
    }
  } else {
    for (const p of withGrad) graph.outputs.push(gradients.get(p)!);
    refreshShapes(model);
    for (const p of withGrad) outputs.push(describe(gradients.get(p)!, 'gradient', { parameter: p.name }));
  }
  for (const s of training.runningStats) {
    graph.outputs.push(s.updated);
    outputs.push(describe(s.updated, 'running-stat', { parameter: s.input.name }));
  }
  outputs.unshift(describe(loss.loss, 'loss'), describe(logits, 'logits'));
  graph.removeDeadNodes();
  graph.removeUnusedInitializers();
  refreshShapes(model);
  verifyModel(model, { mode: 'pass', step: 'train-step' });
  return { model, signature: { batch: opts.batch, opset: model.opset(), inputs, outputs } };
}

export interface ForwardOptions {
  /** Initializers that become graph inputs (fed by the trainer): parameters and running statistics. */
  lift: (name: string) => boolean;
  /** Graph output holding the logits (default: the first output). */
  output?: string;
  /**
   * 'eval' (default): the inference graph as it is, batch dynamic; its only output is the logits.
   * 'stats': BatchNorm in training mode with momentum 0, so the updated running statistics it
   * outputs are the batch's own mean and variance (what per-rate recalibration averages); the
   * batch dim is fixed to `batch`.
   */
  mode?: 'eval' | 'stats';
  batch?: number;
}

/**
 * A rate's forward with its parameters lifted to graph inputs: the trainer evaluates (or
 * re-estimates BatchNorm statistics of) the weights it holds without writing a model per epoch.
 */
export function buildForwardGraph(source: Model, opts: ForwardOptions): { model: Model; signature: TrainStepSignature } {
  const { model } = cloneModel(source);
  const graph = model.graph;
  const logits = opts.output ? graph.outputs.find((o) => o.name === opts.output) : graph.outputs[0];
  if (!logits) throw new Error(`forward graph: no output ${opts.output}`);
  const originalInputs = graph.inputs.filter((v) => !v.const);
  const inputs: TrainValue<TrainInputRole>[] = [];
  const outputs: TrainValue<TrainOutputRole>[] = [];
  let stats: { input: Value; batch: Value; updated: Value }[] = [];
  if (opts.mode === 'stats') {
    upgradeOpset(model, TRAIN_OPSET);
    fixInputShapes(model, opts.batch ?? 1, {});
    for (const o of graph.outputs) o.type = null;
    refreshShapes(model);
    foldShapeChains(model);
    stats = toTrainingMode(model, { dropout: 'off' }).runningStats;
  }
  const statInputs = new Set(stats.map((s) => s.input));
  const lifted = graph.initializers.filter((v) => v.elemType === DataType.FLOAT && v.uses.length > 0 && opts.lift(v.name));
  const liftedSet = new Set(lifted);
  graph.initializers = graph.initializers.filter((v) => !liftedSet.has(v));
  for (const v of lifted) {
    v.const = null;
    graph.inputs.push(v);
  }
  refreshShapes(model);
  const shapeOf = (v: Value): number[] => (v.shape ?? []).map((d) => (typeof d === 'number' ? d : -1));
  const entry = <R>(v: Value, role: R, parameter?: string): TrainValue<R> => ({
    name: v.name, role, ...(parameter ? { parameter } : {}), dtype: dtypeShortName[v.elemType ?? 0] ?? String(v.elemType), shape: shapeOf(v),
  });
  graph.outputs = opts.mode === 'stats' ? stats.map((s) => s.batch) : [logits];
  graph.removeDeadNodes();
  graph.removeUnusedInitializers();
  // a stats graph ends at the last BatchNorm: parameters after it are no longer read
  graph.inputs = graph.inputs.filter((v) => !liftedSet.has(v) || v.uses.length > 0);
  refreshShapes(model);
  for (const v of originalInputs) inputs.push(entry(v, 'batch' as TrainInputRole));
  for (const v of graph.inputs) if (liftedSet.has(v)) inputs.push(entry(v, statInputs.has(v) ? 'running-stat' : 'parameter', v.name));
  if (opts.mode === 'stats') for (const s of stats) outputs.push(entry(s.batch, 'running-stat', s.input.name));
  else outputs.push(entry(logits, 'logits'));
  verifyModel(model, { mode: 'pass', step: opts.mode === 'stats' ? 'stats-graph' : 'eval-graph' });
  return { model, signature: { batch: opts.batch ?? -1, opset: model.opset(), inputs, outputs } };
}
