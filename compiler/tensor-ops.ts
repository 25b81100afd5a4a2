// Small tensor utilities the passes share: take indices along one or several axes in one copy,
// L1 mass per slice.
//
// Layout: row-major, so index i_a along axis a sits at Σ i_a·stride_a with stride_a the product
// of the dims after a. A gather over several axes walks the output in order, maps each output
// index through its axis' index list, and copies the contiguous blocks (the dims after the last
// gathered axis) in runs; along the last axis a block is a single element, so a tight index loop
// does the work. Data moves as unsigned words of the element's width, never as numbers, so every
// bit pattern survives (NaN payloads) and int64 needs no BigInt.

import { DataType, Tensor, dtypeBits, dtypeShortName } from './tensor.js';

export interface AxisPick {
  axis: number;
  /** Indices along `axis` to keep, in the order they appear in the result. */
  indices: readonly number[];
}

/** Below this many elements a run is copied by a loop; longer runs by `TypedArray.set`. */
const SET_MIN = 16;

/**
 * A new tensor holding, along each picked axis, the given indices in that order. Several picks
 * of the same axis compose in order (as if gathered one after another).
 */
export function gatherAxes(t: Tensor, picks: readonly AxisPick[]): Tensor {
  return gatherAxesShared([{ tensor: t, picks }])[0]!;
}

export interface GatherJob {
  tensor: Tensor;
  picks: readonly AxisPick[];
}

/** Results start at multiples of this many bytes inside a shared allocation. */
const SHARED_ALIGN = 64;

/**
 * `gatherAxes` for several tensors, the results packed into one allocation. For tensors that
 * die together (one rate's pruned weights) that is one block, returned to the system at once
 * when they are collected, instead of many blocks the allocator may keep and fail to reuse.
 */
export function gatherAxesShared(jobs: readonly GatherJob[]): Tensor[] {
  const plans = jobs.map(({ tensor, picks }) => plan(tensor, picks));
  let total = 0;
  for (const p of plans) total += Math.ceil(p.byteLength / SHARED_ALIGN) * SHARED_ALIGN;
  // every word of the results is written below, so the memory need not be zeroed first
  const block = Buffer.allocUnsafeSlow(total);
  let offset = 0;
  return plans.map((p, i) => {
    const bytes = new Uint8Array(block.buffer, block.byteOffset + offset, p.byteLength);
    offset += Math.ceil(p.byteLength / SHARED_ALIGN) * SHARED_ALIGN;
    const out = wordsOver(bytes, p.words.BYTES_PER_ELEMENT);
    if (p.last < 0) out.set(p.words);
    else if (out.length > 0) gatherInto(out, p.words, p.wordDims, p.perAxis, p.last);
    const t = jobs[i]!.tensor;
    const result = new Tensor(t.dtype, p.newDims, { kind: 'raw', bytes }, t.name);
    result.docString = t.docString;
    return result;
  });
}

interface Plan {
  words: WordArray;
  /** Dims in words: elements wider than a word add a trailing axis that is never gathered. */
  wordDims: readonly number[];
  perAxis: (Int32Array | null)[];
  /** The last axis with an index list; -1 when none. */
  last: number;
  newDims: number[];
  byteLength: number;
}

function plan(t: Tensor, picks: readonly AxisPick[]): Plan {
  const dims = t.dims;
  const perAxis: (Int32Array | null)[] = dims.map(() => null);
  for (const { axis, indices } of picks) {
    const before = perAxis[axis];
    const next = new Int32Array(indices.length);
    for (let k = 0; k < indices.length; k++) next[k] = before ? before[indices[k]!]! : indices[k]!;
    perAxis[axis] = next;
  }
  const { words, perElement } = wordView(t);
  const newDims = dims.map((d, a) => perAxis[a]?.length ?? d);
  let last = -1;
  for (let a = 0; a < dims.length; a++) if (perAxis[a]) last = a;
  const byteLength = newDims.reduce((p, d) => p * d, perElement) * words.BYTES_PER_ELEMENT;
  return { words, wordDims: perElement > 1 ? [...dims, perElement] : dims, perAxis, last, newDims, byteLength };
}

type WordArray = Uint8Array | Uint16Array | Uint32Array;

function wordsOver(bytes: Uint8Array, width: number): WordArray {
  if (width === 1) return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (width === 2) return new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2);
  return new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
}

/**
 * The tensor's elements as unsigned words of the element's width (two or four 32-bit words for
 * 8- and 16-byte elements): copying words moves the bits unchanged (float NaN payloads, int64
 * without BigInt boxing).
 */
function wordView(t: Tensor): { words: WordArray; perElement: number } {
  const bits = dtypeBits(t.dtype);
  if (bits === 0 || bits % 8 !== 0) throw new Error(`gather: ${dtypeShortName[t.dtype] ?? t.dtype} elements are not whole bytes`);
  const v = t.view();
  const bytes = bits / 8;
  const words = wordsOver(new Uint8Array(v.buffer, v.byteOffset, v.byteLength), Math.min(bytes, 4));
  return { words, perElement: Math.max(1, bytes / 4) };
}

/**
 * Fill `out` with `src` gathered along every axis that has an index list; `last` is the last
 * such axis.
 */
function gatherInto(out: WordArray, src: WordArray, dims: readonly number[], perAxis: (Int32Array | null)[], last: number): void {
  const strides = new Array<number>(dims.length);
  let stride = 1;
  for (let a = dims.length - 1; a >= 0; a--) {
    strides[a] = stride;
    stride *= dims[a]!;
  }
  const inner = strides[last]!;
  const lastIdx = perAxis[last]!;
  // runs of consecutive indices along the last gathered axis (pruning keeps prefixes: one run)
  const from: number[] = [];
  const length: number[] = [];
  for (let k = 0; k < lastIdx.length; ) {
    let end = k + 1;
    while (end < lastIdx.length && lastIdx[end] === lastIdx[end - 1]! + 1) end++;
    from.push(lastIdx[k]! * inner);
    length.push((end - k) * inner);
    k = end;
  }
  // where each output row (one position of every axis before `last`) starts in src, in output
  // order: an odometer over those axes
  const sizes = perAxis.slice(0, last).map((idx, a) => idx?.length ?? dims[a]!);
  let rows = 1;
  for (const n of sizes) rows *= n;
  // int32 offsets keep the copy loops in integer arithmetic (2^31 words is 8 GB, past any tensor)
  if (src.length > 0x7fffffff) throw new Error(`gather: a tensor of ${src.length} words is too large`);
  const bases = new Int32Array(rows);
  const counter = new Array<number>(last).fill(0);
  for (let row = 0; row < rows; row++) {
    let base = 0;
    for (let a = 0; a < last; a++) base += (perAxis[a] ? perAxis[a]![counter[a]!]! : counter[a]!) * strides[a]!;
    bases[row] = base;
    for (let a = last - 1; a >= 0; a--) {
      if (++counter[a]! < sizes[a]!) break;
      counter[a] = 0;
    }
  }
  if (inner === 1 && from.length * 4 > lastIdx.length) copyIndexed(out, src, bases, lastIdx);
  else copyRuns(out, src, bases, from, length);
}

// The row loops live in one call each (not one call per row), so the JIT compiles the hot loop
// while it runs (on-stack replacement) instead of after many slow calls.

function copyIndexed(out: WordArray, src: WordArray, bases: Int32Array, idx: Int32Array): void {
  const n = idx.length;
  let at = 0;
  for (let row = 0; row < bases.length; row++) {
    const base = bases[row]!;
    for (let k = 0; k < n; k++) out[at + k] = src[base + idx[k]!]!;
    at += n;
  }
}

function copyRuns(out: WordArray, src: WordArray, bases: Int32Array, from: number[], length: number[]): void {
  let at = 0;
  for (let row = 0; row < bases.length; row++) {
    const base = bases[row]!;
    for (let r = 0; r < from.length; r++) {
      const start = base + from[r]!;
      const count = length[r]!;
      if (count < SET_MIN) {
        for (let i = 0; i < count; i++) out[at + i] = src[start + i]!;
      } else {
        out.set(src.subarray(start, start + count) as Uint32Array, at);
      }
      at += count;
    }
  }
}

/** A new tensor holding `indices` (in that order) of `t` along `axis`. */
export function gatherAxis(t: Tensor, axis: number, indices: readonly number[]): Tensor {
  return gatherAxes(t, [{ axis, indices }]);
}

/** Sum of |x| over each index of `axis` (float tensors; zeros for other types). */
export function l1PerIndex(t: Tensor, axis: number): Float64Array {
  const dims = t.dims;
  const width = dims[axis]!;
  const sums = new Float64Array(width);
  if (t.dtype !== DataType.FLOAT && t.dtype !== DataType.DOUBLE) return sums;
  const src = t.view() as Float32Array;
  let outer = 1;
  for (let i = 0; i < axis; i++) outer *= dims[i]!;
  let inner = 1;
  for (let i = axis + 1; i < dims.length; i++) inner *= dims[i]!;
  if (inner === 1) {
    for (let o = 0; o < outer; o++) {
      const base = o * width;
      for (let c = 0; c < width; c++) sums[c]! += Math.abs(src[base + c]!);
    }
    return sums;
  }
  for (let o = 0; o < outer; o++) {
    for (let c = 0; c < width; c++) {
      const base = (o * width + c) * inner;
      let s = 0;
      for (let i = 0; i < inner; i++) s += Math.abs(src[base + i]!);
      sums[c]! += s;
    }
  }
  return sums;
}

/**
 * `l1PerIndex` for each of `axes`, equal bit for bit. A leading axis and the last axis (a Gemm
 * or MatMul weight) are summed in one pass over the data, each sum in the same order as alone.
 */
export function l1PerAxes(t: Tensor, axes: readonly number[]): Float64Array[] {
  const dims = t.dims;
  const lastAxis = dims.length - 1;
  const fused = axes.length === 2 && axes[0] !== axes[1] && Math.max(axes[0]!, axes[1]!) === lastAxis;
  if (!fused || (t.dtype !== DataType.FLOAT && t.dtype !== DataType.DOUBLE)) return axes.map((a) => l1PerIndex(t, a));
  const axis = Math.min(axes[0]!, axes[1]!);
  const src = t.view() as Float32Array;
  const width = dims[axis]!;
  const lastWidth = dims[lastAxis]!;
  let outer = 1;
  for (let i = 0; i < axis; i++) outer *= dims[i]!;
  let inner = 1;
  for (let i = axis + 1; i < dims.length; i++) inner *= dims[i]!;
  const sums = new Float64Array(width);
  const lastSums = new Float64Array(lastWidth);
  for (let o = 0; o < outer; o++) {
    for (let c = 0; c < width; c++) {
      const base = (o * width + c) * inner;
      let s = 0;
      for (let r = 0; r < inner; r += lastWidth) {
        for (let j = 0; j < lastWidth; j++) {
          const v = Math.abs(src[base + r + j]!);
          s += v;
          lastSums[j]! += v;
        }
      }
      sums[c]! += s;
    }
  }
  return axes[0] === axis ? [sums, lastSums] : [lastSums, sums];
}

export function isIdentity(indices: readonly number[], width: number): boolean {
  if (indices.length !== width) return false;
  for (let i = 0; i < width; i++) if (indices[i] !== i) return false;
  return true;
}
