// From uint8 pixels to the model's input tensor: which layout the model's input shape implies
// (NCHW, NHWC, [N,H,W] grey, or [N,F] flattened in C,H,W order as PyTorch's flatten does),
// whether the images fit it, and normalization x = (p·scale − mean[c]) / std[c].

import { ErrorCodes, userError } from '../compiler/diagnostics.js';
import type { RawImages } from './data-sources.js';
import type { NdArray } from './npz.js';

/** A model input as the manifest describes it; a dim is a number, a symbol or unknown (null). */
export interface ExpectedInput {
  shape: readonly (number | string | null)[];
  dtype: string;
}

/** Pixel normalization: (p·scale − mean[c]) / std[c]; mean/std have one entry or one per channel. */
export interface Normalize {
  scale?: number;
  mean?: number[];
  std?: number[];
}

export interface ImageLayout {
  kind: 'nchw' | 'nhwc' | 'hw' | 'flat';
  channels: number;
  /** Spatial size the model fixes (undefined where its dims are symbolic). */
  height?: number;
  width?: number;
}

/** Canonical dtype names: the manifest's short forms (f32, i64, ...) map to NumPy's. */
export function normalizeDtype(dtype: string): string {
  const long: Record<string, string> = { f32: 'float32', f64: 'float64', i64: 'int64', i32: 'int32', u8: 'uint8', float: 'float32', double: 'float64' };
  return long[dtype] ?? dtype;
}

export function describe(shape: readonly (number | string | null)[]): string {
  return `[${shape.map((d) => (d === null ? '?' : String(d))).join(', ')}]`;
}

const num = (d: number | string | null | undefined): number | undefined => (typeof d === 'number' ? d : undefined);
const isChannelCount = (d: number | string | null | undefined) => d === 1 || d === 3;

function misfit(where: string, expected: ExpectedInput, found: string, hint?: string): Error {
  return userError(ErrorCodes.BAD_INPUT_FILE, `${where}: the images do not fit the model input`, {
    expected: `${describe(expected.shape)} ${expected.dtype}`, found, hint,
  });
}

/**
 * The layout the model input implies. With `images`, also checks that they fit (channels and the
 * model's numeric spatial dims); without, it says what a folder loader should decode to.
 */
export function imageLayout(expected: ExpectedInput, images: RawImages | null, where: string, resize?: { height: number; width: number }): ImageLayout {
  const s = expected.shape;
  if (normalizeDtype(expected.dtype) !== 'float32') {
    throw misfit(where, expected, `images (float32 after normalization)`, 'image data feeds float inputs; use an .npz for other dtypes');
  }
  let layout: ImageLayout;
  if (s.length === 4 && (isChannelCount(s[1]) || (typeof s[1] !== 'number' && !isChannelCount(s[3])))) {
    layout = { kind: 'nchw', channels: num(s[1]) ?? images?.channels ?? 3, height: num(s[2]), width: num(s[3]) };
  } else if (s.length === 4 && isChannelCount(s[3])) {
    layout = { kind: 'nhwc', channels: num(s[3])!, height: num(s[1]), width: num(s[2]) };
  } else if (s.length === 3) {
    layout = { kind: 'hw', channels: 1, height: num(s[1]), width: num(s[2]) };
  } else if (s.length === 2) {
    const features = num(s[1]);
    const size = images ?? resize;
    const pixels = size ? size.height * size.width : undefined;
    const channels = features !== undefined && pixels !== undefined && features === 3 * pixels ? 3 : 1;
    layout = { kind: 'flat', channels };
    if (images && features !== undefined && features !== channels * images.height * images.width) {
      throw misfit(where, expected, `${images.width}×${images.height}×${images.channels} images (${images.height * images.width * images.channels} values each)`,
        'a flattened input needs images of exactly that many pixels (resize the images)');
    }
  } else {
    throw misfit(where, expected, 'images', 'image data fits inputs shaped [N,C,H,W], [N,H,W,C], [N,H,W] or [N,features]');
  }
  if (images) {
    if ((layout.height !== undefined && layout.height !== images.height) || (layout.width !== undefined && layout.width !== images.width)) {
      throw misfit(where, expected, `${images.width}×${images.height} images`, `the model takes ${layout.height ?? images.height}×${layout.width ?? images.width}: a folder of images is resized to that unless --resize asks for another size; fashion-mnist and mnist are 28×28 and .npz/.npy data is used as stored`);
    }
    if (images.channels !== layout.channels && !(images.channels === 1 && layout.channels === 3)) {
      throw misfit(where, expected, `${images.channels}-channel images`);
    }
  }
  return layout;
}

/** Per channel, the 256 possible normalized values of a uint8 pixel: converting is then a lookup. */
function lookupTables(normalize: Normalize | undefined, channels: number): Float32Array[] {
  const scale = normalize?.scale ?? 1 / 255;
  const perChannel = (values: number[] | undefined, fill: number, name: string) => {
    const v = values ?? [fill];
    if (v.length !== 1 && v.length !== channels) {
      throw userError(ErrorCodes.BAD_FLAG, `normalize ${name} has ${v.length} values for ${channels}-channel data`, { expected: `1 or ${channels} values`, found: v.join(', ') });
    }
    if (name === 'std' && v.some((x) => !(x > 0))) throw userError(ErrorCodes.BAD_FLAG, 'normalize std must be positive', { expected: 'values > 0', found: v.join(', ') });
    return (c: number) => v[v.length === 1 ? 0 : c]!;
  };
  const mean = perChannel(normalize?.mean, 0, 'mean');
  const std = perChannel(normalize?.std, 1, 'std');
  return Array.from({ length: channels }, (_, c) => Float32Array.from({ length: 256 }, (_, p) => (p * scale - mean(c)) / std(c)));
}

/** Images (HWC uint8) to float32 in the layout; grey images fill all channels of an RGB input. */
export function convertImages(images: RawImages, layout: ImageLayout, normalize?: Normalize): NdArray {
  const { count, height: h, width: w } = images;
  const c = layout.channels;
  const tables = lookupTables(normalize, c);
  const out = new Float32Array(count * h * w * c);
  const src = images.pixels;
  const srcC = images.channels;
  const plane = h * w;
  const channelsLast = layout.kind === 'nhwc';
  for (let n = 0; n < count; n++) {
    for (let at = 0; at < plane; at++) {
      const pixel = (n * plane + at) * srcC;
      for (let ch = 0; ch < c; ch++) {
        const value = tables[ch]![src[pixel + (srcC === 1 ? 0 : ch)]!]!;
        out[channelsLast ? (n * plane + at) * c + ch : (n * c + ch) * plane + at] = value;
      }
    }
  }
  return { dtype: 'float32', dims: modelShape(images, layout), data: out };
}

/** The model-side shape of `images` in `layout`. */
export function modelShape(images: RawImages, layout: ImageLayout): number[] {
  const { count, height: h, width: w } = images;
  const c = layout.channels;
  return layout.kind === 'nchw' ? [count, c, h, w] : layout.kind === 'nhwc' ? [count, h, w, c]
    : layout.kind === 'hw' ? [count, h, w] : [count, c * h * w];
}

/** The float value of each uint8 level for one-channel data. */
export function pixelTable(normalize?: Normalize): Float32Array {
  return lookupTables(normalize, 1)[0]!;
}

/** A uint8 array (from an .npz) to float32, normalized per index along `channelAxis` (null: one channel). */
export function normalizeUint8(x: NdArray, channelAxis: number | null, normalize?: Normalize): NdArray {
  const channels = channelAxis === null ? 1 : x.dims[channelAxis]!;
  const tables = lookupTables(normalize, channels);
  let inner = 1;
  for (const d of x.dims.slice((channelAxis ?? 0) + 1)) inner *= d;
  const src = x.data as Uint8Array;
  const out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) {
    const ch = channels === 1 ? 0 : Math.floor(i / inner) % channels;
    out[i] = tables[ch]![src[i]!]!;
  }
  return { dtype: 'float32', dims: x.dims, data: out };
}

/** uint8 class indices to int64 labels, as cross-entropy graphs take them. */
export function labelsOf(labels: Uint8Array): NdArray {
  return { dtype: 'int64', dims: [labels.length], data: BigInt64Array.from(labels, (v) => BigInt(v)) };
}
