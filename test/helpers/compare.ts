// Test helper: how far two outputs are apart, and feeds for an elastic graph.

import * as ort from 'onnxruntime-node';

/** Largest |a − b| relative to the largest |a|: the error at the output's own scale. */
export function relativeError(a: Float32Array, b: Float32Array): number {
  let scale = 0;
  for (const x of a) scale = Math.max(scale, Math.abs(x));
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!) / (scale || 1));
  return worst;
}

/** relativeError of two float32 ORT outputs (the first is the reference). */
export function maxRelativeError(expected: ort.Tensor, actual: ort.Tensor): number {
  return relativeError(expected.data as Float32Array, actual.data as Float32Array);
}

/** The feeds plus the elastic graph's `slice_rate` scalar. */
export function withRate(feeds: Record<string, ort.Tensor>, rate: number): Record<string, ort.Tensor> {
  return { ...feeds, slice_rate: new ort.Tensor('float32', Float32Array.of(rate), []) };
}
