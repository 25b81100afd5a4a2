// `slicec grad`: one batch, mean softmax cross-entropy of the model's output in training mode
// (BatchNorm on batch statistics), the loss and every trainable initializer's gradient. What a
// user checking a port expects, and how the gradient tests compare slicec with PyTorch.

import type { Model } from './ir.js';
import { ErrorCodes, userError } from './diagnostics.js';
import { encodeModel } from './onnx-codec.js';
import { DataType, type Tensor } from './tensor.js';
import { buildTrainStep, type TrainStepSignature } from './train-step.js';
import { GraphSession, WEIGHTS_AS_INPUTS } from '../runtime/graph-session.js';
import type { DType, NdArray } from '../runtime/ndarray.js';

const NPY: Partial<Record<number, DType>> = {
  [DataType.FLOAT]: 'float32', [DataType.DOUBLE]: 'float64', [DataType.INT64]: 'int64',
  [DataType.INT32]: 'int32', [DataType.UINT8]: 'uint8', [DataType.BOOL]: 'bool',
};

export function tensorToArray(t: Tensor): NdArray {
  const dtype = NPY[t.dtype];
  if (!dtype) throw new Error(`tensor ${t.name} has a dtype slicec does not feed`);
  return { dtype, dims: [...t.dims], data: t.data() as NdArray['data'] };
}

export interface GradResult {
  loss: number;
  /** Gradient of every trainable initializer, under the initializer's name. */
  gradients: Map<string, NdArray>;
  /** Running statistics after the step (BatchNorm), under the statistic's name. */
  runningStats: Map<string, NdArray>;
  signature: TrainStepSignature;
}

function checkBatch(model: Model, x: NdArray, y: NdArray): void {
  const input = model.graph.inputs.find((v) => !v.const);
  const shape = input?.shape;
  const fits = shape && shape.length === x.dims.length && shape.every((d, i) => i === 0 || typeof d !== 'number' || d === x.dims[i]);
  if (!input || !fits || x.dtype !== 'float32') {
    throw userError(ErrorCodes.BAD_INPUT_FILE, 'the batch does not fit the model input', {
      expected: `x: float32 [N${(shape ?? []).slice(1).map((d) => `, ${d ?? '?'}`).join('')}] for input ${input?.name ?? '?'}`,
      found: `x: ${x.dtype} [${x.dims.join(', ')}]`,
      hint: 'save the batch as float32 in the layout the model reads',
    });
  }
  if (y.dtype !== 'int64' || y.dims.length !== 1 || y.dims[0] !== x.dims[0]) {
    throw userError(ErrorCodes.BAD_INPUT_FILE, 'the labels do not fit the batch', {
      expected: `y: int64 [${x.dims[0]}] class indices`,
      found: `y: ${y.dtype} [${y.dims.join(', ')}]`,
      hint: 'save the labels as int64 (numpy: y.astype(np.int64))',
    });
  }
}

export async function modelGradients(model: Model, x: NdArray, y: NdArray, opts: { output?: string } = {}): Promise<GradResult> {
  checkBatch(model, x, y);
  const batch = x.dims[0]!;
  const step = buildTrainStep(model, { batch, loss: { kind: 'cross-entropy' }, optimizer: null, output: opts.output });
  const byName = new Map(model.graph.initializers.map((v) => [v.name, v.const!]));
  const feeds = new Map<string, NdArray>();
  for (const input of step.signature.inputs) {
    if (input.role === 'batch') feeds.set(input.name, x);
    else if (input.role === 'labels') feeds.set(input.name, y);
    else if (input.role === 'parameter' || input.role === 'running-stat') feeds.set(input.name, tensorToArray(byName.get(input.parameter!)!));
    else throw new Error(`grad: unexpected train-step input ${input.name} (${input.role})`);
  }
  const session = await GraphSession.create(encodeModel(step.model), WEIGHTS_AS_INPUTS);
  try {
    const out = await session.run(feeds);
    const gradients = new Map<string, NdArray>();
    const runningStats = new Map<string, NdArray>();
    let loss = NaN;
    for (const o of step.signature.outputs) {
      const value = out.get(o.name)!;
      if (o.role === 'loss') loss = Number(value.data[0]);
      else if (o.role === 'gradient') gradients.set(o.parameter!, value);
      else if (o.role === 'running-stat') runningStats.set(o.parameter!, value);
    }
    return { loss, gradients, runningStats, signature: step.signature };
  } finally {
    await session.release();
  }
}
