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

import type { Model, Value } from '../compiler/ir.js';
import { decodeModel, encodeModel } from '../compiler/onnx-codec.js';
import type { FloatTensor } from '../compiler/calibration-data.js';
import { Tensor } from '../compiler/tensor.js';
import type { GroupNormSite } from './insert-group-norm.js';

export type Runner = (model: Uint8Array, feeds: Record<string, FloatTensor>, outputs: string[]) => Promise<Record<string, FloatTensor>>;

export interface Agreement {
  /** ‖original − new‖ / ‖original‖ over all outputs. */
  relativeError: number;
  /** Fraction of samples whose argmax agrees (classifier outputs [N, K], K > 1); null otherwise. */
  top1: number | null;
}

export interface CalibrationReport {
  source: 'file' | 'synthetic';
  batch: number;
  sites: number;
  /** Agreement with γ = 1, β = 0 (or the replaced norm's own affine), before fitting. */
  before: Agreement;
  after: Agreement;
}

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
 * Fit every site's γ/β in `model` (the model after insert-group-norm) against `original` (the
 * bytes of the model before it), on `feeds`.
 */
export async function calibrateGroupNorm(
  model: Model,
  original: Uint8Array,
  sites: GroupNormSite[],
  feeds: Record<string, FloatTensor>,
  run: Runner,
  source: CalibrationReport['source'],
): Promise<CalibrationReport> {
  const outputNames = model.graph.outputs.map((o) => o.name);
  const targets = [...new Set(sites.map((s) => s.targetName))];
  const ref = withOutputs(original, [...outputNames, ...targets]);
  const reference = await run(ref.bytes, feeds, ref.names);
  const referenceOutputs = Object.fromEntries(outputNames.map((n) => [n, reference[n]!]));

  const runModel = async (): Promise<Record<string, FloatTensor>> => {
    const inputs = [...new Set(sites.map((s) => s.input.name))];
    const m = withOutputs(encodeModel(model), [...outputNames, ...inputs]);
    return run(m.bytes, feeds, m.names);
  };

  let current = await runModel();
  const before = agreement(referenceOutputs, Object.fromEntries(outputNames.map((n) => [n, current[n]!])));
  // Greedy, in graph order: each site is fitted on the activations the sites before it (already
  // fitted) produce, so errors do not compound.
  const order = new Map(model.graph.nodes.map((n, i) => [n, i]));
  const sorted = [...sites].sort((a, b) => (order.get(a.output.producer!) ?? 0) - (order.get(b.output.producer!) ?? 0));
  for (let i = 0; i < sorted.length; i++) {
    const site = sorted[i]!;
    if (i > 0) current = await runModel();
    const x = current[site.input.name]!;
    const y = reference[site.targetName]!;
    const z = normalize(x, site);
    const { gamma, beta } = fitAffine(z, y.data, x.dims, site.axis);
    const dims = site.gamma.const!.dims;
    model.graph.setConstant(site.gamma, Tensor.float32([...dims], gamma));
    model.graph.setConstant(site.beta, Tensor.float32([...dims], beta));
  }
  current = await runModel();
  const after = agreement(referenceOutputs, Object.fromEntries(outputNames.map((n) => [n, current[n]!])));
  const batch = Object.values(feeds)[0]?.dims[0] ?? 0;
  return { source, batch, sites: sites.length, before, after };
}
