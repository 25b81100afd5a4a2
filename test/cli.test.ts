// The command line: help and version, print and verify on real models, exit codes, and every
// error the CLI itself raises (flag values, usage), in text and in --json form.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { readModel } from '../compiler/onnx-codec.js';
import type { CompileResult } from '../compiler/pipeline-types.js';
import { ensureBuilt, runBin, runCli } from './helpers/cli.js';
import { Rng } from './helpers/fuzz.js';
import { REPO_ROOT, fixtureModels } from './helpers/models.js';

const HELLO = path.join(REPO_ROOT, 'node_modules', 'openwakeword-js', 'models', 'hello_deepa.onnx');
const VERSION = (JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const STACK_LINE = /^\s+at .+/m;

let tmp: string;

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-cli-'));
});

afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('help and version', () => {
  it('--help lists the commands and exits 0', async () => {
    const run = await runCli(['--help']);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('Usage: slicec');
    for (const command of ['print', 'verify', 'compile']) expect(run.stdout).toContain(command);
    expect(run.stderr).toBe('');
  });

  it('compile --help lists its flags', async () => {
    const run = await runCli(['compile', '--help']);
    expect(run.code).toBe(0);
    for (const flag of ['--groups', '--rates', '--out', '--round-to', '--explain', '--print-before', '--print-after', '--stats', '--json']) {
      expect(run.stdout).toContain(flag);
    }
  });

  it('--version prints the package version', async () => {
    const run = await runCli(['--version']);
    expect(run.code).toBe(0);
    expect(run.stdout.trim()).toBe(VERSION);
  });

  it('no arguments prints help to stderr and exits 2', async () => {
    const run = await runCli([]);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('Usage: slicec');
  });
});

describe('print', () => {
  it('prints a real model deterministically', async () => {
    const first = await runCli(['print', HELLO]);
    expect(first.code).toBe(0);
    expect(first.stderr).toBe('');
    expect(first.stdout).toMatch(/^model ir_version=/);
    expect(first.stdout).toMatch(/^\s+input %/m);
    expect(first.stdout).toMatch(/^\s+output %/m);
    expect(first.stdout).toContain('= Gemm(');
    const second = await runCli(['print', HELLO]);
    expect(second.stdout).toBe(first.stdout);
  });

  it('--json summarizes inputs, outputs, counts and opsets', async () => {
    const run = await runCli(['print', HELLO, '--json']);
    expect(run.code).toBe(0);
    const summary = JSON.parse(run.stdout) as Record<string, unknown>;
    const model = readModel(HELLO);
    expect(summary.nodes).toBe(model.graph.nodes.length);
    expect(summary.initializers).toBe(model.graph.initializers.length);
    expect(summary.opset).toEqual({ '': model.opset() });
    const inputs = summary.inputs as { name: string; dtype: string; shape: unknown[] }[];
    expect(inputs.map((i) => i.name)).toEqual(model.graph.inputs.map((v) => v.name));
    expect(inputs[0]!.dtype).toBe('f32');
    expect((summary.outputs as unknown[]).length).toBe(model.graph.outputs.length);
  });

  it('prints every fixture', async () => {
    for (const fixture of fixtureModels()) {
      const run = await runCli(['print', fixture.file]);
      expect(run.code, `${fixture.name}: ${run.stderr}`).toBe(0);
      expect(run.stdout).toMatch(/^model ir_version=/);
    }
  });
});

describe('verify', () => {
  it('reports node and initializer counts', async () => {
    const model = readModel(HELLO);
    const run = await runCli(['verify', HELLO]);
    expect(run.code).toBe(0);
    expect(run.stdout).toBe(`ok: ${model.graph.nodes.length} nodes, ${model.graph.initializers.length} initializers\n`);
  });

  it('--json', async () => {
    const run = await runCli(['verify', HELLO, '--json']);
    expect(run.code).toBe(0);
    expect(JSON.parse(run.stdout)).toMatchObject({ ok: true });
  });
});

describe('user errors exit 1 with a code and no stack', () => {
  it('missing file: SLC001', async () => {
    const run = await runCli(['verify', path.join(tmp, 'missing.onnx')]);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('error SLC001');
    expect(run.stderr).toContain('expected:');
    expect(run.stderr).not.toMatch(STACK_LINE);
    expect(run.stdout).toBe('');
  });

  it('missing file through the default compile command: SLC001', async () => {
    const run = await runCli([path.join(tmp, 'missing.onnx'), '--groups', '2', '-o', path.join(tmp, 'never')]);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('error SLC001');
    expect(run.stderr).not.toMatch(STACK_LINE);
  });

  it('a directory: SLC001', async () => {
    const run = await runCli(['print', tmp]);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('error SLC001');
  });

  it('random bytes: SLC002', async () => {
    const file = path.join(tmp, 'random.onnx');
    const rng = new Rng(7);
    const bytes = new Uint8Array(4096);
    for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(rng.next() * 256);
    fs.writeFileSync(file, bytes);
    const run = await runCli(['print', file]);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('error SLC002');
    expect(run.stderr).not.toMatch(STACK_LINE);
  });

  it('an empty file: SLC002', async () => {
    const file = path.join(tmp, 'empty.onnx');
    fs.writeFileSync(file, new Uint8Array(0));
    const run = await runCli(['verify', file]);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('error SLC002');
  });

  it('--json prints the error as JSON on stdout', async () => {
    const run = await runCli(['verify', path.join(tmp, 'missing.onnx'), '--json']);
    expect(run.code).toBe(1);
    expect(run.stderr).toBe('');
    const body = JSON.parse(run.stdout) as { error: { code: string; message: string; expected?: string } };
    expect(body.error.code).toBe('SLC001');
    expect(body.error.message).toContain('missing.onnx');
    expect(body.error.expected).toBeTruthy();
  });
});

describe('usage errors exit 2', () => {
  it('unknown flag', async () => {
    const run = await runCli(['print', HELLO, '--bogus']);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain("unknown option '--bogus'");
    expect(run.stderr).toContain('slicec --help');
    expect(run.stdout).toBe('');
  });

  it('unknown flag with --json', async () => {
    const run = await runCli(['verify', HELLO, '--bogus', '--json']);
    expect(run.code).toBe(2);
    const body = JSON.parse(run.stdout) as { error: { code: string; message: string } };
    expect(body.error.code).toBe('USAGE');
    expect(body.error.message).toContain('--bogus');
  });

  it('missing model argument', async () => {
    const run = await runCli(['print']);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain("missing required argument 'model'");
  });

  it('missing --groups', async () => {
    const run = await runCli([HELLO]);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('--groups');
  });

  it('a flag without its value', async () => {
    const run = await runCli([HELLO, '--groups']);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain("argument missing");
  });

  const badValues: [string[], string][] = [
    [['--groups', '0'], '--groups expects an integer ≥ 1, got "0"'],
    [['--groups', 'x'], '--groups expects an integer ≥ 1, got "x"'],
    [['--groups', '1.5'], '--groups expects an integer ≥ 1, got "1.5"'],
    [['--groups', '-3'], '--groups expects an integer ≥ 1, got "-3"'],
    [['--groups', '2', '--rates', '1.5'], '--rates expects comma-separated numbers in (0,1], got "1.5"'],
    [['--groups', '2', '--rates', '0'], '--rates expects comma-separated numbers in (0,1], got "0"'],
    [['--groups', '2', '--rates', '0.5,,1'], '--rates expects comma-separated numbers in (0,1], got "0.5,,1"'],
    [['--groups', '2', '--rates', 'half'], '--rates expects comma-separated numbers in (0,1], got "half"'],
    [['--groups', '2', '--rates', '0.5,0.5'], '--rates expects comma-separated numbers in (0,1], each once, got "0.5,0.5"'],
    [['--groups', '2', '--round-to', '0'], '--round-to expects an integer ≥ 1, got "0"'],
    [['--groups', '2', '--print-after', ''], '--print-after expects a step name or "all"'],
    [['--groups', '2', '--print-before', 'read,'], '--print-before expects a step name or "all"'],
  ];

  for (const [flags, message] of badValues) {
    it(`${flags.join(' ')}: SLC007`, async () => {
      const run = await runCli([HELLO, ...flags]);
      expect(run.code).toBe(2);
      expect(run.stderr).toContain('error SLC007');
      expect(run.stderr).toContain(message);
      expect(run.stderr).toContain('found:');
      expect(run.stderr).not.toMatch(STACK_LINE);
    });
  }

  it('bad flag value with --json', async () => {
    const run = await runCli([HELLO, '--groups', '0', '--json']);
    expect(run.code).toBe(2);
    const body = JSON.parse(run.stdout) as { error: { code: string; expected: string; found: string } };
    expect(body.error).toMatchObject({ code: 'SLC007', expected: 'an integer ≥ 1', found: '"0"' });
  });
});

describe('compile', () => {
  const RESNET = path.join(REPO_ROOT, 'fixtures', 'resnet-small.onnx');

  it('writes one file per default rate and prints the summary table', async () => {
    const out = path.join(tmp, 'resnet-default');
    // gn, whose calibration line the summary also shows
    const run = await runCli([RESNET, '--groups', '4', '--norm', 'gn', '-o', out]);
    expect(run.code, run.stderr).toBe(0);
    const all = run.stdout.trimEnd().split('\n');
    expect(all[0]).toBe(`wrote ${out} (manifest: manifest.json, elastic: elastic.onnx)`);
    expect(all[1]).toBe('normalization: gn (8 batchnorm)');
    expect(all[2]).toMatch(/^calibration on 16 synthetic N\(0,1\) inputs .*relative error \d\.\d{3} → \d\.\d{3}, top-1 agreement \d+\.\d%$/);
    const lines = all.slice(3);
    expect(lines[0]).toMatch(/^rate\s+groups\s+params\s+MACs\s+MACs\/rate1\s+file$/);
    expect(lines.slice(1).map((l) => l.split(/\s+/)[0])).toEqual(['0.25', '0.5', '0.75', '1']);
    expect(lines.at(-1)).toMatch(/^1\s+4\s+[\d,]+\s+[\d,]+\s+1\.000\s+slices\/\S+\.onnx$/);
    for (const line of lines.slice(1)) {
      expect(fs.existsSync(path.join(out, line.split(/\s+/).at(-1)!))).toBe(true);
    }
    expect(fs.existsSync(path.join(out, 'manifest.json'))).toBe(true);
  });

  it('`compile` and the default command agree; --json gives the result', async () => {
    const viaDefault = await runCli([RESNET, '--groups', '2', '--rates', '0.5,1', '-o', path.join(tmp, 'a'), '--json']);
    const viaCompile = await runCli(['compile', RESNET, '--groups', '2', '--rates', '0.5,1', '-o', path.join(tmp, 'b'), '--json']);
    expect(viaDefault.code, viaDefault.stderr).toBe(0);
    expect(viaCompile.code, viaCompile.stderr).toBe(0);
    const a = JSON.parse(viaDefault.stdout) as CompileResult;
    const b = JSON.parse(viaCompile.stdout) as CompileResult;
    expect(a.outDir).toBe(path.join(tmp, 'a'));
    expect(a.rates.map((r) => r.rate)).toEqual([0.5, 1]);
    // files are absolute paths in the JSON, each inside its own output folder
    const relative = (r: CompileResult) => r.rates.map((x) => ({ ...x, file: path.relative(r.outDir, x.file) }));
    expect(relative(a)).toEqual(relative(b));
    expect(a.rates[0]!.file).toBe(path.join(tmp, 'a', 'slices', 'rate-0.500.onnx'));
    expect(a.layers).toEqual(b.layers);
    expect(a.layers.length).toBeGreaterThan(0);
  });

  it('--explain prints the per-layer table', async () => {
    const run = await runCli([RESNET, '--groups', '2', '-o', path.join(tmp, 'explain'), '--explain']);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/^layer\s+op\s+channels\s+sliced\s+reason$/m);
    expect(run.stdout).toMatch(/^\S+\s+Conv\s+16\s+yes$/m);
    expect(run.stdout).toMatch(/^\S+\s+Gemm\s+10\s+no\s+\S.*$/m);
  });

  it('--print-after, --print-before and --stats write to stderr', async () => {
    const run = await runCli([RESNET, '--groups', '2', '-o', path.join(tmp, 'dumps'), '--print-before', 'read', '--print-after', 'reorder-channels,prune-to-rate', '--stats']);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toContain('// before read\nmodel ir_version=');
    expect(run.stderr).toContain('// after reorder-channels\nmodel ir_version=');
    expect(run.stderr.match(/\/\/ after prune-to-rate/g)).toHaveLength(2);
    expect(run.stderr).toMatch(/^step\s+ms\s+nodes$/m);
    expect(run.stderr).toMatch(/^couple-channels\s+[\d.]+\s+\d+$/m);
    expect(run.stdout).not.toContain('model ir_version=');
  });

  it('takes every step name the stepper prints: per-rate steps as step@rate, upgrade-opset', async () => {
    const run = await runCli([RESNET, '--groups', '2', '--elastic', 'lean', '-o', path.join(tmp, 'per-rate-dump'), '--print-after', 'prune-to-rate@0.500,upgrade-opset']);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr.match(/\/\/ after prune-to-rate@0\.500\n/g)).toHaveLength(1);
    expect(run.stderr).not.toContain('// after prune-to-rate@1.000');
    expect(run.stderr).toContain('// after upgrade-opset\nmodel ir_version=');
  });

  it('an unknown step name: SLC007 listing the steps', async () => {
    const run = await runCli([RESNET, '--groups', '2', '-o', path.join(tmp, 'never'), '--print-after', 'reorder']);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('error SLC007: --print-after expects "all" or a step name: read, ');
    expect(run.stderr).toContain('reorder-channels');
    expect(fs.existsSync(path.join(tmp, 'never'))).toBe(false);
  });

  it('an output path that is a file: SLC008', async () => {
    const file = path.join(tmp, 'taken');
    fs.writeFileSync(file, 'not a folder');
    const run = await runCli([RESNET, '--groups', '2', '-o', file]);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('error SLC008');
    expect(run.stderr).not.toMatch(STACK_LINE);
    expect(fs.readFileSync(file, 'utf8')).toBe('not a folder');
  });

  it('an output folder slicec did not write: SLC008, in JSON', async () => {
    const dir = path.join(tmp, 'someone-elses');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'notes.txt'), 'keep me');
    const run = await runCli([RESNET, '--groups', '2', '-o', dir, '--json']);
    expect(run.code).toBe(1);
    expect((JSON.parse(run.stdout) as { error: { code: string } }).error.code).toBe('SLC008');
    expect(fs.readdirSync(dir)).toEqual(['notes.txt']);
  });

  it('compiles the openwakeword model', async () => {
    const run = await runCli([HELLO, '--groups', '4', '-o', path.join(tmp, 'hello'), '--json']);
    expect(run.code, run.stderr).toBe(0);
    const result = JSON.parse(run.stdout) as CompileResult;
    expect(result.rates).toHaveLength(4);
  });
});

describe('internal errors exit 70 with a stack', () => {
  it('a bug in a command prints the stack and asks for a report', async () => {
    vi.resetModules();
    vi.doMock('../compiler/printer.js', () => ({
      printModel: () => {
        throw new Error('printer exploded');
      },
    }));
    try {
      const { main } = await import('../compiler/cli.js');
      let stderr = '';
      const code = await main(['print', HELLO], { stdout: () => {}, stderr: (t) => (stderr += t) });
      expect(code).toBe(70);
      expect(stderr).toContain('internal error');
      expect(stderr).toContain('printer exploded');
      expect(stderr).toMatch(STACK_LINE);
    } finally {
      vi.doUnmock('../compiler/printer.js');
      vi.resetModules();
    }
  });
});

describe('bin/slicec.js', () => {
  beforeAll(() => {
    ensureBuilt();
  });

  it('prints the version from the built CLI', () => {
    const run = runBin(['--version']);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout.trim()).toBe(VERSION);
  });

  it('sets the exit code of a user error', () => {
    const run = runBin(['verify', path.join(tmp, 'missing.onnx')]);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('error SLC001');
    expect(run.stderr).not.toMatch(STACK_LINE);
  });

  it('sets the exit code of a usage error', () => {
    const run = runBin(['verify', HELLO, '--bogus']);
    expect(run.code).toBe(2);
  });
});
