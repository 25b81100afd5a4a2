// Numerical gradient checks for autodiff in onnxruntime-node, float32.
//
// For a forward graph f with output y, a random cotangent r seeds the backward pass (so the
// loss is ⟨r, f(x)⟩) and, per wrt value, a random direction u compares the directional
// derivative ⟨u, ∇⟩ of the emitted backward graph with the central difference
// ⟨r, (f(x + εu) − f(x − εu)) / 2ε⟩ of the forward graph (shared notes on gradients: testing).
// The scale a mismatch is measured against is Σ|u_i·∇_i| (plus |fd|), so cancellation in the
// sum cannot make a wrong gradient pass or a right one fail.

import * as ort from 'onnxruntime-node';
import { Value, tensorType, type Model } from '../../compiler/ir.js';
import { encodeModel } from '../../compiler/onnx-codec.js';
import { refreshShapes } from '../../compiler/shape-inference.js';
import { DataType } from '../../compiler/tensor.js';
import { verifyModel } from '../../compiler/verifier.js';
import { Rng } from '../../compiler/rng.js';
import { autodiff, type AutodiffResult } from '../../passes/autodiff.js';

export interface Dense {
  dims: number[];
  data: Float32Array;
}

export interface GradcheckOptions {
  /** Names of the graph inputs or initializers to differentiate with respect to. */
  wrt: string[];
  /** Values of float graph inputs; the others are uniform in [-1, 1). */
  feeds?: Record<string, Dense>;
  /** Extra non-float feeds (indices), passed as they are. */
  extraFeeds?: Record<string, ort.Tensor>;
  /** Output to seed (default the first graph output). */
  output?: string;
  eps?: number;
  seed?: number;
  /** One random direction over all wrt values together (one check named `all`). */
  joint?: boolean;
  /** 'gradient': step along the computed gradient itself (scaled to max 1), so ⟨u, ∇⟩ has no
   * cancellation and a gradient off by a factor shows at full size. Default 'random'. */
  direction?: 'random' | 'gradient';
}

export interface GradCheck {
  name: string;
  analytic: number;
  numeric: number;
  /** Σ|u_i·∇_i| + |numeric|: what the difference is measured against. */
  scale: number;
  /** Float32 rounding of the forward outputs seen through the difference quotient:
   * Σ|r_i·f_i|·2⁻²⁴ / 2ε, the noise floor of `numeric`. */
  noise: number;
}

export interface GradcheckResult {
  checks: GradCheck[];
  result: AutodiffResult;
  model: Model;
  /** Nodes of the backward pass, for structural assertions. */
  backwardNodes: Model['graph']['nodes'];
  /** The gradients as computed by the backward graph. */
  gradients: Record<string, Dense>;
}

const SESSION: ort.InferenceSession.SessionOptions = { intraOpNumThreads: 1, interOpNumThreads: 1, logSeverityLevel: 3 };

const numel = (dims: readonly number[]): number => dims.reduce((n, d) => n * d, 1);

function staticDims(v: Value): number[] {
  const shape = v.shape;
  if (!shape || !shape.every((d) => typeof d === 'number')) throw new Error(`gradcheck: ${v.name} has no static shape`);
  return shape as number[];
}

/** Uniform in [-1, 1). */
export function uniform(dims: number[], rng: Rng): Dense {
  return { dims, data: rng.uniform(numel(dims), -1, 1) };
}

/** A shuffled grid of distinct values in (-1, 1), none near 0: keeps kinks and ties (Relu,
 * MaxPool, Abs, Clip) farther than any finite-difference step. */
export function spaced(dims: number[], rng: Rng, span = 1): Dense {
  const n = numel(dims);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = ((i - n / 2 + 0.5) * 2 * span) / n;
  for (let i = n - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [data[i], data[j]] = [data[j]!, data[i]!];
  }
  return { dims, data };
}

function direction(dims: number[], grad: Dense | undefined, kind: 'random' | 'gradient', rng: Rng): Dense {
  const random = uniform(dims, rng);
  if (kind === 'random' || !grad) return random;
  let largest = 0;
  for (const v of grad.data) largest = Math.max(largest, Math.abs(v));
  return largest === 0 ? random : { dims, data: grad.data.map((v) => v / largest) };
}

function toOrt(t: Dense): ort.Tensor {
  return new ort.Tensor('float32', t.data, t.dims);
}

/** Differentiate `model` (changed in place) and compare against central differences. */
export async function gradcheck(model: Model, opts: GradcheckOptions): Promise<GradcheckResult> {
  const graph = model.graph;
  const rng = new Rng(opts.seed ?? 7);
  const eps = opts.eps ?? 1e-3;
  refreshShapes(model);
  const byName = graph.valuesByName();
  const base: Record<string, Dense> = {};
  // wrt initializers become plain graph inputs (onnxruntime ignores feeds for initializers)
  const wrt = opts.wrt.map((name) => {
    const v = byName.get(name);
    if (!v) throw new Error(`gradcheck: no value ${name}`);
    if (v.const) {
      base[name] = { dims: [...v.const.dims], data: v.const.data() as Float32Array };
      v.const = null;
      graph.initializers = graph.initializers.filter((i) => i !== v);
    }
    if (!graph.inputs.includes(v)) graph.inputs.push(v);
    return v;
  });
  const output = opts.output ? byName.get(opts.output)! : graph.outputs[0]!;
  for (const input of graph.inputs) {
    if (input.elemType !== DataType.FLOAT || input.const) continue;
    const given = opts.feeds?.[input.name];
    if (given) base[input.name] = given;
    else base[input.name] ??= uniform(staticDims(input), rng);
  }
  const forwardBytes = encodeModel(model);

  const outDims = staticDims(output);
  const cotangent = new Value(graph.uniqueName('cotangent'), tensorType(DataType.FLOAT, outDims));
  graph.inputs.push(cotangent);
  const forwardNodes = new Set(graph.nodes);
  const result = autodiff(model, { seeds: [{ value: output, grad: cotangent }], wrt });
  verifyModel(model, { mode: 'pass', step: 'autodiff' });
  const gradValues = wrt.map((w) => result.gradients.get(w) ?? null);
  for (const g of gradValues) if (g && !graph.outputs.includes(g)) graph.outputs.push(g);
  const r = uniform(outDims, rng);

  const feedsAt = (shift: Record<string, Dense>, sign: number): Record<string, ort.Tensor> => {
    const feeds: Record<string, ort.Tensor> = { ...opts.extraFeeds };
    for (const [name, t] of Object.entries(base)) {
      const u = shift[name];
      feeds[name] = toOrt(u ? { dims: t.dims, data: t.data.map((v, i) => v + sign * eps * u.data[i]!) } : t);
    }
    return feeds;
  };

  const backward = await ort.InferenceSession.create(encodeModel(model), SESSION);
  const gradients: Record<string, Dense> = {};
  try {
    const names = gradValues.filter((g): g is Value => g !== null).map((g) => g.name);
    const out = await backward.run({ ...feedsAt({}, 0), [cotangent.name]: toOrt(r) }, names);
    wrt.forEach((w, i) => {
      const g = gradValues[i];
      if (g) gradients[w.name] = { dims: [...out[g.name]!.dims], data: out[g.name]!.data as Float32Array };
    });
  } finally {
    await backward.release();
  }

  const forward = await ort.InferenceSession.create(forwardBytes, SESSION);
  const checks: GradCheck[] = [];
  try {
    const groups = opts.joint ? [wrt] : wrt.map((w) => [w]);
    for (const group of groups) {
      const shift: Record<string, Dense> = {};
      for (const w of group) shift[w.name] = direction(base[w.name]!.dims, gradients[w.name], opts.direction ?? 'random', rng);
      const plus = (await forward.run(feedsAt(shift, 1), [output.name]))[output.name]!.data as Float32Array;
      const minus = (await forward.run(feedsAt(shift, -1), [output.name]))[output.name]!.data as Float32Array;
      let numeric = 0;
      let magnitude = 0;
      for (let i = 0; i < plus.length; i++) {
        numeric += (r.data[i]! * (plus[i]! - minus[i]!)) / (2 * eps);
        magnitude += Math.abs(r.data[i]! * plus[i]!);
      }
      let analytic = 0;
      let scale = Math.abs(numeric);
      for (const w of group) {
        const grad = gradients[w.name];
        const u = shift[w.name]!;
        if (!grad) continue;
        for (let i = 0; i < grad.data.length; i++) {
          analytic += u.data[i]! * grad.data[i]!;
          scale += Math.abs(u.data[i]! * grad.data[i]!);
        }
      }
      checks.push({ name: opts.joint ? 'all' : group[0]!.name, analytic, numeric, scale, noise: (magnitude * 2 ** -24) / (2 * eps) });
    }
  } finally {
    await forward.release();
  }
  return { checks, result, model, backwardNodes: graph.nodes.filter((n) => !forwardNodes.has(n)), gradients };
}

/** The checks whose analytic and numeric directional derivatives differ by more than
 * rtol·scale plus `noiseFactor` times the rounding noise floor. */
export function mismatches(checks: GradCheck[], rtol = 1e-3, noiseFactor = 1): string[] {
  return checks
    .filter((c) => !(Math.abs(c.analytic - c.numeric) <= rtol * c.scale + noiseFactor * c.noise + 1e-6))
    .map((c) => `${c.name}: analytic ${c.analytic}, numeric ${c.numeric} (scale ${c.scale}, noise ${c.noise})`);
}
