// The one deterministic text form of a model, used by `slicec print`, `--print-before/after`
// and every golden test. Printing never throws on a model the codec accepted.
//
// Grammar (one binding a line, graph body indented by two spaces):
//
//   model ir_version=8 opset={"":13,"com.microsoft":1} producer="pytorch 2.1"
//   graph "main_graph" {
//     input %x: f32[N,3,32,32]
//     input %scale: f32[1] = [0.5]                 (a graph input with a default value)
//     init %conv1.w: f32[16,3,3,3] = #a1b2c3d4     (large tensor: first 8 hex of sha256 of its bytes)
//     init %shape: i64[2] = [1, -1]                (small numeric tensor, at most 16 elements)
//     %conv1.out: f32[N,16,32,32] = Conv(%x, %conv1.w) {kernel_shape=[3,3], pads=[1,1,1,1]}
//     %a: f32[N,8], %b: f32[N,8] = Split(%conv1.out, _) {axis=1}
//     %c: i64[] = Constant 7
//     %d: ? = com.microsoft::FusedConv(%x, %conv1.w)
//     output %d: ?
//   }
//   # <section title>
//   <section lines, as given>
//
// - Header parts: ir_version, opset (domains sorted, '' first), producer ("name version");
//   empty parts are left out.
// - Names: `%name`, quoted as a JSON string when empty or holding characters other than
//   [A-Za-z0-9_.:/-]: `%"weird name"`. Omitted inputs and outputs print as `_`; a node without
//   outputs prints `() = Op(...)`.
// - Types: `<dtype>[d0,d1,...]` with short dtype names (f32, i64, bool, ...), `?` for an unknown
//   dim, `[*]` for an unknown rank, `[]` for a scalar; `?` for an unknown type and `opaque` for
//   sequence/map/optional types.
// - Ops: `Op` in the default domain, `domain::Op` otherwise.
// - Attributes: `{name=value, ...}` sorted by name; ints exact, floats with up to 6 significant
//   digits, strings as JSON strings, lists as `[a,b]`, tensors as `<type> <value>`, subgraphs and
//   other opaque attributes by their summary (`graph(body: 12 nodes)`).
// - Tensor values: scalars bare (`7`), up to 16 elements inline (`[1, 2, 3]`; integers exact,
//   floats (f16/bf16/f32/f64) with up to 6 significant digits, `nan`, `inf`, `-inf`, bools
//   `true`/`false`, strings as JSON strings); larger tensors and packed or exotic types (f8, i4,
//   complex) as `#` + 8 hex digits of the sha256 of the little-endian bytes; data that does not
//   match its dims as `<bad data>`.
// - Constant nodes print their value in place of arguments: `%c: i64[2] = Constant [1, 2]`.

import { createHash } from 'node:crypto';
import type { Attribute, Graph, Model, Node, Value, ValueType } from './ir.js';
import { DataType, dtypeBits, dtypeShortName, type Tensor } from './tensor.js';

export interface PrintSection {
  title: string;
  lines: string[];
}

export interface PrintOptions {
  /** Analysis results appended after the graph, in the given order. */
  sections?: PrintSection[];
}

const INLINE_LIMIT = 16;
const utf8 = new TextDecoder();

export function printModel(model: Model, opts: PrintOptions = {}): string {
  const header = [`model ir_version=${model.irVersion}`];
  if (model.opsetImports.size > 0) {
    const domains = [...model.opsetImports.keys()].sort(compareStrings);
    const parts = domains.map((d) => `${JSON.stringify(d)}:${model.opsetImports.get(d)}`);
    header.push(`opset={${parts.join(',')}}`);
  }
  const producer = [model.producerName, model.producerVersion].filter((s) => s !== '').join(' ');
  if (producer !== '') header.push(`producer=${JSON.stringify(producer)}`);
  const lines = [header.join(' '), printGraph(model.graph)];
  for (const section of opts.sections ?? []) {
    lines.push(`# ${section.title}`, ...section.lines);
  }
  return `${lines.join('\n')}\n`;
}

/** The `graph "name" { ... }` block, every line prefixed by `indent`; no trailing newline. */
export function printGraph(graph: Graph, indent = ''): string {
  const inner = `${indent}  `;
  const lines = [`${indent}graph ${JSON.stringify(graph.name)} {`];
  const inputs = new Set<Value>(graph.inputs);
  for (const v of graph.inputs) {
    const value = v.const ? ` = ${formatTensorValue(v.const)}` : '';
    lines.push(`${inner}input ${formatBinding(v)}${value}`);
  }
  for (const v of graph.initializers) {
    if (inputs.has(v)) continue;
    const value = v.const ? formatTensorValue(v.const) : '<no data>';
    lines.push(`${inner}init ${formatBinding(v)} = ${value}`);
  }
  for (const node of graph.nodes) lines.push(`${inner}${formatNode(node)}`);
  for (const v of graph.outputs) lines.push(`${inner}output ${formatBinding(v)}`);
  lines.push(`${indent}}`);
  return lines.join('\n');
}

function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** `%name` or `%"quoted name"`. */
export function formatName(name: string): string {
  return /^[A-Za-z0-9_.:/-]+$/.test(name) ? `%${name}` : `%${JSON.stringify(name)}`;
}

function formatBinding(v: Value): string {
  return `${formatName(v.name)}: ${formatType(v.type)}`;
}

function formatDim(d: number | string | null): string {
  if (d === null) return '?';
  if (typeof d === 'number') return String(d);
  return /^[A-Za-z0-9_.:/-]+$/.test(d) ? d : JSON.stringify(d);
}

function dtypeName(dtype: number): string {
  return dtypeShortName[dtype] ?? `dtype${dtype}`;
}

export function formatType(t: ValueType | null): string {
  if (t === null) return '?';
  if (t.kind !== 'tensor') return 'opaque';
  const shape = t.shape === null ? '*' : t.shape.map(formatDim).join(',');
  return `${dtypeName(t.elemType)}[${shape}]`;
}

function formatNode(node: Node): string {
  const outputs = node.outputs.length === 0
    ? '()'
    : node.outputs.map((o) => (o.name === '' ? '_' : formatBinding(o))).join(', ');
  const op = node.domain === '' ? node.op : `${node.domain}::${node.op}`;
  const constant = node.op === 'Constant' && node.domain === '' ? node.outputs[0]?.const : null;
  if (constant && node.inputs.length === 0) return `${outputs} = ${op} ${formatTensorValue(constant)}`;
  const args = node.inputs.map((v) => (v ? formatName(v.name) : '_')).join(', ');
  const names = [...node.attributes.keys()].sort(compareStrings);
  const attrs = names.map((name) => `${name}=${formatAttribute(node.attributes.get(name)!.attr)}`);
  const attrText = attrs.length > 0 ? ` {${attrs.join(', ')}}` : '';
  return `${outputs} = ${op}(${args})${attrText}`;
}

function formatAttribute(a: Attribute): string {
  switch (a.kind) {
    case 'int': return a.value.toString();
    case 'float': return formatFloat(a.value);
    case 'string': return JSON.stringify(utf8.decode(a.value));
    case 'ints': return `[${a.value.map((v) => v.toString()).join(',')}]`;
    case 'floats': return `[${a.value.map(formatFloat).join(',')}]`;
    case 'strings': return `[${a.value.map((s) => JSON.stringify(utf8.decode(s))).join(',')}]`;
    case 'tensor': return formatTensorAttribute(a.value);
    case 'tensors': return `[${a.value.map(formatTensorAttribute).join(', ')}]`;
    case 'opaque': return a.summary || 'opaque';
  }
}

function formatTensorAttribute(t: Tensor): string {
  return `${dtypeName(t.dtype)}[${t.dims.join(',')}] ${formatTensorValue(t)}`;
}

/** Up to 6 significant digits, one spelling per value. */
export function formatFloat(x: number): string {
  if (Number.isNaN(x)) return 'nan';
  if (x === Infinity) return 'inf';
  if (x === -Infinity) return '-inf';
  if (Object.is(x, -0)) return '-0';
  const [mantissa, exponent] = x.toPrecision(6).split('e') as [string, string | undefined];
  const trimmed = mantissa.includes('.') ? mantissa.replace(/\.?0+$/, '') : mantissa;
  return exponent === undefined ? trimmed : `${trimmed}e${exponent}`;
}

/** The value part of an init line: inline elements, a content hash, or `<bad data>`. */
export function formatTensorValue(t: Tensor): string {
  try {
    const bits = dtypeBits(t.dtype);
    if (t.storage.kind === 'raw' && bits > 0 && t.storage.bytes.byteLength !== Math.ceil((t.size * bits) / 8)) {
      return '<bad data>';
    }
    const scalar = t.dims.length === 0;
    const small = t.size <= INLINE_LIMIT;
    if (small) {
      const elements = inlineElements(t);
      if (elements) return scalar && elements.length === 1 ? elements[0]! : `[${elements.join(', ')}]`;
    }
    return `#${contentHash(t)}`;
  } catch {
    return '<bad data>';
  }
}

function inlineElements(t: Tensor): string[] | null {
  switch (t.dtype) {
    case DataType.FLOAT: case DataType.DOUBLE:
      return checkedCount(t, t.numbers().map(formatFloat));
    case DataType.FLOAT16:
      return checkedCount(t, Array.from(t.data() as Uint16Array, (bits) => formatFloat(halfToNumber(bits))));
    case DataType.BFLOAT16:
      return checkedCount(t, Array.from(t.data() as Uint16Array, (bits) => formatFloat(bfloat16ToNumber(bits))));
    case DataType.INT8: case DataType.UINT8: case DataType.INT16: case DataType.UINT16:
    case DataType.INT32: case DataType.UINT32: case DataType.INT64: case DataType.UINT64:
      return checkedCount(t, t.bigints().map((v) => v.toString()));
    case DataType.BOOL:
      return checkedCount(t, Array.from(t.data() as Uint8Array, (v) => (v ? 'true' : 'false')));
    case DataType.STRING: {
      const s = t.storage;
      if (s.kind !== 'string') return null;
      return checkedCount(t, s.values.map((bytes) => JSON.stringify(utf8.decode(bytes))));
    }
    default:
      return null;
  }
}

/** Decoded elements must match the dims; otherwise the tensor is malformed. */
function checkedCount(t: Tensor, elements: string[]): string[] {
  if (elements.length !== t.size) throw new Error('element count does not match dims');
  return elements;
}

function contentHash(t: Tensor): string {
  const hash = createHash('sha256');
  const s = t.storage;
  if (s.kind === 'string') {
    // strings have no raw form: hash each one with its length so boundaries count
    for (const bytes of s.values) {
      hash.update(`${bytes.byteLength}:`);
      hash.update(bytes);
    }
  } else {
    hash.update(t.rawBytes());
  }
  return hash.digest('hex').slice(0, 8);
}

function halfToNumber(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const fraction = bits & 0x3ff;
  if (exponent === 0) return sign * fraction * 2 ** -24;
  if (exponent === 0x1f) return fraction ? NaN : sign * Infinity;
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
}

function bfloat16ToNumber(bits: number): number {
  const view = new DataView(new ArrayBuffer(4));
  view.setUint32(0, bits << 16);
  return view.getFloat32(0);
}
