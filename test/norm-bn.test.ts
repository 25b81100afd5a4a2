// --norm bn (switchable BatchNorm): BatchNorms are kept and one is inserted after every sliced
// layer without a norm, initialized from the calibration batch so that it is the identity; the
// rate-1 graph equals the original, every rate runs, elastic.onnx equals the pruned graph of
// each rate and reads the running statistics of the rate's own row.

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import type { Manifest } from '../compiler/artifacts.js';
import { encodeModel, encodeTensorProto, readModel } from '../compiler/onnx-codec.js';
import { modelGradients } from '../compiler/grad.js';
import { compile } from '../compiler/pipeline.js';
import { inferShapes } from '../compiler/shape-inference.js';
import { mergeAdditions } from '../passes/analysis-additions.js';
import { coupleChannels } from '../passes/couple-channels.js';
import { insertBatchNorm, stackRateStatistics } from '../passes/insert-batch-norm.js';
import { ELASTIC_MIN_OPSET, makeElastic } from '../passes/make-elastic.js';
import { keptWidths, partitionChannels } from '../passes/partition-channels.js';
import { pruneToRate } from '../passes/prune-to-rate.js';
import { reorderChannels } from '../passes/reorder-channels.js';
import { upgradeOpset } from '../passes/upgrade-opset.js';
import { copyWithAnalysis } from './helpers/slicing.js';
import { Tensor } from '../compiler/tensor.js';
import { runCli } from './helpers/cli.js';
import { randomFeeds, REPO_ROOT, runTensors, type Feeds } from './helpers/models.js';
import { relativeError, withRate } from './helpers/compare.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-norm-bn-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

type Outputs = Record<string, Float32Array>;

async function run(model: string | Uint8Array, feeds: Feeds, outputs?: string[]): Promise<Outputs> {
  return Object.fromEntries(Object.entries(await runTensors(model, feeds, outputs)).map(([n, t]) => [n, t.data as Float32Array]));
}

function fixture(name: string): string {
  return path.join(REPO_ROOT, 'fixtures', `${name}.onnx`);
}

/** A calibration batch written as a TensorProto file, and the same batch as feeds. */
function calibrationFile(model: string, seed: number, batch: number): { file: string; feeds: Feeds } {
  const feeds = randomFeeds(readModel(model), seed, batch)!;
  const input = feeds['input']!;
  const file = path.join(tmp, `${path.basename(model, '.onnx')}-${seed}.pb`);
  fs.writeFileSync(file, encodeTensorProto(Tensor.fromTyped(1, [...input.dims], input.data as Float32Array, 'input')));
  return { file, feeds };
}

const RATES = [0.25, 0.5, 1];
const PADDLE_CLS = path.join(REPO_ROOT, 'node_modules', '@gutenye', 'ocr-models', 'assets', 'ch_ppocr_mobile_v2.0_cls_infer.onnx');

describe('--norm bn', () => {
  // conv-flatten-gemm and mlp have no BatchNorm (as real exports); the others keep their own,
  // and get norms where a sliced layer has none (SE gates on 1x1 maps excepted)
  const cases = [
    ['conv-flatten-gemm', 3, 0], ['mlp', 2, 0], ['resnet-small', 0, 8], ['mobilenet-se', 0, 8], ['concat-net', 7, 1], ['lenet-bn', 2, 2],
    ['paddleocr-cls', 0, 35],
  ] as const;
  for (const [name, inserted, kept] of cases) {
    it(`${name}: rate 1 equals the original, every rate runs, elastic equals pruned per rate`, async () => {
      const file = name === 'paddleocr-cls' ? PADDLE_CLS : fixture(name);
      const outDir = path.join(tmp, name);
      const result = await compile({ codegen: false, model: file, groups: 4, rates: RATES, outDir, norm: 'bn' });
      const manifest = JSON.parse(fs.readFileSync(result.manifestFile, 'utf8')) as Manifest;
      expect(manifest.normalization.mode).toBe('bn');
      expect(manifest.normalization.perRateStats).toBe(true);
      expect(manifest.normalization.sites['inserted'] ?? 0).toBe(inserted);
      expect(manifest.normalization.sites['batchnorm'] ?? 0).toBe(kept);
      expect(manifest.normalization.batchNorms!.length).toBe(inserted + kept);
      const roles = new Map(manifest.parameters.map((p) => [p.name, p.role]));
      // the PaddleOCR model holds its statistics in Constant nodes, which the parameter map leaves out
      for (const bn of name === 'paddleocr-cls' ? [] : manifest.normalization.batchNorms!) {
        expect(roles.get(bn.mean)).toBe('running-stat');
        expect(roles.get(bn.variance)).toBe('running-stat');
        expect(roles.get(bn.scale)).toBe('norm-scale');
      }
      if (inserted > 0) expect(result.normalization.calibration!.after.relativeError).toBeLessThan(1e-4);

      const feeds = randomFeeds(readModel(file), 3, 2)!;
      const original = await run(file, feeds);
      for (const rate of manifest.rates) {
        const graph = readModel(path.join(outDir, rate.file));
        expect(graph.graph.nodes.filter((n) => n.op === 'BatchNormalization').length).toBe(inserted + kept);
        const pruned = await run(path.join(outDir, rate.file), feeds);
        const elastic = await run(result.elasticFile, withRate(feeds, rate.rate));
        for (const [n, t] of Object.entries(original)) {
          expect(pruned[n]!.length).toBe(t.length);
          expect(pruned[n]!.every(Number.isFinite)).toBe(true);
          if (rate.rate === 1) expect(relativeError(t, pruned[n]!)).toBeLessThan(1e-4);
          expect(relativeError(pruned[n]!, elastic[n]!)).toBeLessThan(1e-4);
        }
      }
    });
  }

  it('initializes inserted norms from the calibration batch as the identity', async () => {
    const file = fixture('conv-flatten-gemm');
    const { file: pb, feeds } = calibrationFile(file, 21, 16);
    const outDir = path.join(tmp, 'cfg-calibrated');
    const result = await compile({ codegen: false, model: file, groups: 4, rates: [0.5, 1], outDir, norm: 'bn', calibration: pb, importance: 'weight' });
    expect(result.normalization.calibration!.source).toBe('file');
    expect(result.normalization.calibration!.batch).toBe(16);
    const full = readModel(path.join(outDir, 'slices/rate-1.000.onnx'));
    const bns = full.graph.nodes.filter((n) => n.op === 'BatchNormalization');
    expect(bns.length).toBe(3);
    // the Gemm became a MatMul whose bias moved into the norm's β; the convs keep their bias
    expect(bns.map((n) => n.inputs[0]!.producer!.op)).toEqual(['Conv', 'Conv', 'MatMul']);
    // β and the variance are the mean and variance of each layer's output in the original model
    // on the batch (channels are reordered: compared sorted)
    const layerOutputs = bns.map((n) => n.inputs[0]!.producer!.outputs[0]!.name);
    const originalModel = readModel(file);
    originalModel.graph.outputs.push(...originalModel.graph.nodes.flatMap((n) => n.outputs).filter((o) => layerOutputs.includes(o.name)));
    const observed = await run(encodeModel(originalModel, { dropValueInfo: true }), feeds, layerOutputs);
    bns.forEach((bn, i) => {
      const [scale, bias, mean, variance] = [1, 2, 3, 4].map((k) => Array.from(bn.inputs[k]!.const!.numbers()));
      const x = observed[layerOutputs[i]!]!;
      const channels = mean!.length;
      const inner = x.length / (16 * channels);
      const expectedMean: number[] = [];
      const expectedVariance: number[] = [];
      for (let c = 0; c < channels; c++) {
        let s = 0;
        let sq = 0;
        for (let n = 0; n < 16; n++) {
          for (let j = 0; j < inner; j++) {
            const v = x[(n * channels + c) * inner + j]!;
            s += v;
            sq += v * v;
          }
        }
        const m = s / (16 * inner);
        expectedMean.push(m);
        expectedVariance.push(sq / (16 * inner) - m * m);
      }
      const sorted = (a: number[]) => [...a].sort((p, q) => p - q);
      sorted(bias!).forEach((m, c) => expect(m).toBeCloseTo(sorted(expectedMean)[c]!, 4));
      sorted(variance!).forEach((v, c) => expect(v).toBeCloseTo(sorted(expectedVariance)[c]!, 3));
      expect(variance!.some((v) => Math.abs(v - 1) > 1e-3)).toBe(true);
      for (let c = 0; c < channels; c++) expect(scale![c]).toBeCloseTo(Math.sqrt(variance![c]! + 1e-5), 5);
      if (i < 2) for (let c = 0; c < channels; c++) expect(bias![c]).toBeCloseTo(mean![c]!, 5);
    });
  });

  it('costs nothing after onnxruntime\'s optimizations: every BatchNorm is folded into its layer', async () => {
    for (const name of ['conv-flatten-gemm', 'mlp']) {
      const result = await compile({ codegen: false, model: fixture(name), groups: 4, rates: [0.5, 1], outDir: path.join(tmp, `folded-${name}`), norm: 'bn' });
      for (const rate of ['0.500', '1.000']) {
        const file = path.join(result.outDir, `slices/rate-${rate}.onnx`);
        const optimized = `${file}.optimized.onnx`;
        const session = await ort.InferenceSession.create(file, { graphOptimizationLevel: 'all', optimizedModelFilePath: optimized, logSeverityLevel: 4 });
        await session.release();
        expect(readModel(file).graph.nodes.some((n) => n.op === 'BatchNormalization')).toBe(true);
        expect(readModel(optimized).graph.nodes.some((n) => n.op === 'BatchNormalization')).toBe(false);
      }
    }
  });

  for (const form of ['fast', 'lean'] as const) it(`elastic.onnx (${form}) selects the statistics of the active group count`, async () => {
    const file = fixture('conv-flatten-gemm');
    const outDir = path.join(tmp, `cfg-rows-${form}`);
    const result = await compile({ codegen: false, model: file, groups: 4, rates: [0.5, 1], outDir, norm: 'bn', elastic: form });
    const manifest = JSON.parse(fs.readFileSync(result.manifestFile, 'utf8')) as Manifest;
    const bn = manifest.normalization.batchNorms![0]!;
    const elastic = readModel(result.elasticFile);
    const stacked = elastic.graph.valuesByName().get(bn.elastic.mean)!;
    const [groups, channels] = stacked.const!.dims as [number, number];
    expect(groups).toBe(4);
    // a recalibrated row for k = 2 (rate 0.5): shift its means
    const rows = Float32Array.from(stacked.const!.numbers());
    for (let c = 0; c < channels; c++) rows[channels + c] = rows[channels + c]! + 0.5 + c * 0.01;
    elastic.graph.setConstant(stacked, Tensor.float32([groups, channels], rows));
    const edited = encodeModel(elastic);

    // the same statistics written into the pruned rate-0.5 graph (its first kept channels)
    const half = readModel(path.join(outDir, 'slices/rate-0.500.onnx'));
    const mean = half.graph.valuesByName().get(bn.mean)!;
    const kept = mean.const!.dims[0]!;
    half.graph.setConstant(mean, Tensor.float32([kept], rows.slice(channels, channels + kept)));

    const feeds = randomFeeds(readModel(file), 8, 2)!;
    const before = await run(path.join(outDir, 'slices/rate-0.500.onnx'), feeds);
    const expected = await run(encodeModel(half), feeds);
    const got = await run(edited, withRate(feeds, 0.5));
    const full = await run(path.join(outDir, 'slices/rate-1.000.onnx'), feeds);
    const gotFull = await run(edited, withRate(feeds, 1));
    for (const [n, t] of Object.entries(expected)) {
      expect(relativeError(before[n]!, t)).toBeGreaterThan(1e-3);
      expect(relativeError(t, got[n]!)).toBeLessThan(1e-4);
      expect(relativeError(full[n]!, gotFull[n]!)).toBeLessThan(1e-4);
    }
  });

  it('is reachable from the CLI, with --importance; bad values are SLC007', async () => {
    const outDir = path.join(tmp, 'cli-mlp');
    const ok = await runCli([fixture('mlp'), '--groups', '2', '--norm', 'bn', '--importance', 'activation', '-o', outDir, '--json']);
    expect(ok.code).toBe(0);
    const result = JSON.parse(ok.stdout) as { normalization: { mode: string; sites: Record<string, number> }; importance: { mode: string; source: string } };
    expect(result.normalization).toMatchObject({ mode: 'bn', sites: { inserted: 2 } });
    expect(result.importance).toMatchObject({ mode: 'activation', source: 'synthetic' });
    for (const args of [['--norm', 'batch'], ['--importance', 'random']]) {
      const bad = await runCli([fixture('mlp'), '--groups', '2', ...args, '-o', path.join(tmp, 'cli-bad')]);
      expect(bad.code).not.toBe(0);
      expect(bad.stderr).toContain('error SLC007');
    }
  });

  it('onnx.checker (full check) accepts every graph written above', () => {
    const files = cases.flatMap(([name]) => {
      const dir = path.join(tmp, name);
      return ['elastic.onnx', ...fs.readdirSync(path.join(dir, 'slices')).map((f) => `slices/${f}`)].map((f) => path.join(dir, f));
    });
    expect(files.length).toBe(cases.length * (RATES.length + 1));
    const check = 'import sys, onnx\nfor f in sys.argv[1:]:\n    onnx.checker.check_model(onnx.load(f), full_check=True)\n';
    const run = spawnSync('/usr/bin/python3', ['-c', check, ...files], { encoding: 'utf8' });
    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
  });

  it('the inserted norms train: per-rate graphs run in training mode with gradients for their scale and shift', async () => {
    const outDir = path.join(tmp, 'cfg-train');
    const compiled = await compile({ codegen: false, model: fixture('conv-flatten-gemm'), groups: 4, rates: [0.5, 1], outDir, norm: 'bn' });
    const manifest = JSON.parse(fs.readFileSync(compiled.manifestFile, 'utf8')) as Manifest;
    const half = readModel(path.join(outDir, 'slices/rate-0.500.onnx'));
    inferShapes(half);
    const input = randomFeeds(readModel(fixture('conv-flatten-gemm')), 4, 8)!['input']!;
    const x = { dtype: 'float32' as const, dims: [...input.dims], data: input.data as Float32Array };
    const y = { dtype: 'int64' as const, dims: [8], data: BigInt64Array.from({ length: 8 }, (_, i) => BigInt(i % 10)) };
    const result = await modelGradients(half, x, y);
    expect(Number.isFinite(result.loss)).toBe(true);
    for (const bn of manifest.normalization.batchNorms!) {
      for (const name of [bn.scale, bn.bias]) {
        const g = result.gradients.get(name)!;
        expect(Array.from(g.data as Float32Array).some((v) => v !== 0)).toBe(true);
      }
      expect(result.runningStats.has(bn.mean)).toBe(true);
    }
  });

  it('stackRateStatistics puts a rate\'s own statistics in its row', async () => {
    const model = readModel(fixture('resnet-small'));
    inferShapes(model);
    const analysis = coupleChannels(model, { layerNorms: 'pin' });
    const partition = partitionChannels(analysis, 4);
    reorderChannels(model.graph, analysis, partition);
    const inserted = insertBatchNorm(model, analysis, partition);
    mergeAdditions(model.graph, analysis, partition, inserted.additions);
    const site = inserted.sites[1]!;

    // rate 0.5 (k = 2) recalibrated: its own statistics for the kept channels of one BatchNorm
    const half = copyWithAnalysis(model, analysis);
    pruneToRate(half.model, half.analysis, keptWidths(partition, 0.5));
    const feeds = randomFeeds(model, 12, 2)!;
    const gathered = await run(encodeModel(half.model, { dropValueInfo: true }), feeds);
    const own = new Map<string, Float32Array>();
    for (const [value, change] of [[site.mean, (x: number, c: number) => x + 0.3 + 0.01 * c], [site.variance, (x: number) => x * 1.5]] as const) {
      const cut = half.model.graph.valuesByName().get(value.name)!;
      const data = Float32Array.from(cut.const!.numbers(), change);
      expect(data.length).toBeLessThan(value.const!.dims[0]!);
      half.model.graph.setConstant(cut, Tensor.float32([data.length], data));
      own.set(value.name, data);
    }
    const elastic = copyWithAnalysis(model, analysis);
    upgradeOpset(elastic.model, ELASTIC_MIN_OPSET);
    const info = makeElastic(elastic.model, elastic.analysis, partition);
    const entries = stackRateStatistics(elastic.model, inserted.sites, info.activeGroups, 4, (name, k) => (k === 2 ? own.get(name) : undefined));
    expect(entries.length).toBe(8);

    const bytes = encodeModel(elastic.model, { dropValueInfo: true });
    const expected = await run(encodeModel(half.model, { dropValueInfo: true }), feeds);
    const unchanged = await run(encodeModel(model, { dropValueInfo: true }), feeds);
    const atHalf = await run(bytes, withRate(feeds, 0.5));
    const atOne = await run(bytes, withRate(feeds, 1));
    for (const [n, t] of Object.entries(expected)) {
      expect(relativeError(gathered[n]!, t)).toBeGreaterThan(1e-3);
      expect(relativeError(t, atHalf[n]!)).toBeLessThan(1e-4);
      expect(relativeError(unchanged[n]!, atOne[n]!)).toBeLessThan(1e-4);
    }
  });
});

describe('the default normalization', () => {
  it('is bn, except for models with layer norms, which get gn', async () => {
    const conv = await compile({ codegen: false, model: fixture('lenet-bn'), groups: 4, rates: [0.5, 1], outDir: path.join(tmp, 'default-cnn'), calibrate: false });
    expect(conv.normalization.mode).toBe('bn');
    const encoder = path.join(REPO_ROOT, 'test', 'data', 'torch-exports', 'encoder-op17.onnx');
    const transformer = await compile({ codegen: false, model: encoder, groups: 4, rates: [0.5, 1], outDir: path.join(tmp, 'default-encoder'), calibrate: false });
    expect(transformer.normalization.mode).toBe('gn');
    expect(transformer.normalization.sites['layernorm'] ?? 0).toBeGreaterThan(0);
  });
});

describe('--norm bn and the elastic form', () => {
  it('picks the fast form, whose leaves cut their statistics from the per-rate tables', async () => {
    const outDir = path.join(tmp, 'bn-default-form');
    await compile({ codegen: false, model: fixture('lenet-bn'), groups: 4, rates: [0.5, 1], outDir, norm: 'bn', log: () => {} });
    const manifest = JSON.parse(fs.readFileSync(path.join(outDir, 'manifest.json'), 'utf8')) as Manifest;
    expect(manifest.elastic.form).toBe('fast');
    const outer = readModel(path.join(outDir, 'elastic.onnx')).graph.valuesByName();
    for (const bn of manifest.normalization.batchNorms!) {
      expect(outer.get(bn.elastic.mean)!.const!.dims[0]).toBe(4);
      expect(outer.has(bn.mean)).toBe(false);
    }
  });
});
