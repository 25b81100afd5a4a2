// add-optimizer: appends one optimizer step to a train-step graph as plain default-domain ops
// (ORT registers none of ai.onnx.preview.training's Momentum/Adam ops, and its training build is
// not what users run). For every (parameter, gradient) pair it adds the update nodes, the
// optimizer state as graph inputs and outputs, and the updated parameter as a graph output; the
// learning rate `lr` and the 1-based step count `step` are float scalar graph inputs, so one
// graph serves a whole schedule. The graphs it runs on already hold only the kept sub-tensors of
// a rate, so weight decay and updates touch nothing else.
//
// Conventions (PyTorch's torch.optim, dampening 0, state starting at zeros, t = 1 first):
//  SGD    d = g + wd·w;  v' = μ·v + d;  w' = w − lr·v'  (Nesterov: w' = w − lr·(d + μ·v')).
//         With μ = 0 there is no state: w' = w − lr·d. On the first step PyTorch sets v' = d,
//         which μ·0 + d is exactly.
//  AdamW  (torch.optim.AdamW: decoupled decay applied to w before the Adam step)
//         m' = β1·m + (1−β1)·g;  v' = β2·v + (1−β2)·g²;
//         w' = w·(1 − lr·wd) − (lr / (1 − β1^t)) · m' / (√v' / √(1 − β2^t) + ε).
//         The per-step scalars are computed in float64, as PyTorch does in Python: in float32,
//         1 − 0.999^t at t = 1 is off by 1.3e-5 (0.999 itself rounds, then cancels), which
//         would move every early update by about 6e-6 of its size.
// A pair may override the weight decay, as a PyTorch parameter group would (commonly none on
// biases and norm scales). `step` must be ≥ 1 at run time (AdamW divides by 1 − β1^t); every
// train graph takes it, SGD's too, so a trainer feeds the same inputs whatever the optimizer.
// Names: inputs `lr`, `step`, `<param>.momentum`, `<param>.adam_m`, `<param>.adam_v`; outputs
// `<param>.updated` and `<state input>.updated`, in parameter order.

import { ErrorCodes, userError } from '../compiler/diagnostics.js';
import { tensorType, type Model, type Value } from '../compiler/ir.js';
import { OpBuilder } from '../compiler/op-builder.js';
import { DataType, Tensor, dtypeShortName } from '../compiler/tensor.js';

export type OptimizerSpec =
  | { kind: 'sgd'; momentum: number; nesterov: boolean; weightDecay: number; dampening?: 0 }
  | { kind: 'adamw'; beta1: number; beta2: number; eps: number; weightDecay: number };

export type StateRole = 'momentum' | 'adam-m' | 'adam-v';

export interface ParamUpdate {
  /** The parameter as read by the forward (a graph input). */
  param: Value;
  /** New graph output: the updated parameter. */
  updated: Value;
  state: { role: StateRole; input: Value; output: Value }[];
}

export interface OptimizerResult {
  /** New float scalar graph input. */
  lr: Value;
  /** New graph input: float scalar, the 1-based step count t (Adam's bias correction; SGD ignores it). */
  step: Value;
  updates: ParamUpdate[];
}

export interface ParamGrad {
  param: Value;
  grad: Value;
  /** Overrides the spec's weight decay for this parameter (as a PyTorch param group would, e.g. 0 for biases). */
  weightDecay?: number;
}

const STATE_NAMES: Record<StateRole, string> = { momentum: 'momentum', 'adam-m': 'adam_m', 'adam-v': 'adam_v' };

/** For each (param, grad) pair adds update nodes, state graph inputs and outputs. */
export function addOptimizer(model: Model, params: ParamGrad[], spec: OptimizerSpec): OptimizerResult {
  checkSpec(spec, params);
  const emit = new UpdateEmitter(model);
  params.forEach((p, i) => checkPair(model, p, params, i));
  const lr = emit.b.input('lr', tensorType(DataType.FLOAT, []));
  const step = emit.b.input('step', tensorType(DataType.FLOAT, []));
  const updates = spec.kind === 'sgd'
    ? params.map((p) => sgdUpdate(emit, p, spec, lr))
    : adamwUpdates(emit, params, spec, lr, step);
  for (const u of updates) {
    model.graph.outputs.push(u.updated, ...u.state.map((s) => s.output));
  }
  return { lr, step, updates };
}

// ---------------------------------------------------------------- checks

function badFlag(what: string, value: unknown, expected: string): never {
  throw userError(ErrorCodes.BAD_FLAG, `the optimizer's ${what} cannot be ${String(value)}`, { expected, found: String(value) });
}

function checkSpec(spec: OptimizerSpec, params: ParamGrad[]): void {
  if (spec.kind !== 'sgd' && spec.kind !== 'adamw') badFlag('kind', (spec as { kind: unknown }).kind, '"sgd" or "adamw"');
  const nonNegative = (x: number): boolean => Number.isFinite(x) && x >= 0;
  for (const p of params) {
    if (p.weightDecay !== undefined && !nonNegative(p.weightDecay)) badFlag(`weight decay for ${p.param.name}`, p.weightDecay, 'a finite number ≥ 0');
  }
  if (!nonNegative(spec.weightDecay)) badFlag('weight decay', spec.weightDecay, 'a finite number ≥ 0');
  if (spec.kind === 'sgd') {
    if (!nonNegative(spec.momentum)) badFlag('momentum', spec.momentum, 'a finite number ≥ 0');
    if (spec.dampening !== undefined && spec.dampening !== 0) badFlag('dampening', spec.dampening, '0 (the only dampening supported)');
    if (spec.nesterov && spec.momentum === 0) badFlag('momentum with Nesterov', 0, 'a momentum > 0 (Nesterov needs one, as in PyTorch)');
    return;
  }
  const beta = (x: number): boolean => Number.isFinite(x) && x >= 0 && x < 1;
  if (!beta(spec.beta1)) badFlag('beta1', spec.beta1, 'a number in [0, 1)');
  if (!beta(spec.beta2)) badFlag('beta2', spec.beta2, 'a number in [0, 1)');
  if (!nonNegative(spec.eps)) badFlag('eps', spec.eps, 'a finite number ≥ 0');
}

function checkPair(model: Model, pair: ParamGrad, all: ParamGrad[], index: number): void {
  const { param, grad } = pair;
  if (!model.graph.inputs.includes(param)) throw new Error(`add-optimizer: parameter ${param.name} is not a graph input`);
  if (all.findIndex((p) => p.param === param) !== index) throw new Error(`add-optimizer: parameter ${param.name} is listed twice`);
  const shape = param.shape;
  if (param.elemType !== DataType.FLOAT || !shape || !shape.every((d) => typeof d === 'number')) {
    throw userError(ErrorCodes.UNSUPPORTED, `parameter ${param.name} cannot be trained: the optimizer needs float32 parameters of a static shape`, {
      expected: 'a float32 tensor with every dim a number',
      found: `${dtypeShortName[param.elemType ?? 0] ?? param.elemType}, shape [${shape?.map((d) => d ?? '?').join(', ') ?? '*'}]`,
      hint: 'train-step graphs update float32 weights; keep other parameters frozen',
    });
  }
  const gradShape = grad.shape;
  if (gradShape && (gradShape.length !== shape.length || gradShape.some((d, i) => typeof d === 'number' && d !== shape[i]))) {
    throw new Error(`add-optimizer: gradient ${grad.name} has shape [${gradShape.join(', ')}], parameter ${param.name} [${shape.join(', ')}]`);
  }
}

// ---------------------------------------------------------------- emission

/** Emits typed nodes named `/optimizer/<scope>/<Op>` and their constants. */
class UpdateEmitter {
  readonly b: OpBuilder;

  constructor(model: Model) {
    this.b = new OpBuilder(model.graph, model.opset(''));
  }

  op(opType: string, scope: string, inputs: Value[], dims: number[], outputName?: string, elemType = DataType.FLOAT, attrs: Record<string, number> = {}): Value {
    return this.b.op1(opType, inputs, attrs, {
      name: `/optimizer/${scope}/${opType}`,
      outputNames: outputName === undefined ? undefined : [outputName],
      outputTypes: [tensorType(elemType, dims)],
    });
  }

  /** A float32 scalar constant (the value rounded to float32, as PyTorch's kernels round it). */
  scalar(value: number, name: string): Value {
    return this.b.floatConst([value], [], `/optimizer/${name}`);
  }

  double(value: number, name: string): Value {
    return this.b.graph.addInitializer(`/optimizer/${name}`, Tensor.fromTyped(DataType.DOUBLE, [], Float64Array.of(value)));
  }

  toDouble(x: Value, scope: string): Value {
    return this.op('Cast', scope, [x], [], undefined, DataType.DOUBLE, { to: DataType.DOUBLE });
  }

  toFloat(x: Value, scope: string, outputName?: string): Value {
    return this.op('Cast', scope, [x], [], outputName, DataType.FLOAT, { to: DataType.FLOAT });
  }

  /** A new state graph input shaped like `param`, named `<param>.<state>`. */
  stateInput(param: Value, role: StateRole): Value {
    return this.b.input(`${param.name}.${STATE_NAMES[role]}`, param.type!);
  }
}

function dimsOf(v: Value): number[] {
  return v.shape as number[];
}

function sgdUpdate(emit: UpdateEmitter, pair: ParamGrad, spec: Extract<OptimizerSpec, { kind: 'sgd' }>, lr: Value): ParamUpdate {
  const { param, grad } = pair;
  const scope = param.name;
  const dims = dimsOf(param);
  const wd = pair.weightDecay ?? spec.weightDecay;
  let direction = grad;
  if (wd !== 0) {
    const decay = emit.op('Mul', `${scope}/decay`, [param, emit.scalar(wd, `${scope}/weight_decay`)], dims);
    direction = emit.op('Add', `${scope}/decay`, [grad, decay], dims);
  }
  const state: ParamUpdate['state'] = [];
  if (spec.momentum !== 0) {
    const input = emit.stateInput(param, 'momentum');
    const decayed = emit.op('Mul', `${scope}/momentum`, [input, emit.scalar(spec.momentum, `${scope}/momentum`)], dims);
    const output = emit.op('Add', `${scope}/momentum`, [decayed, direction], dims, `${input.name}.updated`);
    state.push({ role: 'momentum', input, output });
    if (spec.nesterov) {
      const ahead = emit.op('Mul', `${scope}/nesterov`, [output, emit.scalar(spec.momentum, `${scope}/nesterov_momentum`)], dims);
      direction = emit.op('Add', `${scope}/nesterov`, [direction, ahead], dims);
    } else {
      direction = output;
    }
  }
  const stepped = emit.op('Mul', `${scope}/step`, [direction, lr], dims);
  const updated = emit.op('Sub', `${scope}/step`, [param, stepped], dims, `${param.name}.updated`);
  return { param, updated, state };
}

/** The float32 scalars of one AdamW step, from float64 arithmetic on lr and t. */
interface AdamScalars {
  /** lr / (1 − β1^t) */
  stepSize: Value;
  /** √(1 − β2^t) */
  secondMomentScale: Value;
  /** 1 − lr·wd per distinct weight decay. */
  decayFactor: (wd: number) => Value;
}

function adamScalars(emit: UpdateEmitter, spec: Extract<OptimizerSpec, { kind: 'adamw' }>, lr: Value, step: Value): AdamScalars {
  const scope = 'adamw';
  const lr64 = emit.toDouble(lr, `${scope}/lr`);
  const t64 = emit.toDouble(step, `${scope}/step`);
  const correction = (beta: number, name: string): Value => {
    const power = emit.op('Pow', `${scope}/${name}`, [emit.double(beta, `${scope}/${name}`), t64], [], undefined, DataType.DOUBLE);
    return emit.op('Sub', `${scope}/${name}`, [emit.double(1, `${scope}/${name}/one`), power], [], undefined, DataType.DOUBLE);
  };
  const stepSize64 = emit.op('Div', `${scope}/step_size`, [lr64, correction(spec.beta1, 'beta1')], [], undefined, DataType.DOUBLE);
  const scale64 = emit.op('Sqrt', `${scope}/beta2`, [correction(spec.beta2, 'beta2')], [], undefined, DataType.DOUBLE);
  const factors = new Map<number, Value>();
  const decayFactor = (wd: number): Value => {
    let factor = factors.get(wd);
    if (!factor) {
      const name = `${scope}/decay_${factors.size}`;
      const shrink = emit.op('Mul', name, [lr64, emit.double(wd, `${name}/weight_decay`)], [], undefined, DataType.DOUBLE);
      factor = emit.toFloat(emit.op('Sub', name, [emit.double(1, `${name}/one`), shrink], [], undefined, DataType.DOUBLE), name);
      factors.set(wd, factor);
    }
    return factor;
  };
  return {
    stepSize: emit.toFloat(stepSize64, `${scope}/step_size`),
    secondMomentScale: emit.toFloat(scale64, `${scope}/beta2`),
    decayFactor,
  };
}

function adamwUpdates(emit: UpdateEmitter, params: ParamGrad[], spec: Extract<OptimizerSpec, { kind: 'adamw' }>, lr: Value, step: Value): ParamUpdate[] {
  if (params.length === 0) return [];
  const scalars = adamScalars(emit, spec, lr, step);
  return params.map((pair) => {
    const { param, grad } = pair;
    const scope = param.name;
    const dims = dimsOf(param);
    const moment = (role: StateRole, beta: number, signal: Value): { role: StateRole; input: Value; output: Value } => {
      const what = `${scope}/${STATE_NAMES[role]}`;
      const input = emit.stateInput(param, role);
      const kept = emit.op('Mul', what, [input, emit.scalar(beta, `${what}/beta`)], dims);
      const added = emit.op('Mul', what, [signal, emit.scalar(1 - beta, `${what}/one_minus_beta`)], dims);
      return { role, input, output: emit.op('Add', what, [kept, added], dims, `${input.name}.updated`) };
    };
    const m = moment('adam-m', spec.beta1, grad);
    const v = moment('adam-v', spec.beta2, emit.op('Mul', `${scope}/grad_squared`, [grad, grad], dims));
    const rms = emit.op('Div', `${scope}/denominator`, [emit.op('Sqrt', `${scope}/denominator`, [v.output], dims), scalars.secondMomentScale], dims);
    const denominator = emit.op('Add', `${scope}/denominator`, [rms, emit.scalar(spec.eps, `${scope}/eps`)], dims);
    const ratio = emit.op('Div', `${scope}/step`, [m.output, denominator], dims);
    const stepped = emit.op('Mul', `${scope}/step`, [ratio, scalars.stepSize], dims);
    const wd = pair.weightDecay ?? spec.weightDecay;
    const decayed = wd === 0 ? param : emit.op('Mul', `${scope}/decay`, [param, scalars.decayFactor(wd)], dims);
    const updated = emit.op('Sub', `${scope}/step`, [decayed, stepped], dims, `${param.name}.updated`);
    return { param, updated, state: [m, v] };
  });
}
