// Serving with early exits, on the main thread: starts the exit workers (exit-worker.ts) and the
// cache trainer (cache-worker.ts), picks each request's mode (exits, or a probe that runs to the
// end so the heads keep a teacher and the held-back stream stays unbiased), turns runs that
// reached the final model into replay samples, and passes the trainer's published heads to every
// worker. Knobs: buffer bytes, trainer CPU share, agreement target, probe share (see ExitOptions).

import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Worker } from 'node:worker_threads';
import { ErrorCodes, userError } from '../../compiler/diagnostics.js';
import type { ServedManifest } from '../manifest.js';
import type { NdArray } from '../ndarray.js';
import { loadFailed, spawnWorker, WorkerRunner } from '../pool.js';
import type { Runner } from '../scheduler.js';
import type { Device } from '../session.js';
import type { CacheSample } from './buffer.js';
import type { CacheSettings, CacheStats, CacheWorkerInit, CacheWorkerReply, CacheWorkerRequest, RateEstimate } from './cache-worker.js';
import type { ExitWorkerInit, ExitWorkerRequest, HeadUpdate } from './exit-worker.js';
import { EXIT_OUTPUT, MACS_OUTPUT, TEACHER_OUTPUT, UNBIASED_OUTPUT, activationOutput } from './protocol.js';
import { loadExitsSpec, loadHeads, type ExitsSpec, type HeadState } from './heads.js';
import { softmaxRows } from './math.js';

/** Quiet time after a backlog before the cache trainer resumes, ms. */
export const RESUME_MS = 100;

export interface ExitOptions {
  /** Replay buffer bound, bytes (default 64 MiB). */
  maxBufferBytes?: number;
  /** Most of the wall time the cache trainer may be busy (default 0.25). */
  trainerShare?: number;
  /** Agreement with the final model a head needs at its threshold (default 0.99). */
  agreement?: number;
  /** Share of requests that run to the end while heads are on (default 0.05). */
  probeShare?: number;
  /** Share of the unbiased samples held back for measuring agreement (default 0.25). */
  heldBackShare?: number;
  /** Learning rate of the heads' AdamW steps (default 0.003). */
  lr?: number;
  /** Train steps per head between measurements (default 40). */
  evalEvery?: number;
  /** Keep the heads in the folder (exits/cache/heads.json) and start from them (default true). */
  checkpoint?: boolean;
  checkpointEveryMs?: number;
}

function badOption(name: string, expected: string, value: unknown): Error {
  return userError(ErrorCodes.BAD_FLAG, `${name} expects ${expected}, got ${String(value)}`, { expected, found: String(value), hint: 'see docs/runtime.md, "Early exits and cascades"' });
}

/** Defaults filled in and every knob checked (user errors, code BAD_FLAG, named like the serve flags). */
export function exitSettings(o: ExitOptions): CacheSettings & { probeShare: number } {
  const share = (name: string, v: number | undefined, fallback: number, open = false): number => {
    const x = v ?? fallback;
    if (!Number.isFinite(x) || x < 0 || x > 1 || (open && x === 0)) throw badOption(name, open ? 'a number in (0, 1]' : 'a number in [0, 1]', x);
    return x;
  };
  const maxBytes = o.maxBufferBytes ?? 64 * 2 ** 20;
  if (!Number.isSafeInteger(maxBytes) || maxBytes < 1024) throw badOption('--cache-bytes', 'an integer number of bytes ≥ 1024', maxBytes);
  const lr = o.lr ?? 0.003;
  if (!(lr > 0) || !Number.isFinite(lr)) throw badOption('--cache-lr', 'a positive number', lr);
  const agreement = share('--agreement', o.agreement, 0.99, true);
  return {
    maxBytes,
    cpuShare: share('--trainer-share', o.trainerShare, 0.25, true),
    target: agreement,
    probeShare: share('--probe-share', o.probeShare, 0.05),
    heldBackShare: share('--held-back-share', o.heldBackShare, 0.25, true),
    lr,
    minAnswered: 1,
    measureMax: 2048,
    evalEvery: Math.max(1, Math.floor(o.evalEvery ?? 40)),
    checkpoint: o.checkpoint ?? true,
    checkpointEveryMs: o.checkpointEveryMs ?? 10_000,
  };
}

/** What one run with exits says about each row, beside the answer. */
export interface ExitRow {
  /** Exit that answered (−1: the final output). */
  exit: number;
  macs: number;
}

/** An exit worker: a pool runner that also takes head updates from the trainer. */
class ExitRunner extends WorkerRunner {
  constructor(worker: Worker, rates: number[]) {
    super(worker, (i) => ({ graph: i, rate: rates[i]! }));
  }

  send(updates: HeadUpdate[]): void {
    if (this.alive) this.worker.postMessage({ kind: 'heads', updates } satisfies ExitWorkerRequest);
  }
}

function sibling(name: string): string {
  const here = fileURLToPath(import.meta.url);
  return path.join(path.dirname(here), `${name}${path.extname(here)}`);
}

function ready(worker: Worker, what: string): Promise<{ device?: Device; fallback?: string | null }> {
  return new Promise((resolve, reject) => {
    const onError = (e: Error): void => reject(e);
    worker.once('error', onError);
    worker.once('message', (msg: { kind: string; message?: string; device?: Device; fallback?: string | null }) => {
      worker.off('error', onError);
      if (msg.kind === 'ready') resolve(msg);
      else reject(msg.kind === 'init-failed' && msg.message ? loadFailed(`${what}: ${msg.message}`) : new Error(`could not start the ${what}: ${msg.message ?? msg.kind}`));
    });
  });
}

export interface StartedExits {
  runners: Runner[];
  device: Device;
  fallback: string | null;
  exits: ExitServing;
}

/** Start the exit workers and the cache trainer for a folder compiled with --exits. */
export async function startExitServing(manifest: ServedManifest, options: ExitOptions, pool: { workers: number; threads: number; device: Device }): Promise<StartedExits> {
  const settings = exitSettings(options);
  const spec = loadExitsSpec(manifest);
  const rateValues = manifest.rates.map((r) => r.rate);
  const init: ExitWorkerInit = {
    files: manifest.rates.map((r) => r.file),
    device: pool.device,
    threads: pool.threads,
    output: spec.output,
    classes: spec.classes,
    rates: spec.rates.map((r) => ({ segments: r.segments, segmentIo: r.segmentIo, segmentMacs: r.segmentMacs, heads: r.heads.map((h) => ({ bytes: h.forward.bytes, signature: h.forward.signature, macs: h.macs })) })),
  };
  const workers = Array.from({ length: Math.max(1, pool.workers) }, () => spawnWorker(sibling('exit-worker'), init));
  const cacheInit: CacheWorkerInit = {
    dir: spec.dir,
    rateValues,
    classes: spec.classes,
    device: 'cpu',
    settings,
    rates: spec.rates.map((r) => ({ segmentMacs: r.segmentMacs, heads: r.heads })),
    initial: settings.checkpoint ? loadHeads(spec, rateValues) ?? [] : [],
  };
  const trainer = spawnWorker(sibling('cache-worker'), cacheInit);
  const started = await Promise.allSettled([...workers.map((w) => ready(w, 'exit worker')), ready(trainer, 'cache trainer')]);
  const failed = started.find((r) => r.status === 'rejected');
  if (failed) {
    await Promise.all([...workers, trainer].map((w) => w.terminate()));
    throw (failed as PromiseRejectedResult).reason;
  }
  const first = (started[0] as PromiseFulfilledResult<{ device?: Device; fallback?: string | null }>).value;
  const runners = workers.map((w) => new ExitRunner(w, rateValues));
  return { runners, device: first.device ?? 'cpu', fallback: first.fallback ?? null, exits: new ExitServing(spec, settings, runners, trainer) };
}

export class ExitServing {
  private heads: HeadState[] = [];
  private estimates: RateEstimate[];
  private latestStats: CacheStats | null = null;
  private pendingSamples: CacheSample[] = [];
  private flushTimer: NodeJS.Timeout | null = null;
  private stateWaiters: (() => void)[] = [];
  private requests = 0;
  private closed = false;
  private paused = false;
  private lastBacklog = 0;
  private resumeTimer: NodeJS.Timeout | null = null;
  private failure: Error | null = null;
  private readonly trainerExited: Promise<void>;

  constructor(
    readonly spec: ExitsSpec,
    readonly settings: CacheSettings & { probeShare: number },
    private readonly runners: ExitRunner[],
    private readonly trainer: Worker,
  ) {
    this.estimates = spec.rates.map((r) => ({ rateIndex: r.rateIndex, meanMacs: r.segmentMacs.reduce((a, b) => a + b, 0), disagreement: 0, heldBack: 0 }));
    this.trainerExited = new Promise((resolve) => trainer.once('exit', () => resolve()));
    // a failed trainer leaves the heads as they are (off, or as last published); requests go on
    trainer.on('error', (e) => {
      this.failure = e;
      process.stderr.write(`slicec: the exit-head trainer stopped: ${e.message}\n`);
      for (const w of this.stateWaiters.splice(0)) w();
    });
    trainer.on('message', (msg: CacheWorkerReply) => {
      if (msg.kind === 'stats') this.latestStats = msg.stats;
      if (msg.kind !== 'state') return;
      this.heads = msg.heads;
      this.estimates = msg.rates;
      this.latestStats = msg.stats;
      const updates: HeadUpdate[] = msg.heads.map((h) => ({ rateIndex: h.rateIndex, exit: h.exit, params: h.params, threshold: h.threshold, enabled: h.enabled }));
      for (const r of this.runners) r.send(updates);
      const waiters = this.stateWaiters;
      this.stateWaiters = [];
      for (const w of waiters) w();
    });
  }

  /** Heads as last published (weights, thresholds, on/off, agreement). */
  get headStates(): readonly HeadState[] {
    return this.heads;
  }

  get stats(): CacheStats | null {
    return this.latestStats;
  }

  estimate(rateIndex: number): RateEstimate {
    return this.estimates[rateIndex]!;
  }

  /** Whether some head of the rate may answer. */
  anyOn(rateIndex: number): boolean {
    return this.heads.some((h) => h.rateIndex === rateIndex && h.enabled);
  }

  /**
   * The control feed of a request at `rateIndex`: exits (1) while a head of the rate is on, with
   * every 1 ÷ probeShare-th request a probe (2); collect (2) while none is. Under a backlog
   * (`busy`: requests are waiting) nothing is collected: probes are skipped and a rate whose heads
   * are off runs its plain graph, so training data never costs a queued request time. Probes are
   * spread evenly over the stream rather than drawn at random, so short runs repeat.
   */
  modeFeed(rateIndex: number, rows: number, busy: boolean): NdArray {
    let mode: number;
    if (this.anyOn(rateIndex)) {
      this.requests++;
      const probe = Math.floor(this.requests * this.settings.probeShare) > Math.floor((this.requests - 1) * this.settings.probeShare);
      mode = probe && !busy ? 2 : 1;
    } else {
      mode = busy ? 0 : 2;
    }
    return { dtype: 'int32', dims: [rows], data: new Int32Array(rows).fill(mode) };
  }

  /**
   * The server's backlog, reported at every request: the trainer pauses at once when requests
   * wait, and resumes once none has waited for RESUME_MS.
   */
  backlog(busy: boolean): void {
    const now = performance.now();
    if (busy) this.lastBacklog = now;
    if (busy && !this.paused) {
      this.paused = true;
      this.trainer.postMessage({ kind: 'pause', paused: true } satisfies CacheWorkerRequest);
    }
    if (this.paused && !this.resumeTimer) {
      const check = (): void => {
        this.resumeTimer = null;
        if (this.closed || !this.paused) return;
        const quiet = performance.now() - this.lastBacklog;
        if (quiet < RESUME_MS) {
          this.resumeTimer = setTimeout(check, RESUME_MS - quiet);
          return;
        }
        this.paused = false;
        this.trainer.postMessage({ kind: 'pause', paused: false } satisfies CacheWorkerRequest);
      };
      this.resumeTimer = setTimeout(check, RESUME_MS);
    }
  }

  /** Take the control outputs off a result; runs that reached the end become replay samples. */
  takeRows(rateIndex: number, outputs: Record<string, NdArray>): ExitRow[] {
    const exitOf = outputs[EXIT_OUTPUT]?.data as Int32Array | undefined;
    const macs = outputs[MACS_OUTPUT]?.data as Float64Array | undefined;
    const unbiased = outputs[UNBIASED_OUTPUT]?.data as Uint8Array | undefined;
    const teacher = outputs[TEACHER_OUTPUT];
    const heads = this.spec.rates[rateIndex]!.heads;
    if (teacher && unbiased && !this.closed) {
      const K = this.spec.classes;
      const probs = softmaxRows(teacher.data as Float32Array, K);
      const rows = teacher.dims[0]!;
      const acts = heads.map((_, k) => outputs[activationOutput(k)]!);
      for (let i = 0; i < rows; i++) {
        this.pendingSamples.push({
          rateIndex,
          activations: acts.map((a) => {
            const per = a.data.length / rows;
            return (a.data as Float32Array).slice(i * per, (i + 1) * per);
          }),
          teacher: probs.slice(i * K, (i + 1) * K),
          unbiased: unbiased[i] === 1,
        });
      }
      this.scheduleFlush();
    }
    for (const name of [EXIT_OUTPUT, MACS_OUTPUT, UNBIASED_OUTPUT, TEACHER_OUTPUT, ...heads.map((_, k) => activationOutput(k))]) delete outputs[name];
    if (!exitOf || !macs) return [];
    return Array.from(exitOf, (exit, i) => ({ exit, macs: macs[i]! }));
  }

  /** Samples cross to the trainer in small batches (one message per few requests, buffers transferred). */
  private scheduleFlush(): void {
    if (this.pendingSamples.length >= 32) this.flush();
    else this.flushTimer ??= setTimeout(() => this.flush(), 20);
  }

  private flush(): void {
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = null;
    const samples = this.pendingSamples;
    this.pendingSamples = [];
    if (samples.length === 0 || this.closed) return;
    const buffers = samples.flatMap((s) => [...s.activations.map((a) => a.buffer as ArrayBuffer), s.teacher.buffer as ArrayBuffer]);
    this.trainer.postMessage({ kind: 'samples', samples } satisfies CacheWorkerRequest, buffers);
  }

  /** Measure and recalibrate every head now; resolves with the published state. */
  async measure(): Promise<readonly HeadState[]> {
    if (this.failure) throw this.failure;
    this.flush();
    const published = new Promise<void>((resolve) => this.stateWaiters.push(resolve));
    this.trainer.postMessage({ kind: 'measure' } satisfies CacheWorkerRequest);
    await published;
    if (this.failure) throw this.failure;
    return this.heads;
  }

  /** Stop the trainer (it writes a last checkpoint). The runners are closed by the scheduler. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    if (this.resumeTimer) clearTimeout(this.resumeTimer);
    if (this.failure) return;
    this.trainer.postMessage({ kind: 'close' } satisfies CacheWorkerRequest);
    await this.trainerExited;
  }
}
