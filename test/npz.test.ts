// .npy/.npz reading and writing: files NumPy wrote (scripts/make-npz-samples.py), round trips
// through our writer, NumPy reading what we write, and the errors for what we do not support.

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ErrorCodes, isUserError, writeFailure } from '../compiler/diagnostics.js';
import { decodeNpy, decodeNpz, encodeNpy, encodeNpz, readNpy, readNpz, writeFileAtomic, writeNpz, type NdArray } from '../runtime/npz.js';

const DIR = path.join(import.meta.dirname, 'data', 'npz');
const expected = JSON.parse(fs.readFileSync(path.join(DIR, 'expected.json'), 'utf8')) as Record<string, { dtype: string; shape: number[]; values: (number | string)[] }>;

const NUMPY_DTYPE: Record<string, string> = { float32: 'float32', float64: 'float64', int64: 'int64', int32: 'int32', uint8: 'uint8', bool: 'bool' };

function values(a: NdArray): (number | string)[] {
  return a.data instanceof BigInt64Array ? [...a.data].map(String) : [...(a.data as Float32Array)];
}

function checkAgainstNumpy(name: string, a: NdArray): void {
  const e = expected[name]!;
  expect(NUMPY_DTYPE[a.dtype]).toBe(e.dtype);
  expect(a.dims).toEqual(e.shape);
  if (a.dtype === 'float32') {
    expect(values(a)).toEqual([...new Float32Array(e.values as number[])]);
  } else {
    expect(values(a)).toEqual(e.values);
  }
}

function userErrorOf(f: () => unknown): { code: string; text: string } {
  try {
    f();
  } catch (e) {
    if (!isUserError(e)) throw e;
    return { code: e.code, text: e.format() };
  }
  throw new Error('expected a user error');
}

const hasNumpy = spawnSync('/usr/bin/python3', ['-c', 'import numpy'], { encoding: 'utf8' }).status === 0;

describe('npy', () => {
  it('reads every dtype NumPy wrote', () => {
    for (const name of Object.keys(expected)) checkAgainstNumpy(name, readNpy(path.join(DIR, `${name}.npy`)));
  });

  it('round-trips through encodeNpy byte for byte with NumPy for the same arrays', () => {
    for (const name of Object.keys(expected)) {
      const bytes = fs.readFileSync(path.join(DIR, `${name}.npy`));
      const a = decodeNpy(bytes);
      expect(Buffer.from(encodeNpy(a)).equals(bytes), name).toBe(true);
    }
  });

  it('keeps int64 exact beyond 2^53', () => {
    const a: NdArray = { dtype: 'int64', dims: [2], data: new BigInt64Array([9223372036854775807n, -9223372036854775808n]) };
    expect([...decodeNpy(encodeNpy(a)).data]).toEqual([9223372036854775807n, -9223372036854775808n]);
  });

  it('reads unaligned data (copying it)', () => {
    const bytes = encodeNpy({ dtype: 'float64', dims: [3], data: new Float64Array([1, 2, 3]) });
    const shifted = new Uint8Array(bytes.length + 1);
    shifted.set(bytes, 1);
    expect([...decodeNpy(shifted.subarray(1)).data]).toEqual([1, 2, 3]);
  });

  it('reads float16 as its bits (a Uint16Array), the values NumPy wrote', () => {
    const half = readNpy(path.join(DIR, 'float16.npy'));
    expect(half.dtype).toBe('float16');
    expect(half.dims).toEqual([2, 3, 4]);
    const want = expected.f32!.values as number[];
    const value = (bits: number): number => {
      const sign = bits >> 15 ? -1 : 1;
      const exp = (bits >> 10) & 31;
      const frac = bits & 1023;
      return sign * (exp === 0 ? frac * 2 ** -24 : (1 + frac / 1024) * 2 ** (exp - 15));
    };
    expect([...(half.data as Uint16Array)].map(value)).toEqual(want);
    const back = decodeNpy(encodeNpy({ dtype: 'float16', dims: half.dims, data: half.data }));
    expect(back.dtype).toBe('float16');
    expect([...back.data]).toEqual([...half.data]);
  });

  it('rejects Fortran order, big-endian, complex and garbage with clear errors', () => {
    const fortran = userErrorOf(() => readNpy(path.join(DIR, 'fortran.npy')));
    expect(fortran.code).toBe('SLC010');
    expect(fortran.text).toMatch(/Fortran-order/);
    expect(fortran.text).toMatch(/ascontiguousarray/);
    expect(userErrorOf(() => readNpy(path.join(DIR, 'bigendian.npy'))).text).toMatch(/big-endian.*\n.*\n.*found: +dtype >f4/s);
    expect(userErrorOf(() => readNpy(path.join(DIR, 'complex.npy'))).text).toMatch(/unsupported dtype[\s\S]*<c8/);
    expect(userErrorOf(() => decodeNpy(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]))).text).toMatch(/not a \.npy file/);
    const truncated = fs.readFileSync(path.join(DIR, 'f32.npy')).subarray(0, 150);
    expect(userErrorOf(() => decodeNpy(truncated, 'cut.npy')).text).toMatch(/cut\.npy: data is truncated/);
    expect(userErrorOf(() => readNpy(path.join(DIR, 'missing.npy'))).code).toBe('SLC001');
  });
});

describe('npz', () => {
  it('reads stored (savez) and deflated (savez_compressed) archives', () => {
    for (const file of ['stored.npz', 'deflated.npz']) {
      const arrays = readNpz(path.join(DIR, file));
      expect([...arrays.keys()].sort()).toEqual(Object.keys(expected).sort());
      for (const [name, a] of arrays) checkAgainstNumpy(name, a);
    }
  });

  it("reads keys holding '/' and '.'", () => {
    const arrays = readNpz(path.join(DIR, 'names.npz'));
    expect([...arrays.keys()].sort()).toEqual(['conv1/w.grad', 'fc.b']);
    checkAgainstNumpy('f32', arrays.get('conv1/w.grad')!);
  });

  it('round-trips stored and compressed, names included', () => {
    const source = readNpz(path.join(DIR, 'stored.npz'));
    source.set('layer.0/conv.weight', { dtype: 'float32', dims: [2, 2], data: new Float32Array([1, -2, 3.5, 1e-30]) });
    for (const compress of [false, true]) {
      const back = decodeNpz(encodeNpz(source, { compress }));
      expect([...back.keys()].sort()).toEqual([...source.keys()].sort());
      for (const [name, a] of source) {
        const b = back.get(name)!;
        expect(b.dtype).toBe(a.dtype);
        expect(b.dims).toEqual(a.dims);
        expect(values(b)).toEqual(values(a));
      }
    }
  });

  it('rejects a file that is not a zip archive', () => {
    const e = userErrorOf(() => decodeNpz(new TextEncoder().encode('not a zip'), 'x.npz'));
    expect(e.code).toBe('SLC010');
    expect(e.text).toMatch(/x\.npz: not a readable \.npz/);
  });

  it.skipIf(!hasNumpy)('writes archives NumPy reads back (stored and compressed)', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-npz-'));
    try {
      const arrays: Record<string, NdArray> = {
        'conv1/w.grad': { dtype: 'float32', dims: [2, 3], data: new Float32Array([0.5, -1, 2, 3, 4, 1e-7]) },
        y: { dtype: 'int64', dims: [3], data: new BigInt64Array([7n, -1n, 1n << 60n]) },
        mask: { dtype: 'bool', dims: [2], data: new Uint8Array([1, 0]) },
      };
      for (const compress of [false, true]) {
        const file = path.join(dir, `out-${compress}.npz`);
        writeNpz(file, arrays, { compress });
        const script = [
          'import json, sys, numpy as np',
          'z = np.load(sys.argv[1])',
          'print(json.dumps({k: [str(z[k].dtype), list(z[k].shape), [str(v) for v in z[k].reshape(-1).tolist()]] for k in z.files}))',
        ].join('\n');
        const run = spawnSync('/usr/bin/python3', ['-c', script, file], { encoding: 'utf8' });
        expect(run.stderr).toBe('');
        expect(JSON.parse(run.stdout)).toEqual({
          'conv1/w.grad': ['float32', [2, 3], ['0.5', '-1.0', '2.0', '3.0', '4.0', String(Math.fround(1e-7)).replace('e-7', 'e-07')]],
          y: ['int64', [3], ['7', '-1', String(1n << 60n)]],
          mask: ['bool', [2], ['True', 'False']],
        });
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('writing', () => {
  it('a write that fails leaves no temporary file; a full disk or a refused write is a user error (SLC011)', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-write-'));
    try {
      const target = path.join(dir, 'taken');
      fs.mkdirSync(target); // the rename onto a folder fails
      expect(() => writeFileAtomic(target, new Uint8Array(10))).toThrow();
      expect(fs.readdirSync(dir)).toEqual(['taken']);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
    const errno = (code: string) => Object.assign(new Error(`${code}: something, write`), { code });
    for (const [code, hint] of [['ENOSPC', /free some space/], ['EDQUOT', /free some space/], ['EACCES', /permissions/], ['EROFS', /permissions/]] as const) {
      const e = writeFailure('/x/y.onnx', errno(code));
      expect(e?.code).toBe(ErrorCodes.OUTPUT_NOT_WRITABLE);
      expect(e?.format()).toMatch(hint);
    }
    expect(writeFailure('/x', errno('ENOENT'))).toBeNull();
    expect(writeFailure('/x', new Error('not from the file system'))).toBeNull();
  });
});
