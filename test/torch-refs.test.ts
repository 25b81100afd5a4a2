// Consistency of the PyTorch reference data in test/data/torch-refs (written by
// scripts/make-torch-refs.py with Debian's python3-torch 1.13), so the gradient and training
// tests that compare slicec against it stand on checked data. For each file: the arrays the
// README documents are there with the graph's shapes; onnxruntime-node's forward on the stored
// batch reproduces the stored logits (eval-mode logits for BatchNorm models), also at a smaller
// batch (the batch axis is dynamic); the stored loss is the mean cross-entropy of the logits.
// Two checks tie the numbers to the ONNX files themselves:
// - gradients (models without BatchNorm): the directional derivative ⟨g, u⟩ of each parameter
//   in a random direction u matches the central difference (L(w + εu) − L(w − εu)) / 2ε of the
//   loss computed by onnxruntime, within 3 % (float32 rounding and ReLU kinks crossed by the
//   step; a wrong reduction, scale or parameter is off by far more);
// - BatchNorm: running_after = 0.9·running + 0.1·batch_stat gives the batch mean and unbiased
//   variance; with the mean and the biased variance (·(n−1)/n) as the BN's statistics, the
//   inference-form graph must reproduce PyTorch's train-mode logits.

import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import {
  ModelProtoSchema, TensorShapeProtoSchema, TensorShapeProto_DimensionSchema, TypeProtoSchema, TypeProto_TensorSchema,
  ValueInfoProtoSchema, type ModelProto, type TensorProto,
} from 'onnx-buf';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT, Rng } from './helpers/models.js';

const REFS = path.join(REPO_ROOT, 'test', 'data', 'torch-refs');
const GRAD_MODELS = ['cnn_bn', 'resnet_block', 'dw_se', 'mlp_ln', 'mlp_ln_op17', 'transformer'];
const BN_MODELS = new Set(['cnn_bn', 'resnet_block', 'dw_se']);
/** Ops each export must hold (what the README says it is), and its opset. */
const SIGNATURES: Record<string, { ops: string[]; opset: number }> = {
  cnn_bn: { ops: ['Conv', 'BatchNormalization', 'MaxPool', 'Flatten', 'Gemm'], opset: 13 },
  resnet_block: { ops: ['Conv', 'BatchNormalization', 'Add', 'GlobalAveragePool', 'Gemm'], opset: 13 },
  dw_se: { ops: ['Conv', 'BatchNormalization', 'HardSigmoid', 'Mul', 'GlobalAveragePool', 'Gemm'], opset: 13 },
  mlp_ln: { ops: ['Gemm', 'ReduceMean', 'Sqrt', 'Erf'], opset: 13 },
  mlp_ln_op17: { ops: ['Gemm', 'LayerNormalization', 'Erf'], opset: 17 },
  transformer: { ops: ['MatMul', 'Softmax', 'ReduceMean', 'Gemm'], opset: 13 },
  sgd_epoch: { ops: ['Conv', 'Relu', 'MaxPool', 'Gemm'], opset: 13 },
  sgd_epoch_momentum: { ops: ['Conv', 'Relu', 'MaxPool', 'Gemm'], opset: 13 },
};
const SGD_MODELS = ['sgd_epoch', 'sgd_epoch_momentum'];

// ---------------------------------------------------------------- .npz reading
// A numpy .npz is a zip of .npy files (np.savez_compressed: deflated, zip64 local headers).

interface NpyArray {
  descr: string;
  shape: number[];
  data: Float32Array | BigInt64Array | Uint8Array;
}

function readNpz(file: string): Map<string, NpyArray> {
  const zip = fs.readFileSync(file);
  let eocd = zip.length - 22;
  while (eocd >= 0 && zip.readUInt32LE(eocd) !== 0x06054b50) eocd--;
  if (eocd < 0) throw new Error(`${file}: no zip end-of-central-directory record`);
  const count = zip.readUInt16LE(eocd + 10);
  let at = zip.readUInt32LE(eocd + 16);
  const arrays = new Map<string, NpyArray>();
  for (let i = 0; i < count; i++) {
    if (zip.readUInt32LE(at) !== 0x02014b50) throw new Error(`${file}: bad central directory entry`);
    const method = zip.readUInt16LE(at + 10);
    let compressed = zip.readUInt32LE(at + 20);
    const nameLength = zip.readUInt16LE(at + 28);
    const extraLength = zip.readUInt16LE(at + 30);
    const commentLength = zip.readUInt16LE(at + 32);
    let local = zip.readUInt32LE(at + 42);
    const name = zip.toString('utf8', at + 46, at + 46 + nameLength);
    const zip64 = zip64Fields(zip, at + 46 + nameLength, extraLength);
    if (zip.readUInt32LE(at + 24) === 0xffffffff) zip64.shift();
    if (compressed === 0xffffffff) compressed = zip64.shift()!;
    if (local === 0xffffffff) local = zip64.shift()!;
    const start = local + 30 + zip.readUInt16LE(local + 26) + zip.readUInt16LE(local + 28);
    const raw = zip.subarray(start, start + compressed);
    const bytes = method === 8 ? zlib.inflateRawSync(raw) : method === 0 ? raw : null;
    if (!bytes) throw new Error(`${file}: ${name} uses zip method ${method}`);
    arrays.set(name.replace(/\.npy$/, ''), parseNpy(bytes, `${file}:${name}`));
    at += 46 + nameLength + extraLength + commentLength;
  }
  return arrays;
}

function zip64Fields(zip: Buffer, at: number, length: number): number[] {
  for (let p = at; p < at + length; ) {
    const id = zip.readUInt16LE(p);
    const size = zip.readUInt16LE(p + 2);
    if (id === 1) return Array.from({ length: size / 8 }, (_, k) => Number(zip.readBigUInt64LE(p + 4 + 8 * k)));
    p += 4 + size;
  }
  return [];
}

function parseNpy(bytes: Buffer, source: string): NpyArray {
  if (bytes.toString('latin1', 0, 6) !== '\x93NUMPY') throw new Error(`${source}: not an .npy array`);
  const major = bytes[6]!;
  const headerLength = major === 1 ? bytes.readUInt16LE(8) : bytes.readUInt32LE(8);
  const offset = major === 1 ? 10 : 12;
  const header = bytes.toString('latin1', offset, offset + headerLength);
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  if (!descr || shapeText === undefined || !/'fortran_order':\s*False/.test(header)) throw new Error(`${source}: unexpected header ${header}`);
  const shape = shapeText.split(',').map((s) => s.trim()).filter((s) => s !== '').map(Number);
  const body = new Uint8Array(bytes.subarray(offset + headerLength)).buffer; // a fresh, aligned copy
  const data = descr === '<f4' ? new Float32Array(body) : descr === '<i8' ? new BigInt64Array(body) : descr === '|b1' ? new Uint8Array(body) : null;
  if (!data) throw new Error(`${source}: dtype ${descr} is not used by the reference files`);
  return { descr, shape, data };
}

// ---------------------------------------------------------------- models and runs

interface Ref {
  proto: ModelProto;
  npz: Map<string, NpyArray>;
  /** Initializer values by name; trainable ones are everything but BN running statistics. */
  weights: Map<string, { dims: number[]; data: Float32Array }>;
  trainable: string[];
  /** BatchNormalization nodes: [running mean initializer, running var initializer]. */
  bnStats: [string, string][];
}

function loadRef(name: string): Ref {
  const proto = fromBinary(ModelProtoSchema, fs.readFileSync(path.join(REFS, `${name}.onnx`)));
  const graph = proto.graph!;
  const weights = new Map<string, { dims: number[]; data: Float32Array }>();
  for (const t of graph.initializer) weights.set(t.name, { dims: t.dims.map(Number), data: floatsOf(t) });
  const bnStats = graph.node.filter((n) => n.opType === 'BatchNormalization').map((n) => [n.input[3]!, n.input[4]!] as [string, string]);
  const stats = new Set(bnStats.flat());
  const trainable = graph.initializer.map((t) => t.name).filter((n) => !stats.has(n));
  return { proto, npz: readNpz(path.join(REFS, `${name}.npz`)), weights, trainable, bnStats };
}

function floatsOf(t: TensorProto): Float32Array {
  if (t.dataType !== 1 || t.rawData.byteLength === 0) throw new Error(`initializer ${t.name} is not raw float32`);
  return new Float32Array(new Uint8Array(t.rawData).buffer);
}

function array(ref: Ref, key: string): NpyArray {
  const a = ref.npz.get(key);
  if (!a) throw new Error(`array ${key} is missing`);
  return a;
}

function floats(ref: Ref, key: string): Float32Array {
  const a = array(ref, key);
  if (!(a.data instanceof Float32Array)) throw new Error(`${key} is ${a.descr}, expected <f4`);
  return a.data;
}

type Weights = Record<string, { dims: number[]; data: Float32Array }>;

/**
 * Runs a reference model with its initializers turned into graph inputs, so a run can replace
 * any of them (onnxruntime-node's binding passes only feeds named in inputNames, which leaves out
 * initializers that are merely overridable).
 */
class WeightFedSession {
  private constructor(private readonly session: ort.InferenceSession, private readonly ref: Ref) {}

  /** `extraOutputs`: intermediate float values to expose as graph outputs as well. */
  static async create(ref: Ref, extraOutputs: string[] = []): Promise<WeightFedSession> {
    const copy = fromBinary(ModelProtoSchema, toBinary(ModelProtoSchema, ref.proto));
    const graph = copy.graph!;
    for (const name of extraOutputs) {
      const tensorType = create(TypeProto_TensorSchema, { elemType: 1 });
      graph.output.push(create(ValueInfoProtoSchema, { name, type: create(TypeProtoSchema, { value: { case: 'tensorType', value: tensorType } }) }));
    }
    for (const t of graph.initializer) {
      const dim = t.dims.map((d) => create(TensorShapeProto_DimensionSchema, { value: { case: 'dimValue', value: d } }));
      const tensorType = create(TypeProto_TensorSchema, { elemType: t.dataType, shape: create(TensorShapeProtoSchema, { dim }) });
      graph.input.push(create(ValueInfoProtoSchema, { name: t.name, type: create(TypeProtoSchema, { value: { case: 'tensorType', value: tensorType } }) }));
    }
    graph.initializer = [];
    const session = await ort.InferenceSession.create(toBinary(ModelProtoSchema, copy), { intraOpNumThreads: 1, interOpNumThreads: 1, logSeverityLevel: 3 });
    return new WeightFedSession(session, ref);
  }

  /** Logits for batch x, with the .onnx weights except those given in `replace`. */
  async logits(x: Float32Array, xShape: number[], replace: Weights = {}): Promise<Float32Array> {
    return (await this.run(x, xShape, replace, ['logits'])).logits!.data as Float32Array;
  }

  async run(x: Float32Array, xShape: number[], replace: Weights, outputs: string[]): Promise<ort.InferenceSession.ReturnType> {
    const feeds: Record<string, ort.Tensor> = { x: new ort.Tensor('float32', x, xShape) };
    for (const [name, w] of this.ref.weights) {
      const chosen = replace[name] ?? w;
      feeds[name] = new ort.Tensor('float32', chosen.data, chosen.dims);
    }
    return this.session.run(feeds, outputs);
  }

  release(): Promise<void> {
    return this.session.release();
  }
}

/** Mean cross-entropy, in float64, of logits [N, C] against labels. */
function meanCrossEntropy(logits: Float32Array, labels: BigInt64Array, classes: number): number {
  let total = 0;
  for (let n = 0; n < labels.length; n++) {
    const row = logits.subarray(n * classes, (n + 1) * classes);
    const max = Math.max(...row);
    let sum = 0;
    for (const v of row) sum += Math.exp(v - max);
    total += max + Math.log(sum) - row[Number(labels[n])]!;
  }
  return total / labels.length;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
  return worst;
}

function labels(ref: Ref): BigInt64Array {
  const y = array(ref, 'y');
  if (!(y.data instanceof BigInt64Array)) throw new Error(`y is ${y.descr}, expected <i8`);
  return y.data;
}

// ---------------------------------------------------------------- tests

describe.each([...GRAD_MODELS, ...SGD_MODELS])('torch export %s', (name) => {
  it('is the documented model, as PyTorch exported it, and runs in onnxruntime-node as it is', async () => {
    expect(fs.existsSync(path.join(REFS, 'README.md'))).toBe(true);
    const ref = loadRef(name);
    const ops = new Set(ref.proto.graph!.node.map((n) => n.opType));
    for (const op of SIGNATURES[name]!.ops) expect(ops.has(op), op).toBe(true);
    expect(ref.proto.producerName).toBe('pytorch');
    expect(ref.proto.opsetImport.find((o) => o.domain === '')!.version).toBe(BigInt(SIGNATURES[name]!.opset));
    // BatchNormalization in inference form: one output, running statistics as initializers
    for (const bn of ref.proto.graph!.node.filter((n) => n.opType === 'BatchNormalization')) {
      expect(bn.output.length).toBe(1);
      expect(ref.weights.has(bn.input[3]!) && ref.weights.has(bn.input[4]!)).toBe(true);
    }
    expect(ref.proto.graph!.initializer.some((t) => t.name.startsWith('onnx::'))).toBe(false);
    const session = await ort.InferenceSession.create(path.join(REFS, `${name}.onnx`), { intraOpNumThreads: 1, logSeverityLevel: 3 });
    expect(session.inputNames).toEqual(['x']);
    expect(session.outputNames).toEqual(['logits']);
    const x = array(ref, 'x');
    const logits = (await session.run({ x: new ort.Tensor('float32', floats(ref, 'x'), x.shape) })).logits!;
    expect(logits.dims).toEqual([x.shape[0], 10]);
    if (GRAD_MODELS.includes(name)) {
      expect(maxAbsDiff(logits.data as Float32Array, floats(ref, BN_MODELS.has(name) ? 'logits_eval' : 'logits'))).toBeLessThan(1e-5);
    }
    await session.release();
  });
});

describe.each(GRAD_MODELS)('torch reference %s', (name) => {
  const ref = loadRef(name);
  const x = array(ref, 'x');
  const batch = x.shape[0]!;

  it('holds the documented arrays, shaped like the graph', () => {
    expect(ref.bnStats.length > 0).toBe(BN_MODELS.has(name));
    const expected = ['x', 'y', 'logits', 'loss', ...ref.trainable.map((p) => `grad/${p}`)];
    if (BN_MODELS.has(name)) expected.push('logits_eval', ...ref.bnStats.flatMap(([m, v]) => [`running_mean_after/${m}`, `running_var_after/${v}`]));
    expect([...ref.npz.keys()].sort()).toEqual(expected.sort());
    const input = ref.proto.graph!.input.find((i) => i.name === 'x')!;
    const inputDims = input.type!.value.case === 'tensorType' ? input.type!.value.value.shape!.dim : [];
    expect(inputDims[0]!.value).toEqual({ case: 'dimParam', value: 'N' });
    expect(x.shape.slice(1)).toEqual(inputDims.slice(1).map((d) => Number(d.value.value)));
    expect([8, 16]).toContain(batch);
    expect(array(ref, 'y').shape).toEqual([batch]);
    expect(array(ref, 'logits').shape).toEqual([batch, 10]);
    expect(array(ref, 'loss')).toMatchObject({ descr: '<f4', shape: [] });
    for (const p of ref.trainable) expect(array(ref, `grad/${p}`).shape, p).toEqual(ref.weights.get(p)!.dims);
    for (const [m, v] of ref.bnStats) {
      expect(array(ref, `running_mean_after/${m}`).shape).toEqual(ref.weights.get(m)!.dims);
      expect(array(ref, `running_var_after/${v}`).shape).toEqual(ref.weights.get(v)!.dims);
    }
    for (const l of labels(ref)) expect(l >= 0n && l < 10n).toBe(true);
  });

  it('has a dynamic batch axis: the first 3 rows alone give the first 3 rows of logits', async () => {
    const session = await WeightFedSession.create(ref);
    const expected = floats(ref, BN_MODELS.has(name) ? 'logits_eval' : 'logits');
    const rows = 3;
    const perRow = floats(ref, 'x').length / batch;
    const few = await session.logits(floats(ref, 'x').subarray(0, rows * perRow), [rows, ...x.shape.slice(1)]);
    expect(maxAbsDiff(few, expected.subarray(0, rows * 10))).toBeLessThan(1e-5);
    await session.release();
  });

  it('stores the mean cross-entropy of its train-mode logits as the loss', () => {
    const loss = floats(ref, 'loss')[0]!;
    expect(Math.abs(meanCrossEntropy(floats(ref, 'logits'), labels(ref), 10) - loss)).toBeLessThan(1e-6 * Math.max(1, loss));
  });

  if (BN_MODELS.has(name)) {
    it('has running statistics whose batch statistics reproduce the train-mode logits', async () => {
      const bnNodes = ref.proto.graph!.node.filter((n) => n.opType === 'BatchNormalization');
      const session = await WeightFedSession.create(ref, bnNodes.map((n) => n.input[0]!));
      const bnInputs = await session.run(floats(ref, 'x'), x.shape, {}, bnNodes.map((n) => n.input[0]!));
      const weights: Weights = {};
      for (const bn of bnNodes) {
        const [m, v] = [bn.input[3]!, bn.input[4]!];
        const dims = bnInputs[bn.input[0]!]!.dims;
        const channels = dims[1]!;
        const perChannel = dims.reduce((a, b) => a * b, 1) / channels; // n = N·H·W
        const mean = new Float32Array(channels);
        const variance = new Float32Array(channels);
        for (let c = 0; c < channels; c++) {
          mean[c] = (floats(ref, `running_mean_after/${m}`)[c]! - 0.9 * ref.weights.get(m)!.data[c]!) / 0.1;
          const unbiased = (floats(ref, `running_var_after/${v}`)[c]! - 0.9 * ref.weights.get(v)!.data[c]!) / 0.1;
          variance[c] = (unbiased * (perChannel - 1)) / perChannel;
        }
        weights[m] = { dims: [channels], data: mean };
        weights[v] = { dims: [channels], data: variance };
      }
      const logits = await session.logits(floats(ref, 'x'), x.shape, weights);
      // 2e-5: feeding the unbiased variance instead misses by 1e-4 .. 1e-3
      expect(maxAbsDiff(logits, floats(ref, 'logits'))).toBeLessThan(2e-5);
      // with the eval-mode statistics the train-mode logits are not reproduced: the check can fail
      expect(maxAbsDiff(await session.logits(floats(ref, 'x'), x.shape), floats(ref, 'logits'))).toBeGreaterThan(1e-2);
      await session.release();
    });
  } else {
    it('has gradients that match central differences of the onnxruntime loss', async () => {
      const session = await WeightFedSession.create(ref);
      const rng = new Rng(17);
      const y = labels(ref);
      for (const p of ref.trainable) {
        const w = ref.weights.get(p)!;
        const u = Float32Array.from(w.data, () => rng.normal());
        const g = floats(ref, `grad/${p}`);
        let analytic = 0;
        for (let i = 0; i < g.length; i++) analytic += g[i]! * u[i]!;
        const eps = 1e-3;
        const loss = async (sign: number) => {
          const moved = Float32Array.from(w.data, (v, i) => v + sign * eps * u[i]!);
          return meanCrossEntropy(await session.logits(floats(ref, 'x'), x.shape, { [p]: { dims: w.dims, data: moved } }), y, 10);
        };
        const numeric = ((await loss(1)) - (await loss(-1))) / (2 * eps);
        expect(Math.abs(numeric - analytic), `${p}: numeric ${numeric}, stored ${analytic}`).toBeLessThan(3e-2 * Math.abs(analytic) + 1e-4);
      }
      await session.release();
    });
  }
});

describe.each(SGD_MODELS)('torch reference %s', (name) => {
  const ref = loadRef(name);

  it('holds the documented arrays: 8 batches of 16, the losses, the weights after the epoch', () => {
    const expected = ['x', 'y', 'losses', 'lr', 'momentum', 'nesterov', 'weight_decay', 'batch_size', ...ref.trainable.map((p) => `after/${p}`)];
    expect([...ref.npz.keys()].sort()).toEqual(expected.sort());
    expect(ref.bnStats).toEqual([]);
    expect(array(ref, 'x').shape).toEqual([128, 1, 12, 12]);
    expect(array(ref, 'y').shape).toEqual([128]);
    expect(array(ref, 'losses').shape).toEqual([8]);
    expect(array(ref, 'batch_size').data).toEqual(BigInt64Array.of(16n));
    const momentum = name === 'sgd_epoch_momentum';
    expect(floats(ref, 'lr')[0]).toBeCloseTo(0.05, 7);
    expect(floats(ref, 'momentum')[0]).toBeCloseTo(momentum ? 0.9 : 0, 7);
    expect(floats(ref, 'weight_decay')[0]).toBeCloseTo(momentum ? 5e-4 : 0, 9);
    expect(array(ref, 'nesterov').data).toEqual(Uint8Array.of(momentum ? 1 : 0));
    for (const p of ref.trainable) {
      const after = floats(ref, `after/${p}`);
      expect(array(ref, `after/${p}`).shape, p).toEqual(ref.weights.get(p)!.dims);
      expect(maxAbsDiff(after, ref.weights.get(p)!.data), `${p} moved`).toBeGreaterThan(1e-4);
    }
  });

  it('starts from the .onnx weights: the first step\'s loss is the onnxruntime loss of batch 0', async () => {
    const session = await WeightFedSession.create(ref);
    const x = floats(ref, 'x');
    const first = await session.logits(x.subarray(0, 16 * 144), [16, 1, 12, 12]);
    const loss = meanCrossEntropy(first, labels(ref).subarray(0, 16), 10);
    expect(Math.abs(loss - floats(ref, 'losses')[0]!)).toBeLessThan(1e-5);
    await session.release();
  });
});
