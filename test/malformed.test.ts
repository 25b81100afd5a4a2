// Bad input never crashes the reader: every broken file, broken graph and unsafe external data
// reference ends in a UserError carrying the stable code for what is wrong.

import { create, toBinary, type MessageInitShape } from '@bufbuild/protobuf';
import {
  AttributeProto_AttributeType as AT,
  AttributeProtoSchema,
  GraphProtoSchema,
  ModelProtoSchema,
  NodeProtoSchema,
  OperatorSetIdProtoSchema,
  StringStringEntryProtoSchema,
  TensorProto_DataLocation,
  TensorProtoSchema,
  TensorShapeProto_DimensionSchema,
  TensorShapeProtoSchema,
  TypeProto_TensorSchema,
  TypeProtoSchema,
  ValueInfoProtoSchema,
  type NodeProto,
  type TensorProto,
  type ValueInfoProto,
} from 'onnx-buf';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ErrorCodes, isUserError, type ErrorCode } from '../compiler/diagnostics.js';
import { decodeModel, decodeModelProto, encodeModel, modelProtoToJson, readModel, writeModel } from '../compiler/onnx-codec.js';
import { DataType } from '../compiler/tensor.js';
import { topLevelFieldEnds } from './helpers/fuzz.js';
import { Rng, diffMessages, openwakewordModels, outputDifference, randomFeeds, runOrt } from './helpers/models.js';

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-malformed-'));
afterAll(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));

/** Runs `fn`, requires a UserError with `code`, and returns it for further checks. */
function expectUserError(fn: () => unknown, code: ErrorCode, messagePart?: string | RegExp) {
  let thrown: unknown;
  try {
    fn();
  } catch (e) {
    thrown = e;
  }
  if (thrown === undefined) throw new Error(`expected a UserError ${code}, but nothing was thrown`);
  if (!isUserError(thrown)) {
    throw new Error(`expected a UserError ${code}, got a crash: ${thrown instanceof Error ? thrown.stack : String(thrown)}`);
  }
  expect(thrown.code, thrown.format()).toBe(code);
  if (messagePart) expect(thrown.message).toMatch(messagePart);
  // every user error says what was expected and what was found
  expect(thrown.details.expected, thrown.format()).toBeTruthy();
  return thrown;
}

function writeTemp(name: string, bytes: Uint8Array, dir = tmpRoot): string {
  const file = path.join(dir, name);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, bytes);
  return file;
}

// ---------------------------------------------------------------- building bad models

function info(name: string, dims: (number | bigint | string)[] = [2], elemType: number = DataType.FLOAT): ValueInfoProto {
  return create(ValueInfoProtoSchema, {
    name,
    type: create(TypeProtoSchema, {
      value: {
        case: 'tensorType',
        value: create(TypeProto_TensorSchema, {
          elemType,
          shape: create(TensorShapeProtoSchema, {
            dim: dims.map((d) =>
              create(TensorShapeProto_DimensionSchema, {
                value: typeof d === 'string' ? { case: 'dimParam', value: d } : { case: 'dimValue', value: BigInt(d) },
              }),
            ),
          }),
        }),
      },
    }),
  });
}

type NodeInit = MessageInitShape<typeof NodeProtoSchema>;
type GraphInit = MessageInitShape<typeof GraphProtoSchema>;

function node(opType: string, input: string[], output: string[], extra: NodeInit = {}): NodeProto {
  const proto = create(NodeProtoSchema, extra);
  proto.opType = opType;
  proto.input = input;
  proto.output = output;
  return proto;
}

function floats(name: string, dims: number[], values: number[]): TensorProto {
  return create(TensorProtoSchema, {
    name,
    dataType: DataType.FLOAT,
    dims: dims.map(BigInt),
    rawData: new Uint8Array(Float32Array.from(values).buffer),
  });
}

function externalTensor(name: string, entries: Record<string, string>, dims = [2]): TensorProto {
  return create(TensorProtoSchema, {
    name,
    dataType: DataType.FLOAT,
    dims: dims.map(BigInt),
    dataLocation: TensorProto_DataLocation.EXTERNAL,
    externalData: Object.entries(entries).map(([key, value]) => create(StringStringEntryProtoSchema, { key, value })),
  });
}

/** y = x + w by default; override any graph field. */
function modelBytes(overrides: GraphInit = {}): Uint8Array {
  const graph = create(GraphProtoSchema, overrides);
  if (!('input' in overrides)) graph.input = [info('x')];
  if (!('output' in overrides)) graph.output = [info('y')];
  if (!('initializer' in overrides)) graph.initializer = [floats('w', [2], [1, 2])];
  if (!('node' in overrides)) graph.node = [node('Add', ['x', 'w'], ['y'])];
  graph.name ||= 'g';
  const model = create(ModelProtoSchema, {
    irVersion: 8n,
    opsetImport: [create(OperatorSetIdProtoSchema, { domain: '', version: 13n })],
    graph,
  });
  return toBinary(ModelProtoSchema, model);
}

const realModel = openwakewordModels()[0]!;
const realBytes = new Uint8Array(fs.readFileSync(realModel.file));

// ---------------------------------------------------------------- files

describe('files that are not models', () => {
  it('rejects an empty file', () => {
    expectUserError(() => readModel(writeTemp('empty.onnx', new Uint8Array(0))), ErrorCodes.BAD_PROTOBUF, /empty/);
  });

  it('rejects a missing file', () => {
    const err = expectUserError(() => readModel(path.join(tmpRoot, 'nope.onnx')), ErrorCodes.FILE_NOT_FOUND);
    expect(err.details.found).toBe('no such file');
  });

  it('rejects a directory', () => {
    const dir = path.join(tmpRoot, 'a-folder.onnx');
    fs.mkdirSync(dir, { recursive: true });
    expectUserError(() => readModel(dir), ErrorCodes.FILE_NOT_FOUND);
  });

  it('rejects text and random bytes', () => {
    expectUserError(() => readModel(writeTemp('text.onnx', new TextEncoder().encode('hello, this is not a model\n'))), ErrorCodes.BAD_PROTOBUF);
    const rng = new Rng(42);
    for (let i = 0; i < 200; i++) {
      const bytes = rng.bytes(1 + rng.int(i < 100 ? 64 : 4096));
      expectUserError(() => decodeModel(bytes, null, `random #${i}`), ErrorCodes.BAD_PROTOBUF);
    }
  });

  it('rejects a valid protobuf message that has no graph', () => {
    const noGraph = toBinary(ModelProtoSchema, create(ModelProtoSchema, { irVersion: 8n, producerName: 'x' }));
    expectUserError(() => decodeModel(noGraph, null), ErrorCodes.BAD_PROTOBUF, /no graph/);
  });

  it('rejects a real model cut at many points (or reads it when the cut falls between fields)', () => {
    const fieldEnds = new Set(topLevelFieldEnds(realBytes));
    const cuts = new Set<number>();
    for (let i = 1; i < 64; i++) cuts.add(i);
    for (let i = 0; i < 300; i++) cuts.add(Math.floor((realBytes.length * i) / 300));
    for (const end of fieldEnds) for (const d of [-2, -1, 0, 1]) cuts.add(end + d);
    let rejected = 0;
    for (const cut of [...cuts].filter((c) => c >= 0 && c < realBytes.length)) {
      const bytes = realBytes.subarray(0, cut);
      try {
        const model = decodeModel(bytes, null, `cut at ${cut}`);
        encodeModel(model);
        expect(fieldEnds.has(cut), `cut at ${cut} is inside a field but was accepted`).toBe(true);
      } catch (e) {
        if (!isUserError(e)) throw new Error(`cut at ${cut} crashed: ${(e as Error).stack}`);
        expect([ErrorCodes.BAD_PROTOBUF, ErrorCodes.BAD_GRAPH]).toContain(e.code);
        rejected++;
      }
    }
    expect(rejected).toBeGreaterThan(300);
  });
});

// ---------------------------------------------------------------- graphs

describe('broken graphs', () => {
  it('accepts the well-formed base model (so the cases below fail for their own reason)', () => {
    const model = decodeModel(modelBytes(), null);
    expect(model.graph.nodes.map((n) => n.op)).toEqual(['Add']);
  });

  it('rejects a node that reads a missing initializer', () => {
    const bytes = modelBytes({ initializer: [] });
    const err = expectUserError(() => decodeModel(bytes, null), ErrorCodes.BAD_GRAPH, /reads w, which nothing defines/);
    expect(err.details.hint).toBeTruthy();
  });

  it('rejects a cycle of two nodes feeding each other', () => {
    const bytes = modelBytes({
      node: [node('Add', ['x', 'b'], ['a'], { name: 'first' }), node('Relu', ['a'], ['b'], { name: 'second' }), node('Identity', ['b'], ['y'])],
    });
    expectUserError(() => decodeModel(bytes, null), ErrorCodes.BAD_GRAPH, /cycle/);
  });

  it('rejects a node that reads its own output', () => {
    const bytes = modelBytes({ node: [node('Add', ['x', 'y'], ['y'])] });
    expectUserError(() => decodeModel(bytes, null), ErrorCodes.BAD_GRAPH, /cycle/);
  });

  it('rejects a subgraph that reads the output of its own If node', () => {
    const body = (out: string) =>
      create(GraphProtoSchema, { name: `b_${out}`, node: [node('Identity', ['y'], [out])], output: [info(out)] });
    const bytes = modelBytes({
      input: [info('x'), info('c', [], DataType.BOOL)],
      node: [
        node('If', ['c'], ['y'], {
          attribute: [
            create(AttributeProtoSchema, { name: 'then_branch', type: AT.GRAPH, g: body('t') }),
            create(AttributeProtoSchema, { name: 'else_branch', type: AT.GRAPH, g: body('e') }),
          ],
        }),
      ],
    });
    expectUserError(() => decodeModel(bytes, null), ErrorCodes.BAD_GRAPH, /cycle/);
  });

  it('rejects two nodes writing the same value', () => {
    const bytes = modelBytes({ node: [node('Add', ['x', 'w'], ['y']), node('Sub', ['x', 'w'], ['y'])] });
    expectUserError(() => decodeModel(bytes, null), ErrorCodes.BAD_GRAPH, /more than one producer/);
  });

  it('rejects a node writing an initializer or a graph input', () => {
    expectUserError(() => decodeModel(modelBytes({ node: [node('Add', ['x', 'x'], ['w']), node('Identity', ['w'], ['y'])] }), null), ErrorCodes.BAD_GRAPH, /more than one producer/);
    expectUserError(() => decodeModel(modelBytes({ node: [node('Add', ['x', 'w'], ['x']), node('Identity', ['x'], ['y'])] }), null), ErrorCodes.BAD_GRAPH, /more than one producer/);
  });

  it('rejects a node listing one output twice', () => {
    expectUserError(() => decodeModel(modelBytes({ node: [node('Split', ['x'], ['y', 'y'])] }), null), ErrorCodes.BAD_GRAPH);
  });

  it('rejects duplicate inputs and duplicate initializers', () => {
    expectUserError(() => decodeModel(modelBytes({ input: [info('x'), info('x')] }), null), ErrorCodes.BAD_GRAPH, /listed twice/);
    expectUserError(() => decodeModel(modelBytes({ initializer: [floats('w', [2], [1, 2]), floats('w', [2], [3, 4])] }), null), ErrorCodes.BAD_GRAPH, /defined twice/);
  });

  it('rejects a graph output nothing produces', () => {
    expectUserError(() => decodeModel(modelBytes({ output: [info('y'), info('z')] }), null), ErrorCodes.BAD_GRAPH, /graph output z/);
  });

  it('rejects negative and absurd dims in value types', () => {
    expectUserError(() => decodeModel(modelBytes({ input: [info('x', [-1])] }), null), ErrorCodes.BAD_GRAPH, /dimension -1/);
    expectUserError(() => decodeModel(modelBytes({ output: [info('y', [2n ** 60n])] }), null), ErrorCodes.BAD_GRAPH);
    const twoNodes = [node('Relu', ['x'], ['m']), node('Add', ['m', 'w'], ['y'])];
    expectUserError(() => decodeModel(modelBytes({ node: twoNodes, valueInfo: [info('m', [3, -7])] }), null), ErrorCodes.BAD_GRAPH);
  });

  it('rejects negative dims in a value_info entry that repeats a graph input or output', () => {
    expectUserError(() => decodeModel(modelBytes({ valueInfo: [info('y', [3, -7])] }), null), ErrorCodes.BAD_GRAPH, /dimension -7/);
    expectUserError(() => decodeModel(modelBytes({ valueInfo: [info('x', [-1])] }), null), ErrorCodes.BAD_GRAPH, /dimension -1/);
  });

  it('reads an unknown op and writes it back unchanged', () => {
    const bytes = modelBytes({
      node: [node('FrobnicateV7', ['x', 'w'], ['y'], { domain: 'com.example', attribute: [create(AttributeProtoSchema, { name: 'level', type: AT.INT, i: 3n })] })],
    });
    const file = writeTemp('unknown-op.onnx', bytes);
    const model = readModel(file);
    expect(model.graph.nodes[0]!.op).toBe('FrobnicateV7');
    expect(model.graph.nodes[0]!.domain).toBe('com.example');
    const written = encodeModel(model);
    expect(diffMessages(modelProtoToJson(decodeModelProto(bytes)), modelProtoToJson(decodeModelProto(written)))).toEqual([]);
  });
});

// ---------------------------------------------------------------- tensors

describe('broken tensors', () => {
  it('rejects raw data that is too short or too long', () => {
    const short = create(TensorProtoSchema, { name: 'w', dataType: DataType.FLOAT, dims: [2n], rawData: new Uint8Array(7) });
    expectUserError(() => decodeModel(modelBytes({ initializer: [short] }), null), ErrorCodes.BAD_TENSOR, /wrong amount of data/);
    const long = create(TensorProtoSchema, { name: 'w', dataType: DataType.FLOAT, dims: [2n], rawData: new Uint8Array(12) });
    expectUserError(() => decodeModel(modelBytes({ initializer: [long] }), null), ErrorCodes.BAD_TENSOR);
  });

  it('rejects a typed field with the wrong number of values', () => {
    const t = create(TensorProtoSchema, { name: 'w', dataType: DataType.FLOAT, dims: [3n], floatData: [1, 2] });
    expectUserError(() => decodeModel(modelBytes({ initializer: [t] }), null), ErrorCodes.BAD_TENSOR);
    const i64 = create(TensorProtoSchema, { name: 'w', dataType: DataType.INT64, dims: [2n, 2n], int64Data: [1n] });
    expectUserError(() => decodeModel(modelBytes({ initializer: [i64] }), null), ErrorCodes.BAD_TENSOR);
  });

  it('rejects a tensor with no data at all', () => {
    const t = create(TensorProtoSchema, { name: 'w', dataType: DataType.FLOAT, dims: [2n] });
    expectUserError(() => decodeModel(modelBytes({ initializer: [t] }), null), ErrorCodes.BAD_TENSOR);
  });

  it('rejects negative and huge tensor dims', () => {
    const negative = create(TensorProtoSchema, { name: 'w', dataType: DataType.FLOAT, dims: [-2n], rawData: new Uint8Array(8) });
    expectUserError(() => decodeModel(modelBytes({ initializer: [negative] }), null), ErrorCodes.BAD_TENSOR, /dimension -2/);
    const huge = create(TensorProtoSchema, { name: 'w', dataType: DataType.FLOAT, dims: [2n ** 40n, 2n ** 40n], rawData: new Uint8Array(8) });
    expectUserError(() => decodeModel(modelBytes({ initializer: [huge] }), null), ErrorCodes.BAD_TENSOR);
  });

  it('rejects an unknown data type', () => {
    const t = create(TensorProtoSchema, { name: 'w', dataType: 99, dims: [2n], rawData: new Uint8Array(8) });
    expectUserError(() => decodeModel(modelBytes({ initializer: [t] }), null), ErrorCodes.BAD_TENSOR, /unknown data type 99/);
    const undef = create(TensorProtoSchema, { name: 'w', dataType: DataType.UNDEFINED, dims: [2n], rawData: new Uint8Array(8) });
    expectUserError(() => decodeModel(modelBytes({ initializer: [undef] }), null), ErrorCodes.BAD_TENSOR);
  });

  it('rejects a bad tensor inside a Constant node', () => {
    const bad = create(TensorProtoSchema, { dataType: DataType.FLOAT, dims: [4n], rawData: new Uint8Array(3) });
    const bytes = modelBytes({
      initializer: [],
      node: [
        node('Constant', [], ['w'], { attribute: [create(AttributeProtoSchema, { name: 'value', type: AT.TENSOR, t: bad })] }),
        node('Add', ['x', 'w'], ['y']),
      ],
    });
    expectUserError(() => decodeModel(bytes, null), ErrorCodes.BAD_TENSOR);
  });
});

// ---------------------------------------------------------------- external data

describe('external data', () => {
  /** A model folder with `model.onnx` whose initializer w lives in external data. */
  function externalModel(name: string, entries: Record<string, string>, files: Record<string, Uint8Array> = {}): string {
    const dir = path.join(tmpRoot, name, 'model');
    fs.mkdirSync(dir, { recursive: true });
    for (const [file, bytes] of Object.entries(files)) writeTemp(file, bytes, dir);
    return writeTemp('model.onnx', modelBytes({ initializer: [externalTensor('w', entries)] }), dir);
  }
  const eightBytes = new Uint8Array(Float32Array.from([1, 2]).buffer);

  it('reads a well-formed reference, in the folder and below it', async () => {
    for (const location of ['w.bin', 'weights/w.bin']) {
      const file = externalModel(`ok-${location.replace('/', '-')}`, { location, offset: '8', length: '8' }, { [location]: new Uint8Array([...new Uint8Array(8), ...eightBytes]) });
      const model = readModel(file);
      expect(Array.from(model.graph.initializers[0]!.const!.numbers())).toEqual([1, 2]);
      const feeds = randomFeeds(model, 3)!;
      expect(outputDifference(await runOrt(file, feeds), await runOrt(encodeModel(model), feeds))).toBeNull();
    }
  });

  it('rejects a location with ..', () => {
    const file = externalModel('dotdot', { location: '../x.bin' }, { '../x.bin': eightBytes });
    expectUserError(() => readModel(file), ErrorCodes.BAD_EXTERNAL_DATA, /escapes the model's folder/);
    const sneaky = externalModel('dotdot2', { location: 'sub/../../x.bin' }, { '../x.bin': eightBytes, 'sub/keep': eightBytes });
    expectUserError(() => readModel(sneaky), ErrorCodes.BAD_EXTERNAL_DATA, /escapes/);
  });

  it('rejects an absolute location', () => {
    const target = writeTemp('abs.bin', eightBytes);
    const file = externalModel('absolute', { location: target });
    expectUserError(() => readModel(file), ErrorCodes.BAD_EXTERNAL_DATA, /escapes/);
    expectUserError(() => readModel(externalModel('etc', { location: '/etc/passwd' })), ErrorCodes.BAD_EXTERNAL_DATA);
  });

  it('reads through a data file that is a symlink (a cache layout), but not through a symlinked folder outside', () => {
    const outside = writeTemp('outside/secret.bin', eightBytes);
    const file = externalModel('symlink', { location: 'link.bin' });
    fs.symlinkSync(outside, path.join(path.dirname(file), 'link.bin'));
    expect(readModel(file).graph.initializers[0]!.const!.numbers()).toEqual([1, 2]);

    const viaDir = externalModel('symlink-dir', { location: 'out/secret.bin' });
    fs.symlinkSync(path.dirname(outside), path.join(path.dirname(viaDir), 'out'));
    expectUserError(() => readModel(viaDir), ErrorCodes.BAD_EXTERNAL_DATA, /outside/);
  });

  it('follows a symlinked model folder (the folder itself may be a link)', () => {
    const file = externalModel('real-folder', { location: 'w.bin' }, { 'w.bin': eightBytes });
    const link = path.join(tmpRoot, 'linked-folder');
    fs.symlinkSync(path.dirname(file), link);
    expect(readModel(path.join(link, 'model.onnx')).graph.initializers[0]!.const!.numbers()).toEqual([1, 2]);
  });

  it('rejects data past the end of the file', () => {
    const file = externalModel('past-end', { location: 'w.bin', offset: '4', length: '8' }, { 'w.bin': eightBytes });
    expectUserError(() => readModel(file), ErrorCodes.BAD_EXTERNAL_DATA, /runs past the end/);
    const hugeLength = externalModel('past-end3', { location: 'w.bin', length: '99999999999999999999' }, { 'w.bin': eightBytes });
    expectUserError(() => readModel(hugeLength), ErrorCodes.BAD_EXTERNAL_DATA);
  });

  it('rejects an offset past the end of the file when no length is given', () => {
    const offsetOnly = externalModel('past-end2', { location: 'w.bin', offset: '100' }, { 'w.bin': eightBytes });
    expectUserError(() => readModel(offsetOnly), ErrorCodes.BAD_EXTERNAL_DATA, /past the end/);
  });

  it('rejects a length that does not match the tensor', () => {
    const file = externalModel('short-ext', { location: 'w.bin', length: '4' }, { 'w.bin': eightBytes });
    expectUserError(() => readModel(file), ErrorCodes.BAD_TENSOR, /wrong amount of data/);
  });

  it('rejects a missing data file, a folder as data file, and no location', () => {
    expectUserError(() => readModel(externalModel('missing', { location: 'w.bin' })), ErrorCodes.BAD_EXTERNAL_DATA, /does not exist/);
    const dirFile = externalModel('dir-as-data', { location: 'w.bin' });
    fs.mkdirSync(path.join(path.dirname(dirFile), 'w.bin'));
    expectUserError(() => readModel(dirFile), ErrorCodes.BAD_EXTERNAL_DATA, /not a file/);
    expectUserError(() => readModel(externalModel('no-location', { offset: '0' })), ErrorCodes.BAD_EXTERNAL_DATA, /without a location/);
  });

  it('rejects offsets and lengths that are not numbers', () => {
    for (const [key, value] of [['offset', '-8'], ['length', '1e3'], ['offset', '0x10'], ['length', '']] as const) {
      const file = externalModel(`nan-${key}-${value}`, { location: 'w.bin', [key]: value }, { 'w.bin': eightBytes });
      expectUserError(() => readModel(file), ErrorCodes.BAD_EXTERNAL_DATA, /is not a number/);
    }
  });

  it('rejects external data in a model read from memory', () => {
    const bytes = modelBytes({ initializer: [externalTensor('w', { location: 'w.bin' })] });
    expectUserError(() => decodeModel(bytes, null), ErrorCodes.BAD_EXTERNAL_DATA, /model's folder/);
  });
});

// ---------------------------------------------------------------- output locations

describe('unusable output locations', () => {
  /** Files under `dir` (recursively) whose name marks an unfinished write. */
  function leftovers(dir: string): string[] {
    return fs.readdirSync(dir, { recursive: true }).map(String).filter((f) => f.includes('.tmp-'));
  }

  it('rejects an external data location outside the model folder', () => {
    const dir = fs.mkdtempSync(path.join(tmpRoot, 'out-'));
    for (const location of ['../w.bin', '/tmp/w.bin', 'a/../../w.bin']) {
      expectUserError(() => writeModel(readModel(realModel.file), path.join(dir, 'm.onnx'), { externalData: { location, threshold: 0 } }), ErrorCodes.BAD_OUTPUT, /escapes/);
    }
    expect(fs.readdirSync(dir)).toEqual([]);
  });

  it('rejects an output folder that does not exist', () => {
    const dir = fs.mkdtempSync(path.join(tmpRoot, 'out-'));
    expectUserError(() => writeModel(readModel(realModel.file), path.join(dir, 'missing', 'm.onnx')), ErrorCodes.BAD_OUTPUT);
  });

  it('rejects an output path that is a folder, leaving nothing behind', () => {
    const parent = fs.mkdtempSync(path.join(tmpRoot, 'out-'));
    const target = path.join(parent, 'model.onnx');
    fs.mkdirSync(target);
    expectUserError(() => writeModel(readModel(realModel.file), target), ErrorCodes.BAD_OUTPUT);
    expect(leftovers(parent)).toEqual([]);
  });

  it('writes external data into a subfolder, or refuses it cleanly', () => {
    const dir = fs.mkdtempSync(path.join(tmpRoot, 'out-'));
    const file = path.join(dir, 'm.onnx');
    try {
      writeModel(readModel(realModel.file), file, { externalData: { location: 'weights/m.bin', threshold: 0 } });
      expect(fs.existsSync(path.join(dir, 'weights', 'm.bin'))).toBe(true);
      expect(readModel(file).graph.initializers[0]!.const!.external?.location).toBe('weights/m.bin');
    } catch (e) {
      if (!isUserError(e)) throw new Error(`writing external data into a new subfolder crashed: ${(e as Error).stack}`);
      expect(e.code).toBe(ErrorCodes.BAD_OUTPUT);
    }
    expect(leftovers(dir)).toEqual([]);
  });
});
