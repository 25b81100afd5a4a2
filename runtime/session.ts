// Sessions of onnxruntime-node (runtime/graph-session.ts is the other module that opens them, through
// `createOnDevice` here). Two layers:
// - `runFloat`: load a model, run it once on float feeds, release it (compile-time uses:
//   calibration, checks). Single-threaded by default so results do not depend on how work was split.
// - `Session`: a long-lived session for serving, any dtype in and out, on CPU or CUDA. ORT does not
//   fall back by itself: `['cuda', 'cpu']` rejects when the CUDA provider or its libraries are
//   missing, so a CUDA request that fails to create is retried on CPU (`createOnDevice`) and the
//   reason is returned for the caller to report once (`warnCudaFallback`).

import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import type { FloatTensor } from '../compiler/calibration-data.js';
import { isDType, type NdArray, type TypedArray } from './ndarray.js';

export type { FloatTensor };

export type Feeds = Record<string, FloatTensor>;

export interface RunOptions {
  threads?: number;
}

/** Run a model (bytes or a path) and return the named outputs (all outputs when omitted). */
export async function runFloat(model: Uint8Array | string, feeds: Feeds, outputs?: string[], opts: RunOptions = {}): Promise<Record<string, FloatTensor>> {
  const session = await ort.InferenceSession.create(model as Uint8Array, {
    intraOpNumThreads: opts.threads ?? 1,
    interOpNumThreads: 1,
    logSeverityLevel: 3,
  });
  try {
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const [name, t] of Object.entries(feeds)) ortFeeds[name] = new ort.Tensor('float32', t.data, t.dims);
    const names = outputs ?? [...session.outputNames];
    const result = await session.run(ortFeeds, names);
    const out: Record<string, FloatTensor> = {};
    for (const name of names) {
      const t = result[name]!;
      if (t.type !== 'float32') throw new Error(`output ${name} is ${t.type}, expected float32`);
      out[name] = { dims: [...t.dims], data: t.data as Float32Array };
    }
    return out;
  } finally {
    await session.release();
  }
}

/** A loaded model that runs many times: calibration feeds new values into one session. */
export interface FloatSession {
  run(feeds: Feeds, outputs: string[]): Promise<Record<string, FloatTensor>>;
  release(): Promise<void>;
}

/**
 * Load a model once for several runs. Feeds are wrapped without copying (onnxruntime reads the
 * typed arrays in place), so weights fed as inputs cost no memory beyond their own arrays.
 */
export async function openFloatSession(model: Uint8Array | string, opts: RunOptions = {}): Promise<FloatSession> {
  const session = await ort.InferenceSession.create(model as Uint8Array, {
    intraOpNumThreads: opts.threads ?? 1,
    interOpNumThreads: 1,
    logSeverityLevel: 3,
  });
  return {
    async run(feeds: Feeds, outputs: string[]): Promise<Record<string, FloatTensor>> {
      const ortFeeds: Record<string, ort.Tensor> = {};
      for (const [name, t] of Object.entries(feeds)) ortFeeds[name] = new ort.Tensor('float32', t.data, t.dims);
      const result = await session.run(ortFeeds, outputs);
      const out: Record<string, FloatTensor> = {};
      for (const name of outputs) {
        const t = result[name]!;
        if (t.type !== 'float32') throw new Error(`output ${name} is ${t.type}, expected float32`);
        out[name] = { dims: [...t.dims], data: t.data as Float32Array };
      }
      return out;
    },
    release: () => session.release(),
  };
}

export type Device = 'cpu' | 'cuda';

export interface SessionOptions {
  device?: Device;
  /** CUDA device ordinal (the only CUDA option the Node binding reads). */
  deviceId?: number;
  /** Intra-op threads; 1 by default (one session per worker, workers × threads ≤ cores). */
  threads?: number;
}

/** A serving session. `device` is where it actually runs; `fallback` says why not CUDA when asked. */
export class Session {
  private constructor(
    private readonly session: ort.InferenceSession,
    readonly device: Device,
    readonly fallback: string | null,
  ) {}

  static async create(model: string | Uint8Array, opts: SessionOptions = {}): Promise<Session> {
    const base: ort.InferenceSession.SessionOptions = {
      intraOpNumThreads: opts.threads ?? 1,
      interOpNumThreads: 1,
      graphOptimizationLevel: 'all',
      logSeverityLevel: 3,
    };
    const { session, device, fallback } = await createOnDevice(model, base, opts.device, opts.deviceId);
    return new Session(session, device, fallback);
  }

  get inputNames(): readonly string[] {
    return this.session.inputNames;
  }

  get outputNames(): readonly string[] {
    return this.session.outputNames;
  }

  /** Run on typed feeds; returns the named outputs (all when omitted) as NdArrays. */
  async run(feeds: Record<string, NdArray>, outputs?: readonly string[]): Promise<Record<string, NdArray>> {
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const [name, a] of Object.entries(feeds)) ortFeeds[name] = new ort.Tensor(a.dtype, a.data as ort.Tensor.DataType, a.dims);
    const names = outputs ? [...outputs] : [...this.session.outputNames];
    const result = await this.session.run(ortFeeds, names);
    const out: Record<string, NdArray> = {};
    for (const name of names) {
      const t = result[name]!;
      if (!isDType(t.type)) throw new Error(`output ${name} has type ${t.type}, which the runtime does not carry`);
      out[name] = { dtype: t.type, dims: [...t.dims], data: t.data as TypedArray };
    }
    return out;
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

/**
 * Why the CUDA provider cannot load, when that is plain from the files: on Linux it must sit
 * next to onnxruntime-node's bundled libonnxruntime.so. Null when it is there (or elsewhere).
 */
export function missingCudaProvider(): string | null {
  if (process.platform !== 'linux') return null;
  const pkg = path.dirname(createRequire(import.meta.url).resolve('onnxruntime-node/package.json'));
  const dir = path.join(pkg, 'bin', 'napi-v6', process.platform, process.arch);
  const file = path.join(dir, 'libonnxruntime_providers_cuda.so');
  return fs.existsSync(file) ? null : `the CUDA provider library ${file} is not installed`;
}

/**
 * An onnxruntime session on `device`: CUDA when asked and usable, else CPU with the reason in
 * `fallback` (null when nothing fell back) for the caller to report.
 */
export async function createOnDevice(model: string | Uint8Array, base: ort.InferenceSession.SessionOptions, device: Device | undefined, deviceId = 0): Promise<{ session: ort.InferenceSession; device: Device; fallback: string | null }> {
  const onCpu = async (fallback: string | null) => ({ session: await ort.InferenceSession.create(model as Uint8Array, { ...base, executionProviders: ['cpu'] }), device: 'cpu' as const, fallback });
  if (device !== 'cuda') return onCpu(null);
  const missing = missingCudaProvider();
  if (missing) return onCpu(missing);
  try {
    const providers = [{ name: 'cuda', deviceId }, 'cpu'];
    // Severity 4 (fatal only) keeps ORT's own log of the failed provider load out of the output.
    const session = await ort.InferenceSession.create(model as Uint8Array, { ...base, logSeverityLevel: 4, executionProviders: providers });
    return { session, device: 'cuda', fallback: null };
  } catch (e) {
    return onCpu((e instanceof Error ? e.message : String(e)).split('\n')[0]!);
  }
}

/** Say once per process that a CUDA request runs on CPU, and why. */
export function warnCudaFallback(fallback: string | null, write?: (text: string) => void): void {
  if (fallback) warnOnce(`CUDA was asked for but cannot be used (${fallback}); running on CPU. See docs/runtime.md, "CUDA".`, write);
}

const sessionCache = new Map<string, Promise<Session>>();

/** One session per (file, device, threads) in this thread: loading the same graph twice reuses it. */
export function cachedSession(file: string, opts: SessionOptions = {}): Promise<Session> {
  const key = `${file}|${opts.device ?? 'cpu'}:${opts.deviceId ?? 0}|${opts.threads ?? 1}`;
  let session = sessionCache.get(key);
  if (!session) {
    session = Session.create(file, opts);
    sessionCache.set(key, session);
    session.catch(() => sessionCache.delete(key));
  }
  return session;
}

/** Release every cached session of this thread. */
export async function releaseCachedSessions(): Promise<void> {
  const sessions = [...sessionCache.values()];
  sessionCache.clear();
  for (const s of sessions) await (await s.catch(() => null))?.release();
}

const warned = new Set<string>();

/** Print a warning once per process (the CUDA fallback is said once, not per session or worker). */
export function warnOnce(message: string, write: (text: string) => void = (t) => void process.stderr.write(t)): void {
  if (warned.has(message)) return;
  warned.add(message);
  write(`warning: ${message}\n`);
}
