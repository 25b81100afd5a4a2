// What serving with exits needs from a compiled folder, prepared once at load on the main thread:
// per rate, the rate graph cut into segments at the manifest's exits, each head as a graph with
// its weights lifted to inputs (so the weights the cache trainer updates are fed per run, with no
// model rewritten), the head's starting weights, its train-step graph and the MACs of every piece;
// and the heads' checkpoint in the folder (exits/cache/heads.json, written atomically).
//
// Segments are cut here from the served rate graph, not read from exits/: a fine-tune re-emits
// the rate graphs, and a chain of segments must equal the graph it stands for. Cutting is the
// compiler's (passes/add-exits.ts splitSegments), which is why this file, unlike the rest of the
// runtime, reads models through the compiler.

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ManifestExit } from '../../compiler/artifacts.js';
import { ErrorCodes, userError } from '../../compiler/diagnostics.js';
import { emitHeadTrainSteps } from '../../compiler/exits.js';
import { encodeModel, readModel } from '../../compiler/onnx-codec.js';
import type { TrainStepSignature } from '../../compiler/train-step.js';
import { buildForwardGraph } from '../../compiler/train-step.js';
import { refreshShapes } from '../../compiler/shape-inference.js';
import { splitSegments } from '../../passes/add-exits.js';
import type { ServedManifest } from '../manifest.js';

/**
 * Rows of a head train step, when the folder has none written yet: at these sizes a step's cost
 * is mostly per-run overhead, so wider batches get more out of the trainer's CPU share.
 */
export const HEAD_TRAIN_BATCH = 64;
/**
 * The optimizer of head train steps written at load: AdamW. A head reads pooled features of
 * small magnitude, on which plain SGD needs thousands of steps (measured on the Fashion-MNIST
 * exit: top-1 agreement 0.42 after 500 SGD steps at lr 0.05, see docs/runtime.md).
 */
export const HEAD_OPTIMIZER = { kind: 'adamw', beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 } as const;

export interface HeadSpec {
  exit: number;
  /** Per-sample shape of the activation the head reads. */
  inputShape: number[];
  /** The head with its weights as inputs (role `parameter`), output logits. */
  forward: { bytes: Uint8Array; signature: TrainStepSignature };
  /** The train step (distillation against teacher_probs): file and signature. */
  train: { file: string; signature: TrainStepSignature };
  /** Starting weights, by parameter name. */
  params: Record<string, Float32Array>;
  macs: number;
}

export interface RateExitSpec {
  rateIndex: number;
  rate: number;
  /** Segment graphs in order; segment k ends at exit k, the last at the model's output. */
  segments: Uint8Array[];
  /** Input and output names of each segment. */
  segmentIo: { input: string; output: string }[];
  segmentMacs: number[];
  heads: HeadSpec[];
}

export interface ExitsSpec {
  dir: string;
  classes: number;
  output: string;
  rates: RateExitSpec[];
}

function notServable(dir: string, found: string, hint: string): Error {
  return userError(ErrorCodes.BAD_INPUT_FILE, `${dir}: early exits cannot be served: ${found}`, { expected: 'a folder compiled with --exits, one classifier output [N, classes]', found, hint });
}

function readExits(dir: string): ManifestExit[] {
  const raw = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as { exits?: ManifestExit[] };
  return raw.exits ?? [];
}

/** Everything exits need, for every rate of the served manifest. Writes head train steps when the folder has none. */
export function loadExitsSpec(manifest: ServedManifest): ExitsSpec {
  const dir = manifest.dir;
  let exits = readExits(dir);
  if (exits.length === 0) throw notServable(dir, 'the manifest records no exits', 'compile with --exits auto (or name layers), or serve without exits');
  if (manifest.inputs.length !== 1 || manifest.outputs.length !== 1 || manifest.inputs[0]!.dtype !== 'float32') {
    throw notServable(dir, `${manifest.inputs.length} inputs and ${manifest.outputs.length} outputs`, 'exits serve models with one float32 input and one output');
  }
  if (exits.some((e) => e.rates.some((r) => !r.headTrain))) exits = emitHeadTrainSteps(dir, { batch: HEAD_TRAIN_BATCH, optimizer: HEAD_OPTIMIZER });
  const output = manifest.outputs[0]!.name;
  const rates = manifest.rates.map((served, rateIndex): RateExitSpec => {
    const model = readModel(served.file);
    // the file keeps no value_info: the cut activations need their types again
    refreshShapes(model);
    const byName = new Map(model.graph.nodes.flatMap((n) => n.outputs).map((v) => [v.name, v]));
    const cuts = exits.map((e) => {
      const v = byName.get(e.after);
      if (!v) throw notServable(dir, `${path.basename(served.file)} has no value ${e.after}`, 'recompile with --exits');
      return v;
    });
    const segments = splitSegments(model, cuts);
    const perRate = exits.map((e) => {
      const r = e.rates.find((x) => Math.abs(x.rate - served.rate) < 1e-9);
      if (!r) throw notServable(dir, `exit ${e.id} has no head for rate ${served.rate}`, 'recompile with --exits');
      return r;
    });
    const upTo = perRate.map((r) => r.macs.segmentsUpTo);
    const segmentMacs = [...upTo.map((m, k) => m - (k > 0 ? upTo[k - 1]! : 0)), perRate[perRate.length - 1]!.macs.rest];
    const heads = perRate.map((r, k): HeadSpec => {
      const head = readModel(path.join(dir, r.head));
      const forward = buildForwardGraph(head, { lift: () => true });
      const params: Record<string, Float32Array> = {};
      for (const v of head.graph.initializers) params[v.name] = Float32Array.from(v.const!.numbers());
      const input = head.graph.inputs.find((v) => !v.const)!;
      return {
        exit: k,
        inputShape: (input.shape ?? []).slice(1).map((d) => (typeof d === 'number' ? d : 1)),
        forward: { bytes: encodeModel(forward.model), signature: forward.signature },
        train: { file: path.join(dir, r.headTrain!.file), signature: r.headTrain!.signature },
        params,
        macs: r.macs.head,
      };
    });
    const segmentIo = segments.map((s, k) => ({ input: k === 0 ? manifest.inputs[0]!.name : exits[k - 1]!.after, output: k < exits.length ? exits[k]!.after : s.graph.outputs[0]!.name }));
    return { rateIndex, rate: served.rate, segments: segments.map((s) => encodeModel(s)), segmentIo, segmentMacs, heads };
  });
  return { dir, classes: exits[0]!.classes, output, rates };
}

/** A head's state as the trainer publishes it and the checkpoint keeps it. */
export interface HeadState {
  rateIndex: number;
  exit: number;
  params: Record<string, Float32Array>;
  threshold: number;
  enabled: boolean;
  /** Agreement with the final model on the held-back samples it answers at its threshold (NaN: none). */
  agreement: number;
  /** Share of the held-back samples that reach it and that it answers. */
  coverage: number;
  /** Top-1 agreement with the final model on every held-back sample (what training raises). */
  overall: number;
  heldBack: number;
  steps: number;
}

export const CHECKPOINT_FILE = path.join('exits', 'cache', 'heads.json');

interface CheckpointJson {
  format: 'slicec-heads/1';
  heads: (Omit<HeadState, 'params' | 'threshold' | 'agreement' | 'overall'> & { rate: number; threshold: number | null; agreement: number | null; overall: number | null; params: Record<string, string> })[];
}

function toBase64(a: Float32Array): string {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');
}

function fromBase64(s: string): Float32Array {
  const bytes = Buffer.from(s, 'base64');
  const out = new Float32Array(bytes.length / 4);
  new Uint8Array(out.buffer).set(bytes);
  return out;
}

/** Write every head's state into the folder: a temporary file renamed over the old one. */
export function saveHeads(dir: string, rates: number[], heads: HeadState[]): void {
  const file = path.join(dir, CHECKPOINT_FILE);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const json: CheckpointJson = {
    format: 'slicec-heads/1',
    heads: heads.map((h) => ({
      rateIndex: h.rateIndex,
      rate: rates[h.rateIndex]!,
      exit: h.exit,
      enabled: h.enabled,
      threshold: Number.isFinite(h.threshold) ? h.threshold : null,
      agreement: Number.isFinite(h.agreement) ? h.agreement : null,
      overall: Number.isFinite(h.overall) ? h.overall : null,
      coverage: h.coverage,
      heldBack: h.heldBack,
      steps: h.steps,
      params: Object.fromEntries(Object.entries(h.params).map(([k, v]) => [k, toBase64(v)])),
    })),
  };
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(json));
  fs.renameSync(tmp, file);
}

/**
 * The checkpointed heads that still fit the spec (same rates, exits and parameter sizes), or
 * null when there is no checkpoint. A head whose weights do not fit is left out (it restarts).
 */
export function loadHeads(spec: ExitsSpec, rates: number[]): HeadState[] | null {
  const file = path.join(spec.dir, CHECKPOINT_FILE);
  if (!fs.existsSync(file)) return null;
  let json: CheckpointJson;
  try {
    json = JSON.parse(fs.readFileSync(file, 'utf8')) as CheckpointJson;
  } catch {
    return null;
  }
  if (json.format !== 'slicec-heads/1') return null;
  const out: HeadState[] = [];
  for (const h of json.heads) {
    const rateIndex = rates.findIndex((r) => Math.abs(r - h.rate) < 1e-9);
    const head = spec.rates[rateIndex]?.heads[h.exit];
    if (!head) continue;
    const params = Object.fromEntries(Object.entries(h.params).map(([k, v]) => [k, fromBase64(v)]));
    const fits = Object.entries(head.params).every(([k, v]) => params[k]?.length === v.length);
    if (!fits) continue;
    out.push({ ...h, rateIndex, params, threshold: h.threshold ?? Infinity, agreement: h.agreement ?? Number.NaN, overall: h.overall ?? Number.NaN });
  }
  return out;
}
