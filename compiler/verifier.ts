// Structural checks on the IR, run on every model read from a user and after every transform.
// A model read from a user that fails is the user's problem (a UserError with a stable code);
// a model a pass produced that fails is our bug (a plain Error naming the step).
//
// What holds after a successful check:
//  - every node input and capture is a graph input, an initializer or an output of an earlier
//    node (so the node list is topologically sorted);
//  - every value has at most one producer, node outputs point back at their node, and no two
//    values share a name;
//  - use-lists and input slots agree exactly: each slot holding a value appears once in that
//    value's uses, and each use names a slot of a node in this graph that holds the value;
//  - graph outputs are defined, initializers carry data and have no producer;
//  - default-domain nodes match their op's signature at the model's opset (op-schemas.ts).
// A model read from a user must also be one a runtime can load (checked in 'input' mode): it
// imports a released default-domain opset and every domain its nodes use, every default-domain
// op exists at that opset (onnx-ops.ts), and a Conv's input channels (where known) match its
// weight: C = W.dims[1] · group for Conv, C = W.dims[0] for ConvTranspose.
//
// One pass over nodes and one over use-lists: O(nodes + edges), a few milliseconds for models
// with thousands of nodes. Subgraph bodies are opaque to the IR and are not checked here.

import { ErrorCodes, userError, type ErrorCode } from './diagnostics.js';
import type { Graph, Model, Node, TensorType, Value } from './ir.js';
import { shapeMismatches } from './shape-inference.js';
import { MAX_OPSET, opIntroducedIn } from './onnx-ops.js';
import { opSchema, type OpSchema } from './op-schemas.js';
import { DataType, dtypeShortName } from './tensor.js';

export interface VerifyOptions {
  /** 'input': the model came from a user (UserError); 'pass': a step produced it (internal error). */
  mode: 'input' | 'pass';
  /** The pipeline step that produced the model (mode 'pass'). */
  step?: string;
  /** Where the model came from, for messages (a file name). */
  source?: string;
}

export interface GraphProblem {
  code: ErrorCode;
  message: string;
  expected: string;
  found: string;
  hint: string;
}

function problemError(p: GraphProblem, opts: VerifyOptions): Error {
  if (opts.mode === 'input') {
    const message = opts.source ? `${opts.source}: ${p.message}` : p.message;
    return userError(p.code, message, { expected: p.expected, found: p.found, hint: p.hint });
  }
  const step = opts.step ?? '(unnamed step)';
  return new Error(
    `verifier failed after step ${step}: ${p.message} (expected ${p.expected}; found ${p.found}); ` +
      `run with --print-before ${step} to see the graph the step received`,
  );
}

/** Check a whole model; throws on the first problem. */
export function verifyModel(model: Model, opts: VerifyOptions): void {
  if (opts.mode === 'input') {
    const p = findImportProblem(model);
    if (p) throw problemError(p, opts);
  }
  verifyGraph(model.graph, model.opset(''), opts);
  if (opts.mode === 'input') verifyShapes(model, opts);
  else verifyDeclaredTypes(model, opts);
}

/** After a transform: the types the pass left on values agree with a fresh inference. */
function verifyDeclaredTypes(model: Model, opts: VerifyOptions): void {
  const [m] = shapeMismatches(model);
  if (!m) return;
  const show = (t: TensorType): string => `${dtypeShortName[t.elemType] ?? t.elemType}[${t.shape ? t.shape.map((d) => d ?? '?').join(',') : '*'}]`;
  throw problemError({
    code: ErrorCodes.BAD_NODE,
    message: `${m.node.label()} output ${JSON.stringify(m.output.name)} has a type inference contradicts`,
    expected: show(m.inferred),
    found: show(m.declared),
    hint: 'a pass left a stale type: refresh shapes after changing them',
  }, opts);
}

const isDefaultDomain = (domain: string): boolean => domain === '' || domain === 'ai.onnx';

/** Opset imports a runtime needs: a released default opset, every used domain imported, known ops. */
export function findImportProblem(model: Model): GraphProblem | null {
  const nodes = model.graph.nodes;
  const hasDefault = model.opsetImports.has('') || model.opsetImports.has('ai.onnx');
  const reexport = 're-export the model with its opset imports (e.g. torch.onnx.export(..., opset_version=17))';
  if (!hasDefault && (model.opsetImports.size === 0 || nodes.some((n) => isDefaultDomain(n.domain)))) {
    return {
      code: ErrorCodes.BAD_OPSET,
      message: 'the model imports no default-domain (ai.onnx) opset',
      expected: `an opset_import entry for the default domain, version 1 to ${MAX_OPSET}`,
      found: model.opsetImports.size === 0 ? 'no opset_import entries' : `imports only ${[...model.opsetImports.keys()].join(', ')}`,
      hint: reexport,
    };
  }
  const opset = model.opset('');
  if (hasDefault && (opset < 1 || opset > MAX_OPSET)) {
    return {
      code: ErrorCodes.BAD_OPSET,
      message: `the model imports default-domain opset ${opset}, which no released ONNX runtime supports`,
      expected: `default-domain opset 1 to ${MAX_OPSET}`,
      found: `opset ${opset}`,
      hint: `re-export the model at a released opset (${MAX_OPSET} or older)`,
    };
  }
  for (let i = 0; i < nodes.length; i++) {
    const node = nodes[i]!;
    if (isDefaultDomain(node.domain)) {
      const since = opIntroducedIn(node.op);
      if (since === undefined || since > opset) {
        return {
          code: ErrorCodes.UNKNOWN_OP,
          message: since === undefined
            ? `${node.label()} (node ${i}) is not an ONNX operator`
            : `${node.label()} (node ${i}) needs opset ${since}, but the model imports opset ${opset}`,
          expected: since === undefined ? 'an operator of the ONNX specification (or a node in a custom domain)' : `opset ${since} or newer for ${node.op}`,
          found: since === undefined ? `op ${JSON.stringify(node.op)} in the default domain` : `opset ${opset}`,
          hint: since === undefined ? 'check the op name, or give custom ops their own domain' : `re-export the model at opset ${since} or newer`,
        };
      }
    } else if (!model.opsetImports.has(node.domain)) {
      return {
        code: ErrorCodes.BAD_OPSET,
        message: `${node.label()} (node ${i}) uses domain ${JSON.stringify(node.domain)}, which the model does not import`,
        expected: `an opset_import entry for ${JSON.stringify(node.domain)}`,
        found: `imports: ${[...model.opsetImports].map(([d, v]) => `${d || 'ai.onnx'} ${v}`).join(', ')}`,
        hint: 'every domain a node uses must be listed in the model\'s opset_import; re-export the model',
      };
    }
  }
  return null;
}

/**
 * Channel agreement of Conv and ConvTranspose where the input's channel count is known (declared
 * shapes, or after shape inference). Throws like verifyModel.
 */
export function verifyShapes(model: Model, opts: VerifyOptions): void {
  const nodes = model.graph.nodes;
  for (let i = 0; i < nodes.length; i++) {
    const node = nodes[i]!;
    if (!isDefaultDomain(node.domain) || (node.op !== 'Conv' && node.op !== 'ConvTranspose')) continue;
    const channels = node.inputs[0]?.shape?.[1];
    const w = node.inputs[1];
    const wDims = w?.const?.dims ?? w?.shape;
    if (typeof channels !== 'number' || !wDims || wDims.length < 3) continue;
    const group = node.attrInt('group', 1);
    const wanted = node.op === 'Conv' ? wDims[1] : wDims[0];
    if (typeof wanted !== 'number') continue;
    const expectedChannels = node.op === 'Conv' ? wanted * group : wanted;
    if (channels === expectedChannels) continue;
    const schema = opSchema(node.op, '', model.opset(''));
    const found = `${channels} input channels; weight ${w!.name} is [${wDims.join(',')}]${group !== 1 ? `, group ${group}` : ''}`;
    const expected = node.op === 'Conv'
      ? `input channels = weight dims[1] × group = ${wanted} × ${group} = ${expectedChannels}`
      : `input channels = weight dims[0] = ${wanted}`;
    const problem: GraphProblem = schema
      ? nodeProblem(node, i, schema, model.opset(''), 'reads a different number of channels than its weight has', expected, found)
      : { code: ErrorCodes.BAD_NODE, message: `${node.label()} (node ${i}) reads a different number of channels than its weight has`, expected, found, hint: 're-export the model' };
    throw problemError(problem, opts);
  }
}

const quote = (v: Value): string => JSON.stringify(v.name);

/** `input k`, or `capture k` for the negative index -k-1 use-lists give captures. */
const slotName = (index: number): string => (index >= 0 ? `input ${index}` : `capture ${-index - 1}`);

/** Check one graph at the given default-domain opset; throws on the first problem. */
export function verifyGraph(graph: Graph, opset: number, opts: VerifyOptions): void {
  const problem = findProblem(graph, opset);
  if (problem) throw problemError(problem, opts);
}

/** The first problem in the graph, or null when it is well-formed. */
export function findProblem(graph: Graph, opset: number): GraphProblem | null {
  const structural = (message: string, expected: string, found: string, hint: string): GraphProblem => ({
    code: ErrorCodes.BAD_GRAPH, message, expected, found, hint,
  });
  const reexport = 'the model is malformed; re-export it';

  const position = new Map<Node, number>();
  for (let i = 0; i < graph.nodes.length; i++) {
    const node = graph.nodes[i]!;
    if (position.has(node)) {
      return structural(`${node.label()} is listed twice in the graph`, 'each node once', `positions ${position.get(node)} and ${i}`, reexport);
    }
    if (node.graph !== graph) {
      return structural(`${node.label()} (node ${i}) does not belong to this graph`, 'node.graph to be the graph that lists it', node.graph ? 'another graph' : 'no graph', 'add nodes with Graph.addNode');
    }
    position.set(node, i);
  }

  // Values available so far, in definition order; the use-list check walks them at the end.
  const defined = new Set<Value>();
  const byName = new Map<string, Value>();
  // `what` is a function so the common (passing) path builds no strings
  const claimName = (v: Value, what: () => string): GraphProblem | null => {
    if (v.name === '') return null;
    const other = byName.get(v.name);
    if (other && other !== v) {
      return structural(`value ${quote(v)} is defined twice`, 'unique value names', `${what()} named ${quote(v)} besides an earlier value of that name`, 'each value must be written by exactly one node, input or initializer');
    }
    byName.set(v.name, v);
    return null;
  };

  for (const v of graph.inputs) {
    if (v.name === '') return structural('a graph input has no name', 'named graph inputs', 'an empty name', reexport);
    if (defined.has(v)) return structural(`graph input ${quote(v)} is listed twice`, 'each graph input once', 'a repeated input', reexport);
    if (v.producer) return structural(`graph input ${quote(v)} is also written by ${v.producer.label()}`, 'graph inputs without a producer', `producer ${v.producer.label()}`, reexport);
    const clash = claimName(v, () => 'a graph input');
    if (clash) return clash;
    defined.add(v);
  }
  const inputSet = new Set(graph.inputs);
  for (const v of graph.initializers) {
    if (v.name === '') return structural('an initializer has no name', 'named initializers', 'an empty name', reexport);
    if (!v.const) return structural(`initializer ${quote(v)} has no data`, 'initializers with constant data', 'no data', reexport);
    if (v.producer) return structural(`initializer ${quote(v)} is also written by ${v.producer.label()}`, 'initializers without a producer', `producer ${v.producer.label()}`, reexport);
    if (defined.has(v) && !inputSet.has(v)) return structural(`initializer ${quote(v)} is listed twice`, 'each initializer once', 'a repeated initializer', reexport);
    const clash = claimName(v, () => 'an initializer');
    if (clash) return clash;
    defined.add(v);
  }

  // How many input and capture slots hold each value; compared with use-list lengths below.
  const slotCount = new Map<Value, number>();
  /** `index` is the input slot; a negative index -k-1 is capture k (as in use-lists). */
  const checkRead = (node: Node, i: number, v: Value, index: number): GraphProblem | null => {
    if (!defined.has(v)) {
      const at = v.producer ? position.get(v.producer) : undefined;
      if (at !== undefined && at >= i) {
        return structural(`${node.label()} (node ${i}) reads ${quote(v)} before it is computed`, `${quote(v)} defined before node ${i}`, `it is written by ${v.producer!.label()} at node ${at}`, 'nodes must be in topological order; re-export the model');
      }
      return structural(`${node.label()} (node ${i}) reads ${quote(v)}, which nothing in the graph defines`, 'a graph input, an initializer or an earlier node output', `no definition of ${quote(v)} (${slotName(index)})`, reexport);
    }
    if (v.name === '') {
      return structural(`${node.label()} (node ${i}) reads an unnamed value`, 'named values in input slots', `an empty name in ${slotName(index)}`, reexport);
    }
    slotCount.set(v, (slotCount.get(v) ?? 0) + 1);
    return null;
  };

  for (let i = 0; i < graph.nodes.length; i++) {
    const node = graph.nodes[i]!;
    for (let k = 0; k < node.inputs.length; k++) {
      const v = node.inputs[k];
      if (!v) continue;
      const p = checkRead(node, i, v, k);
      if (p) return p;
    }
    for (let k = 0; k < node.captures.length; k++) {
      const p = checkRead(node, i, node.captures[k]!, -k - 1);
      if (p) return p;
    }
    for (const out of node.outputs) {
      if (defined.has(out)) {
        const first = out.producer && out.producer !== node ? out.producer.label() : 'a graph input or initializer';
        return structural(`value ${quote(out)} has more than one producer`, 'one producer per value', `${node.label()} (node ${i}) and ${first}`, 'each value must be written by exactly one node');
      }
      if (out.producer !== node) {
        return structural(`${node.label()} (node ${i}) lists output ${quote(out)} it does not own`, `the producer of ${quote(out)} to be this node`, out.producer ? out.producer.label() : 'no producer', 'create outputs with Node.addOutput');
      }
      const clash = claimName(out, () => `an output of ${node.label()}`);
      if (clash) return clash;
      defined.add(out);
    }
    if (node.domain === '' || node.domain === 'ai.onnx') {
      const schema = opSchema(node.op, '', opset);
      if (schema) {
        const p = checkSignature(node, i, schema, opset);
        if (p) return p;
      }
    }
  }

  for (const v of graph.outputs) {
    if (!defined.has(v)) {
      return structural(`graph output ${quote(v)} is not defined`, 'graph outputs that are inputs, initializers or node outputs', `no definition of ${quote(v)}`, reexport);
    }
  }

  for (const v of defined) {
    const p = checkUses(v, position, slotCount.get(v) ?? 0);
    if (p) return p;
  }
  return null;
}

function useListProblem(v: Value, slots: number, found: string): GraphProblem {
  return {
    code: ErrorCodes.BAD_GRAPH,
    message: `the use-list of ${quote(v)} does not match the nodes that read it`,
    expected: `${slots} use(s), one per input or capture slot holding ${quote(v)}`,
    found,
    hint: 'change edges with Node.setInput / Graph.replaceAllUses so use-lists stay right',
  };
}

function checkUses(v: Value, position: Map<Node, number>, slots: number): GraphProblem | null {
  // a use is keyed by node position and slot; slots are far fewer than 2^20
  const seen = v.uses.length > 1 ? new Set<number>() : null;
  for (const use of v.uses) {
    const at = position.get(use.node);
    if (at === undefined) return useListProblem(v, slots, `a use by ${use.node.label()}, which is not in the graph`);
    const held = use.index >= 0 ? use.node.inputs[use.index] : use.node.captures[-use.index - 1];
    if (held !== v) {
      return useListProblem(v, slots, `a use by ${use.node.label()} ${slotName(use.index)}, which holds ${held ? quote(held) : 'nothing'}`);
    }
    if (seen) {
      const key = at * 2 ** 21 + use.index + 2 ** 20;
      if (seen.has(key)) return useListProblem(v, slots, `${use.node.label()} ${slotName(use.index)} listed twice`);
      seen.add(key);
    }
  }
  if (v.uses.length !== slots) return useListProblem(v, slots, `${v.uses.length} use(s)`);
  return null;
}

function range(min: number, max: number): string {
  if (min === max) return String(min);
  if (max === Infinity) return `at least ${min}`;
  return `${min} to ${max}`;
}

function nodeProblem(node: Node, i: number, schema: OpSchema, opset: number, message: string, expected: string, found: string): GraphProblem {
  return {
    code: ErrorCodes.BAD_NODE,
    message: `${node.label()} (node ${i}) ${message}`,
    expected,
    found,
    hint: `see the ${node.op} operator (version ${schema.since}) in the ONNX specification; the model imports opset ${opset}`,
  };
}

function checkSignature(node: Node, i: number, schema: OpSchema, opset: number): GraphProblem | null {
  const inputs = node.inputs.length;
  if (inputs < schema.minInputs || inputs > schema.maxInputs) {
    return nodeProblem(node, i, schema, opset, `has ${inputs} input(s)`, `${range(schema.minInputs, schema.maxInputs)} inputs for ${node.op} at opset ${opset}`, `${inputs}`);
  }
  for (let k = 0; k < schema.minInputs; k++) {
    if (!node.inputs[k] && !schema.omittable.includes(k)) {
      return nodeProblem(node, i, schema, opset, `omits its required input ${k}`, `input ${k} present`, 'an empty input name');
    }
  }
  const outputs = node.outputs.length;
  if (outputs < schema.minOutputs || outputs > schema.maxOutputs) {
    return nodeProblem(node, i, schema, opset, `has ${outputs} output(s)`, `${range(schema.minOutputs, schema.maxOutputs)} outputs for ${node.op} at opset ${opset}`, `${outputs}`);
  }
  for (let k = 0; k < schema.minOutputs; k++) {
    if (node.outputs[k]!.name === '') {
      return nodeProblem(node, i, schema, opset, `omits its required output ${k}`, `output ${k} named`, 'an empty output name');
    }
  }
  for (const [name, spec] of schema.attributes) {
    const entry = node.attributes.get(name);
    if (!entry) {
      if (spec.required) return nodeProblem(node, i, schema, opset, `lacks the required attribute ${name}`, `attribute ${name} (${spec.kind})`, 'no such attribute');
      continue;
    }
    const kind = entry.attr.kind;
    // opaque attributes (subgraphs, references) cannot be told apart; graph attributes are always opaque
    if (kind !== 'opaque' && kind !== spec.kind) {
      return nodeProblem(node, i, schema, opset, `has attribute ${name} of the wrong kind`, `${name} of kind ${spec.kind}`, `kind ${kind}`);
    }
  }
  for (const k of schema.indexInputs) {
    const data = node.inputs[k]?.const;
    if (data && data.dtype !== DataType.INT64 && data.dtype !== DataType.INT32) {
      const found = dtypeShortName[data.dtype] ?? String(data.dtype);
      return nodeProblem(node, i, schema, opset, `reads input ${k} of element type ${found}`, `input ${k} of type i64 (or i32)`, found);
    }
  }
  return null;
}
