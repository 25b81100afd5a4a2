// A pool of inference worker threads, each with its own sessions, fed from one FIFO queue on the
// main thread. The queue is the load signal: the predicted wait of a new request is the
// predicted work ahead of it (queued jobs plus what is left of running ones) spread over the
// workers. Just before a worker takes a job, the job may revise its rate with the wait it actually
// had (the policy runs again with the real elapsed time). Optional dynamic batching joins queued
// jobs of one rate and matching trailing dims along axis 0, up to `maxBatch` rows, waiting at
// most `maxQueueDelayMs` for a batch to fill.

import * as path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { concatRows, forTransfer, sliceRows, type NdArray } from './ndarray.js';
import type { Device } from './session.js';
import type { WorkerInit, WorkerReply, WorkerRequest } from './worker.js';

export interface PoolOptions {
  /** Graph files; in elastic mode a single file fed `rateInput`. */
  files: string[];
  rateInput: string | null;
  /** Rate value of each rate index (elastic mode feeds it to the graph). */
  rates: number[];
  workers: number;
  threads: number;
  device: Device;
  /** Rows per dispatched batch; 1 disables batching. */
  maxBatch?: number;
  maxQueueDelayMs?: number;
}

export interface PoolJob {
  rateIndex: number;
  feeds: Record<string, NdArray>;
  rows: number;
  predictedMs: number;
  /** At dispatch: the rate index to run with after `waitedMs` in the queue, or -1 to shed. */
  revise?: (waitedMs: number, rateIndex: number) => { rateIndex: number; predictedMs: number } | -1;
}

export interface PoolResult {
  outputs: Record<string, NdArray>;
  rateIndex: number;
  queueMs: number;
  serviceMs: number;
  /** Rows of the batch this job ran in. */
  batchRows: number;
}

export class ShedError extends Error {
  constructor(readonly predictedMs: number) {
    super(`shed: predicted ${predictedMs.toFixed(1)} ms exceeds the deadline`);
    this.name = 'ShedError';
  }
}

interface Queued extends PoolJob {
  enqueuedAt: number;
  resolve: (r: PoolResult) => void;
  reject: (e: Error) => void;
}

interface Slot {
  worker: Worker;
  busy: { jobs: Queued[]; startedAt: number; predictedMs: number; id: number; dispatchedAt: number } | null;
}

export class WorkerPool {
  private readonly slots: Slot[] = [];
  private readonly queue: Queued[] = [];
  private nextId = 1;
  private closing = false;
  private delayTimer: NodeJS.Timeout | null = null;
  private idleWaiters: (() => void)[] = [];
  readonly maxBatch: number;
  readonly maxQueueDelayMs: number;
  device: Device = 'cpu';
  fallback: string | null = null;

  private constructor(private readonly options: PoolOptions) {
    this.maxBatch = Math.max(1, options.maxBatch ?? 1);
    this.maxQueueDelayMs = Math.max(0, options.maxQueueDelayMs ?? 0);
  }

  static async start(options: PoolOptions): Promise<WorkerPool> {
    const pool = new WorkerPool(options);
    const init: WorkerInit = { files: options.files, device: options.device, threads: options.threads, rateInput: options.rateInput };
    const started = Array.from({ length: Math.max(1, options.workers) }, () => pool.spawn(init));
    const results = await Promise.allSettled(started);
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) {
      await pool.terminate();
      throw (failed as PromiseRejectedResult).reason;
    }
    return pool;
  }

  get workers(): number {
    return this.slots.length;
  }

  /** Jobs waiting for a worker. */
  get queueDepth(): number {
    return this.queue.length;
  }

  get inFlight(): number {
    return this.slots.filter((s) => s.busy).length;
  }

  /** Predicted wait before a job submitted now starts, ms. */
  predictedWaitMs(): number {
    const now = performance.now();
    const idle = this.slots.some((s) => !s.busy);
    let backlog = 0;
    for (const job of this.queue) backlog += job.predictedMs;
    if (idle && backlog === 0) return 0;
    for (const s of this.slots) if (s.busy) backlog += Math.max(0, s.busy.predictedMs - (now - s.busy.startedAt));
    return backlog / this.slots.length;
  }

  submit(job: PoolJob): Promise<PoolResult> {
    if (this.closing) return Promise.reject(new Error('the model is closing'));
    return new Promise((resolve, reject) => {
      this.queue.push({ ...job, enqueuedAt: performance.now(), resolve, reject });
      this.pump();
    });
  }

  /** Finish queued and running jobs, then stop the workers. */
  async close(): Promise<void> {
    this.closing = true;
    while (this.queue.length > 0 || this.inFlight > 0) await new Promise<void>((r) => this.idleWaiters.push(r));
    await Promise.all(
      this.slots.map(
        (s) =>
          new Promise<void>((resolve) => {
            s.worker.once('exit', () => resolve());
            s.worker.postMessage({ kind: 'close' } satisfies WorkerRequest);
          }),
      ),
    );
  }

  private async terminate(): Promise<void> {
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }

  private spawn(init: WorkerInit): Promise<void> {
    const worker = createWorker(init);
    const slot: Slot = { worker, busy: null };
    return new Promise((resolve, reject) => {
      worker.once('error', reject);
      worker.once('message', (msg: WorkerReply) => {
        if (msg.kind === 'init-failed') {
          reject(new Error(`could not load the model: ${msg.message}`));
          return;
        }
        if (msg.kind !== 'ready') return;
        this.device = msg.device;
        this.fallback = msg.fallback;
        this.slots.push(slot);
        worker.off('error', reject);
        worker.on('message', (m: WorkerReply) => this.onReply(slot, m));
        worker.on('error', (e) => this.onWorkerError(slot, e));
        resolve();
      });
    });
  }

  private onReply(slot: Slot, msg: WorkerReply): void {
    if (msg.kind !== 'done' && msg.kind !== 'failed') return;
    const busy = slot.busy;
    if (!busy || busy.id !== msg.id) return;
    slot.busy = null;
    if (msg.kind === 'failed') {
      for (const job of busy.jobs) job.reject(new Error(`inference failed: ${msg.message}`));
    } else {
      let row = 0;
      for (const job of busy.jobs) {
        const outputs: Record<string, NdArray> = {};
        for (const [name, a] of Object.entries(msg.outputs)) outputs[name] = busy.jobs.length === 1 ? a : sliceRows(a, row, row + job.rows);
        row += job.rows;
        const batchRows = busy.jobs.reduce((s, j) => s + j.rows, 0);
        job.resolve({ outputs, rateIndex: job.rateIndex, queueMs: busy.dispatchedAt - job.enqueuedAt, serviceMs: msg.serviceMs, batchRows });
      }
    }
    this.pump();
  }

  private onWorkerError(slot: Slot, e: Error): void {
    const busy = slot.busy;
    slot.busy = null;
    for (const job of busy?.jobs ?? []) job.reject(new Error(`worker crashed: ${e.message}`));
    this.pump();
  }

  private pump(): void {
    for (;;) {
      const slot = this.slots.find((s) => !s.busy);
      if (!slot || this.queue.length === 0) break;
      const jobs = this.takeBatch();
      if (!jobs) break;
      if (jobs.length > 0) this.dispatch(slot, jobs);
    }
    if (this.queue.length === 0 && this.inFlight === 0) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  /** The next jobs to run together; [] when the head was shed; null to wait for a batch to fill. */
  private takeBatch(): Queued[] | null {
    const now = performance.now();
    const head = this.queue[0]!;
    if (head.revise) {
      const revised = head.revise(now - head.enqueuedAt, head.rateIndex);
      if (revised === -1) {
        this.queue.shift();
        head.reject(new ShedError(head.predictedMs));
        return [];
      }
      head.rateIndex = revised.rateIndex;
      head.predictedMs = revised.predictedMs;
    }
    if (this.maxBatch <= 1) return [this.queue.shift()!];
    const picked = [0];
    let rows = head.rows;
    for (let i = 1; i < this.queue.length && rows < this.maxBatch; i++) {
      const job = this.queue[i]!;
      if (job.rateIndex === head.rateIndex && rows + job.rows <= this.maxBatch && sameTrailingDims(head.feeds, job.feeds)) {
        picked.push(i);
        rows += job.rows;
      }
    }
    const waited = now - head.enqueuedAt;
    if (rows < this.maxBatch && waited < this.maxQueueDelayMs && !this.closing) {
      if (!this.delayTimer) {
        this.delayTimer = setTimeout(() => {
          this.delayTimer = null;
          this.pump();
        }, this.maxQueueDelayMs - waited);
      }
      return null;
    }
    const jobs = picked.map((i) => this.queue[i]!);
    for (let k = picked.length - 1; k >= 0; k--) this.queue.splice(picked[k]!, 1);
    return jobs;
  }

  private dispatch(slot: Slot, jobs: Queued[]): void {
    const id = this.nextId++;
    const head = jobs[0]!;
    const feeds: Record<string, NdArray> = {};
    for (const name of Object.keys(head.feeds)) {
      const parts = jobs.map((j) => j.feeds[name]!);
      // A single caller's array is copied so that transferring it never detaches the caller's data.
      feeds[name] = parts.length === 1 ? { ...parts[0]!, data: parts[0]!.data.slice() } : concatRows(parts);
    }
    const { arrays, buffers } = forTransfer(feeds);
    const now = performance.now();
    const predictedMs = jobs.reduce((s, j) => s + j.predictedMs, 0);
    slot.busy = { jobs, startedAt: now, predictedMs, id, dispatchedAt: now };
    const rate = this.options.rates[head.rateIndex]!;
    const graph = this.options.rateInput ? 0 : head.rateIndex;
    slot.worker.postMessage({ kind: 'run', id, graph, rate, feeds: arrays } satisfies WorkerRequest, buffers);
  }
}

function sameTrailingDims(a: Record<string, NdArray>, b: Record<string, NdArray>): boolean {
  for (const [name, x] of Object.entries(a)) {
    const y = b[name];
    if (!y || y.dtype !== x.dtype || y.dims.length !== x.dims.length) return false;
    for (let i = 1; i < x.dims.length; i++) if (x.dims[i] !== y.dims[i]) return false;
  }
  return true;
}

/**
 * The compiled package runs worker.js; from sources (tests, tsx scripts) the worker registers
 * tsx's loader first, since a worker does not inherit the parent's module hooks.
 */
function createWorker(init: WorkerInit): Worker {
  const here = fileURLToPath(import.meta.url);
  const ext = path.extname(here);
  const workerFile = path.join(path.dirname(here), `worker${ext}`);
  if (ext === '.js') return new Worker(workerFile, { workerData: init });
  // The import condition of tsx/esm/api is the .mjs beside the .cjs that require resolves.
  const tsxApi = pathToFileURL(createRequire(here).resolve('tsx/esm/api').replace(/\.cjs$/, '.mjs')).href;
  const boot = `import(${JSON.stringify(tsxApi)}).then((m) => { m.register(); return import(${JSON.stringify(pathToFileURL(workerFile).href)}); })`;
  return new Worker(boot, { eval: true, workerData: init });
}
