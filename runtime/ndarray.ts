// Typed n-dimensional arrays as they travel through the runtime: a dtype, dims and a flat
// row-major typed array. Names the three dtype spellings the runtime meets (the manifest's short
// names, onnxruntime's names, the KServe v2 datatypes) and joins/splits arrays along axis 0, which
// is how requests are batched: for row-major data, rows [a, b) of axis 0 are the contiguous
// elements [a·rowSize, b·rowSize).

export type DType =
  | 'float32' | 'float64' | 'float16'
  | 'int8' | 'int16' | 'int32' | 'int64'
  | 'uint8' | 'uint16' | 'uint32' | 'uint64'
  | 'bool';

export type TypedArray =
  | Float32Array | Float64Array | Uint16Array
  | Int8Array | Int16Array | Int32Array | BigInt64Array
  | Uint8Array | Uint32Array | BigUint64Array;

export interface NdArray {
  dtype: DType;
  dims: number[];
  data: TypedArray;
}

interface DTypeInfo {
  short: string;
  v2: string;
  bytes: number;
  make: (length: number) => TypedArray;
  view: (buffer: ArrayBufferLike, byteOffset: number, length: number) => TypedArray;
}

const DTYPES: Record<DType, DTypeInfo> = {
  float32: { short: 'f32', v2: 'FP32', bytes: 4, make: (n) => new Float32Array(n), view: (b, o, n) => new Float32Array(b, o, n) },
  float64: { short: 'f64', v2: 'FP64', bytes: 8, make: (n) => new Float64Array(n), view: (b, o, n) => new Float64Array(b, o, n) },
  float16: { short: 'f16', v2: 'FP16', bytes: 2, make: (n) => new Uint16Array(n), view: (b, o, n) => new Uint16Array(b, o, n) },
  int8: { short: 'i8', v2: 'INT8', bytes: 1, make: (n) => new Int8Array(n), view: (b, o, n) => new Int8Array(b, o, n) },
  int16: { short: 'i16', v2: 'INT16', bytes: 2, make: (n) => new Int16Array(n), view: (b, o, n) => new Int16Array(b, o, n) },
  int32: { short: 'i32', v2: 'INT32', bytes: 4, make: (n) => new Int32Array(n), view: (b, o, n) => new Int32Array(b, o, n) },
  int64: { short: 'i64', v2: 'INT64', bytes: 8, make: (n) => new BigInt64Array(n), view: (b, o, n) => new BigInt64Array(b, o, n) },
  uint8: { short: 'u8', v2: 'UINT8', bytes: 1, make: (n) => new Uint8Array(n), view: (b, o, n) => new Uint8Array(b, o, n) },
  uint16: { short: 'u16', v2: 'UINT16', bytes: 2, make: (n) => new Uint16Array(n), view: (b, o, n) => new Uint16Array(b, o, n) },
  uint32: { short: 'u32', v2: 'UINT32', bytes: 4, make: (n) => new Uint32Array(n), view: (b, o, n) => new Uint32Array(b, o, n) },
  uint64: { short: 'u64', v2: 'UINT64', bytes: 8, make: (n) => new BigUint64Array(n), view: (b, o, n) => new BigUint64Array(b, o, n) },
  bool: { short: 'bool', v2: 'BOOL', bytes: 1, make: (n) => new Uint8Array(n), view: (b, o, n) => new Uint8Array(b, o, n) },
};

const ALL_DTYPES = Object.keys(DTYPES) as DType[];

export function isDType(name: string): name is DType {
  return Object.hasOwn(DTYPES, name);
}

/** The manifest's short name (`f32`) → DType; undefined for types the runtime cannot feed. */
export function dtypeFromShort(short: string): DType | undefined {
  return ALL_DTYPES.find((d) => DTYPES[d].short === short);
}

/** A KServe v2 datatype (`FP32`) → DType. */
export function dtypeFromV2(v2: string): DType | undefined {
  return ALL_DTYPES.find((d) => DTYPES[d].v2 === v2);
}

export function v2Name(dtype: DType): string {
  return DTYPES[dtype].v2;
}

export function bytesPerElement(dtype: DType): number {
  return DTYPES[dtype].bytes;
}

export function makeArray(dtype: DType, length: number): TypedArray {
  return DTYPES[dtype].make(length);
}

/** A typed view of little-endian bytes; copies when the bytes are not aligned for the type. */
export function viewBytes(dtype: DType, bytes: Uint8Array): TypedArray {
  const info = DTYPES[dtype];
  if (bytes.byteLength % info.bytes !== 0) throw new Error(`${bytes.byteLength} bytes is not a whole number of ${dtype} elements`);
  const length = bytes.byteLength / info.bytes;
  if (bytes.byteOffset % info.bytes === 0) return info.view(bytes.buffer, bytes.byteOffset, length);
  const copy = new Uint8Array(bytes);
  return info.view(copy.buffer, 0, length);
}

export function sizeOf(dims: readonly number[]): number {
  let size = 1;
  for (const d of dims) size *= d;
  return size;
}

/** Join arrays of one dtype and equal trailing dims along axis 0. */
export function concatRows(arrays: NdArray[]): NdArray {
  const first = arrays[0];
  if (!first) throw new Error('concatRows needs at least one array');
  if (arrays.length === 1) return first;
  let rows = 0;
  let length = 0;
  for (const a of arrays) {
    rows += a.dims[0]!;
    length += a.data.length;
  }
  const data = makeArray(first.dtype, length);
  let offset = 0;
  for (const a of arrays) {
    (data as Float32Array).set(a.data as Float32Array, offset);
    offset += a.data.length;
  }
  return { dtype: first.dtype, dims: [rows, ...first.dims.slice(1)], data };
}

/** Rows [start, end) of axis 0, as a view (no copy). */
export function sliceRows(array: NdArray, start: number, end: number): NdArray {
  const rowSize = array.dims[0] === 0 ? 0 : array.data.length / array.dims[0]!;
  const data = array.data.subarray(start * rowSize, end * rowSize);
  return { dtype: array.dtype, dims: [end - start, ...array.dims.slice(1)], data };
}

/** True when `dims` fits a signature shape (a string or null dim matches any size). */
export function shapeMatches(dims: readonly number[], shape: readonly (number | string | null)[] | null): boolean {
  if (shape === null) return true;
  if (dims.length !== shape.length) return false;
  return shape.every((d, i) => typeof d !== 'number' || d === dims[i]);
}

/**
 * Arrays ready for postMessage: ones that own their whole ArrayBuffer are transferred as they
 * are (structured clone would copy a view's entire underlying buffer); views are copied first.
 */
export function forTransfer(arrays: Record<string, NdArray>): { arrays: Record<string, NdArray>; buffers: ArrayBuffer[] } {
  const out: Record<string, NdArray> = {};
  const buffers: ArrayBuffer[] = [];
  for (const [name, a] of Object.entries(arrays)) {
    let data = a.data;
    const owns = data.buffer instanceof ArrayBuffer && data.byteOffset === 0 && data.byteLength === data.buffer.byteLength;
    if (!owns || buffers.includes(data.buffer as ArrayBuffer)) data = data.slice();
    buffers.push(data.buffer as ArrayBuffer);
    out[name] = { dtype: a.dtype, dims: a.dims, data };
  }
  return { arrays: out, buffers };
}
