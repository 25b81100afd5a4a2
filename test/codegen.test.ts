// The typed module: compile writes model.ts/.js/.d.ts; the TypeScript compiler accepts a correct
// program against it and rejects a wrong input name, dtype or static dim (one tsc run over all
// the programs), and the compiled model.js serves a batch with logits of the right shape, equal
// to the rate's graph run directly.

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Manifest } from '../compiler/artifacts.js';
import { MODULE_FILES, codegen, type CodegenOptions } from '../compiler/codegen.js';
import { compile } from '../compiler/pipeline.js';
import { runFloat } from '../runtime/session.js';
import { REPO_ROOT } from './helpers/models.js';
import { runCli } from './helpers/cli.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-codegen-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const outDir = path.join(tmp, 'lenet.sliced');
// a PyTorch export whose input and output names are not identifiers ('onnx::Flatten_0', '39')
const wakeword = path.join(REPO_ROOT, 'node_modules', 'openwakeword-js', 'models', 'hello_deepa.onnx');
const wakeDir = path.join(tmp, 'wake.sliced');

// The serving runtime when this build has it, else plain per-rate sessions (see codegen-adapters).
const hasSlicedModel = fs.existsSync(path.join(REPO_ROOT, 'runtime', 'sliced-model.ts'));
const adapter: CodegenOptions = hasSlicedModel
  ? { runtime: 'sliced-model', runtimeModule: path.join(REPO_ROOT, 'runtime', 'index.js') }
  : { runtime: 'graph-session', runtimeModule: path.join(REPO_ROOT, 'runtime', 'graph-session.js') };

const PROGRAMS: Record<string, string> = {
  'good.ts': `import { load, RATES, type Inputs, type Rate } from './lenet.sliced/model.js';
const inputs: Inputs = { input: { dtype: 'float32', dims: [2, 1, 28, 28], data: new Float32Array(2 * 784) } };
const model = await load({ threads: 1 });
const smallest: Rate = RATES[0]!;
const result = await model.run(inputs, { rate: smallest });
const classes: 10 = result.outputs.output.dims[1];
const logits: Float32Array = result.outputs.output.data;
console.log(classes, logits.length);
await model.close();
`,
  'good-quoted.ts': `import { load } from './wake.sliced/model.js';
const model = await load();
const result = await model.run({ 'onnx::Flatten_0': { dtype: 'float32', dims: [1, 25, 96], data: new Float32Array(2400) } });
const score: Float32Array = result.outputs['39'].data;
console.log(score[0]);
`,
  'bad-name.ts': `import { load } from './lenet.sliced/model.js';
const model = await load();
await model.run({ image: { dtype: 'float32', dims: [1, 1, 28, 28], data: new Float32Array(784) } });
`,
  'bad-dtype.ts': `import { load } from './lenet.sliced/model.js';
const model = await load();
await model.run({ input: { dtype: 'int64', dims: [1, 1, 28, 28], data: new BigInt64Array(784) } });
`,
  'bad-dims.ts': `import { load } from './lenet.sliced/model.js';
const model = await load();
await model.run({ input: { dtype: 'float32', dims: [1, 3, 28, 28], data: new Float32Array(3 * 784) } });
`,
  'bad-rate.ts': `import { load } from './lenet.sliced/model.js';
const model = await load();
await model.run({ input: { dtype: 'float32', dims: [1, 1, 28, 28], data: new Float32Array(784) } }, { rate: 0.3 });
`,
};

let manifest: Manifest;

beforeAll(async () => {
  await compile({ model: path.join(REPO_ROOT, 'fixtures', 'lenet-bn.onnx'), groups: 4, outDir, warn: () => {} });
  await compile({ model: wakeword, groups: 2, outDir: wakeDir, warn: () => {} });
  manifest = JSON.parse(fs.readFileSync(path.join(outDir, 'manifest.json'), 'utf8')) as Manifest;
});

type Module = {
  RATES: number[];
  RATE_INFO: { rate: number; macs: number }[];
  load: (o: object) => Promise<{
    run: (i: object, o?: object) => Promise<{ outputs: Record<string, { dtype: string; dims: number[]; data: Float32Array }>; rate: number }>;
    close: () => Promise<void>;
  }>;
};

describe('typed module', () => {
  it('compile writes it and lists it in the manifest; a recompile replaces it', async () => {
    for (const f of MODULE_FILES) expect(fs.existsSync(path.join(outDir, f)), f).toBe(true);
    expect(manifest.module?.files).toEqual([...MODULE_FILES]);
    const source = fs.readFileSync(path.join(outDir, 'model.ts'), 'utf8');
    expect(source).toContain(`export type Rate = ${manifest.rates.map((r) => r.rate).join(' | ')};`);
    expect(source).toContain("import { SlicedModel } from 'slicec/runtime';");
    const again = await compile({ model: path.join(REPO_ROOT, 'fixtures', 'lenet-bn.onnx'), groups: 2, outDir, warn: () => {}, codegen: false });
    expect(again.rates).toHaveLength(2);
    expect(fs.existsSync(path.join(outDir, 'model.ts'))).toBe(false);
    await compile({ model: path.join(REPO_ROOT, 'fixtures', 'lenet-bn.onnx'), groups: 4, outDir, warn: () => {} });
  });

  it('type-checks a correct program and rejects a wrong input name, dtype, dim or rate', async () => {
    await codegen(outDir, adapter);
    await codegen(wakeDir, adapter);
    fs.writeFileSync(path.join(tmp, 'package.json'), '{"type": "module"}\n');
    for (const [name, text] of Object.entries(PROGRAMS)) fs.writeFileSync(path.join(tmp, name), text);
    fs.writeFileSync(path.join(tmp, 'tsconfig.json'), JSON.stringify({
      compilerOptions: {
        target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noEmit: true, skipLibCheck: true,
        types: ['node'], typeRoots: [path.join(REPO_ROOT, 'node_modules', '@types')],
      },
      files: [path.join(outDir, 'model.ts'), path.join(wakeDir, 'model.ts'), ...Object.keys(PROGRAMS).map((n) => path.join(tmp, n))],
    }));
    const r = spawnSync(path.join(REPO_ROOT, 'node_modules', '.bin', 'tsc'), ['-p', path.join(tmp, 'tsconfig.json'), '--pretty', 'false'], { encoding: 'utf8' });
    const errors = new Map<string, string[]>();
    for (const line of r.stdout.split('\n')) {
      const m = /^(.+?)\(\d+,\d+\): error (TS\d+: .*)$/.exec(line);
      if (m) errors.set(path.basename(m[1]!), [...(errors.get(path.basename(m[1]!)) ?? []), m[2]!]);
    }
    expect([...errors.keys()].sort(), r.stdout).toEqual(['bad-dims.ts', 'bad-dtype.ts', 'bad-name.ts', 'bad-rate.ts']);
    expect(errors.get('bad-name.ts')!.join('\n')).toMatch(/'image' does not exist in type 'Inputs'/);
    expect(errors.get('bad-dtype.ts')!.join('\n')).toMatch(/"int64"' is not assignable to type '"float32"'/);
    expect(errors.get('bad-dims.ts')!.join('\n')).toMatch(/'3' is not assignable to type '1'/);
    expect(errors.get('bad-rate.ts')!.join('\n')).toMatch(/'0.3' is not assignable to type 'Rate\b/);
  });

  it.each([['lenet-bn', outDir, 3], ['hello_deepa', wakeDir, 1]] as const)('%s: model.js serves a batch at every rate, as the rate graph does', async (_name, dir, batch) => {
    await codegen(dir, adapter);
    const compiled = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as Manifest;
    const mod = await import(pathToFileURL(path.join(dir, 'model.js')).href) as Module;
    expect(mod.RATES).toEqual(compiled.rates.map((r) => r.rate));
    expect(mod.RATE_INFO.map((r) => r.macs)).toEqual(compiled.rates.map((r) => r.macs));
    const [input] = compiled.inputs;
    const [output] = compiled.outputs;
    const dims = input!.shape!.map((d) => (typeof d === 'number' ? d : batch));
    const data = Float32Array.from({ length: dims.reduce((a, b) => a * b, 1) }, (_, i) => Math.sin(i * 0.37));
    const model = await mod.load({ threads: 1, workers: 1 });
    try {
      for (const entry of compiled.rates) {
        const result = await model.run({ [input!.name]: { dtype: 'float32', dims, data } }, { rate: entry.rate });
        expect(result.rate).toBe(entry.rate);
        const logits = result.outputs[output!.name]!;
        expect(logits.dtype).toBe('float32');
        expect(logits.dims).toEqual(output!.shape!.map((d) => (typeof d === 'number' ? d : batch)));
        const direct = await runFloat(path.join(dir, entry.file), { [input!.name]: { dims, data } });
        expect([...logits.data]).toEqual([...direct[output!.name]!.data]);
      }
    } finally {
      await model.close();
    }
  });

  it('slicec codegen DIR rewrites the module; a folder without a manifest is a user error', async () => {
    fs.rmSync(path.join(outDir, 'model.js'));
    const ok = await runCli(['codegen', outDir]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(fs.existsSync(path.join(outDir, 'model.js'))).toBe(true);
    const bad = await runCli(['codegen', tmp]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/SLC010/);
  });
});
