// `slicec train-graphs DIR`: write one train-step graph per compiled rate into DIR/train/ and
// record each graph's inputs and outputs, with their roles, in manifest.json (`train`).
//
// compile does not write these by default, and `slicec finetune` builds them in memory when it
// starts: each holds the rate's whole forward plus its backward (about 3× the rate graph's nodes
// and, fed by the trainer, none of its weights), they take well under a second per rate to build,
// and their batch size and optimizer are the plan's, which users change. This command is for
// running training steps elsewhere (another ONNX runtime, a browser) with the same graphs.

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Manifest } from './artifacts.js';
import { writeAtomic } from './compiled-folder.js';
import { ErrorCodes, userError } from './diagnostics.js';
import { readModel, writeModel } from './onnx-codec.js';
import { buildTrainStep, type TrainStepSignature } from './train-step.js';
import type { LossSpec } from '../passes/add-loss.js';
import type { OptimizerSpec } from '../passes/add-optimizer.js';

export interface TrainGraphEntry {
  rate: number;
  file: string;
  signature: TrainStepSignature;
}

export interface ManifestTrain {
  batch: number;
  loss: LossSpec;
  optimizer: OptimizerSpec;
  graphs: TrainGraphEntry[];
}

export function readManifest(dir: string): Manifest {
  const file = path.join(dir, 'manifest.json');
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as Manifest;
  } catch (e) {
    throw userError(ErrorCodes.BAD_INPUT_FILE, `${dir} is not a readable slicec output`, {
      expected: 'a folder written by slicec compile, with manifest.json',
      found: e instanceof Error ? e.message : String(e),
      hint: 'compile the model first: slicec model.onnx --groups 8 -o DIR',
    });
  }
}

/** Write manifest.json through a temporary file and a rename, so a reader never sees half of it. */
export function writeManifest(dir: string, manifest: unknown): void {
  const file = path.join(dir, 'manifest.json');
  writeAtomic(file, `${JSON.stringify(manifest, null, 2)}\n`);
}

export function emitTrainGraphs(dir: string, opts: { batch: number; loss: LossSpec; optimizer: OptimizerSpec; inputShapes?: Record<string, number[]> }): ManifestTrain {
  const manifest = readManifest(dir);
  const trainDir = path.join(dir, 'train');
  fs.mkdirSync(trainDir, { recursive: true });
  const graphs: TrainGraphEntry[] = [];
  // fixed constants (a group norm's averaging matrices, ...) and running statistics are not trained
  const roles = new Map(manifest.parameters.map((p) => [p.name, p.role]));
  const trainable = (name: string): boolean => {
    const role = roles.get(name);
    return role === undefined || role === 'weight' || role === 'bias' || role === 'norm-scale' || role === 'norm-bias';
  };
  for (const rate of manifest.rates) {
    const model = readModel(path.join(dir, rate.file));
    const step = buildTrainStep(model, { batch: opts.batch, loss: opts.loss, optimizer: opts.optimizer, inputShapes: opts.inputShapes, trainable });
    const file = path.posix.join('train', path.basename(rate.file));
    const target = path.join(dir, file);
    writeModel(step.model, `${target}.tmp`, { dropValueInfo: true, externalData: false });
    fs.renameSync(`${target}.tmp`, target);
    graphs.push({ rate: rate.rate, file, signature: step.signature });
  }
  const train: ManifestTrain = { batch: opts.batch, loss: opts.loss, optimizer: opts.optimizer, graphs };
  writeManifest(dir, { ...manifest, train });
  return train;
}
