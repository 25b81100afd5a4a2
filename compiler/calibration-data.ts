// Calibration batches for group-norm initialization: read from ONNX test-data style TensorProto
// files (`--calibration input_0.pb`, or a folder holding input_0.pb, input_1.pb, ...), or made
// up as seeded N(0, 1) samples when no file is given. Files are checked before any work
// (checkCalibrationFiles): readable, float32, every value finite (a NaN or Inf would make every
// fitted scale NaN). `--data SPEC` takes the batch from a dataset instead (datasetCalibration:
// evenly spaced training examples, loaded and normalized as finetune loads them, so the channel
// order and the inserted norms are fitted to the data the model will be trained on).
// Calibration runs the model in onnxruntime, so a model with ops it cannot run (a custom domain
// without a model-local function) is refused before the batch is made.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { ErrorCodes, userError } from './diagnostics.js';
import type { Model } from './ir.js';
import { decodeTensorProto, modelFunctionIds } from './onnx-codec.js';
import { Rng } from './rng.js';
import { DataType, type Tensor } from './tensor.js';

/** A float32 tensor as it travels between calibration data, the passes and the runtime. */
export interface FloatTensor {
  dims: number[];
  data: Float32Array;
}

function feedInputs(model: Model) {
  return model.graph.inputs.filter((v) => !v.const);
}

/** Domains onnxruntime has kernels for. */
const RUNTIME_DOMAINS = new Set(['', 'ai.onnx', 'ai.onnx.ml', 'com.microsoft', 'com.microsoft.nchwc', 'com.microsoft.experimental', 'ai.onnx.preview.training', 'ai.onnx.training']);

/** Refuses a model calibration cannot run: a node in a custom domain that no model function defines. */
export function checkRunnable(model: Model): void {
  const functions = modelFunctionIds(model);
  const node = model.graph.nodes.find((n) => !RUNTIME_DOMAINS.has(n.domain) && !functions.has(`${n.domain}:${n.op}`));
  if (!node) return;
  throw userError(ErrorCodes.CANNOT_RUN, `calibration (of inserted norms, or of activation order) runs the model in onnxruntime, which cannot run ${node.label()} (domain ${node.domain})`, {
    expected: 'ops onnxruntime runs: the ONNX domains, com.microsoft, or functions the model defines',
    found: `op ${node.op} of domain ${JSON.stringify(node.domain)}`,
    hint: '--norm keep (or --norm none) with --importance weight slices the model without calibration',
  });
}

/** The calibration files a path names: one file, or a folder's input_N.pb files in order. */
function calibrationFiles(file: string): string[] {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(file);
  } catch {
    throw userError(ErrorCodes.BAD_INPUT_FILE, `cannot read calibration data ${file}`, { expected: 'a TensorProto .pb file or a folder of input_N.pb files', found: 'no such file or folder', hint: 'check the --calibration path' });
  }
  if (!stat.isDirectory()) return [file];
  const files: string[] = [];
  for (let i = 0; fs.existsSync(path.join(file, `input_${i}.pb`)); i++) files.push(path.join(file, `input_${i}.pb`));
  if (files.length === 0) {
    throw userError(ErrorCodes.BAD_INPUT_FILE, `calibration folder ${file} holds no input_0.pb`, {
      expected: 'a folder with input_0.pb, input_1.pb, … (one per model input)', found: 'no input_0.pb', hint: 'name the files as in ONNX test data',
    });
  }
  return files;
}

/** Read one calibration tensor: a float32 TensorProto whose values are all finite. */
function readCalibrationTensor(f: string): Tensor {
  let bytes: Uint8Array;
  try {
    bytes = fs.readFileSync(f);
  } catch (e) {
    throw userError(ErrorCodes.BAD_INPUT_FILE, `cannot read calibration data ${f}`, { expected: 'a readable TensorProto .pb file', found: (e as NodeJS.ErrnoException).code ?? String(e), hint: 'check the file\'s permissions' });
  }
  const t = decodeTensorProto(bytes, f);
  if (t.dtype !== DataType.FLOAT) {
    throw userError(ErrorCodes.BAD_INPUT_FILE, `calibration tensor ${f} is not float32`, { expected: 'a float32 tensor', found: `data type ${t.dtype}`, hint: 'save the inputs as float32 TensorProtos' });
  }
  const data = t.data() as Float32Array;
  const bad = data.findIndex((x) => !Number.isFinite(x));
  if (bad >= 0) {
    const count = data.reduce((n, x) => n + (Number.isFinite(x) ? 0 : 1), 0);
    throw userError(ErrorCodes.NON_FINITE_DATA, `calibration tensor ${f} holds ${count} NaN or infinite value(s)`, {
      expected: 'finite float32 values', found: `${data[bad]} at element ${bad}${count > 1 ? ` (and ${count - 1} more)` : ''}`,
      hint: 'calibrate on real, finite inputs (a NaN makes every fitted group norm NaN)',
    });
  }
  return t;
}

/** Everything about a calibration path that can be checked without the model (run before any work). */
export function checkCalibrationFiles(file: string): void {
  for (const f of calibrationFiles(file)) readCalibrationTensor(f);
}

export function loadCalibration(file: string, model: Model): Record<string, FloatTensor> {
  checkRunnable(model);
  const inputs = feedInputs(model);
  const dir = fs.statSync(file).isDirectory();
  const files = dir ? inputs.map((_, i) => path.join(file, `input_${i}.pb`)) : calibrationFiles(file);
  if (files.length !== inputs.length) {
    throw userError(ErrorCodes.BAD_INPUT_FILE, `calibration file ${file} holds one tensor but the model has ${inputs.length} inputs`, {
      expected: `a folder with input_0.pb … input_${inputs.length - 1}.pb`, found: 'a single file', hint: 'put one input_N.pb per model input in a folder',
    });
  }
  const feeds: Record<string, FloatTensor> = {};
  inputs.forEach((input, i) => {
    const f = files[i]!;
    if (!fs.existsSync(f)) throw userError(ErrorCodes.BAD_INPUT_FILE, `calibration data for input ${input.name} is missing`, { expected: f, found: 'no such file', hint: 'put one input_N.pb per model input in the folder' });
    const t = readCalibrationTensor(f);
    const shape = input.shape;
    const fits = shape && shape.length === t.dims.length && shape.every((d, k) => typeof d !== 'number' || d === t.dims[k]);
    if (!fits) {
      throw userError(ErrorCodes.BAD_INPUT_FILE, `calibration tensor ${f} does not fit input ${input.name}`, {
        expected: `shape [${(shape ?? []).map((d) => d ?? '?').join(',')}]`, found: `[${t.dims.join(',')}]`, hint: 'give a batch of the model\'s own input shape',
      });
    }
    feeds[input.name] = { dims: [...t.dims], data: t.data() as Float32Array };
  });
  return feeds;
}

/** Examples per --data calibration batch unless --calibration-samples says otherwise. */
export const DATA_CALIBRATION_SAMPLES = 512;

/**
 * `samples` evenly spaced training examples of `spec` (fewer when the set is smaller) as the
 * batch of the model's one float input.
 */
export async function datasetCalibration(model: Model, spec: string, samples: number): Promise<Record<string, FloatTensor>> {
  checkRunnable(model);
  const inputs = feedInputs(model);
  const input = inputs[0];
  if (inputs.length !== 1 || !input || input.elemType !== DataType.FLOAT) {
    throw userError(ErrorCodes.BAD_FLAG, '--data calibrates a model with one float input', {
      expected: 'one float32 model input', found: `${inputs.length} inputs${input ? ` (the first of type ${input.elemType ?? '?'})` : ''}`,
      hint: 'give the batch as TensorProto files with --calibration instead',
    });
  }
  const { loadDataset, materialize } = await import('../runtime/data.js');
  const data = await loadDataset(spec, { expect: { shape: input.shape ? [...input.shape] : [], dtype: 'f32' } });
  const count = data.train.x.dims[0]!;
  const n = Math.min(samples, count);
  const picks = Array.from({ length: n }, (_, i) => Math.floor((i * count) / n));
  const { x } = materialize(data.train, picks);
  return { [input.name]: { dims: [...x.dims], data: x.data as Float32Array } };
}

/** Seeded standard-normal inputs; symbolic batch dims become `batch`, other unknown dims 32. */
export function syntheticCalibration(model: Model, batch = 16, seed = 1): Record<string, FloatTensor> {
  checkRunnable(model);
  const rng = new Rng(seed);
  const feeds: Record<string, FloatTensor> = {};
  for (const input of feedInputs(model)) {
    if (input.elemType !== DataType.FLOAT || !input.shape) {
      throw userError(ErrorCodes.UNSUPPORTED, `cannot make synthetic calibration data for input ${input.name}`, {
        expected: 'float inputs of known rank', found: `type ${input.elemType ?? '?'}`, hint: 'pass --calibration with real inputs, or --norm keep',
      });
    }
    const dims = input.shape.map((d, k) => (typeof d === 'number' ? d : k === 0 ? batch : 32));
    const size = dims.reduce((p, d) => p * d, 1);
    feeds[input.name] = { dims, data: Float32Array.from({ length: size }, () => rng.normal()) };
  }
  return feeds;
}
