// CPU latency of the pruned graphs in onnxruntime-node: `npx tsx bench/latency.ts [--quick]`.
// Each conv fixture and the PaddleOCR cls model is compiled with G=8 and rates 0.25, 0.5, 0.75
// and 1 (resnet-small once more with roundTo 8); every pruned graph gets a session with one
// intra-op thread and all graph optimizations. At batch 1 and batch 32 (other symbolic dims at
// the model's natural size) the sessions are warmed up, then timed round-robin, one block of
// runs per session per round, so that noise hits every rate alike; a cell is the median over
// rounds of the mean time per run in a block, with about CELL_S seconds spent on rate 1.
// Efficiency is speedup / (1 / MAC ratio): 1 means time falls exactly with MACs. A least-squares
// fit time = fixed + perMac · MAC ratio over the four rates estimates the part of the time that
// does not shrink with MACs (per-op and per-call overhead). Target: efficiency ≥ 0.8 at rate 0.5,
// batch 32, on the conv fixtures. --quick spends about a fifth of the time per cell; --level
// <disabled|basic|extended|all> sets the graph optimization level (default all; 'extended'
// leaves out the NCHWc layout rewrite of 'all'); --only <prefix> picks models by name.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import type { Manifest } from '../compiler/artifacts.js';
import { compile } from '../compiler/pipeline.js';
import { fixtureByName } from '../fixtures/index.js';
import { Rng } from '../compiler/rng.js';
import { CLS_DIMS, CLS_MODEL, argValue, estimateRunMs, feedsFor, median, nowMs, table } from './common.js';

const QUICK = process.argv.includes('--quick');
const LEVEL = argValue('--level') ?? 'all';
const ONLY = argValue('--only');
const CELL_S = QUICK ? 0.15 : 0.75;
const BLOCK_MS = 2;
const MIN_ROUNDS = 7;
const GROUPS = 8;
const RATES = [0.25, 0.5, 0.75, 1];
const BATCHES = [1, 32];
const TARGET = 0.8;

interface Subject {
  name: string;
  file: string;
  roundTo: number;
  /** Whether the efficiency target applies. */
  target: boolean;
  /** Natural size of each symbolic dim other than the batch (dim 0). */
  dims: Record<string, number>;
}

function fixtureSubject(name: string, roundTo = 1): Subject {
  return { name: roundTo > 1 ? `${name} (round-to ${roundTo})` : name, file: fixtureByName(name).file, roundTo, target: true, dims: {} };
}

const SUBJECTS: Subject[] = [
  fixtureSubject('resnet-small'),
  fixtureSubject('mobilenet-se'),
  fixtureSubject('concat-net'),
  fixtureSubject('lenet-bn'),
  fixtureSubject('conv-flatten-gemm'),
  { name: 'paddleocr cls', file: CLS_MODEL, roundTo: 1, target: false, dims: CLS_DIMS },
  fixtureSubject('resnet-small', 8),
];

/** Least-squares line y = a + b x. */
function fitLine(xs: number[], ys: number[]): { a: number; b: number } {
  const n = xs.length;
  const mx = xs.reduce((s, x) => s + x, 0) / n;
  const my = ys.reduce((s, y) => s + y, 0) / n;
  let sxy = 0;
  let sxx = 0;
  for (let i = 0; i < n; i++) {
    sxy += (xs[i]! - mx) * (ys[i]! - my);
    sxx += (xs[i]! - mx) ** 2;
  }
  const b = sxx > 0 ? sxy / sxx : 0;
  return { a: my - b * mx, b };
}

/** Distinct kept channel counts of the sliced unions at `activeGroups`, smallest first. */
function keptWidths(manifest: Manifest, activeGroups: number): string {
  const widths = [...new Set(manifest.unions.filter((u) => u.sliced && u.boundaries).map((u) => u.boundaries![activeGroups]!))].sort((a, b) => a - b);
  return widths.length > 6 ? `${widths.slice(0, 5).join(',')},…,${widths[widths.length - 1]}` : widths.join(',');
}

/** Median ms per run of each session, measured round-robin. */
async function measureCell(sessions: ort.InferenceSession[], feeds: Record<string, ort.Tensor>): Promise<number[]> {
  const estimate = await estimateRunMs(sessions, feeds);
  const block = estimate.map((t) => Math.max(1, Math.round(BLOCK_MS / Math.max(t, 1e-3))));
  const full = sessions.length - 1;
  const rounds = Math.max(MIN_ROUNDS, Math.ceil((CELL_S * 1000) / (block[full]! * estimate[full]!)));
  const samples: number[][] = sessions.map(() => []);
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < sessions.length; i++) {
      const t0 = nowMs();
      for (let k = 0; k < block[i]!; k++) await sessions[i]!.run(feeds);
      samples[i]!.push((nowMs() - t0) / block[i]!);
    }
  }
  return samples.map(median);
}

interface Summary {
  name: string;
  target: boolean;
  efficiency: number;
}

async function benchSubject(subject: Subject, dir: string): Promise<Summary> {
  const outDir = path.join(dir, subject.name.replace(/[^a-z0-9]+/gi, '-'));
  // slicing alone: the model's own normalization is kept (group norms are measured in elastic.ts)
  const result = await compile({ model: subject.file, groups: GROUPS, rates: RATES, roundTo: subject.roundTo, outDir, norm: 'keep', log: () => {} });
  const manifest = JSON.parse(fs.readFileSync(result.manifestFile, 'utf8')) as Manifest;
  const rates = [...manifest.rates].sort((a, b) => a.rate - b.rate);
  const full = rates[rates.length - 1]!;
  if (full.rate !== 1) throw new Error(`${subject.name}: no rate-1 graph`);
  const macRatio = rates.map((r) => (full.macs > 0 ? r.macs / full.macs : 1));
  const options: ort.InferenceSession.SessionOptions = { intraOpNumThreads: 1, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: LEVEL as 'disabled' | 'basic' | 'extended' | 'all' };
  const sessions: ort.InferenceSession[] = [];
  for (const r of rates) sessions.push(await ort.InferenceSession.create(path.join(outDir, r.file), options));

  let efficiencyAtTarget = Number.NaN;
  const rng = new Rng(0x1a7);
  console.log(`\n${subject.name}: ${(full.macs / 1e6).toFixed(2)} M MACs per sample at rate 1, ${(full.parameters / 1e3).toFixed(1)} k parameters, G=${GROUPS}, roundTo ${subject.roundTo}`);
  for (const batch of BATCHES) {
    const feeds = feedsFor(manifest, subject.name, subject.dims, batch, rng);
    const ms = await measureCell(sessions, feeds);
    const base = ms[ms.length - 1]!;
    const rows = rates.map((r, i) => {
      const speedup = base / ms[i]!;
      const efficiency = speedup * macRatio[i]!;
      if (batch === 32 && r.rate === 0.5) efficiencyAtTarget = efficiency;
      return [r.rate.toFixed(2), keptWidths(manifest, r.activeGroups), macRatio[i]!.toFixed(3), ms[i]!.toFixed(3), `${speedup.toFixed(2)}x`, efficiency.toFixed(2)];
    });
    const fit = fitLine(macRatio, ms);
    console.log(`batch ${batch}`);
    for (const l of table(['rate', 'kept widths', 'MAC ratio', 'ms', 'speedup', 'efficiency'], rows, true)) console.log(`  ${l}`);
    console.log(`  fit ms = ${fit.a.toFixed(3)} + ${fit.b.toFixed(3)} · MAC ratio: fixed part ${((100 * fit.a) / base).toFixed(0)}% of rate 1`);
  }
  for (const s of sessions) await s.release();
  return { name: subject.name, target: subject.target, efficiency: efficiencyAtTarget };
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-bench-latency-'));
  const summaries: Summary[] = [];
  console.log(`onnxruntime-node ${ort.env.versions.common} CPU, 1 intra-op thread, optimization '${LEVEL}'; median ms per run; ~${CELL_S} s per rate-1 cell`);
  try {
    for (const subject of SUBJECTS.filter((x) => !ONLY || x.name.startsWith(ONLY))) summaries.push(await benchSubject(subject, dir));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  console.log('\nsummary (efficiency at rate 0.5, batch 32; target ≥ 0.8 on the conv fixtures)');
  for (const s of summaries) {
    const verdict = s.efficiency >= TARGET ? 'met' : 'not met';
    console.log(`  ${s.name}: ${s.efficiency.toFixed(2)} — ${s.target ? `target ${verdict}` : `${verdict} (no target: real model)`}`);
  }
}

await main();
