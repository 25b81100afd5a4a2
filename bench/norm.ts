// CPU latency of the pruned graphs per normalization mode: `npx tsx bench/norm.ts [--quick] [--only name]`.
// What a served rate costs with group norms ('gn'), switchable BatchNorm ('bn': one BatchNorm
// per sliced layer, statistics per rate, folded into the conv by onnxruntime) and no change
// ('keep'). Subjects look like real PyTorch exports, which carry no BatchNorm: the BatchNorm
// fixtures are first folded (compile --norm none at G=1, its rate-1 graph), and mlp,
// conv-flatten-gemm and the PaddleOCR cls model are taken as they are. Each subject is compiled
// with G=4, rates 0.25/0.5/0.75/1 in each mode; per batch (1 and 32) the twelve pruned graphs
// are timed round-robin (one intra-op thread, all graph optimizations; warm-up, then blocks of
// about BLOCK_MS, one block per graph per round; a cell is the fastest over rounds of the mean
// time per run in a block, about CELL_S seconds on the slowest graph: on a shared machine the
// fastest block is the one least disturbed by other work). Printed: ms per mode and the ratio
// of 'bn' and 'gn' to 'keep' at the same rate, and, independent of timing noise, what is left
// of each rate-1 graph after onnxruntime's optimizations (nodes, and normalization nodes among
// them: a BatchNorm folded into its conv is gone). --quick spends a fifth of the time.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import type { Manifest } from '../compiler/artifacts.js';
import { readModel } from '../compiler/onnx-codec.js';
import { compile } from '../compiler/pipeline.js';
import type { NormMode } from '../compiler/pipeline-types.js';
import { Rng } from '../compiler/rng.js';
import { fixtureByName } from '../fixtures/index.js';
import { CLS_DIMS, CLS_MODEL, argValue, estimateRunMs, feedsFor, median, nowMs, table } from './common.js';

const QUICK = process.argv.includes('--quick');
const ONLY = argValue('--only');
const CELL_S = QUICK ? 0.1 : 0.5;
const BLOCK_MS = 2;
const MIN_ROUNDS = 15;
const GROUPS = 4;
const RATES = [0.25, 0.5, 0.75, 1];
const BATCHES = [1, 32];
const MODES: NormMode[] = ['keep', 'bn', 'gn'];

interface Subject {
  name: string;
  file: string;
  /** Fold the model's BatchNorms first, as torch.onnx does in eval mode. */
  fold: boolean;
  dims: Record<string, number>;
}

const SUBJECTS: Subject[] = [
  ...['resnet-small', 'mobilenet-se', 'concat-net', 'lenet-bn'].map((name) => ({ name: `${name} (folded)`, file: fixtureByName(name).file, fold: true, dims: {} })),
  ...['conv-flatten-gemm', 'mlp'].map((name) => ({ name, file: fixtureByName(name).file, fold: false, dims: {} })),
  { name: 'paddleocr cls', file: CLS_MODEL, fold: false, dims: CLS_DIMS },
];

const SESSION_OPTIONS: ort.InferenceSession.SessionOptions = {
  intraOpNumThreads: 1,
  interOpNumThreads: 1,
  executionMode: 'sequential',
  graphOptimizationLevel: 'all',
  logSeverityLevel: 3,
};

/** Fastest block's ms per run of each session on the same feeds, measured round-robin. */
async function measure(sessions: ort.InferenceSession[], feeds: Record<string, ort.Tensor>): Promise<number[]> {
  const estimate = await estimateRunMs(sessions, feeds);
  const block = estimate.map((t) => Math.max(1, Math.round(BLOCK_MS / Math.max(t, 1e-3))));
  const slowest = Math.max(...estimate.map((t, i) => t * block[i]!));
  const rounds = Math.max(MIN_ROUNDS, Math.ceil((CELL_S * 1000) / slowest));
  const samples: number[][] = sessions.map(() => []);
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < sessions.length; i++) {
      const t0 = nowMs();
      for (let k = 0; k < block[i]!; k++) await sessions[i]!.run(feeds);
      samples[i]!.push((nowMs() - t0) / block[i]!);
    }
  }
  return samples.map((s) => Math.min(...s));
}

/** Nodes of a graph after onnxruntime's optimizations, and the normalization nodes among them. */
async function optimizedCounts(file: string): Promise<{ nodes: number; norms: number }> {
  const out = `${file}.optimized.onnx`;
  const session = await ort.InferenceSession.create(file, { ...SESSION_OPTIONS, optimizedModelFilePath: out });
  await session.release();
  const nodes = readModel(out).graph.nodes;
  return { nodes: nodes.length, norms: nodes.filter((n) => /Normalization$/.test(n.op)).length };
}

async function benchSubject(subject: Subject, dir: string): Promise<string[]> {
  const base = path.join(dir, subject.name.replace(/[^a-z0-9]+/gi, '-'));
  let model = subject.file;
  if (subject.fold) {
    const folded = await compile({ model, groups: 1, rates: [1], outDir: `${base}-folded`, norm: 'none', log: () => {} });
    model = path.join(folded.outDir, 'slices/rate-1.000.onnx');
  }
  const sessions: ort.InferenceSession[] = [];
  let manifest: Manifest | null = null;
  const summary: string[] = [];
  const optimized: string[] = [];
  for (const norm of MODES) {
    const result = await compile({ model, groups: GROUPS, rates: RATES, outDir: `${base}-${norm}`, norm, log: () => {} });
    manifest = JSON.parse(fs.readFileSync(result.manifestFile, 'utf8')) as Manifest;
    const sites = Object.entries(result.normalization.sites).map(([k, n]) => `${n} ${k}`).join(', ') || 'none';
    summary.push(`${norm}: ${sites}`);
    const counts = await optimizedCounts(path.join(result.outDir, 'slices/rate-1.000.onnx'));
    optimized.push(`${norm} ${counts.nodes} nodes (${counts.norms} normalization)`);
    for (const r of [...manifest.rates].sort((a, b) => a.rate - b.rate)) sessions.push(await ort.InferenceSession.create(path.join(result.outDir, r.file), SESSION_OPTIONS));
  }
  const lines = [`\n${subject.name}: G=${GROUPS}; norms ${summary.join('; ')}`, `rate 1 after onnxruntime's optimizations: ${optimized.join(', ')}`];
  const rng = new Rng(0x6e6f726d);
  for (const batch of BATCHES) {
    const feeds = feedsFor(manifest!, subject.name, subject.dims, batch, rng);
    const ms = await measure(sessions, feeds);
    const at = (mode: number, rate: number): number => ms[mode * RATES.length + rate]!;
    const rows = RATES.map((rate, i) => [
      rate.toFixed(2),
      at(0, i).toFixed(3),
      at(1, i).toFixed(3),
      at(2, i).toFixed(3),
      `${(at(1, i) / at(0, i)).toFixed(2)}x`,
      `${(at(2, i) / at(0, i)).toFixed(2)}x`,
    ]);
    lines.push(`batch ${batch}`);
    for (const l of table(['rate', 'keep ms', 'bn ms', 'gn ms', 'bn/keep', 'gn/keep'], rows, true)) lines.push(`  ${l}`);
  }
  for (const s of sessions) await s.release();
  return lines;
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-bench-norm-'));
  console.log(`onnxruntime-node ${ort.env.versions.common} CPU, 1 intra-op thread, optimization 'all'; fastest block's ms per run; ~${CELL_S} s per cell; load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  try {
    for (const subject of SUBJECTS.filter((x) => !ONLY || x.name.startsWith(ONLY))) {
      for (const line of await benchSubject(subject, dir)) console.log(line);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

await main();
