// gatherAxes against a direct per-element reference (index arithmetic written out), on shapes
// and index lists that reach every copy path: last-axis permutations (index loop), prefixes
// (one run per row), runs shorter and longer than the set() threshold, several axes at once,
// repeated picks of one axis, int64, float16 and complex data, float bits kept exactly. Also:
// fused L1 sums equal the per-axis ones bit for bit, and views of unaligned raw bytes.

import { describe, expect, it } from 'vitest';
import { Rng } from '../compiler/rng.js';
import { DataType, Tensor } from '../compiler/tensor.js';
import { gatherAxes, gatherAxesShared, gatherAxis, l1PerAxes, l1PerIndex, type AxisPick } from '../compiler/tensor-ops.js';

function reference(t: Tensor, picks: AxisPick[]): { dims: number[]; data: number[] } {
  let dims = [...t.dims];
  let data = Array.from(t.view() as Float32Array, Number);
  for (const { axis, indices } of picks) {
    const outer = dims.slice(0, axis).reduce((p, d) => p * d, 1);
    const inner = dims.slice(axis + 1).reduce((p, d) => p * d, 1);
    const next: number[] = [];
    for (let o = 0; o < outer; o++) {
      for (const k of indices) for (let i = 0; i < inner; i++) next.push(data[(o * dims[axis]! + k) * inner + i]!);
    }
    dims = dims.map((d, a) => (a === axis ? indices.length : d));
    data = next;
  }
  return { dims, data };
}

function shuffled(n: number, rng: Rng): number[] {
  const out = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

function random(dims: number[], rng: Rng): Tensor {
  const n = dims.reduce((p, d) => p * d, 1);
  return Tensor.float32(dims, Array.from({ length: n }, () => rng.next() * 2 - 1));
}

describe('gatherAxes', () => {
  const rng = new Rng(7);
  const cases: { name: string; dims: number[]; picks: (dims: number[]) => AxisPick[] }[] = [
    { name: 'last-axis permutation', dims: [5, 33], picks: (d) => [{ axis: 1, indices: shuffled(d[1]!, rng) }] },
    { name: 'first-axis permutation', dims: [7, 20], picks: (d) => [{ axis: 0, indices: shuffled(d[0]!, rng) }] },
    { name: 'prefixes on both axes', dims: [12, 40], picks: () => [{ axis: 0, indices: [0, 1, 2, 3, 4] }, { axis: 1, indices: Array.from({ length: 25 }, (_, i) => i) }] },
    { name: 'both axes permuted in one copy', dims: [9, 17], picks: (d) => [{ axis: 0, indices: shuffled(d[0]!, rng) }, { axis: 1, indices: shuffled(d[1]!, rng) }] },
    { name: 'middle axis, short runs', dims: [3, 8, 5, 2], picks: () => [{ axis: 1, indices: [4, 5, 0, 1, 6, 7, 2, 3] }] },
    { name: 'middle axis, long runs', dims: [2, 6, 4, 9], picks: () => [{ axis: 1, indices: [3, 4, 5, 0, 1, 2] }] },
    { name: 'outer and inner axes of a conv weight', dims: [6, 4, 3, 3], picks: (d) => [{ axis: 0, indices: shuffled(d[0]!, rng).slice(0, 4) }, { axis: 1, indices: [2, 0] }] },
    { name: 'one axis picked twice composes', dims: [4, 10], picks: (d) => [{ axis: 1, indices: shuffled(d[1]!, rng) }, { axis: 1, indices: [9, 0, 3] }] },
    { name: 'axes given out of order', dims: [5, 6, 7], picks: (d) => [{ axis: 2, indices: shuffled(d[2]!, rng) }, { axis: 0, indices: [4, 2] }] },
    { name: 'empty selection', dims: [3, 4], picks: () => [{ axis: 1, indices: [] }] },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const t = random(c.dims, rng);
      const picks = c.picks(c.dims);
      const got = gatherAxes(t, picks);
      const want = reference(t, picks);
      expect(got.dims).toEqual(want.dims);
      expect(Array.from(got.view() as Float32Array)).toEqual(want.data.map((v) => Math.fround(v)));
    });
  }

  it('moves float bits unchanged (NaN payloads) on every copy path', () => {
    const bits = new Uint32Array(64).map((_, i) => (i % 3 === 0 ? 0x7f800001 + i : 0x3f800000 + i));
    const t = Tensor.fromTyped(DataType.FLOAT, [2, 32], new Float32Array(bits.buffer));
    const reversed = Array.from({ length: 32 }, (_, i) => 31 - i);
    for (const indices of [reversed, Array.from({ length: 20 }, (_, i) => i)]) {
      const got = new Uint32Array(gatherAxis(t, 1, indices).rawBytes().slice().buffer);
      const want = [0, 1].flatMap((row) => indices.map((k) => bits[row * 32 + k]!));
      expect(Array.from(got)).toEqual(want);
    }
  });

  it('gathers float16 and complex64 elements whole', () => {
    const half = Tensor.fromTyped(DataType.FLOAT16, [3], new Uint16Array([0x3c00, 0x4000, 0xfc01]));
    expect(Array.from(gatherAxis(half, 0, [2, 0]).view() as Uint16Array)).toEqual([0xfc01, 0x3c00]);
    const complex = new Tensor(DataType.COMPLEX64, [3], { kind: 'raw', bytes: new Uint8Array(new Float32Array([1, -1, 2, -2, 3, -3]).buffer) });
    const got = gatherAxis(complex, 0, [2, 1]);
    expect(got.dims).toEqual([2]);
    expect(Array.from(got.view() as Float32Array)).toEqual([3, -3, 2, -2]);
  });

  it('refuses packed sub-byte elements', () => {
    const t = new Tensor(DataType.INT4, [4], { kind: 'raw', bytes: new Uint8Array([0x21, 0x43]) });
    expect(() => gatherAxis(t, 0, [1, 0])).toThrow(/not whole bytes/);
  });

  it('gathers int64 tensors exactly', () => {
    const t = Tensor.int64([2, 3], [1n, -2n, 2n ** 40n, 4n, 5n, -(2n ** 50n)]);
    const got = gatherAxis(t, 1, [2, 0]);
    expect(got.dims).toEqual([2, 2]);
    expect(got.bigints()).toEqual([2n ** 40n, 1n, -(2n ** 50n), 4n]);
  });
});

describe('gatherAxesShared', () => {
  it('gives what gatherAxes gives, packed into one aligned block', () => {
    const rng = new Rng(5);
    const jobs = [
      { tensor: random([6, 10], rng), picks: [{ axis: 0, indices: [5, 1, 2] }, { axis: 1, indices: shuffled(10, rng) }] },
      { tensor: Tensor.int64([3], [7n, -8n, 9n]), picks: [{ axis: 0, indices: [2] }] },
      { tensor: random([3, 5], rng), picks: [{ axis: 1, indices: [] }] },
      { tensor: random([4, 3, 2], rng), picks: [{ axis: 2, indices: [1, 0] }] },
    ];
    const shared = gatherAxesShared(jobs);
    const block = shared[0]!.rawBytes().buffer;
    for (const [i, job] of jobs.entries()) {
      const alone = gatherAxes(job.tensor, job.picks);
      expect(shared[i]!.dims).toEqual(alone.dims);
      expect(Array.from(shared[i]!.rawBytes())).toEqual(Array.from(alone.rawBytes()));
      expect(shared[i]!.rawBytes().buffer).toBe(block);
      expect(shared[i]!.rawBytes().byteOffset % 64).toBe(0);
    }
  });
});

describe('l1PerAxes', () => {
  const rng = new Rng(11);
  for (const [dims, axes] of [[[6, 50], [0, 1]], [[50, 6], [1, 0]], [[4, 3, 7], [0, 2]], [[4, 3, 7], [1, 2]], [[5, 4, 3, 3], [0, 1]], [[8], [0]]] as [number[], number[]][]) {
    it(`equals l1PerIndex bit for bit on [${dims.join(',')}] axes ${axes.join(',')}`, () => {
      const t = random(dims, rng);
      expect(l1PerAxes(t, axes)).toEqual(axes.map((a) => l1PerIndex(t, a)));
    });
  }
});

describe('views of raw bytes', () => {
  it('copies unaligned bytes once and reuses that copy', () => {
    const backing = new Uint8Array(4 * 6 + 1);
    const values = new Float32Array([1, -2, 3.5, 4, 5, -6]);
    backing.set(new Uint8Array(values.buffer), 1);
    const t = new Tensor(DataType.FLOAT, [2, 3], { kind: 'raw', bytes: backing.subarray(1) });
    const first = t.view();
    expect(Array.from(first as Float32Array)).toEqual(Array.from(values));
    expect(t.view()).toBe(first);
    expect(Array.from(l1PerIndex(t, 1))).toEqual([5, 7, 9.5]);
  });

  it('views aligned bytes in place', () => {
    const values = new Float32Array([1, 2, 3, 4]);
    const t = Tensor.fromTyped(DataType.FLOAT, [4], values);
    expect((t.view() as Float32Array).buffer).toBe(values.buffer);
  });
});
