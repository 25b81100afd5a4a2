// The only module that talks to onnxruntime-node: load a model, run it on float feeds, return
// float outputs. Sessions are single-threaded by default so results do not depend on how work
// was split (compile-time uses: calibration, checks).

import * as ort from 'onnxruntime-node';
import type { FloatTensor } from '../compiler/calibration-data.js';

export type { FloatTensor };

export type Feeds = Record<string, FloatTensor>;

export interface RunOptions {
  threads?: number;
}

/** Run a model (bytes or a path) and return the named outputs (all outputs when omitted). */
export async function runFloat(model: Uint8Array | string, feeds: Feeds, outputs?: string[], opts: RunOptions = {}): Promise<Record<string, FloatTensor>> {
  const session = await ort.InferenceSession.create(model as Uint8Array, {
    intraOpNumThreads: opts.threads ?? 1,
    interOpNumThreads: 1,
    logSeverityLevel: 3,
  });
  try {
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const [name, t] of Object.entries(feeds)) ortFeeds[name] = new ort.Tensor('float32', t.data, t.dims);
    const names = outputs ?? [...session.outputNames];
    const result = await session.run(ortFeeds, names);
    const out: Record<string, FloatTensor> = {};
    for (const name of names) {
      const t = result[name]!;
      if (t.type !== 'float32') throw new Error(`output ${name} is ${t.type}, expected float32`);
      out[name] = { dims: [...t.dims], data: t.data as Float32Array };
    }
    return out;
  } finally {
    await session.release();
  }
}

/** A loaded model that runs many times: calibration feeds new values into one session. */
export interface FloatSession {
  run(feeds: Feeds, outputs: string[]): Promise<Record<string, FloatTensor>>;
  release(): Promise<void>;
}

/**
 * Load a model once for several runs. Feeds are wrapped without copying (onnxruntime reads the
 * typed arrays in place), so weights fed as inputs cost no memory beyond their own arrays.
 */
export async function openFloatSession(model: Uint8Array | string, opts: RunOptions = {}): Promise<FloatSession> {
  const session = await ort.InferenceSession.create(model as Uint8Array, {
    intraOpNumThreads: opts.threads ?? 1,
    interOpNumThreads: 1,
    logSeverityLevel: 3,
  });
  return {
    async run(feeds: Feeds, outputs: string[]): Promise<Record<string, FloatTensor>> {
      const ortFeeds: Record<string, ort.Tensor> = {};
      for (const [name, t] of Object.entries(feeds)) ortFeeds[name] = new ort.Tensor('float32', t.data, t.dims);
      const result = await session.run(ortFeeds, outputs);
      const out: Record<string, FloatTensor> = {};
      for (const name of outputs) {
        const t = result[name]!;
        if (t.type !== 'float32') throw new Error(`output ${name} is ${t.type}, expected float32`);
        out[name] = { dims: [...t.dims], data: t.data as Float32Array };
      }
      return out;
    },
    release: () => session.release(),
  };
}
