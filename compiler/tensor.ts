// Tensors of the IR: a dtype, integer dims and data. Data read from a model stays in the form
// the file had (typed field or raw bytes, see `source`) until someone asks for it, so a round
// trip writes back exactly what it read and a 100 MB model is never decoded element by element.

export enum DataType {
  UNDEFINED = 0,
  FLOAT = 1,
  UINT8 = 2,
  INT8 = 3,
  UINT16 = 4,
  INT16 = 5,
  INT32 = 6,
  INT64 = 7,
  STRING = 8,
  BOOL = 9,
  FLOAT16 = 10,
  DOUBLE = 11,
  UINT32 = 12,
  UINT64 = 13,
  COMPLEX64 = 14,
  COMPLEX128 = 15,
  BFLOAT16 = 16,
  FLOAT8E4M3FN = 17,
  FLOAT8E4M3FNUZ = 18,
  FLOAT8E5M2 = 19,
  FLOAT8E5M2FNUZ = 20,
  UINT4 = 21,
  INT4 = 22,
  FLOAT4E2M1 = 23,
  FLOAT8E8M0 = 24,
  UINT2 = 25,
  INT2 = 26,
}

/** Short names used by the text dump: `f32[N,16]`. */
export const dtypeShortName: Record<number, string> = {
  0: 'undef', 1: 'f32', 2: 'u8', 3: 'i8', 4: 'u16', 5: 'i16', 6: 'i32', 7: 'i64', 8: 'str',
  9: 'bool', 10: 'f16', 11: 'f64', 12: 'u32', 13: 'u64', 14: 'c64', 15: 'c128', 16: 'bf16',
  17: 'f8e4m3fn', 18: 'f8e4m3fnuz', 19: 'f8e5m2', 20: 'f8e5m2fnuz', 21: 'u4', 22: 'i4',
  23: 'f4e2m1', 24: 'f8e8m0', 25: 'u2', 26: 'i2',
};

/** Bits per element; 0 for strings (variable) and unknown types. */
export function dtypeBits(dtype: number): number {
  switch (dtype) {
    case DataType.DOUBLE: case DataType.INT64: case DataType.UINT64: case DataType.COMPLEX64:
      return 64;
    case DataType.COMPLEX128:
      return 128;
    case DataType.FLOAT: case DataType.INT32: case DataType.UINT32:
      return 32;
    case DataType.FLOAT16: case DataType.BFLOAT16: case DataType.INT16: case DataType.UINT16:
      return 16;
    case DataType.UINT8: case DataType.INT8: case DataType.BOOL: case DataType.FLOAT8E4M3FN:
    case DataType.FLOAT8E4M3FNUZ: case DataType.FLOAT8E5M2: case DataType.FLOAT8E5M2FNUZ:
    case DataType.FLOAT8E8M0:
      return 8;
    case DataType.UINT4: case DataType.INT4: case DataType.FLOAT4E2M1:
      return 4;
    case DataType.UINT2: case DataType.INT2:
      return 2;
    default:
      return 0;
  }
}

export type TypedArray =
  | Float32Array | Float64Array | Int8Array | Uint8Array | Int16Array | Uint16Array
  | Int32Array | Uint32Array | BigInt64Array | BigUint64Array;

/**
 * Where a tensor's elements live when it was read from a file: which typed proto field
 * (`float_data`, `int32_data`, ...) held them, or `raw` for raw_data / external data.
 * `typed` keeps the decoded field as it was so the writer can emit the same field.
 */
export type TensorSource =
  | { kind: 'raw'; bytes: Uint8Array }
  | { kind: 'float'; values: number[] }
  | { kind: 'int32'; values: number[] }
  | { kind: 'int64'; values: bigint[] }
  | { kind: 'double'; values: number[] }
  | { kind: 'uint64'; values: bigint[] }
  | { kind: 'string'; values: Uint8Array[] };

/** Where the tensor's bytes came from when they were stored outside the model file. */
export interface ExternalOrigin {
  location: string;
  offset: number;
  length: number;
  /** Other key/value pairs of external_data (e.g. checksum), kept as read. */
  extra: [string, string][];
}

function numel(dims: readonly number[]): number {
  let n = 1;
  for (const d of dims) n *= d;
  return n;
}

export class Tensor {
  dtype: number;
  dims: number[];
  name: string;
  docString = '';
  /** Codec-owned leftovers of the tensor message (metadata, segment), written back as read. */
  extra: unknown = undefined;
  /** Set when the data was read from an external file. */
  external: ExternalOrigin | null = null;
  private source: TensorSource;
  /** The copy `view()` made of stored data that could not be viewed in place. */
  private aligned: TypedArray | null = null;

  constructor(dtype: number, dims: number[], source: TensorSource, name = '') {
    this.dtype = dtype;
    this.dims = dims;
    this.source = source;
    this.name = name;
  }

  get size(): number {
    return numel(this.dims);
  }

  /** The stored form, for the codec. */
  get storage(): TensorSource {
    return this.source;
  }

  /** Byte size of the element data in little-endian raw form. */
  get byteLength(): number {
    if (this.source.kind === 'raw') return this.source.bytes.byteLength;
    return Math.ceil((this.size * dtypeBits(this.dtype)) / 8);
  }

  /** Element data as little-endian bytes (what raw_data would hold). */
  rawBytes(): Uint8Array {
    const s = this.source;
    if (s.kind === 'raw') return s.bytes;
    if (s.kind === 'string') throw new Error('string tensors have no raw form');
    const out = makeTypedArray(this.dtype, this.size);
    fillFromTypedField(out, this.dtype, s);
    return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
  }

  /**
   * Elements as a typed array of the natural JS type (float16/bfloat16 as Uint16Array of bits,
   * bool as Uint8Array). Always a fresh copy: raw bytes may alias the file's buffer.
   */
  data(): TypedArray {
    const s = this.source;
    if (s.kind === 'string') throw new Error('string tensors have no numeric data');
    if (s.kind === 'raw') {
      const ctor = typedArrayCtor(this.dtype);
      const bytes = s.bytes;
      const per = ctor.BYTES_PER_ELEMENT;
      if (bytes.byteLength % per !== 0) {
        throw new Error(`raw data of ${bytes.byteLength} bytes is not a whole number of ${dtypeShortName[this.dtype]} elements`);
      }
      const copy = new Uint8Array(bytes);
      return new ctor(copy.buffer, 0, copy.byteLength / per);
    }
    const out = makeTypedArray(this.dtype, this.size);
    fillFromTypedField(out, this.dtype, s);
    return out;
  }

  /**
   * Elements without copying when the stored bytes allow it (raw data, aligned): the result may
   * alias the file's buffer, so it must only be read. Otherwise one copy is made and kept, so
   * later views of the same tensor are free (the codec aligns what it reads, so that copy is
   * rare: tensors decoded from an in-memory buffer, typed proto fields).
   */
  view(): TypedArray {
    if (this.aligned) return this.aligned;
    const s = this.source;
    if (s.kind === 'raw') {
      const ctor = typedArrayCtor(this.dtype);
      const per = ctor.BYTES_PER_ELEMENT;
      if (s.bytes.byteOffset % per === 0 && s.bytes.byteLength % per === 0) {
        return new ctor(s.bytes.buffer as ArrayBuffer, s.bytes.byteOffset, s.bytes.byteLength / per);
      }
    }
    this.aligned = this.data();
    return this.aligned;
  }

  /** Elements as JS numbers (int64 converted; use `bigints()` where exactness matters). */
  numbers(): number[] {
    const d = this.data();
    const out: number[] = new Array(d.length);
    for (let i = 0; i < d.length; i++) out[i] = Number(d[i]);
    return out;
  }

  /** Integer elements as exact bigints. */
  bigints(): bigint[] {
    const d = this.data();
    const out: bigint[] = new Array(d.length);
    for (let i = 0; i < d.length; i++) out[i] = BigInt(d[i] as number | bigint);
    return out;
  }

  /** Replace the data (and optionally the dims); the tensor is then written as raw bytes. */
  setData(data: TypedArray, dims: number[] = this.dims): void {
    if (data.length !== numel(dims) && !(this.dtype === DataType.BOOL && data.length === numel(dims))) {
      throw new Error(`setData: ${data.length} elements do not fill dims [${dims.join(',')}]`);
    }
    this.dims = dims;
    this.source = { kind: 'raw', bytes: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
    this.aligned = null;
    this.external = null;
  }

  clone(name = this.name): Tensor {
    const t = new Tensor(this.dtype, [...this.dims], this.source, name);
    t.docString = this.docString;
    t.aligned = this.aligned;
    return t;
  }

  static fromTyped(dtype: number, dims: number[], data: TypedArray, name = ''): Tensor {
    if (data.length !== numel(dims)) {
      throw new Error(`Tensor.fromTyped: ${data.length} elements do not fill dims [${dims.join(',')}]`);
    }
    return new Tensor(dtype, dims, { kind: 'raw', bytes: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) }, name);
  }

  static float32(dims: number[], values: ArrayLike<number>, name = ''): Tensor {
    return Tensor.fromTyped(DataType.FLOAT, dims, Float32Array.from(values), name);
  }

  static int64(dims: number[], values: ArrayLike<bigint | number>, name = ''): Tensor {
    const arr = new BigInt64Array(values.length);
    for (let i = 0; i < values.length; i++) arr[i] = BigInt(values[i]!);
    return Tensor.fromTyped(DataType.INT64, dims, arr, name);
  }
}

export function typedArrayCtor(dtype: number) {
  switch (dtype) {
    case DataType.FLOAT: return Float32Array;
    case DataType.DOUBLE: return Float64Array;
    case DataType.INT8: case DataType.INT4: case DataType.INT2: return Int8Array;
    case DataType.UINT8: case DataType.BOOL: case DataType.UINT4: case DataType.UINT2:
    case DataType.FLOAT8E4M3FN: case DataType.FLOAT8E4M3FNUZ: case DataType.FLOAT8E5M2:
    case DataType.FLOAT8E5M2FNUZ: case DataType.FLOAT8E8M0: case DataType.FLOAT4E2M1:
      return Uint8Array;
    case DataType.INT16: return Int16Array;
    case DataType.UINT16: case DataType.FLOAT16: case DataType.BFLOAT16: return Uint16Array;
    case DataType.INT32: return Int32Array;
    case DataType.UINT32: return Uint32Array;
    case DataType.INT64: return BigInt64Array;
    case DataType.UINT64: return BigUint64Array;
    case DataType.COMPLEX64: return Float32Array;
    case DataType.COMPLEX128: return Float64Array;
    default: throw new Error(`no typed array for data type ${dtype}`);
  }
}

function makeTypedArray(dtype: number, size: number): TypedArray {
  const ctor = typedArrayCtor(dtype);
  const factor = dtype === DataType.COMPLEX64 || dtype === DataType.COMPLEX128 ? 2 : 1;
  return new ctor(size * factor);
}

/** Expand a typed proto field into `out` following the ONNX storage rules per dtype. */
function fillFromTypedField(out: TypedArray, dtype: number, s: Exclude<TensorSource, { kind: 'raw' | 'string' }>): void {
  const values = s.values as ArrayLike<number | bigint>;
  if (values.length !== out.length && !(values.length === 1 && out.length === 0)) {
    throw new Error(`tensor holds ${values.length} values in its ${s.kind}_data field, its dims need ${out.length}`);
  }
  if (out instanceof BigInt64Array || out instanceof BigUint64Array) {
    for (let i = 0; i < out.length; i++) out[i] = BigInt(values[i]!);
  } else {
    // float16/bfloat16 bits and small ints travel in int32_data; plain assignment keeps the bits.
    for (let i = 0; i < out.length; i++) (out as Float32Array)[i] = Number(values[i]!);
  }
}
