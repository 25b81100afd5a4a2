// The fine-tuning benchmark: from the bundled pretrained Fashion-MNIST CNN, compile with G = 8 at
// rates 1/.75/.5/.25 and measure test accuracy per rate (the 10,000 test images):
// - without fine-tuning: naive truncation (the exported order), weight-L1 order, activation order
//   (`--data fashion-mnist`: 512 training images as calibration data, as `slicec demo` uses);
// - after 1 and 2 epochs of the default plan (sandwich + in-place distillation, SGD Nesterov lr
//   .01 cosine, batch 64; warm-up only with gn) per normalization: bn (switchable BatchNorm,
//   inserted where a sliced layer has none), keep (the model's BatchNorms, statistics per rate),
//   gn (group norms), all with activation order; keep with weight order; and bn compiled without
//   data (weight order, the inserted BatchNorm set from training examples before the first step);
// - with --alone, each width .75/.5/.25 trained alone from scratch for the pretraining budget
//   (8 epochs of the pretraining recipe on the untrained model's narrow graph, BatchNorm kept);
// then train samples/s per rate (slicec, one thread) beside Debian's PyTorch on the same widths,
// and the trainer's own share of a step (gather, scatter, optimizer, data; the rest is graph runs).
//
//   npx tsx bench/finetune.ts [--epochs 1,2] [--norms bn,keep,gn] [--alone] [--no-speed] [--no-accuracy]
// (--alone --no-accuracy: only the width-alone row)
// Writes only under a temporary folder, removed at the end. Runs are deterministic (same seed).

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { main } from '../compiler/cli.js';
import { evaluateTarget } from '../compiler/eval.js';
import { runTraining } from '../compiler/finetune.js';
import { loadDataset, takeRows } from '../runtime/data.js';
import { writeNpz } from '../runtime/npz.js';
import { writeModel } from '../compiler/onnx-codec.js';
import { buildFashionMnistCnn } from '../fixtures/fashion-mnist-cnn.js';
import { argValue } from './common.js';

const model = 'fixtures/fashion-mnist-cnn.onnx';
const epochsList = (argValue('--epochs') ?? '1,2').split(',').map(Number);
const norms = (argValue('--norms') ?? 'bn,keep,gn').split(',');
const RATES = [1, 0.75, 0.5, 0.25];
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-bench-finetune-'));
const quiet = { stdout: () => {}, stderr: (t: string) => process.stderr.write(t) };

async function compileTo(dir: string, norm: string, importance: 'activation' | 'weight' | 'none' = 'activation'): Promise<void> {
  const args = [model, '--groups', '8', '--rates', RATES.join(','), '--norm', norm, '--importance', importance, '-o', dir];
  if (importance === 'activation') args.push('--data', 'fashion-mnist');
  const code = await main(args, quiet);
  if (code !== 0) throw new Error(`compile ${args.join(' ')} exited with ${code}`);
}

const pct = (a: number | null | undefined) => (a === null || a === undefined ? '' : (a * 100).toFixed(2));
const rows: { what: string; acc: (number | null)[]; note?: string }[] = [];
const accuracies = (list: { rate: number; accuracy: number | null }[]) => RATES.map((r) => list.find((x) => x.rate === r)?.accuracy ?? null);

function printTable(): void {
  console.log('\n| setting (test accuracy %, G = 8) | r = 1 | r = .75 | r = .5 | r = .25 | time, trainer overhead |');
  console.log('| --- | ---: | ---: | ---: | ---: | --- |');
  for (const r of rows) console.log(`| ${r.what} | ${r.acc.map(pct).join(' | ')} | ${r.note ?? ''} |`);
}

async function untuned(what: string, norm: string, importance: 'activation' | 'weight' | 'none'): Promise<string> {
  const dir = path.join(tmp, `compiled-${norm}-${importance}`);
  await compileTo(dir, norm, importance);
  const before = await evaluateTarget(dir, { data: 'fashion-mnist', latencyRuns: 1 });
  rows.push({ what, acc: accuracies(before.rows) });
  console.error(`done: ${what}`);
  return dir;
}

async function tuned(base: string, label: string): Promise<void> {
  for (const epochs of epochsList) {
    const dir = `${base}-${epochs}`;
    fs.cpSync(base, dir, { recursive: true });
    const t0 = performance.now();
    const out = await runTraining(dir, { data: 'fashion-mnist', overrides: { epochs } });
    const minutes = (performance.now() - t0) / 60000;
    const { stepSeconds, graphSeconds } = out.result.timing;
    const warmup = out.plan.schedule.warmupEpochs;
    rows.push({
      what: `${label}, default plan, ${epochs} epoch${epochs > 1 ? 's' : ''}${warmup ? ` (warm-up ${warmup})` : ''}`,
      acc: accuracies(out.result.final),
      note: `${minutes.toFixed(1)} min, ${((1 - graphSeconds / stepSeconds) * 100).toFixed(1)} %`,
    });
    console.error(`done: ${rows[rows.length - 1]!.what}`);
  }
}

async function accuracy(): Promise<void> {
  const original = await evaluateTarget(model, { data: 'fashion-mnist', latencyRuns: 1 });
  rows.push({ what: 'original model (bundled, rate 1 only)', acc: [original.rows[0]!.accuracy, null, null, null] });
  await untuned('naive truncation (exported order, keep), no fine-tuning', 'keep', 'none');
  const weight = await untuned('weight-L1 order (keep), no fine-tuning', 'keep', 'weight');
  const bases = new Map<string, string>();
  for (const norm of norms) bases.set(norm, await untuned(`${norm}, activation order, no fine-tuning`, norm, 'activation'));
  for (const norm of norms) await tuned(bases.get(norm)!, `${norm}, activation order`);
  await tuned(weight, 'keep, weight-L1 order');
  if (norms.includes('bn')) {
    // the tutorial's path: compiled without data (weight order, the inserted BatchNorm calibrated on
    // synthetic inputs and set from training examples by the fine-tune before its first step)
    await tuned(await untuned('bn, compiled without data (weight-L1 order), no fine-tuning', 'bn', 'weight'), 'bn, compiled without data');
  }
  if (process.argv.includes('--alone')) await alone();
  printTable();
}

async function alone(): Promise<void> {
  const untrained = path.join(tmp, 'untrained.onnx');
  writeModel(buildFashionMnistCnn(), untrained);
  const base = path.join(tmp, 'alone');
  await main([untrained, '--groups', '8', '--rates', RATES.join(','), '--norm', 'keep', '-o', base], quiet);
  const acc: (number | null)[] = [null, null, null, null];
  for (const rate of RATES.slice(1)) {
    const dir = path.join(tmp, `alone-${rate}`);
    fs.cpSync(base, dir, { recursive: true });
    const out = await runTraining(dir, {
      data: 'fashion-mnist',
      overrides: {
        epochs: 8, batchSize: 128, rates: [rate], sampling: { mode: 'round-robin' }, distillation: { enabled: false },
        optimizer: { kind: 'sgd', lr: 0.1, momentum: 0.9, nesterov: true, weightDecay: 5e-4 }, schedule: { warmupEpochs: 1 }, normalization: { recalibrate: { enabled: false } },
      },
    });
    acc[RATES.indexOf(rate)] = out.result.final.find((x) => x.rate === rate)!.accuracy;
    console.error(`done: width ${rate} alone`);
  }
  rows.push({ what: 'each width trained alone, 8 epochs from scratch', acc });
}

/** Train samples/s per rate: 10 batches of 128 at one rate, plain SGD with momentum, no distillation. */
async function speed(): Promise<void> {
  const data = await loadDataset('fashion-mnist', { expect: { shape: ['N', 1, 28, 28], dtype: 'float32' } });
  const subset = path.join(tmp, 'speed.npz');
  const idx = Int32Array.from({ length: 1408 }, (_, i) => Math.floor((i * 60000) / 1408));
  writeNpz(subset, { x: takeRows(data.train.x, idx), y: takeRows(data.train.y, idx) });
  const dir = path.join(tmp, 'speed-keep');
  await compileTo(dir, 'keep', 'weight');
  console.log('\nslicec train step (forward, loss, backward, SGD momentum 0.9), batch 128, one thread');
  console.log('| rate | samples/s | graph share of step | trainer overhead |');
  console.log('|---|---:|---:|---:|');
  for (const rate of RATES) {
    const run = path.join(tmp, `speed-${rate}`);
    fs.cpSync(dir, run, { recursive: true });
    const out = await runTraining(run, {
      data: subset,
      overrides: { epochs: 1, batchSize: 128, rates: [rate], distillation: { enabled: false }, sampling: { mode: 'round-robin' }, normalization: { recalibrate: { enabled: false } } },
    });
    // the first step builds the graph sessions: leave it out
    const steps = fs.readFileSync(out.logFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((e) => e.type === 'step').slice(1);
    const sps = steps.map((s) => s.samplesPerSecond as number).sort((a, b) => a - b)[Math.floor(steps.length / 2)]!;
    const { stepSeconds, graphSeconds } = out.result.timing;
    console.log(`| ${rate} | ${sps.toFixed(0)} | ${((graphSeconds / stepSeconds) * 100).toFixed(1)} % | ${((1 - graphSeconds / stepSeconds) * 100).toFixed(1)} % |`);
  }
  // a fine-tuning step as the default plan runs it: sandwich rates, in-place distillation
  const planRun = path.join(tmp, 'speed-plan');
  fs.cpSync(dir, planRun, { recursive: true });
  const planned = await runTraining(planRun, { data: subset, overrides: { epochs: 1, batchSize: 128, normalization: { recalibrate: { enabled: false } } } });
  const { stepSeconds, graphSeconds } = planned.result.timing;
  console.log(`| default plan (sandwich of 3 rates, distillation) | ${(idx.length / stepSeconds).toFixed(0)} | ${((graphSeconds / stepSeconds) * 100).toFixed(1)} % | ${((1 - graphSeconds / stepSeconds) * 100).toFixed(1)} % |`);
  const torch = spawnSync('/usr/bin/python3', [path.join('bench', 'torch-train-speed.py'), '--batch', '128', '--momentum', '0.9', '--runs', '3'], { encoding: 'utf8' });
  console.log(torch.status === 0 ? `\n${torch.stdout}` : `\nPyTorch not run: ${torch.error?.message ?? torch.stderr.split('\n').slice(-3).join(' ')}`);
}

try {
  if (!process.argv.includes('--no-accuracy')) {
    await accuracy();
  } else if (process.argv.includes('--alone')) {
    // the width-alone rows by themselves
    await alone();
    printTable();
  }
  if (!process.argv.includes('--no-speed')) await speed();
} finally {
  fs.rmSync(tmp, { recursive: true, force: true });
}
