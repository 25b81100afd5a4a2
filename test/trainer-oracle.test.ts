// Same-step equivalence: `slicec train` with --no-shuffle and plain (or Nesterov) SGD on the
// checked-in PyTorch references (test/data/torch-refs/sgd_epoch*.npz: one epoch of 8 batches of
// torch.optim.SGD) ends with PyTorch's weights, every tensor within 1e-3 of its largest entry,
// and each step's loss matches PyTorch's loss before that step.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runTraining } from '../compiler/finetune.js';
import { readModel } from '../compiler/onnx-codec.js';
import { readNpz } from '../runtime/npz.js';
import { REPO_ROOT } from './helpers/models.js';

const REFS = path.join(REPO_ROOT, 'test', 'data', 'torch-refs');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-trainer-oracle-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('slicec train against PyTorch SGD', () => {
  for (const name of ['sgd_epoch', 'sgd_epoch_momentum']) {
    it(`${name}: same weights after one epoch`, async () => {
      const ref = readNpz(path.join(REFS, `${name}.npz`));
      const scalar = (k: string) => Number(ref.get(k)!.data[0]);
      const out = path.join(tmp, `${name}.onnx`);
      const outcome = await runTraining(path.join(REFS, `${name}.onnx`), {
        data: path.join(REFS, `${name}.npz`), out, shuffle: false,
        overrides: {
          epochs: 1, batchSize: Number(ref.get('batch_size')!.data[0]),
          optimizer: { kind: 'sgd', lr: scalar('lr'), momentum: scalar('momentum'), nesterov: scalar('nesterov') === 1, weightDecay: scalar('weight_decay') },
          schedule: { kind: 'constant', warmupEpochs: 0 },
        },
      });
      expect(outcome.result.steps).toBe(8);
      const losses = fs.readFileSync(outcome.logFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((e) => e.type === 'step').map((e) => e.loss as number);
      const refLosses = Array.from(ref.get('losses')!.data as Float32Array);
      losses.forEach((l, i) => expect(Math.abs(l - refLosses[i]!)).toBeLessThan(1e-4 * Math.max(1, refLosses[i]!)));
      const trained = new Map(readModel(out).graph.initializers.map((v) => [v.name, v.const!.data() as Float32Array]));
      let compared = 0;
      for (const [key, after] of ref) {
        if (!key.startsWith('after/')) continue;
        const want = after.data as Float32Array;
        const got = trained.get(key.slice('after/'.length))!;
        let scale = 0;
        let diff = 0;
        for (let i = 0; i < want.length; i++) {
          scale = Math.max(scale, Math.abs(want[i]!));
          diff = Math.max(diff, Math.abs(got[i]! - want[i]!));
        }
        expect(diff / scale, key).toBeLessThanOrEqual(1e-3);
        compared++;
      }
      expect(compared).toBe(8);
    });
  }
});
