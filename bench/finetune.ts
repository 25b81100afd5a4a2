// The fine-tuning benchmark: from the bundled pretrained Fashion-MNIST CNN, compile with G = 8 at
// rates 1/.75/.5/.25 and measure test accuracy per rate without fine-tuning and after 1 and 2
// epochs of the default plan (sandwich + in-place distillation, SGD Nesterov lr .01 cosine; batch
// 128 and no warm-up, the recipe of the PyTorch reference numbers), for each normalization the
// compiler offers (gn, keep = switchable BatchNorm recalibrated per rate, bn where built), then
// train samples/s per rate (slicec, one thread) beside Debian's PyTorch on the same widths, and
// the trainer's own share of a step (gather, scatter, optimizer, data; the rest is graph runs).
//
// With --alone, also each width .75/.5/.25 trained alone from scratch for the pretraining budget
// (8 epochs of the pretraining recipe on the untrained model's narrow graph, BatchNorm kept).
//
//   npx tsx bench/finetune.ts [--model fixtures/fashion-mnist-cnn.onnx] [--epochs 1,2]
//                             [--norms gn,keep,bn] [--warmup 0] [--alone] [--no-speed] [--no-accuracy]
// Writes only under a temporary folder, removed at the end.

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

const model = argValue('--model') ?? 'fixtures/fashion-mnist-cnn.onnx';
const epochsList = (argValue('--epochs') ?? '1,2').split(',').map(Number);
const norms = (argValue('--norms') ?? 'gn,keep,bn').split(',');
const warmup = Number(argValue('--warmup') ?? 0);
const RATES = [1, 0.75, 0.5, 0.25];
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-bench-finetune-'));
const quiet = { stdout: () => {}, stderr: (t: string) => process.stderr.write(t) };

async function compileTo(dir: string, norm: string): Promise<boolean> {
  const code = await main([model, '--groups', '8', '--rates', RATES.join(','), '--norm', norm, '-o', dir], quiet);
  return code === 0;
}

const pct = (a: number | null | undefined) => (a === null || a === undefined ? '-' : (a * 100).toFixed(2));
const rows: { what: string; acc: (number | null)[]; note?: string }[] = [];

function printTable(): void {
  console.log(`\n| ${'setting'.padEnd(44)} | ${RATES.map((r) => `r=${r}`.padStart(7)).join(' | ')} |`);
  console.log(`|${'-'.repeat(46)}|${RATES.map(() => `${'-'.repeat(8)}:`).join('|')}|`);
  for (const r of rows) console.log(`| ${r.what.padEnd(44)} | ${r.acc.map((a) => pct(a).padStart(7)).join(' | ')} |${r.note ? ` ${r.note}` : ''}`);
}

async function accuracy(): Promise<void> {
  const original = await evaluateTarget(model, { data: 'fashion-mnist', latencyRuns: 5 });
  rows.push({ what: 'original model (rate 1 only)', acc: [original.rows[0]!.accuracy, null, null, null] });
  for (const norm of norms) {
    const base = path.join(tmp, `compiled-${norm}`);
    if (!(await compileTo(base, norm))) {
      rows.push({ what: `--norm ${norm}`, acc: [null, null, null, null], note: 'not available in this build' });
      continue;
    }
    const before = await evaluateTarget(base, { data: 'fashion-mnist', latencyRuns: 5 });
    rows.push({ what: `${norm}, weight-L1 order, no fine-tuning`, acc: RATES.map((r) => before.rows.find((x) => x.rate === r)?.accuracy ?? null) });
    for (const epochs of epochsList) {
      const dir = path.join(tmp, `${norm}-${epochs}`);
      fs.cpSync(base, dir, { recursive: true });
      const t0 = performance.now();
      const out = await runTraining(dir, { data: 'fashion-mnist', overrides: { epochs, batchSize: 128, schedule: { warmupEpochs: Math.min(warmup, epochs) } } });
      const minutes = (performance.now() - t0) / 60000;
      const { stepSeconds, graphSeconds } = out.result.timing;
      rows.push({
        what: `${norm}, default plan, ${epochs} epoch${epochs > 1 ? 's' : ''}${warmup ? `, warm-up ${warmup}` : ''}${out.plan.normalization.recalibrate.enabled ? ' (BN recal.)' : ''}`,
        acc: RATES.map((r) => out.result.final.find((x) => x.rate === r)?.accuracy ?? null),
        note: `${minutes.toFixed(1)} min, trainer overhead ${((1 - graphSeconds / stepSeconds) * 100).toFixed(1)} % of step time`,
      });
      console.error(`done: ${rows[rows.length - 1]!.what}`);
    }
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
        optimizer: { kind: 'sgd', lr: 0.1, momentum: 0.9, nesterov: true, weightDecay: 5e-4 }, normalization: { recalibrate: { enabled: false } },
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
  await compileTo(dir, 'keep');
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
  const torch = spawnSync('/usr/bin/python3', [path.join('bench', 'torch-train-speed.py'), '--batch', '128', '--momentum', '0.9', '--runs', '3'], { encoding: 'utf8' });
  console.log(torch.status === 0 ? `\n${torch.stdout}` : `\nPyTorch not run: ${torch.error?.message ?? torch.stderr.split('\n').slice(-3).join(' ')}`);
}

try {
  if (!process.argv.includes('--no-accuracy')) await accuracy();
  if (!process.argv.includes('--no-speed')) await speed();
} finally {
  fs.rmSync(tmp, { recursive: true, force: true });
}
