// One inference worker thread: holds its own ORT sessions (one per graph it was given) and runs
// requests posted by the pool. session.run blocks the thread it runs on, so it runs here and
// never on the main thread, where HTTP parsing and scheduling live. Service time is measured
// around session.run alone, so the pool can tell queue wait, service and messaging apart.

import { parentPort, workerData } from 'node:worker_threads';
import { forTransfer, type NdArray } from './ndarray.js';
import { withRateInput } from './pool.js';
import { cachedSession, releaseCachedSessions, type Device, type Session } from './session.js';

export interface WorkerInit {
  files: string[];
  device: Device;
  threads: number;
  /** Elastic mode: the name of the float scalar rate input of the (single) graph. */
  rateInput: string | null;
}

export type WorkerRequest = { kind: 'run'; id: number; graph: number; rate: number; feeds: Record<string, NdArray> } | { kind: 'close' };

export type WorkerReply =
  | { kind: 'ready'; device: Device; fallback: string | null }
  | { kind: 'init-failed'; message: string }
  | { kind: 'done'; id: number; outputs: Record<string, NdArray>; serviceMs: number }
  | { kind: 'failed'; id: number; message: string }
  | { kind: 'closed' };

const port = parentPort;
if (!port) throw new Error('runtime/worker.ts runs only as a worker thread');
const init = workerData as WorkerInit;

async function start(): Promise<void> {
  // Cached: a manifest may name one file for two rates; it is loaded once. Every load settles
  // before a failure is reported: the pool then ends this thread, and ending it while onnxruntime
  // still builds another session aborts the whole process.
  const settled = await Promise.allSettled(init.files.map((f) => cachedSession(f, { device: init.device, threads: init.threads })));
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failed) {
    await releaseCachedSessions();
    port!.postMessage({ kind: 'init-failed', message: failed.reason instanceof Error ? failed.reason.message : String(failed.reason) } satisfies WorkerReply);
    return;
  }
  const sessions: Session[] = settled.map((s) => (s as PromiseFulfilledResult<Session>).value);
  const first = sessions[0]!;
  port!.postMessage({ kind: 'ready', device: first.device, fallback: first.fallback } satisfies WorkerReply);
  port!.on('message', async (msg: WorkerRequest) => {
    if (msg.kind === 'close') {
      await releaseCachedSessions();
      port!.postMessage({ kind: 'closed' } satisfies WorkerReply);
      port!.close();
      return;
    }
    try {
      const feeds = withRateInput(msg.feeds, init.rateInput, msg.rate);
      const t0 = performance.now();
      const outputs = await sessions[msg.graph]!.run(feeds);
      const serviceMs = performance.now() - t0;
      const { arrays, buffers } = forTransfer(outputs);
      port!.postMessage({ kind: 'done', id: msg.id, outputs: arrays, serviceMs } satisfies WorkerReply, buffers);
    } catch (e) {
      port!.postMessage({ kind: 'failed', id: msg.id, message: e instanceof Error ? e.message : String(e) } satisfies WorkerReply);
    }
  });
}

void start();
