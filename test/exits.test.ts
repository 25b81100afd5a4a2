// Early exits end to end: compile --exits on a ResNet-style and a LeNet-style fixture, then in
// onnxruntime: the segments of every rate chained reproduce that rate's graph; every head reads
// its segment's output and returns [N, classes] within its MAC budget; a grid head computes
// adaptive average pooling + Gemm → Relu → Gemm (checked against a plain loop); the head's form is
// the finest grid the budget allows; a head's train step lowers its distillation loss; flag errors are user errors; ONNX's checker accepts every graph.

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Manifest } from '../compiler/artifacts.js';
import { modelCost } from '../compiler/cost.js';
import { ErrorCodes } from '../compiler/diagnostics.js';
import { emitHeadTrainSteps } from '../compiler/exits.js';
import { readModel } from '../compiler/onnx-codec.js';
import { compile } from '../compiler/pipeline.js';
import { Rng } from '../compiler/rng.js';
import { GRID_MAX, HEAD_BUDGET, HIDDEN_MAX, HIDDEN_MIN, headForm } from '../passes/add-exits.js';
import { runCli } from './helpers/cli.js';
import { REPO_ROOT } from './helpers/models.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-exits-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const FIXTURES = [
  { name: 'resnet-small', input: [3, 32, 32], exits: 'auto' as const, groups: 4, expected: 2 },
  { name: 'lenet-bn', input: [1, 28, 28], exits: 'auto' as const, groups: 2, expected: 1 },
];
const BATCH = 3;

const sessions = new Map<string, ort.InferenceSession>();
async function run(file: string, feeds: Record<string, ort.Tensor>): Promise<ort.Tensor> {
  let s = sessions.get(file);
  if (!s) {
    s = await ort.InferenceSession.create(file, { intraOpNumThreads: 1, interOpNumThreads: 1, logSeverityLevel: 3 });
    sessions.set(file, s);
  }
  const out = await s.run(feeds);
  return out[s.outputNames[0]!]!;
}
afterAll(async () => {
  for (const s of sessions.values()) await s.release();
});

function randomInput(dims: number[], seed: number): ort.Tensor {
  const rng = new Rng(seed);
  const size = dims.reduce((a, b) => a * b, 1);
  const data = new Float32Array(size);
  for (let i = 0; i < size; i++) data[i] = rng.normal();
  return new ort.Tensor('float32', data, dims);
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
  return worst;
}

const compiled = new Map<string, { dir: string; manifest: Manifest }>();
beforeAll(async () => {
  for (const f of FIXTURES) {
    const dir = path.join(tmp, f.name);
    await compile({ model: path.join(REPO_ROOT, 'fixtures', `${f.name}.onnx`), groups: f.groups, outDir: dir, exits: f.exits, codegen: false, warn: () => {} });
    compiled.set(f.name, { dir, manifest: JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as Manifest });
  }
}, 30_000);

describe.each(FIXTURES)('exits on $name', (f) => {
  it('the manifest records the exits, every rate and file', () => {
    const { dir, manifest } = compiled.get(f.name)!;
    const exits = manifest.exits!;
    expect(exits.length).toBe(f.expected);
    for (const exit of exits) {
      expect(exit.rates.map((r) => r.rate)).toEqual(manifest.rates.map((r) => r.rate));
      for (const r of exit.rates) {
        expect(r.segments.length).toBe(exit.id + 1);
        expect(r.segments.length + r.rest.length).toBe(exits.length + 1);
        for (const file of [...r.segments, ...r.rest, r.head]) expect(fs.existsSync(path.join(dir, file))).toBe(true);
      }
    }
  });

  it('chaining the segments of every rate reproduces that rate\'s output', async () => {
    const { dir, manifest } = compiled.get(f.name)!;
    const exit = manifest.exits![0]!;
    for (const rate of manifest.rates) {
      const x = randomInput([BATCH, ...f.input], 17);
      const inputName = manifest.inputs[0]!.name;
      const full = await run(path.join(dir, rate.file), { [inputName]: x });
      const files = exit.rates.find((r) => r.rate === rate.rate)!;
      let value = x;
      let name = inputName;
      for (const seg of [...files.segments, ...files.rest]) {
        const s = path.join(dir, seg);
        value = await run(s, { [name]: value });
        name = sessions.get(s)!.outputNames[0]!;
      }
      expect(value.dims).toEqual(full.dims);
      expect(maxAbsDiff(value.data as Float32Array, full.data as Float32Array)).toBeLessThanOrEqual(1e-5);
    }
  });

  it('every head reads its segment\'s output, returns [N, classes] and costs ≤ 5 % of the rest', async () => {
    const { dir, manifest } = compiled.get(f.name)!;
    for (const exit of manifest.exits!) {
      for (const r of exit.rates) {
        let value = randomInput([BATCH, ...f.input], 5);
        let name = manifest.inputs[0]!.name;
        for (const seg of r.segments) {
          const s = path.join(dir, seg);
          value = await run(s, { [name]: value });
          name = sessions.get(s)!.outputNames[0]!;
        }
        expect(name).toBe(exit.after);
        const logits = await run(path.join(dir, r.head), { [exit.after]: value });
        expect(logits.dims).toEqual([BATCH, exit.classes]);
        expect(Array.from(logits.data as Float32Array).every(Number.isFinite)).toBe(true);
        // counted again from the files, not taken from the manifest
        const head = modelCost(readModel(path.join(dir, r.head))).macs;
        const rest = r.rest.reduce((a, s) => a + modelCost(readModel(path.join(dir, s))).macs, 0);
        expect(head).toBe(r.macs.head);
        expect(rest).toBe(r.macs.rest);
        expect(head).toBeGreaterThan(0);
        expect(head).toBeLessThanOrEqual(HEAD_BUDGET * rest);
        const total = manifest.rates.find((x) => x.rate === r.rate)!.macs;
        expect(r.macs.segmentsUpTo + r.macs.rest).toBe(total);
      }
    }
  });
});

describe('head form', () => {
  it('takes the finest grid whose head fits, and falls back to the global pool', () => {
    // 32×14×14 with 200 k MACs: a 4×4 grid, the widest hidden layer
    expect(headForm([32, 14, 14], 10, 200_000)).toEqual({ grid: GRID_MAX, features: 32 * GRID_MAX ** 2, hidden: HIDDEN_MAX });
    // the pool's adds (6272) count: the 4×4 grid needs (512 + 10)·32 more for the narrowest hidden layer
    const tight = 6272 + (32 * 9 + 10) * HIDDEN_MIN;
    expect(headForm([32, 14, 14], 10, tight).grid).toBe(3);
    expect(headForm([32, 14, 14], 10, tight - 1).grid).toBe(2);
    expect(headForm([32, 14, 14], 10, 6272 + 32 * 10 + 10).grid).toBe(1);
    expect(headForm([32, 14, 14], 10, 6272 + 32 * 10).hidden).toBeNull();
    expect(() => headForm([32, 14, 14], 10, 6272 + 32 * 10 - 1)).toThrow(/cost more than/);
    // no finer grid than the activation; flat activations get no pool
    expect(headForm([8, 2, 2], 10, 1e6).grid).toBe(2);
    expect(headForm([64], 10, 1e6)).toEqual({ grid: null, features: 64, hidden: HIDDEN_MAX });
  });

  it('a grid head is adaptive average pooling, then Gemm → Relu → Gemm', async () => {
    const { dir, manifest } = compiled.get('lenet-bn')!;
    const r = manifest.exits![0]!.rates.at(-1)!;
    expect(r.grid).toBeGreaterThan(1);
    const head = readModel(path.join(dir, r.head));
    const shape = head.graph.inputs[0]!.shape as number[];
    const [, C, H, W] = shape as [number, number, number, number];
    const g = r.grid!;
    const x = randomInput([BATCH, C, H, W], 31);
    const got = (await run(path.join(dir, r.head), { [head.graph.inputs[0]!.name]: x })).data as Float32Array;
    const weight = (name: string): Float32Array => Float32Array.from(head.graph.initializers.find((v) => v.name === name)!.const!.numbers());
    const [w1, b1, w2, b2] = ['head.fc1.weight', 'head.fc1.bias', 'head.fc2.weight', 'head.fc2.bias'].map(weight) as [Float32Array, Float32Array, Float32Array, Float32Array];
    const hidden = b1.length;
    const K = b2.length;
    // cell i covers rows [i·k − p, (i+1)·k − p) within the image, k = ⌈H/g⌉, p the leading padding
    const cells = (n: number): [number, number][] => {
      const k = Math.ceil(n / g);
      const p = Math.floor((g * k - n) / 2);
      return Array.from({ length: g }, (_, i) => [Math.max(0, i * k - p), Math.min(n, (i + 1) * k - p)]);
    };
    const xs = x.data as Float32Array;
    for (let n = 0; n < BATCH; n++) {
      const f: number[] = [];
      for (let c = 0; c < C; c++) {
        for (const [y0, y1] of cells(H)) {
          for (const [x0, x1] of cells(W)) {
            let total = 0;
            for (let y = y0; y < y1; y++) for (let xx = x0; xx < x1; xx++) total += xs[((n * C + c) * H + y) * W + xx]!;
            f.push(total / ((y1 - y0) * (x1 - x0)));
          }
        }
      }
      const h = Array.from({ length: hidden }, (_, j) => Math.max(0, b1[j]! + f.reduce((a, v, i) => a + v * w1[j * f.length + i]!, 0)));
      for (let k = 0; k < K; k++) {
        const want = b2[k]! + h.reduce((a, v, j) => a + v * w2[k * hidden + j]!, 0);
        expect(Math.abs(got[n * K + k]! - want)).toBeLessThanOrEqual(1e-4 * (1 + Math.abs(want)));
      }
    }
  });
});

describe('head train steps', () => {
  it('one SGD step lowers the distillation loss against the final model\'s softmax', async () => {
    const { dir, manifest } = compiled.get('resnet-small')!;
    const batch = 4;
    const exits = emitHeadTrainSteps(dir, { batch });
    const written = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as Manifest;
    expect(written.exits![0]!.rates[0]!.headTrain?.file).toMatch(/head-0\.train\.onnx$/);
    const exit = exits[0]!;
    const r = exit.rates[1]!;
    const x = randomInput([batch, 3, 32, 32], 23);
    const inputName = manifest.inputs[0]!.name;
    const boundary = await run(path.join(dir, r.segments[0]!), { [inputName]: x });
    let finalOut = boundary;
    let name = exit.after;
    for (const seg of r.rest) {
      const s = path.join(dir, seg);
      finalOut = await run(s, { [name]: finalOut });
      name = sessions.get(s)!.outputNames[0]!;
    }
    const teacher = softmax(finalOut.data as Float32Array, exit.classes);
    const head = readModel(path.join(dir, r.head));
    const params = new Map(head.graph.initializers.map((v) => [v.name, v.const!]));
    const session = await ort.InferenceSession.create(path.join(dir, r.headTrain!.file), { logSeverityLevel: 3 });
    const sig = r.headTrain!.signature;
    expect(sig.inputs.map((i) => i.role).sort()).toEqual(['batch', 'lr', 'parameter', 'parameter', 'parameter', 'parameter', 'teacher']);
    const step = async (weights: Map<string, Float32Array>): Promise<{ loss: number; updated: Map<string, Float32Array> }> => {
      const feeds: Record<string, ort.Tensor> = {};
      for (const input of sig.inputs) {
        if (input.role === 'batch') feeds[input.name] = boundary;
        else if (input.role === 'teacher') feeds[input.name] = new ort.Tensor('float32', teacher, input.shape);
        else if (input.role === 'parameter') feeds[input.name] = new ort.Tensor('float32', weights.get(input.parameter!)!, input.shape);
        else if (input.role === 'lr') feeds[input.name] = new ort.Tensor('float32', Float32Array.of(0.05), input.shape);
        else throw new Error(`unexpected train input ${input.name} (${input.role})`);
      }
      const out = await session.run(feeds);
      const updated = new Map<string, Float32Array>();
      for (const o of sig.outputs) if (o.role === 'parameter') updated.set(o.parameter!, out[o.name]!.data as Float32Array);
      return { loss: (out[sig.outputs.find((o) => o.role === 'loss')!.name]!.data as Float32Array)[0]!, updated };
    };
    const start = new Map([...params].map(([k, t]) => [k, Float32Array.from(t.numbers())]));
    const first = await step(start);
    expect(first.updated.size).toBe(params.size);
    const second = await step(first.updated);
    expect(Number.isFinite(first.loss)).toBe(true);
    expect(second.loss).toBeLessThan(first.loss);
    await session.release();
  });
});

function softmax(logits: Float32Array, classes: number): Float32Array {
  const out = new Float32Array(logits.length);
  for (let n = 0; n < logits.length / classes; n++) {
    const row = logits.subarray(n * classes, (n + 1) * classes);
    const top = Math.max(...row);
    let total = 0;
    for (let c = 0; c < classes; c++) total += (out[n * classes + c] = Math.exp(row[c]! - top));
    for (let c = 0; c < classes; c++) out[n * classes + c]! /= total;
  }
  return out;
}

describe('--exits on the command line', () => {
  const model = path.join(REPO_ROOT, 'fixtures', 'resnet-small.onnx');

  it('names modules: --exits layer1.0 cuts after the block\'s output', async () => {
    const out = path.join(tmp, 'named');
    const r = await runCli([model, '--groups', '2', '--exits', 'layer1.0', '-o', out, '--explain', '--quiet']);
    expect(r.code).toBe(0);
    const manifest = JSON.parse(fs.readFileSync(path.join(out, 'manifest.json'), 'utf8')) as Manifest;
    expect(manifest.exits!.map((e) => e.layer)).toEqual(['/layer1/layer1.0/relu_1/Relu']);
    expect(r.stdout).toMatch(/cut after.*exit.*why/);
    expect(r.stdout).toMatch(/layer1\.0\/relu_1\/Relu\s+residual.*yes\s+exit 0: named by --exits/);
  });

  it('explains auto choices', async () => {
    const r = await runCli([model, '--groups', '2', '--exits', 'auto', '-o', path.join(tmp, 'auto'), '--explain', '--quiet']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/too close to the end/);
    expect(r.stdout).toMatch(/the activation after it ends the block/);
  });

  it('a model with no block boundary gets no exits, and a note says so', async () => {
    const out = path.join(tmp, 'mlp');
    const r = await runCli([path.join(REPO_ROOT, 'fixtures', 'mlp.onnx'), '--groups', '2', '--exits', 'auto', '-o', out, '--explain']);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/--exits found no place for an exit/);
    expect(r.stdout).toMatch(/inside a stage/);
    const manifest = JSON.parse(fs.readFileSync(path.join(out, 'manifest.json'), 'utf8')) as Manifest;
    expect(manifest.exits).toEqual([]);
    expect(fs.existsSync(path.join(out, 'exits'))).toBe(false);
  });

  it.each([
    [['--exits', 'nosuch'], /no layer named nosuch/],
    [['--exits', 'layer1.0/conv1'], /cannot be cut after layer1\.0\/conv1/],
    [['--exits', 'avgpool'], /would cost more than 5\.0%/],
    [['--exits', 'auto,layer1.0'], /"auto" cannot be mixed/],
    [['--exits', 'layer1.0,,layer1.1'], /remove the empty entry/],
  ])('%j is a user error with a code', async (flags, message) => {
    const r = await runCli([model, '--groups', '2', ...flags, '-o', path.join(tmp, 'bad'), '--json']);
    expect(r.code).toBe(2);
    const error = JSON.parse(r.stdout) as { error: Record<string, string> };
    expect(error.error.code).toBe(ErrorCodes.BAD_FLAG);
    // the message, or for a malformed flag its hint
    expect(Object.values(error.error).join('\n')).toMatch(message);
    expect(fs.existsSync(path.join(tmp, 'bad'))).toBe(false);
  });
});

describe('onnx.checker accepts every exit graph', () => {
  it('segments, heads and head train steps', () => {
    const PYTHON = '/usr/bin/python3';
    const probe = spawnSync(PYTHON, ['-c', 'import onnx'], { encoding: 'utf8' });
    if (probe.status !== 0) throw new Error('python3-onnx is missing: run `apt-get install -y python3-onnx` (see README)');
    const files: string[] = [];
    for (const { dir } of compiled.values()) {
      const walk = (d: string): void => {
        for (const e of fs.readdirSync(d, { withFileTypes: true })) {
          if (e.isDirectory()) walk(path.join(d, e.name));
          else if (e.name.endsWith('.onnx')) files.push(path.join(d, e.name));
        }
      };
      walk(path.join(dir, 'exits'));
    }
    expect(files.some((f) => f.endsWith('.train.onnx'))).toBe(true);
    const check = 'import sys, onnx\nbad = 0\nfor f in sys.argv[1:]:\n    try:\n        onnx.checker.check_model(onnx.load(f), full_check=True)\n    except Exception as e:\n        bad += 1\n        print(f, e)\nsys.exit(1 if bad else 0)\n';
    const r = spawnSync(PYTHON, ['-c', check, ...files], { encoding: 'utf8' });
    expect(r.stdout + r.stderr).toBe('');
    expect(r.status).toBe(0);
  });
});
