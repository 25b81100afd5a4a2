// `slicec export triton DIR REPO`: a Triton model repository with one model per slice rate,
// `<name>_r050/config.pbtxt` (onnxruntime backend) and `<name>_r050/1/model.onnx`. Triton does not
// pick among variants by load; a router that applies slicec's policy (`slicec serve --upstream`)
// does, so each rate is an ordinary model there. Triton's dims leave out the batch dim when
// max_batch_size > 0; that needs axis 0 of every input and output to be the (symbolic) batch.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { ErrorCodes, userError, writeFailure } from './diagnostics.js';
import { rateModelName, readServedManifest, type ServedTensor } from '../runtime/manifest.js';
import { v2Name } from '../runtime/ndarray.js';

export interface TritonExportOptions {
  /** Model name prefix (default: the source model's file base name). */
  name?: string;
  /** Triton max_batch_size (default 32; 0 when the model has no batch axis). */
  maxBatchSize?: number;
  /** instance_group count per model (default 1). */
  instances?: number;
  kind?: 'gpu' | 'cpu';
  /** dynamic_batching max_queue_delay_microseconds (default 100). */
  maxQueueDelayUs?: number;
}

export interface TritonModel {
  name: string;
  rate: number;
  dir: string;
}

/** Triton model names: letters, digits, `_`, `-`, `.` (they become folder names). */
const NAME = /^[A-Za-z0-9_.-]+$/;

export function exportTriton(dir: string, repo: string, options: TritonExportOptions = {}): TritonModel[] {
  const manifest = readServedManifest(dir);
  const name = options.name ?? manifest.sourceName;
  if (!NAME.test(name)) {
    throw userError(ErrorCodes.BAD_FLAG, `model name "${name}" cannot be a Triton model folder`, { expected: 'letters, digits, _, - and .', found: name, hint: 'pass --name' });
  }
  const tensors = [...manifest.inputs, ...manifest.outputs];
  const batched = tensors.every((t) => t.shape !== null && t.shape.length > 0 && typeof t.shape[0] !== 'number');
  const maxBatchSize = batched ? (options.maxBatchSize ?? 32) : 0;
  const root = path.resolve(repo);
  if (fs.existsSync(root) && !fs.statSync(root).isDirectory()) {
    throw userError(ErrorCodes.BAD_OUTPUT, `${root} is not a folder`, { expected: 'a Triton model repository folder (new or existing)', found: 'a file' });
  }
  const models: TritonModel[] = [];
  for (const rate of manifest.rates) {
    const modelName = rateModelName(name, rate.rate);
    const modelDir = path.join(root, modelName);
    const config = tritonConfig(modelName, manifest.inputs, manifest.outputs, { ...options, maxBatchSize });
    // Staged beside the target, then swapped in: a failed export leaves the old model as it was.
    const stage = `${modelDir}.tmp-${process.pid}`;
    fs.rmSync(stage, { recursive: true, force: true });
    try {
      fs.mkdirSync(path.join(stage, '1'), { recursive: true });
      fs.copyFileSync(rate.file, path.join(stage, '1', 'model.onnx'));
      fs.writeFileSync(path.join(stage, 'config.pbtxt'), config);
    } catch (e) {
      fs.rmSync(stage, { recursive: true, force: true });
      throw writeFailure(modelDir, e) ?? e;
    }
    fs.rmSync(modelDir, { recursive: true, force: true });
    fs.renameSync(stage, modelDir);
    models.push({ name: modelName, rate: rate.rate, dir: modelDir });
  }
  return models;
}

/** config.pbtxt text (protobuf text format of Triton's ModelConfig). */
export function tritonConfig(name: string, inputs: readonly ServedTensor[], outputs: readonly ServedTensor[], options: TritonExportOptions & { maxBatchSize: number }): string {
  const tensor = (t: ServedTensor): string => {
    const shape = t.shape ?? [];
    const dims = (options.maxBatchSize > 0 ? shape.slice(1) : shape).map((d) => (typeof d === 'number' ? d : -1));
    // Triton needs at least one dim; a per-sample scalar is [1] reshaped to [].
    const dimText = dims.length > 0 ? `dims: [ ${dims.join(', ')} ]` : 'dims: [ 1 ]\n    reshape: { shape: [ ] }';
    return `  {\n    name: ${JSON.stringify(t.name)}\n    data_type: TYPE_${v2Name(t.dtype)}\n    ${dimText}\n  }`;
  };
  const lines = [
    `name: ${JSON.stringify(name)}`,
    'backend: "onnxruntime"',
    `max_batch_size: ${options.maxBatchSize}`,
    `input [\n${inputs.map(tensor).join(',\n')}\n]`,
    `output [\n${outputs.map(tensor).join(',\n')}\n]`,
    `instance_group [\n  {\n    count: ${options.instances ?? 1}\n    kind: ${options.kind === 'cpu' ? 'KIND_CPU' : 'KIND_GPU'}\n  }\n]`,
  ];
  if (options.maxBatchSize > 0) lines.push(`dynamic_batching {\n  max_queue_delay_microseconds: ${options.maxQueueDelayUs ?? 100}\n}`);
  return `${lines.join('\n')}\n`;
}
