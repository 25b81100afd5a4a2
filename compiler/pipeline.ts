// compile(): the recipe, top to bottom. One small stepper wraps each step with its name, timing,
// the verifier after every transform, --print-before/--print-after and errors tagged with the
// step that failed.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { OutputStage, MANIFEST_FORMAT, type Manifest, type ManifestRate, type TensorSignature } from './artifacts.js';
import { modelCost } from './cost.js';
import { ErrorCodes, userError, withStep } from './diagnostics.js';
import type { Model, Value } from './ir.js';
import { cloneModel } from './clone.js';
import { readModel, writeModel } from './onnx-codec.js';
import { printModel, type PrintSection } from './printer.js';
import { inferShapes } from './shape-inference.js';
import { dtypeShortName } from './tensor.js';
import { verifyModel } from './verifier.js';
import type { CompileOptions, CompileResult, LayerExplanation, NormalizationResult, RateResult, StepStat } from './pipeline-types.js';
import { coupleChannels, explainLayers, type ChannelAnalysis } from '../passes/couple-channels.js';
import { find } from '../passes/channel-space.js';
import { activeGroups, describePartition, keptWidths, partitionChannels, type Partition } from '../passes/partition-channels.js';
import { reorderChannels } from '../passes/reorder-channels.js';
import { pruneToRate } from '../passes/prune-to-rate.js';
import { remapAnalysis } from '../passes/remap-analysis.js';
import { insertGroupNorm } from '../passes/insert-group-norm.js';
import { makeElastic } from '../passes/make-elastic.js';
import { foldBatchNorm } from '../passes/fold-batch-norm.js';
import { calibrateGroupNorm } from '../passes/calibrate-group-norm.js';
import { openFloatSession } from '../runtime/session.js';
import { loadCalibration, syntheticCalibration } from './calibration-data.js';

export const STEPS = [
  'read', 'infer-shapes', 'couple-channels', 'partition-channels', 'reorder-channels', 'fold-batch-norm', 'insert-group-norm',
  'calibrate-group-norm', 'make-elastic', 'prune-to-rate',
] as const;

export interface StepHook {
  (step: string, model: Model, sections: PrintSection[]): void;
}

export interface PipelineHooks {
  /** Called after every step with the model and the analyses so far (golden tests). */
  afterStep?: StepHook;
}

interface StepOptions<T> {
  transform?: boolean;
  sections?: (result: T) => PrintSection[];
}

class Stepper {
  readonly stats: StepStat[] = [];
  constructor(
    private readonly options: CompileOptions,
    private readonly hooks: PipelineHooks,
  ) {}

  private wants(list: string[] | undefined, step: string): boolean {
    if (!list) return false;
    const base = step.split('@')[0]!;
    return list.includes('all') || list.includes(step) || list.includes(base);
  }

  private log(text: string): void {
    (this.options.log ?? ((t: string) => process.stderr.write(t)))(text);
  }

  run<T>(step: string, model: Model, fn: () => T, opts: StepOptions<T> = {}): T {
    this.before(step, model);
    const start = performance.now();
    let result: T;
    try {
      result = fn();
      if (opts.transform) verifyModel(model, { mode: 'pass', step });
    } catch (e) {
      throw withStep(step, e);
    }
    return this.after(step, model, start, result, opts);
  }

  async runAsync<T>(step: string, model: Model, fn: () => Promise<T>, opts: StepOptions<T> = {}): Promise<T> {
    this.before(step, model);
    const start = performance.now();
    let result: T;
    try {
      result = await fn();
      if (opts.transform) verifyModel(model, { mode: 'pass', step });
    } catch (e) {
      throw withStep(step, e);
    }
    return this.after(step, model, start, result, opts);
  }

  private before(step: string, model: Model): void {
    if (this.wants(this.options.printBefore, step)) this.log(`// before ${step}\n${printModel(model)}\n`);
  }

  private after<T>(step: string, model: Model, start: number, result: T, opts: StepOptions<T>): T {
    this.stats.push({ step, ms: performance.now() - start, nodes: model.graph.nodes.length });
    const sections = opts.sections?.(result) ?? [];
    if (this.wants(this.options.printAfter, step)) this.log(`// after ${step}\n${printModel(model, { sections })}\n`);
    this.hooks.afterStep?.(step, model, sections);
    return result;
  }
}

export function validateOptions(options: CompileOptions): { groups: number; rates: number[]; roundTo: number; outDir: string } {
  const groups = options.groups;
  if (!Number.isInteger(groups) || groups < 1) {
    throw userError(ErrorCodes.BAD_FLAG, '--groups must be a whole number of at least 1', { expected: 'an integer ≥ 1', found: String(groups) });
  }
  const rates = options.rates ?? Array.from({ length: groups }, (_, i) => (i + 1) / groups);
  for (const r of rates) {
    if (!(r > 0 && r <= 1)) {
      throw userError(ErrorCodes.BAD_FLAG, 'every slice rate must be in (0, 1]', { expected: 'rates like 0.25,0.5,1', found: String(r) });
    }
  }
  const roundTo = options.roundTo ?? 1;
  if (!Number.isInteger(roundTo) || roundTo < 1) {
    throw userError(ErrorCodes.BAD_FLAG, '--round-to must be a whole number of at least 1', { expected: 'an integer ≥ 1 (e.g. 8)', found: String(roundTo) });
  }
  const outDir = options.outDir ?? `${options.model.replace(/\.onnx$/i, '')}.sliced`;
  return { groups, rates: [...new Set(rates)].sort((a, b) => a - b), roundTo, outDir };
}

function signature(v: Value): TensorSignature {
  const t = v.tensorType;
  return { name: v.name, dtype: t ? (dtypeShortName[t.elemType] ?? String(t.elemType)) : 'opaque', shape: t?.shape ?? null };
}

export function describeUnions(analysis: ChannelAnalysis): string[] {
  const lines: string[] = [];
  for (const layer of explainLayers(analysis)) {
    const name = layer.node.name || layer.node.outputs[0]?.name || layer.node.op;
    lines.push(`${layer.node.op} ${name}: ${layer.channels} channels, union ${layer.union}, ${layer.sliced ? 'sliced' : `pinned: ${layer.reason}`}`);
  }
  for (const [value, axes] of [...analysis.params].sort((a, b) => (a[0].name < b[0].name ? -1 : 1))) {
    const parts = axes.map((p) => `axis ${p.axis} → ${p.space.map((s) => {
      const r = find(s.union);
      return `u${r.root.id}×${+(s.perFine * r.ratio).toFixed(4)}`;
    }).join('+')}`);
    lines.push(`param ${value.name}: ${parts.join(', ')}`);
  }
  return lines;
}

const ELASTIC_FILE = 'elastic.onnx';

function rateFileName(rate: number): string {
  return `slices/rate-${rate.toFixed(3)}.onnx`;
}

export async function compile(options: CompileOptions, hooks: PipelineHooks = {}): Promise<CompileResult> {
  const { groups, rates, roundTo, outDir } = validateOptions(options);
  const steps = new Stepper(options, hooks);
  const source = digestSource(options.model);

  const model = readModel(options.model);
  steps.run('read', model, () => verifyModel(model, { mode: 'input', source: options.model }));
  steps.run('infer-shapes', model, () => inferShapes(model));
  const norm = options.norm ?? 'gn';
  const analysis = steps.run('couple-channels', model, () => coupleChannels(model, { layerNorms: norm === 'gn' ? 'rewrite' : 'pin' }), {
    sections: (a) => [{ title: 'channel unions', lines: describeUnions(a) }],
  });
  const partition: Partition = steps.run('partition-channels', model, () => partitionChannels(analysis, groups, roundTo), {
    sections: (p) => [{ title: 'groups', lines: describePartition(p) }],
  });
  steps.run('reorder-channels', model, () => reorderChannels(model.graph, analysis, partition), { transform: true });
  const normalization = await normalize(model, analysis, partition, options, steps);

  const stage = new OutputStage(outDir);
  try {
    const rateResults: ManifestRate[] = [];
    // one function call per rate: the pruned copy is unreachable once it returns (a copy held
    // in the async frame's registers would stay alive through the next rate)
    const writeRate = (rate: number): ManifestRate => {
      const { model: copy, map } = cloneModel(model);
      const kept = keptWidths(partition, rate);
      steps.run(`prune-to-rate@${rate.toFixed(3)}`, copy, () => pruneToRate(copy, remapAnalysis(analysis, map), kept), { transform: true });
      const cost = modelCost(copy);
      const file = rateFileName(rate);
      writeModel(copy, stage.file(file), { dropValueInfo: true, externalData: false });
      return {
        rate,
        activeGroups: activeGroups(rate, groups),
        file,
        parameters: cost.parameters,
        macs: cost.macs,
        macRatio: 0,
        slicedUnions: partition.unions.filter((g) => !g.groupAxis && kept.get(g.union)! < g.union.fineWidth).map((g) => g.union.id),
      };
    };
    for (const rate of rates) rateResults.push(writeRate(rate));
    const { model: elastic, map: elasticMap } = cloneModel(model);
    const elasticInfo = steps.run('make-elastic', elastic, () => makeElastic(elastic, remapAnalysis(analysis, elasticMap), partition), { transform: true });
    writeModel(elastic, stage.file(ELASTIC_FILE), { dropValueInfo: true, externalData: false });
    const full = inferFullCost(model, rateResults);
    for (const r of rateResults) r.macRatio = full > 0 ? r.macs / full : 1;

    const layers: LayerExplanation[] = explainLayers(analysis).map((l) => ({
      layer: l.node.name || `${l.node.op}(${l.node.outputs[0]?.name ?? '?'})`,
      op: l.node.op,
      channels: l.channels,
      sliced: l.sliced,
      union: l.union,
      ...(l.reason ? { reason: l.reason } : {}),
    }));
    const manifest: Manifest = {
      format: MANIFEST_FORMAT,
      source: {
        name: path.basename(options.model),
        sha256: source.sha256,
        bytes: source.bytes,
        irVersion: Number(model.irVersion),
        opset: model.opset(),
      },
      groups,
      roundTo,
      normalization,
      elastic: { file: ELASTIC_FILE, rateInput: elasticInfo.input, opset: elastic.opset() },
      inputs: model.graph.inputs.filter((v) => !v.const).map(signature),
      outputs: model.graph.outputs.map(signature),
      unions: unionsOf(analysis, partition),
      rates: rateResults,
      layers,
    };
    fs.writeFileSync(stage.file('manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
    stage.commit();
    const results: RateResult[] = rateResults.map((r) => ({ rate: r.rate, activeGroups: r.activeGroups, file: r.file, parameters: r.parameters, macs: r.macs }));
    return { outDir: path.resolve(outDir), normalization, elasticFile: path.resolve(outDir, ELASTIC_FILE), manifestFile: path.resolve(outDir, 'manifest.json'), rates: results, layers, stats: steps.stats };
  } catch (e) {
    stage.abandon();
    throw e;
  }
}

async function normalize(model: Model, analysis: ChannelAnalysis, partition: Partition, options: CompileOptions, steps: Stepper): Promise<NormalizationResult> {
  const mode = options.norm ?? 'gn';
  if (mode === 'keep') return { mode, sites: {}, skipped: [], calibration: null };
  if (mode === 'none') {
    const folded = steps.run('fold-batch-norm', model, () => foldBatchNorm(model, analysis), { transform: true });
    return { mode, sites: { folded: folded.folded }, skipped: folded.kept.map((k) => ({ where: k, why: 'BatchNorm kept' })), calibration: null };
  }
  const before = cloneModel(model).model; // shares the tensors: insert-group-norm replaces, never writes into them
  const inserted = steps.run('insert-group-norm', model, () => insertGroupNorm(model, analysis, partition), {
    transform: true,
    sections: (r) => [{ title: 'group norms', lines: [
      ...r.sites.map((s) => `${s.kind} ${s.form} on ${s.input.name}: ${s.groups} groups → ${s.output.name}`),
      ...r.skipped.map((s) => `skipped ${s.where}: ${s.why}`),
    ] }],
  });
  const sites: Record<string, number> = {};
  for (const s of inserted.sites) sites[s.kind] = (sites[s.kind] ?? 0) + 1;
  if (inserted.sites.length === 0 || options.calibrate === false) return { mode, sites, skipped: inserted.skipped, calibration: null };
  const source = options.calibration ? 'file' : 'synthetic';
  const feeds = options.calibration ? loadCalibration(options.calibration, model) : syntheticCalibration(model);
  const report = await steps.runAsync('calibrate-group-norm', model, () =>
    calibrateGroupNorm(model, before, inserted.sites, feeds, (bytes) => openFloatSession(bytes), source), { transform: true });
  return {
    mode,
    sites,
    skipped: inserted.skipped,
    calibration: { source: report.source, batch: report.batch, before: report.before, after: report.after },
  };
}

/** SHA-256 and size of the input, read in chunks so no second copy of the model stays alive. */
function digestSource(file: string): { sha256: string; bytes: number } {
  const hash = crypto.createHash('sha256');
  let bytes = 0;
  try {
    const fd = fs.openSync(file, 'r');
    try {
      const chunk = Buffer.allocUnsafe(1 << 20);
      for (let n = 0; (n = fs.readSync(fd, chunk, 0, chunk.length, null)) > 0; bytes += n) hash.update(chunk.subarray(0, n));
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    // readModel reports the problem with its own message
  }
  return { sha256: hash.digest('hex'), bytes };
}

/** MACs of the full-width model (the reordered model is the rate-1 graph). */
function inferFullCost(model: Model, rates: ManifestRate[]): number {
  const atOne = rates.find((r) => r.rate === 1);
  return atOne ? atOne.macs : modelCost(model).macs;
}

function unionsOf(analysis: ChannelAnalysis, partition: Partition): Manifest['unions'] {
  const sliced = new Map(partition.unions.filter((g) => !g.groupAxis).map((g) => [g.union, g.boundaries]));
  const seen = new Set<number>(partition.unions.filter((g) => g.groupAxis).map((g) => g.union.id));
  const out: Manifest['unions'] = [];
  for (const u of analysis.unions) {
    const root = find(u).root;
    if (seen.has(root.id)) continue;
    seen.add(root.id);
    const boundaries = sliced.get(root);
    out.push({
      id: root.id,
      width: root.fineWidth,
      unit: root.unit,
      sliced: !!boundaries,
      ...(boundaries ? { boundaries } : { reason: root.pinned ?? 'too few channels or no producer' }),
    });
  }
  return out.sort((a, b) => a.id - b.id);
}
