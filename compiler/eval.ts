// `slicec eval DIR|MODEL --data SPEC`: per rate, accuracy (or loss) on the data's test split
// (validation, or the training examples when the source has neither), MACs, parameters and the
// median latency of one example, measured on the rate's own inference graph on one thread. For a
// compiled folder the results go into manifest.json (rates[i].accuracy, loss, latencyMs).

import type { Plan } from './plan.js';
import { modelCost } from './cost.js';
import { encodeModel } from './onnx-codec.js';
import { loadData } from './finetune.js';
import { recordAccuracy, writeManifest } from './reemit.js';
import { loadTarget } from './train-target.js';
import { buildForwardGraph } from './train-step.js';
import { evaluateRate } from '../runtime/evaluate.js';
import { GraphSession } from '../runtime/graph-session.js';
import { RateRunner } from '../runtime/rate-graphs.js';
import { materialize } from '../runtime/data.js';

export interface EvalRowOut {
  rate: number;
  accuracy: number | null;
  loss: number;
  macs: number;
  parameters: number;
  latencyMs: number;
}

export interface EvalOptions {
  data: string;
  device?: 'cpu' | 'cuda';
  /** Timed runs per rate for the latency (after 3 warm-up runs). */
  latencyRuns?: number;
  cacheDir?: string;
}

export async function evaluateTarget(location: string, opts: EvalOptions): Promise<{ rows: EvalRowOut[]; split: string; samples: number; manifestFile: string | null }> {
  const target = loadTarget(location);
  const plan: Plan = target.plan;
  const data = await loadData(opts.data, target, plan, opts.cacheDir);
  const [split, name] = data.test ? [data.test, 'test'] : data.val ? [data.val, 'validation'] : [data.train, 'train'];
  const classification = plan.loss.kind === 'cross-entropy';
  const rows: EvalRowOut[] = [];
  const one = materialize(split, [0]).x;
  for (const { rate, model } of target.rates) {
    // the graph as it is on disk: its own weights and (per-rate) statistics, nothing fed
    const graph = buildForwardGraph(model, { lift: () => false, output: plan.loss.output });
    const runner = new RateRunner({ rate, positions: new Map(), build: () => ({ bytes: encodeModel(graph.model), signature: graph.signature }) }, { device: opts.device });
    try {
      const row = await evaluateRate(runner, split, new Map(), new Map(), classification);
      const entry = target.manifest?.rates.find((r) => r.rate === rate);
      const cost = entry ? { macs: entry.macs, parameters: entry.parameters } : modelCost(model);
      rows.push({ rate, accuracy: row.accuracy, loss: row.loss, macs: cost.macs, parameters: cost.parameters, latencyMs: await latency(encodeModel(model), model.graph.inputs.find((v) => !v.const)!.name, one, opts) });
    } finally {
      await runner.release();
    }
  }
  let manifestFile: string | null = null;
  if (target.manifest) {
    const manifest = structuredClone(target.manifest);
    recordAccuracy(manifest, rows.map((r) => ({ rate: r.rate, accuracy: r.accuracy, loss: r.loss, samples: split.x.shape[0]! })));
    for (const r of manifest.rates) r.latencyMs = rows.find((x) => x.rate === r.rate)?.latencyMs;
    manifestFile = writeManifest(location, manifest);
  }
  return { rows, split: name, samples: split.x.shape[0]!, manifestFile };
}

async function latency(bytes: Uint8Array, input: string, x: ReturnType<typeof materialize>['x'], opts: EvalOptions): Promise<number> {
  const session = await GraphSession.create(bytes, { device: opts.device });
  try {
    const times: number[] = [];
    const runs = opts.latencyRuns ?? 30;
    for (let i = 0; i < runs + 3; i++) {
      const t0 = performance.now();
      await session.run({ [input]: x });
      if (i >= 3) times.push(performance.now() - t0);
    }
    times.sort((a, b) => a - b);
    return times[Math.floor(times.length / 2)]!;
  } finally {
    await session.release();
  }
}
