// The only module that touches protobuf. Reads ONNX files into the IR and writes the IR back.
//
// Library: onnx-buf (ONNX 1.20's onnx.proto3 compiled for @bufbuild/protobuf v2): int64 as
// bigint (INT64_MAX stays exact), unknown fields kept, bytes fields decoded as zero-copy views.
// Lossless by construction: every field the IR does not model is kept on an `extra` object and
// written back; tensor data stays in the field it came in (raw or typed) unless a pass replaced it.
//
// Writing streams: large raw tensors are not copied into one protobuf buffer; the message is
// emitted as a list of chunks (small encoded parts plus the tensors' own bytes) because a
// protobuf message may list its fields in any order and length-delimited fields can be framed
// by hand. That keeps peak memory near the size of the model itself.

import { create, fromBinary, toBinary, toJson } from '@bufbuild/protobuf';
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
  type AttributeProto,
  type GraphProto,
  type ModelProto,
  type NodeProto,
  type StringStringEntryProto,
  type TensorProto,
  type TypeProto,
  type ValueInfoProto,
} from 'onnx-buf';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ErrorCodes, UserError, userError, writeFailure } from './diagnostics.js';
import { Graph, Model, Node, Value, type Attribute, type AttributeEntry, type Dim, type ValueType } from './ir.js';
import { DataType, Tensor, dtypeBits, dtypeShortName, type ExternalOrigin, type TensorSource } from './tensor.js';

// ---------------------------------------------------------------- reading

export interface ReadOptions {
  /** Folder external data locations are relative to; defaults to the model file's folder. */
  baseDir?: string;
}

/** Read an ONNX file into the IR. Every problem with the file is a UserError. */
export function readModel(file: string, opts: ReadOptions = {}): Model {
  return readModelFile(file, opts).model;
}

/**
 * Read an ONNX file once (it may be a pipe, as with `<(cat m.onnx)`) into the IR, and return its
 * bytes too (for the manifest's checksum).
 */
export function readModelFile(file: string, opts: ReadOptions = {}): { model: Model; bytes: Uint8Array } {
  let bytes: Uint8Array;
  try {
    bytes = fs.readFileSync(file);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'EISDIR') {
      throw userError(ErrorCodes.FILE_NOT_FOUND, `${file} is a directory`, { expected: 'an .onnx file', found: 'a directory', hint: 'pass the model file itself' });
    }
    throw userError(ErrorCodes.FILE_NOT_FOUND, `cannot read model file ${file}`, {
      expected: 'a readable .onnx file',
      found: err.code === 'ENOENT' ? 'no such file' : `${err.code ?? 'error'}: ${err.message}`,
      hint: 'check the path',
    });
  }
  return { model: decodeModel(bytes, opts.baseDir ?? path.dirname(path.resolve(file)), file), bytes };
}

/** Parse the protobuf message only (for tests and tools that compare messages). */
export function decodeModelProto(bytes: Uint8Array, source = 'model'): ModelProto {
  if (bytes.byteLength === 0) {
    throw userError(ErrorCodes.BAD_PROTOBUF, `${source} is empty`, { expected: 'an ONNX ModelProto', found: '0 bytes' });
  }
  let proto: ModelProto;
  try {
    proto = fromBinary(ModelProtoSchema, bytes, { readUnknownFields: true });
  } catch (e) {
    throw userError(ErrorCodes.BAD_PROTOBUF, `${source} is not a valid ONNX protobuf file`, {
      expected: 'an ONNX ModelProto (protobuf binary)',
      found: `${bytes.byteLength} bytes that fail to parse (${(e as Error).message})`,
      hint: 'the file may be truncated or not an ONNX model; re-export it',
    });
  }
  if (!proto.graph) {
    throw userError(ErrorCodes.BAD_PROTOBUF, `${source} has no graph`, {
      expected: 'a ModelProto with a graph',
      found: 'a message without field 7 (graph)',
      hint: 'the file may not be an ONNX model',
    });
  }
  return proto;
}

/** Read a serialized TensorProto (the `.pb` files of ONNX's test data layout). */
export function decodeTensorProto(bytes: Uint8Array, source = 'tensor'): Tensor {
  let proto: TensorProto;
  try {
    proto = fromBinary(TensorProtoSchema, bytes, { readUnknownFields: true });
  } catch (e) {
    throw userError(ErrorCodes.BAD_INPUT_FILE, `${source} is not a serialized ONNX TensorProto`, {
      expected: 'a TensorProto .pb file (as in ONNX test data)',
      found: `${bytes.byteLength} bytes that fail to parse (${(e as Error).message})`,
      hint: 'write it with onnx.numpy_helper.from_array(array).SerializeToString()',
    });
  }
  if (proto.dataLocation === TensorProto_DataLocation.EXTERNAL) {
    throw userError(ErrorCodes.BAD_INPUT_FILE, `${source} refers to external data`, { expected: 'a self-contained TensorProto', found: 'data_location = EXTERNAL', hint: 'save the tensor with its data inline' });
  }
  return readTensor(proto, { baseDir: null, source, externalCache: new Map() });
}

/** Serialize one tensor as a TensorProto (the layout of ONNX test data `.pb` files). */
export function encodeTensorProto(tensor: Tensor): Uint8Array {
  return toBinary(TensorProtoSchema, tensorProto(tensor, tensor.name));
}

/** Decoded message as JSON (bigints as strings), for comparing two files field by field. */
export function modelProtoToJson(proto: ModelProto): unknown {
  return toJson(ModelProtoSchema, proto, { alwaysEmitImplicit: false });
}

/** Leftovers of each message are kept as the original message (`orig`): fields the IR does not
 * model are copied from it on write, and so is the explicit presence of default values. */
interface ModelExtra {
  orig: ModelProto;
}

/** `domain:name` of every function the model defines (model-local functions runtimes inline). */
export function modelFunctionIds(model: Model): Set<string> {
  const orig = (model.extra as ModelExtra | undefined)?.orig;
  return new Set((orig?.functions ?? []).map((f) => `${f.domain}:${f.name}`));
}

/** Keep explicit presence: a default value is written only when the source message had it. */
function present<T>(orig: object | undefined, key: string, value: T): T | undefined {
  if (value !== '' && value !== 0n && value !== 0 && !(value instanceof Uint8Array && value.byteLength === 0)) return value;
  return orig && Object.prototype.hasOwnProperty.call(orig, key) ? value : undefined;
}

export function decodeModel(bytes: Uint8Array, baseDir: string | null, source = 'model'): Model {
  const proto = decodeModelProto(bytes, source);
  const model = new Model();
  model.baseDir = baseDir;
  model.irVersion = proto.irVersion;
  for (const o of proto.opsetImport) model.opsetImports.set(o.domain, o.version);
  model.producerName = proto.producerName;
  model.producerVersion = proto.producerVersion;
  model.domain = proto.domain;
  model.modelVersion = proto.modelVersion;
  model.docString = proto.docString;
  model.metadataProps = proto.metadataProps.map((p) => [p.key, p.value]);
  const extra: ModelExtra = { orig: proto };
  model.extra = extra;
  const ctx: ReadContext = { baseDir, source, externalCache: new Map() };
  model.graph = readGraph(proto.graph!, ctx);
  proto.graph!.initializer = []; // the tensors live in the IR now; the kept message must not hold their bytes
  return model;
}

interface ReadContext {
  baseDir: string | null;
  source: string;
  externalCache: Map<string, number>;
}

interface GraphExtra {
  orig: GraphProto;
  /** value_info entries for names that are not values of this graph, kept as read. */
  strayValueInfo: ValueInfoProto[];
}

interface NodeExtra {
  orig: NodeProto;
  /** Constant nodes written with value_float(s)/value_int(s)/...: the attribute and its tensor. */
  constantForm?: { tensor: Tensor };
}

function badGraph(ctx: ReadContext, message: string, found: string, hint: string): UserError {
  return userError(ErrorCodes.BAD_GRAPH, `${ctx.source}: ${message}`, { expected: 'a well-formed ONNX graph', found, hint });
}

function readGraph(g: GraphProto, ctx: ReadContext): Graph {
  const graph = new Graph();
  graph.name = g.name;
  graph.docString = g.docString;
  const byName = new Map<string, Value>();

  for (const vi of g.input) {
    const v = valueFromInfo(vi, ctx);
    if (byName.has(v.name)) throw badGraph(ctx, `graph input ${v.name} is listed twice`, `two inputs named ${v.name}`, 'rename one of them');
    byName.set(v.name, v);
    graph.inputs.push(v);
    graph.claimName(v.name);
  }
  for (const tp of g.initializer) {
    const tensor = readTensor(tp, ctx);
    let v = byName.get(tp.name);
    if (v && v.producer === null && graph.inputs.includes(v) && !v.const) {
      v.const = tensor; // an initializer that is also a graph input (a default value)
    } else if (v) {
      throw badGraph(ctx, `initializer ${tp.name} is defined twice`, `two initializers named ${tp.name}`, 'remove the duplicate');
    } else {
      v = new Value(tp.name, { kind: 'tensor', elemType: tensor.dtype, shape: [...tensor.dims] });
      v.const = tensor;
      byName.set(v.name, v);
      graph.claimName(v.name);
    }
    graph.initializers.push(v);
  }
  for (const sp of g.sparseInitializer) {
    // Sparse initializers stay opaque; their values exist so nodes can refer to them.
    const name = sp.values?.name ?? '';
    if (name && !byName.has(name)) {
      const v = new Value(name, null);
      byName.set(name, v);
      graph.claimName(name);
    }
  }

  // First create every node with its outputs (nodes may be listed out of order), then connect.
  const nodes: Node[] = [];
  for (const np of g.node) {
    const node = new Node(np.opType, np.domain === 'ai.onnx' ? '' : np.domain, np.name);
    node.docString = np.docString;
    const extra: NodeExtra = { orig: np };
    node.extra = extra;
    for (const name of np.output) {
      const out = node.addOutput(name);
      if (name === '') continue;
      if (byName.has(name)) {
        throw badGraph(ctx, `value ${name} has more than one producer`, `${np.opType} "${np.name}" writes ${name}, which is already defined`, 'each value must be written by exactly one node');
      }
      byName.set(name, out);
    }
    for (const ap of np.attribute) node.attributes.set(ap.name, readAttribute(ap, ctx));
    if (node.op === 'Constant' && node.domain === '') readConstantNode(node, extra, ctx);
    graph.addNode(node);
    nodes.push(node);
  }
  for (let i = 0; i < nodes.length; i++) {
    const node = nodes[i]!;
    const np = g.node[i]!;
    np.input.forEach((name, index) => {
      if (name === '') {
        node.setInput(index, null);
        return;
      }
      const v = byName.get(name);
      if (!v) {
        throw badGraph(ctx, `${node.label()} reads ${name}, which nothing defines`, `no graph input, initializer or node output named ${name}`, 'the model is missing an initializer or a node; re-export it');
      }
      node.setInput(index, v);
    });
    for (const name of subgraphFreeNames(np)) {
      const v = byName.get(name);
      if (v) node.addCapture(v);
      // names not found here are defined further out (nested subgraph); they stay by name only
    }
  }

  for (const vi of g.output) {
    const v = byName.get(vi.name);
    if (!v) {
      throw badGraph(ctx, `graph output ${vi.name} is not produced by anything`, `no value named ${vi.name}`, 'the model is incomplete; re-export it');
    }
    applyInfo(v, vi, ctx);
    graph.outputs.push(v);
  }
  const strayValueInfo: ValueInfoProto[] = [];
  for (const vi of g.valueInfo) {
    const v = byName.get(vi.name);
    if (!v || graph.inputs.includes(v) || graph.outputs.includes(v)) {
      if (vi.type) readType(vi.type, ctx); // validated even though it is kept as read
      strayValueInfo.push(vi);
      continue;
    }
    applyInfo(v, vi, ctx);
    v.declaredType = true;
  }
  const extra: GraphExtra = { orig: g, strayValueInfo };
  graph.extra = extra;

  const cycle = graph.sortTopologically();
  if (cycle) {
    const names = cycle.slice(0, 5).map((n) => n.label()).join(', ');
    throw badGraph(ctx, 'the graph has a cycle', `${cycle.length} nodes wait on each other, e.g. ${names}`, 'a node reads a value that depends on its own output; re-export the model');
  }
  return graph;
}

function valueFromInfo(vi: ValueInfoProto, ctx: ReadContext): Value {
  const v = new Value(vi.name);
  applyInfo(v, vi, ctx);
  return v;
}

interface ValueExtra {
  orig: ValueInfoProto;
}

function applyInfo(v: Value, vi: ValueInfoProto, ctx: ReadContext): void {
  v.docString = vi.docString;
  const extra: ValueExtra = { orig: vi };
  v.extra = extra;
  if (vi.type) v.type = readType(vi.type, ctx);
}

function readType(tp: TypeProto, ctx: ReadContext): ValueType {
  if (tp.value.case === 'tensorType') {
    const t = tp.value.value;
    let shape: Dim[] | null = null;
    if (t.shape) {
      shape = t.shape.dim.map((d) => {
        if (d.value.case === 'dimValue') {
          const n = Number(d.value.value);
          if (n < 0 || !Number.isSafeInteger(n)) {
            throw userError(ErrorCodes.BAD_GRAPH, `${ctx.source}: a type has dimension ${d.value.value}`, { expected: 'dimensions ≥ 0', found: String(d.value.value), hint: 're-export the model' });
          }
          return n;
        }
        if (d.value.case === 'dimParam') return d.value.value;
        return null;
      });
      const hasDenotation = t.shape.dim.some((d) => d.denotation !== '');
      if (hasDenotation || t.$unknown || t.shape.$unknown) return { kind: 'opaque', proto: tp };
    }
    if (tp.denotation || tp.$unknown) return { kind: 'opaque', proto: tp };
    return { kind: 'tensor', elemType: t.elemType, shape };
  }
  return { kind: 'opaque', proto: tp };
}

function readAttribute(ap: AttributeProto, ctx: ReadContext): AttributeEntry {
  const extra = { orig: ap };
  let attr: Attribute;
  switch (ap.type) {
    case AT.FLOAT: attr = { kind: 'float', value: ap.f }; break;
    case AT.INT: attr = { kind: 'int', value: ap.i }; break;
    case AT.STRING: attr = { kind: 'string', value: ap.s }; break;
    case AT.TENSOR:
      attr = ap.t ? { kind: 'tensor', value: readTensor(ap.t, ctx) } : { kind: 'opaque', value: ap, summary: 'tensor?' };
      break;
    case AT.FLOATS: attr = { kind: 'floats', value: ap.floats }; break;
    case AT.INTS: attr = { kind: 'ints', value: ap.ints }; break;
    case AT.STRINGS: attr = { kind: 'strings', value: ap.strings }; break;
    case AT.TENSORS: attr = { kind: 'tensors', value: ap.tensors.map((t) => readTensor(t, ctx)) }; break;
    case AT.GRAPH: attr = { kind: 'opaque', value: ap, summary: `graph(${ap.g?.name ?? ''}: ${ap.g?.node.length ?? 0} nodes)` }; break;
    case AT.GRAPHS: attr = { kind: 'opaque', value: ap, summary: `graphs(${ap.graphs.length})` }; break;
    default: attr = { kind: 'opaque', value: ap, summary: `${AT[ap.type] ?? 'attribute'}` };
  }
  if (ap.refAttrName && attr.kind !== 'opaque') attr = { kind: 'opaque', value: ap, summary: `@${ap.refAttrName}` };
  return { attr, extra };
}

/** Constant nodes expose their data on the output value, whichever attribute holds it. */
function readConstantNode(node: Node, extra: NodeExtra, ctx: ReadContext): void {
  const out = node.outputs[0];
  if (!out || node.attributes.size !== 1) return;
  const [name, entry] = [...node.attributes][0]!;
  const a = entry.attr;
  let tensor: Tensor | null = null;
  if (name === 'value' && a.kind === 'tensor') tensor = a.value;
  else if (name === 'value_float' && a.kind === 'float') tensor = Tensor.float32([], [a.value]);
  else if (name === 'value_floats' && a.kind === 'floats') tensor = Tensor.float32([a.value.length], a.value);
  else if (name === 'value_int' && a.kind === 'int') tensor = Tensor.int64([], [a.value]);
  else if (name === 'value_ints' && a.kind === 'ints') tensor = Tensor.int64([a.value.length], a.value);
  if (!tensor) return;
  if (name !== 'value') extra.constantForm = { tensor };
  out.const = tensor;
  if (!out.type) out.type = { kind: 'tensor', elemType: tensor.dtype, shape: [...tensor.dims] };
  void ctx;
}

/** Names a node's subgraph attributes read from enclosing scopes. */
function subgraphFreeNames(np: NodeProto): string[] {
  const free = new Set<string>();
  for (const ap of np.attribute) {
    if (ap.g) graphFreeNames(ap.g, free);
    for (const g of ap.graphs) graphFreeNames(g, free);
  }
  return [...free];
}

function graphFreeNames(g: GraphProto, free: Set<string>): void {
  const defined = new Set<string>();
  for (const vi of g.input) defined.add(vi.name);
  for (const t of g.initializer) defined.add(t.name);
  for (const s of g.sparseInitializer) if (s.values) defined.add(s.values.name);
  for (const n of g.node) for (const o of n.output) defined.add(o);
  const inner = new Set<string>();
  for (const n of g.node) {
    for (const i of n.input) if (i !== '') inner.add(i);
    for (const ap of n.attribute) {
      if (ap.g) graphFreeNames(ap.g, inner);
      for (const sub of ap.graphs) graphFreeNames(sub, inner);
    }
  }
  for (const o of g.output) inner.add(o.name);
  for (const name of inner) if (!defined.has(name)) free.add(name);
}

interface TensorExtra {
  orig: TensorProto;
  /** raw_data and a typed field were both present (raw wins, the typed one is kept as read). */
  shadow?: TensorProto;
}

function readTensor(tp: TensorProto, ctx: ReadContext): Tensor {
  const dims = tp.dims.map((d) => {
    const n = Number(d);
    if (d < 0n || !Number.isSafeInteger(n)) {
      throw userError(ErrorCodes.BAD_TENSOR, `${ctx.source}: tensor ${tp.name || '(unnamed)'} has dimension ${d}`, { expected: 'dimensions ≥ 0', found: String(d), hint: 're-export the model' });
    }
    return n;
  });
  let size = 1;
  for (const d of dims) size *= d;
  let source: TensorSource;
  let external: ExternalOrigin | null = null;
  if (tp.dataLocation === TensorProto_DataLocation.EXTERNAL) {
    const loaded = readExternal(tp, ctx);
    source = { kind: 'raw', bytes: loaded.bytes };
    external = loaded.origin;
  } else if (tp.rawData.byteLength > 0 || (size === 0 && noTypedData(tp))) {
    // An own, aligned copy: typed-array views of it need no further copy, and no tensor keeps
    // the whole file buffer alive once passes have replaced the tensors they change.
    if (tp.rawData.byteLength > 0) tp.rawData = new Uint8Array(tp.rawData);
    source = { kind: 'raw', bytes: tp.rawData };
  } else if (tp.floatData.length > 0) source = { kind: 'float', values: tp.floatData };
  else if (tp.int32Data.length > 0) source = { kind: 'int32', values: tp.int32Data };
  else if (tp.int64Data.length > 0) source = { kind: 'int64', values: tp.int64Data };
  else if (tp.doubleData.length > 0) source = { kind: 'double', values: tp.doubleData };
  else if (tp.uint64Data.length > 0) source = { kind: 'uint64', values: tp.uint64Data };
  else if (tp.stringData.length > 0 || tp.dataType === DataType.STRING) source = { kind: 'string', values: tp.stringData };
  else source = { kind: 'raw', bytes: tp.rawData };

  checkTensorSize(tp, dims, size, source, ctx);
  const tensor = new Tensor(tp.dataType, dims, source, tp.name);
  tensor.docString = tp.docString;
  tensor.external = external;
  const extra: TensorExtra = { orig: tp };
  if (tp.rawData.byteLength > 0 && !noTypedData(tp)) extra.shadow = tp;
  tensor.extra = extra;
  return tensor;
}

function noTypedData(tp: TensorProto): boolean {
  return tp.floatData.length === 0 && tp.int32Data.length === 0 && tp.int64Data.length === 0 &&
    tp.doubleData.length === 0 && tp.uint64Data.length === 0 && tp.stringData.length === 0;
}

function checkTensorSize(tp: TensorProto, dims: number[], size: number, source: TensorSource, ctx: ReadContext): void {
  if (tp.segment) return; // segmented tensors describe a slice of a bigger one; not checked
  const bits = dtypeBits(tp.dataType);
  let ok = true;
  let found = '';
  if (source.kind === 'raw') {
    if (bits > 0) {
      const expected = Math.ceil((size * bits) / 8);
      ok = source.bytes.byteLength === expected;
      found = `${source.bytes.byteLength} bytes of data, ${expected} needed`;
    }
  } else if (source.kind === 'string') {
    ok = source.values.length === size;
    found = `${source.values.length} strings for ${size} elements`;
  } else if (bits >= 8) {
    const complex = tp.dataType === DataType.COMPLEX64 || tp.dataType === DataType.COMPLEX128 ? 2 : 1;
    ok = source.values.length === size * complex;
    found = `${source.values.length} values in the typed field for ${size} elements`;
  }
  if (tp.dataType === DataType.UNDEFINED || !(tp.dataType in dtypeShortName)) {
    throw userError(ErrorCodes.BAD_TENSOR, `${ctx.source}: tensor ${tp.name || '(unnamed)'} has unknown data type ${tp.dataType}`, {
      expected: 'an ONNX TensorProto.DataType', found: String(tp.dataType), hint: 're-export the model',
    });
  }
  if (!ok) {
    throw userError(ErrorCodes.BAD_TENSOR, `${ctx.source}: tensor ${tp.name || '(unnamed)'} of type ${dtypeShortName[tp.dataType]}[${dims.join(',')}] has the wrong amount of data`, {
      expected: `data for ${size} elements`, found, hint: 'the file is damaged or was written by a broken exporter',
    });
  }
}

function readExternal(tp: TensorProto, ctx: ReadContext): { bytes: Uint8Array; origin: ExternalOrigin } {
  const entries = new Map(tp.externalData.map((e) => [e.key, e.value]));
  const location = entries.get('location') ?? '';
  const fail = (message: string, found: string, hint = 'fix the external data reference or re-export the model'): UserError =>
    userError(ErrorCodes.BAD_EXTERNAL_DATA, `${ctx.source}: tensor ${tp.name}: ${message}`, { expected: 'a file inside the model\'s folder, with offset and length inside that file', found, hint });
  if (!ctx.baseDir) throw fail('external data needs the model\'s folder', 'a model read from memory', 'read the model from its file');
  if (!location) throw fail('external data without a location', 'no "location" entry');
  if (path.isAbsolute(location) || location.split(/[\\/]/).includes('..') || location.includes('\0')) {
    throw fail(`external data location ${JSON.stringify(location)} escapes the model's folder`, location, 'external data must sit in the model\'s folder or below it');
  }
  // The location must name a file inside the model's folder. That file may be a symbolic link to
  // anywhere (the Hugging Face cache links snapshots/<rev>/model.onnx_data to ../../blobs/<hash>),
  // as onnxruntime and onnx.checker allow: the link was placed by whoever owns the folder, while
  // the location comes from the model. So the check is on the link's own place (its folder,
  // symlinks resolved), and the data is then read through the link.
  const full = path.resolve(ctx.baseDir, location);
  let realBase: string;
  let realDir: string;
  let realFull: string;
  try {
    realBase = fs.realpathSync(ctx.baseDir);
    realDir = fs.realpathSync(path.dirname(full));
    realFull = fs.realpathSync(full);
  } catch {
    throw fail(`external data file ${location} does not exist`, `missing ${full}`, 'copy the data file next to the model');
  }
  if (realDir !== realBase && !realDir.startsWith(realBase + path.sep)) {
    throw fail(`external data location ${location} resolves outside the model's folder`, path.join(realDir, path.basename(full)));
  }
  const parseNumber = (key: string, fallback: number): number => {
    const text = entries.get(key);
    if (text === undefined) return fallback;
    if (!/^\d+$/.test(text)) throw fail(`external data ${key} ${JSON.stringify(text)} is not a number`, text);
    return Number(text);
  };
  let fileSize = ctx.externalCache.get(realFull);
  if (fileSize === undefined) {
    const st = fs.statSync(realFull);
    if (!st.isFile()) throw fail(`external data location ${location} is not a file`, location);
    fileSize = st.size;
    ctx.externalCache.set(realFull, fileSize);
  }
  const offset = parseNumber('offset', 0);
  if (offset > fileSize) {
    throw fail(`external data offset ${offset} is past the end of ${location} (${fileSize} bytes)`, `offset ${offset}`);
  }
  const length = parseNumber('length', fileSize - offset);
  if (offset + length > fileSize) {
    throw fail(`external data [${offset}, ${offset + length}) runs past the end of ${location} (${fileSize} bytes)`, `offset ${offset}, length ${length}`);
  }
  const bytes = new Uint8Array(length);
  const fd = fs.openSync(realFull, 'r');
  try {
    let done = 0;
    while (done < length) {
      const n = fs.readSync(fd, bytes, done, length - done, offset + done);
      if (n === 0) break;
      done += n;
    }
  } finally {
    fs.closeSync(fd);
  }
  const known = new Set(['location', 'offset', 'length']);
  const extra = tp.externalData.filter((e) => !known.has(e.key)).map((e): [string, string] => [e.key, e.value]);
  return { bytes, origin: { location, offset, length, extra } };
}

// ---------------------------------------------------------------- writing

export interface WriteOptions {
  /**
   * Store large tensors in a side file next to the model. `location` is relative to the model
   * (default: `<model file name>.data`); tensors of at least `threshold` bytes (default 1024) go
   * there. Without this option, tensors that were external when read stay external (same rule)
   * and all others are inlined.
   */
  externalData?: { location?: string; threshold?: number } | false;
  /** Drop value_info (after passes changed shapes); default keeps it. */
  dropValueInfo?: boolean;
}

/** Tensors at least this big are framed by hand instead of copied through the encoder. */
const STREAM_THRESHOLD = 4096;

type Chunk = Uint8Array;

interface WriteContext {
  dropValueInfo: boolean;
  external: { location: string; threshold: number; chunks: Chunk[]; offset: number } | null;
}

/** Encode the model into one buffer (tests, small models). External data is not allowed here. */
export function encodeModel(model: Model, opts: Omit<WriteOptions, 'externalData'> = {}): Uint8Array {
  const chunks = encodeChunks(model, { dropValueInfo: opts.dropValueInfo ?? false, external: null });
  return concatChunks(chunks);
}

/** Write the model (and its external data, if any) atomically: temp files renamed into place. */
export function writeModel(model: Model, file: string, opts: WriteOptions = {}): void {
  const hadExternal = modelHasExternal(model);
  let external: WriteContext['external'] = null;
  if (opts.externalData !== false && (opts.externalData || hadExternal)) {
    const location = opts.externalData && opts.externalData.location ? opts.externalData.location : `${path.basename(file)}.data`;
    if (path.isAbsolute(location) || location.split(/[\\/]/).includes('..')) {
      throw userError(ErrorCodes.BAD_OUTPUT, `external data location ${location} escapes the model's folder`, { expected: 'a relative path below the model folder', found: location });
    }
    external = { location, threshold: opts.externalData ? (opts.externalData.threshold ?? 1024) : 1024, chunks: [], offset: 0 };
  }
  const chunks = encodeChunks(model, { dropValueInfo: opts.dropValueInfo ?? false, external });
  const folder = path.dirname(path.resolve(file));
  if (!fs.existsSync(folder) || !fs.statSync(folder).isDirectory()) {
    throw userError(ErrorCodes.BAD_OUTPUT, `cannot write ${file}: folder ${folder} does not exist`, { expected: 'an existing folder', found: 'none', hint: 'create the folder first' });
  }
  if (fs.existsSync(file) && fs.statSync(file).isDirectory()) {
    throw userError(ErrorCodes.BAD_OUTPUT, `cannot write ${file}: it is a directory`, { expected: 'a file path', found: 'a directory', hint: 'choose a file name' });
  }
  const written: string[] = [];
  try {
    const tmp = `${file}.tmp-${process.pid}`;
    written.push(tmp);
    writeChunks(tmp, chunks);
    if (external && external.chunks.length > 0) {
      const dataFile = path.join(folder, external.location);
      fs.mkdirSync(path.dirname(dataFile), { recursive: true });
      const dataTmp = `${dataFile}.tmp-${process.pid}`;
      written.push(dataTmp);
      writeChunks(dataTmp, external.chunks);
      fs.renameSync(dataTmp, dataFile);
    }
    fs.renameSync(tmp, file);
  } catch (e) {
    for (const f of written) fs.rmSync(f, { force: true });
    const err = e as NodeJS.ErrnoException;
    if (err.code) {
      throw writeFailure(file, err) ?? userError(ErrorCodes.BAD_OUTPUT, `cannot write ${file}`, { expected: 'a writable location', found: `${err.code}: ${err.message}`, hint: 'check the path and permissions' });
    }
    throw e;
  }
}

function modelHasExternal(model: Model): boolean {
  return model.graph.initializers.some((v) => v.const?.external) || model.graph.nodes.some((n) => n.outputs[0]?.const?.external);
}

function writeChunks(file: string, chunks: Chunk[]): void {
  const fd = fs.openSync(file, 'w');
  try {
    for (const c of chunks) {
      let done = 0;
      while (done < c.byteLength) done += fs.writeSync(fd, c, done, c.byteLength - done);
    }
  } finally {
    fs.closeSync(fd);
  }
}

function concatChunks(chunks: Chunk[]): Uint8Array {
  let total = 0;
  for (const c of chunks) total += c.byteLength;
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

function chunksLength(chunks: Chunk[]): number {
  let n = 0;
  for (const c of chunks) n += c.byteLength;
  return n;
}

function varint(n: number): Uint8Array {
  const bytes: number[] = [];
  while (n > 0x7f) {
    bytes.push((n % 128) | 0x80);
    n = Math.floor(n / 128);
  }
  bytes.push(n);
  return Uint8Array.from(bytes);
}

/** A length-delimited field framed by hand: tag, length, then the chunks. */
function frame(fieldNumber: number, body: Chunk[]): Chunk[] {
  return [varint((fieldNumber << 3) | 2), varint(chunksLength(body)), ...body];
}

const FIELD_MODEL_GRAPH = 7;
const FIELD_GRAPH_INITIALIZER = 5;
const FIELD_TENSOR_RAW_DATA = 9;

function encodeChunks(model: Model, ctx: WriteContext): Chunk[] {
  const orig = (model.extra as ModelExtra | undefined)?.orig;
  const shell = create(ModelProtoSchema, {
    irVersion: present(orig, 'irVersion', model.irVersion),
    opsetImport: [...model.opsetImports].map(([domain, version]) => {
      const o = orig?.opsetImport.find((e) => e.domain === domain);
      return create(OperatorSetIdProtoSchema, { domain: present(o, 'domain', domain), version: present(o, 'version', version) });
    }),
    producerName: present(orig, 'producerName', model.producerName),
    producerVersion: present(orig, 'producerVersion', model.producerVersion),
    domain: present(orig, 'domain', model.domain),
    modelVersion: present(orig, 'modelVersion', model.modelVersion),
    docString: present(orig, 'docString', model.docString),
    metadataProps: model.metadataProps.map(([key, value]) => entry(key, value)),
    trainingInfo: orig?.trainingInfo ?? [],
    functions: orig?.functions ?? [],
    configuration: orig?.configuration ?? [],
  });
  if (orig?.$unknown) shell.$unknown = orig.$unknown;
  const graphChunks = encodeGraphChunks(model.graph, ctx);
  return [toBinary(ModelProtoSchema, shell), ...frame(FIELD_MODEL_GRAPH, graphChunks)];
}

function entry(key: string, value: string): StringStringEntryProto {
  return create(StringStringEntryProtoSchema, { key, value });
}

function encodeGraphChunks(graph: Graph, ctx: WriteContext): Chunk[] {
  const extra = graph.extra as GraphExtra | undefined;
  const orig = extra?.orig;
  const proto = create(GraphProtoSchema, {
    name: present(orig, 'name', graph.name),
    docString: present(orig, 'docString', graph.docString),
    input: graph.inputs.map(valueInfo),
    output: graph.outputs.map(valueInfo),
    node: graph.nodes.map((n) => nodeProto(n)),
    sparseInitializer: orig?.sparseInitializer ?? [],
    quantizationAnnotation: orig?.quantizationAnnotation ?? [],
    metadataProps: orig?.metadataProps ?? [],
  });
  if (orig?.$unknown) proto.$unknown = orig.$unknown;
  if (!ctx.dropValueInfo) {
    const listed = new Set<Value>([...graph.inputs, ...graph.outputs]);
    for (const n of graph.nodes) {
      for (const o of n.outputs) if (o.declaredType && o.type && !listed.has(o)) proto.valueInfo.push(valueInfo(o));
    }
    proto.valueInfo.push(...(extra?.strayValueInfo ?? []));
  }
  const chunks: Chunk[] = [toBinary(GraphProtoSchema, proto)];
  for (const v of graph.initializers) {
    chunks.push(...frame(FIELD_GRAPH_INITIALIZER, tensorChunks(v.const!, v.name, ctx)));
  }
  return chunks;
}

function valueInfo(v: Value): ValueInfoProto {
  const orig = (v.extra as ValueExtra | undefined)?.orig;
  const vi = create(ValueInfoProtoSchema, {
    name: present(orig, 'name', v.name),
    docString: present(orig, 'docString', v.docString),
    metadataProps: orig?.metadataProps ?? [],
  });
  if (orig?.$unknown) vi.$unknown = orig.$unknown;
  if (v.type) vi.type = typeProto(v.type);
  return vi;
}

function typeProto(t: ValueType): TypeProto {
  if (t.kind === 'opaque') return t.proto as TypeProto;
  const tensor = create(TypeProto_TensorSchema, { elemType: t.elemType });
  if (t.shape) {
    tensor.shape = create(TensorShapeProtoSchema, {
      dim: t.shape.map((d) => {
        if (typeof d === 'number') return create(TensorShapeProto_DimensionSchema, { value: { case: 'dimValue', value: BigInt(d) } });
        if (typeof d === 'string') return create(TensorShapeProto_DimensionSchema, { value: { case: 'dimParam', value: d } });
        return create(TensorShapeProto_DimensionSchema, {});
      }),
    });
  }
  return create(TypeProtoSchema, { value: { case: 'tensorType', value: tensor } });
}

function nodeProto(node: Node): NodeProto {
  const extra = node.extra as NodeExtra | undefined;
  const orig = extra?.orig;
  const proto = create(NodeProtoSchema, {
    input: node.inputs.map((v) => (v ? v.name : '')),
    output: node.outputs.map((v) => v.name),
    name: present(orig, 'name', node.name),
    opType: present(orig, 'opType', node.op),
    domain: present(orig, 'domain', orig?.domain === 'ai.onnx' && node.domain === '' ? 'ai.onnx' : node.domain),
    docString: present(orig, 'docString', node.docString),
    overload: orig?.overload || undefined,
    metadataProps: orig?.metadataProps ?? [],
    deviceConfigurations: orig?.deviceConfigurations ?? [],
  });
  if (orig?.$unknown) proto.$unknown = orig.$unknown;
  const constOut = node.op === 'Constant' && node.domain === '' ? node.outputs[0]?.const : undefined;
  if (constOut && extra?.constantForm && extra.constantForm.tensor !== constOut) {
    // a pass replaced the data of a value_float(s)/value_int(s) constant: write it as `value`
    proto.attribute.push(attributeProto('value', { attr: { kind: 'tensor', value: constOut } }));
  } else {
    for (const [name, e] of node.attributes) {
      if (constOut && name === 'value' && e.attr.kind === 'tensor') {
        proto.attribute.push(attributeProto(name, { attr: { kind: 'tensor', value: constOut }, extra: e.extra }));
      } else {
        proto.attribute.push(attributeProto(name, e));
      }
    }
  }
  return proto;
}

function attributeProto(name: string, e: AttributeEntry): AttributeProto {
  const a = e.attr;
  if (a.kind === 'opaque') return a.value as AttributeProto;
  const orig = (e.extra as { orig: AttributeProto } | undefined)?.orig;
  const proto = create(AttributeProtoSchema, {
    name: present(orig, 'name', name),
    docString: present(orig, 'docString', orig?.docString ?? ''),
    refAttrName: present(orig, 'refAttrName', orig?.refAttrName ?? ''),
  });
  if (orig?.$unknown) proto.$unknown = orig.$unknown;
  const setType = (t: AT): void => {
    const v = present(orig, 'type', t);
    if (v !== undefined) proto.type = v;
  };
  switch (a.kind) {
    case 'float': { setType(AT.FLOAT); const f = present(orig, 'f', a.value); if (f !== undefined) proto.f = f; break; }
    case 'int': { setType(AT.INT); const i = present(orig, 'i', a.value); if (i !== undefined) proto.i = i; break; }
    case 'string': { setType(AT.STRING); const v = present(orig, 's', a.value as Uint8Array<ArrayBuffer>); if (v !== undefined) proto.s = v; break; }
    case 'tensor': setType(AT.TENSOR); proto.t = tensorProto(a.value, a.value.name); break;
    case 'floats': setType(AT.FLOATS); proto.floats = a.value; break;
    case 'ints': setType(AT.INTS); proto.ints = a.value; break;
    case 'strings': setType(AT.STRINGS); proto.strings = a.value as Uint8Array<ArrayBuffer>[]; break;
    case 'tensors': setType(AT.TENSORS); proto.tensors = a.value.map((t) => tensorProto(t, t.name)); break;
  }
  return proto;
}

/** A TensorProto holding everything but (optionally) the raw bytes. */
function tensorProto(t: Tensor, name: string, withRaw = true): TensorProto {
  const extra = t.extra as TensorExtra | undefined;
  const orig = extra?.orig;
  if (extra?.shadow && t.storage.kind === 'raw' && t.storage.bytes === extra.shadow.rawData && !t.external) {
    return extra.shadow;
  }
  const proto = create(TensorProtoSchema, {
    dims: t.dims.map((d) => BigInt(d)),
    dataType: present(orig, 'dataType', t.dtype),
    name: present(orig, 'name', name),
    docString: present(orig, 'docString', t.docString),
    segment: orig?.segment,
    metadataProps: orig?.metadataProps ?? [],
  });
  if (orig?.$unknown) proto.$unknown = orig.$unknown;
  if (orig && Object.prototype.hasOwnProperty.call(orig, 'dataLocation') && !t.external) proto.dataLocation = orig.dataLocation;
  const s = t.storage;
  switch (s.kind) {
    case 'raw': {
      const raw = withRaw ? present(orig, 'rawData', s.bytes as Uint8Array<ArrayBuffer>) : undefined;
      if (raw !== undefined) proto.rawData = raw;
      break;
    }
    case 'float': proto.floatData = s.values; break;
    case 'int32': proto.int32Data = s.values; break;
    case 'int64': proto.int64Data = s.values; break;
    case 'double': proto.doubleData = s.values; break;
    case 'uint64': proto.uint64Data = s.values; break;
    case 'string': proto.stringData = s.values as Uint8Array<ArrayBuffer>[]; break;
  }
  return proto;
}

function tensorChunks(t: Tensor, name: string, ctx: WriteContext): Chunk[] {
  const s = t.storage;
  const ext = ctx.external;
  if (ext && s.kind !== 'string' && t.byteLength >= ext.threshold) {
    const bytes = t.rawBytes();
    const proto = tensorProto(t, name, false);
    proto.floatData = []; proto.int32Data = []; proto.int64Data = []; proto.doubleData = []; proto.uint64Data = [];
    proto.dataLocation = TensorProto_DataLocation.EXTERNAL;
    proto.externalData = [
      entry('location', ext.location),
      entry('offset', String(ext.offset)),
      entry('length', String(bytes.byteLength)),
      ...(t.external?.extra ?? []).map(([k, v]) => entry(k, v)),
    ];
    ext.chunks.push(bytes);
    ext.offset += bytes.byteLength;
    // keep later tensors 4 KiB aligned so the data file can be memory-mapped
    const pad = (4096 - (ext.offset % 4096)) % 4096;
    if (pad > 0) {
      ext.chunks.push(new Uint8Array(pad));
      ext.offset += pad;
    }
    return [toBinary(TensorProtoSchema, proto)];
  }
  if (s.kind === 'raw' && s.bytes.byteLength >= STREAM_THRESHOLD && !(t.extra as TensorExtra | undefined)?.shadow) {
    const proto = tensorProto(t, name, false);
    return [toBinary(TensorProtoSchema, proto), ...frame(FIELD_TENSOR_RAW_DATA, [s.bytes])];
  }
  return [toBinary(TensorProtoSchema, tensorProto(t, name))];
}

// ---------------------------------------------------------------- subgraph attributes

/**
 * Encode an IR graph as a graph-valued attribute (an If branch, a Loop or Scan body). The graph
 * holds nodes whose inputs may be values of an enclosing graph: every value its nodes (inputs and
 * captures) or outputs read that it does not define itself is an outer-scope capture, returned
 * in first-read order for the owning node's `addCapture`. Initializers are written inline; value
 * types are written for inputs and outputs only (value_info is left to the reader's inference).
 */
export function encodeGraphAttribute(name: string, graph: Graph): { attr: Attribute; captures: Value[] } {
  const defined = new Set<Value>([...graph.inputs, ...graph.initializers]);
  for (const n of graph.nodes) for (const o of n.outputs) defined.add(o);
  const captures: Value[] = [];
  const seen = new Set<Value>();
  const read = (v: Value | null): void => {
    if (!v || defined.has(v) || seen.has(v)) return;
    seen.add(v);
    captures.push(v);
  };
  for (const n of graph.nodes) {
    n.inputs.forEach(read);
    n.captures.forEach(read);
  }
  graph.outputs.forEach(read);
  const g = create(GraphProtoSchema, {
    name: graph.name,
    docString: graph.docString,
    input: graph.inputs.map(valueInfo),
    output: graph.outputs.map(valueInfo),
    node: graph.nodes.map((n) => nodeProto(n)),
    initializer: graph.initializers.map((v) => {
      const tp = tensorProto(v.const!, v.name);
      // a tensor read with both raw and typed data comes back as its source message, old name included
      return tp.name === v.name ? tp : create(TensorProtoSchema, { ...tp, name: v.name });
    }),
  });
  const proto = create(AttributeProtoSchema, { name, type: AT.GRAPH, g });
  return { attr: { kind: 'opaque', value: proto, summary: `graph(${graph.name}: ${graph.nodes.length} nodes)` }, captures };
}
