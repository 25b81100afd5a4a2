// Compile time against its I/O floor, and peak memory against the model size:
// `npx tsx bench/compile.ts [--norm keep|gn|both] [--runs N=5] [--mb SIZE=120]`.
//
// Model: a ~120 MB stack of Gemm+Relu layers (fixtures/big.ts), compiled with G=8 and the 8
// default rates. The I/O floor is what any compiler of this output must do at least: read the
// input file once and write every output byte (the same files, the same sizes, one write each).
// The output is ~4.2× the input (Σ r² ≈ 3.2 over the rates plus the full-size elastic graph),
// so this floor is the honest yardstick; a codec round trip ignores the output's size.
// Floor and compile alternate in one process, each after a `sync` (so neither pays for the
// write-back of what the other wrote), and the medians are compared. Peak RSS is measured in a
// fresh child per norm mode (VmHWM) minus that of a child that only loads the same modules.
// CPU time (user + system) of both is printed too: on a loaded machine wall times swing more.
// Targets: compile ≤ 2.5× the floor (norm keep) and peak RSS ≤ 3× the model size.

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeModel } from '../compiler/onnx-codec.js';
import { compile } from '../compiler/pipeline.js';
import type { CompileResult } from '../compiler/pipeline-types.js';
import { buildBigModel } from '../fixtures/big.js';
import { argValue, median, nowMs, table, timeAsyncMs } from './common.js';

type Norm = 'keep' | 'gn';
const GROUPS = 8;
const MB = 1024 * 1024;
const TIME_TARGET = 2.5;
const RSS_TARGET = 3;

/** Relative path → size of every file under `dir`. */
function listFiles(dir: string, prefix = ''): [string, number][] {
  const out: [string, number][] = [];
  for (const entry of fs.readdirSync(path.join(dir, prefix), { withFileTypes: true })) {
    const rel = path.join(prefix, entry.name);
    if (entry.isDirectory()) out.push(...listFiles(dir, rel));
    else out.push([rel, fs.statSync(path.join(dir, rel)).size]);
  }
  return out;
}

interface Timed {
  ms: number;
  /** CPU time of this process (user + system, all threads) over the same span. */
  cpuMs: number;
}

function cpuMsSince(start: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(start);
  return (d.user + d.system) / 1000;
}

/**
 * Read `input`, then write files of the given sizes under `dir`; the bytes written are prepared
 * before the clock starts (the input's own bytes, repeated).
 */
function ioFloor(input: string, files: [string, number][], dir: string): Timed & { readMs: number } {
  const largest = Math.max(...files.map(([, size]) => size));
  const payload = Buffer.alloc(largest);
  const source = fs.readFileSync(input);
  for (let at = 0; at < largest; at += source.byteLength) payload.set(source.subarray(0, Math.min(source.byteLength, largest - at)), at);
  for (const [rel] of files) fs.mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
  const cpu = process.cpuUsage();
  const start = nowMs();
  fs.readFileSync(input);
  const readMs = nowMs() - start;
  for (const [rel, size] of files) fs.writeFileSync(path.join(dir, rel), payload.subarray(0, size));
  const ms = nowMs() - start;
  const cpuMs = cpuMsSince(cpu);
  fs.rmSync(dir, { recursive: true, force: true });
  return { ms, cpuMs, readMs };
}

/**
 * Flush dirty pages before a timed run, so neither compile nor floor pays for the write-back of
 * the files the other just wrote and deleted.
 */
function settle(): void {
  spawnSync('sync');
}

function runCompile(file: string, outDir: string, norm: Norm): Promise<CompileResult> {
  return compile({ model: file, groups: GROUPS, outDir, norm, log: () => {} });
}

/** This process's peak RSS in bytes (VmHWM: the child's own address space, unlike maxRSS). */
function peakRss(): number {
  const match = /^VmHWM:\s+(\d+) kB$/m.exec(fs.readFileSync('/proc/self/status', 'utf8'));
  return match ? Number(match[1]) * 1024 : process.resourceUsage().maxRSS * 1024;
}

function childPeakRss(mode: Norm | 'empty', file: string, outDir: string): number {
  const self = fileURLToPath(import.meta.url);
  const r = spawnSync(process.execPath, ['--import', 'tsx', self, '--child', mode, file, outDir], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`child ${mode} failed: ${r.stderr}`);
  fs.rmSync(outDir, { recursive: true, force: true });
  return (JSON.parse(r.stdout.trim().split('\n').pop()!) as { peak: number }).peak;
}

interface Measured {
  norm: Norm;
  floorMs: number;
  floorReadMs: number;
  compileMs: number;
  floorCpuMs: number;
  compileCpuMs: number;
  outBytes: number;
  peak: number;
  result: CompileResult;
}

async function measure(file: string, dir: string, norm: Norm, runs: number, baseline: number): Promise<Measured> {
  const outDir = path.join(dir, 'sliced');
  const floor: (Timed & { readMs: number })[] = [];
  const compiled: Timed[] = [];
  let result: CompileResult | null = null;
  let files: [string, number][] = [];
  for (let i = 0; i < runs; i++) {
    settle();
    const cpu = process.cpuUsage();
    const run = await timeAsyncMs(() => runCompile(file, outDir, norm));
    compiled.push({ ms: run.ms, cpuMs: cpuMsSince(cpu) });
    result = run.value;
    files = listFiles(outDir);
    fs.rmSync(outDir, { recursive: true, force: true });
    settle();
    floor.push(ioFloor(file, files, path.join(dir, 'floor')));
  }
  const peak = childPeakRss(norm, file, outDir) - baseline;
  const ms = (xs: Timed[]): number => median(xs.map((x) => x.ms));
  const cpuMs = (xs: Timed[]): number => median(xs.map((x) => x.cpuMs));
  return { norm, floorMs: ms(floor), floorReadMs: median(floor.map((x) => x.readMs)), compileMs: ms(compiled), floorCpuMs: cpuMs(floor), compileCpuMs: cpuMs(compiled), outBytes: files.reduce((s, [, n]) => s + n, 0), peak, result: result! };
}

function stepTable(m: Measured): string[] {
  const steps = m.result.stats;
  const inSteps = steps.reduce((s, x) => s + x.ms, 0);
  const share = (ms: number): string => `${((100 * ms) / m.compileMs).toFixed(1)}%`;
  const rows = steps.map((s) => [s.step, s.ms.toFixed(0), share(s.ms)]);
  const outside = m.compileMs - inSteps;
  rows.push(['(outside steps: read, decode, cost, write)', outside.toFixed(0), share(outside)]);
  rows.push([`(for comparison, the floor: read ${m.floorReadMs.toFixed(0)} + write ${(m.floorMs - m.floorReadMs).toFixed(0)})`, m.floorMs.toFixed(0), share(m.floorMs)]);
  return table(['step', 'ms', 'share'], rows);
}

async function main(): Promise<void> {
  const norms: Norm[] = (argValue('--norm') ?? 'both') === 'both' ? ['keep', 'gn'] : [argValue('--norm') as Norm];
  const runs = Number(argValue('--runs') ?? 5);
  const targetMb = Number(argValue('--mb') ?? 120);
  const load = os.loadavg()[0]!;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-bench-compile-'));
  const results: Measured[] = [];
  let size = 0;
  try {
    const file = path.join(dir, 'big.onnx');
    writeModel(buildBigModel(targetMb * MB), file);
    size = fs.statSync(file).size;
    const baseline = childPeakRss('empty', file, path.join(dir, 'none'));
    for (const norm of norms) results.push(await measure(file, dir, norm, runs, baseline));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }

  console.log(`compile of big ${(size / MB).toFixed(1)} MB (G=${GROUPS}, ${results[0]!.result.rates.length} rates) vs its I/O floor (read the input + write every output byte), median of ${runs} runs; load average ${load.toFixed(1)} before, ${os.loadavg()[0]!.toFixed(1)} after on ${os.cpus().length} cores`);
  const rows = results.map((r) => [
    r.norm,
    `${(r.outBytes / MB).toFixed(1)} MB`,
    r.floorMs.toFixed(0),
    r.compileMs.toFixed(0),
    `${(r.compileMs / r.floorMs).toFixed(2)}x`,
    `${r.floorCpuMs.toFixed(0)} / ${r.compileCpuMs.toFixed(0)}`,
    `${(r.peak / MB).toFixed(0)} MB`,
    `${(r.peak / size).toFixed(2)}x`,
  ]);
  for (const l of table(['norm', 'output', 'floor ms', 'compile ms', 'compile/floor', 'cpu ms floor / compile', 'peak RSS - base', 'RSS/model'], rows)) console.log(l);
  for (const r of results) {
    console.log('');
    console.log(`steps of the last compile, norm ${r.norm}, total ${r.compileMs.toFixed(0)} ms (last run)`);
    for (const l of stepTable(r)) console.log(l);
  }
  console.log(`targets: compile ≤ ${TIME_TARGET}x the I/O floor with norm keep; peak RSS ≤ ${RSS_TARGET}x the model size`);
}

async function runChild(mode: string, file: string, outDir: string): Promise<void> {
  if (mode !== 'empty') await runCompile(file, outDir, mode as Norm);
  console.log(JSON.stringify({ peak: peakRss() }));
}

if (process.argv[2] === '--child') await runChild(process.argv[3]!, process.argv[4]!, process.argv[5]!);
else await main();
