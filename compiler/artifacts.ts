// Output folder handling and the manifest. Artifacts are written into a temporary sibling
// folder and renamed into place, so a failure never leaves a half-written output; an existing
// folder is replaced only when it holds an earlier slicec output (a manifest in our format) and
// nothing else. The checks run before any work (checkOutput), the stage is made with the user's
// umask (not mkdtemp's 0700), a symlinked -o is written through, and a stage is removed on
// SIGINT/SIGTERM or, when a killed run left it, by the next run (it records its process id).

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ErrorCodes, userError } from './diagnostics.js';
import type { ImportanceResult, NormalizationResult } from './pipeline-types.js';

export const MANIFEST_FORMAT = 'slicec/1';

export interface TensorSignature {
  name: string;
  dtype: string;
  shape: (number | string | null)[] | null;
}

export interface ManifestUnion {
  id: number;
  width: number;
  unit: number;
  sliced: boolean;
  reason?: string;
  boundaries?: number[];
  /** The union counts a group norm's groups, not channels. */
  groupAxis?: boolean;
}

export type ParameterRole = 'weight' | 'bias' | 'norm-scale' | 'norm-bias' | 'running-stat' | 'fixed';

/** One segment of a cut axis: see compiler/parameter-map.ts. */
export interface ParameterSegment {
  union: number;
  offset: number;
  scale: number;
  /** Where each entry of the segment sits on the axis, when segments are not in order (a channel shuffle). */
  positions?: number[];
}

export interface ManifestParameter {
  name: string;
  role: ParameterRole;
  dtype: string;
  /** Dims of the full tensor (the rate-1 graph and elastic.onnx hold it under this name). */
  dims: number[];
  /** Axes the per-rate graphs cut; empty when the tensor is the same at every rate. */
  cuts: { axis: number; segments: ParameterSegment[] }[];
}

export interface ManifestRate {
  rate: number;
  activeGroups: number;
  file: string;
  parameters: number;
  macs: number;
  /** MACs relative to the rate-1 graph. */
  macRatio: number;
  slicedUnions: number[];
  /** Measured by finetune / eval on the data's test (or validation) split: share correct, null for regression. */
  accuracy?: number | null;
  /** Mean loss on that split (cross-entropy or mean squared error). */
  loss?: number;
  /** Median latency of one example (batch 1), ms, as measured by eval. */
  latencyMs?: number;
}

/** The last fine-tuning run (compiler/reemit.ts writes it). */
export interface ManifestTraining {
  data: string;
  steps: number;
  epochs: number;
  finishedAt: string;
  plan: unknown;
  history: { epoch: number; rates: { rate: number; accuracy: number | null; loss: number; samples: number }[] }[];
  final: { rate: number; accuracy: number | null; loss: number; samples: number }[];
  recalibrated: boolean;
}

export interface Manifest {
  format: typeof MANIFEST_FORMAT;
  source: { name: string; sha256: string; bytes: number; irVersion: number; opset: number };
  groups: number;
  roundTo: number;
  normalization: NormalizationResult;
  /** How channels were ordered (weights, or activations on calibration data). */
  importance?: ImportanceResult;
  /** One graph for every rate: the model's inputs plus a float scalar `rateInput`. */
  /** `fast`: an If tree over the per-rate graphs (weights stored once, sliced at load); `lean`: weights cut at run time. */
  elastic: { file: string; form: 'fast' | 'lean'; rateInput: string; opset: number };
  inputs: TensorSignature[];
  outputs: TensorSignature[];
  unions: ManifestUnion[];
  rates: ManifestRate[];
  layers: { layer: string; op: string; channels: number; union: number; sliced: boolean; reason?: string }[];
  /** Every initializer of the full model, its role and how each rate cuts it. */
  parameters: ManifestParameter[];
  /** Train-step graphs written by `slicec train-graphs`, with the role of every input and output. */
  train?: import('./train-graphs.js').ManifestTrain;
  /** The fine-tuning plan compile wrote (format slicec-plan/1, docs/plan.md). */
  plan?: string;
  /** The typed module (`slicec codegen`): model.ts and what is compiled from it. */
  module?: { files: string[] };
  /** The report (`slicec report`): the HTML page and its charts. */
  report?: { files: string[] };
  /** Early exits (`compile --exits`): where the model is cut, per rate its segments and heads. */
  exits?: ManifestExit[];
  training?: ManifestTraining;
}

/** MACs per sample of reaching an exit, of its head, and of the backbone after it. */
export interface ExitMacs {
  segmentsUpTo: number;
  head: number;
  rest: number;
}

export interface ManifestExitRate {
  rate: number;
  /** Segment files to run in order to reach the exit (the first reads the model's inputs). */
  segments: string[];
  /** Segment files from the exit on, the last producing the model's outputs. */
  rest: string[];
  /** Head graph: input named like `after`, output `logits` [N, classes]. */
  head: string;
  /** Hidden width of the head; null for one dense layer. */
  hidden: number | null;
  /** Side of the head's average-pooling grid (1: global pool; null: no pool). Absent in older folders. */
  grid?: number | null;
  macs: ExitMacs;
  /** Head train-step graph (written on demand, see compiler/exits.ts emitHeadTrainSteps). */
  headTrain?: { file: string; signature: import('./train-step.js').TrainStepSignature };
}

export interface ManifestExit {
  id: number;
  /** The activation the model is cut at (a value name, the same in every rate graph). */
  after: string;
  /** The node that produces it. */
  layer: string;
  classes: number;
  /** At the largest compiled rate. */
  macs: ExitMacs;
  rates: ManifestExitRate[];
}

/** File in a stage naming the process that writes it, so a later run can tell a dead stage. */
const STAGE_MARKER = '.slicec-stage';

/** A staging folder next to the output folder; `commit()` moves it into place. */
export class OutputStage {
  readonly dir: string;
  private readonly outDir: string;

  /** Checks `outDir` (see checkOutput), removes stale stages of earlier runs, makes the stage. */
  constructor(outDir: string) {
    this.outDir = checkOutput(outDir);
    const parent = path.dirname(this.outDir);
    removeStaleStages(this.outDir);
    this.dir = path.join(parent, `${stagePrefix(this.outDir)}${crypto.randomBytes(6).toString('hex')}`);
    try {
      fs.mkdirSync(parent, { recursive: true });
      // mode 0777 less the umask: the output is as readable as any other file the user makes
      fs.mkdirSync(this.dir, { mode: 0o777 });
      fs.writeFileSync(path.join(this.dir, STAGE_MARKER), JSON.stringify({ pid: process.pid, host: os.hostname() }));
    } catch (e) {
      throw notWritable(this.outDir, parent, e);
    }
    liveStages.add(this.dir);
    watchSignals();
  }

  file(relative: string): string {
    const full = path.join(this.dir, relative);
    fs.mkdirSync(path.dirname(full), { recursive: true });
    return full;
  }

  commit(): void {
    fs.rmSync(path.join(this.dir, STAGE_MARKER), { force: true });
    let old: string | null = null;
    if (fs.existsSync(this.outDir)) {
      checkReplaceable(this.outDir);
      old = `${this.dir}.old`;
      fs.renameSync(this.outDir, old);
    }
    fs.renameSync(this.dir, this.outDir);
    this.release();
    if (old) fs.rmSync(old, { recursive: true, force: true });
  }

  abandon(): void {
    fs.rmSync(this.dir, { recursive: true, force: true });
    this.release();
  }

  private release(): void {
    liveStages.delete(this.dir);
    if (liveStages.size === 0) unwatchSignals();
  }
}

/**
 * Everything about `-o` that can be known before any work: it is not a file, not a folder of
 * someone else's files, and it and the folder beside it (where the stage goes) can be written.
 * Returns the folder the output will be renamed to (a symlink's target, so the link is kept).
 */
export function checkOutput(outDir: string): string {
  let target = path.resolve(outDir);
  const link = lstatOrNull(target);
  if (link?.isSymbolicLink()) {
    try {
      target = fs.realpathSync(target);
    } catch {
      throw userError(ErrorCodes.BAD_OUTPUT, `output ${outDir} is a symbolic link to a missing folder`, {
        expected: 'a folder, or a link to an existing folder', found: `a link to ${fs.readlinkSync(path.resolve(outDir))}`,
        hint: 'create the folder the link points to, or remove the link',
      });
    }
  }
  const stat = lstatOrNull(target);
  if (stat) {
    checkReplaceable(target);
    try {
      fs.accessSync(target, fs.constants.W_OK);
    } catch (e) {
      throw notWritable(target, target, e);
    }
  }
  // the stage is made beside the output, in its parent (or the nearest folder that exists)
  let probeDir = path.dirname(target);
  for (;;) {
    const st = lstatOrNull(probeDir);
    if (st) {
      if (!st.isDirectory() && !(st.isSymbolicLink() && fs.statSync(probeDir).isDirectory())) {
        throw userError(ErrorCodes.OUTPUT_NOT_WRITABLE, `output ${outDir} would be inside ${probeDir}, which is a file`, {
          expected: 'an output path whose parent folders are folders', found: `${probeDir} is a regular file`, hint: 'choose another folder with -o',
        });
      }
      break;
    }
    probeDir = path.dirname(probeDir);
  }
  try {
    fs.rmdirSync(fs.mkdtempSync(path.join(probeDir, '.slicec-probe-')));
  } catch (e) {
    throw notWritable(target, probeDir, e);
  }
  return target;
}

function lstatOrNull(file: string): fs.Stats | null {
  try {
    return fs.lstatSync(file);
  } catch {
    return null;
  }
}

function notWritable(outDir: string, where: string, e: unknown): Error {
  const err = e as NodeJS.ErrnoException;
  if (!err.code) return err instanceof Error ? err : new Error(String(e));
  const beside = where !== outDir;
  const why: Record<string, string> = {
    EACCES: 'permission denied', EPERM: 'operation not permitted', EROFS: 'a read-only file system',
    ENOENT: 'a folder that cannot hold new files (a virtual file system such as /proc)', ENOTDIR: 'a path through a regular file',
    ENOSPC: 'no space left on the device', EDQUOT: 'the disk quota is used up',
  };
  return userError(ErrorCodes.OUTPUT_NOT_WRITABLE, `cannot write the output ${outDir}: ${where} is not writable`, {
    expected: beside
      ? `a writable folder at ${where} (slicec writes the output beside ${path.basename(outDir)} first, then renames it into place)`
      : 'a writable output folder',
    found: `${why[err.code] ?? err.code} (${err.code})`,
    hint: 'choose a folder you can write with -o',
  });
}

/**
 * The files an earlier slicec output holds, or null when it is not ours: manifest.json and every
 * file its manifest names (elastic graph, rate files, and whatever later fields list), found as
 * string values that are relative file paths inside the folder.
 */
function ourFiles(outDir: string): Set<string> | null {
  let manifest: unknown;
  try {
    manifest = JSON.parse(fs.readFileSync(path.join(outDir, 'manifest.json'), 'utf8'));
  } catch {
    return null;
  }
  const format = (manifest as { format?: unknown } | null)?.format;
  if (typeof format !== 'string' || !format.startsWith('slicec/')) return null;
  const files = new Set(['manifest.json']);
  const visit = (v: unknown): void => {
    if (typeof v === 'string') {
      // file names: an extension, no spaces, inside the folder (layer and op names are not)
      if (/^[^\s]+\.[A-Za-z0-9_]+$/.test(v) && !path.isAbsolute(v) && !v.split(/[\\/]/).includes('..')) files.add(v.split(path.sep).join('/'));
    } else if (Array.isArray(v)) {
      v.forEach(visit);
    } else if (v && typeof v === 'object') {
      Object.values(v).forEach(visit);
    }
  };
  // not `source`: its name is the input model's, which a user may well keep in the folder
  for (const [key, value] of Object.entries(manifest as object)) if (key !== 'source') visit(value);
  return files;
}

/**
 * Folders whose whole content an earlier slicec run wrote: a fine-tune's log and checkpoints, and
 * the exits (segments, heads, their train steps and the server's head checkpoint in exits/cache/).
 */
function ourFolders(outDir: string): string[] {
  try {
    const manifest = JSON.parse(fs.readFileSync(path.join(outDir, 'manifest.json'), 'utf8')) as { training?: unknown; exits?: unknown };
    return [...(manifest.training || stoppedFineTune(outDir) ? ['training/'] : []), ...(manifest.exits ? ['exits/'] : [])];
  } catch {
    return [];
  }
}

/** A fine-tune that was stopped before it finished leaves its checkpoint, and no manifest entry. */
function stoppedFineTune(outDir: string): boolean {
  try {
    const state = JSON.parse(fs.readFileSync(path.join(outDir, 'training', 'checkpoint', 'state.json'), 'utf8')) as { format?: unknown };
    return typeof state.format === 'string' && state.format.startsWith('slicec-checkpoint/');
  } catch {
    return false;
  }
}

/** Temporary files slicec's writers name (temp + rename), left when a run was killed mid-write. */
const OUR_TEMPORARY = /(\.tmp-\d+|\.\d+\.\d+\.tmp|\.reemit-\d+\.tmp|\.onnx\.tmp)$/;

function checkReplaceable(outDir: string): void {
  const stat = fs.statSync(outDir);
  if (stat.isDirectory() && fs.readdirSync(outDir).length === 0) return;
  const ours = stat.isDirectory() ? ourFiles(outDir) : null;
  if (!ours) {
    throw userError(ErrorCodes.BAD_OUTPUT, `output ${outDir} exists and is not a slicec output`, {
      expected: 'a new folder, an empty one, or one written by slicec (with manifest.json)',
      found: stat.isDirectory() ? 'a folder with other files' : 'a file',
      hint: 'choose another folder with -o, or remove it',
    });
  }
  const folders = ourFolders(outDir);
  const foreign = (fs.readdirSync(outDir, { recursive: true, encoding: 'utf8' }) as string[])
    .map((f) => f.split(path.sep).join('/'))
    .filter((f) => !ours.has(f) && !folders.some((d) => f.startsWith(d)) && !OUR_TEMPORARY.test(f) && !fs.statSync(path.join(outDir, f)).isDirectory())
    .sort();
  if (foreign.length > 0) {
    const shown = foreign.slice(0, 5).join(', ') + (foreign.length > 5 ? `, … (${foreign.length} in all)` : '');
    throw userError(ErrorCodes.OUTPUT_HAS_USER_FILES, `output ${outDir} is an earlier slicec output that also holds other files`, {
      expected: 'only the files the earlier compile wrote (they are replaced)',
      found: shown,
      hint: 'move those files out of the folder, or choose another folder with -o',
    });
  }
}

function stagePrefix(outDir: string): string {
  return `.${path.basename(outDir)}.tmp-`;
}

/** Removes stages beside `outDir` left by slicec runs on this host whose process is gone. */
function removeStaleStages(outDir: string): void {
  const parent = path.dirname(outDir);
  let entries: string[];
  try {
    entries = fs.readdirSync(parent);
  } catch {
    return;
  }
  for (const entry of entries) {
    if (!entry.startsWith(stagePrefix(outDir))) continue;
    const dir = path.join(parent, entry);
    try {
      const owner = JSON.parse(fs.readFileSync(path.join(dir, STAGE_MARKER), 'utf8')) as { pid: number; host: string };
      if (owner.host === os.hostname() && !processAlive(owner.pid)) fs.rmSync(dir, { recursive: true, force: true });
    } catch {
      // not a stage of ours (no marker), or it vanished meanwhile
    }
  }
}

/** Whether a process of this host still runs (EPERM: it does, as another user). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

// ---------------------------------------------------------------- signals

const liveStages = new Set<string>();
const SIGNALS = ['SIGINT', 'SIGTERM'] as const;

function onSignal(signal: NodeJS.Signals): void {
  for (const dir of liveStages) fs.rmSync(dir, { recursive: true, force: true });
  liveStages.clear();
  unwatchSignals();
  // die of the signal, as without a handler (exit status 128 + signal number)
  process.kill(process.pid, signal);
}

function watchSignals(): void {
  for (const s of SIGNALS) if (!process.listeners(s).includes(onSignal)) process.on(s, onSignal);
}

function unwatchSignals(): void {
  for (const s of SIGNALS) process.off(s, onSignal);
}
