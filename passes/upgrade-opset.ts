// upgrade-opset: raise the default-domain opset of a model, rewriting every node whose signature
// or meaning changed on the way.
//
// Why: the elastic graph cuts weights with Slice nodes whose bounds are run-time tensors (inputs
// only from opset 10), pads with run-time pads (Pad inputs from 11) and uses Unsqueeze/ReduceSum
// with axes inputs (13). Models exported at older opsets are raised first.
//
// How: every default-domain node is looked up in a table of ops whose changelog between the
// model's opset and the target holds a change that matters. Changes that only add types,
// negative axes or optional attributes whose default keeps the old behaviour need nothing; the
// others are rewritten so the upgraded node computes exactly what the old one did:
//  - attributes that became inputs (Slice 10, TopK 10, Clip 11, Pad 11, Dropout 12,
//    Squeeze/Unsqueeze/ReduceSum/Split 13, the other reductions 18) become new initializers;
//  - legacy broadcasting (`broadcast`/`axis` before 7) becomes numpy broadcasting: B is aligned
//    at `axis` of A, so appending rank(A) - axis - rank(B) unit dims to B gives the same result;
//  - Softmax/LogSoftmax/Hardmax before 13 work on the 2-D view [d0*..*d(a-1), da*..*dn]: the
//    same on the last axis, otherwise Flatten(axis) → op(axis=1) → Reshape(Shape(x));
//  - Upsample (and Resize-10) keep their sampling as Resize with `asymmetric` coordinates;
//  - legacy attributes (`is_test`, `consumed_inputs`, `spatial`=1, Gemm `broadcast`) are dropped.
// Every node is planned before anything changes: a model holding a node that cannot be raised
// is refused (UserError UNSUPPORTED) and left untouched.

import { ErrorCodes, userError } from '../compiler/diagnostics.js';
import { Node, Value, type Graph, type Model } from '../compiler/ir.js';
import { OpBuilder, minIrVersion } from '../compiler/op-builder.js';
import { inferShapes } from '../compiler/shape-inference.js';
import { DataType, Tensor } from '../compiler/tensor.js';
import { floatToHalf } from '../compiler/float16.js';

/** The newest default-domain opset this pass can raise a model to. */
export const MAX_UPGRADE_TARGET = 18;

export interface UpgradeResult {
  /** False when the model already imported the target opset or a newer one. */
  upgraded: boolean;
  /** The default-domain opset the model imported before. */
  from: number;
  /** Labels of the nodes that were rewritten (`Slice "slice_1"`), in graph order. */
  converted: string[];
  /** Values another value now stands for (it took over their uses and name): old → new. */
  replaced: Map<Value, Value>;
}

interface Ctx {
  graph: Graph;
  from: number;
  target: number;
  b: OpBuilder;
  ranks: Map<Value, number>;
  elems: Map<Value, number>;
  replaced: Map<Value, Value>;
}

/** What a converter plans: the rewrite to apply once every node has been checked. */
type Apply = () => void;
type Converter = (node: Node, ctx: Ctx) => Apply | null;

/**
 * Raise the default-domain opset of `model` to `target` in place. A no-op when the model already
 * imports `target` or newer (never downgrades).
 */
export function upgradeOpset(model: Model, target: number): UpgradeResult {
  const from = model.opset('');
  if (!Number.isInteger(target) || target < 1) throw new Error(`upgradeOpset: bad target opset ${target}`);
  if (from >= target) return { upgraded: false, from, converted: [], replaced: new Map() };
  if (target > MAX_UPGRADE_TARGET) {
    throw userError(ErrorCodes.UNSUPPORTED, `cannot raise the model's opset from ${from} to ${target}`, {
      expected: `a target opset <= ${MAX_UPGRADE_TARGET}`,
      found: `opset ${target}`,
      hint: `raise the model to ${MAX_UPGRADE_TARGET} here, or use onnx.version_converter for newer opsets`,
    });
  }
  const graph = model.graph;
  const { ranks, elems } = typeFacts(model);
  const ctx: Ctx = { graph, from, target, b: new OpBuilder(graph, target), ranks, elems, replaced: new Map() };

  const plan: { node: Node; apply: Apply }[] = [];
  for (const node of graph.nodes) {
    if (node.domain !== '' && node.domain !== 'ai.onnx') continue;
    checkSubgraphs(node, ctx);
    const apply = planNode(node, ctx);
    if (apply) plan.push({ node, apply });
  }

  const converted: string[] = [];
  for (const { node, apply } of plan) {
    apply();
    converted.push(node.label());
  }
  const key = model.opsetImports.has('') || !model.opsetImports.has('ai.onnx') ? '' : 'ai.onnx';
  model.opsetImports.set(key, BigInt(target));
  const ir = BigInt(minIrVersion(target));
  if (model.irVersion < ir) model.irVersion = ir;
  return { upgraded: true, from, converted, replaced: ctx.replaced };
}

// ---------------------------------------------------------------- planning

function planNode(node: Node, ctx: Ctx): Apply | null {
  const steps: Apply[] = [];
  // consumed_inputs was removed from every op at 6
  if (node.attributes.has('consumed_inputs') && ctx.target >= 6) steps.push(() => void node.attributes.delete('consumed_inputs'));
  const convert = CONVERTERS[node.op];
  if (convert) {
    const step = convert(node, ctx);
    if (step) steps.push(step);
  } else if (REMOVED_AT_10.has(node.op) && ctx.target >= 10) {
    refuse(node, ctx, `${node.op} was an experimental op and was removed at opset 10`, 'rewrite it with standard ops before upgrading');
  } else if (!SAFE.has(node.op)) {
    refuse(node, ctx, `slicec does not know how ${node.op} changed between these opsets`, 'upgrade the model with onnx.version_converter');
  }
  if (steps.length === 0) return null;
  return () => steps.forEach((s) => s());
}

function refuse(node: Node, ctx: Ctx, why: string, hint: string): never {
  throw userError(ErrorCodes.UNSUPPORTED, `cannot raise opset of ${node.op} from ${ctx.from} to ${ctx.target}: ${why}`, {
    expected: `a ${node.op} node that can be expressed at opset ${ctx.target}`,
    found: node.label(),
    hint,
  });
}

const crosses = (ctx: Ctx, v: number): boolean => ctx.from < v && ctx.target >= v;

/** Ops with attributes or subgraph bodies that hold default-domain nodes of the same opset. */
function checkSubgraphs(node: Node, ctx: Ctx): void {
  for (const { attr } of node.attributes.values()) {
    if (attr.kind !== 'opaque') continue;
    const ap = attr.value as { g?: GraphLike; graphs?: GraphLike[] };
    const graphs = [...(ap.g ? [ap.g] : []), ...(ap.graphs ?? [])];
    for (const g of graphs) {
      const bad = unsafeBodyOp(g, ctx);
      if (bad) {
        refuse(node, ctx, `its subgraph holds ${bad}, which slicec cannot rewrite inside a subgraph`, 'upgrade the model with onnx.version_converter');
      }
    }
  }
}

function bodyOpUnchanged(op: string, ctx: Ctx): boolean {
  if (SAFE.has(op) && !CHANGES[op]) return true;
  const points = CHANGES[op];
  return !!points && !points.some((p) => crosses(ctx, p));
}

interface GraphLike {
  node: { opType: string; domain: string; attribute: { g?: GraphLike; graphs?: GraphLike[] }[] }[];
}

function unsafeBodyOp(g: GraphLike, ctx: Ctx): string | null {
  for (const n of g.node) {
    if (n.domain !== '' && n.domain !== 'ai.onnx') continue;
    if (!bodyOpUnchanged(n.opType, ctx)) return n.opType;
    for (const a of n.attribute) {
      for (const sub of [...(a.g ? [a.g] : []), ...(a.graphs ?? [])]) {
        const bad = unsafeBodyOp(sub, ctx);
        if (bad) return bad;
      }
    }
  }
  return null;
}

/** Rank and element type of every value shape inference can tell, without keeping its types. */
function typeFacts(model: Model): { ranks: Map<Value, number>; elems: Map<Value, number> } {
  const saved = new Map<Value, Value['type']>();
  for (const v of model.graph.initializers) saved.set(v, v.type);
  for (const n of model.graph.nodes) for (const o of n.outputs) saved.set(o, o.type);
  const ranks = new Map<Value, number>();
  const elems = new Map<Value, number>();
  try {
    inferShapes(model);
  } catch {
    // best effort: converters that need a rank refuse when it is unknown
  }
  const note = (v: Value): void => {
    const t = v.tensorType;
    if (t?.shape) ranks.set(v, t.shape.length);
    if (t?.elemType) elems.set(v, t.elemType);
  };
  for (const v of model.graph.inputs) note(v);
  for (const v of saved.keys()) note(v);
  for (const [v, t] of saved) v.type = t;
  return { ranks, elems };
}

// ---------------------------------------------------------------- helpers

function intsAttr(node: Node, name: string): bigint[] | undefined {
  const a = node.attr(name);
  if (a?.kind === 'ints') return a.value;
  if (a?.kind === 'int') return [a.value];
  return undefined;
}

function floatsAttr(node: Node, name: string): number[] | undefined {
  const a = node.attr(name);
  if (a?.kind === 'floats') return a.value;
  if (a?.kind === 'float') return [a.value];
  return undefined;
}

function baseName(node: Node): string {
  return node.name || node.outputs[0]?.name || node.op;
}

function int64Input(ctx: Ctx, node: Node, values: readonly bigint[], role: string, dims: number[] = [values.length]): Value {
  return ctx.graph.addInitializer(`${baseName(node)}_${role}`, Tensor.int64(dims, values));
}


/** A scalar initializer of a float dtype (float32 when the dtype is unknown). */
function floatScalar(ctx: Ctx, node: Node, dtype: number | undefined, value: number, role: string): Value {
  const name = `${baseName(node)}_${role}`;
  switch (dtype) {
    case DataType.DOUBLE:
      return ctx.graph.addInitializer(name, Tensor.fromTyped(DataType.DOUBLE, [], Float64Array.of(value)));
    case DataType.FLOAT16:
      return ctx.graph.addInitializer(name, Tensor.fromTyped(DataType.FLOAT16, [], Uint16Array.of(floatToHalf(value))));
    case DataType.FLOAT:
    case undefined:
      return ctx.graph.addInitializer(name, Tensor.float32([], [value]));
    default:
      refuse(node, ctx, `its input has data type ${dtype}, which the old ${node.op} did not accept`, 'check the model with onnx.checker');
  }
}

/** Insert a node right after `node` (or at the end). */
function afterNode(ctx: Ctx, node: Node): Node | undefined {
  const at = ctx.graph.nodes.indexOf(node);
  return ctx.graph.nodes[at + 1];
}

/**
 * Make `newOut` stand where `oldOut` stood: every use except those by `except` and the graph
 * output slot move to it, and the two values swap names, so the name users see keeps meaning the
 * final result.
 */
function takeOver(ctx: Ctx, oldOut: Value, newOut: Value, except: Node): void {
  for (const use of [...oldOut.uses]) {
    if (use.node === except) continue;
    if (use.index >= 0) {
      use.node.setInput(use.index, newOut);
    } else {
      use.node.captures[-use.index - 1] = newOut;
      oldOut.uses.splice(oldOut.uses.indexOf(use), 1);
      newOut.uses.push(use);
    }
  }
  ctx.graph.outputs = ctx.graph.outputs.map((o) => (o === oldOut ? newOut : o));
  ctx.replaced.set(oldOut, newOut);
  const name = oldOut.name;
  oldOut.name = newOut.name;
  newOut.name = name;
  newOut.type = oldOut.type;
  newOut.docString = oldOut.docString;
  newOut.extra = oldOut.extra;
  newOut.declaredType = oldOut.declaredType;
  oldOut.type = null;
  oldOut.docString = '';
  oldOut.extra = undefined;
  oldOut.declaredType = false;
}

/** Drop outputs from `count` on (the caller checked they are unused). */
function dropOutputs(node: Node, count: number): void {
  while (node.outputs.length > count) {
    const v = node.outputs.pop()!;
    v.producer = null;
  }
}

function outputUsed(ctx: Ctx, v: Value | undefined): boolean {
  return !!v && !!v.name && (v.uses.length > 0 || ctx.graph.outputs.includes(v));
}

/** Move an ints attribute into input `index` (after the inputs before it are in place). */
function attrToInput(ctx: Ctx, node: Node, attr: string, index: number, role = attr): void {
  const values = intsAttr(node, attr);
  node.attributes.delete(attr);
  if (values !== undefined) node.setInput(index, int64Input(ctx, node, values, role));
}

// ---------------------------------------------------------------- converters

/** Legacy broadcasting (before 7) → numpy broadcasting. */
const legacyBroadcast: Converter = (node, ctx) => {
  if (!crosses(ctx, 7)) return null;
  const broadcast = node.attrInt('broadcast', 0);
  if (!node.attributes.has('broadcast') && !node.attributes.has('axis')) return null;
  if (broadcast === 0) {
    return () => {
      node.attributes.delete('broadcast');
      node.attributes.delete('axis');
    };
  }
  const a = node.inputs[0];
  const bIn = node.inputs[1];
  let unitDims = 0;
  if (node.attributes.has('axis') && a && bIn) {
    const rankA = ctx.ranks.get(a);
    const rankB = ctx.ranks.get(bIn);
    if (rankA === undefined || rankB === undefined) {
      refuse(node, ctx, 'legacy broadcasting with `axis` needs the ranks of both inputs, which are unknown', 'give the model inputs full shapes');
    }
    let axis = node.attrInt('axis', 0);
    if (axis < 0) axis += rankA;
    unitDims = rankA - axis - rankB;
    if (unitDims < 0) refuse(node, ctx, `B of rank ${rankB} does not fit at axis ${axis} of A of rank ${rankA}`, 'check the model with onnx.checker');
  }
  return () => {
    node.attributes.delete('broadcast');
    node.attributes.delete('axis');
    if (unitDims > 0 && bIn) node.setInput(1, appendUnitDims(ctx, node, bIn, ctx.ranks.get(bIn)!, unitDims));
  };
};

/** `v` with `count` trailing size-1 dims: reshaped in place when it is a constant used only here. */
function appendUnitDims(ctx: Ctx, node: Node, v: Value, rank: number, count: number): Value {
  const onlyHere = v.uses.every((u) => u.node === node) && !ctx.graph.outputs.includes(v);
  if (v.isInitializer && onlyHere && v.const) {
    const t = v.const.clone();
    t.dims = [...t.dims, ...new Array<number>(count).fill(1)];
    ctx.graph.setConstant(v, t);
    return v;
  }
  const axes = Array.from({ length: count }, (_, i) => rank + i);
  return ctx.b.unsqueeze(v, axes, { before: node, name: `${baseName(node)}/Unsqueeze` });
}

const prelu: Converter = (node, ctx) => {
  if (!crosses(ctx, 7)) return null;
  // Before 7 a 1-D slope of C values is per channel (axis 1); from 7 it broadcasts numpy-style.
  const x = node.inputs[0];
  const slope = node.inputs[1];
  if (!x || !slope) return null;
  const rankX = ctx.ranks.get(x);
  const rankS = ctx.ranks.get(slope);
  const size = slope.const?.size;
  if (rankS === 1 && size === 1) return null;
  if (rankX === undefined || rankS === undefined) {
    refuse(node, ctx, 'the ranks of X and slope are unknown, so the old per-channel slope cannot be placed', 'give the model inputs full shapes');
  }
  if (rankS !== 1 || rankX <= 2) return null;
  return () => node.setInput(1, appendUnitDims(ctx, node, slope, 1, rankX - 2));
};

const gemm: Converter = (node, ctx) => {
  if (!crosses(ctx, 7) || !node.attributes.has('broadcast')) return null;
  return () => void node.attributes.delete('broadcast');
};

const batchNorm: Converter = (node, ctx) => {
  const steps: Apply[] = [];
  if (crosses(ctx, 7) && node.attributes.has('is_test')) steps.push(() => void node.attributes.delete('is_test'));
  if (crosses(ctx, 9) && node.attributes.has('spatial')) {
    if (node.attrInt('spatial', 1) !== 1) {
      refuse(node, ctx, 'spatial=0 (per-activation statistics) was removed at opset 9', 'fold the normalization into the weights, or keep the model at its opset');
    }
    steps.push(() => void node.attributes.delete('spatial'));
  }
  if (crosses(ctx, 14) && node.outputs.length > 1) {
    if (node.outputs.slice(1).some((o) => outputUsed(ctx, o))) {
      refuse(node, ctx, 'its training-mode outputs are used; from opset 14 they need training_mode=1', 'export the model in inference mode');
    }
    steps.push(() => dropOutputs(node, 1));
  }
  if (steps.length === 0) return null;
  return () => steps.forEach((s) => s());
};

const dropout: Converter = (node, ctx) => {
  const steps: Apply[] = [];
  if (crosses(ctx, 7) && node.attributes.has('is_test')) steps.push(() => void node.attributes.delete('is_test'));
  if (crosses(ctx, 10) && node.outputs.length > 1) {
    if (outputUsed(ctx, node.outputs[1])) {
      refuse(node, ctx, 'its mask output is used; the mask changed from the input type to bool at opset 10', 'cast the mask where it is used, or drop it');
    }
    steps.push(() => dropOutputs(node, 1));
  }
  if (crosses(ctx, 12) && node.attributes.has('ratio')) {
    const ratio = node.attrFloat('ratio', 0.5);
    steps.push(() => {
      node.attributes.delete('ratio');
      node.setInput(1, ctx.graph.addInitializer(`${baseName(node)}_ratio`, Tensor.float32([], [ratio])));
    });
  }
  if (steps.length === 0) return null;
  return () => steps.forEach((s) => s());
};

const concat: Converter = (node, ctx) => {
  if (!crosses(ctx, 4) || node.attributes.has('axis')) return null;
  return () => node.setInt('axis', 1);
};

const reshape: Converter = (node, ctx) => {
  if (!crosses(ctx, 5) || !node.attributes.has('shape')) return null;
  return () => attrToInput(ctx, node, 'shape', 1);
};

const CAST_NAMES: Record<string, number> = {
  FLOAT: 1, UINT8: 2, INT8: 3, UINT16: 4, INT16: 5, INT32: 6, INT64: 7, STRING: 8, BOOL: 9, FLOAT16: 10, DOUBLE: 11, UINT32: 12, UINT64: 13,
};

const cast: Converter = (node, ctx) => {
  const to = node.attr('to');
  if (!crosses(ctx, 6) || to?.kind !== 'string') return null;
  const name = node.attrString('to', '').toUpperCase();
  const dtype = CAST_NAMES[name];
  if (dtype === undefined) refuse(node, ctx, `unknown target type "${name}"`, 'check the model with onnx.checker');
  return () => node.setInt('to', dtype);
};

const lpPool: Converter = (node, ctx) => {
  const p = node.attr('p');
  if (!crosses(ctx, 2) || p?.kind !== 'float') return null;
  if (!Number.isInteger(p.value)) refuse(node, ctx, `p=${p.value} is not an integer, which LpPool requires from opset 2`, 'keep the model at its opset');
  return () => node.setInt('p', p.value);
};

const slice: Converter = (node, ctx) => {
  if (!crosses(ctx, 10)) return null;
  return () => {
    attrToInput(ctx, node, 'starts', 1);
    attrToInput(ctx, node, 'ends', 2);
    attrToInput(ctx, node, 'axes', 3);
  };
};

const topK: Converter = (node, ctx) => {
  if (!crosses(ctx, 10)) return null;
  const k = intsAttr(node, 'k');
  if (k === undefined) refuse(node, ctx, 'it has no k attribute', 'check the model with onnx.checker');
  return () => {
    node.attributes.delete('k');
    node.setInput(1, int64Input(ctx, node, k, 'k', [1]));
  };
};

const clip: Converter = (node, ctx) => {
  if (!crosses(ctx, 11)) return null;
  const min = node.attrFloat('min');
  const max = node.attrFloat('max');
  const dtype = node.inputs[0] ? ctx.elems.get(node.inputs[0]) : undefined;
  return () => {
    node.attributes.delete('min');
    node.attributes.delete('max');
    if (min !== undefined) node.setInput(1, floatScalar(ctx, node, dtype, min, 'min'));
    if (max !== undefined) node.setInput(2, floatScalar(ctx, node, dtype, max, 'max'));
  };
};

const pad: Converter = (node, ctx) => {
  const steps: Apply[] = [];
  if (crosses(ctx, 2) && node.attributes.has('paddings')) {
    // Pad-1 `paddings` has the same [begins..., ends...] layout as `pads`
    steps.push(() => {
      node.setAttr('pads', node.attr('paddings')!);
      node.attributes.delete('paddings');
    });
  }
  if (crosses(ctx, 11)) {
    const mode = node.attrString('mode', 'constant');
    const value = node.attrFloat('value', 0);
    const dtype = node.inputs[0] ? ctx.elems.get(node.inputs[0]) : undefined;
    if (intsAttr(node, 'pads') === undefined && intsAttr(node, 'paddings') === undefined) {
      refuse(node, ctx, 'it has no pads attribute', 'check the model with onnx.checker');
    }
    steps.push(() => {
      attrToInput(ctx, node, 'pads', 1);
      node.attributes.delete('value');
      if (mode === 'constant' && value !== 0) node.setInput(2, floatScalar(ctx, node, dtype, value, 'constant_value'));
    });
  }
  if (steps.length === 0) return null;
  return () => steps.forEach((s) => s());
};

/** Squeeze/Unsqueeze/ReduceSum (13) and the other reductions (18): axes attribute → input. */
function axesToInput(since: number): Converter {
  return (node, ctx) => {
    if (!crosses(ctx, since) || !node.attributes.has('axes')) return null;
    return () => attrToInput(ctx, node, 'axes', 1);
  };
}

const split: Converter = (node, ctx) => {
  const steps: Apply[] = [];
  if (crosses(ctx, 2) && node.inputs.length > 1 && ctx.target < 13) {
    refuse(node, ctx, 'Split-1 took the sizes as a second input, which opsets 2 to 12 do not accept', 'raise the model to opset 13 or newer');
  }
  if (crosses(ctx, 13) && node.attributes.has('split')) steps.push(() => attrToInput(ctx, node, 'split', 1));
  const hasSizes = node.attributes.has('split') || (node.inputs.length > 1 && node.inputs[1] !== null);
  if (crosses(ctx, 18) && !hasSizes && !node.attributes.has('num_outputs')) {
    // equal parts: the old form required an even split, where num_outputs gives the same parts
    steps.push(() => node.setInt('num_outputs', node.outputs.length));
  }
  if (steps.length === 0) return null;
  return () => steps.forEach((s) => s());
};

/** Softmax, LogSoftmax, Hardmax: 2-D coercion before 13, one axis from 13. */
const softmaxLike: Converter = (node, ctx) => {
  if (!crosses(ctx, 13)) return null;
  const x = node.inputs[0];
  if (!x) return null;
  const axis = node.attrInt('axis', 1);
  const rank = ctx.ranks.get(x);
  if (rank !== undefined) {
    const a = axis < 0 ? axis + rank : axis;
    if (a === rank - 1) return () => node.setInt('axis', a);
  }
  // Flatten(x, axis) → op(axis=1) → Reshape(Shape(x)) computes the old 2-D form at any opset
  return () => {
    const name = baseName(node);
    const flat = ctx.b.flatten(x, axis, { before: node, name: `${name}/Flatten` });
    const shape = ctx.b.shape(x, { before: node, name: `${name}/Shape` });
    node.setInput(0, flat);
    node.setInt('axis', 1);
    const out = node.outputs[0]!;
    const back = ctx.b.reshape(out, shape, { before: afterNode(ctx, node), name: `${name}/Reshape` });
    takeOver(ctx, out, back, back.producer!);
  };
};

/** Upsample (any version) → Resize at 10 and newer; scales attribute → input at 9. */
const upsample: Converter = (node, ctx) => {
  const x = node.inputs[0];
  if (!x) return null;
  let mode = node.attrString('mode', 'nearest');
  if (mode === 'bilinear') mode = 'linear';
  if (mode !== 'nearest' && mode !== 'linear') refuse(node, ctx, `unknown mode "${mode}"`, 'check the model with onnx.checker');
  let scales: number[] | undefined;
  if (node.attributes.has('scales')) {
    scales = floatsAttr(node, 'scales');
  } else if (node.attributes.has('height_scale') || node.attributes.has('width_scale')) {
    const rank = ctx.ranks.get(x) ?? 4;
    scales = [...new Array<number>(rank - 2).fill(1), node.attrFloat('height_scale', 1), node.attrFloat('width_scale', 1)];
  }
  const scalesInput = node.inputs[1] ?? null;
  if (!scales && !scalesInput) refuse(node, ctx, 'it has no scales', 'check the model with onnx.checker');
  const makeScales = (): Value => scalesInput ?? ctx.graph.addInitializer(`${baseName(node)}_scales`, Tensor.float32([scales!.length], scales!));
  const clearAttrs = (): void => {
    for (const a of ['scales', 'height_scale', 'width_scale', 'mode']) node.attributes.delete(a);
  };
  if (ctx.target < 9) {
    if (ctx.from >= 7 || scalesInput) return null;
    return () => {
      clearAttrs();
      node.setAttr('scales', { kind: 'floats', value: scales! });
      node.setString('mode', mode);
    };
  }
  return () => {
    const s = makeScales();
    clearAttrs();
    node.truncateInputs(1);
    node.setString('mode', mode);
    if (ctx.target === 9) {
      node.setInput(1, s);
      return;
    }
    node.op = 'Resize';
    if (ctx.target === 10) {
      node.setInput(1, s);
      return;
    }
    setAsymmetric(node, mode);
    node.setInput(1, ctx.target >= 13 ? null : emptyFloats(ctx, node, 'roi'));
    node.setInput(2, s);
  };
};

/** Upsample and Resize-10 sample with asymmetric coordinates, rounding down for nearest. */
function setAsymmetric(node: Node, mode: string): void {
  node.setString('coordinate_transformation_mode', 'asymmetric');
  if (mode === 'nearest') node.setString('nearest_mode', 'floor');
}

function emptyFloats(ctx: Ctx, node: Node, role: string): Value {
  return ctx.graph.addInitializer(`${baseName(node)}_${role}`, Tensor.float32([0], []));
}

const resize: Converter = (node, ctx) => {
  const steps: Apply[] = [];
  if (crosses(ctx, 11)) {
    const mode = node.attrString('mode', 'nearest');
    const scales = node.inputs[1];
    const known = scales?.const ? scales.const.numbers() : null;
    if (mode === 'nearest' && (!known || known.some((s) => s < 1))) {
      refuse(node, ctx, 'nearest Resize-10 rounds differently when it shrinks an axis, and its scales are not all known to be >= 1', 'give the scales as a constant, or keep the model at its opset');
    }
    steps.push(() => {
      setAsymmetric(node, mode);
      node.truncateInputs(1);
      node.setInput(1, ctx.target >= 13 ? null : emptyFloats(ctx, node, 'roi'));
      node.setInput(2, scales ?? null);
    });
  }
  if (crosses(ctx, 13) && node.attrString('coordinate_transformation_mode', 'half_pixel') === 'tf_half_pixel_for_nn') {
    refuse(node, ctx, 'coordinate_transformation_mode "tf_half_pixel_for_nn" was removed at opset 13', 'keep the model at its opset');
  }
  if (steps.length === 0) return null;
  return () => steps.forEach((s) => s());
};

const scatter: Converter = (node, ctx) => {
  if (ctx.target < 11) return null;
  return () => {
    node.op = 'ScatterElements';
  };
};

const roiAlign: Converter = (node, ctx) => {
  if (!crosses(ctx, 16) || node.attributes.has('coordinate_transformation_mode')) return null;
  // RoiAlign-16 defaults to half_pixel; before it, it behaved as output_half_pixel
  return () => node.setString('coordinate_transformation_mode', 'output_half_pixel');
};

const scan: Converter = (node, ctx) => {
  if (crosses(ctx, 9)) refuse(node, ctx, 'Scan-8 has a batch axis and sequence_lens that Scan-9 dropped', 'export the model at opset 9 or newer');
  return null;
};

const meanVarianceNorm: Converter = (node, ctx) => {
  if (crosses(ctx, 9)) refuse(node, ctx, 'the experimental MeanVarianceNormalization-1 (across_channels, normalize_variance) differs from MeanVarianceNormalization-9 (axes)', 'rewrite it with ReduceMean, Sub, Mul and Sqrt');
  return null;
};

const tile: Converter = (node, ctx) => {
  if (crosses(ctx, 6) && node.inputs.length > 2) refuse(node, ctx, 'Tile-1 took tiles and axis inputs, Tile-6 takes repeats', 'export the model at opset 6 or newer');
  return null;
};

const recurrent: Converter = (node, ctx) => {
  if (!crosses(ctx, 7) || !node.attributes.has('output_sequence')) return null;
  return () => void node.attributes.delete('output_sequence');
};

/** ImageScaler (removed at 10): y = scale * x + bias[c] → Mul and Add. */
const imageScaler: Converter = (node, ctx) => {
  if (ctx.target < 10) return null;
  const x = node.inputs[0];
  if (!x) return null;
  const scale = node.attrFloat('scale', 1);
  const bias = floatsAttr(node, 'bias');
  const rank = ctx.ranks.get(x) ?? 4;
  return () => replaceWithAffine(ctx, node, x, scale, bias ?? null, rank);
};

/** Scale (removed at 10): y = scale * x. Affine (removed at 10): y = alpha * x + beta. */
const scaleOp: Converter = (node, ctx) => {
  if (ctx.target < 10) return null;
  const x = node.inputs[0];
  if (!x) return null;
  const scale = node.attrFloat('scale', 1);
  return () => replaceWithAffine(ctx, node, x, scale, null, 0);
};

const affine: Converter = (node, ctx) => {
  if (ctx.target < 10) return null;
  const x = node.inputs[0];
  if (!x) return null;
  const alpha = node.attrFloat('alpha', 1);
  const beta = node.attrFloat('beta', 0);
  return () => replaceWithAffine(ctx, node, x, alpha, [beta], 0);
};

/**
 * Replace `node` by Mul(x, scale) [→ Add(·, bias)], where a bias of C values is per channel
 * (shaped [C, 1, ...] for a tensor of `rank`) and a single value is a scalar.
 */
function replaceWithAffine(ctx: Ctx, node: Node, x: Value, scale: number, bias: number[] | null, rank: number): void {
  const name = baseName(node);
  const dtype = ctx.elems.get(x);
  const s = floatScalar(ctx, node, dtype, scale, 'scale');
  const out = node.outputs[0]!;
  let y = ctx.b.mul(x, s, { before: node, name: node.name ? node.name : `${name}/Mul` });
  if (bias) {
    const dims = bias.length === 1 ? [] : [bias.length, ...new Array<number>(Math.max(rank - 2, 0)).fill(1)];
    const tensor = dtype === DataType.DOUBLE ? Tensor.fromTyped(DataType.DOUBLE, dims, Float64Array.from(bias)) : Tensor.float32(dims, bias);
    const biasValue = ctx.graph.addInitializer(`${name}_bias`, tensor);
    y = ctx.b.add(y, biasValue, { before: node, name: `${name}/Add` });
  }
  takeOver(ctx, out, y, node);
  ctx.graph.removeNode(node);
}

const r13 = axesToInput(13);
const r18 = axesToInput(18);

const CONVERTERS: Record<string, Converter> = {
  Add: legacyBroadcast, Sub: legacyBroadcast, Mul: legacyBroadcast, Div: legacyBroadcast, Pow: legacyBroadcast,
  And: legacyBroadcast, Or: legacyBroadcast, Xor: legacyBroadcast, Equal: legacyBroadcast, Greater: legacyBroadcast,
  Less: legacyBroadcast,
  PRelu: prelu,
  Gemm: gemm,
  BatchNormalization: batchNorm,
  Dropout: dropout,
  Concat: concat,
  Reshape: reshape,
  Cast: cast,
  LpPool: lpPool,
  Slice: slice,
  TopK: topK,
  Clip: clip,
  Pad: pad,
  Squeeze: r13,
  Unsqueeze: r13,
  ReduceSum: r13,
  ReduceMean: r18, ReduceMax: r18, ReduceMin: r18, ReduceProd: r18, ReduceL1: r18, ReduceL2: r18,
  ReduceLogSum: r18, ReduceLogSumExp: r18, ReduceSumSquare: r18,
  Split: split,
  Softmax: softmaxLike, LogSoftmax: softmaxLike, Hardmax: softmaxLike,
  Upsample: upsample,
  Resize: resize,
  Scatter: scatter,
  RoiAlign: roiAlign,
  Scan: scan,
  Tile: tile,
  MeanVarianceNormalization: meanVarianceNorm,
  RNN: recurrent, GRU: recurrent, LSTM: recurrent,
  ImageScaler: imageScaler,
  Scale: scaleOp,
  Affine: affine,
};

/** Experimental ops removed at opset 10 that have no rewrite here. */
const REMOVED_AT_10 = new Set([
  'ATen', 'ConstantFill', 'Crop', 'DynamicSlice', 'GRUUnit', 'GivenTensorFill', 'ParametricSoftplus', 'ScaledTanh',
]);

/**
 * Ops whose versions up to 18 only add types, negative axes, optional inputs/outputs or
 * attributes whose defaults keep the old behaviour (plus ops introduced on the way).
 */
const SAFE = new Set([
  'Abs', 'Acos', 'Acosh', 'ArgMax', 'ArgMin', 'Asin', 'Asinh', 'Atan', 'Atanh', 'AveragePool', 'Bernoulli', 'BitShift',
  'BitwiseAnd', 'BitwiseNot', 'BitwiseOr', 'BitwiseXor', 'BlackmanWindow', 'CastLike', 'Ceil', 'Celu', 'CenterCropPad',
  'Col2Im', 'Compress', 'ConcatFromSequence', 'Constant', 'ConstantOfShape', 'Conv', 'ConvInteger', 'ConvTranspose',
  'Cos', 'Cosh', 'CumSum', 'DFT', 'DepthToSpace', 'DequantizeLinear', 'Det', 'DynamicQuantizeLinear', 'Einsum', 'Elu',
  'Erf', 'Exp', 'Expand', 'EyeLike', 'Flatten', 'Floor', 'Gather', 'GatherElements', 'GatherND', 'GlobalAveragePool',
  'GlobalLpPool', 'GlobalMaxPool', 'GreaterOrEqual', 'GridSample', 'GroupNormalization', 'HammingWindow', 'HannWindow',
  'HardSigmoid', 'HardSwish', 'Identity', 'If', 'InstanceNormalization', 'IsInf', 'IsNaN', 'LRN', 'LayerNormalization',
  'LeakyRelu', 'LessOrEqual', 'Log', 'Loop', 'LpNormalization', 'MatMul', 'MatMulInteger', 'Max', 'MaxPool',
  'MaxRoiPool', 'MaxUnpool', 'Mean', 'MelWeightMatrix', 'Min', 'Mish', 'Mod',
  'Multinomial', 'Neg', 'NegativeLogLikelihoodLoss', 'NonMaxSuppression', 'NonZero', 'Not', 'OneHot', 'Optional',
  'OptionalGetElement', 'OptionalHasElement', 'QLinearConv', 'QLinearMatMul', 'QuantizeLinear', 'RandomNormal',
  'RandomNormalLike', 'RandomUniform', 'RandomUniformLike', 'Range', 'Reciprocal', 'Relu', 'ReverseSequence', 'Round',
  'STFT', 'ScatterElements', 'ScatterND', 'Selu', 'SequenceAt', 'SequenceConstruct', 'SequenceEmpty', 'SequenceErase',
  'SequenceInsert', 'SequenceLength', 'SequenceMap', 'Shape', 'Shrink', 'Sigmoid', 'Sign', 'Sin', 'Sinh', 'Size',
  'Softplus', 'Softsign', 'SoftmaxCrossEntropyLoss', 'SpaceToDepth', 'SplitToSequence', 'Sqrt', 'StringNormalizer',
  'Sum', 'Tan', 'Tanh', 'TfIdfVectorizer', 'ThresholdedRelu', 'Transpose', 'Trilu', 'Unique', 'Where',
]);

/**
 * Opsets at which the ops with converters changed. Subgraph bodies are opaque to the IR, so a
 * body may hold such an op only when the upgrade crosses none of its changes.
 */
const CHANGES: Record<string, number[]> = {
  Add: [7], Sub: [7], Mul: [7], Div: [7], Pow: [7], And: [7], Or: [7], Xor: [7], Equal: [7], Greater: [7], Less: [7],
  PRelu: [7], Gemm: [7], BatchNormalization: [7, 9, 14], Dropout: [7, 10, 12], Concat: [4], Reshape: [5], Cast: [6],
  LpPool: [2], Slice: [10], TopK: [10], Clip: [11], Pad: [2, 11], Squeeze: [13], Unsqueeze: [13], ReduceSum: [13],
  ReduceMean: [18], ReduceMax: [18], ReduceMin: [18], ReduceProd: [18], ReduceL1: [18], ReduceL2: [18],
  ReduceLogSum: [18], ReduceLogSumExp: [18], ReduceSumSquare: [18], Split: [2, 13, 18], Softmax: [13],
  LogSoftmax: [13], Hardmax: [13], Upsample: [7, 9, 10], Resize: [11, 13], Scatter: [11], RoiAlign: [16], Scan: [9],
  Tile: [6], RNN: [7], GRU: [7], LSTM: [7], ImageScaler: [10], Scale: [10], Affine: [10], MeanVarianceNormalization: [9],
};
