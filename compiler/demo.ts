// `slicec demo`: the main job on the bundled example, end to end, in a few minutes on 2 cores.
// The bundled model is the Fashion-MNIST CNN trained by `slicec train` (fixtures/README.md); the
// demo compiles it with 8 groups at rates 1/.75/.5/.25 (the default switchable BatchNorm, so each
// rate gets its own statistics after fine-tuning) and channels ordered by their activations on
// 512 training images, fine-tunes every rate for one epoch of the default plan (measured here:
// 93.0 / 92.9 / 92.3 / 91.0 %), evaluates
// each rate on the test split, writes the report, and prints a short table. It starts no server
// and leaves nothing running.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ErrorCodes, userError } from './diagnostics.js';
import { lockOutput } from './folder-lock.js';

export const DEMO_MODEL = 'fashion-mnist-cnn.onnx';
const MARKER = 'demo.json';

export interface DemoOptions {
  /** Folder for everything the demo writes (default ./slicec-demo). */
  out: string;
  epochs: number;
  progress: boolean;
  log: (text: string) => void;
}

export interface DemoRow {
  rate: number;
  accuracy: number | null;
  accuracyBefore: number | null;
  macs: number;
  latencyMs: number;
}

export interface DemoSummary {
  outDir: string;
  report: string;
  rows: DemoRow[];
  seconds: number;
}

/** The package's folder: the nearest one above this file whose package.json names slicec. */
export function packageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = path.join(dir, 'package.json');
    if (fs.existsSync(pkg) && (JSON.parse(fs.readFileSync(pkg, 'utf8')) as { name?: string }).name === 'slicec') return dir;
    const up = path.dirname(dir);
    if (up === dir) throw new Error('slicec demo: the package folder (package.json of slicec) was not found');
    dir = up;
  }
}

/** A fresh demo folder: an earlier demo's is replaced, anything else is refused. */
function prepare(out: string): void {
  if (!fs.existsSync(out)) {
    fs.mkdirSync(out, { recursive: true });
    return;
  }
  if (fs.existsSync(path.join(out, MARKER))) {
    for (const entry of fs.readdirSync(out)) fs.rmSync(path.join(out, entry), { recursive: true, force: true });
    return;
  }
  if (fs.statSync(out).isDirectory() && fs.readdirSync(out).length === 0) return;
  throw userError(ErrorCodes.BAD_OUTPUT, `${out} exists and is not a slicec demo folder`, {
    expected: 'a new folder, an empty one, or one an earlier slicec demo wrote',
    found: fs.statSync(out).isDirectory() ? 'a folder with other files' : 'a file',
    hint: 'choose another folder with -o',
  });
}

export async function runDemo(opts: DemoOptions): Promise<DemoSummary> {
  const start = performance.now();
  const out = path.resolve(opts.out);
  const unlock = lockOutput(out, 'demo');
  try {
    return await demoIn(out, start, opts);
  } finally {
    unlock();
  }
}

async function demoIn(out: string, start: number, opts: DemoOptions): Promise<DemoSummary> {
  const model = path.join(packageRoot(), 'fixtures', DEMO_MODEL);
  prepare(out);
  fs.writeFileSync(path.join(out, MARKER), `${JSON.stringify({ model: DEMO_MODEL, started: new Date().toISOString() }, null, 2)}\n`);
  const outDir = path.join(out, 'fashion-mnist-cnn.sliced');
  const { compile } = await import('./pipeline.js');
  const { evaluateTarget } = await import('./eval.js');
  const { runTraining } = await import('./finetune.js');
  const { writeReport } = await import('./report.js');

  opts.log('1/4 compile the bundled Fashion-MNIST CNN: 8 groups, rates 1, 0.75, 0.5, 0.25, switchable BatchNorm, channels ordered by their activations\n');
  // calibration from 512 evenly spaced training images (--data): activation order, fitted norms
  await compile({ model, groups: 8, rates: [0.25, 0.5, 0.75, 1], norm: 'bn', data: 'fashion-mnist', outDir, log: () => {}, warn: () => {} });
  const before = await evaluateTarget(outDir, { data: 'fashion-mnist', latencyRuns: 1 });

  opts.log(`2/4 fine-tune every rate on Fashion-MNIST (${opts.epochs} epoch${opts.epochs === 1 ? '' : 's'}, default plan)\n`);
  const trained = await runTraining(outDir, {
    data: 'fashion-mnist',
    overrides: { epochs: opts.epochs },
    progress: opts.progress,
  });
  if (trained.result.interrupted) {
    throw userError(ErrorCodes.BAD_FLAG, 'the demo was interrupted', {
      expected: 'a run to the end', found: `stopped after step ${trained.result.steps}`,
      hint: `run slicec demo again, or continue the fine-tune with: slicec finetune ${outDir} --data fashion-mnist --resume`,
    });
  }

  opts.log('3/4 evaluate every rate on the 10,000 test images\n');
  const after = await evaluateTarget(outDir, { data: 'fashion-mnist' });
  opts.log('4/4 write the report\n');
  const files = await writeReport(outDir);
  const report = files.find((f) => f.endsWith('.html')) ?? files[0]!;
  const rows = after.rows.map((r) => ({
    rate: r.rate,
    accuracy: r.accuracy,
    accuracyBefore: before.rows.find((b) => b.rate === r.rate)?.accuracy ?? null,
    macs: r.macs,
    latencyMs: r.latencyMs,
  }));
  return { outDir, report: path.resolve(outDir, report), rows, seconds: (performance.now() - start) / 1000 };
}

export function formatDemo(summary: DemoSummary): string {
  const pct = (x: number | null): string => (x === null ? '-' : `${(x * 100).toFixed(2)} %`);
  const full = summary.rows.find((r) => r.rate === 1)?.macs ?? Math.max(...summary.rows.map((r) => r.macs));
  const lines = [
    '',
    'rate   accuracy   before fine-tuning   MACs (× rate 1)     latency (batch 1)',
    ...[...summary.rows].sort((a, b) => b.rate - a.rate).map((r) =>
      `${r.rate.toFixed(2).padEnd(6)} ${pct(r.accuracy).padStart(8)}   ${pct(r.accuracyBefore).padStart(18)}   ${`${(r.macs / 1e6).toFixed(2)} M (${(r.macs / full).toFixed(2)})`.padEnd(18)}  ${r.latencyMs.toFixed(3)} ms`),
    '',
    `compiled model: ${summary.outDir}  (slices/, elastic.onnx, manifest.json, plan.json, model.ts)`,
    `report:         ${summary.report}`,
    `took ${summary.seconds.toFixed(0)} s. Next: slicec serve ${summary.outDir} --port 8000 --slo-ms 50`,
    '',
  ];
  return lines.join('\n');
}
