// NumPy's .npy and .npz files, read and written without Python: training batches come in as
// `np.savez('batch.npz', x=..., y=...)` and gradients go back out as grads.npz.
//
// .npy (NEP 1): the magic "\x93NUMPY", a major/minor version byte pair, a little-endian header
// length (uint16 in v1, uint32 in v2/v3), then a Python dict literal
// `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }` padded with spaces to a 64-byte
// boundary and ended by '\n', then the raw data. We support C order, little-endian (or
// byte-order-free) arrays of every runtime dtype (runtime/ndarray.ts: float16/32/64, signed
// and unsigned 8–64-bit integers, bool); arrays are the runtime's NdArray. An .npz file is a
// zip archive of `<key>.npy` entries, stored (np.savez) or deflated (np.savez_compressed); the
// zip layer is fflate's. Keys may contain '/' or '.', as NumPy allows.

import * as fs from 'node:fs';
import { unzipSync, zipSync, type Zippable } from 'fflate';
import { ErrorCodes, userError, writeFailure } from '../compiler/diagnostics.js';
import { bytesPerElement, sizeOf, viewBytes, type DType, type NdArray } from './ndarray.js';

export type { NdArray };

/** .npy's descr per dtype (float16 is IEEE half, carried as its bits in a Uint16Array). */
const DESCR: Record<DType, string> = {
  float32: '<f4', float64: '<f8', float16: '<f2',
  int8: '|i1', int16: '<i2', int32: '<i4', int64: '<i8',
  uint8: '|u1', uint16: '<u2', uint32: '<u4', uint64: '<u8',
  bool: '|b1',
};

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY

function bad(where: string, message: string, found: string, hint?: string): Error {
  return userError(ErrorCodes.BAD_INPUT_FILE, `${where}: ${message}`, {
    expected: 'a C-order little-endian .npy array of a numeric dtype or bool',
    found,
    hint: hint ?? 'write it with numpy.save / numpy.savez (np.ascontiguousarray first if it is a view)',
  });
}

interface NpyHeader { descr: string; fortranOrder: boolean; shape: number[] }

/** Parses the header dict. NumPy writes exactly these three keys as Python literals. */
function parseHeader(text: string, where: string): NpyHeader {
  const descr = /'descr'\s*:\s*'([^']*)'/.exec(text);
  const fortran = /'fortran_order'\s*:\s*(True|False)/.exec(text);
  const shape = /'shape'\s*:\s*\(([^)]*)\)/.exec(text);
  if (!descr || !fortran || !shape) throw bad(where, 'unreadable .npy header', JSON.stringify(text.trim()));
  const dims = shape[1]!.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
  const parsed = dims.map((d) => (/^\d+$/.test(d) ? Number(d) : NaN));
  if (parsed.some((d) => !Number.isSafeInteger(d))) throw bad(where, 'bad shape in .npy header', `(${shape[1]})`);
  return { descr: descr[1]!, fortranOrder: fortran[1] === 'True', shape: parsed };
}

function dtypeFromDescr(descr: string, where: string): DType {
  for (const [dtype, d] of Object.entries(DESCR) as [DType, string][]) {
    // One-byte types carry no byte order; NumPy may write '|u1' or '<u1' (rare, but legal).
    if (descr === d || (bytesPerElement(dtype) === 1 && descr === `<${d.slice(1)}`) || (descr === `=${d.slice(1)}`)) return dtype;
  }
  if (descr.startsWith('>')) throw bad(where, 'big-endian data is not supported', `dtype ${descr}`, "convert with a.astype(a.dtype.newbyteorder('<'))");
  throw bad(where, 'unsupported dtype', `dtype ${descr}`, 'convert with a.astype(np.float32) (or np.int64 for labels)');
}

/** Decodes one .npy file's bytes. `where` names the file (and key) in errors. */
export function decodeNpy(bytes: Uint8Array, where = 'array'): NdArray {
  if (bytes.length < 10 || MAGIC.some((b, i) => bytes[i] !== b)) throw bad(where, 'not a .npy file', 'no \\x93NUMPY magic');
  const major = bytes[6]!;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let headerLen: number;
  let start: number;
  if (major === 1) {
    headerLen = view.getUint16(8, true);
    start = 10;
  } else if (major === 2 || major === 3) {
    if (bytes.length < 12) throw bad(where, 'truncated .npy header', `${bytes.length} bytes`);
    headerLen = view.getUint32(8, true);
    start = 12;
  } else {
    throw bad(where, 'unknown .npy format version', `version ${major}.${bytes[7]}`);
  }
  if (start + headerLen > bytes.length) throw bad(where, 'truncated .npy header', `${bytes.length} bytes`);
  const header = parseHeader(new TextDecoder(major === 3 ? 'utf-8' : 'latin1').decode(bytes.subarray(start, start + headerLen)), where);
  const dtype = dtypeFromDescr(header.descr, where);
  const count = sizeOf(header.shape);
  if (header.fortranOrder && header.shape.filter((d) => d > 1).length > 1) {
    throw bad(where, 'Fortran-order arrays are not supported', 'fortran_order: True', 'save np.ascontiguousarray(a) instead');
  }
  const dataStart = start + headerLen;
  const need = count * bytesPerElement(dtype);
  if (bytes.length - dataStart < need) {
    throw bad(where, `data is truncated for shape [${header.shape.join(', ')}] ${dtype}`, `${bytes.length - dataStart} data bytes, need ${need}`);
  }
  return { dtype, dims: header.shape, data: viewBytes(dtype, bytes.subarray(dataStart, dataStart + need)) };
}

/** Encodes an array as a version 1.0 .npy file (version 2.0 if the header needs it). */
export function encodeNpy(array: NdArray): Uint8Array {
  const count = sizeOf(array.dims);
  if (array.data.length !== count) throw new Error(`array data has ${array.data.length} elements, dims [${array.dims.join(', ')}] need ${count}`);
  const shapeText = array.dims.length === 1 ? `(${array.dims[0]},)` : `(${array.dims.join(', ')})`;
  const dict = `{'descr': '${DESCR[array.dtype]}', 'fortran_order': False, 'shape': ${shapeText}, }`;
  // Pad so the data starts on a 64-byte boundary, as NumPy does.
  let prefix = 10;
  let total = Math.ceil((prefix + dict.length + 1) / 64) * 64;
  let version = 1;
  if (total - prefix > 0xffff) {
    prefix = 12;
    total = Math.ceil((prefix + dict.length + 1) / 64) * 64;
    version = 2;
  }
  const headerLen = total - prefix;
  const header = dict + ' '.repeat(headerLen - dict.length - 1) + '\n';
  const dataBytes = count * bytesPerElement(array.dtype);
  const out = new Uint8Array(total + dataBytes);
  out.set(MAGIC, 0);
  out[6] = version;
  out[7] = 0;
  const view = new DataView(out.buffer);
  if (version === 1) view.setUint16(8, headerLen, true);
  else view.setUint32(8, headerLen, true);
  for (let i = 0; i < header.length; i++) out[prefix + i] = header.charCodeAt(i);
  const data = array.data;
  out.set(new Uint8Array(data.buffer, data.byteOffset, dataBytes), total);
  return out;
}

/** Decodes an .npz archive into its arrays, keyed like np.load (the '.npy' suffix dropped). */
export function decodeNpz(bytes: Uint8Array, where = 'npz'): Map<string, NdArray> {
  let entries: Record<string, Uint8Array>;
  try {
    entries = unzipSync(bytes);
  } catch (e) {
    throw userError(ErrorCodes.BAD_INPUT_FILE, `${where}: not a readable .npz (zip) file`, {
      expected: 'a zip archive of .npy arrays, as numpy.savez writes', found: (e as Error).message,
    });
  }
  const arrays = new Map<string, NdArray>();
  for (const [name, content] of Object.entries(entries)) {
    if (name.endsWith('/')) continue; // a folder entry some zip tools add
    const key = name.endsWith('.npy') ? name.slice(0, -4) : name;
    arrays.set(key, decodeNpy(content, `${where}[${key}]`));
  }
  return arrays;
}

/** Encodes arrays as an .npz archive: stored entries like np.savez, or deflated like np.savez_compressed. */
export function encodeNpz(arrays: Map<string, NdArray> | Record<string, NdArray>, opts: { compress?: boolean } = {}): Uint8Array {
  const files: Zippable = {};
  const list = arrays instanceof Map ? [...arrays] : Object.entries(arrays);
  // fflate joins nested keys with '/', and takes a key that already holds '/' as the full path.
  for (const [key, array] of list) files[`${key}.npy`] = encodeNpy(array);
  return zipSync(files, { level: opts.compress ? 6 : 0 });
}

function readBytes(file: string): Uint8Array {
  try {
    return fs.readFileSync(file);
  } catch (e) {
    throw userError(ErrorCodes.FILE_NOT_FOUND, `cannot read ${file}`, { found: (e as NodeJS.ErrnoException).code ?? String(e) });
  }
}

export function readNpy(file: string): NdArray {
  return decodeNpy(readBytes(file), file);
}

export function readNpz(file: string): Map<string, NdArray> {
  return decodeNpz(readBytes(file), file);
}

/** Writes a file atomically: a temporary sibling renamed into place. */
export function writeFileAtomic(file: string, bytes: Uint8Array): void {
  const tmp = `${file}.${process.pid}.${Date.now()}.tmp`;
  try {
    fs.writeFileSync(tmp, bytes);
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw writeFailure(file, e) ?? e;
  }
}

export function writeNpy(file: string, array: NdArray): void {
  writeFileAtomic(file, encodeNpy(array));
}

export function writeNpz(file: string, arrays: Map<string, NdArray> | Record<string, NdArray>, opts: { compress?: boolean } = {}): void {
  writeFileAtomic(file, encodeNpz(arrays, opts));
}
