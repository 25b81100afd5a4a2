// Group norms and the elastic graph: elastic.onnx at each rate equals that rate's pruned graph
// (onnxruntime-node and onnxruntime-web), groups are independent (dropped groups change nothing
// that is kept), and calibration brings the full-rate model close to the original.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import * as ortWeb from 'onnxruntime-web';
import { afterAll, describe, expect, it } from 'vitest';
import type { Manifest } from '../compiler/artifacts.js';
import { decodeModel, encodeModel, encodeTensorProto, readModel } from '../compiler/onnx-codec.js';
import type { Model } from '../compiler/ir.js';
import { compile } from '../compiler/pipeline.js';
import { inferShapes } from '../compiler/shape-inference.js';
import { Tensor } from '../compiler/tensor.js';
import { coupleChannels, type ChannelAnalysis } from '../passes/couple-channels.js';
import { insertGroupNorm } from '../passes/insert-group-norm.js';
import { mergeAdditions } from '../passes/analysis-additions.js';
import { ELASTIC_MIN_OPSET, makeElastic } from '../passes/make-elastic.js';
import { upgradeOpset } from '../passes/upgrade-opset.js';
import { keptWidths, partitionChannels } from '../passes/partition-channels.js';
import { pruneToRate } from '../passes/prune-to-rate.js';
import { reorderChannels } from '../passes/reorder-channels.js';
import { copyWithAnalysis, editDropped } from './helpers/slicing.js';
import { fixtureModels, randomFeeds, REPO_ROOT, type Feeds } from './helpers/models.js';
import { relativeError, withRate } from './helpers/compare.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-elastic-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const paddle = path.join(REPO_ROOT, 'node_modules', '@gutenye', 'ocr-models', 'assets', 'ch_ppocr_mobile_v2.0_cls_infer.onnx');
const wakeword = path.join(REPO_ROOT, 'node_modules', 'openwakeword-js', 'models', 'hello_deepa.onnx');
const models = [...fixtureModels().map((m) => m.file), wakeword, paddle];

type Outputs = Record<string, { dims: readonly number[]; data: Float32Array }>;

async function runNode(model: string | Uint8Array, feeds: Feeds): Promise<Outputs> {
  const session = await ort.InferenceSession.create(model as string, { intraOpNumThreads: 1, logSeverityLevel: 4 });
  try {
    const out = await session.run(feeds);
    return Object.fromEntries(session.outputNames.map((n) => [n, { dims: out[n]!.dims, data: out[n]!.data as Float32Array }]));
  } finally {
    await session.release();
  }
}

async function runWeb(file: string, feeds: Feeds): Promise<Outputs> {
  ortWeb.env.wasm.numThreads = 1;
  const session = await ortWeb.InferenceSession.create(new Uint8Array(fs.readFileSync(file)));
  const webFeeds: Record<string, ortWeb.Tensor> = {};
  for (const [name, t] of Object.entries(feeds)) webFeeds[name] = new ortWeb.Tensor(t.type as 'float32', t.data as Float32Array, t.dims);
  try {
    const out = await session.run(webFeeds);
    return Object.fromEntries(session.outputNames.map((n) => [n, { dims: out[n]!.dims, data: out[n]!.data as Float32Array }]));
  } finally {
    await session.release();
  }
}

describe('elastic graph equals the pruned graph of each rate', () => {
  for (const file of models) {
    it(path.relative(REPO_ROOT, file), async () => {
      const outDir = path.join(tmp, path.basename(file, '.onnx'));
      const result = await compile({ codegen: false, model: file, groups: 4, outDir, elastic: 'lean', norm: 'gn' });
      const manifest = JSON.parse(fs.readFileSync(result.manifestFile, 'utf8')) as Manifest;
      expect(manifest.elastic.file).toBe('elastic.onnx');
      expect(manifest.normalization.mode).toBe('gn');
      const feeds = randomFeeds(readModel(file), 11, 2)!;
      for (const rate of manifest.rates) {
        const pruned = await runNode(path.join(outDir, rate.file), feeds);
        const elastic = await runNode(result.elasticFile, withRate(feeds, rate.rate));
        for (const [name, t] of Object.entries(pruned)) {
          expect(elastic[name]!.dims).toEqual(t.dims);
          expect(relativeError(t.data, elastic[name]!.data)).toBeLessThan(1e-4);
        }
      }
      // one rate in onnxruntime-web (wasm) as well
      const half = manifest.rates.find((r) => r.rate === 0.5)!;
      const pruned = await runNode(path.join(outDir, half.file), feeds);
      const web = await runWeb(result.elasticFile, withRate(feeds, 0.5));
      for (const [name, t] of Object.entries(pruned)) expect(relativeError(t.data, web[name]!.data)).toBeLessThan(1e-4);
    });
  }

  it('clamps rates to [1/G, 1] and rounds up to whole groups', async () => {
    const outDir = path.join(tmp, 'clamp');
    const result = await compile({ codegen: false, model: path.join(REPO_ROOT, 'fixtures', 'mlp.onnx'), groups: 4, outDir, elastic: 'lean' });
    const feeds = randomFeeds(readModel(path.join(REPO_ROOT, 'fixtures', 'mlp.onnx')), 2, 2)!;
    const quarter = await runNode(path.join(outDir, 'slices/rate-0.250.onnx'), feeds);
    const half = await runNode(path.join(outDir, 'slices/rate-0.500.onnx'), feeds);
    const same = (a: Outputs, b: Outputs) => expect(relativeError(a['output']!.data, b['output']!.data)).toBeLessThan(1e-4);
    same(await runNode(result.elasticFile, withRate(feeds, 0.01)), quarter);
    same(await runNode(result.elasticFile, withRate(feeds, 0.3)), half);
    same(await runNode(result.elasticFile, withRate(feeds, 0.5)), half);
  });
});

describe('group independence', () => {
  for (const name of ['resnet-small', 'mobilenet-se', 'concat-net', 'mlp']) {
    it(`${name}: weights of dropped groups change nothing that is kept`, async () => {
      const file = path.join(REPO_ROOT, 'fixtures', `${name}.onnx`);
      const model = readModel(file);
      inferShapes(model);
      const analysis = coupleChannels(model, { layerNorms: 'rewrite' });
      const partition = partitionChannels(analysis, 4);
      reorderChannels(model.graph, analysis, partition);
      mergeAdditions(model.graph, analysis, partition, insertGroupNorm(model, analysis, partition).additions);
      const rate = 0.5;
      const kept = keptWidths(partition, rate);
      const feeds = randomFeeds(readModel(file), 5, 2)!;

      /** Every intermediate activation of the pruned graph, and the elastic output. */
      const observe = async (from: { model: Model; analysis: ChannelAnalysis }) => {
        const { model: pruned, analysis: prunedAnalysis } = copyWithAnalysis(from.model, from.analysis);
        pruneToRate(pruned, prunedAnalysis, kept);
        const values = pruned.graph.nodes.flatMap((n) => n.outputs).filter((v) => v.name && v.elemType === 1 && !pruned.graph.outputs.includes(v));
        pruned.graph.outputs.push(...values);
        const activations = await runNode(encodeModel(pruned, { dropValueInfo: true }), feeds);
        const { model: elastic, analysis: elasticAnalysis } = copyWithAnalysis(from.model, from.analysis);
        upgradeOpset(elastic, ELASTIC_MIN_OPSET);
        makeElastic(elastic, elasticAnalysis, partition);
        const out = await runNode(encodeModel(elastic, { dropValueInfo: true }), withRate(feeds, rate));
        return { activations, out };
      };
      const base = await observe({ model, analysis });

      const changed = copyWithAnalysis(model, analysis);
      const touched = editDropped(changed.model, changed.analysis, kept, (x) => x * 3 + 1);
      expect(touched).toBeGreaterThan(0);
      const after = await observe(changed);
      for (const [n, t] of Object.entries(base.activations)) expect(after.activations[n]!.data).toEqual(t.data);
      for (const [n, t] of Object.entries(base.out)) expect(relativeError(t.data, after.out[n]!.data)).toBeLessThan(1e-6);
    });
  }
});

describe('--norm none', () => {
  it('folds BatchNorms into the layers: the rate-1 graph still equals the original', async () => {
    for (const name of ['resnet-small', 'mobilenet-se']) {
      const file = path.join(REPO_ROOT, 'fixtures', `${name}.onnx`);
      const result = await compile({ codegen: false, model: file, groups: 4, rates: [0.5, 1], outDir: path.join(tmp, `none-${name}`), norm: 'none' });
      expect(result.normalization.sites['folded']).toBe(8);
      const full = readModel(path.join(result.outDir, 'slices/rate-1.000.onnx'));
      expect(full.graph.nodes.some((n) => n.op === 'BatchNormalization')).toBe(false);
      const feeds = randomFeeds(readModel(file), 4, 2)!;
      const original = await runNode(file, feeds);
      const folded = await runNode(path.join(result.outDir, 'slices/rate-1.000.onnx'), feeds);
      for (const [n, t] of Object.entries(original)) expect(relativeError(t.data, folded[n]!.data)).toBeLessThan(1e-4);
      const half = await runNode(path.join(result.outDir, 'slices/rate-0.500.onnx'), feeds);
      const elastic = await runNode(result.elasticFile, withRate(feeds, 0.5));
      for (const [n, t] of Object.entries(half)) expect(relativeError(t.data, elastic[n]!.data)).toBeLessThan(1e-4);
    }
  });
});

describe('calibration', () => {
  it('brings the full-rate model close to the original on the BatchNorm fixtures', async () => {
    for (const name of ['resnet-small', 'mobilenet-se', 'concat-net']) {
      const result = await compile({ codegen: false, model: path.join(REPO_ROOT, 'fixtures', `${name}.onnx`), groups: 4, rates: [1], outDir: path.join(tmp, `cal-${name}`), norm: 'gn' });
      const c = result.normalization.calibration!;
      expect(c.source).toBe('synthetic');
      expect(c.after.relativeError).toBeLessThan(c.before.relativeError);
      expect(c.after.top1).toBeGreaterThanOrEqual(0.9);
    }
  });

  it('rewrites every layer norm over sliced features, however small its groups', async () => {
    const result = await compile({ codegen: false, model: wakeword, groups: 8, rates: [0.5, 1], outDir: path.join(tmp, 'wakeword-g8') });
    expect(result.normalization.sites).toEqual({ layernorm: 2 });
    expect(result.layers.filter((l) => l.sliced).length).toBe(2);
  });

  it('reads a calibration batch from a TensorProto file', async () => {
    const file = path.join(REPO_ROOT, 'fixtures', 'lenet-bn.onnx');
    const batch = randomFeeds(readModel(file), 9, 32)!['input']!;
    const pb = path.join(tmp, 'lenet-input.pb');
    fs.writeFileSync(pb, encodeTensorProto(Tensor.fromTyped(1, [...batch.dims], batch.data as Float32Array, 'input')));
    const result = await compile({ codegen: false, model: file, groups: 4, rates: [1], outDir: path.join(tmp, 'cal-file'), calibration: pb });
    expect(result.normalization.calibration!.source).toBe('file');
    expect(result.normalization.calibration!.batch).toBe(32);
  });
});
