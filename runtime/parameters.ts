// Gather and scatter through the manifest's parameter map (compiler/parameter-map.ts).
//
// The kept entries of a parameter at a rate are, on every cut axis, a prefix of each segment
// (of its `positions` when it lists them, after a channel shuffle; the axis then takes the kept
// entries in ascending order); their flat positions in the full tensor are the product of the
// per-axis index lists. gather reads them in order (the per-rate initializer), scatter writes a
// per-rate tensor back.

import type { Manifest, ManifestParameter } from '../compiler/artifacts.js';

export type NumericArray = Float32Array | Float64Array | Int32Array | Uint8Array | BigInt64Array;

/** Kept fine channels of every union at a rate (boundary at the rate's active group count). */
export function keptByUnion(manifest: Pick<Manifest, 'unions' | 'rates'>, rate: number): Map<number, number> {
  const entry = manifest.rates.find((r) => r.rate === rate);
  if (!entry) throw new Error(`rate ${rate} is not compiled (rates: ${manifest.rates.map((r) => r.rate).join(', ')})`);
  const kept = new Map<number, number>();
  for (const u of manifest.unions) kept.set(u.id, u.boundaries ? u.boundaries[entry.activeGroups]! : u.width);
  return kept;
}

/** Per cut axis, the kept indices along it; axes not cut keep everything (null). */
export function keptAxisIndices(param: ManifestParameter, kept: Map<number, number>, widths: Map<number, number>): (number[] | null)[] {
  const out: (number[] | null)[] = param.dims.map(() => null);
  for (const cut of param.cuts) {
    const indices: number[] = [];
    for (const seg of cut.segments) {
      const width = widths.get(seg.union);
      if (width === undefined) throw new Error(`parameter ${param.name} cuts unknown union ${seg.union}`);
      const keep = Math.round((kept.get(seg.union) ?? width) * seg.scale);
      for (let i = 0; i < keep; i++) indices.push(seg.positions ? seg.positions[i]! : seg.offset + i);
    }
    if (cut.segments.some((seg) => seg.positions)) indices.sort((a, b) => a - b);
    out[cut.axis] = indices;
  }
  return out;
}

export function unionWidths(manifest: Pick<Manifest, 'unions'>): Map<number, number> {
  return new Map(manifest.unions.map((u) => [u.id, u.width]));
}

/** Flat positions in the full tensor of the kept entries, in row-major order of the cut tensor. */
export function keptPositions(param: ManifestParameter, axisIndices: (number[] | null)[]): { dims: number[]; positions: Int32Array } {
  const dims = param.dims.map((d, a) => axisIndices[a]?.length ?? d);
  const strides = new Array<number>(param.dims.length).fill(1);
  for (let a = param.dims.length - 2; a >= 0; a--) strides[a] = strides[a + 1]! * param.dims[a + 1]!;
  let positions = new Int32Array([0]);
  for (let a = 0; a < dims.length; a++) {
    const idx = axisIndices[a];
    const n = dims[a]!;
    const next = new Int32Array(positions.length * n);
    let k = 0;
    for (let p = 0; p < positions.length; p++) {
      const base = positions[p]!;
      for (let i = 0; i < n; i++) next[k++] = base + (idx ? idx[i]! : i) * strides[a]!;
    }
    positions = next;
  }
  return { dims, positions };
}

export function gather<T extends NumericArray>(full: T, positions: Int32Array): T {
  const ctor = full.constructor as new (n: number) => T;
  const out = new ctor(positions.length);
  for (let i = 0; i < positions.length; i++) out[i] = full[positions[i]!]!;
  return out;
}

export function scatter<T extends NumericArray>(full: T, positions: Int32Array, part: T): void {
  if (part.length !== positions.length) throw new Error(`scatter: ${part.length} values for ${positions.length} positions`);
  for (let i = 0; i < positions.length; i++) full[positions[i]!] = part[i]!;
}
