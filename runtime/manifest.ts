// What the runtime reads from a compiled output folder: manifest.json plus the graph files it
// names. Only the fields serving needs are declared here (the compiler's Manifest type may grow);
// `accuracy` per rate is optional and appears once an eval has recorded it.

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { TensorSignature } from '../compiler/artifacts.js';
import { ErrorCodes, userError } from '../compiler/diagnostics.js';
import { dtypeFromShort, type DType } from './ndarray.js';

export interface ServedRate {
  rate: number;
  file: string;
  macs: number;
  accuracy?: number;
}

export interface ServedTensor {
  name: string;
  dtype: DType;
  shape: (number | string | null)[] | null;
}

export interface ServedManifest {
  dir: string;
  /** The source model's file name without `.onnx`. */
  sourceName: string;
  elastic: { file: string; rateInput: string } | null;
  inputs: ServedTensor[];
  outputs: ServedTensor[];
  /** Sorted by rate, ascending. */
  rates: ServedRate[];
}

function unusable(dir: string, found: string): Error {
  return userError(ErrorCodes.BAD_INPUT_FILE, `${dir} is not a usable slicec output folder: ${found}`, {
    expected: 'a folder written by `slicec compile` (manifest.json, slices/*.onnx, elastic.onnx)',
    found,
    hint: 'compile the model first: slicec <model.onnx> --groups <n> -o <dir>',
  });
}

function tensor(dir: string, t: TensorSignature): ServedTensor {
  const dtype = dtypeFromShort(t.dtype);
  if (!dtype) throw unusable(dir, `tensor ${t.name} has dtype ${t.dtype}, which the runtime cannot carry`);
  return { name: t.name, dtype, shape: t.shape };
}

/** Read and check manifest.json of a compiled folder; every graph file it names must exist. */
export function readServedManifest(dir: string): ServedManifest {
  const root = path.resolve(dir);
  const file = path.join(root, 'manifest.json');
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw unusable(root, fs.existsSync(file) ? `manifest.json is not valid JSON (${(e as Error).message})` : 'no manifest.json');
  }
  const m = raw as {
    format?: string;
    source?: { name?: string };
    elastic?: { file?: string; rateInput?: string };
    inputs?: TensorSignature[];
    outputs?: TensorSignature[];
    rates?: { rate?: number; file?: string; macs?: number; accuracy?: number }[];
  };
  if (typeof m.format !== 'string' || !m.format.startsWith('slicec/')) throw unusable(root, `format is ${JSON.stringify(m.format)}`);
  if (!Array.isArray(m.inputs) || !Array.isArray(m.outputs) || !Array.isArray(m.rates) || m.rates.length === 0) {
    throw unusable(root, 'manifest.json lacks inputs, outputs or rates');
  }
  const rates: ServedRate[] = m.rates.map((r) => {
    if (typeof r.rate !== 'number' || typeof r.file !== 'string') throw unusable(root, 'a rate entry lacks rate or file');
    const served: ServedRate = { rate: r.rate, file: path.join(root, r.file), macs: typeof r.macs === 'number' ? r.macs : 0 };
    if (typeof r.accuracy === 'number') served.accuracy = r.accuracy;
    return served;
  });
  rates.sort((a, b) => a.rate - b.rate);
  let elastic: ServedManifest['elastic'] = null;
  if (m.elastic?.file && m.elastic.rateInput) elastic = { file: path.join(root, m.elastic.file), rateInput: m.elastic.rateInput };
  for (const f of [...rates.map((r) => r.file), ...(elastic ? [elastic.file] : [])]) {
    if (!fs.existsSync(f)) throw unusable(root, `${path.relative(root, f)} is missing`);
  }
  // a model name goes into URL paths and Triton folder names: other characters become _
  const sourceName = (m.source?.name ?? path.basename(root)).replace(/\.onnx$/i, '').replace(/\.sliced$/, '').replace(/[^A-Za-z0-9_.-]/g, '_').replace(/^[_.-]+/, '') || 'model';
  return {
    dir: root,
    sourceName,
    elastic,
    inputs: m.inputs.map((t) => tensor(root, t)),
    outputs: m.outputs.map((t) => tensor(root, t)),
    rates,
  };
}

/** Per-rate model name as served and exported: `resnet_r050` for rate 0.5 (three digits of the rate × 100). */
export function rateModelName(name: string, rate: number): string {
  return `${name}_r${String(Math.round(rate * 100)).padStart(3, '0')}`;
}
