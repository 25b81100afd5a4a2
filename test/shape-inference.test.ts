import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import * as ort from 'onnxruntime-node';
import { Graph, Model, Node, Value, tensorType, type TensorType } from '../compiler/ir.js';
import { decodeModel, encodeModel, readModel } from '../compiler/onnx-codec.js';
import { constValue, inferShapes } from '../compiler/shape-inference.js';
import { DataType, Tensor } from '../compiler/tensor.js';

const TESTDATA = '/usr/share/libonnx-testdata/data';
const WAKEWORD = path.resolve('node_modules/openwakeword-js/models');

type Verdict = 'ok' | 'partial' | 'wrong';

interface Outcome {
  name: string;
  verdict: Verdict;
  why: string;
}

/** Ops whose output shapes depend on data or that the inference leaves alone on purpose. */
const UNSUPPORTED = new Set([
  'If', 'Loop', 'Scan', 'NonZero', 'NonMaxSuppression', 'Compress', 'Unique', 'StringNormalizer',
  'TfIdfVectorizer', 'NegativeLogLikelihoodLoss', 'SoftmaxCrossEntropyLoss', 'Adagrad', 'Adam', 'Momentum',
  'DFT', 'STFT', 'MelWeightMatrix',
]);

function modelFiles(set: string): string[] {
  const base = path.join(TESTDATA, set);
  if (!fs.existsSync(base)) return [];
  return fs.readdirSync(base).sort().map((d) => path.join(base, d, 'model.onnx')).filter((f) => fs.existsSync(f));
}

/** Varint of a protobuf length prefix. */
function varint(n: number): number[] {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return out;
}

/** Read a TensorProto file through the public codec: wrap it as the one initializer of a model. */
function readTensorFile(file: string): Tensor {
  const tensor = fs.readFileSync(file);
  const graph = [0x2a, ...varint(tensor.byteLength), ...tensor];
  const model = new Uint8Array([0x3a, ...varint(graph.length), ...graph]);
  return decodeModel(model, null, file).graph.initializers[0]!.const!;
}

/**
 * Node tests feed shape-like operands (Reshape targets, Slice starts, pads, ...) as graph inputs.
 * Treat small integer (and tiny float) inputs as constants with their test-data values, as an
 * exporter would have written them.
 */
function constantizeInputs(model: Model, file: string): void {
  const dataDir = path.join(path.dirname(file), 'test_data_set_0');
  model.graph.inputs.forEach((input, i) => {
    const pb = path.join(dataDir, `input_${i}.pb`);
    if (input.const || !fs.existsSync(pb)) return;
    const t = readTensorFile(pb);
    const intLike = [DataType.INT64, DataType.INT32].includes(t.dtype) && t.size <= 64;
    const tinyFloat = t.dtype === DataType.FLOAT && t.size <= 8 && t.dims.length <= 1;
    if (intLike || tinyFloat) input.const = t;
  });
}

function judge(declared: TensorType, inferred: TensorType | null): Verdict {
  if (!inferred) return 'partial';
  if (declared.elemType !== 0 && inferred.elemType !== 0 && inferred.elemType !== declared.elemType) return 'wrong';
  if (!declared.shape) return 'ok';
  if (!inferred.shape) return 'partial';
  if (inferred.shape.length !== declared.shape.length) return 'wrong';
  let verdict: Verdict = inferred.elemType === 0 ? 'partial' : 'ok';
  declared.shape.forEach((d, i) => {
    const got = inferred.shape![i];
    if (typeof d !== 'number') return;
    if (typeof got === 'number' && got !== d) verdict = 'wrong';
    else if (typeof got !== 'number' && verdict === 'ok') verdict = 'partial';
  });
  return verdict;
}

/** Clear every node output type, infer, and compare the graph outputs with what the file declared. */
function checkModel(file: string, name: string, constantize = false): Outcome | null {
  const model = readModel(file);
  const g = model.graph;
  if ([...g.inputs, ...g.outputs].some((v) => v.type?.kind !== 'tensor')) return null;
  if (g.nodes.some((n) => UNSUPPORTED.has(n.op) || n.domain !== '')) return null;
  if (constantize) constantizeInputs(model, file);
  const declared = g.outputs.map((v) => v.tensorType!);
  for (const n of g.nodes) for (const o of n.outputs) o.type = null;
  inferShapes(model);
  let verdict: Verdict = 'ok';
  let why = '';
  g.outputs.forEach((out, i) => {
    const v = judge(declared[i]!, out.tensorType);
    if (v === 'ok' || verdict === 'wrong') return;
    verdict = v;
    why = `output ${i} declared ${JSON.stringify(declared[i]!.shape)}, inferred ${JSON.stringify(out.tensorType?.shape ?? null)}`;
  });
  return { name, verdict, why };
}

function coverage(set: string, constantize = false): Outcome[] {
  const out: Outcome[] = [];
  for (const file of modelFiles(set)) {
    const r = checkModel(file, path.basename(path.dirname(file)), constantize);
    if (r) out.push(r);
  }
  return out;
}

/** Print the coverage and the misses; returns the fraction fully inferred. */
function report(set: string, outcomes: Outcome[]): number {
  const ok = outcomes.filter((o) => o.verdict === 'ok').length;
  console.log(`shape inference ${set}: ${ok}/${outcomes.length} models fully inferred`);
  for (const o of outcomes) if (o.verdict !== 'ok') console.log(`  ${o.verdict} ${o.name}: ${o.why}`);
  return outcomes.length === 0 ? 1 : ok / outcomes.length;
}

const haveTestdata = fs.existsSync(TESTDATA);

describe('shape inference on real models', () => {
  it.skipIf(!haveTestdata)('infers the outputs of the pytorch-converted and pytorch-operator models', () => {
    const converted = coverage('pytorch-converted');
    const operator = coverage('pytorch-operator');
    expect(report('pytorch-converted', converted)).toBeGreaterThanOrEqual(0.95);
    expect(report('pytorch-operator', operator)).toBeGreaterThanOrEqual(0.95);
    expect([...converted, ...operator].filter((o) => o.verdict === 'wrong')).toEqual([]);
  });

  it.skipIf(!haveTestdata)('infers the outputs of the ONNX node test models', () => {
    // as shipped, shape operands are graph inputs: dims they decide stay unknown, but none may be wrong
    const asShipped = coverage('node');
    const ok = asShipped.filter((o) => o.verdict === 'ok').length;
    console.log(`shape inference node (shape operands as inputs): ${ok}/${asShipped.length} models fully inferred`);
    expect(asShipped.filter((o) => o.verdict === 'wrong')).toEqual([]);
    const node = coverage('node', true);
    expect(report('node (shape operands constant)', node)).toBeGreaterThanOrEqual(0.95);
    expect(node.filter((o) => o.verdict === 'wrong')).toEqual([]);
  });

  it('infers the openwakeword models', () => {
    for (const f of fs.readdirSync(WAKEWORD).filter((f) => f.endsWith('.onnx'))) {
      const r = checkModel(path.join(WAKEWORD, f), f);
      expect(r, f).toEqual({ name: f, verdict: 'ok', why: '' });
    }
  });
});

/** Run `model` with every node output exposed as a graph output; returns dims by value name. */
async function runAllValues(model: Model, feeds: Record<string, ort.Tensor>): Promise<Map<string, number[]>> {
  const g = model.graph;
  for (const n of g.nodes) for (const o of n.outputs) if (o.name && !g.outputs.includes(o) && o.tensorType) g.outputs.push(o);
  const session = await ort.InferenceSession.create(encodeModel(model), {
    graphOptimizationLevel: 'disabled',
    intraOpNumThreads: 1,
    interOpNumThreads: 1,
    logSeverityLevel: 4,
  });
  const results = await session.run(feeds);
  await session.release();
  return new Map(Object.entries(results).map(([name, t]) => [name, [...t.dims].map(Number)]));
}

const ORT_TYPES: Record<number, ort.Tensor.Type> = {
  [DataType.FLOAT]: 'float32', [DataType.DOUBLE]: 'float64', [DataType.INT64]: 'int64', [DataType.INT32]: 'int32',
  [DataType.INT8]: 'int8', [DataType.UINT8]: 'uint8', [DataType.INT16]: 'int16', [DataType.UINT16]: 'uint16',
  [DataType.BOOL]: 'bool', [DataType.FLOAT16]: 'float16', [DataType.UINT32]: 'uint32', [DataType.UINT64]: 'uint64',
};

function ortTensor(t: Tensor): ort.Tensor {
  const type = ORT_TYPES[t.dtype];
  if (!type) throw new Error(`no onnxruntime type for ${t.dtype}`);
  return new ort.Tensor(type, t.data() as never, t.dims);
}

function zeros(dims: number[]): ort.Tensor {
  return new ort.Tensor('float32', new Float32Array(dims.reduce((a, b) => a * b, 1)), dims);
}

/** Every node output's inferred shape (symbols bound by `bindings`) matches what ORT produced. */
function expectShapesMatch(model: Model, actual: Map<string, number[]>, bindings: Record<string, number>, label = ''): number {
  let checked = 0;
  for (const n of model.graph.nodes) {
    for (const o of n.outputs) {
      const dims = actual.get(o.name);
      if (!dims) continue;
      const inferred = o.shape?.map((d) => (typeof d === 'string' ? bindings[d] ?? d : d));
      expect(inferred, `${label} ${n.label()} output ${o.name}`).toEqual(dims);
      checked++;
    }
  }
  return checked;
}

/** Node tests of ops whose output shape differs from their input's (elementwise ops are cheap to skip). */
const SHAPE_CHANGING = new RegExp(['conv', 'pool', 'pad', 'resize', 'upsample', 'reshape', 'slice', 'split', 'squeeze',
  'gather', 'expand', 'tile', 'einsum', 'matmul', 'gemm', 'flatten', 'transpose', 'concat', 'depth', 'space', 'top_k',
  'reduce', 'arg', 'shape', 'size', 'range', 'onehot', 'constantofshape', 'batchnorm', 'layer_norm', 'group_norm',
  'dropout', 'lstm', 'gru', 'rnn', 'trilu', 'quantize', 'cumsum', 'window', 'lrn', 'gridsample', 'roialign',
  'dequantize', 'softmax', 'hardmax'].join('|'), 'i');

describe('shape inference against onnxruntime', () => {
  it('matches every intermediate shape of an openwakeword model at a symbolic batch', async () => {
    const model = readModel(path.join(WAKEWORD, 'hello_deepa.onnx'));
    const input = model.graph.inputs[0]!;
    input.type = tensorType(DataType.FLOAT, ['N', 25, 96]);
    for (const n of model.graph.nodes) for (const o of n.outputs) o.type = null;
    const { unknown } = inferShapes(model);
    expect(unknown).toEqual([]);
    expect(model.graph.outputs[0]!.shape).toEqual(['N', 1]);
    const actual = await runAllValues(model, { [input.name]: zeros([3, 25, 96]) });
    expect(expectShapesMatch(model, actual, { N: 3 })).toBeGreaterThan(20);
  });

  it.skipIf(!haveTestdata)('matches every intermediate shape of the test models onnxruntime runs', async () => {
    let models = 0;
    let values = 0;
    for (const set of ['pytorch-converted', 'pytorch-operator', 'node']) {
      for (const file of modelFiles(set)) {
        if (set === 'node' && !SHAPE_CHANGING.test(path.basename(path.dirname(file)))) continue;
        const model = readModel(file);
        const g = model.graph;
        if ([...g.inputs, ...g.outputs].some((v) => v.type?.kind !== 'tensor')) continue;
        if (g.nodes.some((n) => UNSUPPORTED.has(n.op) || n.domain !== '')) continue;
        const dataDir = path.join(path.dirname(file), 'test_data_set_0');
        const feeds: Record<string, ort.Tensor> = {};
        const inputs = g.inputs.filter((v) => !v.const);
        if (!inputs.every((v, i) => fs.existsSync(path.join(dataDir, `input_${i}.pb`)))) continue;
        const tensors = inputs.map((_, i) => readTensorFile(path.join(dataDir, `input_${i}.pb`)));
        if (tensors.some((t) => !ORT_TYPES[t.dtype])) continue;
        inputs.forEach((v, i) => (feeds[v.name] = ortTensor(tensors[i]!)));
        if (set === 'node') constantizeInputs(model, file);
        for (const n of g.nodes) for (const o of n.outputs) o.type = null;
        inferShapes(model);
        for (const v of inputs) v.const = null;
        let actual: Map<string, number[]>;
        try {
          actual = await runAllValues(model, feeds);
        } catch {
          continue; // opsets or ops this onnxruntime build does not run
        }
        values += expectShapesMatch(model, actual, {}, path.basename(path.dirname(file)));
        models++;
      }
    }
    console.log(`shape inference vs onnxruntime: ${values} values in ${models} models`);
    expect(models).toBeGreaterThan(400);
  });
});

// ---------------------------------------------------------------- hand-built graphs

function node(g: Graph, op: string, inputs: (Value | null)[], outputs: string[], attrs: (n: Node) => void = () => {}): Node {
  const n = new Node(op);
  inputs.forEach((v, i) => n.setInput(i, v));
  for (const name of outputs) n.addOutput(name);
  attrs(n);
  g.addNode(n);
  return n;
}

describe('shape inference on hand-built graphs', () => {
  it('keeps a symbolic batch through Conv, Flatten and Gemm', () => {
    const model = new Model();
    model.opsetImports.set('', 13n);
    const g = model.graph;
    const x = new Value('x', tensorType(DataType.FLOAT, ['N', 3, 32, 32]));
    g.inputs.push(x);
    const w = g.addInitializer('w', Tensor.float32([16, 3, 3, 3], new Float32Array(16 * 27)));
    const fc = g.addInitializer('fc', Tensor.float32([10, 16 * 16 * 16], new Float32Array(10 * 4096)));
    const conv = node(g, 'Conv', [x, w], ['c'], (n) => {
      n.setInts('pads', [1, 1, 1, 1]);
      n.setInts('strides', [2, 2]);
    });
    const relu = node(g, 'Relu', [conv.outputs[0]!], ['r']);
    const flat = node(g, 'Flatten', [relu.outputs[0]!], ['f']);
    const gemm = node(g, 'Gemm', [flat.outputs[0]!, fc], ['y'], (n) => n.setInt('transB', 1));
    g.outputs.push(gemm.outputs[0]!);
    expect(inferShapes(model).unknown).toEqual([]);
    expect(conv.outputs[0]!.shape).toEqual(['N', 16, 16, 16]);
    expect(flat.outputs[0]!.shape).toEqual(['N', 4096]);
    expect(gemm.outputs[0]!.type).toEqual(tensorType(DataType.FLOAT, ['N', 10]));
  });

  it('folds Shape → Gather → Unsqueeze → Concat → Reshape with the batch kept symbolic', () => {
    const model = new Model();
    model.opsetImports.set('', 13n);
    const g = model.graph;
    const x = new Value('x', tensorType(DataType.FLOAT, ['N', 8, 4, 4]));
    g.inputs.push(x);
    const shape = node(g, 'Shape', [x], ['s']);
    const zero = g.addInitializer('zero', Tensor.int64([], [0]));
    const axes = g.addInitializer('axes', Tensor.int64([1], [0]));
    const minusOne = g.addInitializer('minus_one', Tensor.int64([1], [-1]));
    const gather = node(g, 'Gather', [shape.outputs[0]!, zero], ['batch'], (n) => n.setInt('axis', 0));
    const unsq = node(g, 'Unsqueeze', [gather.outputs[0]!, axes], ['batch1']);
    const cat = node(g, 'Concat', [unsq.outputs[0]!, minusOne], ['target'], (n) => n.setInt('axis', 0));
    const reshape = node(g, 'Reshape', [x, cat.outputs[0]!], ['y']);
    g.outputs.push(reshape.outputs[0]!);
    const { unknown, known } = inferShapes(model);
    expect(unknown).toEqual([]);
    expect(known.get(cat.outputs[0]!)?.data).toEqual(['N', -1n]);
    expect(constValue(cat.outputs[0]!, known)).toBeNull();
    expect(constValue(minusOne)).toEqual([-1n]);
    expect(reshape.outputs[0]!.shape).toEqual(['N', 128]);
    expect(model.graph.initializers.length).toBe(3);
  });

  it('keeps declared types unless asked to overwrite, and leaves unknown ops untyped', () => {
    const model = new Model();
    model.opsetImports.set('', 11n);
    const g = model.graph;
    const x = new Value('x', tensorType(DataType.FLOAT, [2, 6]));
    g.inputs.push(x);
    const custom = new Node('Mystery', 'com.example');
    custom.setInput(0, x);
    custom.addOutput('m');
    g.addNode(custom);
    const relu = node(g, 'Relu', [x], ['r']);
    relu.outputs[0]!.type = tensorType(DataType.FLOAT, ['batch', null]);
    const slice = node(g, 'Slice', [x, g.addInitializer('st', Tensor.int64([1], [1])), g.addInitializer('en', Tensor.int64([1], [2n ** 63n - 1n])),
      g.addInitializer('ax', Tensor.int64([1], [-1]))], ['s']);
    const { unknown } = inferShapes(model);
    expect(unknown).toEqual([custom]);
    expect(custom.outputs[0]!.type).toBeNull();
    expect(relu.outputs[0]!.shape).toEqual(['batch', 6]);
    expect(slice.outputs[0]!.shape).toEqual([2, 5]);
    inferShapes(model, { overwrite: true });
    expect(relu.outputs[0]!.shape).toEqual([2, 6]);
  });

  it('follows the attribute forms of older opsets', () => {
    const model = new Model();
    model.opsetImports.set('', 9n);
    const g = model.graph;
    const x = new Value('x', tensorType(DataType.FLOAT, ['N', 4, 5, 6]));
    g.inputs.push(x);
    const slice = node(g, 'Slice', [x], ['s'], (n) => {
      n.setInts('starts', [1, -3]);
      n.setInts('ends', [3, 1000]);
      n.setInts('axes', [1, 3]);
    });
    const squeeze = node(g, 'Unsqueeze', [slice.outputs[0]!], ['u'], (n) => n.setInts('axes', [0, -1]));
    const reduce = node(g, 'ReduceMean', [x], ['m'], (n) => {
      n.setInts('axes', [2, 3]);
      n.setInt('keepdims', 0);
    });
    const up = node(g, 'Upsample', [x, g.addInitializer('sc', Tensor.float32([4], [1, 1, 2, 2]))], ['up']);
    const pool = node(g, 'MaxPool', [x], ['p', 'idx'], (n) => {
      n.setInts('kernel_shape', [2, 2]);
      n.setInts('strides', [2, 2]);
      n.setInt('ceil_mode', 1);
    });
    inferShapes(model);
    expect(slice.outputs[0]!.shape).toEqual(['N', 2, 5, 3]);
    expect(squeeze.outputs[0]!.shape).toEqual([1, 'N', 2, 5, 3, 1]);
    expect(reduce.outputs[0]!.shape).toEqual(['N', 4]);
    expect(up.outputs[0]!.shape).toEqual(['N', 4, 10, 12]);
    expect(pool.outputs[0]!.shape).toEqual(['N', 4, 3, 3]);
    expect(pool.outputs[1]!.elemType).toBe(DataType.INT64);
  });
});
