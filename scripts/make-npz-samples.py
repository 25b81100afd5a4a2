#!/usr/bin/env python3
"""Writes the NumPy-made .npy/.npz samples that test/npz.test.ts reads (test/data/npz/).

Run: /usr/bin/python3 scripts/make-npz-samples.py. Values are closed-form (no RNG) so the test
recomputes them; expected.json records each array's dtype, shape and values.
"""
import json
import os

import numpy as np

OUT = os.path.join(os.path.dirname(__file__), '..', 'test', 'data', 'npz')


def arrays():
    i = np.arange(24)
    return {
        'f32': ((i - 11.5) / 4).astype(np.float32).reshape(2, 3, 4),
        'f64': (np.sqrt(i[:6]) * 1e-3).astype(np.float64).reshape(6),
        'i64': (i[:6] * 1_000_000_007 - 3_000_000_000).astype(np.int64).reshape(3, 2),
        'i32': (i[:4] * -70_000).astype(np.int32).reshape(2, 2),
        'u8': (i[:10] * 25).astype(np.uint8),
        'b': (i[:5] % 2 == 0),
        'scalar': np.float32(2.5).reshape(()),
        'empty': np.zeros((0, 3), dtype=np.float32),
    }


def listed(a):
    if a.dtype == np.int64:
        return [str(v) for v in a.reshape(-1).tolist()]  # exact beyond 2^53
    if a.dtype == np.bool_:
        return [int(v) for v in a.reshape(-1).tolist()]
    return a.reshape(-1).tolist()


def main():
    os.makedirs(OUT, exist_ok=True)
    arr = arrays()
    for name, a in arr.items():
        np.save(os.path.join(OUT, f'{name}.npy'), a)
    np.savez(os.path.join(OUT, 'stored.npz'), **arr)
    np.savez_compressed(os.path.join(OUT, 'deflated.npz'), **arr)
    # Keys with '/' and '.' (as grads.npz holds), and a batch as `slicec grad` reads it.
    np.savez(os.path.join(OUT, 'names.npz'), **{'conv1/w.grad': arr['f32'], 'fc.b': arr['f64']})
    np.savez(os.path.join(OUT, 'batch.npz'), x=arr['f32'].reshape(2, 12), y=np.array([1, 0], dtype=np.int64))
    np.save(os.path.join(OUT, 'fortran.npy'), np.asfortranarray(arr['f32'][0]))
    np.save(os.path.join(OUT, 'bigendian.npy'), arr['f32'].astype('>f4'))
    np.save(os.path.join(OUT, 'float16.npy'), arr['f32'].astype(np.float16))
    np.save(os.path.join(OUT, 'complex.npy'), arr['f32'].astype(np.complex64))
    expected = {name: {'dtype': str(a.dtype), 'shape': list(a.shape), 'values': listed(a)} for name, a in arr.items()}
    with open(os.path.join(OUT, 'expected.json'), 'w') as f:
        json.dump(expected, f, indent=1)
        f.write('\n')


if __name__ == '__main__':
    main()
