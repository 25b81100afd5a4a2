// Small tensor utilities the passes share: take indices along an axis, L1 mass per slice.

import { DataType, Tensor, typedArrayCtor, type TypedArray } from './tensor.js';

/** A new tensor holding `indices` (in that order) of `t` along `axis`. */
export function gatherAxis(t: Tensor, axis: number, indices: readonly number[]): Tensor {
  const dims = t.dims;
  const src = t.view() as Float32Array;
  let outer = 1;
  for (let i = 0; i < axis; i++) outer *= dims[i]!;
  let inner = 1;
  for (let i = axis + 1; i < dims.length; i++) inner *= dims[i]!;
  const width = dims[axis]!;
  // consecutive indices are copied as one run (pruning keeps prefixes: one copy per row)
  const runs: [number, number, number][] = [];
  for (let k = 0; k < indices.length; ) {
    let end = k + 1;
    while (end < indices.length && indices[end] === indices[end - 1]! + 1) end++;
    runs.push([indices[k]!, k, end - k]);
    k = end;
  }
  const ctor = typedArrayCtor(t.dtype);
  const out = new ctor(outer * indices.length * inner) as Float32Array;
  for (let o = 0; o < outer; o++) {
    for (const [from, to, length] of runs) {
      const start = (o * width + from) * inner;
      const count = length * inner;
      const at = (o * indices.length + to) * inner;
      if (count < 16) {
        for (let i = 0; i < count; i++) out[at + i] = src[start + i]!;
      } else {
        out.set(src.subarray(start, start + count), at);
      }
    }
  }
  const newDims = [...dims];
  newDims[axis] = indices.length;
  const result = Tensor.fromTyped(t.dtype, newDims, out as TypedArray, t.name);
  result.docString = t.docString;
  return result;
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

export function isIdentity(indices: readonly number[], width: number): boolean {
  if (indices.length !== width) return false;
  for (let i = 0; i < width; i++) if (indices[i] !== i) return false;
  return true;
}
