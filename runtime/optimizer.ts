// The trainer's optimizer: one update of full-size parameters from a full-size gradient, the
// sum of the gradients of every rate a batch trained (entries a rate does not keep get that
// rate's zero). Applying it once per batch is exactly "the batch's losses summed, one optimizer
// step": the gradient of a sum is the sum of the gradients, and the update sees it only once.
//
// Conventions are passes/add-optimizer.ts's (PyTorch torch.optim, state starting at zeros):
//  SGD    d = g + wd·w;  v' = μ·v + d;  w' = w − lr·v'  (Nesterov: w' = w − lr·(d + μ·v')).
//  AdamW  m' = β1·m + (1−β1)·g;  v' = β2·v + (1−β2)·g²;
//         w' = w·(1 − lr·wd) − (lr / (1 − β1^t)) · m' / (√v' / √(1 − β2^t) + ε).
// Arithmetic is float64 per element, rounded to float32 on store (PyTorch rounds after every
// operation; the two differ by a few float32 ulps per step). The bias corrections are float64.

import type { Optimizer } from '../compiler/plan.js';

export interface OptimizerState {
  /** Steps taken (t of the last update; 0 before the first). */
  step: number;
  /** Per parameter: momentum (sgd, μ > 0) or adam-m and adam-v. */
  slots: Map<string, Map<string, Float32Array>>;
}

export function slotNames(spec: Optimizer): string[] {
  if (spec.kind === 'adamw') return ['adam-m', 'adam-v'];
  return spec.momentum > 0 ? ['momentum'] : [];
}

export function initialState(spec: Optimizer, params: Map<string, Float32Array>): OptimizerState {
  const slots = new Map<string, Map<string, Float32Array>>();
  for (const [name, w] of params) slots.set(name, new Map(slotNames(spec).map((s) => [s, new Float32Array(w.length)])));
  return { step: 0, slots };
}

/** One update of every parameter in `params` (in place), `grads` by the same names. */
export function applyUpdate(spec: Optimizer, state: OptimizerState, params: Map<string, Float32Array>, grads: Map<string, Float32Array>, lr: number, weightDecay: (name: string) => number): void {
  state.step += 1;
  const t = state.step;
  for (const [name, w] of params) {
    const g = grads.get(name);
    if (!g) throw new Error(`optimizer: no gradient for ${name}`);
    const wd = weightDecay(name);
    const slots = state.slots.get(name)!;
    if (spec.kind === 'sgd') {
      const mu = spec.momentum;
      const v = slots.get('momentum');
      // v is stored (rounded to float32) before w reads it, as PyTorch's in-place ops do
      if (!v) {
        for (let i = 0; i < w.length; i++) w[i] = w[i]! - lr * (g[i]! + wd * w[i]!);
      } else if (spec.nesterov) {
        for (let i = 0; i < w.length; i++) {
          const d = g[i]! + wd * w[i]!;
          v[i] = mu * v[i]! + d;
          w[i] = w[i]! - lr * (d + mu * v[i]!);
        }
      } else {
        for (let i = 0; i < w.length; i++) {
          v[i] = mu * v[i]! + g[i]! + wd * w[i]!;
          w[i] = w[i]! - lr * v[i]!;
        }
      }
    } else {
      const { beta1, beta2, eps } = spec;
      const m = slots.get('adam-m')!;
      const v = slots.get('adam-v')!;
      const stepSize = lr / (1 - beta1 ** t);
      const c2 = Math.sqrt(1 - beta2 ** t);
      const decay = 1 - lr * wd;
      for (let i = 0; i < w.length; i++) {
        const gi = g[i]!;
        m[i] = beta1 * m[i]! + (1 - beta1) * gi;
        v[i] = beta2 * v[i]! + (1 - beta2) * gi * gi;
        w[i] = w[i]! * decay - stepSize * m[i]! / (Math.sqrt(v[i]!) / c2 + eps);
      }
    }
  }
}
