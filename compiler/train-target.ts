// What the trainer trains, read from disk: a compiled folder (manifest, plan.json, every rate's
// graph) or a plain model (one rate, 1). It gives the full-size initial tensors, where each
// rate's sub-tensors sit in them (the manifest's parameter map), and a builder of each rate's
// graphs. Train-step graphs are built on demand, in memory, and never written: each holds the
// rate's whole forward plus its backward, and costs well under a second to build.

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Manifest, ParameterRole, TensorSignature } from './artifacts.js';
import { readCompiledManifest } from './compiled-folder.js';
import { ErrorCodes, userError } from './diagnostics.js';
import { tensorToArray } from './grad.js';
import type { Model } from './ir.js';
import { encodeModel, readModel } from './onnx-codec.js';
import { defaultPlan, parsePlan, type Plan } from './plan.js';
import { inferShapes } from './shape-inference.js';
import { DataType, dtypeShortName } from './tensor.js';
import { buildForwardGraph, buildTrainStep } from './train-step.js';
import { verifyModel } from './verifier.js';
import { keptAxisIndices, keptByUnion, keptPositions, unionWidths } from '../runtime/parameters.js';
import type { GraphKind, GraphSpec, RateSpec } from '../runtime/rate-graphs.js';

/** Batch of the BatchNorm statistics graphs (recalibration averages whole batches of this size). */
export const STATS_BATCH = 200;

export interface TrainTarget {
  kind: 'compiled' | 'model';
  /** The folder or the model file. */
  location: string;
  manifest: Manifest | null;
  /** plan.json when the folder has one, else the defaults for the model. */
  plan: Plan;
  planFile: string | null;
  input: TensorSignature;
  outputs: string[];
  /** Rates, descending, each with its graph as read. */
  rates: { rate: number; model: Model; file: string }[];
  roles: Map<string, ParameterRole>;
  /** Full-size float tensors of every parameter and running statistic. */
  full: Map<string, Float32Array>;
  classes: number | undefined;
}

function signatureOf(model: Model): { input: TensorSignature; outputs: string[] } {
  const input = model.graph.inputs.find((v) => !v.const)!;
  return {
    input: { name: input.name, dtype: dtypeShortName[input.elemType ?? 0] ?? 'float32', shape: input.shape ? [...input.shape] : null },
    outputs: model.graph.outputs.map((o) => o.name),
  };
}

function load(file: string): Model {
  const model = readModel(file);
  verifyModel(model, { mode: 'input', source: file });
  inferShapes(model);
  return model;
}

/** Roles of a plain model's initializers, from the ops that read them. */
function modelRoles(model: Model): Map<string, ParameterRole> {
  const roles = new Map<string, ParameterRole>();
  for (const v of model.graph.initializers) {
    if (v.const?.dtype !== DataType.FLOAT) continue;
    const bn = v.uses.find((u) => u.node.op === 'BatchNormalization');
    roles.set(v.name, bn && bn.index >= 3 ? 'running-stat' : bn ? (bn.index === 1 ? 'norm-scale' : 'norm-bias') : 'weight');
  }
  return roles;
}

function fullTensors(model: Model, roles: Map<string, ParameterRole>): Map<string, Float32Array> {
  const full = new Map<string, Float32Array>();
  for (const v of model.graph.initializers) {
    const role = roles.get(v.name);
    if (role && role !== 'fixed') full.set(v.name, Float32Array.from(tensorToArray(v.const!).data as Float32Array));
  }
  return full;
}

function classesOf(model: Model, output: string): number | undefined {
  const o = model.graph.outputs.find((v) => v.name === output);
  const last = o?.shape?.[o.shape.length - 1];
  return o?.shape?.length === 2 && typeof last === 'number' ? last : undefined;
}

export function loadTarget(location: string): TrainTarget {
  if (!fs.existsSync(location)) {
    throw userError(ErrorCodes.FILE_NOT_FOUND, `${location} does not exist`, { expected: 'a folder written by slicec compile, or an .onnx model', found: 'nothing' });
  }
  const manifestFile = path.join(location, 'manifest.json');
  if (!fs.statSync(location).isDirectory()) {
    const model = load(location);
    const { input, outputs } = signatureOf(model);
    const roles = modelRoles(model);
    const plan = defaultPlan({ rates: [1], inputs: [input], outputs: outputs.map((name) => ({ name })), isClassifier: classesOf(model, outputs[0]!) !== undefined, normalization: 'keep', warmupEpochs: 1 }); // plain training often starts from scratch: warm up
    plan.normalization.recalibrate.enabled = false;
    return { kind: 'model', location, manifest: null, plan, planFile: null, input, outputs, rates: [{ rate: 1, model, file: location }], roles, full: fullTensors(model, roles), classes: classesOf(model, outputs[0]!) };
  }
  if (!fs.existsSync(manifestFile)) {
    throw userError(ErrorCodes.BAD_INPUT_FILE, `${location} is a folder but not a slicec output`, {
      expected: 'a folder written by slicec compile (with manifest.json)', found: 'a folder without manifest.json', hint: 'compile the model first: slicec model.onnx --groups 8',
    });
  }
  const manifest = readCompiledManifest(location);
  const rates = [...manifest.rates].sort((a, b) => b.rate - a.rate).map((r) => ({ rate: r.rate, file: path.join(location, r.file), model: load(path.join(location, r.file)) }));
  const outputs = manifest.outputs.map((o) => o.name);
  const planFile = path.join(location, 'plan.json');
  const context = { outputs, rates: manifest.rates.map((r) => r.rate) };
  const isClassifier = classesOf(rates[0]!.model, outputs[0]!) !== undefined;
  const plan = fs.existsSync(planFile)
    ? parsePlan(fs.readFileSync(planFile, 'utf8'), planFile, context)
    : defaultPlan({ rates: context.rates, inputs: manifest.inputs, outputs: manifest.outputs, isClassifier, normalization: manifest.normalization.mode });
  const roles = new Map(manifest.parameters.map((p) => [p.name, p.role]));
  // the rate-1 graph holds every full tensor under its own name; elastic.onnx does too, except the
  // statistics --norm bn stacks per rate, so it is the source only when rate 1 is not compiled
  const widest = rates[0]!.rate === 1 ? rates[0]!.model : readModel(path.join(location, manifest.elastic.file));
  return {
    kind: 'compiled', location, manifest, plan, planFile: fs.existsSync(planFile) ? planFile : null, input: manifest.inputs[0]!, outputs, rates, roles,
    full: fullTensors(widest, roles), classes: classesOf(rates[0]!.model, plan.loss.output),
  };
}

/** Which parameters train under a plan: weights and biases, norm affines when the plan says so. */
export function trainablePredicate(target: TrainTarget, plan: Plan): (name: string) => boolean {
  return (name) => {
    const role = target.roles.get(name);
    if (role === 'weight' || role === 'bias') return true;
    return (role === 'norm-scale' || role === 'norm-bias') && plan.normalization.trainAffine;
  };
}

function positionsAt(target: TrainTarget, rate: number): Map<string, Int32Array | null> {
  const out = new Map<string, Int32Array | null>();
  if (!target.manifest) {
    for (const name of target.full.keys()) out.set(name, null);
    return out;
  }
  const kept = keptByUnion(target.manifest, rate);
  const widths = unionWidths(target.manifest);
  for (const p of target.manifest.parameters) {
    if (!target.full.has(p.name)) continue;
    const { dims, positions } = keptPositions(p, keptAxisIndices(p, kept, widths));
    out.set(p.name, dims.every((d, i) => d === p.dims[i]) ? null : positions);
  }
  return out;
}

/**
 * The trainer's view of every rate: positions and an on-demand graph builder. `statsBatch` is the
 * statistics graphs' batch (STATS_BATCH, or fewer when the training set is smaller).
 */
export function rateSpecs(target: TrainTarget, plan: Plan, statsBatch = STATS_BATCH): RateSpec[] {
  const trainable = trainablePredicate(target, plan);
  const lift = (name: string) => trainable(name) || target.roles.get(name) === 'running-stat';
  const loss = { kind: plan.loss.kind } as const;
  return target.rates.map(({ rate, model }) => ({
    rate,
    positions: positionsAt(target, rate),
    build(kind: GraphKind): GraphSpec | null {
      let built;
      if (kind === 'grad' || kind === 'distill') {
        const distill = kind === 'distill' ? { weight: plan.distillation.weight, temperature: plan.distillation.temperature } : undefined;
        built = buildTrainStep(model, { batch: plan.batchSize, loss: { ...loss, distill }, optimizer: null, output: plan.loss.output, trainable });
      } else if (kind === 'eval') {
        built = buildForwardGraph(model, { lift, output: plan.loss.output });
      } else {
        if (!model.graph.nodes.some((n) => n.op === 'BatchNormalization')) return null;
        built = buildForwardGraph(model, { lift, output: plan.loss.output, mode: 'stats', batch: statsBatch });
      }
      return { bytes: encodeModel(built.model), signature: built.signature };
    },
  }));
}
