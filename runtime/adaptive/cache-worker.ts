// The cache trainer's thread: holds the replay buffer, trains every head online with its train
// step (distillation against the final model's softmax; no labels), measures each head on the
// held-back samples, recalibrates its threshold (runtime/cascade.ts calibrateSelective) and
// publishes weights, thresholds and on/off states to the main thread, which passes them to the
// inference workers. A head is on only while, at its threshold, its answers agree with the final
// model at least `target` of the time; otherwise it never answers.
//
// CPU share: after each stretch of work of d ms the thread sleeps d · (1/share − 1) ms, so its
// busy time stays ≤ share of the wall time. It runs in its own thread, so a request never waits
// for it, only for the cores it shares; and while the server has a backlog it pauses (the main
// thread says so), so under load the cores go to requests.

import { parentPort, workerData } from 'node:worker_threads';
import { calibrateSelective } from '../cascade.js';
import { Session, type Device } from '../session.js';
import type { NdArray } from '../ndarray.js';
import { ReplayBuffer, type CacheSample } from './buffer.js';
import type { HeadSpec, HeadState } from './heads.js';
import { saveHeads } from './heads.js';
import { softmaxRows, topRows } from './math.js';

export interface CacheSettings {
  maxBytes: number;
  /** Share of the unbiased samples held back for measuring agreement. */
  heldBackShare: number;
  /** Most of the wall time the trainer may be busy. */
  cpuShare: number;
  /** Agreement a head needs at its threshold to be on. */
  target: number;
  lr: number;
  /** Fewest held-back answers a threshold must rest on. */
  minAnswered: number;
  /** A measurement scores the latest this many held-back samples of a rate (its cost stays bounded as they pile up). */
  measureMax: number;
  /** Train steps per head between two measurements. */
  evalEvery: number;
  checkpointEveryMs: number;
  /** Write checkpoints into the folder (false: keep the heads in memory only). */
  checkpoint: boolean;
}

export interface CacheWorkerInit {
  dir: string;
  rateValues: number[];
  classes: number;
  device: Device;
  settings: CacheSettings;
  rates: { segmentMacs: number[]; heads: HeadSpec[] }[];
  initial: HeadState[];
}

export interface RateEstimate {
  rateIndex: number;
  /** Mean MACs per request with the heads as they are, on the held-back samples. */
  meanMacs: number;
  /** Share of the held-back samples answered by a head that disagrees with the final model. */
  disagreement: number;
  heldBack: number;
}

export interface CacheStats {
  bytes: number;
  maxBytes: number;
  trainSamples: number;
  heldBack: number;
  offered: number;
  steps: number;
  busyMs: number;
  wallMs: number;
}

export type CacheWorkerRequest = { kind: 'samples'; samples: CacheSample[] } | { kind: 'measure' } | { kind: 'pause'; paused: boolean } | { kind: 'close' };
export type CacheWorkerReply =
  | { kind: 'ready' }
  | { kind: 'init-failed'; message: string }
  | { kind: 'state'; heads: HeadState[]; rates: RateEstimate[]; stats: CacheStats }
  /** The buffer and trainer counters alone, every STATS_EVERY_MS (measurements are rarer). */
  | { kind: 'stats'; stats: CacheStats }
  | { kind: 'closed' };

/** How often the trainer reports its counters between measurements, ms. */
export const STATS_EVERY_MS = 250;

const port = parentPort;
if (!port) throw new Error('runtime/adaptive/cache-worker.ts runs only as a worker thread');
const init = workerData as CacheWorkerInit;
const S = init.settings;
const K = init.classes;
const buffer = new ReplayBuffer({ maxBytes: S.maxBytes, heldBackShare: S.heldBackShare });
const started = performance.now();
let busyMs = 0;
let steps = 0;
let closing = false;
let wake: (() => void) | null = null;
/** Waiting for samples (not throttling): a new sample may end the wait early. */
let idle = false;
/** The server has a backlog: no training until it clears. */
let paused = false;
let seed = 0x2545f491;

function random(n: number): number {
  seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
  return Math.floor((seed / 2 ** 32) * n);
}

interface HeadRun {
  spec: CacheWorkerInit['rates'][number]['heads'][number];
  train: Session;
  forward: Session;
  state: HeadState;
  sinceEval: number;
  /** Optimizer state (AdamW moments, SGD momentum) by `parameter/state`, and the update count t. */
  slots: Map<string, Float32Array>;
  t: number;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      wake = null;
      resolve();
    }, ms);
    wake = () => {
      clearTimeout(timer);
      wake = null;
      resolve();
    };
  });
}

function stack(parts: readonly Float32Array[], shape: number[]): NdArray {
  const per = parts[0]!.length;
  const data = new Float32Array(parts.length * per);
  parts.forEach((p, i) => data.set(p, i * per));
  return { dtype: 'float32', dims: [parts.length, ...shape], data };
}

async function trainStep(head: HeadRun, samples: readonly CacheSample[]): Promise<void> {
  const sig = head.spec.train.signature;
  const picks = Array.from({ length: sig.batch }, () => samples[random(samples.length)]!);
  const feeds: Record<string, NdArray> = {};
  for (const input of sig.inputs) {
    if (input.role === 'batch') feeds[input.name] = stack(picks.map((s) => s.activations[head.spec.exit]!), head.spec.inputShape);
    else if (input.role === 'teacher') feeds[input.name] = stack(picks.map((s) => s.teacher), [K]);
    else if (input.role === 'parameter') feeds[input.name] = { dtype: 'float32', dims: input.shape, data: head.state.params[input.parameter!]! };
    else if (input.role === 'lr') feeds[input.name] = { dtype: 'float32', dims: input.shape, data: Float32Array.of(S.lr) };
    else if (input.role === 'step') feeds[input.name] = { dtype: 'float32', dims: input.shape, data: Float32Array.of(head.t + 1) };
    else if (input.role === 'optimizer-state') {
      const key = `${input.parameter}/${input.state}`;
      let slot = head.slots.get(key);
      if (!slot) head.slots.set(key, (slot = new Float32Array(input.shape.reduce((a, b) => a * b, 1))));
      feeds[input.name] = { dtype: 'float32', dims: input.shape, data: slot };
    } else throw new Error(`cache trainer: the head train step reads ${input.name} (${input.role}), which it cannot feed`);
  }
  const out = await head.train.run(feeds);
  const params: Record<string, Float32Array> = { ...head.state.params };
  for (const o of sig.outputs) {
    if (o.role === 'parameter') params[o.parameter!] = Float32Array.from(out[o.name]!.data as Float32Array);
    else if (o.role === 'optimizer-state') head.slots.set(`${o.parameter}/${o.state}`, Float32Array.from(out[o.name]!.data as Float32Array));
  }
  head.t++;
  head.state = { ...head.state, params, steps: head.state.steps + 1 };
  head.sinceEval++;
  steps++;
}

/** Confidence and class of every held-back sample at one head, with its current weights. */
async function scoreHead(head: HeadRun, samples: readonly CacheSample[]): Promise<{ confidence: Float32Array; index: Int32Array }> {
  const confidence = new Float32Array(samples.length);
  const index = new Int32Array(samples.length);
  const sig = head.spec.forward.signature;
  for (let start = 0; start < samples.length; start += 256) {
    const part = samples.slice(start, start + 256);
    const feeds: Record<string, NdArray> = {};
    for (const input of sig.inputs) {
      if (input.role === 'batch') feeds[input.name] = stack(part.map((s) => s.activations[head.spec.exit]!), head.spec.inputShape);
      else feeds[input.name] = { dtype: 'float32', dims: input.shape, data: head.state.params[input.parameter!]! };
    }
    const z = (await head.forward.run(feeds))[sig.outputs[0]!.name]!.data as Float32Array;
    const probs = softmaxRows(z, K);
    const top = topRows(probs, K);
    confidence.set(top.value, start);
    index.set(top.index, start);
  }
  return { confidence, index };
}

/** Measure and recalibrate every head of one rate on its held-back samples. */
async function measureRate(rateIndex: number, heads: HeadRun[]): Promise<RateEstimate> {
  // a copy: samples arriving while the heads are scored must not shift the indices
  const held = buffer.heldBack(rateIndex).slice(-S.measureMax);
  const segmentMacs = init.rates[rateIndex]!.segmentMacs;
  const full = segmentMacs.reduce((a, b) => a + b, 0);
  if (held.length === 0) return { rateIndex, meanMacs: full, disagreement: 0, heldBack: 0 };
  const finalClass = Int32Array.from(held, (s) => topRows(s.teacher, K).index[0]!);
  const scored = await Promise.all(heads.map((h) => scoreHead(h, held)));
  const stages = scored.map((s) => ({ confidence: s.confidence, agree: Array.from(s.index, (c, i): number => (c === finalClass[i] ? 1 : 0)) }));
  const thresholds = calibrateSelective(stages, S.target, S.minAnswered);
  let macs = 0;
  let disagreements = 0;
  for (let i = 0; i < held.length; i++) {
    let spent = 0;
    let answered = false;
    for (let k = 0; k < heads.length && !answered; k++) {
      spent += segmentMacs[k]!;
      if (!Number.isFinite(thresholds[k]!.threshold)) continue;
      spent += heads[k]!.spec.macs;
      if (scored[k]!.confidence[i]! >= thresholds[k]!.threshold) {
        answered = true;
        if (!stages[k]!.agree[i]) disagreements++;
      }
    }
    if (!answered) for (let k = heads.length; k < segmentMacs.length; k++) spent += segmentMacs[k]!;
    macs += spent;
  }
  heads.forEach((h, k) => {
    const t = thresholds[k]!;
    const overall = stages[k]!.agree.reduce((a, b) => a + b, 0) / held.length;
    h.state = { ...h.state, threshold: t.threshold, enabled: Number.isFinite(t.threshold), agreement: t.agreement, coverage: t.answered / held.length, overall, heldBack: held.length };
    h.sinceEval = 0;
  });
  return { rateIndex, meanMacs: macs / held.length, disagreement: disagreements / held.length, heldBack: held.length };
}

function stats(): CacheStats {
  return { bytes: buffer.bytes, maxBytes: buffer.maxBytes, trainSamples: buffer.trainSize, heldBack: buffer.heldBackSize, offered: buffer.offered, steps, busyMs, wallMs: performance.now() - started };
}

async function main(): Promise<void> {
  // One session at a time: the caller ends this thread on a failure, and ending it while
  // onnxruntime still builds another session aborts the whole process.
  const runs: HeadRun[][] = [];
  const opened: Session[] = [];
  const open = async (model: string | Uint8Array): Promise<Session> => {
    const session = await Session.create(model, { device: init.device, threads: 1 });
    opened.push(session);
    return session;
  };
  try {
    for (const [rateIndex, r] of init.rates.entries()) {
      const heads: HeadRun[] = [];
      for (const spec of r.heads) {
        const saved = init.initial.find((h) => h.rateIndex === rateIndex && h.exit === spec.exit);
        const state: HeadState = saved ?? { rateIndex, exit: spec.exit, params: spec.params, threshold: Infinity, enabled: false, agreement: Number.NaN, coverage: 0, overall: Number.NaN, heldBack: 0, steps: 0 };
        // a restored head is measured again before it answers; its optimizer starts afresh (not checkpointed)
        const state0 = { ...state, enabled: false, threshold: Infinity };
        heads.push({ spec, train: await open(spec.train.file), forward: await open(spec.forward.bytes), state: state0, sinceEval: 0, slots: new Map(), t: 0 });
      }
      runs.push(heads);
    }
  } catch (e) {
    for (const s of opened) await s.release();
    port!.postMessage({ kind: 'init-failed', message: e instanceof Error ? e.message : String(e) } satisfies CacheWorkerReply);
    return;
  }
  const estimates: RateEstimate[] = init.rates.map((r, rateIndex) => ({ rateIndex, meanMacs: r.segmentMacs.reduce((a, b) => a + b, 0), disagreement: 0, heldBack: 0 }));
  const publish = (): void => port!.postMessage({ kind: 'state', heads: runs.flat().map((h) => h.state), rates: estimates, stats: stats() } satisfies CacheWorkerReply);
  const checkpoint = (): void => {
    if (S.checkpoint) saveHeads(init.dir, init.rateValues, runs.flat().map((h) => h.state));
  };
  let measureAsked = false;
  port!.on('message', (msg: CacheWorkerRequest) => {
    if (msg.kind === 'samples') {
      for (const s of msg.samples) buffer.add(s);
      // a throttling pause is never cut short by traffic, or the CPU share would not hold
      if (idle) wake?.();
      return;
    }
    if (msg.kind === 'pause') paused = msg.paused;
    else if (msg.kind === 'measure') measureAsked = true;
    else closing = true;
    wake?.();
  });
  port!.postMessage({ kind: 'ready' } satisfies CacheWorkerReply);
  let lastCheckpoint = performance.now();
  let lastStats = performance.now();
  let turn = 0;
  while (!closing) {
    // /metrics reads these: without them the buffer would read empty until the first measurement
    if (performance.now() - lastStats >= STATS_EVERY_MS) {
      port!.postMessage({ kind: 'stats', stats: stats() } satisfies CacheWorkerReply);
      lastStats = performance.now();
    }
    if (paused && !measureAsked) {
      await sleep(50);
      continue;
    }
    const t0 = performance.now();
    let worked = false;
    // one step for every head of the next rate that has a batch of samples
    for (let n = 0; n < runs.length && !worked; n++) {
      const rateIndex = (turn + n) % runs.length;
      const samples = buffer.training(rateIndex);
      const heads = runs[rateIndex]!;
      if (heads.length === 0 || samples.length < heads[0]!.spec.train.signature.batch) continue;
      for (const h of heads) await trainStep(h, samples);
      turn = rateIndex + 1;
      worked = true;
    }
    const due = runs.map((heads, rateIndex) => (heads.length > 0 && (measureAsked || heads[0]!.sinceEval >= S.evalEvery) ? rateIndex : -1)).filter((i) => i >= 0);
    if (due.length > 0) {
      for (const rateIndex of due) estimates[rateIndex] = await measureRate(rateIndex, runs[rateIndex]!);
      measureAsked = false;
      worked = true;
      publish();
    }
    const spent = performance.now() - t0;
    busyMs += spent;
    if (S.checkpoint && performance.now() - lastCheckpoint > S.checkpointEveryMs) {
      checkpoint();
      lastCheckpoint = performance.now();
    }
    idle = !worked;
    if (!worked) await sleep(50);
    else await sleep(Math.max(1, spent * (1 / S.cpuShare - 1)));
    idle = false;
  }
  checkpoint();
  for (const h of runs.flat()) {
    await h.train.release();
    await h.forward.release();
  }
  port!.postMessage({ kind: 'closed' } satisfies CacheWorkerReply);
  port!.close();
}

void main();
