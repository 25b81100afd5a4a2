// calibrate-group-norm runs in two onnxruntime sessions however many sites a model has, feeding
// weights and γ/β as inputs; what it reports must match the fitted model run the ordinary way
// (weights stored as initializers, one fresh session), and the model before the pass must be
// left as it was.

import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { syntheticCalibration } from '../compiler/calibration-data.js';
import { cloneModel } from '../compiler/clone.js';
import { encodeModel, readModel } from '../compiler/onnx-codec.js';
import { inferShapes } from '../compiler/shape-inference.js';
import { agreement, calibrateGroupNorm } from '../passes/calibrate-group-norm.js';
import { coupleChannels } from '../passes/couple-channels.js';
import { insertGroupNorm } from '../passes/insert-group-norm.js';
import { partitionChannels } from '../passes/partition-channels.js';
import { reorderChannels } from '../passes/reorder-channels.js';
import { openFloatSession, runFloat } from '../runtime/session.js';
import { REPO_ROOT } from './helpers/models.js';

describe('calibrate-group-norm', () => {
  for (const name of ['resnet-small', 'lenet-bn']) {
    it(`${name}: two sessions, and the report matches the stored-weight model`, async () => {
      const model = readModel(path.join(REPO_ROOT, 'fixtures', `${name}.onnx`));
      inferShapes(model);
      const analysis = coupleChannels(model, { layerNorms: 'rewrite' });
      const partition = partitionChannels(analysis, 4, 1);
      reorderChannels(model.graph, analysis, partition);
      const before = cloneModel(model).model;
      const beforeBytes = encodeModel(before);
      const { sites } = insertGroupNorm(model, analysis, partition);
      expect(sites.length).toBeGreaterThan(1);
      const feeds = syntheticCalibration(model);
      let opened = 0;
      const report = await calibrateGroupNorm(model, before, sites, feeds, (bytes) => {
        opened++;
        return openFloatSession(bytes);
      }, 'synthetic');
      expect(opened).toBe(2);
      expect(report.after.relativeError).toBeLessThan(report.before.relativeError);

      const outputs = model.graph.outputs.map((o) => o.name);
      const reference = await runFloat(beforeBytes, feeds, outputs);
      const fitted = await runFloat(encodeModel(model), feeds, outputs);
      const check = agreement(reference, fitted);
      expect(check.top1).toBe(report.after.top1);
      expect(Math.abs(check.relativeError - report.after.relativeError)).toBeLessThan(1e-5);
      expect(encodeModel(before)).toEqual(beforeBytes);
    });
  }
});
