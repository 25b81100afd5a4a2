// The `slicec` command line. Parses flags with commander, turns bad flag values into user errors
// with expected/found text, runs print / verify / compile, and maps every outcome to an exit code:
// 0 ok, 1 user error (bad model, unusable output ...), 2 usage error (unknown flag, missing
// argument, bad flag value), 70 internal error (a bug: the stack is printed).
//
// Commander never exits the process here: exitOverride turns its exits into CommanderError and
// configureOutput routes its text through `io`, so tests can run `main` in-process. Output to a
// closed pipe (`slicec print m.onnx | head`) ends the process quietly instead of with EPIPE.

import { Command, CommanderError } from 'commander';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ErrorCodes, UserError, formatInternalError, isUserError, userError } from './diagnostics.js';
import type { Manifest } from './artifacts.js';
import { registerRuntimeCommands } from './cli-runtime.js';
import type { Model, Value } from './ir.js';
import { readModel } from './onnx-codec.js';
import type { CompileOptions, CompileResult } from './pipeline-types.js';
import { printModel } from './printer.js';
import { compileNotes, formatCompileSummary, formatExplanation, formatStats, type CompileSummary } from './cli-format.js';
import { progressReporter } from './progress.js';
import { inferShapes } from './shape-inference.js';
import { dtypeShortName } from './tensor.js';
import { verifyModel, verifyShapes } from './verifier.js';
import { isStepName, STEPS } from './steps.js';
import { registerTrainCommands } from './cli-train.js';
import { registerDayOneCommands } from './cli-dayone.js';
import { packageVersion } from '../runtime/version.js';

export const EXIT_OK = 0;
export const EXIT_USER_ERROR = 1;
export const EXIT_USAGE = 2;
/** EX_SOFTWARE from sysexits.h. */
export const EXIT_INTERNAL = 70;

/** Where the CLI writes; text is written as given (callers add newlines). */
export interface CliIO {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  /** The terminal progress bars draw on, when there is one (the real process only). */
  tty?: NodeJS.WriteStream;
}

const processIO: CliIO = {
  stdout: (text) => void process.stdout.write(text),
  stderr: (text) => void process.stderr.write(text),
  tty: process.stderr,
};

/** A reader that went away (`| head`) is not an error: stop writing and exit as things stand. */
function quietOnClosedPipe(): void {
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code !== 'EPIPE') throw e;
      process.exit(typeof process.exitCode === 'number' ? process.exitCode : EXIT_OK);
    });
  }
}

/** Run the CLI with `argv` (no node/script prefix); resolves to the process exit code. */
export async function main(argv: string[], io: CliIO = processIO): Promise<number> {
  if (io === processIO) quietOnClosedPipe();
  // `-v` alone is how many tools ask for the version
  if (argv.length === 1 && argv[0] === '-v') argv = ['--version'];
  const json = argv.includes('--json');
  const state: RunState = { exitCode: EXIT_OK, usageMessage: '' };
  const program = buildProgram(io, json, state);
  if (argv.length === 0) {
    io.stderr(program.helpInformation());
    return EXIT_USAGE;
  }
  try {
    refuseUnknownCommand(program, argv[0]!);
    await program.parseAsync(argv, { from: 'user' });
    return state.exitCode;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.exitCode === 0) return EXIT_OK;
      if (json) writeJson(io, { error: { code: 'USAGE', message: state.usageMessage || e.message } });
      return EXIT_USAGE;
    }
    if (isUserError(e)) {
      if (json) writeJson(io, e.toJSON());
      else io.stderr(`${e.format()}\n`);
      return e.code === ErrorCodes.BAD_FLAG ? EXIT_USAGE : EXIT_USER_ERROR;
    }
    io.stderr(`${formatInternalError(e)}\n`);
    if (json) writeJson(io, { error: { code: 'INTERNAL', message: e instanceof Error ? e.message : String(e) } });
    return EXIT_INTERNAL;
  }
}

/**
 * Compile is the default command, so a mistyped command would be read as a model path: a first
 * word that is neither a command nor a file, and has no dot or slash a path would, is refused.
 */
function refuseUnknownCommand(program: Command, first: string): void {
  if (first.startsWith('-') || /[./\\]/.test(first) || fs.existsSync(first)) return;
  const commands = program.commands.map((c) => c.name());
  if (commands.includes(first) || first === 'help') return;
  const nearest = commands.map((c) => ({ c, d: editDistance(first, c) })).sort((a, b) => a.d - b.d)[0];
  throw userError(ErrorCodes.BAD_FLAG, `unknown command "${first}"`, {
    expected: `a command (${commands.join(', ')}) or a model file`,
    found: `"${first}", neither a command nor a file`,
    hint: nearest && nearest.d <= Math.max(2, first.length / 3) ? `did you mean slicec ${nearest.c}?` : 'run slicec --help',
  });
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) row.push(Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1)));
    prev = row;
  }
  return prev[b.length]!;
}

export interface RunState {
  exitCode: number;
  /** Commander's message for a usage error, kept for --json output. */
  usageMessage: string;
}

export function buildProgram(io: CliIO, json: boolean, state: RunState): Command {
  const program = new Command();
  // Settings made before adding subcommands are inherited by them.
  program
    .name('slicec')
    .description('Compile ordinary ONNX models into sliced models that serve at several costs.')
    .version(packageVersion(), '-V, --version', 'print the slicec version')
    .helpOption('-h, --help', 'show help')
    .exitOverride()
    .configureOutput({
      writeOut: io.stdout,
      writeErr: io.stderr,
      outputError: (text, write) => {
        state.usageMessage = text.trim().replace(/^error: /, '');
        if (!json) write(text);
      },
    })
    .showHelpAfterError('(run slicec --help for usage)')
    .addHelpText('after', '\nWithout a command, `slicec <model> --groups <n> ...` runs compile.\n');
  const stepNames = STEPS.join(', ');

  program
    .command('print')
    .description('print the model in the text dump form (after verifying it and inferring shapes)')
    .argument('<model>', 'ONNX model file')
    .option('--json', 'print a JSON summary instead: inputs, outputs, counts, opsets')
    .action((file: string, opts: { json?: boolean }) => {
      const model = loadModel(file);
      if (opts.json) writeJson(io, modelSummary(model));
      else io.stdout(withNewline(printModel(model)));
    });

  program
    .command('verify')
    .description('read and verify a model; exit 0 when it is well formed')
    .argument('<model>', 'ONNX model file')
    .option('--json', 'print the result as JSON')
    .action((file: string, opts: { json?: boolean }) => {
      const model = loadModel(file);
      const nodes = model.graph.nodes.length;
      const initializers = model.graph.initializers.length;
      if (opts.json) writeJson(io, { ok: true, nodes, initializers });
      else io.stdout(`ok: ${nodes} nodes, ${initializers} initializers\n`);
    });

  program
    .command('compile', { isDefault: true })
    .description('compile a model into sliced models (the default command)')
    .argument('<model>', 'ONNX model file')
    .option('--groups <n>', 'ordered channel groups per sliced layer (integer ≥ 1; required)', parseGroups)
    .option('--rates <list>', 'comma-separated slice rates in (0,1] (default: k/groups for every k)', parseRates)
    .option('-o, --out <dir>', 'output directory (default: <model>.sliced/)')
    .option('--round-to <n>', 'round kept channel counts to multiples of n where possible', parseRoundTo)
    .option('--norm <mode>', 'bn: BatchNorms with statistics per rate, inserted where a sliced layer has none (default, unless the model has layer norms); gn: group norms aligned with slice groups (default for models with layer norms); keep: leave normalization as it is (BatchNorm statistics per rate); none: fold BatchNorms into the layers and add nothing', parseNorm)
    .option('--elastic <form>', 'fast: elastic.onnx is an If tree over the per-rate graphs, about as fast as they are (default); lean: weights cut at run time, least memory', parseElastic)
    .option('--importance <mode>', 'channel order: activation (activations on the calibration data × outgoing weights; default with --calibration), weight (weight L1; default otherwise) or none (the exported order: naive truncation)', parseImportance)
    .option('--calibration <file>', 'calibration batch for the inserted norms and activation order (TensorProto .pb, or a folder of input_N.pb)')
    .option('--data <spec>', 'calibration batch from a dataset instead, as finetune takes it (fashion-mnist, mnist, an .npz, a folder of class folders of images): evenly spaced training examples')
    .option('--calibration-samples <n>', 'examples --data takes (default 512)', (v: string) => parseIntegerAtLeastOne('--calibration-samples', v))
    .option('--exits <auto|LAYER,...>', 'early exits: auto (chosen at block boundaries) or the layers named (node, value or module names); writes exits/ with per-rate segments and heads', parseExits)
    .option('--explain', 'print, per layer, whether it is sliced and why not')
    .option('--print-before <step|all>', `print the model before a step (repeatable or a comma list); steps: ${stepNames}`, collectSteps('--print-before'))
    .option('--print-after <step|all>', 'print the model after a step (same steps)', collectSteps('--print-after'))
    .option('--stats', 'print per-step timings and node counts')
    .option('--quiet', 'no progress bars and no notes (errors are still printed)')
    .option('--json', 'print the compile result as JSON (no progress bars)')
    .addHelpText(
      'after',
      '\nExamples:\n' +
        '  slicec model.onnx --groups 8\n' +
        '  slicec model.onnx --groups 4 --rates 0.25,0.5,1 -o out/ --explain\n' +
        '  slicec compile model.onnx --groups 8 --print-after all 2> dumps.txt\n',
    )
    .action(async (file: string, opts: CompileFlags) => {
      if (opts.groups === undefined) {
        throw userError(ErrorCodes.BAD_FLAG, '--groups is required', {
          expected: '--groups <n>, the number of channel groups per sliced layer', found: 'no --groups', hint: `example: slicec ${file} --groups 8`,
        });
      }
      const quiet = opts.quiet === true;
      const printing = (opts.printBefore?.length ?? 0) + (opts.printAfter?.length ?? 0) > 0;
      const bars = io.tty && !printing ? progressReporter(io.tty, quiet || opts.json === true) : null;
      const note = (text: string): void => {
        if (quiet) return;
        if (bars) bars.log(text);
        else io.stderr(withNewline(text));
      };
      const options: CompileOptions = {
        model: file,
        groups: opts.groups,
        rates: opts.rates,
        outDir: opts.out,
        roundTo: opts.roundTo,
        norm: opts.norm,
        elastic: opts.elastic,
        importance: opts.importance,
        calibration: opts.calibration,
        ...(opts.data ? { data: opts.data } : {}),
        ...(opts.calibrationSamples ? { calibrationSamples: opts.calibrationSamples } : {}),
        ...(opts.exits ? { exits: opts.exits } : {}),
        printBefore: opts.printBefore,
        printAfter: opts.printAfter,
        log: (text) => io.stderr(withNewline(text)),
        warn: note,
        stats: opts.stats === true,
        ...(bars ? { progress: (p) => bars.update(p) } : {}),
      };
      checkStepNames('--print-before', opts.printBefore);
      checkStepNames('--print-after', opts.printAfter);
      // Loaded on demand: print and verify do not need the passes.
      const { compile } = await import('./pipeline.js');
      let result: CompileResult;
      try {
        result = await compile(options);
      } finally {
        bars?.stop();
      }
      const manifest = JSON.parse(fs.readFileSync(result.manifestFile, 'utf8')) as Manifest;
      const summary: CompileSummary = { ...result, rates: result.rates.map((r, i) => ({ ...r, file: path.join(result.outDir, r.file), macRatio: manifest.rates[i]!.macRatio })) };
      for (const line of compileNotes(summary, manifest.groups)) note(`note: ${line}`);
      if (opts.json) {
        writeJson(io, summary);
        return;
      }
      io.stdout(formatCompileSummary(summary));
      if (opts.explain) io.stdout(`\n${formatExplanation(result)}`);
      if (opts.stats) io.stderr(formatStats(result));
    });

  registerTrainCommands(program, { ...io, exitCode: (code) => void (state.exitCode = code) });
  registerDayOneCommands(program, io);

  program
    .command('train-graphs')
    .description('write one train-step graph per compiled rate into DIR/train/ and describe them in manifest.json')
    .argument('<dir>', 'a folder written by slicec compile')
    .option('--batch <n>', 'batch size of the graphs (static)', (v) => parseIntegerAtLeastOne('--batch', v), 64)
    .option('--optimizer <sgd|adamw>', 'the update the graphs apply', parseOptimizer, 'sgd')
    .option('--json', 'print the manifest\'s train section as JSON')
    .action(async (dir: string, opts: { batch: number; optimizer: 'sgd' | 'adamw'; json?: boolean }) => {
      const { emitTrainGraphs } = await import('./train-graphs.js');
      const optimizer = opts.optimizer === 'sgd'
        ? { kind: 'sgd' as const, momentum: 0.9, nesterov: true, weightDecay: 5e-4 }
        : { kind: 'adamw' as const, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 };
      const train = emitTrainGraphs(dir, { batch: opts.batch, loss: { kind: 'cross-entropy' }, optimizer });
      if (opts.json) {
        writeJson(io, train);
        return;
      }
      for (const g of train.graphs) io.stdout(`rate ${g.rate.toFixed(3)}  ${g.file}  ${g.signature.inputs.length} inputs, ${g.signature.outputs.length} outputs\n`);
    });
  registerRuntimeCommands(program);

  program
    .command('demo')
    .description('the main job on the bundled example: compile the pretrained Fashion-MNIST CNN, fine-tune every rate, evaluate, write the report')
    .option('-o, --out <dir>', 'folder for everything the demo writes', 'slicec-demo')
    .option('--epochs <n>', 'fine-tuning epochs', (v) => parseIntegerAtLeastOne('--epochs', v), 1)
    .option('--quiet', 'no progress (the table is still printed)')
    .option('--json', 'print the result as JSON')
    .action(async (opts: { out: string; epochs: number; quiet?: boolean; json?: boolean }) => {
      const { runDemo, formatDemo } = await import('./demo.js');
      const quiet = opts.quiet === true || opts.json === true;
      const summary = await runDemo({ out: opts.out, epochs: opts.epochs, progress: !quiet && process.stderr.isTTY === true, log: quiet ? () => {} : io.stderr });
      if (opts.json) writeJson(io, summary);
      else io.stdout(formatDemo(summary));
    });
  return program;
}

interface CompileFlags {
  groups?: number;
  quiet?: boolean;
  rates?: number[];
  out?: string;
  roundTo?: number;
  norm?: 'gn' | 'keep' | 'none' | 'bn';
  elastic?: 'fast' | 'lean';
  importance?: 'activation' | 'weight' | 'none';
  calibration?: string;
  data?: string;
  calibrationSamples?: number;
  exits?: 'auto' | string[];
  explain?: boolean;
  printBefore?: string[];
  printAfter?: string[];
  stats?: boolean;
  json?: boolean;
}

// ---------------------------------------------------------------- flag values

function badFlag(flag: string, expected: string, value: string, hint?: string): UserError {
  return userError(ErrorCodes.BAD_FLAG, `${flag} expects ${expected}, got "${value}"`, {
    expected,
    found: `"${value}"`,
    hint: hint ?? `see slicec --help`,
  });
}

function parseOptimizer(value: string): 'sgd' | 'adamw' {
  if (value !== 'sgd' && value !== 'adamw') throw badFlag('--optimizer', 'sgd or adamw', value);
  return value;
}

function parseIntegerAtLeastOne(flag: string, value: string): number {
  const text = value.trim();
  const n = Number(text);
  if (!/^[0-9]+$/.test(text) || !Number.isSafeInteger(n) || n < 1) {
    throw badFlag(flag, 'an integer ≥ 1', value);
  }
  return n;
}

function parseGroups(value: string): number {
  return parseIntegerAtLeastOne('--groups', value);
}

function parseElastic(value: string): 'fast' | 'lean' {
  if (value !== 'fast' && value !== 'lean') throw badFlag('--elastic', 'fast or lean', value);
  return value;
}

function parseNorm(value: string): 'gn' | 'keep' | 'none' | 'bn' {
  if (value !== 'gn' && value !== 'keep' && value !== 'none' && value !== 'bn') throw badFlag('--norm', 'gn, keep, none or bn', value);
  return value;
}

function parseExits(value: string): 'auto' | string[] {
  if (value.trim() === 'auto') return 'auto';
  const names = value.split(',').map((p) => p.trim());
  const bad = names.find((n) => n === '' || n === 'auto');
  if (bad !== undefined) throw badFlag('--exits', '"auto" or a comma-separated list of layer names', value, bad === '' ? 'remove the empty entry' : '"auto" cannot be mixed with layer names');
  const twice = names.find((n, i) => names.indexOf(n) !== i);
  if (twice !== undefined) throw badFlag('--exits', 'each layer once', value, `${twice} appears more than once`);
  return names;
}

function parseImportance(value: string): 'activation' | 'weight' | 'none' {
  if (value !== 'activation' && value !== 'weight' && value !== 'none') throw badFlag('--importance', 'activation, weight or none', value);
  return value;
}

function parseRoundTo(value: string): number {
  return parseIntegerAtLeastOne('--round-to', value);
}

function parseRates(value: string): number[] {
  const expected = 'comma-separated numbers in (0,1]';
  const parts = value.split(',').map((p) => p.trim());
  const rates: number[] = [];
  for (const part of parts) {
    const rate = Number(part);
    if (part === '' || !Number.isFinite(rate) || rate <= 0 || rate > 1) {
      const hint = part === '' ? 'remove the empty entry' : `"${part}" is not in (0,1]`;
      throw badFlag('--rates', expected, value, `${hint}; example: --rates 0.25,0.5,1`);
    }
    if (rates.includes(rate)) {
      throw badFlag('--rates', `${expected}, each once`, value, `${part} appears more than once`);
    }
    rates.push(rate);
  }
  return rates;
}

function collectSteps(flag: string): (value: string, previous: string[] | undefined) => string[] {
  return (value, previous) => {
    const steps = value.split(',').map((s) => s.trim());
    if (steps.some((s) => s === '')) {
      throw badFlag(flag, 'a step name or "all" (repeatable, or a comma list)', value);
    }
    return [...(previous ?? []), ...steps];
  };
}

function checkStepNames(flag: string, names: string[] | undefined): void {
  for (const name of names ?? []) {
    if (name !== 'all' && !isStepName(name)) {
      throw badFlag(flag, `"all" or a step name: ${STEPS.join(', ')} (a per-rate step also as step@rate, e.g. prune-to-rate@0.500)`, name);
    }
  }
}

// ---------------------------------------------------------------- print and verify

/** Read, verify as an input model, infer shapes and check them: what `print` shows and `verify` checks. */
function loadModel(file: string): Model {
  const model = readModel(file);
  verifyModel(model, { mode: 'input', source: file });
  inferShapes(model);
  verifyShapes(model, { mode: 'input', source: file });
  return model;
}

interface ValueSummary {
  name: string;
  dtype: string;
  shape: (number | string | null)[] | null;
}

function describeValue(value: Value): ValueSummary {
  const type = value.type;
  if (!type || type.kind !== 'tensor') return { name: value.name, dtype: type ? type.kind : 'unknown', shape: null };
  return {
    name: value.name,
    dtype: dtypeShortName[type.elemType] ?? `dtype${type.elemType}`,
    shape: type.shape ? [...type.shape] : null,
  };
}

function modelSummary(model: Model): Record<string, unknown> {
  const opset: Record<string, number> = {};
  for (const [domain, version] of [...model.opsetImports].sort(([a], [b]) => a.localeCompare(b))) {
    opset[domain] = Number(version);
  }
  return {
    inputs: model.graph.inputs.map(describeValue),
    outputs: model.graph.outputs.map(describeValue),
    nodes: model.graph.nodes.length,
    initializers: model.graph.initializers.length,
    opset,
  };
}

// ---------------------------------------------------------------- helpers

function writeJson(io: CliIO, value: unknown): void {
  io.stdout(`${JSON.stringify(value, (_key, v: unknown) => (typeof v === 'bigint' ? v.toString() : v), 2)}\n`);
}

function withNewline(text: string): string {
  return text.endsWith('\n') ? text : `${text}\n`;
}

