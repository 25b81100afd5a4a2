// slicec's gradients against PyTorch's: for every reference model exported by Debian's
// python3-torch (scripts/make-torch-refs.py), the loss and every parameter's gradient of one
// batch in training mode, and the BatchNorm running statistics after it.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { readModel } from '../compiler/onnx-codec.js';
import { modelGradients } from '../compiler/grad.js';
import { inferShapes } from '../compiler/shape-inference.js';
import { readNpz, writeNpz, type NdArray } from '../runtime/npz.js';
import { runBin } from './helpers/cli.js';
import { REPO_ROOT } from './helpers/models.js';

const REFS = path.join(REPO_ROOT, 'test', 'data', 'torch-refs');
const MODELS = ['cnn_bn', 'resnet_block', 'dw_se', 'mlp_ln', 'mlp_ln_op17', 'transformer'];

/** max |a − b| / max |b|: the error relative to the tensor's scale. */
function relativeError(actual: NdArray, expected: NdArray): number {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < expected.data.length; i++) {
    diff = Math.max(diff, Math.abs(Number(actual.data[i]) - Number(expected.data[i])));
    scale = Math.max(scale, Math.abs(Number(expected.data[i])));
  }
  return diff / (scale || 1);
}

function maxAbs(a: NdArray): number {
  let m = 0;
  for (let i = 0; i < a.data.length; i++) m = Math.max(m, Math.abs(Number(a.data[i])));
  return m;
}

describe('gradients match PyTorch', () => {
  for (const name of MODELS) {
    it(name, async () => {
      const ref = readNpz(path.join(REFS, `${name}.npz`));
      const model = readModel(path.join(REFS, `${name}.onnx`));
      inferShapes(model);
      const result = await modelGradients(model, ref.get('x')!, ref.get('y')!);
      const loss = Number(ref.get('loss')!.data[0]);
      expect(Math.abs(result.loss - loss) / Math.abs(loss)).toBeLessThanOrEqual(1e-4);
      const expected = [...ref.keys()].filter((k) => k.startsWith('grad/')).map((k) => k.slice(5));
      expect([...result.gradients.keys()].sort()).toEqual(expected.sort());
      // a gradient that is zero in exact arithmetic (a conv bias right before a BatchNorm, whose
      // batch mean removes it) is float rounding on both sides: there the check is that ours is
      // as close to zero, relative to the model's largest gradient
      const largest = Math.max(...expected.map((p) => maxAbs(ref.get(`grad/${p}`)!)));
      const errors: Record<string, number> = {};
      for (const p of expected) {
        const got = result.gradients.get(p)!;
        const want = ref.get(`grad/${p}`)!;
        expect(got.dims).toEqual(want.dims);
        errors[p] = maxAbs(want) < 1e-5 * largest ? maxAbs(got) / (1e-2 * largest) : relativeError(got, want);
      }
      expect(Object.entries(errors).filter(([, e]) => !(e <= 1e-3))).toEqual([]);
      for (const key of [...ref.keys()].filter((k) => k.startsWith('running_mean_after/') || k.startsWith('running_var_after/'))) {
        const stat = key.slice(key.indexOf('/') + 1);
        const got = result.runningStats.get(stat);
        // ONNX updates the running variance with the biased batch variance, PyTorch with the
        // unbiased one (factor n/(n−1) on the batch part); compare the means exactly and the
        // variances within that factor
        expect(got, stat).toBeDefined();
        const want = ref.get(key)!;
        if (key.startsWith('running_mean_after/')) {
          expect(relativeError(got!, want)).toBeLessThan(1e-4);
        } else {
          const old = model.graph.initializers.find((v) => v.name === stat)!.const!.numbers();
          const bn = model.graph.nodes.find((n) => n.op === 'BatchNormalization' && n.inputs[4]?.name === stat)!;
          const shape = bn.inputs[0]!.shape!.map((d) => (typeof d === 'number' ? d : ref.get('x')!.dims[0]!));
          const count = shape.reduce((a, d, i) => (i === 1 ? a : a * d), 1);
          const unbiasedToBiased = (count - 1) / count;
          const ours = Float32Array.from(got!.data as Float32Array, (v, c) => v - 0.9 * old[c]!);
          const theirs = Float32Array.from(want.data as Float32Array, (v, c) => (v - 0.9 * old[c]!) * unbiasedToBiased);
          expect(relativeError({ dtype: 'float32', dims: [ours.length], data: ours }, { dtype: 'float32', dims: [theirs.length], data: theirs })).toBeLessThan(1e-4);
        }
      }
    });
  }
});

describe('slicec grad', () => {
  it('prints the loss and writes every gradient under its initializer name', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-grad-'));
    try {
      const out = path.join(dir, 'grads.npz');
      const run = runBin(['grad', path.join(REFS, 'mlp_ln.onnx'), '--data', path.join(REFS, 'mlp_ln.npz'), '-o', out, '--json']);
      expect(run.code, run.stderr).toBe(0);
      const result = JSON.parse(run.stdout) as { loss: number; gradients: { name: string }[] };
      const ref = readNpz(path.join(REFS, 'mlp_ln.npz'));
      expect(Math.abs(result.loss - Number(ref.get('loss')!.data[0]))).toBeLessThan(1e-5);
      const written = readNpz(out);
      for (const key of [...ref.keys()].filter((k) => k.startsWith('grad/'))) {
        expect(relativeError(written.get(key.slice(5))!, ref.get(key)!)).toBeLessThan(1e-3);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('works on a compiled folder at a rate, and refuses a batch without labels', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-grad-'));
    try {
      const compiled = path.join(dir, 'out');
      expect(runBin([path.join(REFS, 'cnn_bn.onnx'), '--groups', '4', '--norm', 'keep', '-o', compiled]).code).toBe(0);
      const run = runBin(['grad', compiled, '--rate', '0.5', '--data', path.join(REFS, 'cnn_bn.npz'), '--json']);
      expect(run.code, run.stderr).toBe(0);
      const result = JSON.parse(run.stdout) as { loss: number; gradients: { name: string; shape: number[] }[] };
      expect(result.loss).toBeGreaterThan(0);
      expect(result.gradients.find((g) => g.name === 'c2.weight')!.shape).toEqual([8, 4, 3, 3]);
      const noLabels = path.join(dir, 'x.npz');
      writeNpz(noLabels, { x: readNpz(path.join(REFS, 'cnn_bn.npz')).get('x')! });
      const bad = runBin(['grad', compiled, '--data', noLabels]);
      expect(bad.code).toBe(1);
      expect(bad.stderr).toContain('error SLC010');
      expect(bad.stderr).not.toMatch(/\n\s+at /);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
