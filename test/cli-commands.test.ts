// User errors of the newer commands' flags, through the CLI in-process (kept apart from
// cli.test.ts, whose module resets would give later dynamic imports a second diagnostics module).

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runCli } from './helpers/cli.js';
import { readServedManifest } from '../runtime/manifest.js';
import { REPO_ROOT } from './helpers/models.js';

const STACK_LINE = /^\s+at .+/m;

describe('flags of the newer commands', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-cli-flags-'));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
  const resnet = path.join(REPO_ROOT, 'fixtures', 'resnet-small.onnx');

  it('--elastic takes fast or lean; train-graphs --optimizer takes sgd or adamw (SLC007, exit 2)', async () => {
    const elastic = await runCli([resnet, '--groups', '2', '--elastic', 'slow', '-o', path.join(dir, 'never')]);
    expect(elastic.code).toBe(2);
    expect(elastic.stderr).toContain('error SLC007: --elastic expects fast or lean, got "slow"');
    expect(fs.existsSync(path.join(dir, 'never'))).toBe(false);
    const optimizer = await runCli(['train-graphs', dir, '--optimizer', 'rmsprop']);
    expect(optimizer.code).toBe(2);
    expect(optimizer.stderr).toContain('error SLC007: --optimizer expects sgd or adamw');
    expect(optimizer.stderr).not.toMatch(STACK_LINE);
  });

  it('model names are what URLs and Triton folders take: --name is checked, a file name is made one', async () => {
    for (const args of [['serve', dir, '--name', 'a/b'], ['export', 'triton', dir, path.join(dir, 'repo'), '--name', 'my model']]) {
      const r = await runCli(args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(/error SLC007: --name expects a name of letters, digits, _, \. and -/);
    }
    const odd = path.join(dir, 'my model (v2).onnx');
    fs.copyFileSync(resnet, odd);
    const out = path.join(dir, 'odd.sliced');
    expect((await runCli([odd, '--groups', '2', '-o', out, '--quiet'])).code).toBe(0);
    expect(readServedManifest(out).sourceName).toBe('my_model__v2_');
  });

  it('eval --resize reaches the image loader; a bad value is SLC007', async () => {
    const { default: sharp } = await import('sharp');
    const images = path.join(dir, 'images');
    for (const [cls, side] of [['a', 8], ['b', 12]] as const) {
      fs.mkdirSync(path.join(images, cls), { recursive: true });
      await sharp(Buffer.alloc(side * side * 3, cls === 'a' ? 40 : 200), { raw: { width: side, height: side, channels: 3 } }).png().toFile(path.join(images, cls, '0.png'));
    }
    const cnn = path.join(REPO_ROOT, 'fixtures', 'fashion-mnist-cnn.onnx');
    expect((await runCli(['eval', cnn, '--data', images, '--json'])).code).toBe(0); // resized to the model's 28×28
    const other = await runCli(['eval', cnn, '--data', images, '--resize', '20x20:fill']);
    expect(other.code).toBe(1);
    expect(other.stderr).toMatch(/error SLC010: .*do not fit the model input[\s\S]*20×20 images/);
    const bad = await runCli(['eval', cnn, '--data', images, '--resize', '20']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('error SLC007: --resize expects HxW');
  });

  it('demo refuses an output folder that is not an earlier demo (SLC008), and leaves it as it was', async () => {
    const taken = path.join(dir, 'taken');
    fs.mkdirSync(taken);
    fs.writeFileSync(path.join(taken, 'mine.txt'), 'mine');
    const run = await runCli(['demo', '-o', taken]);
    expect(run.code, run.stderr).toBe(1);
    expect(run.stderr).toContain('error SLC008');
    expect(run.stderr).not.toMatch(STACK_LINE);
    expect(fs.readdirSync(taken)).toEqual(['mine.txt']);
  });
});
