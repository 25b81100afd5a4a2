// The slicing compiler end to end: every emitted graph runs with the original's signature, the
// rate-1 graph equals the original, pruned graphs compute exactly the sub-network, and the
// manifest's MAC counts match an independent count of the emitted graphs.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { compile } from '../compiler/pipeline.js';
import type { Manifest } from '../compiler/artifacts.js';
import { decodeModel, encodeModel, readModel } from '../compiler/onnx-codec.js';
import type { Model } from '../compiler/ir.js';
import { inferShapes } from '../compiler/shape-inference.js';
import { gatherAxis } from '../compiler/tensor-ops.js';
import { Tensor } from '../compiler/tensor.js';
import { coupleChannels, type ChannelAnalysis } from '../passes/couple-channels.js';
import { keptWidths, partitionChannels } from '../passes/partition-channels.js';
import { reorderChannels } from '../passes/reorder-channels.js';
import { pruneToRate } from '../passes/prune-to-rate.js';
import { copyWithAnalysis, editDropped } from './helpers/slicing.js';
import { fixtureModels, openwakewordModels, randomFeeds, REPO_ROOT, type Feeds, runTensors as run } from './helpers/models.js';
import { maxRelativeError } from './helpers/compare.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-compile-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const paddleDir = path.join(REPO_ROOT, 'node_modules', '@gutenye', 'ocr-models', 'assets');
const realModels = [
  ...openwakewordModels().map((m) => m.file),
  path.join(paddleDir, 'ch_ppocr_mobile_v2.0_cls_infer.onnx'),
  path.join(paddleDir, 'ch_PP-OCRv4_det_infer.onnx'),
];
const models = [...fixtureModels().map((m) => m.file), ...realModels];

/** An independent MAC count (per sample) from an emitted file's own shapes. */
function countMacs(file: string): number {
  const model = readModel(file);
  inferShapes(model);
  let macs = 0;
  const num = (d: unknown): number => (typeof d === 'number' ? d : 1);
  for (const node of model.graph.nodes) {
    const out = node.outputs[0]?.shape?.map(num);
    if (!out) continue;
    const perSample = out.slice(1).reduce((p, d) => p * d, 1);
    if (node.op === 'Conv') {
      const w = node.inputs[1]!.shape!.map(num);
      macs += perSample * w.slice(1).reduce((p, d) => p * d, 1);
    } else if (node.op === 'ConvTranspose') {
      // every input element is spread over (M/group)·kernel outputs
      const x = node.inputs[0]!.shape!.map(num);
      const w = node.inputs[1]!.shape!.map(num);
      macs += x.slice(1).reduce((p, d) => p * d, 1) * w.slice(1).reduce((p, d) => p * d, 1);
    } else if (node.op === 'Gemm' || node.op === 'MatMul') {
      const x = node.inputs[0]!.shape!.map(num);
      const k = node.op === 'Gemm' && node.attrInt('transA', 0) ? x[0]! : x[x.length - 1]!;
      macs += perSample * k;
    }
  }
  return macs;
}

describe('compile', () => {
  for (const file of models) {
    it(`${path.relative(REPO_ROOT, file)}: every rate runs with the original signature; rate 1 matches`, async () => {
      const outDir = path.join(tmp, path.basename(file, '.onnx'));
      const result = await compile({ codegen: false, model: file, groups: 4, outDir, norm: 'keep' });
      const manifest = JSON.parse(fs.readFileSync(result.manifestFile, 'utf8')) as Manifest;
      expect(manifest.format).toBe('slicec/1');
      expect(manifest.rates.map((r) => r.rate)).toEqual([0.25, 0.5, 0.75, 1]);
      const original = readModel(file);
      const feeds = randomFeeds(original, 7, 2)!;
      const reference = await run(file, feeds);
      for (const rate of manifest.rates) {
        const emitted = path.join(outDir, rate.file);
        const emittedModel = readModel(emitted);
        expect(emittedModel.graph.inputs.map((v) => v.name)).toEqual(original.graph.inputs.map((v) => v.name));
        expect(emittedModel.graph.outputs.map((v) => [v.name, v.type])).toEqual(original.graph.outputs.map((v) => [v.name, v.type]));
        expect(emittedModel.opset()).toBe(original.opset());
        const outputs = await run(emitted, feeds);
        for (const [name, tensor] of Object.entries(reference)) {
          expect(outputs[name]!.dims).toEqual(tensor.dims);
          if (rate.rate === 1) expect(maxRelativeError(tensor, outputs[name]!)).toBeLessThan(1e-4);
        }
        expect(rate.macs).toBe(countMacs(emitted));
      }
    });
  }

  it('MACs at rate r are about r² of the full model on the conv fixtures', async () => {
    for (const name of ['resnet-small', 'mobilenet-se', 'concat-net', 'lenet-bn']) {
      const outDir = path.join(tmp, `${name}-macs`);
      await compile({ codegen: false, model: path.join(REPO_ROOT, 'fixtures', `${name}.onnx`), groups: 8, rates: [0.5, 1], outDir });
      const manifest = JSON.parse(fs.readFileSync(path.join(outDir, 'manifest.json'), 'utf8')) as Manifest;
      const half = manifest.rates.find((r) => r.rate === 0.5)!;
      // first and last layers keep their input/output widths, so a little above 0.25
      expect(half.macRatio).toBeGreaterThan(0.2);
      expect(half.macRatio).toBeLessThan(0.4);
    }
  });
});

/** Run the analysis passes and return what pruning needs. */
function analyse(file: string, groups: number) {
  const model = readModel(file);
  inferShapes(model);
  const analysis = coupleChannels(model);
  const partition = partitionChannels(analysis, groups);
  reorderChannels(model.graph, analysis, partition);
  return { model, analysis, partition, snapshot: encodeModel(model) };
}

describe('pruning computes exactly the sub-network', () => {
  for (const fixture of fixtureModels()) {
    it(fixture.name, async () => {
      const state = analyse(fixture.file, 4);
      const rate = 0.5;
      const feeds = randomFeeds(readModel(fixture.file), 3, 2)!;
      const pruneFrom = async (copy: { model: Model; analysis: ChannelAnalysis }): Promise<Record<string, ort.Tensor>> => {
        pruneToRate(copy.model, copy.analysis, keptWidths(state.partition, rate));
        return run(encodeModel(copy.model), feeds);
      };
      const pruned = await pruneFrom(copyWithAnalysis(state.model, state.analysis));

      // perturbing dropped weights changes nothing in the pruned graph
      const perturbed = copyWithAnalysis(state.model, state.analysis);
      editDropped(perturbed.model, perturbed.analysis, keptWidths(state.partition, rate), (x, i) => x + Math.sin(i) * 10);
      const prunedPerturbed = await pruneFrom(perturbed);
      for (const name of Object.keys(pruned)) expect(Array.from(prunedPerturbed[name]!.data as Float32Array)).toEqual(Array.from(pruned[name]!.data as Float32Array));

      // the full model with every dropped weight zeroed computes the same as the pruned graph
      const masked = decodeModel(state.snapshot, null);
      editDropped(masked, state.analysis, keptWidths(state.partition, rate), () => 0);
      const full = await run(encodeModel(masked), feeds);
      for (const name of Object.keys(pruned)) expect(maxRelativeError(full[name]!, pruned[name]!)).toBeLessThan(1e-4);

      // and something was actually dropped
      const sliced = [...state.analysis.params.keys()].some((v) => {
        const copy = copyWithAnalysis(state.model, state.analysis);
        pruneToRate(copy.model, copy.analysis, keptWidths(state.partition, rate));
        return copy.model.graph.valuesByName().get(v.name)!.const!.size < v.const!.size;
      });
      expect(sliced).toBe(true);
    });
  }
});

describe('gatherAxis', () => {
  it('takes indices along a middle axis', () => {
    const t = Tensor.float32([2, 3, 2], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    const g = gatherAxis(t, 1, [2, 0]);
    expect(g.dims).toEqual([2, 2, 2]);
    expect(Array.from(g.data() as Float32Array)).toEqual([4, 5, 0, 1, 10, 11, 6, 7]);
  });
});
