import { describe, expect, it } from 'vitest';
import { Model, Node, Value, tensorType } from '../compiler/ir.js';
import { readModel } from '../compiler/onnx-codec.js';
import { formatFloat, formatType, printModel } from '../compiler/printer.js';
import { DataType, Tensor } from '../compiler/tensor.js';
import { TESTDATA_GROUPS, openwakewordModels, testdataModels } from './helpers/models.js';

/** x → Conv(w, b) → Relu → y, with weights large enough to hash. */
function buildConv(): Model {
  const model = new Model();
  model.opsetImports.set('', 13n);
  model.producerName = 'pytorch';
  model.producerVersion = '2.1';
  const g = model.graph;
  g.name = 'tiny';
  const conv = new Node('Conv', '', 'conv1');
  const relu = new Node('Relu', '', 'relu1');
  const x = new Value('x', tensorType(DataType.FLOAT, ['N', 3, 8, 8]));
  g.inputs.push(x);
  const weights = new Float32Array(16 * 3 * 3 * 3).map((_, i) => i / 10);
  const w = g.addInitializer('conv1.w', Tensor.float32([16, 3, 3, 3], weights), true);
  const b = g.addInitializer('conv1.b', Tensor.float32([4], [0.1, -2.5, 1e-7, 123456789]), true);
  conv.setInput(0, x);
  conv.setInput(1, w);
  conv.setInput(2, b);
  conv.addOutput('conv1.out', tensorType(DataType.FLOAT, ['N', 16, 8, 8]));
  conv.setInts('pads', [1, 1, 1, 1]);
  conv.setInts('kernel_shape', [3, 3]);
  g.addNode(conv);
  relu.setInput(0, conv.outputs[0]!);
  const y = relu.addOutput('y', tensorType(DataType.FLOAT, ['N', 16, 8, 8]));
  g.addNode(relu);
  g.outputs.push(y);
  return model;
}

describe('printer', () => {
  it('prints a small conv graph exactly', () => {
    const text = printModel(buildConv(), { sections: [{ title: 'layers', lines: ['conv1: 16 channels'] }] });
    expect(text).toBe(
      [
        'model ir_version=8 opset={"":13} producer="pytorch 2.1"',
        'graph "tiny" {',
        '  input %x: f32[N,3,8,8]',
        '  init %conv1.w: f32[16,3,3,3] = #' + text.split('#')[1]!.slice(0, 8),
        '  init %conv1.b: f32[4] = [0.1, -2.5, 1e-7, 1.23457e+8]',
        '  %conv1.out: f32[N,16,8,8] = Conv(%x, %conv1.w, %conv1.b) {kernel_shape=[3,3], pads=[1,1,1,1]}',
        '  %y: f32[N,16,8,8] = Relu(%conv1.out)',
        '  output %y: f32[N,16,8,8]',
        '}',
        '# layers',
        'conv1: 16 channels',
        '',
      ].join('\n'),
    );
    expect(text).toMatch(/init %conv1\.w: f32\[16,3,3,3\] = #[0-9a-f]{8}\n/);
    // the hash depends on the bytes only
    expect(printModel(buildConv())).toBe(printModel(buildConv()));
    const changed = buildConv();
    const w = changed.graph.initializers[0]!;
    changed.graph.setConstant(w, Tensor.float32([16, 3, 3, 3], new Float32Array(432)));
    expect(printModel(changed)).not.toBe(printModel(buildConv()));
  });

  it('prints names, omitted slots, domains, constants and attribute kinds', () => {
    const model = new Model();
    model.opsetImports.set('com.microsoft', 1n);
    model.opsetImports.set('', 18n);
    const g = model.graph;
    const x = new Value('weird name', tensorType(DataType.FLOAT, null));
    g.inputs.push(x);
    const ends = g.addInitializer('ends', Tensor.int64([1], [9223372036854775807n]), true);
    const constant = new Node('Constant', '', 'c');
    const half = new Tensor(DataType.FLOAT16, [2], { kind: 'raw', bytes: new Uint8Array([0x00, 0x3c, 0x00, 0xc0]) });
    constant.setAttr('value', { kind: 'tensor', value: half });
    const c = constant.addOutput('c', tensorType(DataType.FLOAT16, [2]));
    c.const = half;
    g.addNode(constant);
    const split = new Node('Split');
    split.setInput(0, x);
    split.setInput(1, null);
    split.setInt('axis', -1);
    split.setString('mode', 'a "b"');
    split.setFloats('scales', [0.5, Number.NaN, -Infinity]);
    split.setAttr('value', { kind: 'tensor', value: Tensor.int64([], [7]) });
    split.setAttr('body', { kind: 'opaque', value: null, summary: 'graph(body: 3 nodes)' });
    split.addOutput('a', tensorType(DataType.FLOAT, [null, 2]));
    split.addOutput('');
    g.addNode(split);
    const fused = new Node('FusedConv', 'com.microsoft');
    fused.setInput(0, split.outputs[0]!);
    fused.setInput(1, ends);
    fused.setInput(2, c);
    const out = fused.addOutput('out');
    g.addNode(fused);
    g.outputs.push(out);
    const lines = printModel(model).split('\n');
    expect(lines).toEqual([
      'model ir_version=8 opset={"":18,"com.microsoft":1}',
      'graph "" {',
      '  input %"weird name": f32[*]',
      '  init %ends: i64[1] = [9223372036854775807]',
      '  %c: f16[2] = Constant [1, -2]',
      '  %a: f32[?,2], _ = Split(%"weird name", _) {axis=-1, body=graph(body: 3 nodes), mode="a \\"b\\"", scales=[0.5,nan,-inf], value=i64[] 7}',
      '  %out: ? = com.microsoft::FusedConv(%a, %ends, %c)',
      '  output %out: ?',
      '}',
      '',
    ]);
  });

  it('formats types and floats stably', () => {
    expect(formatType(null)).toBe('?');
    expect(formatType({ kind: 'opaque', proto: {} })).toBe('opaque');
    expect(formatType(tensorType(DataType.INT64, []))).toBe('i64[]');
    expect(formatType(tensorType(DataType.BOOL, ['batch size', null, 3]))).toBe('bool[\"batch size\",?,3]');
    expect(formatFloat(Math.fround(0.1))).toBe('0.1');
    expect(formatFloat(1 / 3)).toBe('0.333333');
    expect(formatFloat(-0)).toBe('-0');
    expect(formatFloat(2.5e-10)).toBe('2.5e-10');
    expect(formatFloat(1e-5)).toBe('0.00001');
    expect(formatFloat(100)).toBe('100');
    expect(formatFloat(1e6)).toBe('1e+6');
    expect(formatFloat(-123456789)).toBe('-1.23457e+8');
  });

  it('prints malformed tensors as <bad data> instead of throwing', () => {
    const model = new Model();
    const bad = new Tensor(DataType.FLOAT, [3], { kind: 'raw', bytes: new Uint8Array(5) });
    const v = model.graph.addInitializer('bad', bad, true);
    model.graph.outputs.push(v);
    const badTyped = new Tensor(DataType.INT64, [4], { kind: 'int64', values: [1n] });
    model.graph.addInitializer('short', badTyped, true);
    const text = printModel(model);
    expect(text).toContain('init %bad: f32[3] = <bad data>');
    expect(text).toContain('init %short: i64[4] = <bad data>');
  });

  it('prints real models deterministically', () => {
    for (const c of openwakewordModels()) {
      const first = printModel(readModel(c.file));
      const second = printModel(readModel(c.file));
      expect(second).toBe(first);
      expect(first).toMatch(/^model ir_version=\d+ opset=\{"":13\} producer="pytorch [^"]+"\n/);
      expect(first).toContain('= Gemm(%/flatten/Flatten_output_0, %layer1.weight, %layer1.bias) {alpha=1, beta=1, transB=1}');
      expect(first).toMatch(/\n {2}init %layer1\.weight: f32\[32,\d+\] = #[0-9a-f]{8}\n/);
      expect(first).toMatch(/= Constant 2\n/);
    }
    const pad = testdataModels('pytorch-operator').find((c) => c.name.endsWith('/test_operator_pad'))!;
    expect(printModel(readModel(pad.file))).toContain('%1: f32[1,1,3,9] = Pad(%0) {mode="reflect", pads=[0,0,0,2,0,0,1,3]}');
  });

  it('never throws on the ONNX test models', () => {
    let printed = 0;
    for (const group of TESTDATA_GROUPS) {
      for (const c of testdataModels(group)) {
        const text = printModel(readModel(c.file));
        expect(text.endsWith('}\n')).toBe(true);
        printed++;
      }
    }
    expect(printed).toBeGreaterThan(1000);
  });
});
