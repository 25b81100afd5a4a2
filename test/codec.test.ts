// The codec's promise: read → IR → write loses nothing. Checked two ways on every real model we
// have: the decoded protobuf messages are equal field for field, and onnxruntime gives
// bit-identical outputs for the original and the rewritten file on the same inputs.

import { create, toBinary, type MessageInitShape } from '@bufbuild/protobuf';
import {
  AttributeProto_AttributeType as AT,
  AttributeProtoSchema,
  FunctionProtoSchema,
  GraphProtoSchema,
  ModelProtoSchema,
  NodeProtoSchema,
  OperatorSetIdProtoSchema,
  StringStringEntryProtoSchema,
  TensorProtoSchema,
  TensorShapeProto_DimensionSchema,
  TensorShapeProtoSchema,
  TypeProto_TensorSchema,
  TypeProtoSchema,
  ValueInfoProtoSchema,
  type ModelProto,
  type NodeProto,
  type ValueInfoProto,
} from 'onnx-buf';
import * as ort from 'onnxruntime-node';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { decodeModelProto, encodeModel, modelProtoToJson, readModel, writeModel } from '../compiler/onnx-codec.js';
import { Model, Node, Value, tensorType } from '../compiler/ir.js';
import { DataType, Tensor } from '../compiler/tensor.js';
import {
  TESTDATA_GROUPS,
  TESTDATA_ROOT,
  diffMessages,
  fixtureModels,
  openwakewordModels,
  outputDifference,
  randomFeeds,
  recordedFeeds,
  requireTestdata,
  runOrt,
  testdataModels,
  type ModelCase,
  type TestdataGroup,
} from './helpers/models.js';

const INT64_MAX = 2n ** 63n - 1n;
const haveTestdata = fs.existsSync(TESTDATA_ROOT);
const testdata = (group: TestdataGroup): ModelCase[] => (haveTestdata ? testdataModels(group) : []);

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-codec-'));
afterAll(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));

/** Decoded-message comparison with a readable diff when they differ. */
function expectSameMessage(original: Uint8Array, written: Uint8Array, label: string): void {
  const a = modelProtoToJson(decodeModelProto(original));
  const b = modelProtoToJson(decodeModelProto(written));
  const diff = diffMessages(a, b);
  expect(diff, `${label}: the written model differs from the original:\n  ${diff.join('\n  ')}`).toEqual([]);
}

it('has the ONNX backend test data (apt-get install -y libonnx-testdata)', () => {
  requireTestdata();
});

describe('round trip keeps the decoded message', () => {
  const groups: [string, ModelCase[]][] = [
    ['fixtures', fixtureModels()],
    ['openwakeword', openwakewordModels()],
    ...TESTDATA_GROUPS.map((g): [string, ModelCase[]] => [g, testdata(g)]),
  ];
  for (const [, cases] of groups) {
    if (cases.length === 0) continue;
    it.each(cases.map((c) => [c.name, c] as const))('%s', (_name, c) => {
      const original = fs.readFileSync(c.file);
      const written = encodeModel(readModel(c.file));
      expectSameMessage(original, written, c.name);
    });
  }
});

/**
 * Outputs of the original and the round-tripped file on the same inputs. Where onnxruntime
 * cannot run the original at all (opset-6 kernels it dropped), the copy must fail the same way.
 */
async function expectSameOutputs(c: ModelCase, seed: number): Promise<'ran' | 'both-failed'> {
  const original = fs.readFileSync(c.file);
  const model = readModel(c.file);
  const written = encodeModel(model);
  const feeds = (c.dataDir ? recordedFeeds(c.dataDir, decodeModelProto(original)) : null) ?? randomFeeds(model, seed);
  expect(feeds, `${c.name}: cannot build inputs for it`).not.toBeNull();
  let expected;
  try {
    expected = await runOrt(original, feeds!);
  } catch (e) {
    const message = (e as Error).message;
    await expect(runOrt(written, feeds!), `${c.name}: the original fails in onnxruntime, the copy must too`).rejects.toThrow(message.split('\n')[0]);
    return 'both-failed';
  }
  const actual = await runOrt(written, feeds!);
  expect(outputDifference(expected, actual), `${c.name}: outputs differ`).toBeNull();
  return 'ran';
}

describe('round trip keeps onnxruntime outputs bit-identical', () => {
  const cases = [...fixtureModels(), ...openwakewordModels(), ...testdata('pytorch-converted'), ...testdata('pytorch-operator')];
  const ran: string[] = [];
  it.each(cases.map((c, i) => [c.name, c, i] as const))('%s', async (_name, c, i) => {
    if ((await expectSameOutputs(c, 1000 + i)) === 'ran') ran.push(c.name);
  });
  it('ran most of them (not just matching failures)', () => {
    if (!haveTestdata) requireTestdata();
    // onnxruntime 1.29 refuses about 35 opset-6 pytorch-* models; the rest must really run
    expect(ran.length).toBeGreaterThanOrEqual(80);
    for (const c of openwakewordModels()) expect(ran).toContain(c.name);
    for (const c of fixtureModels()) expect(ran).toContain(c.name);
  });
});

describe('round trip keeps outputs of ONNX node and simple tests', () => {
  // many small single-op models; those with sequence inputs have no plain-tensor feeds and are
  // covered by the message comparison above only
  const cases = [...testdata('node'), ...testdata('simple')];
  const ran: string[] = [];
  it.each(cases.map((c, i) => [c.name, c, i] as const))('%s', async (_name, c, i) => {
    const original = fs.readFileSync(c.file);
    const model = readModel(c.file);
    const feeds = (c.dataDir ? recordedFeeds(c.dataDir, decodeModelProto(original)) : null) ?? randomFeeds(model, 5000 + i);
    if (!feeds) return;
    if ((await expectSameOutputs(c, 5000 + i)) === 'ran') ran.push(c.name);
  });
  it('ran most of them', () => {
    if (!haveTestdata) requireTestdata();
    expect(ran.length).toBeGreaterThanOrEqual(850);
  });
});

// ---------------------------------------------------------------- built models

function sliceModel(): Model {
  const model = new Model();
  model.irVersion = 8n;
  model.opsetImports.set('', 13n);
  const g = model.graph;
  g.name = 'open_slice';
  const x = new Value('x', tensorType(DataType.FLOAT, [4, 6]));
  g.inputs.push(x);
  g.claimName('x');
  const starts = g.addInitializer('starts', Tensor.int64([1], [2]), true);
  const ends = g.addInitializer('ends', Tensor.int64([1], [INT64_MAX]), true);
  const axes = g.addInitializer('axes', Tensor.int64([1], [1]), true);
  const slice = new Node('Slice', '', 'slice');
  [x, starts, ends, axes].forEach((v, i) => slice.setInput(i, v));
  const y = slice.addOutput('y', tensorType(DataType.FLOAT, [4, 4]));
  g.addNode(slice);
  g.outputs.push(y);
  return model;
}

describe('int64 stays exact', () => {
  it('keeps INT64_MAX as a Slice end through write and read', async () => {
    const file = path.join(tmpRoot, 'slice.onnx');
    writeModel(sliceModel(), file);
    const back = readModel(file);
    const ends = back.graph.initializers.find((v) => v.name === 'ends')!;
    expect(ends.const!.bigints()).toEqual([INT64_MAX]);
    expect(encodeModel(back)).toEqual(new Uint8Array(fs.readFileSync(file)));

    const input = Float32Array.from({ length: 24 }, (_, i) => i);
    const out = await runOrt(file, { x: new ort.Tensor('float32', input, [4, 6]) });
    expect(out.y!.dims).toEqual([4, 4]);
    const values = [...new Float32Array(new Uint8Array(out.y!.data as Uint8Array).buffer)];
    expect(values.slice(0, 4)).toEqual([2, 3, 4, 5]);
  });

  it('keeps INT64_MAX in an int64_data field and in an ints attribute', () => {
    const proto = create(ModelProtoSchema, {
      irVersion: 7n,
      opsetImport: [create(OperatorSetIdProtoSchema, { domain: '', version: 9n })],
      graph: create(GraphProtoSchema, {
        name: 'g',
        input: [tensorInfo('x', DataType.FLOAT, [4, 6])],
        output: [tensorInfo('y', DataType.FLOAT, [4, 4])],
        initializer: [create(TensorProtoSchema, { name: 'big', dataType: DataType.INT64, dims: [2n], int64Data: [INT64_MAX, -INT64_MAX - 1n] })],
        node: [
          create(NodeProtoSchema, {
            opType: 'Slice', input: ['x'], output: ['y'],
            attribute: [
              create(AttributeProtoSchema, { name: 'starts', type: AT.INTS, ints: [2n] }),
              create(AttributeProtoSchema, { name: 'ends', type: AT.INTS, ints: [INT64_MAX] }),
              create(AttributeProtoSchema, { name: 'axes', type: AT.INTS, ints: [1n] }),
            ],
          }),
        ],
      }),
    });
    const bytes = toBinary(ModelProtoSchema, proto);
    const file = path.join(tmpRoot, 'slice9.onnx');
    fs.writeFileSync(file, bytes);
    const model = readModel(file);
    expect(model.graph.nodes[0]!.attr('ends')).toEqual({ kind: 'ints', value: [INT64_MAX] });
    expect(model.graph.initializers[0]!.const!.bigints()).toEqual([INT64_MAX, -INT64_MAX - 1n]);
    expectSameMessage(bytes, encodeModel(model), 'opset-9 slice');
  });
});

describe('external data', () => {
  it('writes weights to a side file that reads back and runs the same', async () => {
    const source = openwakewordModels()[0]!;
    const dir = fs.mkdtempSync(path.join(tmpRoot, 'ext-'));
    const file = path.join(dir, 'model.onnx');
    writeModel(readModel(source.file), file, { externalData: { threshold: 0 } });

    const dataFile = `${file}.data`;
    expect(fs.existsSync(dataFile)).toBe(true);
    expect(fs.statSync(dataFile).size).toBeGreaterThan(0);
    expect(fs.statSync(file).size).toBeLessThan(fs.statSync(source.file).size / 10);
    expect(fs.readdirSync(dir).sort()).toEqual(['model.onnx', 'model.onnx.data']); // no temp files left

    const back = readModel(file);
    expect(back.graph.initializers.length).toBeGreaterThan(0);
    for (const v of back.graph.initializers) expect(v.const!.external?.location, v.name).toBe('model.onnx.data');

    const feeds = randomFeeds(back, 7)!;
    const expected = await runOrt(source.file, feeds);
    const actual = await runOrt(file, feeds);
    expect(outputDifference(expected, actual)).toBeNull();

    // rewritten without external data, the weights come back inline exactly as they were
    const inline = encodeModel(back);
    expect(outputDifference(expected, await runOrt(inline, feeds))).toBeNull();
  });

  it('keeps external tensors external when rewriting a model read with them', async () => {
    const source = openwakewordModels()[0]!;
    const dir = fs.mkdtempSync(path.join(tmpRoot, 'ext2-'));
    const first = path.join(dir, 'a.onnx');
    writeModel(readModel(source.file), first, { externalData: { threshold: 0 } });
    const second = path.join(dir, 'b.onnx');
    writeModel(readModel(first), second);
    expect(fs.existsSync(`${second}.data`)).toBe(true);
    const feeds = randomFeeds(readModel(source.file), 8)!;
    expect(outputDifference(await runOrt(source.file, feeds), await runOrt(second, feeds))).toBeNull();
  });
});

// ---------------------------------------------------------------- fields the IR does not model

function tensorInfo(name: string, elemType: number, dims: (number | string)[], docString = ''): ValueInfoProto {
  return create(ValueInfoProtoSchema, {
    name,
    docString,
    type: create(TypeProtoSchema, {
      value: {
        case: 'tensorType',
        value: create(TypeProto_TensorSchema, {
          elemType,
          shape: create(TensorShapeProtoSchema, {
            dim: dims.map((d) =>
              create(TensorShapeProto_DimensionSchema, {
                value: typeof d === 'number' ? { case: 'dimValue', value: BigInt(d) } : { case: 'dimParam', value: d },
              }),
            ),
          }),
        }),
      },
    }),
  });
}

function meta(pairs: Record<string, string>) {
  return Object.entries(pairs).map(([key, value]) => create(StringStringEntryProtoSchema, { key, value }));
}

function node(fields: MessageInitShape<typeof NodeProtoSchema>): NodeProto {
  return create(NodeProtoSchema, fields);
}

/**
 * X[N,3] → AddOne (a model-local function) → A → If(C){ A + A } else { -A } → Y, with metadata
 * and doc strings on the model, graph, nodes, values and the function.
 */
function richModel(): ModelProto {
  const graphAttr = (name: string, body: NodeProto, out: string) =>
    create(AttributeProtoSchema, {
      name,
      type: AT.GRAPH,
      g: create(GraphProtoSchema, { name: `${name}_body`, node: [body], output: [tensorInfo(out, DataType.FLOAT, ['N', 3])] }),
    });
  return create(ModelProtoSchema, {
    irVersion: 9n,
    opsetImport: [
      create(OperatorSetIdProtoSchema, { domain: '', version: 17n }),
      create(OperatorSetIdProtoSchema, { domain: 'local.fn', version: 1n }),
    ],
    producerName: 'handwritten',
    producerVersion: '0.0.1',
    domain: 'test.slicec',
    modelVersion: 3n,
    docString: 'a model exercising fields the IR carries opaquely',
    metadataProps: meta({ license: 'Apache-2.0', author: 'tests' }),
    functions: [
      create(FunctionProtoSchema, {
        name: 'AddOne',
        domain: 'local.fn',
        input: ['x'],
        output: ['y'],
        docString: 'y = x + 1',
        opsetImport: [create(OperatorSetIdProtoSchema, { domain: '', version: 17n })],
        node: [
          node({
            opType: 'Constant', output: ['one'],
            attribute: [create(AttributeProtoSchema, { name: 'value_float', type: AT.FLOAT, f: 1 })],
          }),
          node({ opType: 'Add', input: ['x', 'one'], output: ['y'] }),
        ],
        metadataProps: meta({ origin: 'function' }),
      }),
    ],
    graph: create(GraphProtoSchema, {
      name: 'main',
      docString: 'main graph',
      input: [tensorInfo('X', DataType.FLOAT, ['N', 3], 'the input'), tensorInfo('C', DataType.BOOL, [])],
      output: [tensorInfo('Y', DataType.FLOAT, ['N', 3], 'the output')],
      valueInfo: [tensorInfo('A', DataType.FLOAT, ['N', 3], 'x plus one')],
      node: [
        node({
          opType: 'AddOne', domain: 'local.fn', name: 'add_one', input: ['X'], output: ['A'],
          docString: 'calls a local function', metadataProps: meta({ 'pkg.torch.onnx.stack_trace': 'model.py:12' }),
        }),
        node({
          opType: 'If', name: 'branch', input: ['C'], output: ['Y'],
          docString: 'doubles or negates', metadataProps: meta({ namespace: 'blocks.0' }),
          attribute: [
            graphAttr('then_branch', node({ opType: 'Add', input: ['A', 'A'], output: ['then_out'] }), 'then_out'),
            graphAttr('else_branch', node({ opType: 'Neg', input: ['A'], output: ['else_out'], metadataProps: meta({ inner: 'yes' }) }), 'else_out'),
          ],
        }),
      ],
      metadataProps: meta({ graph: 'main' }),
    }),
  });
}

describe('fields the IR carries opaquely survive', () => {
  it('keeps node metadata, doc strings, a local function and an If subgraph', async () => {
    const bytes = toBinary(ModelProtoSchema, richModel());
    const file = path.join(tmpRoot, 'rich.onnx');
    fs.writeFileSync(file, bytes);
    const model = readModel(file);

    const ifNode = model.graph.nodes.find((n) => n.op === 'If')!;
    expect(ifNode.captures.map((v) => v.name)).toEqual(['A']);
    expect(model.graph.nodes[0]!.docString).toBe('calls a local function');
    expect(model.metadataProps).toEqual([['license', 'Apache-2.0'], ['author', 'tests']]);
    expect(model.graph.inputs[0]!.shape).toEqual(['N', 3]);

    const out = path.join(tmpRoot, 'rich-out.onnx');
    writeModel(model, out);
    const written = fs.readFileSync(out);
    expectSameMessage(bytes, written, 'rich model');
    const json = modelProtoToJson(decodeModelProto(written)) as { graph: { node: { metadataProps?: unknown }[] } };
    expect(json.graph.node[0]!.metadataProps).toEqual([{ key: 'pkg.torch.onnx.stack_trace', value: 'model.py:12' }]);

    for (const cond of [true, false]) {
      const feeds = {
        X: new ort.Tensor('float32', Float32Array.from([1, 2, 3, -4, -5, -6]), [2, 3]),
        C: new ort.Tensor('bool', Uint8Array.from([cond ? 1 : 0]), []),
      };
      const expected = await runOrt(bytes, feeds);
      expect(outputDifference(expected, await runOrt(written, feeds))).toBeNull();
      const y = [...new Float32Array(new Uint8Array(expected.Y!.data as Uint8Array).buffer)];
      expect(y).toEqual(cond ? [4, 6, 8, -6, -8, -10] : [-2, -3, -4, 3, 4, 5]);
    }
  });

  it('is stable over two round trips, with the subgraph carried as an opaque attribute', () => {
    const file = path.join(tmpRoot, 'rich2.onnx');
    fs.writeFileSync(file, toBinary(ModelProtoSchema, richModel()));
    const model = readModel(file);
    const ifNode = model.graph.nodes.find((n) => n.op === 'If')!;
    expect(ifNode.attr('then_branch')?.kind).toBe('opaque');
    const again = encodeModel(readModelFromBytes(encodeModel(model)));
    expectSameMessage(fs.readFileSync(file), again, 'rich model twice');
  });

  it('keeps unknown fields and typed-field tensors as they were', () => {
    const proto = richModel();
    const init = create(TensorProtoSchema, { name: 'w', dataType: DataType.FLOAT, dims: [3n], floatData: [0.5, -0, Number.NaN], docString: 'weights' });
    proto.graph!.initializer.push(init);
    proto.graph!.input.push(tensorInfo('w', DataType.FLOAT, [3]));
    // field 999 of ModelProto, varint 42: unknown to ONNX 1.20, must be written back
    const bytes = new Uint8Array([...toBinary(ModelProtoSchema, proto), 0xb8, 0x3e, 42]);
    const written = encodeModel(readModelFromBytes(bytes));
    expect(written.length).toBe(bytes.length);
    expectSameMessage(bytes, written, 'unknown field');
    const unknown = decodeModelProto(written).$unknown ?? [];
    expect(unknown.map((u) => [u.no, [...u.data]])).toEqual([[999, [42]]]);
    const back = readModelFromBytes(written).graph.initializers[0]!.const!;
    expect(back.storage.kind).toBe('float');
    expect(Object.is(back.numbers()[1], -0)).toBe(true);
  });
});

function readModelFromBytes(bytes: Uint8Array): Model {
  const file = path.join(fs.mkdtempSync(path.join(tmpRoot, 'mem-')), 'm.onnx');
  fs.writeFileSync(file, bytes);
  return readModel(file);
}

describe('the comparison itself', () => {
  it('notices a dropped field and names its path', () => {
    const proto = richModel();
    const bytes = toBinary(ModelProtoSchema, proto);
    proto.graph!.node[1]!.metadataProps = [];
    const diff = diffMessages(modelProtoToJson(decodeModelProto(bytes)), modelProtoToJson(proto));
    expect(diff).toEqual(['graph.node[1].metadataProps: [{"key":"namespace","value":"blocks.0"}] → (missing)']);
  });

  it('notices a single flipped output bit', () => {
    const a = { y: { type: 'float32', dims: [2], data: Uint8Array.from([0, 0, 128, 63, 0, 0, 0, 64]) } };
    const b = { y: { type: 'float32', dims: [2], data: Uint8Array.from([0, 0, 128, 63, 1, 0, 0, 64]) } };
    expect(outputDifference(a, b)).toBe('y: first difference at byte 4');
  });
});
