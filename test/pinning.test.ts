// What couple-channels cannot map exactly is pinned and explained, never sliced wrongly:
// custom domains, unknown ops, NHWC flattens, attention, control flow, channel splits.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { create } from '@bufbuild/protobuf';
import { AttributeProto_AttributeType, AttributeProtoSchema, GraphProtoSchema, NodeProtoSchema, ValueInfoProtoSchema, type AttributeProto } from 'onnx-buf';
import { Graph, Model, Node, Value, tensorType } from '../compiler/ir.js';
import { OpBuilder } from '../compiler/op-builder.js';
import { readModel, writeModel } from '../compiler/onnx-codec.js';
import { compile } from '../compiler/pipeline.js';
import { DataType, Tensor } from '../compiler/tensor.js';
import { Rng } from '../compiler/rng.js';
import { randomFeeds } from './helpers/models.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-pin-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

interface Net {
  model: Model;
  b: OpBuilder;
  rng: Rng;
  x: Value;
}

function net(inputDims: number[], opset = 13): Net {
  const graph = new Graph();
  graph.name = 'test';
  const model = new Model(graph);
  model.irVersion = 8n;
  model.opsetImports.set('', BigInt(opset));
  const x = new Value('input', tensorType(DataType.FLOAT, ['N', ...inputDims]));
  graph.inputs.push(x);
  graph.claimName('input');
  return { model, b: new OpBuilder(graph, opset), rng: new Rng(5), x };
}

function weight(n: Net, dims: number[]): Value {
  const size = dims.reduce((p, d) => p * d, 1);
  return n.b.constant(Tensor.float32(dims, Array.from({ length: size }, () => n.rng.next() - 0.5)), 'w');
}

function conv(n: Net, x: Value, cin: number, cout: number): Value {
  return n.b.relu(n.b.conv(x, weight(n, [cout, cin, 3, 3]), weight(n, [cout]), { kernelShape: [3, 3], pads: [1, 1, 1, 1] }));
}

function finish(n: Net, y: Value, name: string): string {
  y.name = 'output';
  n.model.graph.outputs.push(y);
  const file = path.join(tmp, `${name}.onnx`);
  writeModel(n.model, file);
  return file;
}

async function compileAndRun(file: string, runnable = true) {
  const outDir = path.join(tmp, `${path.basename(file, '.onnx')}.sliced`);
  const result = await compile({ codegen: false, model: file, groups: 4, outDir });
  if (runnable) {
    const feeds = randomFeeds(readModel(file), 1)!;
    const ref = await (await ort.InferenceSession.create(file)).run(feeds);
    for (const rate of result.rates) {
      const out = await (await ort.InferenceSession.create(path.join(outDir, rate.file))).run(feeds);
      expect(out['output']!.dims).toEqual(ref['output']!.dims);
    }
  }
  return result;
}

describe('grouped and depthwise convs', () => {
  it('slices whole conv groups; the elastic graph pads and slices around them', async () => {
    const n = net([3, 8, 8]);
    const a = conv(n, n.x, 3, 16);
    // grouped conv 16 → 24 in 4 groups (4 in, 6 out per group), then depthwise with multiplier 2
    const g = n.b.relu(n.b.conv(a, weight(n, [24, 4, 3, 3]), weight(n, [24]), { kernelShape: [3, 3], pads: [1, 1, 1, 1], group: 4 }));
    const d = n.b.relu(n.b.conv(g, weight(n, [48, 1, 3, 3]), weight(n, [48]), { kernelShape: [3, 3], pads: [1, 1, 1, 1], group: 24 }));
    const file = finish(n, n.b.reduce('ReduceMean', n.b.conv(d, weight(n, [4, 48, 1, 1]), null, { kernelShape: [1, 1] }), [2, 3], false), 'grouped');
    const feeds = randomFeeds(readModel(file), 1)!;
    const ref = await (await ort.InferenceSession.create(file)).run(feeds);
    for (const norm of ['keep', 'gn'] as const) {
      const outDir = path.join(tmp, `grouped-${norm}`);
      const result = await compile({ codegen: false, model: file, groups: 4, outDir, norm, elastic: 'lean' });
      expect(result.layers.slice(0, 3).map((l) => l.reason ?? 'sliced')).toEqual(['sliced', 'sliced', 'sliced']);
      for (const rate of result.rates) {
        const prunedFile = path.join(outDir, rate.file);
        const pruned = readModel(prunedFile);
        const groups = pruned.graph.nodes.filter((x) => x.op === 'Conv').map((x) => x.attrInt('group', 1));
        expect(groups.slice(1, 3)).toEqual([rate.activeGroups, 24 * (rate.activeGroups / 4)]);
        const out = await (await ort.InferenceSession.create(prunedFile)).run(feeds);
        const elastic = await (await ort.InferenceSession.create(result.elasticFile)).run({ ...feeds, slice_rate: new ort.Tensor('float32', Float32Array.of(rate.rate), []) });
        const p = out['output']!.data as Float32Array;
        const e = elastic['output']!.data as Float32Array;
        for (let i = 0; i < p.length; i++) expect(Math.abs(p[i]! - e[i]!)).toBeLessThan(1e-4 * (1 + Math.abs(p[i]!)));
        if (norm === 'keep' && rate.rate === 1) {
          const r = ref['output']!.data as Float32Array;
          for (let i = 0; i < r.length; i++) expect(Math.abs(r[i]! - p[i]!)).toBeLessThan(1e-4 * (1 + Math.abs(r[i]!)));
        }
      }
    }
  });
});

describe('pinning', () => {
  it('pins what reaches an op of a custom domain and explains it', async () => {
    const n = net([3, 8, 8]);
    const a = conv(n, n.x, 3, 8);
    const custom = new Node('MyOp', 'com.example', 'custom');
    custom.setInput(0, a);
    custom.addOutput('custom_out', tensorType(DataType.FLOAT, ['N', 8, 8, 8]));
    n.model.graph.addNode(custom);
    n.model.opsetImports.set('com.example', 1n);
    const b = conv(n, custom.outputs[0]!, 8, 8);
    const file = finish(n, n.b.reduce('ReduceMean', b, [1, 2, 3], false), 'custom');
    const result = await compileAndRun(file, false);
    const [first, second] = result.layers;
    expect(first!.sliced).toBe(false);
    expect(first!.reason).toMatch(/com\.example::MyOp/);
    expect(second!.sliced).toBe(false);
  });

  it('pins an NHWC flatten (channels are not the outermost merged axis)', async () => {
    const n = net([3, 4, 4]);
    const a = conv(n, n.x, 3, 8);
    const nhwc = n.b.flatten(n.b.transpose(a, [0, 2, 3, 1]), 1);
    const file = finish(n, n.b.gemm(nhwc, weight(n, [128, 5]), weight(n, [5])), 'nhwc');
    const result = await compileAndRun(file);
    expect(result.layers[0]!.sliced).toBe(false);
    expect(result.layers[0]!.reason).toMatch(/NHWC/);
  });

  it('slices an NCHW flatten into a Gemm', async () => {
    const n = net([3, 4, 4]);
    const a = conv(n, n.x, 3, 8);
    const file = finish(n, n.b.gemm(n.b.flatten(a, 1), weight(n, [128, 5]), weight(n, [5])), 'nchw');
    const result = await compileAndRun(file);
    expect(result.layers[0]!.sliced).toBe(true);
  });

  it('pins attention: a MatMul of two run-time tensors', async () => {
    const n = net([6, 16]);
    const q = n.b.matMul(n.x, weight(n, [16, 16]));
    const k = n.b.matMul(n.x, weight(n, [16, 16]));
    const v = n.b.matMul(n.x, weight(n, [16, 16]));
    const scores = n.b.op1('Softmax', [n.b.matMul(q, n.b.transpose(k, [0, 2, 1]))], { axis: -1 });
    const file = finish(n, n.b.matMul(n.b.matMul(scores, v), weight(n, [16, 4])), 'attention');
    const result = await compileAndRun(file);
    for (const layer of result.layers.slice(0, 2)) {
      expect(layer.sliced).toBe(false);
      expect(layer.reason).toMatch(/run-time tensors|attention/);
    }
  });

  it('pins channels read inside an If branch', async () => {
    const n = net([3, 8, 8]);
    const a = conv(n, n.x, 3, 8);
    const cond = new Value('cond', tensorType(DataType.BOOL, []));
    n.model.graph.inputs.push(cond);
    const branch = (name: string, op: string): AttributeProto =>
      create(AttributeProtoSchema, {
        name,
        type: AttributeProto_AttributeType.GRAPH,
        g: create(GraphProtoSchema, {
          name: `${name}_body`,
          node: [create(NodeProtoSchema, { opType: op, input: [a.name], output: [`${name}_out`] })],
          output: [create(ValueInfoProtoSchema, { name: `${name}_out` })],
        }),
      });
    const ifNode = new Node('If', '', 'branch');
    ifNode.setInput(0, cond);
    ifNode.attributes.set('then_branch', { attr: { kind: 'opaque', value: branch('then_branch', 'Relu'), summary: 'graph' } });
    ifNode.attributes.set('else_branch', { attr: { kind: 'opaque', value: branch('else_branch', 'Neg'), summary: 'graph' } });
    ifNode.addCapture(a);
    ifNode.addOutput('if_out', tensorType(DataType.FLOAT, ['N', 8, 8, 8]));
    n.model.graph.addNode(ifNode);
    const b = conv(n, ifNode.outputs[0]!, 8, 8);
    const file = finish(n, n.b.reduce('ReduceMean', b, [1, 2, 3], false), 'if');
    const result = await compileAndRun(file, false);
    expect(result.layers[0]!.sliced).toBe(false);
    expect(result.layers[0]!.reason).toMatch(/control flow/);
    expect(result.layers[1]!.sliced).toBe(false);
  });

  it('pins channels cut by a Split whose sizes are an attribute (before opset 13)', async () => {
    // from opset 13 the sizes are an input, rewritten per rate, and the split channels slice
    const n = net([3, 8, 8], 11);
    const a = conv(n, n.x, 3, 8);
    const [left, right] = n.b.split(a, 1, [4, 4]);
    const file = finish(n, n.b.add(conv(n, left!, 4, 8), conv(n, right!, 4, 8)), 'split');
    const result = await compileAndRun(file);
    expect(result.layers[0]!.sliced).toBe(false);
    expect(result.layers[0]!.reason).toMatch(/cuts the channel axis into parts with sizes in an attribute/);
  });

  it('pins a weight shared with a use no rule claimed', async () => {
    const n = net([3, 8, 8]);
    const w = weight(n, [8, 3, 3, 3]);
    const a = n.b.relu(n.b.conv(n.x, w, null, { kernelShape: [3, 3], pads: [1, 1, 1, 1] }));
    const b = conv(n, a, 8, 8);
    const sum = n.b.reduce('ReduceSum', w, [0, 1, 2, 3], false);
    const file = finish(n, n.b.add(n.b.reduce('ReduceMean', b, [1, 2, 3], false), sum), 'shared');
    const result = await compileAndRun(file);
    expect(result.layers[0]!.sliced).toBe(false);
    expect(result.layers[0]!.reason).toMatch(/also read by/);
    expect(result.layers[1]!.sliced).toBe(false);
  });
});
