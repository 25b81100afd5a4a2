// Early-exit artifacts: per rate, the rate graph cut into segments at the planned exits and one
// head per exit (passes/add-exits.ts), their MACs, the manifest's `exits` section, the --explain
// rows, and on demand the heads' train-step graphs.
//
// Heads are per rate: in a sliced model the first k channels of a narrow rate are not the first
// k channels of the full model's activation (every layer before the exit is narrower too), so a
// head sliced like the model would see a different input distribution at each rate and could not
// be trained once for all of them. A head is a few thousand parameters; one per rate costs little.
//
// The head train step is the head alone as the model, loss = distillation against the final
// model's softmax (add-loss `distill`, weight 1, temperature T): the backbone is frozen by
// construction, since the graph holds nothing of it, and no labels are read (the graph has no
// labels input).

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ExitMacs, ManifestExit, ManifestExitRate } from './artifacts.js';
import type { CloneMap } from './clone.js';
import { modelCost } from './cost.js';
import type { Model } from './ir.js';
import { readModel, writeModel } from './onnx-codec.js';
import type { ExitExplanation } from './pipeline-types.js';
import { buildTrainStep } from './train-step.js';
import { readManifest, writeManifest } from './train-graphs.js';
import { buildHead, HEAD_BUDGET, splitSegments, type ExitPlan } from '../passes/add-exits.js';
import type { OptimizerSpec } from '../passes/add-optimizer.js';

/** What one rate's exits wrote. */
export interface RateExits {
  rate: number;
  segments: string[];
  segmentMacs: number[];
  heads: { file: string; grid: number | null; hidden: number | null; macs: number }[];
}

function headSeed(exit: number, rate: number): number {
  return (0x5eed0000 + exit * 7919 + Math.round(rate * 1e6)) >>> 0;
}

/**
 * Cut `rateModel` (a clone of the planned model, `map` from the planned model to it) at the
 * planned exits and write its segments and heads under `dir` (relative to the output folder);
 * `file` maps a relative path to where it is staged.
 */
export function writeRateExits(rateModel: Model, map: CloneMap, plan: ExitPlan, rate: number, dir: string, file: (relative: string) => string): RateExits {
  if (plan.exits.length === 0) return { rate, segments: [], segmentMacs: [], heads: [] };
  const cuts = plan.exits.map((e) => {
    const v = map.values.get(e.value);
    if (!v) throw new Error(`exits: ${e.value.name} has no copy in the rate ${rate} graph`);
    return v;
  });
  const segments: string[] = [];
  const segmentMacs: number[] = [];
  splitSegments(rateModel, cuts).forEach((segment, k) => {
    const name = path.posix.join(dir, `segment-${k}.onnx`);
    segmentMacs.push(modelCost(segment).macs);
    writeModel(segment, file(name), { dropValueInfo: true, externalData: false });
    segments.push(name);
  });
  const heads = cuts.map((boundary, k) => {
    const rest = segmentMacs.slice(k + 1).reduce((a, b) => a + b, 0);
    const head = buildHead(rateModel, boundary, plan.classes, HEAD_BUDGET * rest, headSeed(k, rate));
    const name = path.posix.join(dir, `head-${k}.onnx`);
    writeModel(head.model, file(name), { dropValueInfo: true, externalData: false });
    return { file: name, grid: head.grid, hidden: head.hidden, macs: modelCost(head.model).macs };
  });
  return { rate, segments, segmentMacs, heads };
}

function sum(xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0);
}

/** The manifest's `exits`: one entry per exit, its files and MACs per rate. */
export function manifestExits(plan: ExitPlan, rates: RateExits[]): ManifestExit[] {
  return plan.exits.map((exit, k) => {
    const perRate: ManifestExitRate[] = rates.map((r) => {
      const macs: ExitMacs = { segmentsUpTo: sum(r.segmentMacs.slice(0, k + 1)), head: r.heads[k]!.macs, rest: sum(r.segmentMacs.slice(k + 1)) };
      return { rate: r.rate, segments: r.segments.slice(0, k + 1), rest: r.segments.slice(k + 1), head: r.heads[k]!.file, hidden: r.heads[k]!.hidden, grid: r.heads[k]!.grid, macs };
    });
    const widest = perRate[perRate.length - 1]!;
    return { id: k, after: exit.value.name, layer: exit.node.name || exit.value.name, classes: plan.classes, macs: widest.macs, rates: perRate };
  });
}

/** --explain rows: every cut considered. */
export function explainExits(plan: ExitPlan): ExitExplanation[] {
  return plan.candidates.map((c) => ({
    layer: c.node.name || `${c.node.op}(${c.value.name})`,
    value: c.value.name,
    kind: c.kind,
    activation: c.activation,
    macsBefore: c.macsBefore,
    chosen: c.chosen,
    reason: c.reason,
  }));
}

export interface HeadTrainOptions {
  batch: number;
  /** Default plain SGD (no momentum, no weight decay): the runtime's online steps are small. */
  optimizer?: OptimizerSpec;
  /** Distillation temperature (default 1). */
  temperature?: number;
}

/**
 * Write a train-step graph next to every head of a compiled folder (`head-K.train.onnx`) and
 * record each in the manifest (`exits[].rates[].headTrain`). Inputs: the boundary activation,
 * `teacher_probs` (the final model's softmax at the temperature), the head's parameters, lr and
 * step (and optimizer state when the optimizer keeps any).
 */
export function emitHeadTrainSteps(dir: string, opts: HeadTrainOptions): ManifestExit[] {
  const manifest = readManifest(dir);
  const exits = manifest.exits ?? [];
  const optimizer: OptimizerSpec = opts.optimizer ?? { kind: 'sgd', momentum: 0, nesterov: false, weightDecay: 0 };
  const temperature = opts.temperature ?? 1;
  for (const exit of exits) {
    for (const r of exit.rates) {
      const head = readModel(path.join(dir, r.head));
      const step = buildTrainStep(head, { batch: opts.batch, loss: { kind: 'cross-entropy', distill: { weight: 1, temperature } }, optimizer });
      // pure distillation reads no labels: the unread input goes, so the runtime feeds none
      const graph = step.model.graph;
      const unread = new Set(graph.inputs.filter((v) => v.uses.length === 0 && !graph.outputs.includes(v)).map((v) => v.name));
      graph.inputs = graph.inputs.filter((v) => !unread.has(v.name));
      step.signature.inputs = step.signature.inputs.filter((v) => !unread.has(v.name));
      const file = r.head.replace(/\.onnx$/, '.train.onnx');
      const target = path.join(dir, file);
      writeModel(step.model, `${target}.tmp`, { dropValueInfo: true, externalData: false });
      fs.renameSync(`${target}.tmp`, target);
      r.headTrain = { file, signature: step.signature };
    }
  }
  writeManifest(dir, { ...manifest, exits });
  return exits;
}
