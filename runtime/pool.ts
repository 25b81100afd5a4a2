// Worker-thread runners for the scheduler: each worker holds its own ORT sessions (session.run
// blocks the thread it runs on, so inference never runs on the main thread, where HTTP parsing
// and scheduling live). Requests and answers cross by postMessage with their buffers transferred.

import * as path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { ErrorCodes, userError } from '../compiler/diagnostics.js';
import { forTransfer, type NdArray } from './ndarray.js';
import type { Runner } from './scheduler.js';
import { Session, type Device } from './session.js';
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
}

/** Which graph a rate index runs and the rate it feeds (elastic mode: graph 0, the rate as input). */
function rateTarget(options: PoolOptions): (rateIndex: number) => { graph: number; rate: number } {
  return (i) => ({ graph: options.rateInput ? 0 : i, rate: options.rates[i]! });
}

/** The feeds with the elastic graph's rate scalar added (unchanged for a per-rate graph). */
export function withRateInput(feeds: Record<string, NdArray>, rateInput: string | null, rate: number): Record<string, NdArray> {
  return rateInput ? { ...feeds, [rateInput]: { dtype: 'float32', dims: [], data: new Float32Array([rate]) } } : feeds;
}

export interface StartedPool {
  runners: Runner[];
  /** Where the sessions run, and why not CUDA when it was asked for. */
  device: Device;
  fallback: string | null;
}

/**
 * One worker thread as a Runner: requests by id, answers matched back, every pending request
 * failed at once when the worker dies. `target` maps a rate index to the graph the worker runs
 * and the rate it feeds (elastic mode: graph 0 with the rate as input).
 */
export class WorkerRunner implements Runner {
  private nextId = 1;
  /** Set once the worker has crashed or exited: later runs fail at once instead of waiting forever. */
  private dead: Error | null = null;
  private readonly pending = new Map<number, { resolve: (r: { outputs: Record<string, NdArray>; serviceMs: number }) => void; reject: (e: Error) => void }>();

  constructor(
    protected readonly worker: Worker,
    private readonly target: (rateIndex: number) => { graph: number; rate: number },
  ) {
    worker.on('message', (msg: WorkerReply) => {
      if (msg.kind !== 'done' && msg.kind !== 'failed') return;
      const waiter = this.pending.get(msg.id);
      this.pending.delete(msg.id);
      if (msg.kind === 'done') waiter?.resolve({ outputs: msg.outputs, serviceMs: msg.serviceMs });
      else waiter?.reject(new Error(`inference failed: ${msg.message}`));
    });
    worker.on('error', (e) => this.failAll(new Error(`worker crashed: ${e.message}`)));
    worker.on('exit', (code) => this.failAll(new Error(`worker exited (code ${code})`)));
  }

  protected get alive(): boolean {
    return this.dead === null;
  }

  run(rateIndex: number, feeds: Record<string, NdArray>): Promise<{ outputs: Record<string, NdArray>; serviceMs: number }> {
    if (this.dead) return Promise.reject(this.dead);
    const id = this.nextId++;
    const { arrays, buffers } = forTransfer(feeds);
    const { graph, rate } = this.target(rateIndex);
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ kind: 'run', id, graph, rate, feeds: arrays } satisfies WorkerRequest, buffers);
    });
  }

  close(): Promise<void> {
    if (this.dead) return Promise.resolve();
    return new Promise((resolve) => {
      this.worker.once('exit', () => resolve());
      this.worker.postMessage({ kind: 'close' } satisfies WorkerRequest);
    });
  }

  private failAll(error: Error): void {
    this.dead ??= error;
    for (const waiter of this.pending.values()) waiter.reject(error);
    this.pending.clear();
  }
}

/** onnxruntime refused a graph of the folder (cut short, edited, or not slicec's). */
export function loadFailed(message: string): Error {
  return userError(ErrorCodes.BAD_INPUT_FILE, 'onnxruntime cannot load a graph of the folder', {
    expected: 'the graphs slicec wrote, as it wrote them', found: message.split('\n')[0]!,
    hint: 'compile the model into the folder again (slicec model.onnx --groups N -o DIR), or restore the file named',
  });
}

/** Start the workers; each has loaded its sessions when this resolves. */
export async function startWorkers(options: PoolOptions): Promise<StartedPool> {
  const init: WorkerInit = { files: options.files, device: options.device, threads: options.threads, rateInput: options.rateInput };
  const workers = Array.from({ length: Math.max(1, options.workers) }, () => createWorker(init));
  const ready = await Promise.allSettled(workers.map(waitReady));
  const failed = ready.find((r) => r.status === 'rejected');
  if (failed) {
    await Promise.all(workers.map((w) => w.terminate()));
    throw (failed as PromiseRejectedResult).reason;
  }
  const first = (ready[0] as PromiseFulfilledResult<Extract<WorkerReply, { kind: 'ready' }>>).value;
  const target = rateTarget(options);
  return { runners: workers.map((w) => new WorkerRunner(w, target)), device: first.device, fallback: first.fallback };
}

function waitReady(worker: Worker): Promise<Extract<WorkerReply, { kind: 'ready' }>> {
  return new Promise((resolve, reject) => {
    const onError = (e: Error): void => reject(e);
    worker.once('error', onError);
    worker.once('message', (msg: WorkerReply) => {
      worker.off('error', onError);
      if (msg.kind === 'ready') resolve(msg);
      else reject(msg.kind === 'init-failed' ? loadFailed(msg.message) : new Error(`worker answered ${msg.kind} before it was ready`));
    });
  });
}

/** The pool's inference worker (worker.ts beside this file). */
function createWorker(init: WorkerInit): Worker {
  const here = fileURLToPath(import.meta.url);
  return spawnWorker(path.join(path.dirname(here), `worker${path.extname(here)}`), init);
}

/**
 * A worker thread running `workerFile` (a sibling module's path, .js in the compiled package,
 * .ts from sources). From sources (tests, tsx scripts) the worker registers tsx's loader first,
 * since a worker does not inherit the parent's module hooks.
 */
export function spawnWorker(workerFile: string, workerData: unknown): Worker {
  // --input-type (node -e) applies to string input only; a worker started from a file refuses it.
  const execArgv = process.execArgv.filter((a) => !a.startsWith('--input-type'));
  if (path.extname(workerFile) === '.js') return new Worker(workerFile, { workerData, execArgv });
  // The import condition of tsx/esm/api is the .mjs beside the .cjs that require resolves.
  const tsxApi = pathToFileURL(createRequire(fileURLToPath(import.meta.url)).resolve('tsx/esm/api').replace(/\.cjs$/, '.mjs')).href;
  const boot = `import(${JSON.stringify(tsxApi)}).then((m) => { m.register(); return import(${JSON.stringify(pathToFileURL(workerFile).href)}); })`;
  return new Worker(boot, { eval: true, workerData });
}

/**
 * The sessions on the calling thread, no worker (`workers: 0`): no messages and no thread
 * wake-ups per request, but session.run blocks the event loop while it runs, so it suits scripts
 * and one caller at a time, not a server. Elastic mode feeds the rate as the worker does.
 */
export class InlineRunner implements Runner {
  private closed = false;

  private constructor(
    private readonly sessions: Session[],
    private readonly target: (rateIndex: number) => { graph: number; rate: number },
    private readonly rateInput: string | null,
  ) {}

  static async start(options: PoolOptions): Promise<StartedPool> {
    const byFile = new Map<string, Promise<Session>>();
    const opened = options.files.map((f) => {
      if (!byFile.has(f)) byFile.set(f, Session.create(f, { device: options.device, threads: options.threads }));
      return byFile.get(f)!;
    });
    const settled = await Promise.allSettled(opened);
    const failed = settled.find((s) => s.status === 'rejected');
    if (failed) {
      await Promise.all(settled.map((s) => (s.status === 'fulfilled' ? s.value.release() : null)));
      throw loadFailed(String((failed as PromiseRejectedResult).reason?.message ?? (failed as PromiseRejectedResult).reason));
    }
    const sessions = settled.map((s) => (s as PromiseFulfilledResult<Session>).value);
    return { runners: [new InlineRunner(sessions, rateTarget(options), options.rateInput)], device: sessions[0]!.device, fallback: sessions[0]!.fallback };
  }

  async run(rateIndex: number, feeds: Record<string, NdArray>): Promise<{ outputs: Record<string, NdArray>; serviceMs: number }> {
    if (this.closed) throw new Error('the runner is closed');
    const { graph, rate } = this.target(rateIndex);
    const t0 = performance.now();
    try {
      const outputs = await this.sessions[graph]!.run(withRateInput(feeds, this.rateInput, rate));
      return { outputs, serviceMs: performance.now() - t0 };
    } catch (e) {
      throw new Error(`inference failed: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([...new Set(this.sessions)].map((s) => s.release()));
  }
}
