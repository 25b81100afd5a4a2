// A session over one graph that takes and returns NdArrays of any dtype (runtime/ndarray.ts):
// what training, gradients and evaluation run on. One thread by default so numbers do not depend
// on how work was split.

import * as ort from 'onnxruntime-node';
import { isDType, type NdArray } from './ndarray.js';
import { createOnDevice, warnCudaFallback, type Device } from './session.js';

// The runtime's dtype names are onnxruntime's tensor type names.
function toOrt(a: NdArray): ort.Tensor {
  return new ort.Tensor(a.dtype, a.data as never, a.dims);
}

function fromOrt(name: string, t: ort.Tensor): NdArray {
  if (!isDType(t.type)) throw new Error(`output ${name} has type ${t.type}, which slicec does not read`);
  return { dtype: t.type, dims: [...t.dims], data: t.data as NdArray['data'] };
}

export interface GraphSessionOptions {
  threads?: number;
  device?: 'cpu' | 'cuda';
  /**
   * onnxruntime's graph optimization level (default 'all'). Graphs that take their weights as
   * inputs (train steps, the trainer's eval and statistics graphs) run at 'extended': 'all' adds
   * the NCHWc layout, which needs constant weights to pay off; without them it only reorders
   * activations around the pools (1–5 % of a train step at the widest rate, within ±3 % at the
   * narrow ones; bench/train-step.ts prints both).
   */
  optimizationLevel?: 'all' | 'extended';
}

/** The options for a graph that takes its weights as inputs (see optimizationLevel). */
export const WEIGHTS_AS_INPUTS: GraphSessionOptions = { optimizationLevel: 'extended' };

export class GraphSession {
  private constructor(
    private readonly session: ort.InferenceSession,
    /** Where it runs: CPU when CUDA was asked for but cannot be used (said once on stderr). */
    readonly device: Device,
  ) {}

  static async create(model: Uint8Array | string, opts: GraphSessionOptions = {}): Promise<GraphSession> {
    const base: ort.InferenceSession.SessionOptions = {
      intraOpNumThreads: opts.threads ?? 1,
      interOpNumThreads: 1,
      logSeverityLevel: 3,
      graphOptimizationLevel: opts.optimizationLevel ?? 'all',
    };
    const { session, device, fallback } = await createOnDevice(model, base, opts.device);
    warnCudaFallback(fallback);
    return new GraphSession(session, device);
  }

  get inputNames(): readonly string[] {
    return this.session.inputNames;
  }

  get outputNames(): readonly string[] {
    return this.session.outputNames;
  }

  async run(feeds: Record<string, NdArray> | Map<string, NdArray>, outputs?: string[]): Promise<Map<string, NdArray>> {
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const [name, a] of feeds instanceof Map ? feeds : Object.entries(feeds)) ortFeeds[name] = toOrt(a);
    const names = outputs ?? [...this.session.outputNames];
    const result = await this.session.run(ortFeeds, names);
    return new Map(names.map((n) => [n, fromOrt(n, result[n]!)]));
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}
