// compile(): the recipe, top to bottom. One small stepper wraps each step with its name, timing,
// the verifier after every transform, --print-before/--print-after and errors tagged with the
// step that failed.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { lockOutput } from './folder-lock.js';
import { OutputStage, checkOutput, MANIFEST_FORMAT, type Manifest, type ManifestRate, type TensorSignature } from './artifacts.js';
import { modelCost } from './cost.js';
import { buildParameterMap, type RoleHints } from './parameter-map.js';
import { ErrorCodes, userError, withStep } from './diagnostics.js';
import type { Model, Value } from './ir.js';
import { cloneModel } from './clone.js';
import { encodeModel, readModelFile, writeModel } from './onnx-codec.js';
import { printModel, type PrintSection } from './printer.js';
import { inferShapes } from './shape-inference.js';
import { dtypeShortName } from './tensor.js';
import { verifyModel, verifyShapes } from './verifier.js';
import type { CalibrationSource, CompileOptions, CompileResult, ImportanceResult, LayerExplanation, NormalizationResult, NormMode, RateResult, StepStat } from './pipeline-types.js';
import { coupleChannels, explainLayers, type ChannelAnalysis } from '../passes/couple-channels.js';
import { find } from '../passes/channel-space.js';
import { activeGroups, describePartition, keptWidths, partitionChannels, type Partition } from '../passes/partition-channels.js';
import { reorderChannels } from '../passes/reorder-channels.js';
import { pruneToRate } from '../passes/prune-to-rate.js';
import { applyReplacements, remapAnalysis } from '../passes/remap-analysis.js';
import { upgradeOpset } from '../passes/upgrade-opset.js';
import { mergeAdditions } from '../passes/analysis-additions.js';
import { insertGroupNorm } from '../passes/insert-group-norm.js';
import { ELASTIC_MIN_OPSET, makeElastic } from '../passes/make-elastic.js';
import { makeElasticFast } from '../passes/make-elastic-fast.js';
import { foldBatchNorm } from '../passes/fold-batch-norm.js';
import { foldConstants } from '../passes/fold-constants.js';
import { calibrateGroupNorm } from '../passes/calibrate-group-norm.js';
import { batchNormEntries, calibrateBatchNorm, insertBatchNorm, modelBatchNorms, stackRateStatistics, type BatchNormSite } from '../passes/insert-batch-norm.js';
import { activationImportance } from '../passes/activation-importance.js';
import { openFloatSession, runFloat } from '../runtime/session.js';
import { writeModuleOrNote } from './codegen.js';
import { defaultPlan, formatPlan } from './plan.js';
import { checkCalibrationFiles, DATA_CALIBRATION_SAMPLES, datasetCalibration, loadCalibration, syntheticCalibration, type FloatTensor } from './calibration-data.js';
import { explainExits, manifestExits, writeRateExits, type RateExits } from './exits.js';
import { planExits } from '../passes/add-exits.js';

export { STEPS } from './steps.js';

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
  /** Units of per-rate steps (`step@rate`), for progress. */
  private readonly totals = new Map<string, number>();
  private readonly done = new Map<string, number>();
  constructor(
    private readonly options: CompileOptions,
    private readonly hooks: PipelineHooks,
  ) {}

  private wants(list: string[] | undefined, step: string): boolean {
    if (!list) return false;
    const base = step.split('@')[0]!;
    return list.includes('all') || list.includes(step) || list.includes(base);
  }

  /** Tell progress how many times a per-rate step will run. */
  expect(step: string, total: number): void {
    this.totals.set(step, total);
  }

  private progress(step: string, finished: boolean): void {
    if (!this.options.progress) return;
    const base = step.split('@')[0]!;
    const done = (this.done.get(base) ?? 0) + (finished ? 1 : 0);
    this.done.set(base, done);
    this.options.progress({ step: base, done, total: this.totals.get(base) ?? 1 });
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
    this.progress(step, false);
    if (this.wants(this.options.printBefore, step)) this.log(`// before ${step}\n${printModel(model)}\n`);
  }

  private after<T>(step: string, model: Model, start: number, result: T, opts: StepOptions<T>): T {
    this.stats.push({ step, ms: performance.now() - start, nodes: model.graph.nodes.length });
    this.progress(step, true);
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

/**
 * One rate per graph: rates with the same active groups give the same graph, and so do rates
 * whose extra groups are empty because --groups exceeds the channels of the widest sliced layer
 * (then rates are told apart by the kept widths of every union). Of each such set only the
 * largest rate is compiled (a server picks the smallest compiled rate ≥ the one it wants), and a
 * note says what was merged. When nothing is sliced every rate is kept (and the CLI says so).
 */
export function distinctRates(partition: Partition, rates: number[], explicit: boolean): { rates: number[]; notes: string[] } {
  const widest = Math.max(0, ...partition.unions.map((g) => g.union.fineWidth / g.union.unit));
  const emptyGroups = widest > 0 && widest < partition.groups;
  const classes = new Map<string, number[]>();
  for (const rate of rates) {
    const kept = keptWidths(partition, rate);
    const key = emptyGroups ? partition.unions.map((g) => kept.get(g.union)).join(',') : String(activeGroups(rate, partition.groups));
    classes.set(key, [...(classes.get(key) ?? []), rate]);
  }
  const chosen = [...classes.values()].map((c) => c[c.length - 1]!).sort((a, b) => a - b);
  const notes: string[] = [];
  if (chosen.length === rates.length) return { rates: chosen, notes };
  if (emptyGroups) notes.push(`--groups ${partition.groups} is more than the ${widest} channels of the widest sliced layer: groups past that are empty`);
  if (explicit) {
    for (const c of [...classes.values()].filter((c) => c.length > 1)) {
      notes.push(`rates ${c.join(', ')} give the same graph (${activeGroups(c[c.length - 1]!, partition.groups)} active groups); compiling ${c[c.length - 1]} only`);
    }
  } else {
    const list = chosen.length <= 12 ? `: ${chosen.join(', ')}` : '';
    notes.push(`the ${rates.length} default rates give ${chosen.length} distinct graphs; compiling those${list}`);
  }
  return { rates: chosen, notes };
}

/** Digits that keep every rate file name distinct (3 unless rates differ further down). */
function rateDigits(rates: number[]): number {
  for (let d = 3; d < 12; d++) if (new Set(rates.map((r) => r.toFixed(d))).size === rates.length) return d;
  return 12;
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
const PLAN_FILE = 'plan.json';

function rateFileName(rate: number, digits: number): string {
  return `slices/rate-${rate.toFixed(digits)}.onnx`;
}

export async function compile(options: CompileOptions, hooks: PipelineHooks = {}): Promise<CompileResult> {
  const { outDir } = validateOptions(options);
  // a second run on the same output is refused first: its files are not this run's to judge
  const unlock = lockOutput(outDir, 'compile');
  try {
    return await compileUnlocked(options, hooks);
  } finally {
    unlock();
  }
}

async function compileUnlocked(options: CompileOptions, hooks: PipelineHooks): Promise<CompileResult> {
  const { groups, rates: requested, roundTo, outDir } = validateOptions(options);
  // everything the user gave is checked before any work
  checkOutput(outDir);
  if (options.calibration && options.data) {
    throw userError(ErrorCodes.BAD_FLAG, '--calibration and --data both give the calibration batch', {
      expected: 'one of them', found: `--calibration ${options.calibration} --data ${options.data}`, hint: 'drop one',
    });
  }
  if (options.calibrationSamples !== undefined && !(Number.isSafeInteger(options.calibrationSamples) && options.calibrationSamples >= 1)) {
    throw userError(ErrorCodes.BAD_FLAG, '--calibration-samples must be a whole number of at least 1', { expected: 'an integer ≥ 1', found: String(options.calibrationSamples) });
  }
  if (options.calibration) checkCalibrationFiles(options.calibration);
  const warn = options.warn ?? ((text: string) => void process.stderr.write(`${text}\n`));
  const steps = new Stepper(options, hooks);
  const read = readModelFile(options.model);
  const model = read.model;
  // the hash is taken now so the file's bytes need not stay alive through the compile
  const source = { sha256: crypto.createHash('sha256').update(read.bytes).digest('hex'), bytes: read.bytes.byteLength };
  steps.run('read', model, () => verifyModel(model, { mode: 'input', source: options.model }));
  steps.run('infer-shapes', model, () => {
    inferShapes(model);
    verifyShapes(model, { mode: 'input', source: options.model });
  });
  steps.run('fold-constants', model, () => foldConstants(model), { transform: true });
  // a --data set is loaded (and its errors reported) before the analysis starts
  const calibration = await calibrationInput(model, options);
  // Without --norm, layer norms are looked for (rewrite mode finds them; where there are none the
  // analysis is the one pin mode gives): models with layer norms get group norms, which slice
  // their width; every other model gets switchable BatchNorm, which measured best on the
  // fine-tuning benchmark and costs nothing at inference (bench/README.md, finetune.ts).
  const analysis = steps.run('couple-channels', model, () => coupleChannels(model, { layerNorms: (options.norm ?? 'gn') === 'gn' ? 'rewrite' : 'pin' }), {
    sections: (a) => [{ title: 'channel unions', lines: describeUnions(a) }],
  });
  const norm: NormMode = options.norm ?? (analysis.layerNorms.length > 0 ? 'gn' : 'bn');
  options = { ...options, norm };
  const partition: Partition = steps.run('partition-channels', model, () => partitionChannels(analysis, groups, roundTo), {
    sections: (p) => [{ title: 'groups', lines: describePartition(p) }],
  });
  const { rates, notes } = distinctRates(partition, requested, options.rates !== undefined);
  for (const note of notes) warn(`note: ${note}`);
  const digits = rateDigits(rates);
  steps.expect('prune-to-rate', rates.length);
  const importance: ImportanceResult = { mode: options.importance ?? (calibration.source !== 'synthetic' ? 'activation' : 'weight') };
  await steps.runAsync('reorder-channels', model, async () => {
    // none: the exported order (naive truncation keeps each layer's first channels as they are)
    if (importance.mode === 'none') return { perms: new Map() };
    if (importance.mode === 'weight') return reorderChannels(model.graph, analysis, partition);
    const feeds = calibration.feeds();
    const scores = await activationImportance(model, analysis, partition, feeds, (bytes, f, outputs) => runFloat(bytes, f, outputs));
    Object.assign(importance, { source: calibration.source, batch: Object.values(feeds)[0]?.dims[0] ?? 0, unions: scores.size });
    return reorderChannels(model.graph, analysis, partition, scores);
  }, { transform: true });
  const { result: normalization, hints, batchNorms } = await normalize(model, analysis, partition, options, steps, calibration);
  const parameters = buildParameterMap(model, analysis, hints);
  const exitSpec = options.exits;
  const exitPlan = exitSpec ? steps.run('add-exits', model, () => planExits(model, exitSpec), {
    sections: (p) => [{ title: 'exits', lines: p.candidates.map((c) => `${c.value.name}: ${c.reason}`) }],
  }) : null;
  if (exitPlan?.exits.length === 0) warn('note: --exits found no place for an exit; run with --explain to see why');

  const stage = new OutputStage(outDir);
  try {
    const rateResults: ManifestRate[] = [];
    const rateExits: RateExits[] = [];
    // one function call per rate: the pruned copy is unreachable once it returns (a copy held
    // in the async frame's registers would stay alive through the next rate)
    const writeRate = (rate: number): ManifestRate => {
      const { model: copy, map } = cloneModel(model);
      const kept = keptWidths(partition, rate);
      steps.run(`prune-to-rate@${rate.toFixed(digits)}`, copy, () => pruneToRate(copy, remapAnalysis(analysis, map), kept), { transform: true });
      const cost = modelCost(copy);
      const file = rateFileName(rate, digits);
      writeModel(copy, stage.file(file), { dropValueInfo: true, externalData: false });
      if (exitPlan) rateExits.push(writeRateExits(copy, map, exitPlan, rate, `exits/rate-${rate.toFixed(digits)}`, (f) => stage.file(f)));
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
    for (const rate of rates) {
      await yieldForSignals();
      rateResults.push(writeRate(rate));
    }
    const { model: elastic, map: elasticMap } = cloneModel(model);
    const elasticForm = options.elastic ?? 'fast';
    let elasticAnalysis = remapAnalysis(analysis, elasticMap);
    if (elasticForm === 'lean') {
      // run-time Slice bounds and pads need opset 11: the lean form raises its copy first
      const upgrade = steps.run('upgrade-opset', elastic, () => upgradeOpset(elastic, ELASTIC_MIN_OPSET), {
        transform: true,
        sections: (r) => [{ title: 'upgrade-opset', lines: r.upgraded ? [`from ${r.from} to ${ELASTIC_MIN_OPSET}`, ...r.converted.map((c) => `rewrote ${c}`)] : [`kept opset ${r.from}`] }],
      });
      elasticAnalysis = applyReplacements(elasticAnalysis, upgrade.replaced);
    }
    const elasticInfo = steps.run('make-elastic', elastic, () => {
      if (elasticForm === 'lean') {
        const info = makeElastic(elastic, elasticAnalysis, partition);
        if (batchNorms) normalization.batchNorms = stackRateStatistics(elastic, batchNorms, info.activeGroups, groups);
        return info;
      }
      // the fast form is a new model built from the analysed one; it takes the copy's place
      const statistics = new Set((batchNorms ?? []).flatMap((s) => [s.mean, s.variance]));
      const made = makeElasticFast(model, analysis, partition, rates, { statistics });
      if (batchNorms) {
        normalization.batchNorms = batchNormEntries(batchNorms, (name) => {
          const table = made.tables.get(name);
          if (!table) throw new Error(`make-elastic-fast left the statistic ${name} out of every rate`);
          return table;
        });
      }
      Object.assign(elastic, made.model);
      return made;
    }, { transform: true });
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
      importance,
      elastic: { file: ELASTIC_FILE, form: elasticForm, rateInput: elasticInfo.input, opset: elastic.opset() },
      inputs: model.graph.inputs.filter((v) => !v.const).map(signature),
      outputs: model.graph.outputs.map(signature),
      unions: unionsOf(analysis, partition),
      rates: rateResults,
      layers,
      parameters,
      ...(exitPlan ? { exits: manifestExits(exitPlan, rateExits) } : {}),
    };
    // the fine-tuning plan with defaults for this model; `slicec finetune` reads it, flags override it
    const first = model.graph.outputs[0]?.shape;
    const isClassifier = first?.length === 2 && typeof first[1] === 'number';
    const plan = defaultPlan({ rates: rateResults.map((r) => r.rate), inputs: manifest.inputs, outputs: manifest.outputs, isClassifier, normalization: normalization.mode });
    fs.writeFileSync(stage.file(PLAN_FILE), formatPlan(plan));
    manifest.plan = PLAN_FILE;
    const moduleFiles = options.codegen === false ? [] : await writeModuleOrNote(stage.dir, manifest, warn);
    if (moduleFiles.length > 0) manifest.module = { files: moduleFiles };
    fs.writeFileSync(stage.file('manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
    stage.commit();
    const results: RateResult[] = rateResults.map((r) => ({ rate: r.rate, activeGroups: r.activeGroups, file: r.file, parameters: r.parameters, macs: r.macs }));
    return { outDir: path.resolve(outDir), normalization, importance, elasticFile: path.resolve(outDir, ELASTIC_FILE), manifestFile: path.resolve(outDir, 'manifest.json'), rates: results, layers, ...(exitPlan ? { exits: explainExits(exitPlan) } : {}), stats: steps.stats };
  } catch (e) {
    stage.abandon();
    throw e;
  }
}

interface Normalized {
  result: NormalizationResult;
  hints: RoleHints;
  /** 'bn': every BatchNorm, whose statistics elastic.onnx selects by rate. */
  batchNorms?: BatchNormSite[];
}

interface CalibrationInput {
  source: CalibrationSource;
  feeds: () => Record<string, FloatTensor>;
}

/** The calibration batch: --data examples, a --calibration file, or seeded N(0, 1) inputs. */
async function calibrationInput(model: Model, options: CompileOptions): Promise<CalibrationInput> {
  if (options.data) {
    const feeds = await datasetCalibration(model, options.data, options.calibrationSamples ?? DATA_CALIBRATION_SAMPLES);
    return { source: 'data', feeds: () => feeds };
  }
  const file = options.calibration;
  if (file) return { source: 'file', feeds: () => loadCalibration(file, model) };
  return { source: 'synthetic', feeds: () => syntheticCalibration(model) };
}

async function normalize(model: Model, analysis: ChannelAnalysis, partition: Partition, options: CompileOptions, steps: Stepper, calibration: CalibrationInput): Promise<Normalized> {
  const mode = options.norm ?? 'bn';
  const hints: RoleHints = { fixed: new Set(), normScale: new Set(), normBias: new Set() };
  if (mode === 'keep') {
    // the model's own BatchNorms get statistics per rate, as with bn (nothing is inserted)
    const { sites } = modelBatchNorms(model);
    if (sites.length === 0) return { result: { mode, sites: {}, skipped: [], calibration: null }, hints };
    return { result: { mode, sites: {}, skipped: [], calibration: null, perRateStats: true }, hints, batchNorms: sites };
  }
  if (mode === 'bn') return normalizeBatchNorm(model, analysis, partition, options, steps, hints, calibration);
  if (mode === 'none') {
    const folded = steps.run('fold-batch-norm', model, () => {
      const r = foldBatchNorm(model, analysis);
      mergeAdditions(model.graph, analysis, partition, r.additions);
      return r;
    }, { transform: true });
    return { result: { mode, sites: { folded: folded.folded }, skipped: folded.kept.map((k) => ({ where: k, why: 'BatchNorm kept' })), calibration: null }, hints };
  }
  const before = cloneModel(model).model; // shares the tensors: insert-group-norm replaces, never writes into them
  const inserted = steps.run('insert-group-norm', model, () => {
    const r = insertGroupNorm(model, analysis, partition);
    mergeAdditions(model.graph, analysis, partition, r.additions);
    return r;
  }, {
    transform: true,
    sections: (r) => [
      { title: 'group norms', lines: [
        ...r.sites.map((s) => `${s.kind} ${s.form} on ${s.input.name}: ${s.groups} groups → ${s.output.name}`),
        ...r.skipped.map((s) => `skipped ${s.where}: ${s.why}`),
      ] },
      { title: 'groups', lines: describePartition(partition) },
    ],
  });
  const sites: Record<string, number> = {};
  for (const s of inserted.sites) {
    sites[s.kind] = (sites[s.kind] ?? 0) + 1;
    hints.normScale.add(s.gamma);
    hints.normBias.add(s.beta);
    for (const v of s.fixed) hints.fixed.add(v);
  }
  if (inserted.sites.length === 0 || options.calibrate === false) return { result: { mode, sites, skipped: inserted.skipped, calibration: null }, hints };
  const source = calibration.source;
  const feeds = calibration.feeds();
  const report = await steps.runAsync('calibrate-group-norm', model, () =>
    calibrateGroupNorm(model, before, inserted.sites, feeds, (bytes) => openFloatSession(bytes), source), { transform: true });
  return {
    result: {
      mode,
      sites,
      skipped: inserted.skipped,
      calibration: { source: report.source, batch: report.batch, before: report.before, after: report.after },
    },
    hints,
  };
}

async function normalizeBatchNorm(model: Model, analysis: ChannelAnalysis, partition: Partition, options: CompileOptions, steps: Stepper, hints: RoleHints, calibration: CalibrationInput): Promise<Normalized> {
  const before = encodeModel(model);
  const inserted = steps.run('insert-batch-norm', model, () => {
    const r = insertBatchNorm(model, analysis, partition);
    mergeAdditions(model.graph, analysis, partition, r.additions);
    return r;
  }, {
    transform: true,
    sections: (r) => [{ title: 'batch norms', lines: [
      ...r.sites.map((s) => `${s.kind} ${s.node.label()} on ${s.input.name}`),
      ...r.skipped.map((s) => `skipped ${s.where}: ${s.why}`),
    ] }],
  });
  const sites: Record<string, number> = {};
  for (const s of inserted.sites) sites[s.kind] = (sites[s.kind] ?? 0) + 1;
  const result: NormalizationResult = { mode: 'bn', sites, skipped: inserted.skipped, calibration: null, perRateStats: true };
  if (inserted.sites.some((s) => s.kind === 'inserted') && options.calibrate !== false) {
    const feeds = calibration.feeds();
    const source = calibration.source;
    result.calibration = await steps.runAsync('calibrate-batch-norm', model, () =>
      calibrateBatchNorm(model, before, inserted.sites, feeds, (bytes, f, outputs) => runFloat(bytes, f, outputs), source), { transform: true });
  }
  return { result, hints, batchNorms: inserted.sites };
}

/** Lets SIGINT/SIGTERM handlers run (they remove the output stage) between long synchronous writes. */
function yieldForSignals(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** MACs of the full-width model (the reordered model is the rate-1 graph). */
function inferFullCost(model: Model, rates: ManifestRate[]): number {
  const atOne = rates.find((r) => r.rate === 1);
  return atOne ? atOne.macs : modelCost(model).macs;
}

function unionsOf(analysis: ChannelAnalysis, partition: Partition): Manifest['unions'] {
  const groups = new Map(partition.unions.map((g) => [g.union, g]));
  const seen = new Set<number>();
  const out: Manifest['unions'] = [];
  for (const u of analysis.unions) {
    const root = find(u).root;
    if (seen.has(root.id)) continue;
    seen.add(root.id);
    const g = groups.get(root);
    out.push({
      id: root.id,
      width: root.fineWidth,
      unit: root.unit,
      sliced: !!g,
      ...(g ? { boundaries: g.boundaries } : { reason: root.pinned ?? 'too few channels or no producer' }),
      ...(g?.groupAxis ? { groupAxis: true } : {}),
    });
  }
  return out.sort((a, b) => a.id - b.id);
}
