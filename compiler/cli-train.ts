// Training commands of the CLI: `grad`, `finetune` (a compiled folder), `train` (a plain model,
// the same machinery at rate 1) and `eval` (per-rate accuracy, cost and latency).
// Registered on the main program by compiler/cli.ts; errors propagate to its exit-code mapping.

import type { Command } from 'commander';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readCompiledManifest } from './compiled-folder.js';
import { ErrorCodes, userError } from './diagnostics.js';
import { readModel } from './onnx-codec.js';
import { inferShapes } from './shape-inference.js';
import { verifyModel } from './verifier.js';
import { readNpz, writeNpz, type NdArray } from '../runtime/npz.js';
import { addTrainFlags, parseResize, planOverrides, RESIZE_HELP, type Resize, type TrainFlags } from './cli-train-flags.js';

export interface TrainCliIO {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  /** Set the exit code of a command that ends without an error (an interrupted run: 130). */
  exitCode?: (code: number) => void;
}

/** 128 + SIGINT, what shells report for a run stopped by Ctrl-C. */
const EXIT_INTERRUPTED = 130;

function json(io: TrainCliIO, value: unknown): void {
  io.stdout(`${JSON.stringify(value, null, 2)}\n`);
}

/** A model file, or a compiled folder and one of its rates (default 1). */
export function resolveModelFile(target: string, rate: number | undefined): string {
  const manifestFile = path.join(target, 'manifest.json');
  if (fs.existsSync(target) && fs.statSync(target).isDirectory()) {
    if (!fs.existsSync(manifestFile)) {
      throw userError(ErrorCodes.BAD_INPUT_FILE, `${target} is a folder but not a slicec output`, {
        expected: 'an .onnx model or a folder written by slicec compile (with manifest.json)',
        found: 'a folder without manifest.json',
        hint: 'compile the model first: slicec model.onnx --groups 8',
      });
    }
    const manifest = readCompiledManifest(target);
    const want = rate ?? 1;
    const entry = manifest.rates.find((r) => Math.abs(r.rate - want) < 1e-9);
    if (!entry) {
      throw userError(ErrorCodes.BAD_FLAG, `rate ${want} is not compiled in ${target}`, {
        expected: `one of ${manifest.rates.map((r) => r.rate).join(', ')}`,
        found: String(want),
        hint: 'pick a compiled rate with --rate, or recompile with --rates',
      });
    }
    return path.join(target, entry.file);
  }
  if (rate !== undefined) {
    throw userError(ErrorCodes.BAD_FLAG, '--rate needs a compiled folder', {
      expected: 'a folder written by slicec compile', found: target, hint: 'drop --rate for a plain model',
    });
  }
  return target;
}

function parseRate(value: string): number {
  const r = Number(value);
  if (!(r > 0 && r <= 1)) {
    throw userError(ErrorCodes.BAD_FLAG, `--rate expects a slice rate in (0, 1], got "${value}"`, { expected: 'a rate in (0, 1], e.g. 0.5', found: `"${value}"` });
  }
  return r;
}

function batchArrays(file: string): { x: NdArray; y: NdArray } {
  const arrays = readNpz(file);
  const x = arrays.get('x');
  const y = arrays.get('y');
  if (!x || !y) {
    throw userError(ErrorCodes.BAD_INPUT_FILE, `${file} lacks the arrays x and y`, {
      expected: 'an .npz with x (the batch) and y (int64 labels)',
      found: `arrays: ${[...arrays.keys()].join(', ') || 'none'}`,
      hint: 'numpy: np.savez("batch.npz", x=x, y=y.astype(np.int64))',
    });
  }
  return { x, y };
}

export function registerTrainCommands(program: Command, io: TrainCliIO): void {
  program
    .command('grad')
    .description('loss and every trainable initializer\'s gradient on one batch (mean cross-entropy, training mode)')
    .argument('<model>', 'ONNX model file, or a folder written by slicec compile')
    .requiredOption('--data <batch.npz>', 'the batch: arrays x and int64 y')
    .option('--rate <r>', 'with a compiled folder: the rate whose graph to use (default 1)', parseRate)
    .option('--output <name>', 'the model output holding the logits (default: the first)')
    .option('-o, --out <grads.npz>', 'write the gradients, under the initializers\' names')
    .option('--json', 'print the result as JSON')
    .action(async (target: string, opts: { data: string; rate?: number; output?: string; out?: string; json?: boolean }) => {
      const file = resolveModelFile(target, opts.rate);
      const { x, y } = batchArrays(opts.data);
      const model = readModel(file);
      verifyModel(model, { mode: 'input', source: file });
      inferShapes(model);
      // loaded on demand: the passes and onnxruntime are not needed to start the CLI
      const { modelGradients } = await import('./grad.js');
      const result = await modelGradients(model, x, y, { output: opts.output });
      if (opts.out) writeNpz(opts.out, result.gradients);
      const norms = [...result.gradients].map(([name, g]) => {
        let s = 0;
        for (let i = 0; i < g.data.length; i++) s += Number(g.data[i]) ** 2;
        return { name, shape: g.dims, norm: Math.sqrt(s) };
      });
      if (opts.json) {
        json(io, { loss: result.loss, batch: x.dims[0], model: file, gradients: norms, ...(opts.out ? { file: path.resolve(opts.out) } : {}) });
        return;
      }
      io.stdout(`loss ${result.loss.toPrecision(7)} (mean cross-entropy over ${x.dims[0]} samples, training mode)\n`);
      const width = Math.max(9, ...norms.map((n) => n.name.length));
      io.stdout(`${'parameter'.padEnd(width)}  ${'shape'.padEnd(16)}  L2 norm of the gradient\n`);
      for (const n of norms) io.stdout(`${n.name.padEnd(width)}  ${`[${n.shape.join(',')}]`.padEnd(16)}  ${n.norm.toPrecision(5)}\n`);
      if (opts.out) io.stdout(`wrote ${opts.out}\n`);
    });

  for (const name of ['finetune', 'train'] as const) {
    const cmd = program.command(name);
    if (name === 'finetune') {
      cmd.description('fine-tune every rate of a compiled folder on your data (plan.json, flags on top), then write the trained weights into it')
        .argument('<dir>', 'a folder written by slicec compile');
    } else {
      cmd.description('train a plain ONNX model (the finetune machinery at rate 1)')
        .argument('<model>', 'ONNX model file')
        .requiredOption('-o, --out <file>', 'where the trained model goes');
    }
    addTrainFlags(cmd, { rates: name === 'finetune' }).action(async (target: string, flags: TrainFlags) => {
      const { runTraining } = await import('./finetune.js');
      const outcome = await runTraining(target, {
        command: name, note: (text) => io.stderr(`note: ${text}\n`), data: flags.data, overrides: planOverrides(flags), device: flags.device, threads: flags.threads, resume: flags.resume,
        shuffle: flags.shuffle, log: flags.log, checkpointEvery: flags.checkpointEvery, out: flags.out,
        progress: !flags.json,
      });
      const { result } = outcome;
      const summary = {
        interrupted: result.interrupted, steps: result.steps, epochs: outcome.plan.epochs,
        rates: result.final.map((r) => ({ rate: r.rate, accuracy: r.accuracy, loss: r.loss })),
        log: outcome.logFile, checkpoint: outcome.checkpointDir, written: outcome.written,
      };
      if (flags.json) {
        json(io, summary);
        if (result.interrupted) io.exitCode?.(EXIT_INTERRUPTED);
        return;
      }
      if (result.interrupted) {
        io.stdout(`stopped after step ${result.steps}; checkpoint in ${outcome.checkpointDir} (continue with --resume)\n`);
        io.exitCode?.(EXIT_INTERRUPTED);
        return;
      }
      for (const r of result.final) io.stdout(`rate ${r.rate.toFixed(3)}  ${r.accuracy !== null ? `accuracy ${(r.accuracy * 100).toFixed(2)} %  ` : ''}loss ${r.loss.toPrecision(5)}\n`);
      for (const f of outcome.written) io.stdout(`wrote ${f}\n`);
    });
  }

  program
    .command('eval')
    .description('per rate: accuracy (or loss), MACs, parameters and latency on the data; written into the manifest of a compiled folder')
    .argument('<target>', 'a folder written by slicec compile, or an ONNX model (one row, rate 1)')
    .requiredOption('--data <spec>', 'fashion-mnist | mnist | file.npz | x.npy,y.npy | a folder of class sub-folders of images')
    .option('--device <d>', 'cpu or cuda (cuda falls back to cpu with a warning)')
    .option('--resize <HxW[:fit]>', RESIZE_HELP, parseResize)
    .option('--json', 'print {"rates": [{"rate", "accuracy", "macs", "parameters", "latencyMs", "loss"}], "split", "samples"}')
    .action(async (target: string, opts: { data: string; device?: string; resize?: Resize; json?: boolean }) => {
      if (opts.device !== undefined && opts.device !== 'cpu' && opts.device !== 'cuda') {
        throw userError(ErrorCodes.BAD_FLAG, `--device expects cpu or cuda, got "${opts.device}"`, { expected: 'cpu or cuda', found: opts.device });
      }
      const { evaluateTarget } = await import('./eval.js');
      const { progressReporter } = await import('./progress.js');
      const progress = progressReporter(process.stderr, opts.json === true);
      let out;
      try {
        out = await evaluateTarget(target, { data: opts.data, device: opts.device as 'cpu' | 'cuda' | undefined, resize: opts.resize, progress });
      } finally {
        progress?.stop();
      }
      if (opts.json) {
        json(io, { rates: out.rows.map((r) => ({ rate: r.rate, accuracy: r.accuracy, macs: r.macs, parameters: r.parameters, latencyMs: r.latencyMs, loss: r.loss })), split: out.split, samples: out.samples });
        return;
      }
      io.stdout(`${out.samples} examples (${out.split} split)\n`);
      io.stdout(`${'rate'.padEnd(7)} ${'accuracy'.padStart(9)} ${'loss'.padStart(9)} ${'MACs'.padStart(12)} ${'params'.padStart(10)} ${'latency'.padStart(10)}\n`);
      for (const r of out.rows) {
        io.stdout(`${r.rate.toFixed(3).padEnd(7)} ${(r.accuracy !== null ? `${(r.accuracy * 100).toFixed(2)} %` : '-').padStart(9)} ${r.loss.toPrecision(4).padStart(9)} ${String(r.macs).padStart(12)} ${String(r.parameters).padStart(10)} ${`${r.latencyMs.toFixed(3)} ms`.padStart(10)}\n`);
      }
      if (out.manifestFile) io.stdout(`wrote ${out.manifestFile}\n`);
    });
}
