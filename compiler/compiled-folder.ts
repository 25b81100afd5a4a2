// Reading and rewriting the manifest of a compiled folder for the commands that add to one
// (`codegen`, `report`): a folder that is not a slicec output is a user error that says so, and
// the manifest is replaced through a temporary file and a rename, so no reader sees half of it.

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Manifest } from './artifacts.js';
import { ErrorCodes, userError } from './diagnostics.js';
import { writeFileAtomic } from '../runtime/npz.js';

/** manifest.json of `dir`, checked to be a slicec manifest with rates, layers, inputs and outputs. */
export function readCompiledManifest(dir: string): Manifest {
  const file = path.join(dir, 'manifest.json');
  let manifest: Manifest;
  try {
    manifest = JSON.parse(fs.readFileSync(file, 'utf8')) as Manifest;
  } catch (e) {
    throw userError(ErrorCodes.BAD_INPUT_FILE, `${dir} is not a compiled slicec folder`, {
      expected: 'a folder written by slicec compile (with manifest.json)',
      found: fs.existsSync(file) ? `manifest.json does not parse: ${(e as Error).message}` : 'no manifest.json',
      hint: 'compile the model first: slicec model.onnx --groups 8',
    });
  }
  const complete = typeof manifest?.format === 'string' && manifest.format.startsWith('slicec/') &&
    [manifest.rates, manifest.layers, manifest.inputs, manifest.outputs].every(Array.isArray);
  if (!complete) {
    throw userError(ErrorCodes.BAD_INPUT_FILE, `${file} is not a slicec manifest`, {
      expected: 'format "slicec/1" with rates, layers, inputs and outputs',
      found: `format ${JSON.stringify((manifest as { format?: unknown } | null)?.format)}`,
      hint: 'compile the model again with this slicec',
    });
  }
  return manifest;
}

/** Replaces `file` with `text` through a temporary file and a rename (npz.ts writeFileAtomic). */
export function writeAtomic(file: string, text: string): void {
  writeFileAtomic(file, new TextEncoder().encode(text));
}

export function writeCompiledManifest(dir: string, manifest: Manifest): void {
  writeAtomic(path.join(dir, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
}
