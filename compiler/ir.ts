// The in-memory model every pass works on, shaped after onnx_ir and trimmed: values know their
// producer and every use, nodes own their outputs, graphs keep nodes topologically sorted.
// Parts the IR does not model (node metadata, function bodies, subgraph bodies, training info)
// are carried as codec-owned `extra` objects and written back untouched.

import { Tensor } from './tensor.js';

/** A dimension: a number, a symbol (`N`, `batch`), or null when unknown. */
export type Dim = number | string | null;

export interface TensorType {
  kind: 'tensor';
  elemType: number;
  /** null when even the rank is unknown. */
  shape: Dim[] | null;
  denotation?: string;
}

/** Sequence, map, optional and sparse types are carried opaquely by the codec. */
export interface OpaqueType {
  kind: 'opaque';
  proto: unknown;
}

export type ValueType = TensorType | OpaqueType;

export interface Use {
  node: Node;
  /** Input index; a negative index -k-1 marks the k-th capture of a subgraph attribute. */
  index: number;
}

export class Value {
  name: string;
  type: ValueType | null;
  /** Constant data: initializers and Constant-node outputs carry it. */
  const: Tensor | null = null;
  producer: Node | null = null;
  readonly uses: Use[] = [];
  docString = '';
  /** Codec-owned leftovers of the value_info message. */
  extra: unknown = undefined;
  /** True when the source model listed this value in value_info. */
  declaredType = false;

  constructor(name: string, type: ValueType | null = null) {
    this.name = name;
    this.type = type;
  }

  get tensorType(): TensorType | null {
    return this.type && this.type.kind === 'tensor' ? this.type : null;
  }

  get shape(): Dim[] | null {
    return this.tensorType?.shape ?? null;
  }

  get rank(): number | null {
    return this.shape?.length ?? null;
  }

  get elemType(): number | null {
    return this.tensorType?.elemType ?? null;
  }

  /** True for initializers (no producer, constant data). */
  get isInitializer(): boolean {
    return this.const !== null && this.producer === null;
  }

  /** Nodes consuming this value, in use order, without repeats. */
  consumers(): Node[] {
    const seen = new Set<Node>();
    for (const u of this.uses) seen.add(u.node);
    return [...seen];
  }
}

export type Attribute =
  | { kind: 'float'; value: number }
  | { kind: 'int'; value: bigint }
  | { kind: 'string'; value: Uint8Array }
  | { kind: 'tensor'; value: Tensor }
  | { kind: 'floats'; value: number[] }
  | { kind: 'ints'; value: bigint[] }
  | { kind: 'strings'; value: Uint8Array[] }
  | { kind: 'tensors'; value: Tensor[] }
  /** Subgraphs, sparse tensors, type protos and references: carried opaquely. */
  | { kind: 'opaque'; value: unknown; summary: string };

export interface AttributeEntry {
  attr: Attribute;
  /** Codec-owned leftovers (doc string, ref_attr_name). */
  extra?: unknown;
}

const utf8 = new TextDecoder();
const utf8Encoder = new TextEncoder();

export class Node {
  op: string;
  domain: string;
  name: string;
  docString = '';
  readonly attributes = new Map<string, AttributeEntry>();
  readonly inputs: (Value | null)[] = [];
  readonly outputs: Value[] = [];
  /** Outer-scope values read by subgraph attributes (If/Loop/Scan bodies). */
  readonly captures: Value[] = [];
  /** Codec-owned leftovers (metadata_props, overload, device configurations). */
  extra: unknown = undefined;
  graph: Graph | null = null;

  constructor(op: string, domain = '', name = '') {
    this.op = op;
    this.domain = domain;
    this.name = name;
  }

  /** Set input `index` (appending nulls as needed), keeping both use-lists right. */
  setInput(index: number, value: Value | null): void {
    while (this.inputs.length <= index) this.inputs.push(null);
    const old = this.inputs[index];
    if (old === value) return;
    if (old) removeUse(old, this, index);
    this.inputs[index] = value;
    if (value) value.uses.push({ node: this, index });
  }

  /** Drop trailing inputs from `count` on, releasing their uses. */
  truncateInputs(count: number): void {
    for (let i = this.inputs.length - 1; i >= count; i--) {
      const v = this.inputs[i];
      if (v) removeUse(v, this, i);
      this.inputs.pop();
    }
  }

  addCapture(value: Value): void {
    this.captures.push(value);
    value.uses.push({ node: this, index: -this.captures.length });
  }

  /** Create and own a new output value. */
  addOutput(name: string, type: ValueType | null = null): Value {
    const v = new Value(name, type);
    v.producer = this;
    this.outputs.push(v);
    return v;
  }

  /** Detach every input and capture (before the node is dropped). */
  detachInputs(): void {
    for (let i = 0; i < this.inputs.length; i++) {
      const v = this.inputs[i];
      if (v) removeUse(v, this, i);
    }
    this.inputs.length = 0;
    for (let k = 0; k < this.captures.length; k++) removeUse(this.captures[k]!, this, -k - 1);
    this.captures.length = 0;
  }

  // ---- attribute helpers ----

  attr(name: string): Attribute | undefined {
    return this.attributes.get(name)?.attr;
  }

  attrInt(name: string, fallback: number): number;
  attrInt(name: string): number | undefined;
  attrInt(name: string, fallback?: number): number | undefined {
    const a = this.attr(name);
    if (a?.kind === 'int') return Number(a.value);
    return fallback;
  }

  attrInts(name: string): number[] | undefined {
    const a = this.attr(name);
    if (a?.kind === 'ints') return a.value.map(Number);
    return undefined;
  }

  attrFloat(name: string, fallback: number): number;
  attrFloat(name: string): number | undefined;
  attrFloat(name: string, fallback?: number): number | undefined {
    const a = this.attr(name);
    if (a?.kind === 'float') return a.value;
    return fallback;
  }

  attrFloats(name: string): number[] | undefined {
    const a = this.attr(name);
    return a?.kind === 'floats' ? a.value : undefined;
  }

  attrString(name: string, fallback: string): string;
  attrString(name: string): string | undefined;
  attrString(name: string, fallback?: string): string | undefined {
    const a = this.attr(name);
    if (a?.kind === 'string') return utf8.decode(a.value);
    return fallback;
  }

  attrTensor(name: string): Tensor | undefined {
    const a = this.attr(name);
    return a?.kind === 'tensor' ? a.value : undefined;
  }

  setAttr(name: string, attr: Attribute): void {
    const prev = this.attributes.get(name);
    this.attributes.set(name, { attr, extra: prev?.extra });
  }

  setInt(name: string, value: number | bigint): void {
    this.setAttr(name, { kind: 'int', value: BigInt(value) });
  }

  setInts(name: string, values: readonly (number | bigint)[]): void {
    this.setAttr(name, { kind: 'ints', value: values.map((v) => BigInt(v)) });
  }

  setFloat(name: string, value: number): void {
    this.setAttr(name, { kind: 'float', value });
  }

  setFloats(name: string, values: readonly number[]): void {
    this.setAttr(name, { kind: 'floats', value: [...values] });
  }

  setString(name: string, value: string): void {
    this.setAttr(name, { kind: 'string', value: utf8Encoder.encode(value) });
  }

  /** A short label for messages: `Conv "conv1"` or `Conv (#3)`. */
  label(): string {
    return this.name ? `${this.op} "${this.name}"` : `${this.op} (output ${this.outputs[0]?.name ?? '?'})`;
  }
}

function removeUse(value: Value, node: Node, index: number): void {
  const i = value.uses.findIndex((u) => u.node === node && u.index === index);
  if (i < 0) throw new Error(`use-list of ${value.name} lacks ${node.op} input ${index}`);
  value.uses.splice(i, 1);
}

export class Graph {
  name = '';
  docString = '';
  inputs: Value[] = [];
  outputs: Value[] = [];
  /** Initializers in file order; each has `const` set and no producer. */
  initializers: Value[] = [];
  nodes: Node[] = [];
  /** Codec-owned leftovers (sparse initializers, quantization annotations, metadata). */
  extra: unknown = undefined;
  private usedNames = new Set<string>();
  private nameCounter = 0;

  /** Register a name as taken (the codec calls this for every name it reads). */
  claimName(name: string): void {
    if (name) this.usedNames.add(name);
  }

  /** A fresh name starting with `base`, unique in this graph. */
  uniqueName(base: string): string {
    let name = base;
    while (this.usedNames.has(name)) name = `${base}_${++this.nameCounter}`;
    this.usedNames.add(name);
    return name;
  }

  /** Append (or insert before `before`) a node; claims its output names. */
  addNode(node: Node, before?: Node): Node {
    node.graph = this;
    for (const o of node.outputs) this.claimName(o.name);
    if (node.name) this.claimName(node.name);
    if (before) {
      const at = this.nodes.indexOf(before);
      if (at < 0) throw new Error(`addNode: ${before.label()} is not in the graph`);
      this.nodes.splice(at, 0, node);
    } else {
      this.nodes.push(node);
    }
    return node;
  }

  /** Remove a node whose outputs are unused; refuses otherwise. */
  removeNode(node: Node): void {
    for (const o of node.outputs) {
      if (o.uses.length > 0) throw new Error(`removeNode: ${o.name} of ${node.label()} is still used by ${o.uses.length} node(s)`);
      if (this.outputs.includes(o)) throw new Error(`removeNode: ${o.name} of ${node.label()} is a graph output`);
    }
    const at = this.nodes.indexOf(node);
    if (at < 0) throw new Error(`removeNode: ${node.label()} is not in the graph`);
    node.detachInputs();
    this.nodes.splice(at, 1);
    node.graph = null;
  }

  addInitializer(name: string, tensor: Tensor, exactName = false): Value {
    const finalName = exactName ? name : this.uniqueName(name);
    if (exactName) this.claimName(name);
    const v = new Value(finalName, { kind: 'tensor', elemType: tensor.dtype, shape: [...tensor.dims] });
    tensor.name = finalName;
    v.const = tensor;
    this.initializers.push(v);
    return v;
  }

  /** Replace the data of a constant value (initializer or Constant-node output). */
  setConstant(value: Value, tensor: Tensor): void {
    tensor.name = value.name;
    value.const = tensor;
    value.type = { kind: 'tensor', elemType: tensor.dtype, shape: [...tensor.dims] };
  }

  /** Drop initializers no node, capture or graph output uses. */
  removeUnusedInitializers(): number {
    const before = this.initializers.length;
    this.initializers = this.initializers.filter((v) => v.uses.length > 0 || this.outputs.includes(v) || this.inputs.includes(v));
    return before - this.initializers.length;
  }

  /** Point every use of `oldValue` (and graph outputs) at `newValue`. */
  replaceAllUses(oldValue: Value, newValue: Value, opts: { outputs?: boolean } = {}): void {
    for (const use of [...oldValue.uses]) {
      if (use.index >= 0) {
        use.node.setInput(use.index, newValue);
      } else {
        const k = -use.index - 1;
        use.node.captures[k] = newValue;
        oldValue.uses.splice(oldValue.uses.indexOf(use), 1);
        newValue.uses.push(use);
      }
    }
    if (opts.outputs) {
      this.outputs = this.outputs.map((o) => (o === oldValue ? newValue : o));
    }
  }

  /** Every value reachable by name: inputs, initializers and node outputs. */
  valuesByName(): Map<string, Value> {
    const map = new Map<string, Value>();
    for (const v of this.inputs) map.set(v.name, v);
    for (const v of this.initializers) map.set(v.name, v);
    for (const n of this.nodes) for (const o of n.outputs) if (o.name) map.set(o.name, o);
    return map;
  }

  /** Remove nodes whose outputs reach no graph output (and have no side effects known to us). */
  removeDeadNodes(): number {
    let removed = 0;
    for (let i = this.nodes.length - 1; i >= 0; i--) {
      const node = this.nodes[i]!;
      const live = node.outputs.some((o) => o.uses.length > 0 || this.outputs.includes(o));
      if (!live) {
        this.removeNode(node);
        removed++;
      }
    }
    return removed;
  }

  /**
   * Re-sort nodes topologically, keeping the current order wherever it is already valid.
   * Returns the nodes on a cycle when there is one (and leaves the order unchanged).
   */
  sortTopologically(): Node[] | null {
    const position = new Map<Node, number>();
    this.nodes.forEach((n, i) => position.set(n, i));
    const producerPosition = (v: Value | null): number => (v?.producer ? (position.get(v.producer) ?? -1) : -1);
    const inOrder = this.nodes.every((n, i) => [...n.inputs, ...n.captures].every((v) => producerPosition(v) < i));
    if (inOrder) return null;
    // Kahn's algorithm, always taking the earliest ready node so valid stretches keep their order.
    const pending = new Map<Node, number>();
    for (const n of this.nodes) {
      let count = 0;
      for (const v of [...n.inputs, ...n.captures]) if (producerPosition(v) >= 0) count++;
      pending.set(n, count);
    }
    const ready: Node[] = this.nodes.filter((n) => pending.get(n) === 0);
    const order: Node[] = [];
    while (ready.length > 0) {
      const n = ready.shift()!;
      order.push(n);
      for (const o of n.outputs) {
        for (const u of o.uses) {
          const left = pending.get(u.node);
          if (left === undefined) continue;
          pending.set(u.node, left - 1);
          if (left - 1 === 0) {
            const at = ready.findIndex((r) => position.get(r)! > position.get(u.node)!);
            ready.splice(at < 0 ? ready.length : at, 0, u.node);
          }
        }
      }
    }
    if (order.length !== this.nodes.length) {
      return this.nodes.filter((n) => (pending.get(n) ?? 0) > 0);
    }
    this.nodes = order;
    return null;
  }
}

export class Model {
  irVersion = 8n;
  /** domain ('' for the default domain) → version */
  opsetImports = new Map<string, bigint>();
  producerName = '';
  producerVersion = '';
  domain = '';
  modelVersion = 0n;
  docString = '';
  metadataProps: [string, string][] = [];
  graph: Graph;
  /** Codec-owned leftovers: functions, training info, device configuration. */
  extra: unknown = undefined;
  /** Folder of the file the model was read from (for external data); null when built in memory. */
  baseDir: string | null = null;

  constructor(graph: Graph = new Graph()) {
    this.graph = graph;
  }

  /** Opset version of a domain (default domain unless given); 0 when not imported. */
  opset(domain = ''): number {
    const v = this.opsetImports.get(domain) ?? (domain === '' ? this.opsetImports.get('ai.onnx') : undefined);
    return v === undefined ? 0 : Number(v);
  }
}

export function tensorType(elemType: number, shape: Dim[] | null): TensorType {
  return { kind: 'tensor', elemType, shape };
}
