// A second opinion on every emitted graph: ONNX's own checker with full shape inference
// (Debian's python3-onnx, a test-time tool only).

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { compile } from '../compiler/pipeline.js';
import { fixtureModels } from './helpers/models.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-checker-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

// Debian's interpreter: python3-onnx installs there, whatever `python3` is first on PATH.
const PYTHON = '/usr/bin/python3';

const CHECK = `
import sys, onnx
failed = 0
for f in sys.argv[1:]:
    try:
        onnx.checker.check_model(onnx.load(f), full_check=True)
    except Exception as e:
        failed += 1
        print(f"{f}: {e}")
sys.exit(1 if failed else 0)
`;

describe('onnx.checker accepts every emitted graph', () => {
  it('fixtures at every rate', async () => {
    const probe = spawnSync(PYTHON, ['-c', 'import onnx'], { encoding: 'utf8' });
    if (probe.status !== 0) throw new Error('python3-onnx is missing: run `apt-get install -y python3-onnx` (see README)');
    const files: string[] = [];
    for (const fixture of fixtureModels()) {
      const outDir = path.join(tmp, path.basename(fixture.file, '.onnx'));
      const result = await compile({ model: fixture.file, groups: 4, outDir });
      for (const rate of result.rates) files.push(path.join(outDir, rate.file));
    }
    const run = spawnSync(PYTHON, ['-c', CHECK, ...files], { encoding: 'utf8' });
    expect(run.stdout + run.stderr).toBe('');
    expect(run.status).toBe(0);
  });
});
