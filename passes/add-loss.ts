// add-loss: appends a training loss to a graph that computes logits, together with the loss's
// closed-form gradient with respect to the logits, the seed reverse-mode differentiation of the
// network starts from. Everything is default-domain ops (LogSoftmax, OneHot, ReduceSum, ...), so
// the train step runs in any ONNX runtime; no training build is needed.
//
// Conventions (PyTorch's; Z the [N, C] logits, N static, means over the batch):
//  cross-entropy  CE = −(1/N) Σ_n log softmax(Z)[n, y_n], as F.cross_entropy. Computed through
//                 LogSoftmax, never Log(Softmax) (which underflows to −inf for confident rows).
//                 With Y = OneHot(y): dCE/dZ = (softmax(Z) − Y) / N, softmax(Z) = Exp(LogSoftmax).
//                 Labels lie in [0, C); there is no ignore_index (a label outside [−C, C) gets an
//                 all-zero OneHot row, so its row adds nothing but still counts in N).
//  distillation   soft-target cross-entropy against teacher probabilities P at temperature T,
//                 scaled by T² so its gradient keeps its size as T changes (Hinton et al.):
//                 KD = −(T²/N) Σ_n Σ_c P[n,c] · log softmax(Z/T)[n,c] = T² · F.cross_entropy(Z/T, P),
//                 loss = (1 − w)·CE + w·KD. w = 1, T = 1 is Universally Slimmable's in-place
//                 distillation (narrow rates learn the full rate's predictions; labels unread).
//                 KD differs from T²·KL(P ‖ softmax(Z/T)) only by the teacher's entropy, a constant,
//                 so both have the same gradient; this form takes no log of P (no 0·log 0).
//                 `teacher_probs` must already be at temperature T: softmax(teacher logits / T).
//                 dKD/dZ = (T/N) · (softmax(Z/T) · Σ_c P − P), exact also when a float32 row of P
//                 does not sum to exactly one.
//  mse            F.mse_loss: the mean over every element, M = Σ (Z − t)² / numel, with
//                 dM/dZ = 2 (Z − t) / numel; Z may have any static shape, t has Z's shape.
// New graph inputs: `labels` (int64 [N], or float like Z for mse) and `teacher_probs` (float
// [N, C], distillation only). The loss (named `loss`) and the gradient (`<logits>.grad`) are not
// made graph outputs: what a train step returns is its composer's choice.

import { ErrorCodes, userError } from '../compiler/diagnostics.js';
import { tensorType, type Model, type Value } from '../compiler/ir.js';
import { OpBuilder, type Attrs } from '../compiler/op-builder.js';
import { DataType, dtypeShortName } from '../compiler/tensor.js';

export interface LossSpec {
  kind: 'cross-entropy' | 'mse';
  /** Distillation against teacher probabilities (cross-entropy only). */
  distill?: { weight: number; temperature: number };
  /** 'mean' over the batch (default). */
}

export interface LossResult {
  /** Float scalar: the mean loss over the batch. */
  loss: Value;
  /** d loss / d logits, same shape as the logits. */
  logitsGrad: Value;
  /** New graph input: int64 [N] for cross-entropy, float like the logits for mse. */
  labels: Value;
  /** New graph input: float [N, C] teacher probabilities (distillation only). */
  teacher: Value | null;
}

/** Emits nodes named `/loss/<what>` whose single output has a known float type. */
class LossEmitter {
  readonly b: OpBuilder;

  constructor(b: OpBuilder) {
    this.b = b;
  }

  op(opType: string, what: string, inputs: Value[], dims: number[], attrs: Attrs = {}, outputName?: string): Value {
    return this.b.op1(opType, inputs, attrs, {
      name: `/loss/${what}`,
      outputNames: outputName === undefined ? undefined : [outputName],
      outputTypes: [tensorType(DataType.FLOAT, dims)],
    });
  }

  scalar(value: number, what: string): Value {
    return this.b.floatConst([value], [], `/loss/${what}`);
  }

  /** Sum of every element, as a scalar. */
  sumAll(x: Value, what: string): Value {
    return this.b.reduce('ReduceSum', x, undefined, false, { name: `/loss/${what}`, outputTypes: [tensorType(DataType.FLOAT, [])] });
  }
}

/** Adds loss nodes (and the graph inputs labels/teacher) reading `logits` ([N, C], static N). */
export function addLoss(model: Model, logits: Value, spec: LossSpec): LossResult {
  checkSpec(spec);
  const dims = staticDims(logits, spec.kind);
  const emit = new LossEmitter(new OpBuilder(model.graph, model.opset('')));
  return spec.kind === 'mse' ? addMse(emit, logits, dims) : addCrossEntropy(emit, logits, dims, spec.distill);
}

function checkSpec(spec: LossSpec): void {
  if (spec.kind !== 'cross-entropy' && spec.kind !== 'mse') {
    throw userError(ErrorCodes.BAD_FLAG, `unknown loss "${String(spec.kind)}"`, { expected: '"cross-entropy" or "mse"', found: JSON.stringify(spec.kind) });
  }
  const distill = spec.distill;
  if (!distill) return;
  if (spec.kind !== 'cross-entropy') {
    throw userError(ErrorCodes.BAD_FLAG, 'distillation needs the cross-entropy loss', {
      expected: 'loss "cross-entropy" with distillation',
      found: `loss "${spec.kind}" with distillation`,
      hint: 'drop the distillation settings or use the cross-entropy loss',
    });
  }
  if (!(distill.weight >= 0 && distill.weight <= 1)) {
    throw userError(ErrorCodes.BAD_FLAG, `the distillation weight must lie in [0, 1], got ${distill.weight}`, {
      expected: 'a number w in [0, 1] (loss = (1 − w)·CE + w·distillation)',
      found: String(distill.weight),
    });
  }
  if (!(distill.temperature > 0 && Number.isFinite(distill.temperature))) {
    throw userError(ErrorCodes.BAD_FLAG, `the distillation temperature must be a positive number, got ${distill.temperature}`, {
      expected: 'a finite temperature T > 0 (1 for plain soft targets)',
      found: String(distill.temperature),
    });
  }
}

/** The logits' dims when they are float32 with a fully static shape ([N, C] for cross-entropy). */
function staticDims(logits: Value, kind: LossSpec['kind']): number[] {
  const shape = logits.shape;
  const found = logits.tensorType ? `${logits.name}: ${dtypeShortName[logits.elemType!] ?? logits.elemType} of shape [${shape?.map((d) => d ?? '?').join(', ') ?? '*'}]` : `${logits.name} of unknown type`;
  const rankOk = shape !== null && (kind === 'mse' ? shape.length >= 1 : shape.length === 2);
  if (logits.elemType !== DataType.FLOAT || !rankOk || !shape.every((d) => typeof d === 'number')) {
    throw userError(ErrorCodes.UNSUPPORTED, `the ${kind} loss needs float32 logits of a static shape${kind === 'mse' ? '' : ' [N, C]'}`, {
      expected: kind === 'mse' ? 'a float32 tensor with every dim a number' : 'a float32 [N, C] tensor with N and C numbers',
      found,
      hint: 'train-step graphs are built per rate with a fixed batch size; give the batch dim a number',
    });
  }
  return shape as number[];
}

function addCrossEntropy(emit: LossEmitter, logits: Value, dims: number[], distill: LossSpec['distill']): LossResult {
  const b = emit.b;
  const [n, c] = dims as [number, number];
  const labels = b.input('labels', tensorType(DataType.INT64, [n]));
  const weight = distill?.weight ?? 0;
  const lossTerms: Value[] = [];
  const gradTerms: Value[] = [];
  // a term that is the whole loss names its outputs itself; two terms are named by their Add
  const single = weight === 0 || weight === 1;
  const lossName = single ? 'loss' : undefined;
  const gradName = single ? `${logits.name}.grad` : undefined;

  if (weight < 1) {
    const logProbs = emit.op('LogSoftmax', 'LogSoftmax', [logits], dims, { axis: 1 });
    const depth = b.int64Const([c], '/loss/OneHot_depth', []);
    const onOff = b.floatConst([0, 1], [2], '/loss/OneHot_values');
    const oneHot = b.op1('OneHot', [labels, depth, onOff], { axis: -1 }, { name: '/loss/OneHot', outputTypes: [tensorType(DataType.FLOAT, dims)] });
    const logLikelihood = emit.sumAll(emit.op('Mul', 'Mul', [oneHot, logProbs], dims), 'ReduceSum');
    lossTerms.push(emit.op('Mul', 'cross_entropy', [logLikelihood, emit.scalar(-(1 - weight) / n, 'cross_entropy_scale')], [], {}, lossName));
    const residual = emit.op('Sub', 'Sub', [emit.op('Exp', 'Exp', [logProbs], dims), oneHot], dims);
    gradTerms.push(emit.op('Mul', 'cross_entropy_grad', [residual, emit.scalar((1 - weight) / n, 'cross_entropy_grad_scale')], dims, {}, gradName));
  }

  let teacher: Value | null = null;
  if (distill) {
    const t = distill.temperature;
    teacher = b.input('teacher_probs', tensorType(DataType.FLOAT, dims));
    if (weight > 0) {
      const softened = emit.op('Div', 'distill/Div', [logits, emit.scalar(t, 'distill/temperature')], dims);
      const logProbs = emit.op('LogSoftmax', 'distill/LogSoftmax', [softened], dims, { axis: 1 });
      const agreement = emit.sumAll(emit.op('Mul', 'distill/Mul', [teacher, logProbs], dims), 'distill/ReduceSum');
      lossTerms.push(emit.op('Mul', 'distill', [agreement, emit.scalar((-weight * t * t) / n, 'distill_scale')], [], {}, lossName));
      const mass = b.reduce('ReduceSum', teacher, [1], true, { name: '/loss/distill/ReduceSum_1', outputTypes: [tensorType(DataType.FLOAT, [n, 1])] });
      const predicted = emit.op('Mul', 'distill/Mul_1', [emit.op('Exp', 'distill/Exp', [logProbs], dims), mass], dims);
      const residual = emit.op('Sub', 'distill/Sub', [predicted, teacher], dims);
      gradTerms.push(emit.op('Mul', 'distill_grad', [residual, emit.scalar((weight * t) / n, 'distill_grad_scale')], dims, {}, gradName));
    }
  }

  if (single) return { loss: lossTerms[0]!, logitsGrad: gradTerms[0]!, labels, teacher };
  const loss = emit.op('Add', 'Add', [lossTerms[0]!, lossTerms[1]!], [], {}, 'loss');
  const logitsGrad = emit.op('Add', 'Add_1', [gradTerms[0]!, gradTerms[1]!], dims, {}, `${logits.name}.grad`);
  return { loss, logitsGrad, labels, teacher };
}

function addMse(emit: LossEmitter, predictions: Value, dims: number[]): LossResult {
  const numel = dims.reduce((a, d) => a * d, 1);
  const labels = emit.b.input('labels', tensorType(DataType.FLOAT, dims));
  const error = emit.op('Sub', 'Sub', [predictions, labels], dims);
  const squares = emit.b.reduce('ReduceSumSquare', error, undefined, false, { name: '/loss/ReduceSumSquare', outputTypes: [tensorType(DataType.FLOAT, [])] });
  const loss = emit.op('Mul', 'mse', [squares, emit.scalar(1 / numel, 'mse_scale')], [], {}, 'loss');
  const logitsGrad = emit.op('Mul', 'mse_grad', [error, emit.scalar(2 / numel, 'mse_grad_scale')], dims, {}, `${predictions.name}.grad`);
  return { loss, logitsGrad, labels, teacher: null };
}
