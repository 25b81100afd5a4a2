import { describe, expect, it } from 'vitest';
import { ErrorCodes, UserError } from '../compiler/diagnostics.js';
import { Model, Node, Value, tensorType } from '../compiler/ir.js';
import { readModel } from '../compiler/onnx-codec.js';
import { attrDefault, opSchema } from '../compiler/op-schemas.js';
import { verifyModel } from '../compiler/verifier.js';
import { inferShapes } from '../compiler/shape-inference.js';
import { DataType, Tensor } from '../compiler/tensor.js';
import { TESTDATA_GROUPS, openwakewordModels, testdataModels } from './helpers/models.js';

/** x → Conv(w) → Relu → Reshape(shape) → y at the given opset. */
function buildModel(opset = 13) {
  const model = new Model();
  model.opsetImports.set('', BigInt(opset));
  const g = model.graph;
  const x = new Value('x', tensorType(DataType.FLOAT, [1, 3, 4, 4]));
  g.inputs.push(x);
  const w = g.addInitializer('w', Tensor.float32([2, 3, 1, 1], new Float32Array(6)), true);
  const shape = g.addInitializer('shape', Tensor.int64([2], [1, -1]), true);
  const conv = new Node('Conv', '', 'conv');
  conv.setInput(0, x);
  conv.setInput(1, w);
  conv.setInts('kernel_shape', [1, 1]);
  const convOut = conv.addOutput('conv.out');
  g.addNode(conv);
  const relu = new Node('Relu', '', 'relu');
  relu.setInput(0, convOut);
  const reluOut = relu.addOutput('relu.out');
  g.addNode(relu);
  const reshape = new Node('Reshape', '', 'reshape');
  reshape.setInput(0, reluOut);
  reshape.setInput(1, shape);
  const y = reshape.addOutput('y');
  g.addNode(reshape);
  g.outputs.push(y);
  return { model, g, x, w, shape, conv, relu, reshape, convOut, reluOut, y };
}

function userErrorOf(model: Model): UserError {
  try {
    verifyModel(model, { mode: 'input', source: 'model.onnx' });
  } catch (e) {
    expect(e).toBeInstanceOf(UserError);
    return e as UserError;
  }
  throw new Error('the verifier accepted a broken model');
}

describe('verifier', () => {
  it('accepts a well-formed hand-built model in both modes', () => {
    const { model } = buildModel();
    expect(() => verifyModel(model, { mode: 'input' })).not.toThrow();
    expect(() => verifyModel(model, { mode: 'pass', step: 'reorder-channels' })).not.toThrow();
  });

  it('accepts every real model in input mode', () => {
    let checked = 0;
    const cases = [...openwakewordModels(), ...TESTDATA_GROUPS.flatMap((group) => testdataModels(group))];
    for (const c of cases) {
      const model = readModel(c.file);
      try {
        verifyModel(model, { mode: 'input', source: c.name });
      } catch (e) {
        throw new Error(e instanceof UserError ? e.format() : String(e));
      }
      checked++;
    }
    expect(checked).toBeGreaterThan(1000);
  });

  it('rejects a value read before it is computed', () => {
    const { model, g } = buildModel();
    g.nodes.reverse();
    const e = userErrorOf(model);
    expect(e.code).toBe(ErrorCodes.BAD_GRAPH);
    expect(e.message).toMatch(/^model\.onnx: Reshape "reshape" \(node 0\) reads "relu\.out" before it is computed/);
    expect(e.details.expected).toBeTruthy();
    expect(e.details.found).toContain('node 1');
    expect(e.details.hint).toContain('topological order');
  });

  it('rejects a value no one defines', () => {
    const { model, relu } = buildModel();
    relu.setInput(0, new Value('ghost'));
    const e = userErrorOf(model);
    expect(e.code).toBe(ErrorCodes.BAD_GRAPH);
    expect(e.message).toContain('reads "ghost", which nothing in the graph defines');
  });

  it('rejects corrupted use-lists', () => {
    const extra = buildModel();
    extra.convOut.uses.push({ node: extra.reshape, index: 0 });
    expect(userErrorOf(extra.model).message).toContain('the use-list of "conv.out"');

    const missing = buildModel();
    missing.x.uses.length = 0;
    const e = userErrorOf(missing.model);
    expect(e.code).toBe(ErrorCodes.BAD_GRAPH);
    expect(e.message).toContain('the use-list of "x"');
    expect(e.details.found).toBe('0 use(s)');

    const repeated = buildModel();
    repeated.reshape.inputs[1] = repeated.reluOut; // slot changed without telling either value
    repeated.reluOut.uses.push({ node: repeated.reshape, index: 0 });
    expect(userErrorOf(repeated.model).message).toContain('the use-list of');

    const stale = buildModel();
    stale.y.uses.push({ node: new Node('Relu'), index: 0 });
    expect(userErrorOf(stale.model).details.found).toContain('not in the graph');
  });

  it('rejects two producers of one value', () => {
    const same = buildModel();
    same.relu.outputs.push(same.convOut);
    const e = userErrorOf(same.model);
    expect(e.code).toBe(ErrorCodes.BAD_GRAPH);
    expect(e.message).toContain('value "conv.out" has more than one producer');

    const byName = buildModel();
    const twin = new Node('Relu', '', 'twin');
    twin.setInput(0, byName.x);
    twin.addOutput('relu.out');
    byName.g.addNode(twin, byName.reshape);
    expect(userErrorOf(byName.model).message).toContain('value "relu.out" is defined twice');
  });

  it('rejects nodes of another graph, undefined outputs and initializers without data', () => {
    const foreign = buildModel();
    foreign.relu.graph = null;
    expect(userErrorOf(foreign.model).message).toContain('does not belong to this graph');

    const output = buildModel();
    output.g.outputs.push(new Value('nowhere'));
    expect(userErrorOf(output.model).message).toContain('graph output "nowhere" is not defined');

    const empty = buildModel();
    empty.w.const = null;
    expect(userErrorOf(empty.model).message).toContain('initializer "w" has no data');
  });

  it('rejects wrong arity with BAD_NODE', () => {
    const { model, relu, x } = buildModel();
    relu.setInput(1, x);
    const e = userErrorOf(model);
    expect(e.code).toBe(ErrorCodes.BAD_NODE);
    expect(e.message).toContain('Relu "relu" (node 1) has 2 input(s)');
    expect(e.details.expected).toBe('1 inputs for Relu at opset 13');
    expect(e.details.found).toBe('2');
    expect(e.details.hint).toContain('opset 13');

    const omitted = buildModel();
    omitted.conv.setInput(1, null);
    expect(userErrorOf(omitted.model).message).toContain('omits its required input 1');
  });

  it('checks signatures against the model opset', () => {
    // Reshape with one input and a shape attribute is opset 1-4 only
    const old = buildModel(4);
    old.reshape.truncateInputs(1);
    old.reshape.setInts('shape', [1, -1]);
    expect(() => verifyModel(old.model, { mode: 'input' })).not.toThrow();
    const current = buildModel(13);
    current.reshape.truncateInputs(1);
    expect(userErrorOf(current.model).code).toBe(ErrorCodes.BAD_NODE);
  });

  it('rejects missing required attributes and wrong attribute kinds', () => {
    const { model, g, reluOut, reshape } = buildModel();
    const pool = new Node('MaxPool', '', 'pool');
    pool.setInput(0, reluOut);
    pool.addOutput('pooled');
    g.addNode(pool, reshape);
    const e = userErrorOf(model);
    expect(e.code).toBe(ErrorCodes.BAD_NODE);
    expect(e.message).toContain('MaxPool "pool" (node 2) lacks the required attribute kernel_shape');
    pool.setFloats('kernel_shape', [2, 2]);
    expect(userErrorOf(model).message).toContain('has attribute kernel_shape of the wrong kind');
    pool.setInts('kernel_shape', [2, 2]);
    expect(() => verifyModel(model, { mode: 'input' })).not.toThrow();
  });

  it('rejects constant index inputs of the wrong element type', () => {
    const { model, g, shape } = buildModel();
    g.setConstant(shape, Tensor.float32([2], [1, -1]));
    const e = userErrorOf(model);
    expect(e.code).toBe(ErrorCodes.BAD_NODE);
    expect(e.message).toContain('reads input 1 of element type f32');
  });

  it('does not check the signatures of ops in other imported domains', () => {
    const { model, g, x, reshape } = buildModel();
    model.opsetImports.set('com.microsoft', 1n);
    const custom = new Node('FusedConv', 'com.microsoft');
    custom.setInput(0, x);
    custom.setInput(5, x);
    custom.addOutput('a');
    custom.addOutput('b');
    g.addNode(custom, reshape);
    expect(() => verifyModel(model, { mode: 'input' })).not.toThrow();
  });

  it('refuses in input mode what no runtime loads: unknown default-domain ops, unimported domains', () => {
    const unknownOp = buildModel();
    const unknown = new Node('NotAnOnnxOp');
    unknown.addOutput('c');
    unknownOp.g.addNode(unknown, unknownOp.reshape);
    expect(() => verifyModel(unknownOp.model, { mode: 'input' })).toThrow(expect.objectContaining({ code: ErrorCodes.UNKNOWN_OP }));
    expect(() => verifyModel(unknownOp.model, { mode: 'pass' })).not.toThrow();
    const tooNew = buildModel(13);
    const gelu = new Node('Gelu');
    gelu.setInput(0, tooNew.x);
    gelu.addOutput('g');
    tooNew.g.addNode(gelu, tooNew.reshape);
    expect(() => verifyModel(tooNew.model, { mode: 'input' })).toThrow(/needs opset 20, but the model imports opset 13/);
    const notImported = buildModel();
    const custom = new Node('MyOp', 'com.example');
    custom.setInput(0, notImported.x);
    custom.addOutput('m');
    notImported.g.addNode(custom, notImported.reshape);
    expect(() => verifyModel(notImported.model, { mode: 'input' })).toThrow(expect.objectContaining({ code: ErrorCodes.BAD_OPSET }));
  });

  it('reports pass-mode failures as internal errors naming the step', () => {
    const { model, g } = buildModel();
    g.nodes.reverse();
    let caught: unknown;
    try {
      verifyModel(model, { mode: 'pass', step: 'insert-group-norm' });
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(Error);
    expect(caught).not.toBeInstanceOf(UserError);
    const message = (caught as Error).message;
    expect(message).toContain('verifier failed after step insert-group-norm');
    expect(message).toContain('run with --print-before insert-group-norm to see the graph the step received');
  });

  it('verifies a large graph in linear time', () => {
    const model = new Model();
    model.opsetImports.set('', 13n);
    const g = model.graph;
    let prev = new Value('x', tensorType(DataType.FLOAT, [1, 8]));
    g.inputs.push(prev);
    const bias = g.addInitializer('bias', Tensor.float32([8], new Float32Array(8)), true);
    for (let i = 0; i < 20000; i++) {
      const add = new Node('Add', '', `add${i}`);
      add.setInput(0, prev);
      add.setInput(1, bias);
      prev = add.addOutput(`v${i}`);
      g.addNode(add);
    }
    g.outputs.push(prev);
    // generous bound for loaded CI machines; a quadratic check would take many seconds here
    const start = performance.now();
    verifyModel(model, { mode: 'pass', step: 'bench' });
    expect(performance.now() - start).toBeLessThan(2000);
  });
});

describe('op schemas', () => {
  it('picks the variant of the model opset', () => {
    expect(opSchema('Slice', '', 9)!.maxInputs).toBe(1);
    expect(opSchema('Slice', '', 9)!.attributes.get('starts')!.required).toBe(true);
    expect(opSchema('Slice', '', 10)!.minInputs).toBe(3);
    expect(opSchema('Squeeze', '', 12)!.attributes.has('axes')).toBe(true);
    expect(opSchema('Squeeze', '', 13)!.maxInputs).toBe(2);
    expect(opSchema('ReduceMean', '', 17)!.maxInputs).toBe(1);
    expect(opSchema('ReduceMean', '', 18)!.maxInputs).toBe(2);
    expect(opSchema('ReduceSum', '', 13)!.maxInputs).toBe(2);
    expect(opSchema('Clip', '', 10)!.attributes.has('min')).toBe(true);
    expect(opSchema('Clip', '', 11)!.maxInputs).toBe(3);
    expect(opSchema('Split', '', 18)!.attributes.has('num_outputs')).toBe(true);
    expect(opSchema('Pad', '', 10)!.attributes.get('pads')!.required).toBe(true);
    expect(opSchema('BatchNormalization', '', 8)!.attributes.has('spatial')).toBe(true);
    expect(opSchema('BatchNormalization', '', 9)!.attributes.has('spatial')).toBe(false);
    expect(opSchema('Dropout', '', 12)!.maxInputs).toBe(3);
    expect(opSchema('TopK', '', 9)!.attributes.get('k')!.required).toBe(true);
    expect(attrDefault('Softmax', 12, 'axis')).toBe(1);
    expect(attrDefault('Softmax', 13, 'axis')).toBe(-1);
    expect(opSchema('Conv', 'com.microsoft', 13)).toBeUndefined();
    expect(opSchema('Expand', '', 7)).toBeUndefined();
    expect(opSchema('Concat', 'ai.onnx', 13)!.attributes.get('axis')!.required).toBe(true);
  });
});

describe('verifier after a transform: declared types agree with a fresh inference', () => {
  it('names the value a pass left with a stale shape, and the step', () => {
    const model = readModel(new URL('../fixtures/lenet-bn.onnx', import.meta.url).pathname);
    inferShapes(model);
    expect(() => verifyModel(model, { mode: 'pass', step: 'example' })).not.toThrow();
    // cut conv1's filters to 4 without refreshing the shapes after it
    const conv = model.graph.nodes.find((n) => n.op === 'Conv')!;
    const w = conv.inputs[1]!;
    const [, c, kh, kw] = w.const!.dims as [number, number, number, number];
    model.graph.setConstant(w, Tensor.float32([4, c, kh, kw], new Float32Array(4 * c * kh * kw)));
    const b = conv.inputs[2]!;
    model.graph.setConstant(b, Tensor.float32([4], new Float32Array(4)));
    expect(() => verifyModel(model, { mode: 'pass', step: 'example' })).toThrow(/after step example: Conv .* output "[^"]+" has a type inference contradicts \(expected f32\[N,4,/);
  });
});
