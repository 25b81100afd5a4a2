import * as fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import * as ort from 'onnxruntime-node';
import { encodeModel, readModel } from '../compiler/onnx-codec.js';
import { fixtures } from '../fixtures/index.js';
import { buildBigModel } from '../fixtures/big.js';
import { Rng } from '../compiler/rng.js';

function randomBatch(shape: (number | string | null)[], batch: number, seed: number): { data: Float32Array; dims: number[] } {
  const dims = shape.map((d) => (typeof d === 'number' ? d : batch));
  const size = dims.reduce((a, b) => a * b, 1);
  return { data: new Rng(seed).uniform(size, -1, 1), dims };
}

describe.each(fixtures.map((f) => [f.name, f] as const))('fixture %s', (_name, fixture) => {
  it('is checked in, small, and identical to what its builder writes', () => {
    const onDisk = fs.readFileSync(fixture.file);
    expect(onDisk.byteLength).toBeLessThan(1024 * 1024);
    const rebuilt = encodeModel(fixture.build());
    expect(Buffer.from(rebuilt).equals(onDisk), `${fixture.file} drifted from its builder; run npx tsx fixtures/build.ts`).toBe(true);
  });

  it('looks like an exported model', () => {
    const model = readModel(fixture.file);
    expect(model.producerName).toBe('slicec-fixtures');
    expect([7n, 8n]).toContain(model.irVersion);
    expect(model.graph.inputs.map((v) => v.name)).toEqual(fixture.inputs.map((i) => i.name));
    expect(model.graph.inputs[0]!.shape![0]).toBe('N');
    expect(model.graph.outputs[0]!.shape).toEqual(['N', 10]);
    expect(model.graph.nodes.every((n) => n.name.startsWith('/'))).toBe(true);
  });

  it('runs in onnxruntime on a batch of 2 with finite outputs of the right shape', async () => {
    const session = await ort.InferenceSession.create(fixture.file);
    const feeds: Record<string, ort.Tensor> = {};
    fixture.inputs.forEach((input, i) => {
      const { data, dims } = randomBatch(input.shape, 2, 17 + i);
      feeds[input.name] = new ort.Tensor('float32', data, dims);
    });
    const result = await session.run(feeds);
    const out = result[session.outputNames[0]!]!;
    expect([...out.dims]).toEqual([2, 10]);
    const values = out.data as Float32Array;
    expect(values.every((v) => Number.isFinite(v))).toBe(true);
    expect(values.some((v) => v !== 0)).toBe(true);
  });
});

describe('buildBigModel', () => {
  it('reaches the target size and runs', async () => {
    const bytes = encodeModel(buildBigModel(6 * 1024 * 1024));
    expect(bytes.byteLength).toBeGreaterThanOrEqual(6 * 1024 * 1024);
    const session = await ort.InferenceSession.create(bytes);
    const input = new ort.Tensor('float32', new Rng(3).uniform(2 * 1024, -1, 1), [2, 1024]);
    const out = (await session.run({ input })).output!;
    expect([...out.dims]).toEqual([2, 10]);
    expect((out.data as Float32Array).every((v) => Number.isFinite(v))).toBe(true);
  });
});
