// Calibration batches for group-norm initialization: read from ONNX test-data style TensorProto
// files (`--calibration input_0.pb`, or a folder holding input_0.pb, input_1.pb, ...), or made
// up as seeded N(0, 1) samples when no file is given.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { ErrorCodes, userError } from './diagnostics.js';
import type { Model } from './ir.js';
import { decodeTensorProto } from './onnx-codec.js';
import { Rng } from './rng.js';
import { DataType } from './tensor.js';

/** A float32 tensor as it travels between calibration data, the passes and the runtime. */
export interface FloatTensor {
  dims: number[];
  data: Float32Array;
}

function feedInputs(model: Model) {
  return model.graph.inputs.filter((v) => !v.const);
}

export function loadCalibration(file: string, model: Model): Record<string, FloatTensor> {
  const inputs = feedInputs(model);
  let files: string[];
  try {
    files = fs.statSync(file).isDirectory()
      ? inputs.map((_, i) => path.join(file, `input_${i}.pb`))
      : [file];
  } catch {
    throw userError(ErrorCodes.BAD_INPUT_FILE, `cannot read calibration data ${file}`, { expected: 'a TensorProto .pb file or a folder of input_N.pb files', found: 'no such file or folder' });
  }
  if (files.length !== inputs.length) {
    throw userError(ErrorCodes.BAD_INPUT_FILE, `calibration file ${file} holds one tensor but the model has ${inputs.length} inputs`, {
      expected: `a folder with input_0.pb … input_${inputs.length - 1}.pb`, found: 'a single file', hint: 'put one input_N.pb per model input in a folder',
    });
  }
  const feeds: Record<string, FloatTensor> = {};
  inputs.forEach((input, i) => {
    const f = files[i]!;
    if (!fs.existsSync(f)) throw userError(ErrorCodes.BAD_INPUT_FILE, `calibration data for input ${input.name} is missing`, { expected: f, found: 'no such file' });
    const t = decodeTensorProto(fs.readFileSync(f), f);
    if (t.dtype !== DataType.FLOAT) {
      throw userError(ErrorCodes.BAD_INPUT_FILE, `calibration tensor ${f} is not float32`, { expected: 'a float32 tensor', found: `data type ${t.dtype}` });
    }
    const shape = input.shape;
    const fits = shape && shape.length === t.dims.length && shape.every((d, k) => typeof d !== 'number' || d === t.dims[k]);
    if (!fits) {
      throw userError(ErrorCodes.BAD_INPUT_FILE, `calibration tensor ${f} does not fit input ${input.name}`, {
        expected: `shape [${(shape ?? []).map((d) => d ?? '?').join(',')}]`, found: `[${t.dims.join(',')}]`,
      });
    }
    feeds[input.name] = { dims: [...t.dims], data: t.data() as Float32Array };
  });
  return feeds;
}

/** Seeded standard-normal inputs; symbolic batch dims become `batch`, other unknown dims 32. */
export function syntheticCalibration(model: Model, batch = 16, seed = 1): Record<string, FloatTensor> {
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
