// calibrate-group-norm: data-dependent γ and β for the group norms insert-group-norm added, so
// the full-rate model stays as close as possible to the original before any fine-tuning.
//
// For each site, on a calibration batch: x is the tensor the group norm reads, z its group-
// normalized value (no affine), y what the original model computed at that point (the replaced
// BatchNorm or layer norm output, or x itself where a norm was inserted). Per channel c, γ_c and
// β_c solve the least-squares fit y ≈ γ_c·z + β_c: γ = cov(z, y) / var(z), β = ȳ − γ·z̄. Sites
// are fitted one after another in graph order, each on the activations of the model whose
// earlier sites are already fitted, so the drift earlier sites cause is absorbed by later ones.
// Reported: relative L2 distance of the outputs and top-1 agreement of classifier outputs.
//
// Cost: one onnxruntime session for the reference and one for the model being fitted, however
// many sites there are. In both, the large float weights and every site's γ and β are graph
// inputs fed from the IR's own arrays, so a session copies no weights and the fitted γ/β of one
// site reach the next run without a new session.

import { cloneModel } from '../compiler/clone.js';
import type { Model, Value } from '../compiler/ir.js';
import { decodeModel, encodeModel } from '../compiler/onnx-codec.js';
import type { FloatTensor } from '../compiler/calibration-data.js';
import { DataType, Tensor } from '../compiler/tensor.js';
import type { GroupNormSite } from './insert-group-norm.js';
import type { CalibrationSource } from '../compiler/pipeline-types.js';

/** A loaded model that runs many times (runtime/session.ts provides one). */
export interface CalibrationSession {
  run(feeds: Record<string, FloatTensor>, outputs: string[]): Promise<Record<string, FloatTensor>>;
  release(): Promise<void>;
}

export type SessionOpener = (model: Uint8Array) => Promise<CalibrationSession>;

/** Float initializers of at least this many bytes are fed as inputs rather than stored. */
const FED_MIN_BYTES = 1024;

export interface Agreement {
  /** ‖original − new‖ / ‖original‖ over all outputs. */
  relativeError: number;
  /** Fraction of samples whose argmax agrees (classifier outputs [N, K], K > 1); null otherwise. */
  top1: number | null;
}

export interface CalibrationReport {
  source: CalibrationSource;
  batch: number;
  sites: number;
  /** Agreement with γ = 1, β = 0 (or the replaced norm's own affine), before fitting. */
  before: Agreement;
  after: Agreement;
}

/** A model prepared for repeated runs: its bytes and the initializers fed as inputs. */
interface Runnable {
  bytes: Uint8Array;
  /** Initializers of the source model whose current data each run feeds. */
  fed: Value[];
  names: string[];
}

/**
 * Bytes of a copy of `model` with extra graph outputs (values picked by name) in which `alwaysFed`
 * and every large float initializer are graph inputs instead of stored tensors.
 */
function runnable(model: Model, names: string[], alwaysFed: Value[]): Runnable {
  const { model: copy, map } = cloneModel(model);
  const graph = copy.graph;
  const byName = graph.valuesByName();
  const extra: Value[] = [];
  for (const name of names) {
    const v = byName.get(name);
    if (!v) throw new Error(`calibration: value ${name} is not in the model`);
    if (!graph.outputs.includes(v) && !extra.includes(v)) extra.push(v);
  }
  graph.outputs.push(...extra);
  const must = new Set(alwaysFed);
  const fed: Value[] = [];
  const moved = new Set<Value>();
  for (const v of model.graph.initializers) {
    const t = v.const!;
    if (!must.has(v) && !(t.dtype === DataType.FLOAT && t.byteLength >= FED_MIN_BYTES)) continue;
    if (t.dtype !== DataType.FLOAT) throw new Error(`calibration: ${v.name} is not float32 and cannot be fed`);
    const c = map.values.get(v)!;
    c.const = null;
    c.type = { kind: 'tensor', elemType: DataType.FLOAT, shape: [...t.dims] };
    if (!graph.inputs.includes(c)) graph.inputs.push(c);
    moved.add(c);
    fed.push(v);
  }
  graph.initializers = graph.initializers.filter((c) => !moved.has(c));
  for (const v of must) if (!fed.includes(v)) throw new Error(`calibration: ${v.name} is not an initializer and cannot be fed`);
  return { bytes: encodeModel(copy, { dropValueInfo: true }), fed, names };
}

/** One run of a model on float feeds, for passes that run a model once (BatchNorm statistics, importance). */
export type Runner = (model: Uint8Array, feeds: Record<string, FloatTensor>, outputs: string[]) => Promise<Record<string, FloatTensor>>;

/** Model bytes with extra graph outputs (values picked by name). */
export function withOutputs(bytes: Uint8Array, names: string[]): { bytes: Uint8Array; names: string[] } {
  const model = decodeModel(bytes, null);
  const byName = model.graph.valuesByName();
  const extra: Value[] = [];
  for (const name of names) {
    const v = byName.get(name);
    if (!v) throw new Error(`calibration: value ${name} is not in the model`);
    if (!model.graph.outputs.includes(v)) extra.push(v);
  }
  model.graph.outputs.push(...extra);
  return { bytes: encodeModel(model, { dropValueInfo: true }), names };
}

/** Calibration feeds plus the current data of every fed initializer (views, not copies). */
function feedsWith(feeds: Record<string, FloatTensor>, fed: Value[]): Record<string, FloatTensor> {
  const out = { ...feeds };
  for (const v of fed) out[v.name] = { dims: [...v.const!.dims], data: v.const!.view() as Float32Array };
  return out;
}

/** Group-normalize x (no affine) as the site does. */
function normalize(x: FloatTensor, site: GroupNormSite): Float32Array {
  const { dims, data } = x;
  const channels = dims[site.axis]!;
  const outer = site.axis === 1 ? dims[0]! : data.length / channels;
  const inner = site.axis === 1 ? data.length / (dims[0]! * channels) : 1;
  const out = new Float32Array(data.length);
  const sum = new Float64Array(site.groups);
  const sq = new Float64Array(site.groups);
  const count = new Float64Array(site.groups);
  for (let o = 0; o < outer; o++) {
    sum.fill(0);
    sq.fill(0);
    count.fill(0);
    for (let c = 0; c < channels; c++) {
      const g = site.groupOf[c]!;
      const base = (o * channels + c) * inner;
      for (let i = 0; i < inner; i++) {
        const v = data[base + i]!;
        sum[g]! += v;
        sq[g]! += v * v;
      }
      count[g]! += inner;
    }
    for (let c = 0; c < channels; c++) {
      const g = site.groupOf[c]!;
      const mean = sum[g]! / count[g]!;
      const variance = Math.max(0, sq[g]! / count[g]! - mean * mean);
      const rstd = 1 / Math.sqrt(variance + site.epsilon);
      const base = (o * channels + c) * inner;
      for (let i = 0; i < inner; i++) out[base + i] = (data[base + i]! - mean) * rstd;
    }
  }
  return out;
}

/** Per-channel least-squares fit of y ≈ γ·z + β. */
function fitAffine(z: Float32Array, y: Float32Array, dims: number[], axis: number): { gamma: Float32Array; beta: Float32Array } {
  const channels = dims[axis]!;
  const outer = axis === 1 ? dims[0]! : z.length / channels;
  const inner = axis === 1 ? z.length / (dims[0]! * channels) : 1;
  const gamma = new Float32Array(channels);
  const beta = new Float32Array(channels);
  for (let c = 0; c < channels; c++) {
    let n = 0, sz = 0, sy = 0, szz = 0, szy = 0;
    for (let o = 0; o < outer; o++) {
      const base = (o * channels + c) * inner;
      for (let i = 0; i < inner; i++) {
        const a = z[base + i]!;
        const b = y[base + i]!;
        n++;
        sz += a;
        sy += b;
        szz += a * a;
        szy += a * b;
      }
    }
    const mz = sz / n;
    const my = sy / n;
    const varZ = szz / n - mz * mz;
    const cov = szy / n - mz * my;
    gamma[c] = varZ > 1e-12 ? cov / varZ : 0;
    beta[c] = my - gamma[c]! * mz;
  }
  return { gamma, beta };
}

export function agreement(reference: Record<string, FloatTensor>, actual: Record<string, FloatTensor>): Agreement {
  let diff = 0;
  let norm = 0;
  let agree = 0;
  let samples = 0;
  for (const [name, ref] of Object.entries(reference)) {
    const got = actual[name]!;
    for (let i = 0; i < ref.data.length; i++) {
      diff += (ref.data[i]! - got.data[i]!) ** 2;
      norm += ref.data[i]! ** 2;
    }
    if (ref.dims.length === 2 && ref.dims[1]! > 1) {
      const k = ref.dims[1]!;
      for (let n = 0; n < ref.dims[0]!; n++) {
        samples++;
        if (argmax(ref.data, n * k, k) === argmax(got.data, n * k, k)) agree++;
      }
    }
  }
  return { relativeError: Math.sqrt(diff / (norm || 1)), top1: samples > 0 ? agree / samples : null };
}

function argmax(data: Float32Array, start: number, length: number): number {
  let best = 0;
  for (let i = 1; i < length; i++) if (data[start + i]! > data[start + best]!) best = i;
  return best;
}

/**
 * Fit every site's γ/β in `model` (the model after insert-group-norm) against `original` (a
 * copy of the model before it), on `feeds`.
 */
export async function calibrateGroupNorm(
  model: Model,
  original: Model,
  sites: GroupNormSite[],
  feeds: Record<string, FloatTensor>,
  open: SessionOpener,
  source: CalibrationReport['source'],
): Promise<CalibrationReport> {
  const outputNames = model.graph.outputs.map((o) => o.name);
  const targets = [...new Set(sites.map((s) => s.targetName))];
  const ref = runnable(original, [...outputNames, ...targets], []);
  const referenceSession = await open(ref.bytes);
  let reference: Record<string, FloatTensor>;
  try {
    reference = await referenceSession.run(feedsWith(feeds, ref.fed), ref.names);
  } finally {
    await referenceSession.release();
  }
  const referenceOutputs = Object.fromEntries(outputNames.map((n) => [n, reference[n]!]));

  const inputs = [...new Set(sites.map((s) => s.input.name))];
  const fitted = runnable(model, [...outputNames, ...inputs], sites.flatMap((s) => [s.gamma, s.beta]));
  const session = await open(fitted.bytes);
  try {
    // each run fetches only what is used next (the model computes everything regardless)
    const runModel = (names: string[]): Promise<Record<string, FloatTensor>> => session.run(feedsWith(feeds, fitted.fed), [...new Set(names)]);
    // Greedy, in graph order: each site is fitted on the activations the sites before it (already
    // fitted) produce, so errors do not compound.
    const order = new Map(model.graph.nodes.map((n, i) => [n, i]));
    const sorted = [...sites].sort((a, b) => (order.get(a.output.producer!) ?? 0) - (order.get(b.output.producer!) ?? 0));
    let current = await runModel([...outputNames, ...sorted.slice(0, 1).map((s) => s.input.name)]);
    const before = agreement(referenceOutputs, Object.fromEntries(outputNames.map((n) => [n, current[n]!])));
    for (let i = 0; i < sorted.length; i++) {
      const site = sorted[i]!;
      if (i > 0) current = await runModel([site.input.name]);
      const x = current[site.input.name]!;
      const y = reference[site.targetName]!;
      const z = normalize(x, site);
      const { gamma, beta } = fitAffine(z, y.data, x.dims, site.axis);
      const dims = site.gamma.const!.dims;
      model.graph.setConstant(site.gamma, Tensor.float32([...dims], gamma));
      model.graph.setConstant(site.beta, Tensor.float32([...dims], beta));
    }
    current = await runModel(outputNames);
    const after = agreement(referenceOutputs, Object.fromEntries(outputNames.map((n) => [n, current[n]!])));
    const batch = Object.values(feeds)[0]?.dims[0] ?? 0;
    return { source, batch, sites: sites.length, before, after };
  } finally {
    await session.release();
  }
}
