// What compile leaves on disk, through the built CLI: distinct rates with unique file names and a
// manifest that matches them, permissions from the umask, a symlinked -o written through, stages
// removed on SIGINT/SIGTERM and stale ones cleaned by the next run, a user's files never deleted,
// external data read through a cache's symlinks, JSON paths and MAC ratios, progress on a TTY only.

import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Manifest } from '../compiler/artifacts.js';
import { modelCost } from '../compiler/cost.js';
import { ErrorCodes } from '../compiler/diagnostics.js';
import { readModel, writeModel } from '../compiler/onnx-codec.js';
import { inferShapes } from '../compiler/shape-inference.js';
import { ensureBuilt } from './helpers/cli.js';
import { BIN, STACK_LINE, runBuilt, runShell } from './helpers/built-cli.js';
import { REPO_ROOT } from './helpers/models.js';

const RESNET = path.join(REPO_ROOT, 'fixtures', 'resnet-small.onnx');
const CFG = path.join(REPO_ROOT, 'fixtures', 'conv-flatten-gemm.onnx');
const OCR = path.join(REPO_ROOT, 'node_modules', '@gutenye', 'ocr-models', 'assets', 'ch_PP-OCRv4_rec_infer.onnx');

let tmp: string;

beforeAll(() => {
  ensureBuilt();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-outputs-'));
});

afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

function manifestOf(out: string): Manifest {
  return JSON.parse(fs.readFileSync(path.join(out, 'manifest.json'), 'utf8')) as Manifest;
}

describe('rates and file names', () => {
  it('close rates get distinct files, and each file holds the graph the manifest says', () => {
    const out = path.join(tmp, 'close');
    const run = runBuilt([RESNET, '--groups', '8', '--rates', '0.5,0.50001,1', '--norm', 'keep', '-o', out]);
    expect(run.code, run.stderr).toBe(0);
    const m = manifestOf(out);
    expect(m.rates.map((r) => r.file)).toEqual(['slices/rate-0.50000.onnx', 'slices/rate-0.50001.onnx', 'slices/rate-1.00000.onnx']);
    expect(m.rates.map((r) => r.activeGroups)).toEqual([4, 5, 8]);
    for (const r of m.rates) {
      const graph = readModel(path.join(out, r.file));
      inferShapes(graph);
      expect(modelCost(graph).macs).toBe(r.macs);
    }
    expect(fs.readdirSync(path.join(out, 'slices'))).toHaveLength(3);
  });

  it('rates that give the same graph are one rate, and the CLI says so', () => {
    const out = path.join(tmp, 'same');
    const run = runBuilt([RESNET, '--groups', '8', '--rates', '0.0001,0.0002', '--norm', 'keep', '-o', out]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toContain('note: rates 0.0001, 0.0002 give the same graph (1 active groups); compiling 0.0002 only');
    expect(manifestOf(out).rates.map((r) => r.rate)).toEqual([0.0002]);
    expect(fs.readdirSync(path.join(out, 'slices'))).toEqual(['rate-0.000.onnx']);
  });

  it('--groups larger than the layers warns and compiles one file per distinct graph', () => {
    const out = path.join(tmp, 'many-groups');
    const run = runBuilt([CFG, '--groups', '1000', '--norm', 'keep', '-o', out]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toMatch(/note: --groups 1000 is more than the \d+ channels of the widest sliced layer/);
    const m = manifestOf(out);
    // at most one graph per kept width of each union (8 + 16 + 32 channels), far below 1000
    expect(m.rates.length).toBeLessThanOrEqual(8 + 16 + 32);
    expect(new Set(m.rates.map((r) => r.macs)).size).toBe(m.rates.length);
    expect(fs.readdirSync(path.join(out, 'slices'))).toHaveLength(m.rates.length);
  });
});

describe('the output folder', () => {
  it('follows the umask (not 0700)', () => {
    const out = path.join(tmp, 'umask');
    const run = runShell(`umask 022 && $SLICEC ${RESNET} --groups 2 --norm keep -o ${out}`);
    expect(run.code, run.stderr).toBe(0);
    expect(fs.statSync(out).mode & 0o777).toBe(0o755);
    expect(fs.statSync(path.join(out, 'manifest.json')).mode & 0o777).toBe(0o644);
  });

  it('a symlinked -o is written through; the link stays', () => {
    const target = path.join(tmp, 'real-out');
    fs.mkdirSync(target);
    const link = path.join(tmp, 'link-out');
    fs.symlinkSync(target, link);
    const run = runBuilt([RESNET, '--groups', '2', '--norm', 'keep', '-o', link]);
    expect(run.code, run.stderr).toBe(0);
    expect(fs.lstatSync(link).isSymbolicLink()).toBe(true);
    expect(fs.existsSync(path.join(target, 'manifest.json'))).toBe(true);
    // a link to nothing is refused
    const dangling = path.join(tmp, 'dangling');
    fs.symlinkSync(path.join(tmp, 'nowhere'), dangling);
    const bad = runBuilt([RESNET, '--groups', '2', '-o', dangling]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain(`error ${ErrorCodes.BAD_OUTPUT}`);
    expect(fs.existsSync(path.join(tmp, 'nowhere'))).toBe(false);
  });

  it('a recompile never deletes files the user put in an earlier output', () => {
    const out = path.join(tmp, 'recompile');
    expect(runBuilt([RESNET, '--groups', '2', '--norm', 'keep', '-o', out]).code).toBe(0);
    // a plain recompile replaces the earlier output
    const again = runBuilt([RESNET, '--groups', '4', '--norm', 'keep', '-o', out]);
    expect(again.code, again.stderr).toBe(0);
    expect(manifestOf(out).groups).toBe(4);
    fs.writeFileSync(path.join(out, 'notes.txt'), 'mine');
    // a copy of the input model is the user's too, though the manifest names its source
    fs.copyFileSync(RESNET, path.join(out, 'resnet-small.onnx'));
    const run = runBuilt([RESNET, '--groups', '2', '--norm', 'keep', '-o', out]);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(`error ${ErrorCodes.OUTPUT_HAS_USER_FILES}`);
    expect(run.stderr).toContain('notes.txt, resnet-small.onnx');
    expect(run.stderr).not.toMatch(STACK_LINE);
    expect(fs.readFileSync(path.join(out, 'notes.txt'), 'utf8')).toBe('mine');
    expect(manifestOf(out).groups).toBe(4);
  });
});

describe('stages', () => {
  function stages(dir: string, name: string): string[] {
    return fs.readdirSync(dir).filter((e) => e.startsWith(`.${name}.tmp-`));
  }

  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    it(`${signal} while writing removes the stage`, async () => {
      const dir = fs.mkdtempSync(path.join(tmp, 'sig-'));
      const out = path.join(dir, 'out');
      const child = spawn(process.execPath, [BIN, OCR, '--groups', '8', '--norm', 'keep', '-o', out], { stdio: 'ignore' });
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, sig) => resolve({ code, signal: sig })));
      let sent = false;
      const deadline = Date.now() + 60_000;
      while (!sent && Date.now() < deadline) {
        const staged = stages(dir, 'out').map((s) => path.join(dir, s, 'slices'));
        if (staged.some((s) => fs.existsSync(s) && fs.readdirSync(s).length > 0)) {
          child.kill(signal);
          sent = true;
        } else {
          await new Promise((r) => setTimeout(r, 5));
        }
      }
      const result = await exited;
      expect(sent, 'the stage appeared').toBe(true);
      expect(result.signal).toBe(signal);
      expect(stages(dir, 'out')).toEqual([]);
      expect(fs.existsSync(out)).toBe(false);
    });
  }

  it('the next run removes stages a killed run left, and only those', () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'stale-'));
    const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' }).stdout;
    const stale = path.join(dir, '.out.tmp-0123456789ab');
    fs.mkdirSync(path.join(stale, 'slices'), { recursive: true });
    fs.writeFileSync(path.join(stale, '.slicec-stage'), JSON.stringify({ pid: Number(dead), host: os.hostname() }));
    const foreign = path.join(dir, '.out.tmp-notours');
    fs.mkdirSync(foreign);
    const run = runBuilt([RESNET, '--groups', '2', '--norm', 'keep', '-o', path.join(dir, 'out')]);
    expect(run.code, run.stderr).toBe(0);
    expect(fs.existsSync(stale)).toBe(false);
    expect(fs.existsSync(foreign)).toBe(true);
    expect(fs.readdirSync(dir).sort()).toEqual(['.out.tmp-notours', 'out']);
  });
});

describe('external data through a cache of symlinks (the Hugging Face layout)', () => {
  it('reads snapshots/<rev>/model.onnx whose data links to ../../blobs/<hash>', () => {
    const cache = path.join(tmp, 'hub');
    const snapshot = path.join(cache, 'snapshots', 'rev1');
    const blobs = path.join(cache, 'blobs');
    fs.mkdirSync(snapshot, { recursive: true });
    fs.mkdirSync(blobs);
    const staging = path.join(tmp, 'hub-staging');
    fs.mkdirSync(staging);
    writeModel(readModel(RESNET), path.join(staging, 'model.onnx'), { externalData: { location: 'model.onnx_data', threshold: 256 } });
    fs.renameSync(path.join(staging, 'model.onnx'), path.join(blobs, 'aaa'));
    fs.renameSync(path.join(staging, 'model.onnx_data'), path.join(blobs, 'bbb'));
    fs.symlinkSync('../../blobs/aaa', path.join(snapshot, 'model.onnx'));
    fs.symlinkSync('../../blobs/bbb', path.join(snapshot, 'model.onnx_data'));
    const verify = runBuilt(['verify', path.join(snapshot, 'model.onnx')]);
    expect(verify.code, verify.stderr).toBe(0);
    const out = path.join(tmp, 'hub-out');
    const run = runBuilt([path.join(snapshot, 'model.onnx'), '--groups', '2', '--norm', 'keep', '-o', out]);
    expect(run.code, run.stderr).toBe(0);
    expect(manifestOf(out).rates).toHaveLength(2);
  });

  it('still refuses a location that escapes the folder', () => {
    const dir = path.join(tmp, 'escape');
    fs.mkdirSync(dir);
    const model = readModel(RESNET);
    writeModel(model, path.join(dir, 'model.onnx'), { externalData: { location: 'w.bin', threshold: 256 } });
    const bytes = fs.readFileSync(path.join(dir, 'model.onnx'));
    // same length, so every protobuf length prefix stays right
    const patched = Buffer.from(bytes.toString('latin1').replaceAll('w.bin', '../ww'), 'latin1');
    fs.writeFileSync(path.join(dir, 'bad.onnx'), patched);
    const run = runBuilt(['verify', path.join(dir, 'bad.onnx')]);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(`error ${ErrorCodes.BAD_EXTERNAL_DATA}`);
    expect(run.stderr).toContain('escapes');
  });
});

describe('what compile prints', () => {
  it('--json gives absolute paths and each rate\'s macRatio', () => {
    const out = path.join(tmp, 'json');
    const run = runBuilt([RESNET, '--groups', '4', '--rates', '0.25,0.5', '--norm', 'keep', '-o', out, '--json']);
    expect(run.code, run.stderr).toBe(0);
    const result = JSON.parse(run.stdout) as { outDir: string; manifestFile: string; elasticFile: string; rates: { file: string; macRatio: number }[] };
    for (const p of [result.outDir, result.manifestFile, result.elasticFile, ...result.rates.map((r) => r.file)]) {
      expect(path.isAbsolute(p), p).toBe(true);
      expect(fs.existsSync(p), p).toBe(true);
    }
    expect(result.rates.map((r) => r.macRatio)).toEqual(manifestOf(out).rates.map((r) => r.macRatio));
  });

  it('the table shows the manifest\'s MAC ratio when rate 1 is not compiled', () => {
    const out = path.join(tmp, 'table');
    const run = runBuilt([RESNET, '--groups', '4', '--rates', '0.5', '--norm', 'keep', '-o', out]);
    expect(run.code, run.stderr).toBe(0);
    const ratio = manifestOf(out).rates[0]!.macRatio.toFixed(3);
    expect(run.stdout).toMatch(new RegExp(`^0\\.5\\s+2\\s+[\\d,]+\\s+[\\d,]+\\s+${ratio.replace('.', '\\.')}\\s+slices/rate-0\\.500\\.onnx$`, 'm'));
  });

  it('--norm gn that changes the full-rate model says how to get the accuracy back', () => {
    const run = runBuilt([CFG, '--groups', '4', '--norm', 'gn', '-o', path.join(tmp, 'gn-note')]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toContain('note: the group norms change the full-rate model');
    expect(run.stderr).toContain('Fine-tuning restores accuracy');
    expect(run.stderr).toContain('slicec finetune');
    expect(run.stderr).toContain('--norm bn or keep');
  });

  it('progress bars on a terminal, none off it or with --json/--quiet', () => {
    const out = path.join(tmp, 'progress');
    const tty = runShell(`script -qefc "$SLICEC ${RESNET} --groups 4 --norm keep -o ${out}" /dev/null`);
    expect(tty.code, tty.stdout).toBe(0);
    // the per-rate step counts its rates with a speed; every step shows its elapsed time
    expect(tty.stdout).toMatch(/prune-to-rate\s+\|[^|]*\| 4\/4 \| [\d.]+\/s \| \d+s/);
    expect(tty.stdout).toMatch(/couple-channels\s+\|[^|]*\| 1\/1 \| \d+s/);
    const quiet = runShell(`script -qefc "$SLICEC ${RESNET} --groups 4 --norm keep -o ${out} --quiet" /dev/null`);
    expect(quiet.code, quiet.stdout).toBe(0);
    expect(quiet.stdout).not.toContain('prune-to-rate');
    const piped = runBuilt([RESNET, '--groups', '4', '--norm', 'keep', '-o', out]);
    expect(piped.stderr).toBe('');
  });
});
