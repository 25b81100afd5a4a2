// Writing trained weights back. A compiled folder: every slices/*.onnx gets its rate's part of
// the full weights (gather through the manifest's parameter map) and that rate's own BatchNorm
// statistics, elastic.onnx the full weights and the full rate's statistics, and manifest.json
// each rate's measured accuracy (`rates[i].accuracy`, what the serving policy reads) and a
// `training` section describing the run. Every graph is written beside its file first and renamed
// into place only once all are written, the manifest last: a failed write (a full disk) leaves the
// folder as it was, and a reader never sees a manifest describing weights that are not there yet.
// A plain model (`slicec train -o`): the model itself with its initializers replaced.

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Manifest } from './artifacts.js';
import type { Model } from './ir.js';
import { readModel, writeModel } from './onnx-codec.js';
import type { Plan } from './plan.js';
import { Tensor } from './tensor.js';
import type { TrainTarget } from './train-target.js';
import type { EpochRecord, EvalRow } from '../runtime/checkpoint.js';
import { writeFileAtomic } from '../runtime/npz.js';
import type { TrainerResult } from '../runtime/trainer.js';
import { keptAxisIndices, keptByUnion, keptPositions, unionWidths, gather, scatter } from '../runtime/parameters.js';

export interface TrainingRecord {
  data: string;
  plan: Plan;
  steps: number;
  history: EpochRecord[];
  finishedAt: string;
}

/** Replaces the named initializers of `model` (same dims) with `values`; returns how many. */
function setInitializers(model: Model, values: (name: string) => Float32Array | undefined): number {
  let count = 0;
  for (const v of model.graph.initializers) {
    const data = values(v.name);
    if (!data) continue;
    const dims = [...v.const!.dims];
    if (dims.reduce((a, b) => a * b, 1) !== data.length) throw new Error(`reemit: ${v.name} has ${data.length} values for dims [${dims.join(', ')}]`);
    v.const = Tensor.fromTyped(v.const!.dtype, dims, Float32Array.from(data), v.name);
    count++;
  }
  return count;
}

export function writeTrainedModel(model: Model, file: string, params: Map<string, Float32Array>, stats: Map<string, Float32Array>): string {
  setInitializers(model, (name) => params.get(name) ?? stats.get(name));
  writeModel(model, file, { externalData: false });
  return path.resolve(file);
}

export function writeManifest(dir: string, manifest: Manifest): string {
  const file = path.join(dir, 'manifest.json');
  writeFileAtomic(file, new TextEncoder().encode(`${JSON.stringify(manifest, null, 2)}\n`));
  return file;
}

/** Per-rate accuracy into the manifest's rates (rows by rate). */
export function recordAccuracy(manifest: Manifest, rows: EvalRow[]): void {
  for (const r of manifest.rates) {
    const row = rows.find((x) => Math.abs(x.rate - r.rate) < 1e-9);
    if (!row) continue;
    r.accuracy = row.accuracy;
    r.loss = row.loss;
  }
}

const PER_RATE = '_per_rate';

/**
 * `--norm bn` stacks each BatchNorm statistic in elastic.onnx as `<name>_per_rate`, one row per
 * active group count k, of which the graph keeps the first kept(k) channels. After training, row
 * k holds the statistics of the compiled rate that serves k (the smallest with at least k active
 * groups, as the rate files do), in the positions the parameter map gives that rate.
 */
function refillPerRateStatistics(elastic: Model, manifest: Manifest, result: TrainerResult): void {
  const widths = unionWidths(manifest);
  const byName = new Map(manifest.parameters.map((p) => [p.name, p]));
  const byGroups = [...manifest.rates].sort((a, b) => a.activeGroups - b.activeGroups);
  const widest = byGroups[byGroups.length - 1]!;
  for (const v of elastic.graph.initializers) {
    if (!v.name.endsWith(PER_RATE)) continue;
    const name = v.name.slice(0, -PER_RATE.length);
    const p = byName.get(name);
    const full = result.rateStats.get(widest.rate)?.get(name);
    if (!p || p.role !== 'running-stat' || !full) continue;
    const [rows, channels] = v.const!.dims as [number, number];
    if (channels !== full.length) throw new Error(`reemit: ${v.name} has rows of ${channels}, the statistic ${full.length} values`);
    const table = new Float32Array(rows * channels);
    for (let k = 1; k <= rows; k++) {
      const serving = byGroups.find((r) => r.activeGroups >= k) ?? widest;
      const row = Float32Array.from(full);
      const own = result.rateStats.get(serving.rate)?.get(name);
      if (own) scatter(row, keptPositions(p, keptAxisIndices(p, keptByUnion(manifest, serving.rate), widths)).positions, own);
      table.set(row, (k - 1) * channels);
    }
    v.const = Tensor.fromTyped(v.const!.dtype, [rows, channels], table, v.name);
  }
}

/**
 * Every graph is written beside its file first; only when all are there are they renamed into
 * place, manifest last: a write that fails (a full disk) leaves the folder as it was, not half
 * trained.
 */
export function reemitCompiled(target: TrainTarget, result: TrainerResult, record: TrainingRecord): string[] {
  const pending: [string, string][] = [];
  const beside = (file: string): string => {
    const tmp = `${file}.reemit-${process.pid}.tmp`;
    pending.push([tmp, file]);
    return tmp;
  };
  try {
    const written = writeAllBeside(target, result, record, beside);
    for (const [tmp, file] of pending) fs.renameSync(tmp, file);
    return [...written, writeManifest(target.location, reemittedManifest(target, result, record))];
  } finally {
    for (const [tmp] of pending) fs.rmSync(tmp, { force: true });
  }
}

function writeAllBeside(target: TrainTarget, result: TrainerResult, record: TrainingRecord, beside: (file: string) => string): string[] {
  const manifest = target.manifest!;
  const dir = target.location;
  const widths = unionWidths(manifest);
  const byName = new Map(manifest.parameters.map((p) => [p.name, p]));
  const written: string[] = [];
  for (const { rate, file } of target.rates) {
    const kept = keptByUnion(manifest, rate);
    const stats = result.rateStats.get(rate)!;
    // the graph as compiled (the one in memory may carry shape annotations of the passes)
    const model = readModel(file);
    setInitializers(model, (name) => {
      if (stats.has(name)) return stats.get(name);
      const full = result.params.get(name);
      const p = byName.get(name);
      if (!full || !p) return undefined;
      return gather(full, keptPositions(p, keptAxisIndices(p, kept, widths)).positions);
    });
    writeModel(model, beside(file), { dropValueInfo: true, externalData: false });
    written.push(file);
  }
  const elasticFile = path.join(dir, manifest.elastic.file);
  const elastic = readModel(elasticFile);
  const widest = result.rateStats.get(target.rates[0]!.rate)!;
  setInitializers(elastic, (name) => result.params.get(name) ?? widest.get(name));
  refillPerRateStatistics(elastic, manifest, result);
  writeModel(elastic, beside(elasticFile), { dropValueInfo: true, externalData: false });
  written.push(elasticFile);
  return written;
}

function reemittedManifest(target: TrainTarget, result: TrainerResult, record: TrainingRecord): Manifest {
  const manifest = structuredClone(target.manifest!);
  recordAccuracy(manifest, result.final);
  manifest.training = {
    data: record.data,
    steps: record.steps,
    epochs: record.plan.epochs,
    finishedAt: record.finishedAt,
    plan: record.plan,
    history: record.history,
    final: result.final,
    recalibrated: record.plan.normalization.recalibrate.enabled && target.rates.some((r) => r.model.graph.nodes.some((n) => n.op === 'BatchNormalization')),
  };
  return manifest;
}
