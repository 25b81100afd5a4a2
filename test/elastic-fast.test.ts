// The fast elastic graph (passes/make-elastic-fast.ts): at every compiled rate, and at rates in
// between (which run the next compiled rate up), it equals that rate's pruned graph in
// onnxruntime-node (and, at one rate, onnxruntime-web); it stores the weights once (never per
// branch), passes onnx.checker, and onnxruntime folds every weight Slice of its branches at load.

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { GraphProto, TensorProto } from 'onnx-buf';
import * as ort from 'onnxruntime-node';
import * as ortWeb from 'onnxruntime-web';
import { afterAll, describe, expect, it } from 'vitest';
import { decodeModelProto, readModel } from '../compiler/onnx-codec.js';
import { compile } from '../compiler/pipeline.js';
import { activeGroups } from '../passes/partition-channels.js';
import { fixtureModels, randomFeeds, REPO_ROOT, type Feeds } from './helpers/models.js';
import { relativeError } from './helpers/compare.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-elastic-fast-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const GROUPS = 4;
/** Rate 0.75 is not compiled: its requests must run the rate-1 graph. */
const RATES = [0.25, 0.5, 1];
const PROBES = [0.01, 0.25, 0.3, 0.5, 0.6, 0.75, 0.9, 1];
/** Fixtures whose file is mostly weights, where the whole file must stay near 1×. */
const WEIGHT_BOUND = ['mlp', 'lenet-bn', 'conv-flatten-gemm'];

type Outputs = Record<string, { dims: readonly number[]; data: Float32Array }>;

async function run(session: ort.InferenceSession, feeds: Feeds): Promise<Outputs> {
  const out = await session.run(feeds);
  return Object.fromEntries(session.outputNames.map((n) => [n, { dims: out[n]!.dims, data: out[n]!.data as Float32Array }]));
}

function open(file: string, extra: ort.InferenceSession.SessionOptions = {}): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(file, { intraOpNumThreads: 1, interOpNumThreads: 1, logSeverityLevel: 4, ...extra });
}

async function runWeb(file: string, feeds: Feeds): Promise<Outputs> {
  ortWeb.env.wasm.numThreads = 1;
  const session = await ortWeb.InferenceSession.create(new Uint8Array(fs.readFileSync(file)));
  const webFeeds: Record<string, ortWeb.Tensor> = {};
  for (const [name, t] of Object.entries(feeds)) webFeeds[name] = new ortWeb.Tensor('float32', t.data as Float32Array, t.dims);
  try {
    const out = await session.run(webFeeds);
    return Object.fromEntries(session.outputNames.map((n) => [n, { dims: out[n]!.dims, data: out[n]!.data as Float32Array }]));
  } finally {
    await session.release();
  }
}

function withRate(feeds: Feeds, input: string, rate: number): Feeds {
  return { ...feeds, [input]: new ort.Tensor('float32', Float32Array.of(rate), []) };
}

/** The compiled rate a request at `rate` runs: the smallest with at least as many groups. */
function servedRate(rate: number, compiled: number[]): number {
  const k = activeGroups(rate, GROUPS);
  return compiled.find((r) => activeGroups(r, GROUPS) >= k) ?? compiled[compiled.length - 1]!;
}

/** Every graph of a model: the main graph and, depth first, each subgraph attribute. */
function graphsOf(g: GraphProto): GraphProto[] {
  const out = [g];
  for (const n of g.node) for (const a of n.attribute) if (a.g) out.push(...graphsOf(a.g));
  return out;
}

/** Bytes of constant data in every scope: initializers and Constant nodes' tensors. */
function constantBytes(file: string): number {
  const size = (t: TensorProto): number => t.rawData.byteLength + 4 * t.floatData.length + 8 * t.int64Data.length;
  let bytes = 0;
  for (const g of graphsOf(decodeModelProto(fs.readFileSync(file)).graph!)) {
    for (const t of g.initializer) bytes += size(t);
    for (const n of g.node) for (const a of n.attribute) if (n.opType === 'Constant' && a.t) bytes += size(a.t);
  }
  return bytes;
}

const compiled: { name: string; file: string; elastic: string }[] = [];
const paddle = path.join(REPO_ROOT, 'node_modules', '@gutenye', 'ocr-models', 'assets', 'ch_ppocr_mobile_v2.0_cls_infer.onnx');
const wakeword = path.join(REPO_ROOT, 'node_modules', 'openwakeword-js', 'models', 'hello_deepa.onnx');
const models = [...fixtureModels().map((m) => m.file), wakeword, paddle];
// with BatchNorms kept (keep, bn) each leaf cuts its statistics from a per-rate table
const cases: { file: string; norm?: 'keep' | 'bn' }[] = [
  ...models.map((file) => ({ file })),
  { file: path.join(REPO_ROOT, 'fixtures', 'lenet-bn.onnx'), norm: 'keep' },
  { file: path.join(REPO_ROOT, 'fixtures', 'resnet-small.onnx'), norm: 'bn' },
];

describe('fast elastic graph equals the pruned graph of the rate it serves', () => {
  for (const { file, norm } of cases) {
    const name = `${path.basename(file, '.onnx')}${norm ? `-${norm}` : ''}`;
    it(name, async () => {
      const outDir = path.join(tmp, name);
      const result = await compile({ codegen: false, model: file, groups: GROUPS, rates: RATES, outDir, elastic: 'fast', calibrate: false, norm: norm ?? 'gn' });
      compiled.push({ name, file: file, elastic: result.elasticFile });
      const proto = decodeModelProto(fs.readFileSync(result.elasticFile));
      expect(proto.graph!.node.filter((n) => n.opType === 'If')).toHaveLength(1);

      const feeds = randomFeeds(readModel(file), 7, 2)!;
      const elastic = await open(result.elasticFile);
      const pruned = new Map<number, Outputs>();
      for (const r of result.rates) {
        const session = await open(path.join(outDir, r.file));
        pruned.set(r.rate, await run(session, feeds));
        await session.release();
      }
      for (const rate of PROBES) {
        const want = pruned.get(servedRate(rate, RATES))!;
        const got = await run(elastic, withRate(feeds, 'slice_rate', rate));
        for (const [output, t] of Object.entries(want)) {
          expect(got[output]!.dims).toEqual(t.dims);
          expect(relativeError(t.data, got[output]!.data), `${output} at rate ${rate}`).toBeLessThan(1e-5);
        }
      }
      // not a constant graph: neighbouring compiled rates give different outputs
      const quarter = Object.values(pruned.get(0.25)!)[0]!.data;
      const full = Object.values(pruned.get(1)!)[0]!.data;
      expect(relativeError(full, quarter)).toBeGreaterThan(1e-3);
      await elastic.release();

      // onnxruntime-web (wasm) runs the If tree too
      const web = await runWeb(result.elasticFile, withRate(feeds, 'slice_rate', 0.3));
      for (const [output, t] of Object.entries(pruned.get(servedRate(0.3, RATES))!)) {
        expect(relativeError(t.data, web[output]!.data), `${output} in onnxruntime-web`).toBeLessThan(1e-5);
      }

      // weights are stored once: the constants of every scope together stay near the model's
      expect(constantBytes(result.elasticFile)).toBeLessThanOrEqual(1.2 * constantBytes(file));
      if (WEIGHT_BOUND.includes(name)) expect(fs.statSync(result.elasticFile).size).toBeLessThanOrEqual(1.2 * fs.statSync(file).size);
    });
  }

  it('onnxruntime folds every weight Slice and Gather of the branches at load', async () => {
    expect(compiled.length).toBeGreaterThan(0);
    for (const c of compiled) {
      const optimized = path.join(tmp, `${c.name}-optimized.onnx`);
      const session = await open(c.elastic, { graphOptimizationLevel: 'extended', optimizedModelFilePath: optimized });
      await session.release();
      const main = decodeModelProto(fs.readFileSync(optimized)).graph!;
      // the full-size weights were folded into the branches and are gone from the outer graph
      for (const t of main.initializer) expect(t.dims.reduce((n, d) => n * Number(d), 1), `${c.name}: ${t.name}`).toBeLessThan(16);
      for (const g of graphsOf(main).slice(1)) {
        const local = new Set([...g.initializer.map((t) => t.name), ...g.node.flatMap((n) => n.output)]);
        for (const n of g.node) {
          if (n.opType === 'Slice' || n.opType === 'Gather') expect(local.has(n.input[0]!), `${c.name}: ${n.opType} of ${n.input[0]}`).toBe(true);
        }
      }
    }
  });

  it('onnx.checker accepts it', () => {
    const check = 'import sys, onnx\nfor f in sys.argv[1:]:\n    onnx.checker.check_model(onnx.load(f), full_check=True)\n';
    const result = spawnSync('/usr/bin/python3', ['-c', check, ...compiled.map((c) => c.elastic)], { encoding: 'utf8' });
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
  });

  it('eight rates: every probe runs the graph of the next compiled rate up', async () => {
    const file = path.join(REPO_ROOT, 'fixtures', 'resnet-small.onnx');
    const outDir = path.join(tmp, 'eight');
    const result = await compile({ codegen: false, model: file, groups: 8, outDir, elastic: 'fast', calibrate: false });
    expect(result.rates).toHaveLength(8);
    const feeds = randomFeeds(readModel(file), 5, 2)!;
    const elastic = await open(result.elasticFile);
    for (let i = 1; i <= 16; i++) {
      const rate = i / 16;
      const k = activeGroups(rate, 8);
      const served = result.rates.find((r) => r.activeGroups >= k)!;
      const session = await open(path.join(outDir, served.file));
      const want = await run(session, feeds);
      await session.release();
      const got = await run(elastic, withRate(feeds, 'slice_rate', rate));
      for (const [output, t] of Object.entries(want)) expect(relativeError(t.data, got[output]!.data), `rate ${rate}`).toBeLessThan(1e-5);
    }
    await elastic.release();
  });

  it('one compiled rate: the pruned graph inlined, no If', async () => {
    const file = path.join(REPO_ROOT, 'fixtures', 'resnet-small.onnx');
    const outDir = path.join(tmp, 'single');
    const result = await compile({ codegen: false, model: file, groups: GROUPS, rates: [0.5], outDir, elastic: 'fast', calibrate: false });
    const proto = decodeModelProto(fs.readFileSync(result.elasticFile));
    expect(proto.graph!.node.some((n) => n.opType === 'If')).toBe(false);
    const feeds = randomFeeds(readModel(file), 3, 2)!;
    const prunedSession = await open(path.join(outDir, result.rates[0]!.file));
    const want = await run(prunedSession, feeds);
    await prunedSession.release();
    const elastic = await open(result.elasticFile);
    for (const rate of [0.1, 1]) {
      const got = await run(elastic, withRate(feeds, 'slice_rate', rate));
      for (const [output, t] of Object.entries(want)) expect(relativeError(t.data, got[output]!.data)).toBeLessThan(1e-5);
    }
    await elastic.release();
  });
});
