// Shared test helpers: where the real models live, feeds for them (recorded test data or seeded
// random inputs), running them in onnxruntime-node, and comparing decoded messages and outputs.

import { fromBinary } from '@bufbuild/protobuf';
import { TensorProtoSchema, type ModelProto, type TensorProto } from 'onnx-buf';
import * as ort from 'onnxruntime-node';
import { Rng } from '../../compiler/rng.js';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Model } from '../../compiler/ir.js';
import { DataType, Tensor, type TensorSource } from '../../compiler/tensor.js';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const TESTDATA_ROOT = '/usr/share/libonnx-testdata/data';
export const TESTDATA_GROUPS = ['pytorch-converted', 'pytorch-operator', 'node', 'simple'] as const;
export type TestdataGroup = (typeof TESTDATA_GROUPS)[number];

export interface ModelCase {
  /** Short label for test names: `pytorch-converted/test_Conv2d`, `fixtures/mlp.onnx`. */
  name: string;
  file: string;
  /** Folder with input_N.pb / output_N.pb recorded by ONNX's test suite, when there is one. */
  dataDir: string | null;
}

/** Throws (never skips) when Debian's test data is missing, telling the user how to get it. */
export function requireTestdata(): void {
  if (!fs.existsSync(TESTDATA_ROOT)) {
    throw new Error(
      `ONNX backend test data not found at ${TESTDATA_ROOT}. ` +
        'These tests need it: run `apt-get install -y libonnx-testdata` and rerun the tests.',
    );
  }
}

export function testdataModels(group: TestdataGroup): ModelCase[] {
  requireTestdata();
  const dir = path.join(TESTDATA_ROOT, group);
  const cases: ModelCase[] = [];
  for (const entry of fs.readdirSync(dir).sort()) {
    const file = path.join(dir, entry, 'model.onnx');
    if (!fs.existsSync(file)) continue;
    const dataDir = path.join(dir, entry, 'test_data_set_0');
    cases.push({ name: `${group}/${entry}`, file, dataDir: fs.existsSync(dataDir) ? dataDir : null });
  }
  if (cases.length === 0) throw new Error(`no models under ${dir}; reinstall with \`apt-get install -y --reinstall libonnx-testdata\``);
  return cases;
}

export function openwakewordModels(): ModelCase[] {
  const dir = path.join(REPO_ROOT, 'node_modules', 'openwakeword-js', 'models');
  if (!fs.existsSync(dir)) throw new Error(`${dir} is missing; run \`npm install\` (openwakeword-js is a devDependency)`);
  return onnxFilesIn(dir, 'openwakeword');
}

/** Our own fixture models; whatever fixtures/*.onnx holds right now (possibly nothing). */
export function fixtureModels(): ModelCase[] {
  const dir = path.join(REPO_ROOT, 'fixtures');
  if (!fs.existsSync(dir)) return [];
  return onnxFilesIn(dir, 'fixtures');
}

function onnxFilesIn(dir: string, label: string): ModelCase[] {
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.onnx'))
    .sort()
    .map((f) => ({ name: `${label}/${f}`, file: path.join(dir, f), dataDir: null }));
}

// ---------------------------------------------------------------- randomness

export { Rng };

// ---------------------------------------------------------------- feeds

export type Feeds = Record<string, ort.Tensor>;

const ORT_TYPES: Partial<Record<number, ort.Tensor.Type>> = {
  [DataType.FLOAT]: 'float32',
  [DataType.DOUBLE]: 'float64',
  [DataType.FLOAT16]: 'float16',
  [DataType.INT8]: 'int8',
  [DataType.UINT8]: 'uint8',
  [DataType.INT16]: 'int16',
  [DataType.UINT16]: 'uint16',
  [DataType.INT32]: 'int32',
  [DataType.UINT32]: 'uint32',
  [DataType.INT64]: 'int64',
  [DataType.UINT64]: 'uint64',
  [DataType.BOOL]: 'bool',
  [DataType.STRING]: 'string',
};

/** A recorded TensorProto (input_N.pb) as an ORT tensor. Decoded here, outside the codec. */
export function tensorProtoToOrt(tp: TensorProto): ort.Tensor {
  const dims = tp.dims.map(Number);
  const type = ORT_TYPES[tp.dataType];
  if (!type) throw new Error(`test data tensor ${tp.name} has data type ${tp.dataType}, which the helper cannot feed`);
  if (type === 'string') return new ort.Tensor('string', tp.stringData.map((s) => new TextDecoder().decode(s)), dims);
  let source: TensorSource;
  if (tp.rawData.byteLength > 0) source = { kind: 'raw', bytes: tp.rawData };
  else if (tp.floatData.length > 0) source = { kind: 'float', values: tp.floatData };
  else if (tp.int32Data.length > 0) source = { kind: 'int32', values: tp.int32Data };
  else if (tp.int64Data.length > 0) source = { kind: 'int64', values: tp.int64Data };
  else if (tp.doubleData.length > 0) source = { kind: 'double', values: tp.doubleData };
  else if (tp.uint64Data.length > 0) source = { kind: 'uint64', values: tp.uint64Data };
  else source = { kind: 'raw', bytes: new Uint8Array(0) };
  const data = new Tensor(tp.dataType, dims, source).data();
  return new ort.Tensor(type, data as never, dims);
}

/** Names of graph inputs that are not initializers (what a caller must feed), in order. */
export function feedableInputs(proto: ModelProto): string[] {
  const inits = new Set(proto.graph!.initializer.map((t) => t.name));
  return proto.graph!.input.map((i) => i.name).filter((n) => !inits.has(n));
}

/**
 * Feeds from test_data_set_0/input_N.pb. Unnamed tensors go to the feedable inputs in order.
 * Returns null when the folder holds something other than plain tensors (sequences, optionals).
 */
export function recordedFeeds(dataDir: string, proto: ModelProto): Feeds | null {
  const names = feedableInputs(proto);
  const feeds: Feeds = {};
  for (let i = 0; ; i++) {
    const file = path.join(dataDir, `input_${i}.pb`);
    if (!fs.existsSync(file)) break;
    // sequences and optionals are stored as other messages, which may still parse as a
    // TensorProto; anything that does not convert cleanly means "no recorded feeds"
    try {
      const tp = fromBinary(TensorProtoSchema, fs.readFileSync(file));
      const name = tp.name || names[i];
      if (!name || !ORT_TYPES[tp.dataType]) return null;
      feeds[name] = tensorProtoToOrt(tp);
    } catch {
      return null;
    }
  }
  return feeds;
}

/**
 * Seeded random feeds from the model's input types. Symbolic and unknown dims become
 * `symbolicDim` (one symbol, one value). Floats in [-1, 1), integers in [0, 3) so they stay
 * valid as indices and axes, booleans fair coins. Returns null for inputs it cannot make
 * (sequences, maps, unknown rank).
 */
export function randomFeeds(model: Model, seed: number, symbolicDim = 2): Feeds | null {
  const rng = new Rng(seed);
  const feeds: Feeds = {};
  for (const input of model.graph.inputs) {
    if (input.const) continue;
    const t = input.tensorType;
    const type = t ? ORT_TYPES[t.elemType] : undefined;
    if (!t || !t.shape || !type) return null;
    const dims = t.shape.map((d) => (typeof d === 'number' ? d : symbolicDim));
    let size = 1;
    for (const d of dims) size *= d;
    feeds[input.name] = randomTensor(type, dims, size, rng);
  }
  return feeds;
}

function randomTensor(type: ort.Tensor.Type, dims: number[], size: number, rng: Rng): ort.Tensor {
  switch (type) {
    case 'float32': return new ort.Tensor(type, Float32Array.from({ length: size }, () => rng.next() * 2 - 1), dims);
    case 'float64': return new ort.Tensor(type, Float64Array.from({ length: size }, () => rng.next() * 2 - 1), dims);
    // float16 bits of values in [-1, 1): sign, exponent 0..14, random mantissa
    case 'float16': return new ort.Tensor(type, Uint16Array.from({ length: size }, () => (rng.int(2) << 15) | (rng.int(15) << 10) | rng.int(1024)), dims);
    case 'int8': return new ort.Tensor(type, Int8Array.from({ length: size }, () => rng.int(3)), dims);
    case 'uint8': return new ort.Tensor(type, Uint8Array.from({ length: size }, () => rng.int(3)), dims);
    case 'int16': return new ort.Tensor(type, Int16Array.from({ length: size }, () => rng.int(3)), dims);
    case 'uint16': return new ort.Tensor(type, Uint16Array.from({ length: size }, () => rng.int(3)), dims);
    case 'int32': return new ort.Tensor(type, Int32Array.from({ length: size }, () => rng.int(3)), dims);
    case 'uint32': return new ort.Tensor(type, Uint32Array.from({ length: size }, () => rng.int(3)), dims);
    case 'int64': return new ort.Tensor(type, BigInt64Array.from({ length: size }, () => BigInt(rng.int(3))), dims);
    case 'uint64': return new ort.Tensor(type, BigUint64Array.from({ length: size }, () => BigInt(rng.int(3))), dims);
    case 'bool': return new ort.Tensor(type, Uint8Array.from({ length: size }, () => rng.int(2)), dims);
    case 'string': return new ort.Tensor(type, Array.from({ length: size }, () => `s${rng.int(100)}`), dims);
    default: throw new Error(`no random data for ${type}`);
  }
}

// ---------------------------------------------------------------- running

export interface OrtOutput {
  type: string;
  dims: number[];
  /** Element bytes (little-endian) or, for strings, the strings. */
  data: Uint8Array | string[];
}

const SESSION_OPTIONS: ort.InferenceSession.SessionOptions = {
  // one thread: results do not depend on how work was split, and small models load faster
  intraOpNumThreads: 1,
  interOpNumThreads: 1,
  logSeverityLevel: 4,
};

/** Run a model once (bytes, or a file path so external data resolves); its outputs as tensors (all, or the named ones). */
export async function runTensors(model: Uint8Array | string, feeds: Feeds, outputs?: string[]): Promise<Record<string, ort.Tensor>> {
  const session = await ort.InferenceSession.create(model as string, SESSION_OPTIONS);
  try {
    const names = outputs ?? [...session.outputNames];
    const out = await session.run(feeds, names);
    return Object.fromEntries(names.map((n) => [n, out[n]!]));
  } finally {
    await session.release();
  }
}

/** Run a model (bytes, or a file path so external data resolves) and return every output. */
export async function runOrt(model: Uint8Array | string, feeds: Feeds): Promise<Record<string, OrtOutput>> {
  const session =
    typeof model === 'string'
      ? await ort.InferenceSession.create(model, SESSION_OPTIONS)
      : await ort.InferenceSession.create(model, SESSION_OPTIONS);
  try {
    const results = await session.run(feeds);
    const out: Record<string, OrtOutput> = {};
    for (const name of session.outputNames) {
      const t = results[name]!;
      const data = t.data;
      out[name] = {
        type: t.type,
        dims: [...t.dims],
        data: Array.isArray(data) ? [...data] : new Uint8Array((data as ArrayBufferView).buffer, (data as ArrayBufferView).byteOffset, (data as ArrayBufferView).byteLength).slice(),
      };
    }
    return out;
  } finally {
    await session.release();
  }
}

/** The first way two output sets differ bit for bit, or null when they are identical. */
export function outputDifference(expected: Record<string, OrtOutput>, actual: Record<string, OrtOutput>): string | null {
  const names = Object.keys(expected);
  if (names.join('\n') !== Object.keys(actual).join('\n')) {
    return `output names differ: [${names.join(', ')}] vs [${Object.keys(actual).join(', ')}]`;
  }
  for (const name of names) {
    const a = expected[name]!;
    const b = actual[name]!;
    if (a.type !== b.type) return `${name}: type ${a.type} vs ${b.type}`;
    if (a.dims.join(',') !== b.dims.join(',')) return `${name}: dims [${a.dims}] vs [${b.dims}]`;
    if (a.data.length !== b.data.length) return `${name}: ${a.data.length} vs ${b.data.length} data elements`;
    for (let i = 0; i < a.data.length; i++) {
      if (a.data[i] !== b.data[i]) return `${name}: first difference at ${typeof a.data[i] === 'string' ? 'element' : 'byte'} ${i}`;
    }
  }
  return null;
}

// ---------------------------------------------------------------- message diff

function show(value: unknown): string {
  const text = JSON.stringify(value) ?? 'undefined';
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

/**
 * Paths where two JSON trees differ (`graph.node[3].attribute[0].i: "2" → "3"`), at most
 * `limit` of them, for readable failures when comparing decoded messages.
 */
export function diffMessages(expected: unknown, actual: unknown, limit = 20): string[] {
  const lines: string[] = [];
  const walk = (a: unknown, b: unknown, at: string): void => {
    if (lines.length >= limit) return;
    if (a === b) return;
    if (Array.isArray(a) && Array.isArray(b)) {
      if (a.length !== b.length) lines.push(`${at}: length ${a.length} → ${b.length}`);
      for (let i = 0; i < Math.min(a.length, b.length); i++) walk(a[i], b[i], `${at}[${i}]`);
      return;
    }
    if (a && b && typeof a === 'object' && typeof b === 'object' && !Array.isArray(a) && !Array.isArray(b)) {
      const ao = a as Record<string, unknown>;
      const bo = b as Record<string, unknown>;
      for (const key of new Set([...Object.keys(ao), ...Object.keys(bo)])) {
        const p = at ? `${at}.${key}` : key;
        if (!(key in bo)) lines.push(`${p}: ${show(ao[key])} → (missing)`);
        else if (!(key in ao)) lines.push(`${p}: (missing) → ${show(bo[key])}`);
        else walk(ao[key], bo[key], p);
        if (lines.length >= limit) return;
      }
      return;
    }
    lines.push(`${at || '(root)'}: ${show(a)} → ${show(b)}`);
  };
  walk(expected, actual, '');
  return lines;
}
