// Golden text dumps: the model after every pipeline step, per fixture, with the analyses.
// Regenerate with `npx vitest run -u` and review the diff.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { compile } from '../compiler/pipeline.js';
import { printModel } from '../compiler/printer.js';
import { fixtureModels, REPO_ROOT } from './helpers/models.js';

const fixtures = fixtureModels();

describe('golden dumps per step', () => {
  it('has fixtures to check', () => {
    expect(fixtures.length).toBeGreaterThanOrEqual(6);
  });
  for (const fixture of fixtures) {
    it(fixture.name, async () => {
      const name = path.basename(fixture.file, '.onnx');
      const dumps: { step: string; text: string }[] = [];
      const outDir = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-golden-'));
      try {
        await compile(
          // calibration is left out: fitted scales depend on float rounding of the machine; the
          // lean elastic form is dumped (the fast one's branches print as opaque attributes); the
          // group-norm passes are the ones dumped (test/norm-bn.test.ts covers bn)
          { model: fixture.file, groups: 4, rates: [0.5, 1], outDir: path.join(outDir, 'out'), calibrate: false, elastic: 'lean', norm: 'gn' },
          { afterStep: (step, model, sections) => dumps.push({ step, text: printModel(model, { sections }) }) },
        );
      } finally {
        fs.rmSync(outDir, { recursive: true, force: true });
      }
      let index = 0;
      for (const d of dumps) {
        const file = path.join(REPO_ROOT, 'test', 'golden', name, `${String(index++).padStart(2, '0')}-${d.step.replace('@', '-')}.txt`);
        await expect(d.text).toMatchFileSnapshot(file);
      }
    });
  }
});
