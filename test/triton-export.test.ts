// `slicec export triton` and the runtime CLI commands: the repository layout Triton expects,
// config.pbtxt parsed as protobuf text format, model.onnx runnable at the config's dims plus a
// batch, fixed-batch models, flag and folder errors, and `slicec serve` started and stopped by
// SIGTERM in-process.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compile } from '../compiler/pipeline.js';
import { runCli } from './helpers/cli.js';
import { REPO_ROOT } from './helpers/models.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-triton-'));
const dir = path.join(tmp, 'resnet-small.sliced');

beforeAll(async () => {
  await compile({ codegen: false, model: path.join(REPO_ROOT, 'fixtures', 'resnet-small.onnx'), groups: 4, rates: [0.5, 1], outDir: dir, norm: 'keep', log: () => {} });
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

type Pb = { [key: string]: PbValue[] };
type PbValue = string | number | Pb | PbValue[];

/** A small protobuf text-format reader: `key: scalar`, `key: [ ... ]`, `key { ... }`, `key [ {...}, ... ]`. */
function parsePbtxt(text: string): Pb {
  const tokens = text.match(/"(?:[^"\\]|\\.)*"|[{}[\]:,]|[^\s{}[\]:,]+/g) ?? [];
  let i = 0;
  const value = (): PbValue => {
    const t = tokens[i++]!;
    if (t === '{') return message('}');
    if (t === '[') {
      const list: PbValue[] = [];
      while (tokens[i] !== ']') {
        list.push(value());
        if (tokens[i] === ',') i++;
      }
      i++;
      return list;
    }
    if (t.startsWith('"')) return JSON.parse(t) as string;
    if (/^-?[0-9]+$/.test(t)) return Number(t);
    if (!/^[A-Z_0-9]+$/.test(t)) throw new Error(`unexpected token ${t}`);
    return t;
  };
  const message = (end: string | null): Pb => {
    const out: Pb = {};
    while (i < tokens.length && tokens[i] !== end) {
      const key = tokens[i++]!;
      if (!/^[a-z_]+$/.test(key)) throw new Error(`bad field name ${key}`);
      if (tokens[i] === ':') i++;
      (out[key] ??= []).push(value());
    }
    if (end) i++;
    return out;
  };
  const root = message(null);
  if (i !== tokens.length) throw new Error('trailing tokens');
  return root;
}

describe('slicec export triton', () => {
  it('writes <name>_rXXX/config.pbtxt and 1/model.onnx per rate', async () => {
    const repo = path.join(tmp, 'repo');
    const run = await runCli(['export', 'triton', dir, repo, '--max-batch-size', '8', '--instances', '2', '--kind', 'cpu', '--max-queue-delay-us', '500']);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/resnet-small_r050 \(rate 0.5\)/);
    expect(fs.readdirSync(repo).sort()).toEqual(['resnet-small_r050', 'resnet-small_r100']);
    for (const [name, rate] of [['resnet-small_r050', '0.500'], ['resnet-small_r100', '1.000']] as const) {
      const model = path.join(repo, name, '1', 'model.onnx');
      expect(fs.readFileSync(model).equals(fs.readFileSync(path.join(dir, 'slices', `rate-${rate}.onnx`)))).toBe(true);
      const config = parsePbtxt(fs.readFileSync(path.join(repo, name, 'config.pbtxt'), 'utf8'));
      expect(config.name).toEqual([name]);
      expect(config.backend).toEqual(['onnxruntime']);
      expect(config.max_batch_size).toEqual([8]);
      expect(config.input).toEqual([[{ name: ['input'], data_type: ['TYPE_FP32'], dims: [[3, 32, 32]] }]]);
      expect(config.output).toEqual([[{ name: ['output'], data_type: ['TYPE_FP32'], dims: [[10]] }]]);
      expect(config.instance_group).toEqual([[{ count: [2], kind: ['KIND_CPU'] }]]);
      expect(config.dynamic_batching).toEqual([{ max_queue_delay_microseconds: [500] }]);
      // What Triton would feed: the config's dims behind a batch dim.
      const session = await ort.InferenceSession.create(model);
      const out = await session.run({ input: new ort.Tensor('float32', new Float32Array(3 * 3 * 32 * 32), [3, 3, 32, 32]) });
      expect(out.output!.dims).toEqual([3, 10]);
      await session.release();
    }
  });

  it('a model without a batch axis gets max_batch_size 0 and full dims; names and folders are checked', async () => {
    const fixed = path.join(tmp, 'fixed.sliced');
    fs.cpSync(dir, fixed, { recursive: true });
    const manifest = JSON.parse(fs.readFileSync(path.join(fixed, 'manifest.json'), 'utf8'));
    manifest.inputs[0].shape[0] = 1;
    fs.writeFileSync(path.join(fixed, 'manifest.json'), JSON.stringify(manifest));
    const repo = path.join(tmp, 'repo-fixed');
    expect((await runCli(['export', 'triton', fixed, repo, '--name', 'net'])).code).toBe(0);
    const config = parsePbtxt(fs.readFileSync(path.join(repo, 'net_r100', 'config.pbtxt'), 'utf8'));
    expect(config.max_batch_size).toEqual([0]);
    expect(config.input).toEqual([[{ name: ['input'], data_type: ['TYPE_FP32'], dims: [[1, 3, 32, 32]] }]]);
    expect(config.instance_group).toEqual([[{ count: [1], kind: ['KIND_GPU'] }]]);
    expect(config.dynamic_batching).toBeUndefined();
    const again = await runCli(['export', 'triton', fixed, repo, '--name', 'net']);
    expect(again.code).toBe(0);
    expect(fs.readdirSync(repo).sort()).toEqual(['net_r050', 'net_r100']);
    const file = path.join(tmp, 'a-file');
    fs.writeFileSync(file, '');
    expect((await runCli(['export', 'triton', dir, file])).stderr).toMatch(/SLC008/);
    const badName = await runCli(['export', 'triton', dir, repo, '--name', 'a/b']);
    expect(badName.code).toBe(2);
    expect((await runCli(['export', 'triton', tmp, repo])).stderr).toMatch(/SLC010: .* no manifest.json/);
  });
});

describe('slicec serve', () => {
  it('bad flags exit 2, a folder that is not compiled exits 1', async () => {
    for (const args of [['--port', 'x'], ['--slo-ms', '0'], ['--device', 'tpu'], ['--workers', '0'], ['--mode', 'fast']]) {
      const run = await runCli(['serve', dir, ...args]);
      expect(run.code, args.join(' ')).toBe(2);
      expect(run.stderr).toMatch(/SLC007/);
    }
    const run = await runCli(['serve', tmp, '--port', '0']);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/SLC010/);
  });

  it('serves until SIGTERM, then drains and exits 0', async () => {
    let stdout = '';
    const { main } = await import('../compiler/cli.js');
    const done = main(['serve', dir, '--port', '0', '--workers', '1', '--slo-ms', '50'], { stdout: (t) => (stdout += t), stderr: () => {} });
    while (!stdout.includes('serving')) await new Promise((r) => setTimeout(r, 20));
    const url = /at (http:\/\/[^ ]+)\/v2/.exec(stdout)![1]!;
    const r = await fetch(`${url}/v2/models/resnet-small_r050/infer`, {
      method: 'POST',
      body: JSON.stringify({ inputs: [{ name: 'input', shape: [1, 3, 32, 32], datatype: 'FP32', data: new Array(3072).fill(0.5) }] }),
    });
    expect(r.status).toBe(200);
    expect(r.headers.get('x-slicec-rate')).toBe('0.5');
    process.emit('SIGTERM');
    expect(await done).toBe(0);
    expect(stdout).toMatch(/serving resnet-small, resnet-small_r050, resnet-small_r100 at .* objective 50 ms/);
    expect(stdout).toMatch(/draining/);
  });
});
