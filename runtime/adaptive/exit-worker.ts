// An inference worker that serves with early exits. Besides one session per rate graph (the plain
// path, as runtime/worker.ts), it holds each rate's segments and heads, and the heads' current
// weights, thresholds and on/off states, which the main thread sends as the cache trainer
// publishes them. A request carries a per-row mode in the control feed `slicec:mode`:
//   0 plain: the rate graph, nothing else;
//   1 exits: segment by segment; after exit k, rows whose head is on and confident ≥ its
//     threshold are answered by it; the run stops once every row is answered;
//   2 collect: through the segments to the end, no head consulted (a probe, or a rate whose heads
//     are all off), so the answer is the final model's.
// Runs that reach the end return each exit's activation and the final logits, for the replay
// buffer. Extra outputs, per row: `slicec:exit` (exit that answered, −1 the final output),
// `slicec:macs` (MACs the run spent), `slicec:unbiased` (1: no head could have answered it).

import { parentPort, workerData } from 'node:worker_threads';
import type { TrainStepSignature } from '../../compiler/train-step.js';
import { forTransfer, type NdArray } from '../ndarray.js';
import { cachedSession, releaseCachedSessions, Session, type Device } from '../session.js';
import { confidence } from './math.js';
import { EXIT_OUTPUT, MACS_OUTPUT, MODE_FEED, TEACHER_OUTPUT, UNBIASED_OUTPUT, activationOutput } from './protocol.js';


export interface ExitWorkerInit {
  /** Plain rate graphs, by rate index. */
  files: string[];
  device: Device;
  threads: number;
  output: string;
  classes: number;
  rates: {
    segments: Uint8Array[];
    segmentIo: { input: string; output: string }[];
    segmentMacs: number[];
    heads: { bytes: Uint8Array; signature: TrainStepSignature; macs: number }[];
  }[];
}

export interface HeadUpdate {
  rateIndex: number;
  exit: number;
  params: Record<string, Float32Array>;
  threshold: number;
  enabled: boolean;
}

export type ExitWorkerRequest =
  | { kind: 'run'; id: number; graph: number; rate: number; feeds: Record<string, NdArray> }
  | { kind: 'heads'; updates: HeadUpdate[] }
  | { kind: 'close' };

const port = parentPort;
if (!port) throw new Error('runtime/adaptive/exit-worker.ts runs only as a worker thread');
const init = workerData as ExitWorkerInit;

interface HeadRun {
  session: Session;
  signature: TrainStepSignature;
  macs: number;
  state: HeadUpdate | null;
}

interface RateRun {
  plain: Session;
  segments: Session[];
  heads: HeadRun[];
}

async function runHead(head: HeadRun, activation: NdArray): Promise<Float32Array> {
  const feeds: Record<string, NdArray> = {};
  for (const input of head.signature.inputs) {
    if (input.role === 'batch') feeds[input.name] = activation;
    else feeds[input.name] = { dtype: 'float32', dims: input.shape, data: head.state!.params[input.parameter!]! };
  }
  const out = await head.session.run(feeds);
  return out[head.signature.outputs[0]!.name]!.data as Float32Array;
}

async function runExits(r: RateRun, spec: ExitWorkerInit['rates'][number], feeds: Record<string, NdArray>, mode: Int32Array): Promise<Record<string, NdArray>> {
  const rows = mode.length;
  const K = init.classes;
  const exitOf = new Int32Array(rows).fill(-2);
  const logits = new Float32Array(rows * K);
  const anyOn = r.heads.some((h) => h.state?.enabled);
  const unbiased = Uint8Array.from(mode, (m) => (m !== 1 || !anyOn ? 1 : 0));
  let open = rows;
  let macs = 0;
  let x = feeds[spec.segmentIo[0]!.input]!;
  const activations: NdArray[] = [];
  let reachedEnd = true;
  for (let k = 0; k < r.segments.length; k++) {
    const io = spec.segmentIo[k]!;
    const y = (await r.segments[k]!.run({ [io.input]: x }, [io.output]))[io.output]!;
    macs += spec.segmentMacs[k]!;
    x = y;
    if (k === r.heads.length) break;
    activations.push(y);
    const head = r.heads[k]!;
    if (!head.state?.enabled || !mode.some((m, i) => m === 1 && exitOf[i] === -2)) continue;
    const z = await runHead(head, y);
    macs += head.macs;
    const top = confidence(z, K);
    for (let i = 0; i < rows; i++) {
      if (mode[i] !== 1 || exitOf[i] !== -2 || !(top.value[i]! >= head.state.threshold)) continue;
      exitOf[i] = k;
      logits.set(z.subarray(i * K, (i + 1) * K), i * K);
      open--;
    }
    if (open === 0) {
      reachedEnd = k === r.segments.length - 1;
      break;
    }
  }
  const outputs: Record<string, NdArray> = {};
  if (reachedEnd) {
    const final = x.data as Float32Array;
    for (let i = 0; i < rows; i++) {
      if (exitOf[i] !== -2) continue;
      exitOf[i] = -1;
      logits.set(final.subarray(i * K, (i + 1) * K), i * K);
    }
    outputs[TEACHER_OUTPUT] = { dtype: 'float32', dims: [rows, K], data: Float32Array.from(final) };
    activations.forEach((a, k) => (outputs[activationOutput(k)] = a));
  }
  outputs[init.output] = { dtype: 'float32', dims: [rows, K], data: logits };
  outputs[EXIT_OUTPUT] = { dtype: 'int32', dims: [rows], data: exitOf };
  outputs[MACS_OUTPUT] = { dtype: 'float64', dims: [rows], data: new Float64Array(rows).fill(macs) };
  outputs[UNBIASED_OUTPUT] = { dtype: 'uint8', dims: [rows], data: unbiased };
  return outputs;
}

async function start(): Promise<void> {
  // One session at a time: the pool ends this thread on a failure, and ending it while onnxruntime
  // still builds another session aborts the whole process.
  const runs: RateRun[] = [];
  const opened: Session[] = [];
  const open = async (model: string | Uint8Array): Promise<Session> => {
    const session = await Session.create(model, opts);
    opened.push(session);
    return session;
  };
  const opts = { device: init.device, threads: init.threads };
  try {
    for (const [i, spec] of init.rates.entries()) {
      const plain = await cachedSession(init.files[i]!, opts);
      const segments: Session[] = [];
      for (const b of spec.segments) segments.push(await open(b));
      const heads: RateRun['heads'] = [];
      for (const h of spec.heads) heads.push({ session: await open(h.bytes), signature: h.signature, macs: h.macs, state: null });
      runs.push({ plain, segments, heads });
    }
  } catch (e) {
    await releaseCachedSessions();
    for (const s of opened) await s.release();
    port!.postMessage({ kind: 'init-failed', message: e instanceof Error ? e.message : String(e) });
    return;
  }
  const first = runs[0]!.plain;
  port!.postMessage({ kind: 'ready', device: first.device, fallback: first.fallback });
  port!.on('message', async (msg: ExitWorkerRequest) => {
    if (msg.kind === 'close') {
      await releaseCachedSessions();
      for (const r of runs) for (const s of [...r.segments, ...r.heads.map((h) => h.session)]) await s.release();
      port!.postMessage({ kind: 'closed' });
      port!.close();
      return;
    }
    if (msg.kind === 'heads') {
      for (const u of msg.updates) runs[u.rateIndex]!.heads[u.exit]!.state = u;
      return;
    }
    try {
      const feeds = { ...msg.feeds };
      const mode = feeds[MODE_FEED]?.data as Int32Array | undefined;
      delete feeds[MODE_FEED];
      const t0 = performance.now();
      const r = runs[msg.graph]!;
      const outputs = mode && mode.some((m) => m !== 0) ? await runExits(r, init.rates[msg.graph]!, feeds, mode) : await r.plain.run(feeds);
      const serviceMs = performance.now() - t0;
      const { arrays, buffers } = forTransfer(outputs);
      port!.postMessage({ kind: 'done', id: msg.id, outputs: arrays, serviceMs }, buffers);
    } catch (e) {
      port!.postMessage({ kind: 'failed', id: msg.id, message: e instanceof Error ? e.message : String(e) });
    }
  });
}

void start();
