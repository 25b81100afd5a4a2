// CPU latency of the elastic graphs and of group norms: `npx tsx bench/elastic.ts [--quick]`.
// Each model (the fixtures and the PaddleOCR cls model) is compiled three times with G=4 and rates
// 0.25, 0.5, 0.75 and 1: with norm 'gn' (the default) and the lean elastic form, with norm 'gn'
// and the fast form (only its elastic.onnx is used), and with norm 'keep'. Per model and batch
// (1 and 32; other symbolic dims at the model's natural size) fourteen timed entries share one
// round-robin: the four pruned 'gn' graphs, the lean and the fast elastic.onnx each fed the four
// slice rates (one session per form, four feeds), the original model file and the rate-1 'keep'
// graph. Sessions use
// one intra-op thread and all graph optimizations, as in latency.ts; every entry is warmed up,
// then timed in blocks of about BLOCK_MS, one block per entry per round, and a cell is the median
// over rounds of the mean time per run in a block (about CELL_S seconds on the slowest entry).
// Targets: (a) elastic / pruned at the same rate ≤ 1.3, for each form; (b) rate-1 'gn' / original
// ≤ 1.15 (the rate-1 'keep' graph is printed for reference). (c) Session memory per form: in a
// fresh child process per form, the RSS growth from before creating the session(s) to after one
// batch-1 run at every rate: the four pruned sessions together, the lean one, the fast one. The worst cell of each target, and the worst at
// batch 32 when that is another cell, is profiled with onnxruntime's profiler, candidate and
// baseline alike, to show which ops take the extra time (the profiler adds its own per-node cost,
// so profiled times run above the timed ones; compare the two columns, not with the tables).
// --quick spends about a fifth of the time per cell; --only <prefix> picks models by name. The
// last model, 'big 20 MB' (fixtures/big.ts, 1024-wide Gemm layers), is there for (c).

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import type { Manifest } from '../compiler/artifacts.js';
import type { Model } from '../compiler/ir.js';
import { writeModel } from '../compiler/onnx-codec.js';
import { compile } from '../compiler/pipeline.js';
import { buildBigModel } from '../fixtures/big.js';
import { fixtureByName } from '../fixtures/index.js';
import { Rng } from '../compiler/rng.js';
import { CLS_DIMS, CLS_MODEL, argValue, feedsFor, median, nowMs, profileKernels, table, type KernelProfile } from './common.js';

const QUICK = process.argv.includes('--quick');
const ONLY = argValue('--only');
const CELL_S = QUICK ? 0.1 : 0.5;
const BLOCK_MS = 2;
const MIN_ROUNDS = 7;
const GROUPS = 4;
const RATES = [0.25, 0.5, 0.75, 1];
const BATCHES = [1, 32];
const ELASTIC_TARGET = 1.3;
const NORM_TARGET = 1.15;
const PROFILE_S = QUICK ? 0.3 : 1;
const TOP_OPS = 8;

interface Subject {
  name: string;
  /** The model file; written into the bench folder first when `build` is given. */
  file: string;
  build?: () => Model;
  /** Natural size of each symbolic dim other than the batch (dim 0). */
  dims: Record<string, number>;
}

const SUBJECTS: Subject[] = [
  ...['resnet-small', 'mobilenet-se', 'concat-net', 'lenet-bn', 'mlp', 'conv-flatten-gemm'].map((name) => ({ name, file: fixtureByName(name).file, dims: {} })),
  { name: 'paddleocr cls', file: CLS_MODEL, dims: CLS_DIMS },
  // big enough that weights, not onnxruntime itself, dominate session memory
  { name: 'big 20 MB', file: 'big-20mb.onnx', dims: {}, build: () => buildBigModel(20e6) },
];

const SESSION_OPTIONS: ort.InferenceSession.SessionOptions = {
  intraOpNumThreads: 1,
  interOpNumThreads: 1,
  executionMode: 'sequential',
  graphOptimizationLevel: 'all',
  logSeverityLevel: 3,
};

type Feeds = Record<string, ort.Tensor>;

function withRate(feeds: Feeds, rateInput: string, rate: number): Feeds {
  return { ...feeds, [rateInput]: new ort.Tensor('float32', Float32Array.of(rate), []) };
}

/** One timed thing: a session and what it is fed. */
interface Entry {
  label: string;
  file: string;
  session: ort.InferenceSession;
  feeds: Feeds;
}

/** Median ms per run of each entry, measured round-robin. */
async function measure(entries: Entry[], cellS: number): Promise<number[]> {
  for (const e of entries) for (let i = 0; i < 3; i++) await e.session.run(e.feeds);
  const estimate: number[] = [];
  for (const e of entries) {
    const times: number[] = [];
    for (let i = 0; i < 3; i++) {
      const t0 = nowMs();
      await e.session.run(e.feeds);
      times.push(nowMs() - t0);
    }
    estimate.push(median(times));
  }
  const block = estimate.map((t) => Math.max(1, Math.round(BLOCK_MS / Math.max(t, 1e-3))));
  const slowest = estimate.indexOf(Math.max(...estimate));
  const rounds = Math.max(MIN_ROUNDS, Math.ceil((cellS * 1000) / (block[slowest]! * estimate[slowest]!)));
  const samples: number[][] = entries.map(() => []);
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i]!;
      const t0 = nowMs();
      for (let k = 0; k < block[i]!; k++) await e.session.run(e.feeds);
      samples[i]!.push((nowMs() - t0) / block[i]!);
    }
  }
  return samples.map(median);
}

/** A compared pair: candidate time over baseline time, and how to rerun both under the profiler. */
interface Cell {
  target: 'lean' | 'fast' | 'norm';
  batch: number;
  where: string;
  ratio: number;
  candidate: { label: string; file: string; feeds: Feeds };
  baseline: { label: string; file: string; feeds: Feeds };
}

function fmtRatio(x: number): string {
  return `${x.toFixed(2)}x`;
}

async function benchSubject(subject: Subject, dir: string, cells: Cell[]): Promise<void> {
  const base = path.join(dir, subject.name.replace(/[^a-z0-9]+/gi, '-'));
  const gnDir = `${base}-gn`;
  const fastDir = `${base}-fast`;
  const keepDir = `${base}-keep`;
  const gn = await compile({ model: subject.file, groups: GROUPS, rates: RATES, outDir: gnDir, norm: 'gn', elastic: 'lean', log: () => {} });
  const fast = await compile({ model: subject.file, groups: GROUPS, rates: RATES, outDir: fastDir, norm: 'gn', elastic: 'fast', log: () => {} });
  const keep = await compile({ model: subject.file, groups: GROUPS, rates: [1], outDir: keepDir, norm: 'keep', log: () => {} });
  const manifest = JSON.parse(fs.readFileSync(gn.manifestFile, 'utf8')) as Manifest;
  const keepManifest = JSON.parse(fs.readFileSync(keep.manifestFile, 'utf8')) as Manifest;
  const rates = [...manifest.rates].sort((a, b) => a.rate - b.rate);
  const keepFull = keepManifest.rates.find((r) => r.rate === 1);
  if (!keepFull || rates[rates.length - 1]!.rate !== 1) throw new Error(`${subject.name}: no rate-1 graph`);

  const prunedFiles = rates.map((r) => path.join(gnDir, r.file));
  const elasticFile = path.join(gnDir, manifest.elastic.file);
  const fastFile = fast.elasticFile;
  const keepFile = path.join(keepDir, keepFull.file);
  const pruned = await Promise.all(prunedFiles.map((f) => ort.InferenceSession.create(f, SESSION_OPTIONS)));
  const elastic = await ort.InferenceSession.create(elasticFile, SESSION_OPTIONS);
  const fastSession = await ort.InferenceSession.create(fastFile, SESSION_OPTIONS);
  const original = await ort.InferenceSession.create(subject.file, SESSION_OPTIONS);
  const keepSession = await ort.InferenceSession.create(keepFile, SESSION_OPTIONS);
  const sites = Object.entries(gn.normalization.sites).map(([k, v]) => `${v} ${k}`).join(', ') || 'none';
  console.log(`\n${subject.name}: G=${GROUPS}, group norms: ${sites}`);

  const rng = new Rng(0xe1a5);
  const rateInput = manifest.elastic.rateInput;
  const rowsA: string[][] = [];
  const rowsB: string[][] = [];
  for (const batch of BATCHES) {
    const feeds = feedsFor(manifest, subject.name, subject.dims, batch, rng, [manifest.elastic.rateInput]);
    const entries: Entry[] = [];
    rates.forEach((r, i) => entries.push({ label: `pruned ${r.rate}`, file: prunedFiles[i]!, session: pruned[i]!, feeds }));
    rates.forEach((r) => entries.push({ label: `lean ${r.rate}`, file: elasticFile, session: elastic, feeds: withRate(feeds, rateInput, r.rate) }));
    rates.forEach((r) => entries.push({ label: `fast ${r.rate}`, file: fastFile, session: fastSession, feeds: withRate(feeds, rateInput, r.rate) }));
    entries.push({ label: 'original', file: subject.file, session: original, feeds });
    entries.push({ label: 'keep 1', file: keepFile, session: keepSession, feeds });
    const ms = await measure(entries, CELL_S);
    const n = rates.length;
    rates.forEach((r, i) => {
      const lean = ms[n + i]! / ms[i]!;
      const quick = ms[2 * n + i]! / ms[i]!;
      const met = (x: number): string => (x <= ELASTIC_TARGET ? 'yes' : 'no');
      rowsA.push([subject.name, String(batch), r.rate.toFixed(2), ms[i]!.toFixed(3), ms[n + i]!.toFixed(3), fmtRatio(lean), met(lean), ms[2 * n + i]!.toFixed(3), fmtRatio(quick), met(quick)]);
      for (const [target, ratio, file, at] of [['lean', lean, elasticFile, n + i], ['fast', quick, fastFile, 2 * n + i]] as const) {
        cells.push({
          target,
          batch,
          where: `${subject.name}, batch ${batch}, rate ${r.rate}`,
          ratio,
          candidate: { label: target, file, feeds: entries[at]!.feeds },
          baseline: { label: 'pruned', file: prunedFiles[i]!, feeds },
        });
      }
    });
    const orig = ms[3 * n]!;
    const gnFull = ms[n - 1]!;
    const keepMs = ms[3 * n + 1]!;
    const ratio = gnFull / orig;
    rowsB.push([subject.name, String(batch), orig.toFixed(3), gnFull.toFixed(3), fmtRatio(ratio), ratio <= NORM_TARGET ? 'yes' : 'no', keepMs.toFixed(3), fmtRatio(keepMs / orig)]);
    cells.push({
      target: 'norm',
      batch,
      where: `${subject.name}, batch ${batch}`,
      ratio,
      candidate: { label: 'gn rate 1', file: prunedFiles[n - 1]!, feeds },
      baseline: { label: 'original', file: subject.file, feeds },
    });
  }
  console.log(`(a) elastic (lean and fast) vs pruned, same rate (target ≤ ${ELASTIC_TARGET}x)`);
  for (const l of table(['model', 'batch', 'rate', 'pruned ms', 'lean ms', 'lean ratio', 'met', 'fast ms', 'fast ratio', 'met'], rowsA)) console.log(`  ${l}`);
  console.log(`(b) rate-1 graph with group norm vs the original (target ≤ ${NORM_TARGET}x); norm 'keep' for reference`);
  for (const l of table(['model', 'batch', 'original ms', 'gn ms', 'gn ratio', 'met', 'keep ms', 'keep ratio'], rowsB)) console.log(`  ${l}`);
  for (const s of [...pruned, elastic, fastSession, original, keepSession]) await s.release();

  const memoryFeeds = feedsFor(manifest, subject.name, subject.dims, 1, rng, [rateInput]);
  const forms: [string, string[], boolean][] = [['pruned', prunedFiles, false], ['lean', [elasticFile], true], ['fast', [fastFile], true]];
  const rowsC: string[][] = [];
  for (const [form, files, elasticForm] of forms) {
    const mb = sessionMemoryMb(files, memoryFeeds, elasticForm ? { input: rateInput, rates: rates.map((r) => r.rate) } : null);
    const bytes = files.reduce((sum, f) => sum + fs.statSync(f).size, 0);
    rowsC.push([subject.name, form, String(files.length), (bytes / 1e6).toFixed(2), mb.toFixed(1)]);
  }
  console.log('(c) session memory per form: RSS growth over creating the session(s) and one batch-1 run per rate, fresh process each');
  for (const l of table(['model', 'form', 'files', 'file MB', 'RSS delta MB'], rowsC)) console.log(`  ${l}`);
}

/** What a memory child loads and runs: model files, feeds (as plain arrays), the rate input. */
interface MemoryJob {
  files: string[];
  feeds: Record<string, { dims: number[]; data: number[] }>;
  rate: { input: string; rates: number[] } | null;
}

/** RSS growth in MB of a fresh process that loads `files` and runs each once per rate. */
function sessionMemoryMb(files: string[], feeds: Feeds, rate: MemoryJob['rate']): number {
  const job: MemoryJob = { files, feeds: Object.fromEntries(Object.entries(feeds).map(([k, t]) => [k, { dims: [...t.dims], data: [...(t.data as Float32Array)] }])), rate };
  const jobFile = path.join(path.dirname(files[0]!), 'memory-job.json');
  fs.writeFileSync(jobFile, JSON.stringify(job));
  const run = spawnSync(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), MEMORY_CHILD, jobFile], { encoding: 'utf8' });
  if (run.status !== 0) throw new Error(`memory child failed: ${run.stderr}`);
  return Number(run.stdout.trim());
}

async function memoryChild(jobFile: string): Promise<void> {
  const job = JSON.parse(fs.readFileSync(jobFile, 'utf8')) as MemoryJob;
  const feeds: Feeds = Object.fromEntries(Object.entries(job.feeds).map(([k, t]) => [k, new ort.Tensor('float32', Float32Array.from(t.data), t.dims)]));
  const before = process.memoryUsage().rss;
  const sessions = [];
  for (const f of job.files) sessions.push(await ort.InferenceSession.create(f, SESSION_OPTIONS));
  for (const s of sessions) {
    if (job.rate) for (const r of job.rate.rates) await s.run(withRate(feeds, job.rate.input, r));
    else await s.run(feeds);
  }
  process.stdout.write(`${(process.memoryUsage().rss - before) / 1e6}\n`);
}

const profileOne = (file: string, feeds: Feeds, dir: string, tag: string): Promise<KernelProfile> =>
  profileKernels(file, feeds, SESSION_OPTIONS, dir, tag, { minRuns: 20, seconds: PROFILE_S });

let profiles = 0;

async function explain(cell: Cell, dir: string): Promise<void> {
  profiles++;
  const cand = await profileOne(cell.candidate.file, cell.candidate.feeds, dir, `${profiles}-cand`);
  const base = await profileOne(cell.baseline.file, cell.baseline.feeds, dir, `${profiles}-base`);
  const names = new Set([...cand.ops.keys(), ...base.ops.keys()]);
  const rows = [...names].map((op) => {
    const c = cand.ops.get(op);
    const b = base.ops.get(op);
    return { op, c: c?.ms ?? 0, b: b?.ms ?? 0, cn: c?.nodes.size ?? 0, bn: b?.nodes.size ?? 0 };
  });
  rows.sort((x, y) => y.c - x.c);
  const top = rows.slice(0, TOP_OPS);
  const cl = cell.candidate.label;
  const bl = cell.baseline.label;
  console.log(`  profile of ${cell.where} (${cand.runs} / ${base.runs} runs; ms per run; kernel times from onnxruntime's profiler)`);
  const out = top.map((r) => [r.op, String(r.cn), r.c.toFixed(3), `${((100 * r.c) / (cand.kernelMs || 1)).toFixed(0)}%`, String(r.bn), r.b.toFixed(3), (r.c - r.b >= 0 ? '+' : '') + (r.c - r.b).toFixed(3)]);
  const rest = rows.slice(TOP_OPS);
  if (rest.length > 0) {
    const c = rest.reduce((s, r) => s + r.c, 0);
    const b = rest.reduce((s, r) => s + r.b, 0);
    out.push([`(${rest.length} more)`, String(rest.reduce((s, r) => s + r.cn, 0)), c.toFixed(3), `${((100 * c) / (cand.kernelMs || 1)).toFixed(0)}%`, String(rest.reduce((s, r) => s + r.bn, 0)), b.toFixed(3), (c - b >= 0 ? '+' : '') + (c - b).toFixed(3)]);
  }
  out.push(['all kernels', String(rows.reduce((s, r) => s + r.cn, 0)), cand.kernelMs.toFixed(3), '100%', String(rows.reduce((s, r) => s + r.bn, 0)), base.kernelMs.toFixed(3), (cand.kernelMs - base.kernelMs >= 0 ? '+' : '') + (cand.kernelMs - base.kernelMs).toFixed(3)]);
  const co = cand.runMs - cand.kernelMs;
  const bo = base.runMs - base.kernelMs;
  out.push(['outside kernels', '', co.toFixed(3), '', '', bo.toFixed(3), (co - bo >= 0 ? '+' : '') + (co - bo).toFixed(3)]);
  for (const l of table(['op', `${cl} nodes`, `${cl} ms`, 'share', `${bl} nodes`, `${bl} ms`, 'delta'], out)) console.log(`    ${l}`);
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-bench-elastic-'));
  const cells: Cell[] = [];
  console.log(`onnxruntime-node ${ort.env.versions.common} CPU, 1 intra-op thread, optimization 'all'; median ms per run; ~${CELL_S} s on the slowest entry per model and batch`);
  try {
    for (const subject of SUBJECTS.filter((x) => !ONLY || x.name.startsWith(ONLY))) {
      if (!subject.build) {
        await benchSubject(subject, dir, cells);
        continue;
      }
      const file = path.join(dir, subject.file);
      writeModel(subject.build(), file);
      await benchSubject({ ...subject, file }, dir, cells);
    }
    console.log('\nsummary');
    for (const [target, limit, what] of [
      ['lean', ELASTIC_TARGET, '(a) lean elastic / pruned at the same rate'],
      ['fast', ELASTIC_TARGET, '(a) fast elastic / pruned at the same rate'],
      ['norm', NORM_TARGET, '(b) rate-1 gn / original'],
    ] as const) {
      const mine = cells.filter((c) => c.target === target);
      if (mine.length === 0) continue;
      const met = mine.filter((c) => c.ratio <= limit).length;
      const worst = mine.reduce((w, c) => (c.ratio > w.ratio ? c : w));
      const ratios = mine.map((c) => c.ratio);
      console.log(`${what} ≤ ${limit}x: ${met} of ${mine.length} cells met; median ${fmtRatio(median(ratios))}; worst ${fmtRatio(worst.ratio)} (${worst.where})`);
      const missed = mine.filter((c) => c.ratio > limit).map((c) => `${c.where} ${fmtRatio(c.ratio)}`);
      if (missed.length > 0) console.log(`  missed: ${missed.join('; ')}`);
      await explain(worst, dir);
      // At batch 1 the smallest models are dominated by per-node overhead; the worst cell at the
      // largest batch shows where compute time goes as well.
      const big = mine.filter((c) => c.batch === BATCHES[BATCHES.length - 1]);
      const worstBig = big.reduce((w, c) => (c.ratio > w.ratio ? c : w), big[0]!);
      if (worstBig !== worst && worstBig.ratio > limit) await explain(worstBig, dir);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const MEMORY_CHILD = '--memory-child';
if (process.argv[2] === MEMORY_CHILD) await memoryChild(process.argv[3]!);
else await main();
