// Output folder handling and the manifest. Artifacts are written into a temporary sibling
// folder and renamed into place, so a failure never leaves a half-written output; an existing
// folder is replaced only when it holds an earlier slicec output (a manifest in our format).

import * as fs from 'node:fs';
import * as path from 'node:path';
import { ErrorCodes, userError } from './diagnostics.js';
import type { NormalizationResult } from './pipeline-types.js';

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
  /** One graph for every rate: the model's inputs plus a float scalar `rateInput`. */
  elastic: { file: string; rateInput: string; opset: number };
  inputs: TensorSignature[];
  outputs: TensorSignature[];
  unions: ManifestUnion[];
  rates: ManifestRate[];
  layers: { layer: string; op: string; channels: number; union: number; sliced: boolean; reason?: string }[];
  /** Every initializer of the full model, its role and how each rate cuts it. */
  parameters: ManifestParameter[];
  training?: ManifestTraining;
}

/** A staging folder next to `outDir`; `commit()` moves it into place. */
export class OutputStage {
  readonly dir: string;
  private readonly outDir: string;

  constructor(outDir: string) {
    this.outDir = path.resolve(outDir);
    checkReplaceable(this.outDir);
    fs.mkdirSync(path.dirname(this.outDir), { recursive: true });
    this.dir = fs.mkdtempSync(path.join(path.dirname(this.outDir), `.${path.basename(this.outDir)}.tmp-`));
  }

  file(relative: string): string {
    const full = path.join(this.dir, relative);
    fs.mkdirSync(path.dirname(full), { recursive: true });
    return full;
  }

  commit(): void {
    let old: string | null = null;
    if (fs.existsSync(this.outDir)) {
      checkReplaceable(this.outDir);
      old = `${this.dir}.old`;
      fs.renameSync(this.outDir, old);
    }
    fs.renameSync(this.dir, this.outDir);
    if (old) fs.rmSync(old, { recursive: true, force: true });
  }

  abandon(): void {
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

function checkReplaceable(outDir: string): void {
  if (!fs.existsSync(outDir)) return;
  const stat = fs.statSync(outDir);
  const manifest = path.join(outDir, 'manifest.json');
  let ours = false;
  if (stat.isDirectory()) {
    if (fs.readdirSync(outDir).length === 0) return;
    try {
      ours = JSON.parse(fs.readFileSync(manifest, 'utf8')).format?.startsWith('slicec/') === true;
    } catch {
      ours = false;
    }
  }
  if (!ours) {
    throw userError(ErrorCodes.BAD_OUTPUT, `output ${outDir} exists and is not a slicec output`, {
      expected: 'a new folder, an empty one, or one written by slicec (with manifest.json)',
      found: stat.isDirectory() ? 'a folder with other files' : 'a file',
      hint: 'choose another folder with -o, or remove it',
    });
  }
}
