// Bad input through the built CLI: every case exits 1 (2 for flags) with its own stable code,
// expected/found/hint text and no stack, and leaves nothing behind on disk. Output locations that
// cannot be written are tried as the user `nobody` when the tests run as root (root writes into
// read-only folders).

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCodes } from '../compiler/diagnostics.js';
import { Node } from '../compiler/ir.js';
import { encodeTensorProto } from '../compiler/onnx-codec.js';
import { Tensor } from '../compiler/tensor.js';
import { ensureBuilt, type CliRun } from './helpers/cli.js';
import { NOBODY, STACK_LINE, runBuilt, runShell, writeVariant } from './helpers/built-cli.js';
import { REPO_ROOT } from './helpers/models.js';

const CFG = path.join(REPO_ROOT, 'fixtures', 'conv-flatten-gemm.onnx');
const RESNET = path.join(REPO_ROOT, 'fixtures', 'resnet-small.onnx');
const HELLO = path.join(REPO_ROOT, 'node_modules', 'openwakeword-js', 'models', 'hello_deepa.onnx');
const asRoot = process.getuid?.() === 0;

let tmp: string;

beforeAll(() => {
  ensureBuilt();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-errors-'));
  fs.chmodSync(tmp, 0o755); // the user `nobody` must reach the folders below
});

afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** A user error: exit 1 (2 for flags), the code, expected/found/hint, no stack. */
function expectUserError(run: CliRun, code: string, exit = 1): void {
  expect(run.code, run.stderr).toBe(exit);
  expect(run.stderr).toContain(`error ${code}:`);
  for (const part of ['expected:', 'found:', 'hint:']) expect(run.stderr).toContain(part);
  expect(run.stderr).not.toMatch(STACK_LINE);
  expect(run.stderr).not.toContain('internal error');
}

function variant(name: string, edit: Parameters<typeof writeVariant>[2], source = CFG): string {
  return writeVariant(source, path.join(tmp, `${name}.onnx`), edit);
}

describe('output locations that cannot be written (SLC011)', () => {
  const user = asRoot ? { uid: NOBODY } : {};

  it('-o in a read-only folder: nothing is made', () => {
    const parent = path.join(tmp, 'ro-parent');
    fs.mkdirSync(parent, { mode: 0o555 });
    fs.chmodSync(parent, 0o555);
    const run = runBuilt([RESNET, '--groups', '2', '-o', path.join(parent, 'out')], user);
    expectUserError(run, ErrorCodes.OUTPUT_NOT_WRITABLE);
    expect(run.stderr).toContain('permission denied (EACCES)');
    expect(fs.readdirSync(parent)).toEqual([]);
  });

  it('-o an existing read-only folder', () => {
    const out = path.join(tmp, 'ro-out');
    fs.mkdirSync(out);
    fs.chmodSync(tmp, 0o777);
    fs.chmodSync(out, 0o555);
    try {
      const run = runBuilt([RESNET, '--groups', '2', '-o', out], user);
      expectUserError(run, ErrorCodes.OUTPUT_NOT_WRITABLE);
      expect(fs.readdirSync(out)).toEqual([]);
    } finally {
      fs.chmodSync(tmp, 0o755);
    }
  });

  it('-o a writable folder whose parent is read-only (the stage is made beside it)', () => {
    const parent = path.join(tmp, 'ro-parent2');
    fs.mkdirSync(path.join(parent, 'out'), { recursive: true });
    fs.chmodSync(path.join(parent, 'out'), 0o777);
    fs.chmodSync(parent, 0o555);
    const run = runBuilt([RESNET, '--groups', '2', '-o', path.join(parent, 'out')], user);
    expectUserError(run, ErrorCodes.OUTPUT_NOT_WRITABLE);
    expect(run.stderr).toContain('writes the output beside out first');
    expect(fs.readdirSync(parent)).toEqual(['out']);
    expect(fs.readdirSync(path.join(parent, 'out'))).toEqual([]);
  });

  it('-o under a regular file', () => {
    const file = path.join(tmp, 'a-file');
    fs.writeFileSync(file, 'data');
    const run = runBuilt([RESNET, '--groups', '2', '-o', path.join(file, 'out')]);
    expectUserError(run, ErrorCodes.OUTPUT_NOT_WRITABLE);
    expect(run.stderr).toContain('which is a file');
    expect(fs.readFileSync(file, 'utf8')).toBe('data');
  });

  it('-o /proc/out', () => {
    const run = runBuilt([RESNET, '--groups', '2', '-o', '/proc/out']);
    expectUserError(run, ErrorCodes.OUTPUT_NOT_WRITABLE);
    expect(fs.existsSync('/proc/out')).toBe(false);
  });

  it('-o and --calibration are checked before any work (no step runs)', () => {
    const o = runBuilt([RESNET, '--groups', '2', '-o', '/proc/out', '--print-before', 'read']);
    expectUserError(o, ErrorCodes.OUTPUT_NOT_WRITABLE);
    expect(o.stderr).not.toContain('// before read');
    const out = path.join(tmp, 'never');
    const c = runBuilt([RESNET, '--groups', '2', '-o', out, '--calibration', path.join(tmp, 'missing.pb'), '--print-before', 'read']);
    expectUserError(c, ErrorCodes.BAD_INPUT_FILE);
    expect(c.stderr).not.toContain('// before read');
    expect(fs.existsSync(out)).toBe(false);
  });
});

describe('models no runtime can run', () => {
  it('no opset import: verify and compile refuse it (SLC012)', () => {
    const file = variant('no-opset', (m) => m.opsetImports.clear());
    expectUserError(runBuilt(['verify', file]), ErrorCodes.BAD_OPSET);
    const out = path.join(tmp, 'no-opset.out');
    expectUserError(runBuilt([file, '--groups', '2', '-o', out]), ErrorCodes.BAD_OPSET);
    expect(fs.existsSync(out)).toBe(false);
  });

  it('opset 99 (SLC012)', () => {
    const file = variant('opset99', (m) => m.opsetImports.set('', 99n));
    const run = runBuilt([file, '--groups', '2', '-o', path.join(tmp, 'opset99.out')]);
    expectUserError(run, ErrorCodes.BAD_OPSET);
    expect(run.stderr).toContain('opset 99');
    expectUserError(runBuilt(['verify', file]), ErrorCodes.BAD_OPSET);
  });

  it('an unknown default-domain op (SLC013)', () => {
    const file = variant('unknown-op', (m) => {
      m.graph.nodes.find((n) => n.op === 'Relu')!.op = 'Frobnicate';
    });
    const run = runBuilt(['verify', file]);
    expectUserError(run, ErrorCodes.UNKNOWN_OP);
    expect(run.stderr).toContain('Frobnicate');
  });

  it('a custom domain with no opset import (SLC012)', () => {
    const file = variant('custom-noimport', (m) => {
      const relu = m.graph.nodes.find((n) => n.op === 'Relu')!;
      relu.op = 'MyRelu';
      relu.domain = 'com.example';
    });
    const run = runBuilt(['verify', file]);
    expectUserError(run, ErrorCodes.BAD_OPSET);
    expect(run.stderr).toContain('com.example');
  });

  it('a Conv whose input channels disagree with its weight, deep in the graph (SLC006)', () => {
    const file = variant('conv-mismatch', (m) => {
      const w = m.graph.nodes.filter((n) => n.op === 'Conv')[1]!.inputs[1]!;
      const dims = [...w.const!.dims];
      dims[1] = 4;
      w.const = Tensor.float32(dims, new Float32Array(dims.reduce((a, b) => a * b, 1)));
      w.type = { kind: 'tensor', elemType: w.const.dtype, shape: dims };
    });
    const verify = runBuilt(['verify', file]);
    expectUserError(verify, ErrorCodes.BAD_NODE);
    expect(verify.stderr).toContain('8 input channels; weight conv2.weight is [16,4,3,3]');
    const out = path.join(tmp, 'conv-mismatch.out');
    expectUserError(runBuilt([file, '--groups', '2', '-o', out]), ErrorCodes.BAD_NODE);
    expect(fs.existsSync(out)).toBe(false);
  });

  it('--norm gn with a custom-domain op after a sliced layer: refused clearly (SLC014); --norm keep compiles it', () => {
    const file = variant('custom-op', (m) => {
      const relu = m.graph.nodes.find((n) => n.op === 'Relu')!;
      relu.op = 'MyRelu';
      relu.domain = 'com.example';
      m.opsetImports.set('com.example', 1n);
    });
    const out = path.join(tmp, 'custom-op.out');
    const gn = runBuilt([file, '--groups', '2', '-o', out]);
    expectUserError(gn, ErrorCodes.CANNOT_RUN);
    expect(gn.stderr).toContain('--norm keep');
    expect(fs.existsSync(out)).toBe(false);
    const keep = runBuilt([file, '--groups', '2', '--norm', 'keep', '-o', out, '--json']);
    expect(keep.code, keep.stderr).toBe(0);
    expect(fs.readdirSync(path.join(out, 'slices'))).toHaveLength(2);
  });
});

describe('models slicec now handles', () => {
  it('--groups 1 on a model with a layer norm compiles, and says nothing could be sliced', () => {
    const out = path.join(tmp, 'hello-g1');
    const run = runBuilt([HELLO, '--groups', '1', '-o', out]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toContain('note: nothing could be sliced');
    expect(run.stderr).not.toMatch(STACK_LINE);
    expect(fs.readdirSync(path.join(out, 'slices'))).toEqual(['rate-1.000.onnx']);
  });
});

describe('calibration data', () => {
  it('NaN or Inf values are refused before any work (SLC016)', () => {
    const file = path.join(tmp, 'nan.pb');
    const data = new Float32Array(3 * 3 * 8 * 8).fill(0.5);
    data[7] = Number.NaN;
    data[9] = Number.POSITIVE_INFINITY;
    fs.writeFileSync(file, encodeTensorProto(Tensor.float32([3, 3, 8, 8], data)));
    const out = path.join(tmp, 'nan.out');
    const run = runBuilt([CFG, '--groups', '2', '-o', out, '--calibration', file, '--print-before', 'read']);
    expectUserError(run, ErrorCodes.NON_FINITE_DATA);
    expect(run.stderr).toContain('2 NaN or infinite value(s)');
    expect(run.stderr).not.toContain('// before read');
    expect(fs.existsSync(out)).toBe(false);
  });
});

describe('one run per output', () => {
  it('a second run on an output another live run holds is refused (SLC008); a lock a dead run left is taken over', () => {
    const out = path.join(tmp, 'locked.sliced');
    const lock = `${out}.slicec-lock`;
    // this test process stands for the other run: alive, and not the child's pid
    fs.writeFileSync(lock, JSON.stringify({ pid: process.pid, host: os.hostname(), what: 'finetune', since: '2026-12-02T00:00:00Z' }));
    for (const args of [[CFG, '--groups', '2', '-o', out], ['finetune', out, '--data', 'fashion-mnist']]) {
      const r = runBuilt(args);
      expectUserError(r, ErrorCodes.BAD_OUTPUT);
      expect(r.stderr).toMatch(/is in use by another slicec run[\s\S]*slicec finetune, pid \d+/);
    }
    expect(fs.existsSync(out)).toBe(false);
    expect(fs.existsSync(lock)).toBe(true);
    fs.writeFileSync(lock, JSON.stringify({ pid: 2 ** 22 + 12345, host: os.hostname(), what: 'compile', since: '2026-12-02T00:00:00Z' }));
    const r = runBuilt([CFG, '--groups', '2', '-o', out, '--quiet']);
    expect(r.code, r.stderr).toBe(0);
    expect(fs.existsSync(path.join(out, 'manifest.json'))).toBe(true);
    expect(fs.existsSync(lock)).toBe(false);
  });
});

describe('usage', () => {
  it('slicec -v prints the version; compile without a model names the missing model', () => {
    const v = runBuilt(['-v']);
    expect(v.code).toBe(0);
    expect(v.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
    const c = runBuilt(['compile']);
    expect(c.code).toBe(2);
    expect(c.stderr).toContain("missing required argument 'model'");
    expect(c.stderr).not.toContain('--groups');
    const g = runBuilt(['compile', CFG]);
    expectUserError(g, ErrorCodes.BAD_FLAG, 2);
    expect(g.stderr).toContain('--groups is required');
  });

  it('a mistyped command is named as one, not read as a model path; a bare word that is a file still compiles', () => {
    const typo = runBuilt(['finetun', 'cnn.sliced', '--data', 'fashion-mnist']);
    expectUserError(typo, ErrorCodes.BAD_FLAG, 2);
    expect(typo.stderr).toMatch(/unknown command "finetun"[\s\S]*did you mean slicec finetune\?/);
    const word = runBuilt(['nosuchcmd']);
    expectUserError(word, ErrorCodes.BAD_FLAG, 2);
    expect(word.stderr).toContain('run slicec --help');
    expect(runBuilt(['help']).code).toBe(0);
    const bare = path.join(tmp, 'bare');
    fs.mkdirSync(bare);
    fs.copyFileSync(CFG, path.join(bare, 'model'));
    const r = runShell('$SLICEC model --groups 2 --quiet', bare);
    expect(r.code, r.stderr).toBe(0);
    expect(fs.existsSync(path.join(bare, 'model.sliced', 'manifest.json'))).toBe(true);
  });

  it('compile --help lists the step names --print-before takes', async () => {
    const { STEPS } = await import('../compiler/pipeline.js');
    const run = runBuilt(['compile', '--help']);
    expect(run.code).toBe(0);
    const help = run.stdout.replace(/\s+/g, ' ');
    expect(help).toContain(`steps: ${STEPS.join(', ')}`);
  });
});

describe('pipes', () => {
  it('output into a pipe its reader closed (`| head`, `| true`) ends quietly', () => {
    // a long chain of nodes prints far more than a pipe buffer holds
    const file = variant('long-chain', (m) => {
      const g = m.graph;
      const last = g.nodes.at(-1)!;
      let v = last.inputs[0]!;
      for (let i = 0; i < 4000; i++) {
        const n = new Node('Identity', '', `id${i}`);
        n.setInput(0, v);
        v = n.addOutput(`id${i}_out`);
        g.addNode(n, last);
      }
      last.setInput(0, v);
    });
    const print = runShell(`$SLICEC print ${file} | head -c 100 >/dev/null; exit \${PIPESTATUS[0]}`);
    expect(print.stderr).toBe('');
    expect(print.code).toBe(0);
    // compile writes the table and then the --explain table: the second write meets the closed pipe
    const compile = runShell(`$SLICEC ${RESNET} --groups 2 --norm keep -o ${path.join(tmp, 'to-closed-pipe')} --explain | true; exit \${PIPESTATUS[0]}`);
    expect(compile.stderr).not.toContain('EPIPE');
    expect(compile.stderr).not.toMatch(STACK_LINE);
    expect(compile.code).toBe(0);
  });

  it('compile reads a model from a pipe (the file is read once)', () => {
    const out = path.join(tmp, 'from-pipe');
    const run = runShell(`$SLICEC <(cat ${CFG}) --groups 2 --norm keep -o ${out} --json`);
    expect(run.code, run.stderr).toBe(0);
    const manifest = JSON.parse(fs.readFileSync(path.join(out, 'manifest.json'), 'utf8')) as { source: { bytes: number } };
    expect(manifest.source.bytes).toBe(fs.statSync(CFG).size);
  });
});
