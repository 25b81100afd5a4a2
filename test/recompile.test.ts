// A recompile into an earlier output that was fine-tuned or served: the fine-tune's own folder
// (training/: log and checkpoints) and exits/ (with the server's heads checkpoint) are slicec's
// and are replaced with the rest; a file the user added is not.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { isUserError } from '../compiler/diagnostics.js';
import { compile } from '../compiler/pipeline.js';
import { REPO_ROOT } from './helpers/models.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-recompile-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const MODEL = path.join(REPO_ROOT, 'fixtures', 'lenet-bn.onnx');

describe('recompiling a fine-tuned output', () => {
  it('replaces training/ with the rest, and still refuses a file the user put there', async () => {
    const outDir = path.join(tmp, 'out');
    const options = { model: MODEL, groups: 2, norm: 'keep' as const, codegen: false, outDir, log: () => {}, warn: () => {} };
    await compile(options);
    const manifestFile = path.join(outDir, 'manifest.json');
    const manifest = JSON.parse(fs.readFileSync(manifestFile, 'utf8')) as Record<string, unknown>;
    fs.writeFileSync(manifestFile, JSON.stringify({ ...manifest, training: { steps: 1 } }));
    fs.mkdirSync(path.join(outDir, 'training', 'checkpoint'), { recursive: true });
    fs.writeFileSync(path.join(outDir, 'training', 'log.jsonl'), '{}\n');
    fs.writeFileSync(path.join(outDir, 'training', 'checkpoint', 'weights-1.npz'), '');
    await compile(options);
    expect(fs.existsSync(path.join(outDir, 'training'))).toBe(false);

    fs.writeFileSync(path.join(outDir, 'notes.txt'), 'mine');
    const error = await compile(options).catch((e: unknown) => e);
    expect(isUserError(error) && error.code === 'SLC015').toBe(true);
    expect(fs.readFileSync(path.join(outDir, 'notes.txt'), 'utf8')).toBe('mine');
  });

  it('replaces what a stopped fine-tune and a killed write left (a checkpoint, temporary files)', async () => {
    const outDir = path.join(tmp, 'stopped');
    const options = { model: MODEL, groups: 2, norm: 'keep' as const, codegen: false, outDir, log: () => {}, warn: () => {} };
    await compile(options);
    // a fine-tune stopped by Ctrl-C: its checkpoint, and no training section in the manifest yet
    fs.mkdirSync(path.join(outDir, 'training', 'checkpoint'), { recursive: true });
    fs.writeFileSync(path.join(outDir, 'training', 'checkpoint', 'state.json'), JSON.stringify({ format: 'slicec-checkpoint/1' }));
    fs.writeFileSync(path.join(outDir, 'training', 'checkpoint', 'weights-5.npz'), '');
    fs.writeFileSync(path.join(outDir, 'training', 'log.jsonl'), '{}\n');
    for (const f of ['model.ts.tmp-4242', 'manifest.json.4242.1764000000000.tmp', 'slices/rate-1.000.onnx.reemit-4242.tmp']) fs.writeFileSync(path.join(outDir, f), '');
    await compile(options);
    expect(fs.existsSync(path.join(outDir, 'training'))).toBe(false);
    expect(fs.readdirSync(outDir).filter((f) => f.includes('tmp'))).toEqual([]);
    // a training/ folder that is not a slicec checkpoint stays the user's
    fs.mkdirSync(path.join(outDir, 'training'));
    fs.writeFileSync(path.join(outDir, 'training', 'notes.txt'), 'mine');
    const error = await compile(options).catch((e: unknown) => e);
    expect(isUserError(error) && error.code === 'SLC015').toBe(true);
  });

  it('replaces exits/ with what the server added there (the heads checkpoint)', async () => {
    const outDir = path.join(tmp, 'exits');
    const options = { model: path.join(REPO_ROOT, 'fixtures', 'resnet-small.onnx'), groups: 2, norm: 'keep' as const, exits: 'auto' as const, codegen: false, outDir, log: () => {}, warn: () => {} };
    await compile(options);
    fs.mkdirSync(path.join(outDir, 'exits', 'cache'), { recursive: true });
    fs.writeFileSync(path.join(outDir, 'exits', 'cache', 'heads.json'), '{}');
    await compile(options);
    expect(fs.existsSync(path.join(outDir, 'exits', 'cache'))).toBe(false);
  });
});
