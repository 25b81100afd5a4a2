// Attention heads without PyTorch: a hand-built attention block in the layout many transformer
// exports use (Reshape [B, T, H, hd], Transpose to [B, H, T, hd], batched MatMuls, merge back
// with Reshape [B, T, H·hd]). q, k and v are cut in whole heads: rate 1 with --norm keep equals
// the original, rate .5 equals the full model with the dropped heads zeroed, and the elastic
// graph equals each pruned graph. (PyTorch's own [T, B·H, hd] layout is covered by the committed
// encoder export in torch-exports.test.ts.)

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import type { Manifest } from '../compiler/artifacts.js';
import { Model, Value, tensorType } from '../compiler/ir.js';
import { encodeModel, writeModel } from '../compiler/onnx-codec.js';
import { OpBuilder } from '../compiler/op-builder.js';
import { compile } from '../compiler/pipeline.js';
import { inferShapes } from '../compiler/shape-inference.js';
import { DataType, Tensor } from '../compiler/tensor.js';
import { coupleChannels, explainLayers } from '../passes/couple-channels.js';
import { prunedAndMasked } from './helpers/slicing.js';
import { randomFeeds, Rng, type Feeds } from './helpers/models.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-heads-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const [T, D, H] = [5, 16, 4];
const HD = D / H;

/** x[batch, 5, 16] → q, k, v (4 heads of 4) → softmax(q·kᵀ/2)·v → output projection → head. */
function build(): Model {
  const rng = new Rng(11);
  const model = new Model();
  model.opsetImports.set('', 13n);
  const g = model.graph;
  const b = new OpBuilder(g, 13);
  const param = (name: string, dims: number[]): Value =>
    g.addInitializer(name, Tensor.float32(dims, Array.from({ length: dims.reduce((p, d) => p * d, 1) }, () => rng.next() - 0.5)));
  const x = new Value('x', tensorType(DataType.FLOAT, ['batch', T, D]));
  g.claimName('x');
  g.inputs.push(x);
  const heads = (name: string): Value => {
    const p = b.add(b.matMul(x, param(`${name}.weight`, [D, D])), param(`${name}.bias`, [D]));
    return b.transpose(b.reshape(p, [0, T, H, HD]), [0, 2, 1, 3]);
  };
  const [q, k, v] = [heads('q'), heads('k'), heads('v')];
  const scores = b.div(b.matMul(q, b.transpose(k, [0, 1, 3, 2])), b.floatConst([2], []));
  const attn = b.matMul(b.op('Softmax', [scores], { axis: -1 })[0]!, v);
  const merged = b.reshape(b.transpose(attn, [0, 2, 1, 3]), [0, T, D]);
  const projected = b.relu(b.add(b.matMul(merged, param('out.weight', [D, D])), param('out.bias', [D])));
  g.outputs.push(b.matMul(b.reduce('ReduceMean', projected, [1], false), param('head.weight', [D, 3])));
  inferShapes(model);
  return model;
}

async function run(model: Uint8Array | string, feeds: Feeds): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(model as string, { logSeverityLevel: 4 });
  try {
    return (await session.run(feeds))[session.outputNames[0]!]!.data as Float32Array;
  } finally {
    await session.release();
  }
}

function expectClose(a: Float32Array, b: Float32Array): void {
  expect(a.length).toBe(b.length);
  for (let i = 0; i < a.length; i++) expect(a[i]).toBeCloseTo(b[i]!, 5);
}

describe('attention heads', () => {
  it('cuts q, k, v and the output projection in whole heads', () => {
    const model = build();
    const analysis = coupleChannels(model);
    const layers = explainLayers(analysis);
    const qkv = layers.filter((l) => ['q', 'k', 'v'].some((n) => l.node.inputs[1]?.name === `${n}.weight`));
    expect(qkv.map((l) => l.sliced)).toEqual([true, true, true]);
    expect(new Set(qkv.map((l) => l.union)).size).toBe(1);
    const root = analysis.unions.find((u) => u.id === qkv[0]!.union)!;
    expect(root.unit).toBe(HD);
    // the merge Reshape's width entry follows the kept heads
    expect(analysis.shapeRewrites.filter((r) => r.node.op === 'Reshape').map((r) => r.entry)).toEqual([2, 2, 2, 2]);
  });

  it('rate .5 computes the sub-network; rate 1 and the elastic graph agree', async () => {
    const model = build();
    const feeds = randomFeeds(model, 5, 2)!;
    const file = path.join(tmp, 'attention.onnx');
    writeModel(model, file);
    const reference = await run(file, feeds);

    const { pruned, masked, zeroed } = prunedAndMasked(build(), 4, 0.5);
    expect(zeroed).toBeGreaterThan(0);
    expectClose(await run(encodeModel(pruned), feeds), await run(encodeModel(masked), feeds));

    const outDir = path.join(tmp, 'out');
    const result = await compile({ codegen: false, model: file, groups: 4, rates: [0.5, 1], norm: 'keep', outDir, log: () => {} });
    const manifest = JSON.parse(fs.readFileSync(result.manifestFile, 'utf8')) as Manifest;
    expect(manifest.rates[0]!.macRatio).toBeLessThan(0.6);
    for (const rate of manifest.rates) {
      const slice = await run(path.join(outDir, rate.file), feeds);
      expectClose(await run(result.elasticFile, { ...feeds, [manifest.elastic.rateInput]: new ort.Tensor('float32', Float32Array.of(rate.rate), []) }), slice);
      if (rate.rate === 1) expectClose(slice, reference);
    }
  });
});
