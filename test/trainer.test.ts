// The trainer end to end on small compiled models: a short fine-tune (the loss falls, every rate
// ends above chance), a run killed with SIGKILL and resumed ends bit-exact with an uninterrupted
// one, eval's JSON, plan overrides by flags, and user errors.

import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { Manifest } from '../compiler/artifacts.js';
import { calibrateInsertedOnData, INSERTED_CALIBRATION_SAMPLES, loadData, runTraining } from '../compiler/finetune.js';
import { encodeModel } from '../compiler/onnx-codec.js';
import { Tensor } from '../compiler/tensor.js';
import { loadTarget } from '../compiler/train-target.js';
import { withOutputs } from '../passes/calibrate-group-norm.js';
import { materialize, takeRows } from '../runtime/data.js';
import { Rng } from '../compiler/rng.js';
import * as ort from 'onnxruntime-node';
import { readNpz, writeNpz } from '../runtime/npz.js';
import { missingCudaProvider, runFloat } from '../runtime/session.js';
import { relativeError, withRate } from './helpers/compare.js';
import { runCli } from './helpers/cli.js';
import { REPO_ROOT } from './helpers/models.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-trainer-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Ten classes: a fixed random template per class plus Gaussian noise (learnable in a few steps). */
function syntheticData(file: string, shape: number[], train: number, test: number, seed: number): void {
  const rng = new Rng(seed);
  const size = shape.reduce((a, b) => a * b, 1);
  const templates = Float32Array.from({ length: size * 10 }, () => rng.normal());
  const make = (n: number) => {
    const x = new Float32Array(n * size);
    const y = new BigInt64Array(n);
    for (let i = 0; i < n; i++) {
      const c = rng.int(10);
      y[i] = BigInt(c);
      for (let k = 0; k < size; k++) x[i * size + k] = templates[c * size + k]! + 1.5 * rng.normal();
    }
    return { x: { dtype: 'float32' as const, dims: [n, ...shape], data: x }, y: { dtype: 'int64' as const, dims: [n], data: y } };
  };
  const a = make(train);
  const b = make(test);
  writeNpz(file, { x: a.x, y: a.y, x_test: b.x, y_test: b.y });
}

async function compileTo(model: string, out: string, extra: string[] = []): Promise<void> {
  const r = await runCli([model, '--groups', '4', '--rates', '1,0.5,0.25', '-o', out, ...extra]);
  expect(r.code, r.stderr).toBe(0);
}

const SMALL = path.join(REPO_ROOT, 'test', 'data', 'torch-refs', 'sgd_epoch.onnx');
const LENET = path.join(REPO_ROOT, 'fixtures', 'lenet-bn.onnx');
const MLP = path.join(REPO_ROOT, 'fixtures', 'mlp.onnx');
const smallData = path.join(tmp, 'small.npz');
const mlpData = path.join(tmp, 'mlp.npz');
const lenetData = path.join(tmp, 'lenet.npz');

beforeAll(() => {
  syntheticData(smallData, [1, 12, 12], 512, 256, 1);
  syntheticData(mlpData, [784], 512, 256, 3);
  syntheticData(lenetData, [1, 28, 28], 384, 64, 2);
});

/** elastic.onnx at every compiled rate computes what that rate's own file computes on `x`. */
async function expectElasticEqualsRates(dir: string, manifest: Manifest, x: ort.Tensor, tolerance: number): Promise<void> {
  const elastic = await ort.InferenceSession.create(path.join(dir, manifest.elastic.file));
  for (const rate of manifest.rates) {
    const graph = await ort.InferenceSession.create(path.join(dir, rate.file));
    const input = graph.inputNames[0]!;
    const want = (await graph.run({ [input]: x }))[graph.outputNames[0]!]!.data as Float32Array;
    const got = (await elastic.run(withRate({ [input]: x }, rate.rate)))[elastic.outputNames[0]!]!.data as Float32Array;
    expect(relativeError(want, got), `rate ${rate.rate}`).toBeLessThan(tolerance);
    await graph.release();
  }
  await elastic.release();
}

function logEntries(file: string): { type: string; [k: string]: unknown }[] {
  return fs.readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
}

describe('slicec finetune', () => {
  it('a short fine-tune lowers the loss and lifts every rate above chance (10 %)', async () => {
    const dir = path.join(tmp, 'ci');
    await compileTo(MLP, dir);
    const r = await runCli(['finetune', dir, '--data', mlpData, '--epochs', '2', '--batch-size', '32', '--lr', '0.02', '--warmup', '0', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const summary = JSON.parse(r.stdout);
    const steps = logEntries(summary.log).filter((e) => e.type === 'step');
    expect(steps).toHaveLength(32);
    // sandwich: the full and the smallest rate every batch, one of the others
    for (const s of steps) expect((s.rates as number[])).toEqual([1, 0.5, 0.25]);
    const mean = (xs: unknown[]) => xs.reduce((a: number, e) => a + ((e as { loss: number }).loss), 0) / xs.length;
    expect(mean(steps.slice(-4))).toBeLessThan(0.5 * mean(steps.slice(0, 4)));
    const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as Manifest;
    for (const rate of manifest.rates) expect(rate.accuracy, `rate ${rate.rate}`).toBeGreaterThan(0.5);
    expect(manifest.training?.steps).toBe(32);
    expect(manifest.training?.history).toHaveLength(2);

    // eval reads the re-emitted files: the same accuracies, and the JSON shape
    const e = await runCli(['eval', dir, '--data', mlpData, '--json']);
    expect(e.code, e.stderr).toBe(0);
    const rows = JSON.parse(e.stdout).rates as Record<string, number>[];
    expect(rows.map((x) => x.rate)).toEqual([1, 0.5, 0.25]);
    for (const row of rows) {
      for (const key of ['rate', 'accuracy', 'macs', 'parameters', 'latencyMs']) expect(typeof row[key], key).toBe('number');
      expect(row.latencyMs).toBeGreaterThan(0);
      expect(row.accuracy).toBeCloseTo(manifest.rates.find((m) => m.rate === row.rate)!.accuracy!, 6);
    }
    expect(rows[0]!.macs).toBeGreaterThan(rows[2]!.macs!);

    // --device cuda without onnxruntime's CUDA provider (the README's install): one warning, then
    // the CPU's numbers, no crash
    const written: string[] = [];
    const spy = vi.spyOn(process.stderr, 'write').mockImplementation((text) => (written.push(String(text)), true));
    let onCuda: Awaited<ReturnType<typeof runCli>>;
    try {
      onCuda = await runCli(['eval', dir, '--data', mlpData, '--device', 'cuda', '--json']);
    } finally {
      spy.mockRestore();
    }
    expect(onCuda.code, onCuda.stderr).toBe(0);
    const cudaRows = JSON.parse(onCuda.stdout).rates as Record<string, number>[];
    cudaRows.forEach((row, i) => expect(row.accuracy).toBeCloseTo(rows[i]!.accuracy!, 3));
    if (missingCudaProvider()) expect(written.filter((t) => /CUDA was asked for but cannot be used .*running on CPU/.test(t))).toHaveLength(1);

    // the trained weights reach every graph: elastic.onnx at each rate computes that rate's file
    expect(manifest.elastic.form).toBe('fast');
    const batch = readNpz(mlpData).get('x')!;
    const x = new ort.Tensor('float32', (batch.data as Float32Array).slice(0, 8 * batch.dims[1]!), [8, batch.dims[1]!]);
    await expectElasticEqualsRates(dir, manifest, x, 1e-5);
  }, 60_000);

  for (const norm of ['bn', 'keep']) {
    it(`--norm ${norm}: after fine-tuning, elastic.onnx uses each rate's own statistics, as the rate files do`, async () => {
      const dir = path.join(tmp, norm);
      await compileTo(LENET, dir, ['--norm', norm]);
      const r = await runCli(['finetune', dir, '--data', lenetData, '--epochs', '1', '--batch-size', '32', '--lr', '0.02', '--warmup', '0', '--json']);
      expect(r.code, r.stderr).toBe(0);
      const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as Manifest;
      expect(manifest.elastic.form).toBe('fast');
      expect(manifest.normalization.perRateStats).toBe(true);
      const batch = readNpz(lenetData).get('x')!;
      const x = new ort.Tensor('float32', (batch.data as Float32Array).slice(0, 8 * 784), [8, 1, 28, 28]);
      await expectElasticEqualsRates(dir, manifest, x, 1e-4);
    }, 60_000);
  }

  it('compile --data takes the calibration batch from the training examples (activation order, inserted norms)', async () => {
    const dir = path.join(tmp, 'data-calibration');
    const r = await runCli([LENET, '--groups', '4', '--rates', '0.5,1', '--data', lenetData, '--calibration-samples', '64', '-o', dir, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const result = JSON.parse(r.stdout) as { importance: Record<string, unknown>; normalization: { mode: string; calibration: { source: string; batch: number } } };
    expect(result.importance).toMatchObject({ mode: 'activation', source: 'data', batch: 64 });
    expect(result.normalization.mode).toBe('bn');
    expect(result.normalization.calibration).toMatchObject({ source: 'data', batch: 64 });
    const both = await runCli([LENET, '--groups', '4', '--data', lenetData, '--calibration', lenetData, '-o', path.join(tmp, 'never')]);
    expect(both.code).toBe(2);
    expect(both.stderr).toContain('error SLC007: --calibration and --data both give the calibration batch');
    const zero = await runCli([LENET, '--groups', '4', '--data', lenetData, '--calibration-samples', '0', '-o', path.join(tmp, 'never')]);
    expect(zero.code).toBe(2);
    expect(zero.stderr).toContain('error SLC007: --calibration-samples expects an integer ≥ 1');
    const missing = await runCli([LENET, '--groups', '4', '--data', path.join(tmp, 'missing.npz'), '-o', path.join(tmp, 'never')]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('error SLC010: cannot use --data');
    expect(missing.stderr).not.toMatch(/^\s+at .+/m);
    expect(fs.existsSync(path.join(tmp, 'never'))).toBe(false);
  });

  it('a run killed with SIGKILL and resumed ends with the weights of an uninterrupted run', async () => {
    const a = path.join(tmp, 'resume-a');
    const b = path.join(tmp, 'resume-b');
    await compileTo(LENET, a, ['--norm', 'keep']);
    fs.cpSync(a, b, { recursive: true });
    const flags = ['--data', lenetData, '--epochs', '3', '--batch-size', '32', '--lr', '0.02', '--checkpoint-every', '1'];
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'test', 'helpers', 'cli-main.ts'), 'finetune', a, ...flags, '--json'], { cwd: REPO_ROOT, stdio: 'ignore' });
    const state = path.join(a, 'training', 'checkpoint', 'state.json');
    const killedAt = await new Promise<number>((resolve, reject) => {
      const timer = setInterval(() => {
        try {
          const step = JSON.parse(fs.readFileSync(state, 'utf8')).step as number;
          if (step >= 5) {
            child.kill('SIGKILL');
            clearInterval(timer);
            resolve(step);
          }
        } catch {
          // not written yet (or being replaced)
        }
      }, 2);
      child.on('exit', () => {
        clearInterval(timer);
        reject(new Error('the run ended before it could be killed'));
      });
    });
    await new Promise((resolve) => child.on('exit', resolve));
    expect(killedAt).toBeLessThan(36);
    const resumed = await runTraining(a, { data: lenetData, overrides: { epochs: 3, batchSize: 32, optimizer: { lr: 0.02 } }, resume: true });
    const straight = await runTraining(b, { data: lenetData, overrides: { epochs: 3, batchSize: 32, optimizer: { lr: 0.02 } } });
    expect(resumed.result.steps).toBe(36);
    expect(resumed.result.final).toEqual(straight.result.final);
    for (const file of ['elastic.onnx', ...fs.readdirSync(path.join(a, 'slices')).map((f) => path.join('slices', f))]) {
      expect(fs.readFileSync(path.join(a, file)).equals(fs.readFileSync(path.join(b, file))), file).toBe(true);
    }
  }, 60_000);

  it.each(['SIGINT', 'SIGTERM'] as const)('%s (Ctrl-C, or a scheduler stopping the job) saves a checkpoint and exits with 130', async (signal) => {
    const dir = path.join(tmp, `signal-${signal}`);
    await compileTo(SMALL, dir);
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'test', 'helpers', 'cli-main.ts'), 'finetune', dir, '--data', smallData, '--epochs', '100', '--batch-size', '16', '--checkpoint-every', '1'], { cwd: REPO_ROOT });
    let stdout = '';
    child.stdout.on('data', (d) => (stdout += String(d)));
    const state = path.join(dir, 'training', 'checkpoint', 'state.json');
    const timer = setInterval(() => {
      if (fs.existsSync(state)) {
        clearInterval(timer);
        child.kill(signal);
      }
    }, 5);
    const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
    clearInterval(timer);
    expect(code).toBe(130);
    const step = JSON.parse(fs.readFileSync(state, 'utf8')).step as number;
    expect(stdout).toContain(`stopped after step ${step}`);
    expect(step).toBeLessThan(3200);
    const weights = fs.readdirSync(path.dirname(state)).filter((f) => f.endsWith('.npz'));
    expect(weights).toEqual([`weights-${step}.npz`]);
  }, 30_000);

  it('inserted BatchNorms compiled with synthetic inputs are set from training examples before the first fine-tune', async () => {
    const dir = path.join(tmp, 'synthetic-bn');
    await compileTo(MLP, dir);
    const target = loadTarget(dir);
    const inserted = target.manifest!.normalization.batchNorms!.filter((b) => b.kind === 'inserted');
    expect(target.manifest!.normalization.calibration?.source).toBe('synthetic');
    expect(inserted.length).toBe(2);
    const old = new Map([...target.full].map(([k, v]) => [k, Float32Array.from(v)]));
    const data = await loadData(mlpData, target, target.plan);
    expect(await calibrateInsertedOnData(target, data.train)).toBe(2);
    // what each BatchNorm reads, on the same evenly spaced examples, from the untouched rate-1 file
    const count = data.train.x.dims[0]!;
    const n = Math.min(INSERTED_CALIBRATION_SAMPLES, count);
    const { x } = materialize(data.train, Int32Array.from({ length: n }, (_, k) => Math.floor((k * count) / n)));
    const model = target.rates[0]!.model;
    const inputs = inserted.map((b) => model.graph.nodes.find((node) => node.op === 'BatchNormalization' && node.inputs[1]!.name === b.scale)!.inputs[0]!.name);
    const observed = withOutputs(encodeModel(model), [...model.graph.outputs.map((o) => o.name), ...inputs]);
    const feeds = { [target.input.name]: { dims: x.dims, data: x.data as Float32Array } };
    const seen = await runFloat(observed.bytes, feeds, observed.names);
    inserted.forEach((b, i) => {
      const a = seen[inputs[i]!]!;
      const channels = a.dims[1]!;
      for (let c = 0; c < channels; c++) {
        let sum = 0;
        for (let r = 0; r < n; r++) sum += a.data[r * channels + c]!;
        const mean = sum / n;
        let sq = 0;
        for (let r = 0; r < n; r++) sq += (a.data[r * channels + c]! - mean) ** 2;
        expect(target.full.get(b.mean)![c]).toBeCloseTo(mean, 4);
        expect(target.full.get(b.variance)![c]! / (sq / n)).toBeCloseTo(1, 4);
        expect(target.full.get(b.scale)![c]).toBeCloseTo(Math.sqrt(target.full.get(b.variance)![c]! + b.epsilon), 6);
        // the absorbed layer bias stays: bias − mean as compiled
        expect(target.full.get(b.bias)![c]! - target.full.get(b.mean)![c]!).toBeCloseTo(old.get(b.bias)![c]! - old.get(b.mean)![c]!, 4);
      }
    });
    // still the identity in inference mode: the rate-1 graph with the new values computes what it did
    for (const v of model.graph.initializers) if (target.full.has(v.name)) model.graph.setConstant(v, Tensor.float32([...v.const!.dims], target.full.get(v.name)!));
    const after = await runFloat(encodeModel(model), feeds, [model.graph.outputs[0]!.name]);
    expect(relativeError(seen[model.graph.outputs[0]!.name]!.data, after[model.graph.outputs[0]!.name]!.data)).toBeLessThan(1e-4);
    // the CLI says so once; a fine-tuned folder is left as it is
    const r = await runCli(['finetune', dir, '--data', mlpData, '--epochs', '1', '--batch-size', '64', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/note: the 2 inserted BatchNorms were compiled with synthetic inputs: set from 512 training examples/);
    const again = loadTarget(dir);
    expect(await calibrateInsertedOnData(again, (await loadData(mlpData, again, again.plan)).train)).toBe(0);
  }, 30_000);

  it('flags override the plan', async () => {
    const dir = path.join(tmp, 'flags');
    await compileTo(SMALL, dir);
    const r = await runCli(['finetune', dir, '--data', smallData, '--epochs', '1', '--batch-size', '64', '--optimizer', 'adamw', '--lr', '0.002', '--sampling', 'round-robin', '--no-distill', '--schedule', 'constant', '--warmup', '0', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const plan = (JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as Manifest).training!.plan as Record<string, Record<string, unknown>>;
    expect(plan.optimizer).toMatchObject({ kind: 'adamw', lr: 0.002 });
    expect(plan.sampling).toEqual({ mode: 'round-robin' });
    expect(plan.distillation!.enabled).toBe(false);
    const steps = logEntries(JSON.parse(r.stdout).log).filter((e) => e.type === 'step');
    expect(steps).toHaveLength(8);
    for (const s of steps) {
      expect(s.rates).toEqual([1, 0.5, 0.25]);
      expect(s.lr).toBe(0.002);
    }
  }, 30_000);

  it('a broken checkpoint is a user error on --resume, and a fresh start replaces it', async () => {
    const dir = path.join(tmp, 'broken-checkpoint');
    await compileTo(SMALL, dir);
    const flags = ['--data', smallData, '--epochs', '1', '--batch-size', '64', '--json'];
    expect((await runCli(['finetune', dir, ...flags])).code).toBe(0);
    const ckpt = path.join(dir, 'training', 'checkpoint');
    const weights = () => fs.readdirSync(ckpt).filter((f) => f.startsWith('weights-'));
    const [file] = weights();
    fs.writeFileSync(path.join(ckpt, file!), fs.readFileSync(path.join(ckpt, file!)).subarray(0, 1000));
    const truncated = await runCli(['finetune', dir, ...flags, '--resume']);
    expect(truncated.code).toBe(1);
    expect(truncated.stdout).toMatch(/"code": "SLC010"[\s\S]*cannot resume from .*weights-/);
    fs.writeFileSync(path.join(ckpt, 'state.json'), '{broken');
    const garbled = await runCli(['finetune', dir, ...flags.slice(0, -1), '--resume']);
    expect(garbled.code).toBe(1);
    expect(garbled.stderr).toMatch(/error SLC010: cannot resume from .*state\.json[\s\S]*unreadable JSON[\s\S]*hint: +start again without --resume/);
    expect(garbled.stderr).not.toContain('internal error');
    // without --resume the run starts over and leaves one consistent pair
    fs.writeFileSync(path.join(ckpt, 'weights-999.npz'), 'left by a broken run');
    expect((await runCli(['finetune', dir, ...flags])).code).toBe(0);
    expect(weights()).toHaveLength(1);
    expect(JSON.parse(fs.readFileSync(path.join(ckpt, 'state.json'), 'utf8')).weightsFile).toBe(weights()[0]);
    // the checkpoint knows its data: resuming on other examples is refused
    const other = path.join(tmp, 'other.npz');
    const all = readNpz(smallData);
    const rows = Int32Array.from({ length: 256 }, (_, i) => i);
    writeNpz(other, { x: takeRows(all.get('x')!, rows), y: takeRows(all.get('y')!, rows) });
    const moved = await runCli(['finetune', dir, '--data', other, '--epochs', '1', '--batch-size', '64', '--resume']);
    expect(moved.code).toBe(2);
    expect(moved.stderr).toMatch(/--resume: the checkpoint .* was made on other training data[\s\S]*512 examples[\s\S]*256 examples/);
  }, 30_000);

  it('writing the trained weights back is all or nothing: a failure leaves every graph as it was', async () => {
    const dir = path.join(tmp, 'all-or-nothing');
    await compileTo(MLP, dir);
    const files = fs.readdirSync(path.join(dir, 'slices')).map((f) => path.join(dir, 'slices', f));
    const before = files.map((f) => fs.readFileSync(f));
    // elastic.onnx, written after the rate files, cannot be read back
    fs.rmSync(path.join(dir, 'elastic.onnx'));
    fs.mkdirSync(path.join(dir, 'elastic.onnx'));
    const r = await runCli(['finetune', dir, '--data', mlpData, '--epochs', '1', '--batch-size', '64']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/error SLC001: .*elastic\.onnx/);
    files.forEach((f, i) => expect(fs.readFileSync(f).equals(before[i]!), f).toBe(true));
    expect(fs.readdirSync(path.join(dir, 'slices')).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    expect((JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as Manifest).training).toBeUndefined();
  }, 30_000);

  it('a training set smaller than the statistics batch still recalibrates every rate', async () => {
    const dir = path.join(tmp, 'few');
    await compileTo(LENET, dir, ['--norm', 'keep']);
    const all = readNpz(lenetData);
    const rows = Int32Array.from({ length: 64 }, (_, i) => i);
    const few = path.join(tmp, 'few.npz');
    writeNpz(few, { x: takeRows(all.get('x')!, rows), y: takeRows(all.get('y')!, rows), x_test: all.get('x_test')!, y_test: all.get('y_test')! });
    const r = await runCli(['finetune', dir, '--data', few, '--epochs', '1', '--batch-size', '32', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(logEntries(JSON.parse(r.stdout).log).find((e) => e.type === 'final')!.recalibrated).toBe(true);
  }, 30_000);

  it('refuses bad input with stable codes', async () => {
    const dir = path.join(tmp, 'errors');
    await compileTo(SMALL, dir);
    const bad = await runCli(['finetune', dir, '--data', smallData, '--optimizer', 'rmsprop']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('SLC007');
    const resume = await runCli(['finetune', dir, '--data', smallData, '--resume']);
    expect(resume.stderr).toContain('SLC007');
    expect(resume.stderr).toContain('no checkpoint');
    const shape = await runCli(['finetune', dir, '--data', lenetData]);
    expect(shape.code).toBe(1);
    expect(shape.stderr).toContain('SLC010');
    expect(shape.stderr).toContain('does not fit the model input');
    const rate = await runCli(['finetune', dir, '--data', smallData, '--rates', '1,0.3']);
    expect(rate.stderr).toContain('compiled rates');
    const noOut = await runCli(['train', SMALL, '--data', smallData]);
    expect(noOut.code).toBe(2);
    // a manifest that does not parse is a user error for every command that reads the folder
    const garbled = path.join(tmp, 'garbled');
    fs.cpSync(dir, garbled, { recursive: true });
    fs.writeFileSync(path.join(garbled, 'manifest.json'), 'garbage');
    for (const args of [['finetune', garbled, '--data', smallData], ['eval', garbled, '--data', smallData], ['grad', garbled, '--data', smallData, '--rate', '0.5']]) {
      const r = await runCli(args);
      expect(r.code, args[0]).toBe(1);
      expect(r.stderr, args[0]).toMatch(/error SLC010: .*garbled is not a compiled slicec folder[\s\S]*manifest\.json does not parse/);
    }
    // one NaN in the examples is refused before any step; a diverging run writes nothing
    const nanData = path.join(tmp, 'nan.npz');
    const clean = readNpz(smallData);
    const x = Float32Array.from(clean.get('x')!.data as Float32Array);
    x[3 * 144 + 7] = Number.NaN;
    writeNpz(nanData, { x: { dtype: 'float32', dims: clean.get('x')!.dims, data: x }, y: clean.get('y')! });
    const nan = await runCli(['finetune', dir, '--data', nanData]);
    expect(nan.code).toBe(1);
    expect(nan.stderr).toMatch(/error SLC016: .*nan\.npz \(train, x\): example 3 holds NaN/);
    const rateFile = path.join(dir, 'slices', 'rate-1.000.onnx');
    const before = fs.readFileSync(rateFile);
    const diverged = await runCli(['finetune', dir, '--data', smallData, '--lr', '1e9', '--epochs', '1']);
    expect(diverged.code, diverged.stderr).toBe(1);
    expect(diverged.stderr).toMatch(/error SLC018: training diverged: the loss at rate [\d.]+ is (NaN|Infinity|-Infinity) at step \d+[\s\S]*start again with a lower learning rate/);
    expect(fs.readFileSync(rateFile).equals(before)).toBe(true);
    // each command names itself and points to the other
    const plain = await runCli(['finetune', SMALL, '--data', smallData]);
    expect(plain.code).toBe(1);
    expect(plain.stderr).toMatch(/slicec finetune takes a folder written by slicec compile[\s\S]*slicec train /);
    const folder = await runCli(['train', dir, '--data', smallData, '-o', path.join(tmp, 'never.onnx')]);
    expect(folder.code).toBe(1);
    expect(folder.stderr).toMatch(/slicec train takes a plain ONNX model[\s\S]*slicec finetune /);
    expect(fs.existsSync(path.join(tmp, 'never.onnx'))).toBe(false);
  }, 30_000);
});
