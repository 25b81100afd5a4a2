// SlicedModel end to end on a compiled fixture: per-rate and elastic modes against bare ORT runs
// of the same graphs, the policy under deadlines, feed validation, accuracy from the manifest,
// dynamic batching, the CUDA → CPU fallback and a draining close().

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compile } from '../compiler/pipeline.js';
import { isUserError } from '../compiler/diagnostics.js';
import type { NdArray } from '../runtime/ndarray.js';
import { runFloat } from '../runtime/session.js';
import { ShedError, SlicedModel } from '../runtime/sliced-model.js';
import { REPO_ROOT } from './helpers/models.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-sliced-model-'));
const dir = path.join(tmp, 'resnet.sliced');
let model: SlicedModel;

function image(batch: number, seed: number): NdArray {
  const data = new Float32Array(batch * 3 * 32 * 32);
  let s = seed;
  for (let i = 0; i < data.length; i++) {
    s = (s * 1664525 + 1013904223) >>> 0;
    data[i] = s / 2 ** 32 - 0.5;
  }
  return { dtype: 'float32', dims: [batch, 3, 32, 32], data };
}

async function expected(rate: number, x: NdArray): Promise<Float32Array> {
  const file = path.join(dir, 'slices', `rate-${rate.toFixed(3)}.onnx`);
  const out = await runFloat(file, { input: { dims: x.dims, data: x.data as Float32Array } });
  return out.output!.data;
}

function expectClose(actual: ArrayLike<number>, wanted: ArrayLike<number>, tol = 1e-5): void {
  expect(actual.length).toBe(wanted.length);
  let worst = 0;
  for (let i = 0; i < wanted.length; i++) worst = Math.max(worst, Math.abs(actual[i]! - wanted[i]!) / (1 + Math.abs(wanted[i]!)));
  expect(worst).toBeLessThan(tol);
}

beforeAll(async () => {
  await compile({ codegen: false, model: path.join(REPO_ROOT, 'fixtures', 'resnet-small.onnx'), groups: 4, outDir: dir, norm: 'keep', log: () => {} });
  model = await SlicedModel.load(dir, { workers: 1 });
});

afterAll(async () => {
  await model?.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('SlicedModel', () => {
  it('reads the manifest: name, rates, signatures', () => {
    expect(model.name).toBe('resnet-small');
    expect(model.rates.map((r) => r.rate)).toEqual([0.25, 0.5, 0.75, 1]);
    expect(model.inputs).toEqual([{ name: 'input', dtype: 'float32', shape: ['N', 3, 32, 32] }]);
    expect(model.profileSnapshot().every((p) => p.intercept + p.slope > 0)).toBe(true);
  });

  it('per-rate mode answers exactly what the rate graph answers, with timings', async () => {
    const x = image(2, 7);
    for (const rate of [0.25, 0.5, 0.75, 1]) {
      const result = await model.run({ input: x }, { rate });
      expect(result.rate).toBe(rate);
      expect(result.outputs.output!.dims).toEqual([2, 10]);
      expectClose(result.outputs.output!.data as Float32Array, await expected(rate, x));
      expect(result.serviceMs).toBeGreaterThan(0);
      expect(result.queueMs).toBeGreaterThanOrEqual(0);
      expect(result.totalMs).toBeGreaterThanOrEqual(result.serviceMs);
    }
    expect(x.data.length).toBe(2 * 3 * 32 * 32); // the caller's array is not detached
  });

  it('elastic mode runs elastic.onnx at each rate and matches the rate graphs', async () => {
    const elastic = await SlicedModel.load(dir, { workers: 1, mode: 'elastic', profileRuns: 1 });
    try {
      expect(elastic.mode).toBe('elastic');
      const x = image(1, 11);
      for (const rate of [0.25, 0.5, 1]) {
        const result = await elastic.run({ input: x }, { rate });
        expectClose(result.outputs.output!.data as Float32Array, await expected(rate, x), 1e-4);
      }
    } finally {
      await elastic.close();
    }
  });

  it('the policy serves full width with room, the smallest rate without, and sheds on request', async () => {
    const x = image(1, 3);
    expect((await model.run({ input: x })).rate).toBe(1);
    expect((await model.run({ input: x }, { deadlineMs: 1000 })).rate).toBe(1);
    expect((await model.run({ input: x }, { deadlineMs: 1e-6 })).rate).toBe(0.25);
    await expect(model.run({ input: x }, { deadlineMs: 1e-6, shed: true })).rejects.toBeInstanceOf(ShedError);
    // A fixed rate keeps its width; with shed it refuses what it cannot answer in time.
    expect((await model.run({ input: x }, { rate: 1, deadlineMs: 1e-6 })).rate).toBe(1);
    await expect(model.run({ input: x }, { rate: 1, deadlineMs: 1e-6, shed: true })).rejects.toBeInstanceOf(ShedError);
    expect((await model.run({ input: x }, { rate: 1, deadlineMs: 1000, shed: true })).rate).toBe(1);
  });

  it('a burst under a tight deadline is served at lower rates than the same requests one by one', async () => {
    const x = image(1, 5);
    const full = model.predictServiceMs(3, 1);
    const deadlineMs = full * 4;
    const burst = await Promise.all(Array.from({ length: 40 }, () => model.run({ input: x }, { deadlineMs })));
    expect(Math.min(...burst.map((r) => r.rate))).toBeLessThan(1);
    expect(burst.some((r) => r.queueMs > 0)).toBe(true);
  });

  it('rejects feeds that do not fit the manifest with SLC017', async () => {
    const x = image(1, 1);
    const cases: [Record<string, NdArray>, RegExp][] = [
      [{}, /input "input" is missing/],
      [{ input: x, extra: x }, /unknown input "extra"/],
      [{ input: { ...x, dtype: 'float64', data: new Float64Array(x.data.length) } }, /dtype float64/],
      [{ input: { ...x, dims: [1, 3, 32, 31] } }, /shape \[1, 3, 32, 31\]/],
      [{ input: { ...x, dims: [2, 3, 32, 32] } }, /holds 3072 values/],
    ];
    for (const [feeds, message] of cases) {
      const error = await model.run(feeds).catch((e: unknown) => e);
      expect(isUserError(error) && error.code === 'SLC017').toBe(true);
      expect((error as Error).message).toMatch(message);
    }
    await expect(model.run({ input: x }, { rate: 0.3 })).rejects.toThrow(/rate 0.3 is not one/);
    await expect(model.run({ input: x }, { minAccuracy: 0.5 })).rejects.toThrow(/records none/);
    await expect(model.run({ input: x }, { outputs: ['nope'] })).rejects.toThrow(/unknown output/);
  });

  it('ranks rates by the accuracy the manifest records and honours a floor', async () => {
    const scored = path.join(tmp, 'scored.sliced');
    fs.cpSync(dir, scored, { recursive: true });
    const manifest = JSON.parse(fs.readFileSync(path.join(scored, 'manifest.json'), 'utf8'));
    const accuracy = [0.6, 0.9, 0.8, 0.85];
    manifest.rates.forEach((r: { accuracy?: number }, i: number) => (r.accuracy = accuracy[i]));
    fs.writeFileSync(path.join(scored, 'manifest.json'), JSON.stringify(manifest));
    const m = await SlicedModel.load(scored, { workers: 1, profileRuns: 1 });
    try {
      const x = image(1, 2);
      expect((await m.run({ input: x })).rate).toBe(0.5);
      expect((await m.run({ input: x }, { deadlineMs: 1e-6, minAccuracy: 0.7 })).rate).toBe(0.5);
      expect((await m.run({ input: x }, { deadlineMs: 1e-6 })).rate).toBe(0.25);
    } finally {
      await m.close();
    }
  });

  it('dynamic batching joins concurrent requests and splits the answers', async () => {
    const m = await SlicedModel.load(dir, { workers: 1, maxBatch: 8, maxQueueDelayMs: 20, profileRuns: 1 });
    try {
      const inputs = Array.from({ length: 6 }, (_, i) => image(1, 100 + i));
      const results = await Promise.all(inputs.map((x) => m.run({ input: x }, { rate: 0.5 })));
      expect(Math.max(...results.map((r) => r.batchRows))).toBeGreaterThan(1);
      for (let i = 0; i < inputs.length; i++) expectClose(results[i]!.outputs.output!.data as Float32Array, await expected(0.5, inputs[i]!));
    } finally {
      await m.close();
    }
  });

  it('asking for CUDA without it warns once and runs on CPU', async () => {
    const warnings: string[] = [];
    const m = await SlicedModel.load(dir, { workers: 2, device: 'cuda', profileRuns: 1, warn: (t) => warnings.push(t) });
    try {
      expect(m.device).toBe('cpu');
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatch(/CUDA was asked for but cannot be used .*running on CPU/);
      expect((await m.run({ input: image(1, 9) }, { rate: 1 })).rate).toBe(1);
    } finally {
      await m.close();
    }
  });

  it('a graph onnxruntime cannot load is a user error, with workers or without, and the process lives on', async () => {
    const broken = path.join(tmp, 'broken.sliced');
    fs.cpSync(dir, broken, { recursive: true });
    const file = path.join(broken, 'slices', 'rate-0.500.onnx');
    fs.writeFileSync(file, fs.readFileSync(file).subarray(0, 2000));
    for (const workers of [2, 0]) {
      const error = await SlicedModel.load(broken, { workers, profileRuns: 1 }).then(() => null, (e: unknown) => e);
      expect(isUserError(error), `workers ${workers}: ${String(error)}`).toBe(true);
      expect((error as Error).message).toContain('onnxruntime cannot load a graph of the folder');
      expect(JSON.stringify((error as { toJSON(): unknown }).toJSON())).toContain('rate-0.500.onnx');
    }
  });

  it('close() finishes what is queued and then refuses', async () => {
    const m = await SlicedModel.load(dir, { workers: 1, profileRuns: 1 });
    const pending = Array.from({ length: 8 }, (_, i) => m.run({ input: image(1, i) }, { rate: 0.25 }));
    await m.close();
    expect((await Promise.all(pending)).length).toBe(8);
    await expect(m.run({ input: image(1, 0) })).rejects.toThrow(/closing/);
  });

  it('workers 0 runs the sessions on the calling thread, per rate and elastic, with the same answers', async () => {
    for (const mode of ['per-rate', 'elastic'] as const) {
      const inline = await SlicedModel.load(dir, { workers: 0, mode, profileRuns: 1 });
      try {
        expect(inline.workers).toBe(1);
        const x = image(2, 13);
        // concurrent calls queue behind each other; the caller's arrays stay usable
        const results = await Promise.all([0.25, 0.5, 0.75, 1].map((rate) => inline.run({ input: x }, { rate })));
        for (const result of results) expectClose(result.outputs.output!.data as Float32Array, await expected(result.rate, x), 1e-4);
        expect(results.map((r) => r.rate)).toEqual([0.25, 0.5, 0.75, 1]);
        expect(x.data.length).toBe(2 * 3 * 32 * 32);
      } finally {
        await inline.close();
      }
      await expect(inline.run({ input: image(1, 0) })).rejects.toThrow(/closing/);
    }
  });

  it('a worker count that is not a whole number ≥ 0, or exits without workers, is a user error', async () => {
    for (const options of [{ workers: -1 }, { workers: 1.5 }, { workers: 0, exits: true }]) {
      const error = await SlicedModel.load(dir, { profileRuns: 1, ...options }).catch((e: unknown) => e);
      expect(isUserError(error) && error.code === 'SLC007', String(error)).toBe(true);
    }
  });

  it('a folder that is not a compiled output is a user error', async () => {
    const error = await SlicedModel.load(tmp).catch((e: unknown) => e);
    expect(isUserError(error) && error.code === 'SLC010').toBe(true);
  });
});
