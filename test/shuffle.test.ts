// Channel shuffle (ShuffleNet v2) on a small model built here, so it runs without PyTorch: a
// stride-2 unit (two branches, concatenated) and two stride-1 units (a channel split by Slice or
// Split, one branch, concatenated with the half passed through), each followed by the shuffle
// Reshape [N,2,C/2,H,W] → Transpose(0,2,1,3,4) → Reshape [N,C,H,W]. The stream's unions are cut
// into parts where the splits need them, the shuffle places their channels anew, and the sliced
// graphs replace it by a Gather. Checked: everything but the classifier slices; rate 1 equals
// the model; the pruned graph at .5 computes exactly the sub-network (dropped weights zeroed);
// both elastic forms equal the pruned graphs at every rate; the parameter map gathers every
// per-rate initializer from the full one and scatters it back; a train step builds and runs.
// The torchvision export (when scripts/make-torch-exports.py has made it) is held to the same
// parameter map and to a train step that lowers the loss. Also here: what a split needs around
// it (a cut inside a conv group pins with its reason; two concatenations of as wide parts add
// part by part).

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import type { Manifest } from '../compiler/artifacts.js';
import type { Model, Value } from '../compiler/ir.js';
import { encodeModel, readModel, writeModel } from '../compiler/onnx-codec.js';
import { compile } from '../compiler/pipeline.js';
import { buildTrainStep, type TrainStepSignature } from '../compiler/train-step.js';
import { keptIndices } from '../passes/channel-space.js';
import { coupleChannels, explainLayers } from '../passes/couple-channels.js';
import { gather, keptAxisIndices, keptByUnion, keptPositions, scatter, unionWidths, type NumericArray } from '../runtime/parameters.js';
import { Exporter } from '../fixtures/exporter.js';
import { prunedAndMasked } from './helpers/slicing.js';
import { randomFeeds, REPO_ROOT, type Feeds, runTensors as run } from './helpers/models.js';
import { maxRelativeError } from './helpers/compare.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-shuffle-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** x → Reshape [N,2,C/2,H,W] → Transpose(0,2,1,3,4) → Reshape [N,C,H,W] (torchvision's channel_shuffle). */
function shuffle(e: Exporter, name: string, x: Value, channels: number, size: number): Value {
  const grouped = e.b.reshape(x, e.b.int64Const([-1, 2, channels / 2, size, size], `${name}.grouped_shape`), { name: `/${name}/Reshape` });
  const swapped = e.b.transpose(grouped, [0, 2, 1, 3, 4], { name: `/${name}/Transpose` });
  return e.b.reshape(swapped, e.b.int64Const([-1, channels, size, size], `${name}.shape`), { name: `/${name}/Reshape_1` });
}

/** ShuffleNet v2's branch: 1x1 conv, ReLU, 3x3 depthwise conv, 1x1 conv, ReLU. */
function branch(e: Exporter, name: string, x: Value, cin: number, width: number, stride: number): Value {
  let y = e.relu(`${name}.relu0`, e.conv(`${name}.conv0`, x, cin, width, { kernel: 1, bias: true }));
  y = e.conv(`${name}.dw`, y, width, width, { kernel: 3, pad: 1, stride, group: width, bias: true });
  return e.relu(`${name}.relu1`, e.conv(`${name}.conv1`, y, width, width, { kernel: 1, bias: true }));
}

/** Input [N,3,16,16], opset 13; a stream of 32 channels at 8x8. */
function buildShuffleNet(): Model {
  const e = new Exporter({ opset: 13, irVersion: 8, seed: 0x5f1e, docString: 'a small ShuffleNet v2' });
  let x = e.input('input', [3, 16, 16]);
  x = e.relu('stem.relu', e.conv('stem.conv', x, 3, 16, { kernel: 3, pad: 1, bias: true }));
  // stride 2: both branches read the whole input
  let left = e.conv('unit0.branch1.dw', x, 16, 16, { kernel: 3, pad: 1, stride: 2, group: 16, bias: true });
  left = e.relu('unit0.branch1.relu', e.conv('unit0.branch1.conv', left, 16, 16, { kernel: 1, bias: true }));
  x = e.b.concat([left, branch(e, 'unit0.branch2', x, 16, 16, 2)], 1, { name: '/unit0/Concat' });
  x = shuffle(e, 'unit0', x, 32, 8);
  // stride 1: the first unit splits channels by two Slices (as torch exports chunk with a
  // dynamic batch), the second by one Split
  for (const unit of ['unit1', 'unit2']) {
    let passed: Value;
    let split: Value;
    if (unit === 'unit1') {
      passed = e.b.slice(x, e.b.int64Const([0], `${unit}.start0`), e.b.int64Const([16], `${unit}.end0`), e.b.int64Const([1], `${unit}.axes`), undefined, { name: `/${unit}/Slice` });
      split = e.b.slice(x, e.b.int64Const([16], `${unit}.start1`), e.b.int64Const([32], `${unit}.end1`), e.b.int64Const([1], `${unit}.axes1`), undefined, { name: `/${unit}/Slice_1` });
    } else {
      [passed, split] = e.b.split(x, 1, [16, 16], { name: `/${unit}/Split` }) as [Value, Value];
    }
    x = e.b.concat([passed, branch(e, `${unit}.branch2`, split, 16, 16, 1)], 1, { name: `/${unit}/Concat` });
    x = shuffle(e, unit, x, 32, 8);
  }
  x = e.relu('head.relu', e.conv('head.conv', x, 32, 64, { kernel: 1, bias: true }));
  x = e.flatten(e.b.globalAveragePool(x, { name: '/GlobalAveragePool' }));
  return e.output(e.linear('fc', x, 64, 10), 'logits', [10]);
}

const file = path.join(tmp, 'shufflenet.onnx');
writeModel(buildShuffleNet(), file);
const feeds = randomFeeds(readModel(file), 3, 2)!;

function initializers(model: string): Map<string, { dims: number[]; data: NumericArray }> {
  return new Map(readModel(model).graph.initializers.map((v) => [v.name, { dims: v.const!.dims, data: v.const!.data() as NumericArray }]));
}

/**
 * gather(full, rate) through the manifest's parameter map is every per-rate initializer, and
 * scatter puts it back; some cut axes list positions (the shuffled channels).
 */
function checkParameterMap(outDir: string, manifest: Manifest): void {
  const full = initializers(path.join(outDir, manifest.rates.find((r) => r.rate === 1)!.file));
  const params = new Map(manifest.parameters.map((p) => [p.name, p]));
  const widths = unionWidths(manifest);
  const mismatches: string[] = [];
  for (const rate of manifest.rates) {
    const kept = keptByUnion(manifest, rate.rate);
    for (const [name, tensor] of initializers(path.join(outDir, rate.file))) {
      const param = params.get(name);
      if (!param) continue; // shape constants and shuffle indices are written per rate
      const source = full.get(name)!;
      const { dims, positions } = keptPositions(param, keptAxisIndices(param, kept, widths));
      const gathered = gather(source.data, positions);
      if (dims.join(',') !== tensor.dims.join(',') || !gathered.every((x, i) => x === tensor.data[i])) mismatches.push(`${rate.rate} ${name}`);
      const restored = source.data.slice() as NumericArray;
      restored.fill((restored instanceof BigInt64Array ? 0n : 0) as never);
      scatter(restored, positions, gathered);
      if (!Array.from(positions).every((p) => restored[p] === source.data[p])) mismatches.push(`${rate.rate} ${name}: scatter`);
    }
  }
  expect(mismatches).toEqual([]);
  expect(manifest.parameters.some((p) => p.cuts.some((c) => c.segments.some((s) => s.positions)))).toBe(true);
}

/** Feeds of a train step: the rate graph's own parameters, a batch, labels, lr 0.01, step 1. */
function stepInputs(model: Model, inputs: TrainStepSignature['inputs']): Record<string, ort.Tensor> {
  const initial = new Map(model.graph.initializers.map((v) => [v.name, v.const!]));
  const feeds: Record<string, ort.Tensor> = {};
  for (const input of inputs) {
    const count = input.shape.reduce((a, d) => a * d, 1);
    if (input.role === 'parameter' || input.role === 'running-stat') feeds[input.name] = new ort.Tensor('float32', initial.get(input.parameter!)!.data() as Float32Array, input.shape);
    else if (input.role === 'labels') feeds[input.name] = new ort.Tensor('int64', BigInt64Array.from({ length: count }, (_, i) => BigInt(i % 10)), input.shape);
    else if (input.role === 'batch') feeds[input.name] = new ort.Tensor('float32', Float32Array.from({ length: count }, (_, i) => Math.sin(i)), input.shape);
    else feeds[input.name] = new ort.Tensor('float32', Float32Array.of(input.role === 'lr' ? 0.01 : 1), []);
  }
  return feeds;
}

describe('channel shuffle', () => {
  it('slices every layer but the classifier, the stream in parts that the shuffles place', () => {
    const model = readModel(file);
    const analysis = coupleChannels(model);
    expect(analysis.shuffles).toHaveLength(3);
    const layers = explainLayers(analysis);
    expect(layers.filter((l) => !l.sliced).map((l) => l.node.name)).toEqual(['/fc/Gemm']);
    // the stream's producers are cut where the channel splits of later units need it
    const split = analysis.layers.filter((l) => l.parts).map((l) => [l.node.name, l.parts!.map((u) => u.fineWidth)]);
    expect(split).toEqual([
      ['/unit0/branch1/conv/Conv', [4, 4, 8]],
      ['/unit0/branch2/conv1/Conv', [4, 4, 8]],
      ['/unit1/branch2/conv1/Conv', [8, 8]],
    ]);
  });

  it('pins a channel Slice that would cut inside a conv group, and says so', () => {
    const e = new Exporter({ opset: 13, irVersion: 8, seed: 7 });
    let x = e.relu('a.relu', e.conv('a.conv', e.input('input', [3, 8, 8]), 3, 8, { kernel: 1, bias: true }));
    x = e.conv('grouped', x, 8, 8, { kernel: 3, pad: 1, group: 2, bias: true });
    const part = e.b.slice(x, e.b.int64Const([0], 'start'), e.b.int64Const([2], 'end'), e.b.int64Const([1], 'axes'), undefined, { name: '/Slice' });
    const model = e.output(e.conv('b.conv', part, 2, 4, { kernel: 1, bias: true }), 'out', [4, 8, 8]);
    const layers = explainLayers(coupleChannels(model));
    expect(layers[0]!.sliced).toBe(false);
    expect(layers[0]!.reason).toBe('Slice "/Slice" cuts the channel axis inside a conv group or attention head');
  });

  it('adds two concatenations of as wide parts part by part (each pair of parts one union)', async () => {
    const e = new Exporter({ opset: 13, irVersion: 8, seed: 11 });
    const x = e.input('input', [3, 8, 8]);
    const part = (name: string, width: number): Value => e.relu(`${name}.relu`, e.conv(`${name}.conv`, x, 3, width, { kernel: 1, bias: true }));
    const left = e.b.concat([part('a', 8), part('b', 4)], 1, { name: '/left/Concat' });
    const right = e.b.concat([part('c', 8), part('d', 4)], 1, { name: '/right/Concat' });
    const y = e.conv('head', e.b.add(left, right, { name: '/Add' }), 12, 6, { kernel: 1, bias: true });
    const model = e.output(e.b.reduce('ReduceMean', y, [2, 3], false), 'out', [6]);
    const layers = explainLayers(coupleChannels(model));
    expect(layers.map((l) => l.sliced)).toEqual([true, true, true, true, false]);
    expect(layers[0]!.union).toBe(layers[2]!.union);
    expect(layers[1]!.union).toBe(layers[3]!.union);
    const added = path.join(tmp, 'added.onnx');
    writeModel(model, added);
    const outDir = path.join(tmp, 'added');
    const result = await compile({ codegen: false, model: added, groups: 4, rates: [0.5, 1], norm: 'keep', calibrate: false, outDir, log: () => {} });
    const manifest = JSON.parse(fs.readFileSync(result.manifestFile, 'utf8')) as Manifest;
    const inputs = randomFeeds(readModel(added), 4, 2)!;
    expect(maxRelativeError((await run(added, inputs)).out!, (await run(path.join(outDir, manifest.rates[1]!.file), inputs)).out!)).toBeLessThan(1e-5);
    const half = await run(path.join(outDir, manifest.rates[0]!.file), inputs);
    const flexible = await run(result.elasticFile, { ...inputs, [manifest.elastic.rateInput]: new ort.Tensor('float32', Float32Array.of(0.5), []) });
    expect(maxRelativeError(half.out!, flexible.out!)).toBeLessThan(1e-4);
    expect(manifest.rates[0]!.macRatio).toBeLessThan(0.6);
  });

  it('the pruned graph at .5 computes the sub-network with the dropped weights zeroed', async () => {
    const { analysis, kept, pruned, masked, zeroed } = prunedAndMasked(readModel(file), 4, 0.5);
    expect(pruned.graph.nodes.filter((n) => n.op === 'Gather')).toHaveLength(3);
    expect(pruned.graph.nodes.some((n) => n.op === 'Transpose')).toBe(false);
    // the kept channels of a shuffled tensor are not a prefix
    const shuffled = analysis.shuffles[0]!.outSpace;
    const indices = keptIndices(shuffled, kept);
    expect(indices.some((p, i) => p !== i)).toBe(true);
    expect(zeroed).toBeGreaterThan(0);
    const [fromPruned, fromMasked] = [await run(encodeModel(pruned), feeds), await run(encodeModel(masked), feeds)];
    expect(maxRelativeError(fromMasked.logits!, fromPruned.logits!)).toBeLessThan(1e-4);
  });

  for (const elastic of ['fast', 'lean'] as const) {
    it(`--norm keep --elastic ${elastic}: rate 1 is exact, elastic equals every pruned graph, the parameter map holds`, async () => {
      const outDir = path.join(tmp, `keep-${elastic}`);
      const result = await compile({ codegen: false, model: file, groups: 4, rates: [0.25, 0.5, 0.75, 1], norm: 'keep', elastic, calibrate: false, outDir, log: () => {} });
      const manifest = JSON.parse(fs.readFileSync(result.manifestFile, 'utf8')) as Manifest;
      const reference = await run(file, feeds);
      const byRate = new Map(manifest.rates.map((r) => [r.rate, r]));
      expect(maxRelativeError(reference.logits!, (await run(path.join(outDir, byRate.get(1)!.file), feeds)).logits!)).toBeLessThan(1e-5);
      expect(byRate.get(0.5)!.macRatio).toBeLessThan(0.35);
      for (const rate of manifest.rates) {
        const pruned = await run(path.join(outDir, rate.file), feeds);
        const flexible = await run(result.elasticFile, { ...feeds, [manifest.elastic.rateInput]: new ort.Tensor('float32', Float32Array.of(rate.rate), []) });
        expect(maxRelativeError(pruned.logits!, flexible.logits!), `rate ${rate.rate}`).toBeLessThan(1e-4);
      }

      checkParameterMap(outDir, manifest);
    });
  }

  it('--norm gn slices as far, and a train step on the rate-.5 graph builds and runs', async () => {
    const outDir = path.join(tmp, 'gn');
    const result = await compile({ codegen: false, model: file, groups: 4, rates: [0.5, 1], norm: 'gn', calibrate: false, outDir, log: () => {} });
    const manifest = JSON.parse(fs.readFileSync(result.manifestFile, 'utf8')) as Manifest;
    expect(manifest.rates[0]!.macRatio).toBeLessThan(0.35);
    const model = readModel(path.join(outDir, manifest.rates[0]!.file));
    const step = buildTrainStep(model, { batch: 2, loss: { kind: 'cross-entropy' }, optimizer: { kind: 'sgd', momentum: 0, nesterov: false, weightDecay: 0 } });
    const session = await ort.InferenceSession.create(encodeModel(step.model), { intraOpNumThreads: 1, logSeverityLevel: 4 });
    const out = await session.run(stepInputs(model, step.signature.inputs));
    await session.release();
    expect(Number.isFinite(Number(out.loss!.data[0]))).toBe(true);
  });

  const cached = path.join(REPO_ROOT, 'test', '.cache', 'torch-exports', 'shufflenet_v2_x0_5-op15.onnx');
  const hasTorch = spawnSync('/usr/bin/python3', ['-c', 'import torch, torchvision'], { encoding: 'utf8' }).status === 0;
  /** The torchvision export: from the shared cache when torch-exports.test.ts made it, else made here. */
  const torchvisionShuffleNet = (): string => {
    if (fs.existsSync(cached)) return cached;
    const out = path.join(tmp, 'torch-export');
    const script = path.join(REPO_ROOT, 'scripts', 'make-torch-exports.py');
    const made = spawnSync('/usr/bin/python3', [script, '--out', out, '--only', 'shufflenet_v2_x0_5', '--opsets', '15'], { encoding: 'utf8' });
    if (made.status !== 0) throw new Error(`make-torch-exports.py failed:\n${made.stderr}`);
    return path.join(out, 'shufflenet_v2_x0_5-op15.onnx');
  };
  it.runIf(fs.existsSync(cached) || hasTorch)('torchvision ShuffleNet v2: the parameter map holds, and one SGD step at rate .5 lowers the loss', async () => {
    const real = torchvisionShuffleNet();
    const outDir = path.join(tmp, 'torchvision-gn');
    const result = await compile({ codegen: false, model: real, groups: 8, rates: [0.25, 0.5, 1], norm: 'gn', calibrate: false, outDir, log: () => {} });
    const manifest = JSON.parse(fs.readFileSync(result.manifestFile, 'utf8')) as Manifest;
    checkParameterMap(outDir, manifest);
    // what the fine-tune trains: weights, biases and norm affines (never a group norm's own constants)
    const roles = new Map(manifest.parameters.map((p) => [p.name, p.role]));
    const trainable = (name: string): boolean => ['weight', 'bias', 'norm-scale', 'norm-bias'].includes(roles.get(name) ?? '');
    const model = readModel(path.join(outDir, manifest.rates[1]!.file));
    const step = buildTrainStep(model, { batch: 2, loss: { kind: 'cross-entropy' }, optimizer: { kind: 'sgd', momentum: 0, nesterov: false, weightDecay: 0 }, trainable });
    const session = await ort.InferenceSession.create(encodeModel(step.model), { intraOpNumThreads: 1, logSeverityLevel: 4 });
    const inputs = stepInputs(model, step.signature.inputs);
    const first = await session.run(inputs);
    for (const o of step.signature.outputs.filter((x) => x.role === 'parameter')) {
      inputs[step.signature.inputs.find((i) => i.role === 'parameter' && i.parameter === o.parameter)!.name] = first[o.name]!;
    }
    const second = await session.run(inputs);
    await session.release();
    expect(Number(second.loss!.data[0])).toBeLessThan(Number(first.loss!.data[0]));
  }, 60_000);

  const python = spawnSync('/usr/bin/python3', ['-c', 'import onnx'], { encoding: 'utf8' }).status === 0;
  it.runIf(python)('onnx.checker accepts every rate graph and both elastic forms', () => {
    const files = fs.readdirSync(tmp, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.onnx') && !f.includes('train')).map((f) => path.join(tmp, f));
    expect(files.length).toBeGreaterThan(8);
    const check = 'import sys, onnx\nfor f in sys.argv[1:]:\n    onnx.checker.check_model(onnx.load(f), full_check=True)';
    const checked = spawnSync('/usr/bin/python3', ['-c', check, ...files], { encoding: 'utf8' });
    expect(checked.stderr).toBe('');
    expect(checked.status).toBe(0);
  });
});
