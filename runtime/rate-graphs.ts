// What the trainer knows about one compiled rate: how to get its graphs (built by the compiler
// on demand, handed over as bytes and a signature), where its sub-tensors sit in the full ones,
// and the sessions it runs. Feeding a graph means gathering each lifted parameter from the
// full-size weights the trainer holds and the rate's own BatchNorm statistics.

import type { TrainStepSignature } from '../compiler/train-step.js';
import { GraphSession, WEIGHTS_AS_INPUTS, type GraphSessionOptions } from './graph-session.js';
import type { NdArray } from './npz.js';
import { gather } from './parameters.js';

export interface GraphSpec {
  bytes: Uint8Array;
  signature: TrainStepSignature;
}

/** grad: loss against labels, gradients out; distill: the same with the teacher term; eval: logits; stats: BatchNorm batch statistics. */
export type GraphKind = 'grad' | 'distill' | 'eval' | 'stats';

export interface RateSpec {
  rate: number;
  /** Flat positions in the full tensor of each parameter this rate holds; null: all of it. */
  positions: Map<string, Int32Array | null>;
  /** Builds a graph of this rate (null: the rate has none of that kind, e.g. no BatchNorm for stats). */
  build(kind: GraphKind): GraphSpec | null;
}

export class RateRunner {
  private readonly sessions = new Map<GraphKind, { session: GraphSession; signature: TrainStepSignature } | null>();
  /** Seconds spent building graphs and creating sessions (once per kind). */
  setupSeconds = 0;

  constructor(readonly spec: RateSpec, private readonly opts: GraphSessionOptions) {}

  get rate(): number {
    return this.spec.rate;
  }

  async session(kind: GraphKind): Promise<{ session: GraphSession; signature: TrainStepSignature } | null> {
    if (!this.sessions.has(kind)) {
      const t0 = performance.now();
      const g = this.spec.build(kind);
      this.sessions.set(kind, g ? { session: await GraphSession.create(g.bytes, { ...WEIGHTS_AS_INPUTS, ...this.opts }), signature: g.signature } : null);
      this.setupSeconds += (performance.now() - t0) / 1000;
    }
    return this.sessions.get(kind)!;
  }

  /** This rate's part of a full-size tensor. */
  part(name: string, full: Float32Array): Float32Array {
    const positions = this.spec.positions.get(name);
    if (positions === undefined) throw new Error(`rate ${this.rate} has no parameter ${name}`);
    return positions ? gather(full, positions) : full;
  }

  /** Feeds for a graph: the batch arrays by role, parameters gathered, the rate's statistics. */
  feeds(signature: TrainStepSignature, byRole: Partial<Record<'batch' | 'labels' | 'teacher', NdArray>>, params: Map<string, Float32Array>, stats: Map<string, Float32Array>): Map<string, NdArray> {
    const feeds = new Map<string, NdArray>();
    for (const input of signature.inputs) {
      if (input.role === 'parameter' || input.role === 'running-stat') {
        const full = params.get(input.parameter!);
        const data = full ? this.part(input.parameter!, full) : stats.get(input.parameter!);
        if (!data) throw new Error(`rate ${this.rate}: nothing to feed ${input.name}`);
        feeds.set(input.name, { dtype: 'float32', dims: input.shape, data });
      } else if (input.role === 'batch' || input.role === 'labels' || input.role === 'teacher') {
        const a = byRole[input.role];
        if (!a) throw new Error(`rate ${this.rate}: no ${input.role} for ${input.name}`);
        feeds.set(input.name, a);
      } else {
        throw new Error(`rate ${this.rate}: the trainer does not feed ${input.name} (${input.role})`);
      }
    }
    return feeds;
  }

  async release(): Promise<void> {
    for (const s of this.sessions.values()) if (s) await s.session.release();
    this.sessions.clear();
  }
}
