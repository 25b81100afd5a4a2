// The `slicec` command line. Parses flags with commander, turns bad flag values into user errors
// with expected/found text, runs print / verify / compile, and maps every outcome to an exit code:
// 0 ok, 1 user error (bad model, unusable output ...), 2 usage error (unknown flag, missing
// argument, bad flag value), 70 internal error (a bug: the stack is printed).
//
// Commander never exits the process here: exitOverride turns its exits into CommanderError and
// configureOutput routes its text through `io`, so tests can run `main` in-process.

import { Command, CommanderError } from 'commander';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ErrorCodes, UserError, formatInternalError, isUserError, userError } from './diagnostics.js';
import { registerRuntimeCommands } from './cli-runtime.js';
import type { Model, Value } from './ir.js';
import { readModel } from './onnx-codec.js';
import type { CompileOptions, CompileResult } from './pipeline-types.js';
import { printModel } from './printer.js';
import { inferShapes } from './shape-inference.js';
import { dtypeShortName } from './tensor.js';
import { verifyModel } from './verifier.js';

export const EXIT_OK = 0;
export const EXIT_USER_ERROR = 1;
export const EXIT_USAGE = 2;
/** EX_SOFTWARE from sysexits.h. */
export const EXIT_INTERNAL = 70;

/** Where the CLI writes; text is written as given (callers add newlines). */
export interface CliIO {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
}

const processIO: CliIO = {
  stdout: (text) => void process.stdout.write(text),
  stderr: (text) => void process.stderr.write(text),
};

/** Run the CLI with `argv` (no node/script prefix); resolves to the process exit code. */
export async function main(argv: string[], io: CliIO = processIO): Promise<number> {
  const json = argv.includes('--json');
  const state: RunState = { exitCode: EXIT_OK, usageMessage: '' };
  const program = buildProgram(io, json, state);
  if (argv.length === 0) {
    io.stderr(program.helpInformation());
    return EXIT_USAGE;
  }
  try {
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

interface RunState {
  exitCode: number;
  /** Commander's message for a usage error, kept for --json output. */
  usageMessage: string;
}

function buildProgram(io: CliIO, json: boolean, state: RunState): Command {
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
      const model = readModel(file);
      verifyModel(model, { mode: 'input', source: file });
      const nodes = model.graph.nodes.length;
      const initializers = model.graph.initializers.length;
      if (opts.json) writeJson(io, { ok: true, nodes, initializers });
      else io.stdout(`ok: ${nodes} nodes, ${initializers} initializers\n`);
    });

  program
    .command('compile', { isDefault: true })
    .description('compile a model into sliced models (the default command)')
    .argument('<model>', 'ONNX model file')
    .requiredOption('--groups <n>', 'ordered channel groups per sliced layer (integer ≥ 1)', parseGroups)
    .option('--rates <list>', 'comma-separated slice rates in (0,1] (default: k/groups for every k)', parseRates)
    .option('-o, --out <dir>', 'output directory (default: <model>.sliced/)')
    .option('--round-to <n>', 'round kept channel counts to multiples of n where possible', parseRoundTo)
    .option('--norm <mode>', 'gn: group norms aligned with slice groups (default); keep: leave normalization as it is; none: fold BatchNorms into the layers and add nothing', parseNorm)
    .option('--calibration <file>', 'calibration batch for group-norm initialization (TensorProto .pb, or a folder of input_N.pb)')
    .option('--explain', 'print, per layer, whether it is sliced and why not')
    .option('--print-before <step|all>', 'print the model before a step (repeatable or a comma list)', collectSteps('--print-before'))
    .option('--print-after <step|all>', 'print the model after a step (repeatable or a comma list)', collectSteps('--print-after'))
    .option('--stats', 'print per-step timings and node counts')
    .option('--json', 'print the compile result as JSON')
    .addHelpText(
      'after',
      '\nExamples:\n' +
        '  slicec model.onnx --groups 8\n' +
        '  slicec model.onnx --groups 4 --rates 0.25,0.5,1 -o out/ --explain\n' +
        '  slicec compile model.onnx --groups 8 --print-after all 2> dumps.txt\n',
    )
    .action(async (file: string, opts: CompileFlags) => {
      const options: CompileOptions = {
        model: file,
        groups: opts.groups,
        rates: opts.rates,
        outDir: opts.out,
        roundTo: opts.roundTo,
        norm: opts.norm,
        calibration: opts.calibration,
        printBefore: opts.printBefore,
        printAfter: opts.printAfter,
        log: (text) => io.stderr(withNewline(text)),
        stats: opts.stats === true,
      };
      // Loaded on demand: print and verify do not need the passes.
      const { compile, STEPS } = await import('./pipeline.js');
      checkStepNames('--print-before', opts.printBefore, STEPS);
      checkStepNames('--print-after', opts.printAfter, STEPS);
      const result = await compile(options);
      if (opts.json) {
        writeJson(io, result);
        return;
      }
      io.stdout(formatCompileSummary(result));
      if (opts.explain) io.stdout(`\n${formatExplanation(result)}`);
      if (opts.stats) io.stderr(formatStats(result));
    });

  registerRuntimeCommands(program);
  return program;
}

interface CompileFlags {
  groups: number;
  rates?: number[];
  out?: string;
  roundTo?: number;
  norm?: 'gn' | 'keep' | 'none';
  calibration?: string;
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

function parseNorm(value: string): 'gn' | 'keep' | 'none' {
  if (value !== 'gn' && value !== 'keep' && value !== 'none') throw badFlag('--norm', 'gn, keep or none', value);
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

function checkStepNames(flag: string, names: string[] | undefined, steps: readonly string[]): void {
  for (const name of names ?? []) {
    if (name !== 'all' && !steps.includes(name)) {
      throw badFlag(flag, `"all" or a step name: ${steps.join(', ')}`, name);
    }
  }
}

// ---------------------------------------------------------------- print and verify

/** Read, verify as an input model, and infer shapes: what `print` shows. */
function loadModel(file: string): Model {
  const model = readModel(file);
  verifyModel(model, { mode: 'input', source: file });
  inferShapes(model);
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

// ---------------------------------------------------------------- compile output

function formatCompileSummary(result: CompileResult): string {
  const full = result.rates.find((r) => r.rate === 1);
  const rows = result.rates.map((r) => [
    formatRate(r.rate),
    String(r.activeGroups),
    formatCount(r.parameters),
    formatCount(r.macs),
    full && full.macs > 0 ? (r.macs / full.macs).toFixed(3) : '-',
    displayPath(result.outDir, r.file),
  ]);
  const table = formatTable(['rate', 'groups', 'params', 'MACs', 'MACs/rate1', 'file'], rows, [false, true, true, true, true, false]);
  const lines = [
    `wrote ${displayDir(result.outDir)} (manifest: ${displayPath(result.outDir, result.manifestFile)}, elastic: ${displayPath(result.outDir, result.elasticFile)})`,
    formatNormalization(result),
    table,
  ];
  return lines.filter((l) => l !== '').join('\n');
}

function formatNormalization(result: CompileResult): string {
  const n = result.normalization;
  const counts = Object.entries(n.sites).map(([kind, count]) => `${count} ${kind}`).join(', ');
  let line = `normalization: ${n.mode}${counts ? ` (${counts})` : ''}`;
  const c = n.calibration;
  if (c) {
    const top1 = (a: { top1: number | null }): string => (a.top1 === null ? '' : `, top-1 agreement ${(a.top1 * 100).toFixed(1)}%`);
    const source = c.source === 'file' ? 'calibration file' : 'synthetic N(0,1) inputs (pass --calibration for real data)';
    line += `\ncalibration on ${c.batch} ${source}: full-rate output vs original, relative error ${c.before.relativeError.toFixed(3)} → ${c.after.relativeError.toFixed(3)}${top1(c.after)}`;
  }
  return line;
}

function formatExplanation(result: CompileResult): string {
  const rows = result.layers.map((l) => [l.layer, l.op, String(l.channels), l.sliced ? 'yes' : 'no', l.reason ?? '']);
  return formatTable(['layer', 'op', 'channels', 'sliced', 'reason'], rows, [false, false, true, false, false]);
}

function formatStats(result: CompileResult): string {
  const rows = result.stats.map((s) => [s.step, s.ms.toFixed(1), String(s.nodes)]);
  return formatTable(['step', 'ms', 'nodes'], rows, [false, true, true]);
}

/** Plain aligned columns; `rightAlign[i]` for numeric columns. Trailing spaces are trimmed. */
function formatTable(headers: string[], rows: string[][], rightAlign: boolean[]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    cells
      .map((cell, i) => (rightAlign[i] ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n') + '\n';
}

function formatRate(rate: number): string {
  return Number.isInteger(rate * 1000) ? String(rate) : rate.toFixed(4);
}

function formatCount(n: number): string {
  return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

/** A folder below the working directory as a relative path, any other as given. */
function displayDir(dir: string): string {
  const relative = path.relative(process.cwd(), dir);
  return relative && !relative.startsWith('..') && !path.isAbsolute(relative) ? relative : dir;
}

function displayPath(outDir: string, file: string): string {
  return path.isAbsolute(file) ? path.relative(outDir, file) || file : file;
}

// ---------------------------------------------------------------- helpers

function writeJson(io: CliIO, value: unknown): void {
  io.stdout(`${JSON.stringify(value, (_key, v: unknown) => (typeof v === 'bigint' ? v.toString() : v), 2)}\n`);
}

function withNewline(text: string): string {
  return text.endsWith('\n') ? text : `${text}\n`;
}

/** Version from package.json, found by walking up from this file (src and dist/ layouts differ). */
function packageVersion(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const file = path.join(dir, 'package.json');
    if (fs.existsSync(file)) {
      const pkg = JSON.parse(fs.readFileSync(file, 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'slicec' && pkg.version) return pkg.version;
    }
    const parent = path.dirname(dir);
    if (parent === dir) return 'unknown';
    dir = parent;
  }
}
