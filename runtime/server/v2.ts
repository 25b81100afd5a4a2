// The KServe / Triton "v2" (Open Inference Protocol) REST codec: request JSON (and the binary
// tensor extension: a JSON header of `Inference-Header-Content-Length` bytes followed by the raw
// little-endian tensors in input order) to typed arrays checked against the model, and typed
// arrays back to response JSON (or JSON header + binary). Every malformed request becomes a
// V2Error with the HTTP status and the message of a v2 error body `{"error": "..."}`.

import { bytesPerElement, dtypeFromV2, sizeOf, v2Name, viewBytes, makeArray, type DType, type NdArray } from '../ndarray.js';
import type { ServedTensor } from '../manifest.js';
import { floatToHalf, halfToFloat } from '../../compiler/float16.js';

export { floatToHalf, halfToFloat };

export class V2Error extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'V2Error';
  }
}

export interface InferRequest {
  id?: string;
  feeds: Record<string, NdArray>;
  /** Requested outputs (all when absent) and whether each is wanted as binary. */
  outputs: { name: string; binary: boolean }[] | null;
  binaryOutputDefault: boolean;
  parameters: { sliceRate?: number; deadlineMs?: number; minAccuracy?: number; shed?: boolean };
}

const MAX_DIMS = 16;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function bad(message: string): V2Error {
  return new V2Error(400, message);
}

/** Parse an infer request body. `headerLength` is the Inference-Header-Content-Length header, when sent. */
export function decodeInferRequest(body: Buffer, headerLength: string | undefined, inputs: readonly ServedTensor[]): InferRequest {
  let jsonEnd = body.length;
  if (headerLength !== undefined) {
    const n = Number(headerLength);
    if (!/^[0-9]+$/.test(headerLength) || n > body.length) throw bad(`Inference-Header-Content-Length ${JSON.stringify(headerLength)} is not a length within the ${body.length}-byte body`);
    jsonEnd = n;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.subarray(0, jsonEnd).toString('utf8'));
  } catch (e) {
    throw bad(`request body is not valid JSON: ${(e as Error).message}`);
  }
  if (!isObject(parsed)) throw bad('request body must be a JSON object');
  if (parsed.id !== undefined && typeof parsed.id !== 'string') throw bad('"id" must be a string');
  if (!Array.isArray(parsed.inputs) || parsed.inputs.length === 0) throw bad('"inputs" must be a non-empty array');
  const parameters = decodeParameters(parsed.parameters);
  let offset = jsonEnd;
  const feeds: Record<string, NdArray> = {};
  for (const raw of parsed.inputs) {
    if (!isObject(raw)) throw bad('each input must be an object');
    const { name, shape, datatype } = raw;
    if (typeof name !== 'string') throw bad('input "name" must be a string');
    if (Object.hasOwn(feeds, name)) throw bad(`input "${name}" is given twice`);
    const spec = inputs.find((t) => t.name === name);
    if (!spec) throw bad(`unknown input "${name}"; the model's inputs are ${inputs.map((t) => t.name).join(', ')}`);
    if (!Array.isArray(shape) || shape.length > MAX_DIMS || !shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)) {
      throw bad(`input "${name}": "shape" must be an array of at most ${MAX_DIMS} non-negative integers`);
    }
    if (typeof datatype !== 'string') throw bad(`input "${name}": "datatype" must be a string`);
    const dtype = dtypeFromV2(datatype);
    if (!dtype) throw bad(`input "${name}": datatype ${JSON.stringify(datatype)} is not supported`);
    if (dtype !== spec.dtype) throw bad(`input "${name}": datatype ${datatype} does not match the model's ${v2Name(spec.dtype)}`);
    const dims = shape as number[];
    const size = sizeOf(dims);
    if (!Number.isSafeInteger(size) || size * bytesPerElement(dtype) > body.length * 8 + 1024 * 1024) throw bad(`input "${name}": shape [${dims.join(', ')}] is too large for the request`);
    const binarySize = isObject(raw.parameters) ? raw.parameters.binary_data_size : undefined;
    let data;
    if (binarySize !== undefined) {
      if (!Number.isSafeInteger(binarySize) || (binarySize as number) < 0) throw bad(`input "${name}": binary_data_size must be a non-negative integer`);
      const n = binarySize as number;
      if (offset + n > body.length) throw bad(`input "${name}": binary_data_size ${n} runs past the end of the body`);
      if (n !== size * bytesPerElement(dtype)) throw bad(`input "${name}": ${n} binary bytes for shape [${dims.join(', ')}] of ${datatype} (expected ${size * bytesPerElement(dtype)})`);
      data = viewBytes(dtype, body.subarray(offset, offset + n));
      offset += n;
    } else {
      data = decodeJsonData(name, raw.data, dtype, size);
    }
    feeds[name] = { dtype, dims, data };
  }
  if (offset !== body.length) throw bad(`${body.length - offset} bytes after the last binary input`);
  return { id: parsed.id as string | undefined, feeds, parameters, ...decodeOutputs(parsed.outputs, parsed.parameters) };
}

function decodeParameters(raw: unknown): InferRequest['parameters'] {
  if (raw === undefined) return {};
  if (!isObject(raw)) throw bad('"parameters" must be an object');
  const out: InferRequest['parameters'] = {};
  const positive = (key: string): number | undefined => {
    const v = raw[key];
    if (v === undefined) return undefined;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw bad(`parameter ${key} must be a positive number`);
    return v;
  };
  out.sliceRate = positive('slice_rate');
  out.deadlineMs = positive('deadline_ms');
  if (raw.min_accuracy !== undefined) {
    if (typeof raw.min_accuracy !== 'number' || !Number.isFinite(raw.min_accuracy)) throw bad('parameter min_accuracy must be a number');
    out.minAccuracy = raw.min_accuracy;
  }
  if (raw.shed !== undefined) {
    if (typeof raw.shed !== 'boolean') throw bad('parameter shed must be true or false');
    out.shed = raw.shed;
  }
  return out;
}

function decodeOutputs(raw: unknown, parameters: unknown): { outputs: InferRequest['outputs']; binaryOutputDefault: boolean } {
  const binaryOutputDefault = isObject(parameters) && parameters.binary_data_output === true;
  if (raw === undefined) return { outputs: null, binaryOutputDefault };
  if (!Array.isArray(raw)) throw bad('"outputs" must be an array');
  const outputs = raw.map((o) => {
    if (!isObject(o) || typeof o.name !== 'string') throw bad('each requested output must be an object with a string "name"');
    const binary = isObject(o.parameters) && typeof o.parameters.binary_data === 'boolean' ? o.parameters.binary_data : binaryOutputDefault;
    return { name: o.name, binary };
  });
  return { outputs, binaryOutputDefault };
}

/** JSON tensor data, flat or nested row-major, into a typed array of `size` elements. */
function decodeJsonData(name: string, raw: unknown, dtype: DType, size: number): NdArray['data'] {
  if (!Array.isArray(raw)) throw bad(`input "${name}": "data" must be an array (or send binary_data_size)`);
  const flat = raw.flat(MAX_DIMS) as unknown[];
  if (flat.length !== size) throw bad(`input "${name}": ${flat.length} values for a shape of ${size} elements`);
  const out = makeArray(dtype, size);
  for (let i = 0; i < size; i++) {
    const v = flat[i];
    if (dtype === 'bool') {
      if (typeof v !== 'boolean') throw bad(`input "${name}": BOOL data must be true or false (value ${i})`);
      out[i] = v ? 1 : 0;
      continue;
    }
    if (typeof v !== 'number' || !Number.isFinite(v)) throw bad(`input "${name}": value ${i} is not a finite number`);
    if (dtype === 'int64' || dtype === 'uint64') {
      if (!Number.isSafeInteger(v)) throw bad(`input "${name}": value ${i} is not an integer`);
      (out as BigInt64Array)[i] = BigInt(v);
    } else if (dtype === 'float16') {
      out[i] = floatToHalf(v);
    } else {
      if (!dtype.startsWith('float') && !Number.isInteger(v)) throw bad(`input "${name}": value ${i} is not an integer`);
      out[i] = v;
    }
  }
  return out;
}

export interface EncodedResponse {
  body: Buffer;
  /** Set when the body is a JSON header followed by binary outputs. */
  headerLength: number | null;
}

/** Encode outputs; those flagged binary go after the JSON header (binary tensor extension). */
export function encodeInferResponse(
  head: { model_name: string; model_version?: string; id?: string; parameters: Record<string, number | string | boolean> },
  outputs: { name: string; array: NdArray; binary: boolean }[],
): EncodedResponse {
  const blobs: Buffer[] = [];
  const entries = outputs.map(({ name, array, binary }) => {
    const entry: Record<string, unknown> = { name, datatype: v2Name(array.dtype), shape: array.dims };
    if (binary) {
      const bytes = Buffer.from(array.data.buffer, array.data.byteOffset, array.data.byteLength);
      blobs.push(bytes);
      entry.parameters = { binary_data_size: bytes.length };
    } else {
      entry.data = jsonData(array);
    }
    return entry;
  });
  const json = Buffer.from(JSON.stringify({ ...head, outputs: entries }));
  if (blobs.length === 0) return { body: json, headerLength: null };
  return { body: Buffer.concat([json, ...blobs]), headerLength: json.length };
}

function jsonData(array: NdArray): (number | boolean)[] {
  const out = new Array<number | boolean>(array.data.length);
  for (let i = 0; i < array.data.length; i++) {
    const v = array.data[i]!;
    if (array.dtype === 'bool') out[i] = v !== 0;
    else if (array.dtype === 'float16') out[i] = halfToFloat(v as number);
    else out[i] = Number(v);
  }
  return out;
}

/** Model metadata: dims that vary (symbols, unknown) are -1, as v2 clients expect. */
export function tensorMetadata(t: ServedTensor): { name: string; datatype: string; shape: number[] } {
  return { name: t.name, datatype: v2Name(t.dtype), shape: (t.shape ?? []).map((d) => (typeof d === 'number' ? d : -1)) };
}

