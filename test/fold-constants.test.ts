// fold-constants on a small graph shaped like PyTorch's exports (no PyTorch needed): an
// Identity-aliased bias gets its own copy, a Transpose of a weight becomes the transposed weight, a Shape → Gather → Unsqueeze → Concat Reshape target
// becomes a constant that keeps the batch symbolic, a fused projection cut by three Slices becomes
// three MatMuls; the outputs stay the same and couple-channels then slices every layer.

import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { Model, Value, tensorType } from '../compiler/ir.js';
import { encodeModel } from '../compiler/onnx-codec.js';
import { OpBuilder } from '../compiler/op-builder.js';
import { inferShapes } from '../compiler/shape-inference.js';
import { DataType, Tensor } from '../compiler/tensor.js';
import { coupleChannels, explainLayers } from '../passes/couple-channels.js';
import { foldConstants } from '../passes/fold-constants.js';
import { randomFeeds, Rng } from './helpers/models.js';

function weights(rng: Rng, dims: number[]): Tensor {
  return Tensor.float32(dims, Array.from({ length: dims.reduce((p, d) => p * d, 1) }, () => rng.next() - 0.5));
}

/** x[batch, 6, 8] → two dense layers sharing an aliased bias → fused q/k/v → channels-first flatten by a run-time target. */
function build(): Model {
  const rng = new Rng(7);
  const model = new Model();
  model.opsetImports.set('', 13n);
  const g = model.graph;
  const b = new OpBuilder(g, 13);
  const x = new Value('x', tensorType(DataType.FLOAT, ['batch', 6, 8]));
  g.claimName('x');
  g.inputs.push(x);
  const bias = g.addInitializer('fc1.bias', weights(rng, [8]));
  const alias = b.op('Identity', [bias], {}, { outputNames: ['fc2.bias'] })[0]!;
  // without constant folding an export multiplies by Transpose(W) (W stored as [out, in])
  const fc1 = b.transpose(g.addInitializer('fc1.weight', weights(rng, [8, 8])), [1, 0]);
  let h = b.add(b.matMul(x, fc1), bias);
  h = b.relu(b.add(b.matMul(h, g.addInitializer('fc2.weight', weights(rng, [8, 8]))), alias));
  const fused = b.add(g.addInitializer('qkv.bias', weights(rng, [24])), b.matMul(h, g.addInitializer('qkv.weight', weights(rng, [8, 24]))));
  const parts = [0, 1, 2].map((i) => b.slice(fused, [i * 8], [(i + 1) * 8], [-1]));
  // channels first, so the flatten keeps a channel prefix a feature prefix
  const mixed = b.transpose(b.mul(b.add(parts[0]!, parts[1]!), parts[2]!), [0, 2, 1]);
  const batch = b.unsqueeze(b.gather(b.shape(mixed), 0), [0]);
  const flat = b.reshape(mixed, b.concat([batch, b.int64Const([48], 'width')], 0));
  const out = b.matMul(flat, g.addInitializer('head.weight', weights(rng, [48, 3])));
  g.outputs.push(out);
  inferShapes(model);
  return model;
}

async function run(model: Model, feeds: Record<string, ort.Tensor>): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(encodeModel(model), { logSeverityLevel: 4 });
  try {
    return (await session.run(feeds))[session.outputNames[0]!]!.data as Float32Array;
  } finally {
    await session.release();
  }
}

describe('fold-constants', () => {
  it('folds aliases, run-time Reshape targets and fused projections without changing outputs', async () => {
    const model = build();
    const feeds = randomFeeds(model, 3, 2)!;
    const before = await run(model, feeds);
    const unfolded = explainLayers(coupleChannels(model));
    expect(unfolded.filter((l) => l.sliced)).toHaveLength(0);

    const folded = build();
    expect(foldConstants(folded)).toMatchObject({ aliases: 2, projections: 1, shapes: 1 });
    const g = folded.graph;
    expect(g.nodes.map((n) => n.op)).not.toContain('Identity');
    expect(g.nodes.filter((n) => n.op === 'Transpose')).toHaveLength(1); // the activation's, not fc1's
    expect(g.nodes.map((n) => n.op)).not.toContain('Shape');
    expect(g.nodes.filter((n) => n.op === 'MatMul')).toHaveLength(6);
    const aliased = g.initializers.find((v) => v.name === 'fc2.bias')!;
    expect(aliased.const!.numbers()).toEqual(g.initializers.find((v) => v.name === 'fc1.bias')!.const!.numbers());
    const reshape = g.nodes.find((n) => n.op === 'Reshape')!;
    expect(reshape.inputs[1]!.const!.bigints()).toEqual([0n, 48n]);
    const after = await run(folded, feeds);
    for (let i = 0; i < before.length; i++) expect(after[i]).toBeCloseTo(before[i]!, 5);

    // every layer but the output one (graph output) is sliceable now
    const layers = explainLayers(coupleChannels(folded));
    expect(layers.filter((l) => !l.sliced).map((l) => l.reason)).toEqual([`reaches graph output ${g.outputs[0]!.name}`]);
  });

  it('leaves a Reshape target alone when more than one entry is unknown', () => {
    const model = new Model();
    model.opsetImports.set('', 13n);
    const g = model.graph;
    const b = new OpBuilder(g, 13);
    const x = new Value('x', tensorType(DataType.FLOAT, ['a', 'b', 4]));
    g.claimName('x');
    g.inputs.push(x);
    // [a, b, 4] → [b, a, 4]: neither symbol sits where the input has it, so no 0 can stand for it
    const dims = b.shape(x);
    const y = b.reshape(x, b.concat([b.gather(dims, [1]), b.gather(dims, [0]), b.int64Const([4], 'tail')], 0));
    g.outputs.push(y);
    inferShapes(model);
    expect(foldConstants(model).shapes).toBe(0);
  });
});
