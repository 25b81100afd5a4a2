// The package as users get it: `npm pack`, install the tarball into an empty project, and run the
// installed `slicec` there (version, a compile) and the package exports (compiler API, runtime).
// Slow (an npm install, about 15 s with a warm cache): it lives in its own file. It needs no
// network beyond npm's local cache: onnxruntime-node's download step is skipped, and npm prefers
// cached packages. dist/ is built once up front and packed with --ignore-scripts, because the
// `prepare` build that `npm pack` runs would rewrite dist/ under other test files using it.

import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt } from './helpers/cli.js';
import { REPO_ROOT } from './helpers/models.js';

const PKG = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string; scripts: Record<string, string> };
const VERSION = PKG.version;
const env = { ...process.env, ONNXRUNTIME_NODE_INSTALL: 'skip', npm_config_update_notifier: 'false' };

let tmp: string;
let project: string;
let files: string[];

function run(command: string, args: string[], cwd: string): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(command, args, { cwd, env, encoding: 'utf8' });
  if (r.error) throw r.error;
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

beforeAll(() => {
  ensureBuilt();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-pack-'));
  const packed = JSON.parse(execFileSync('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', tmp], { cwd: REPO_ROOT, env, encoding: 'utf8' })) as {
    filename: string;
    files: { path: string }[];
  }[];
  files = packed[0]!.files.map((f) => f.path);
  project = path.join(tmp, 'project');
  fs.mkdirSync(project);
  fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'uses-slicec', version: '1.0.0', private: true, type: 'module' }));
  const install = run('npm', ['install', path.join(tmp, packed[0]!.filename), '--prefer-offline', '--no-audit', '--no-fund'], project);
  if (install.code !== 0) throw new Error(`npm install of the tarball failed:\n${install.stdout}${install.stderr}`);
}, 300_000);

afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('npm pack', () => {
  it('builds dist/ before packing (npm pack and npm ci run `prepare`)', () => {
    expect(PKG.scripts.prepare).toBe('tsc -p tsconfig.build.json');
  });

  it('ships the compiled code and its type declarations, not sources, tests, benches or goldens', () => {
    expect(files).toContain('bin/slicec.js');
    expect(files).toContain('dist/compiler/cli.js');
    expect(files).toContain('dist/compiler/index.js');
    expect(files).toContain('dist/compiler/index.d.ts');
    expect(files).toContain('dist/runtime/index.d.ts');
    expect(files).toContain('dist/passes/prune-to-rate.js');
    // the one fixture shipped is the demo's bundled pretrained model
    expect(files).toContain('fixtures/fashion-mnist-cnn.onnx');
    for (const f of files.filter((name) => name !== 'fixtures/fashion-mnist-cnn.onnx')) {
      expect(f, f).not.toMatch(/^(test|bench|fixtures|scripts|compiler|passes|runtime)\//);
      expect(f, f).not.toMatch(/^dist\/(test|bench|fixtures)\//);
      const source = f.endsWith('.ts') && !f.endsWith('.d.ts');
      expect(source || f.endsWith('.map') || f.includes('golden'), f).toBe(false);
    }
  });
});

describe('the installed package', () => {
  it('npx slicec --version', () => {
    const r = run('npx', ['--no-install', 'slicec', '--version'], project);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe(VERSION);
  });

  it('npx slicec compiles a model', () => {
    const r = run('npx', ['--no-install', 'slicec', path.join(REPO_ROOT, 'fixtures', 'resnet-small.onnx'), '--groups', '2', '-o', 'out', '--json'], project);
    expect(r.code, r.stderr).toBe(0);
    const result = JSON.parse(r.stdout) as { rates: { file: string }[] };
    expect(result.rates).toHaveLength(2);
    for (const rate of result.rates) expect(fs.statSync(rate.file).size).toBeGreaterThan(1000);
    expect(fs.existsSync(path.join(project, 'out', 'manifest.json'))).toBe(true);
  });

  it('exports the compiler API and the runtime, with types', () => {
    const script = [
      "import { compile, readModel, writeModel, printModel, verifyModel, ErrorCodes, isUserError } from 'slicec';",
      "import { runFloat, SlicedModel as FromRuntime } from 'slicec/runtime';",
      "import { SlicedModel } from 'slicec';",
      `const m = readModel(${JSON.stringify(path.join(REPO_ROOT, 'fixtures', 'mlp.onnx'))});`,
      "verifyModel(m, { mode: 'input' });",
      "console.log(JSON.stringify({ compile: typeof compile, writeModel: typeof writeModel, runFloat: typeof runFloat, load: typeof SlicedModel.load, same: SlicedModel === FromRuntime,",
      "  print: printModel(m).startsWith('model '), code: ErrorCodes.BAD_OUTPUT, user: isUserError(new Error()) }));",
    ].join('\n');
    fs.writeFileSync(path.join(project, 'use.mjs'), script);
    const r = run(process.execPath, ['use.mjs'], project);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ compile: 'function', writeModel: 'function', runFloat: 'function', load: 'function', same: true, print: true, code: 'SLC008', user: false });
    const pkg = path.join(project, 'node_modules', 'slicec');
    expect(fs.readFileSync(path.join(pkg, 'dist', 'compiler', 'index.d.ts'), 'utf8')).toContain('compile');
    expect(fs.existsSync(path.join(pkg, 'dist', 'runtime', 'index.d.ts'))).toBe(true);
  });

  it('npx slicec demo: compiles, fine-tunes and evaluates the bundled model, and writes the report', () => {
    const r = run('npx', ['--no-install', 'slicec', 'demo', '-o', 'demo', '--json'], project);
    expect(r.code, r.stderr).toBe(0);
    const summary = JSON.parse(r.stdout) as { outDir: string; report: string; rows: { rate: number; accuracy: number; accuracyBefore: number }[] };
    expect(summary.rows.map((row) => row.rate).sort()).toEqual([0.25, 0.5, 0.75, 1]);
    const quarter = summary.rows.find((row) => row.rate === 0.25)!;
    // one epoch lifts the narrowest rate (57 % before, activation-ordered) to near the full model
    expect(quarter.accuracy).toBeGreaterThan(0.88);
    expect(quarter.accuracy).toBeGreaterThan(quarter.accuracyBefore + 0.2);
    expect(summary.rows.find((row) => row.rate === 1)!.accuracy).toBeGreaterThan(0.91);
    expect(fs.existsSync(summary.report)).toBe(true);
    expect(fs.existsSync(path.join(summary.outDir, 'model.d.ts'))).toBe(true);
  }, 420_000);
});
