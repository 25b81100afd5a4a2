// Compile time against a plain codec round trip: `npx tsx bench/compile.ts [--norm keep|gn|none]`.
// For the real PaddleOCR rec model (10.8 MB) and a ~10 MB and a ~120 MB stack of Gemm+Relu
// layers (fixtures/big.ts) it measures compile() with G=8 and the default 8 rates next to
// readModel + writeModel of the same file, runs interleaved, median of 3 runs each (1 run of
// compile when a first run takes longer than LONG_MS, as it may for the ~120 MB model; the
// table says how many runs each median is over). compile writes 8 pruned graphs, so its output
// is several times the input; output bytes are reported too. Target: compile within 4x of the
// round trip. A per-step breakdown from CompileResult.stats is printed for the largest model.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { readModel, writeModel } from '../compiler/onnx-codec.js';
import { compile } from '../compiler/pipeline.js';
import type { CompileResult } from '../compiler/pipeline-types.js';
import { buildBigModel } from '../fixtures/big.js';
import { REC_MODEL, median, table, timeAsyncMs, timeMs } from './common.js';

const RUNS = 3;
// --norm keep (default) measures slicing alone; --norm gn adds group norms and their calibration
// (one onnxruntime run per group norm on a synthetic batch).
const normFlag = process.argv.indexOf('--norm');
const NORM = (normFlag >= 0 ? process.argv[normFlag + 1] : 'keep') as 'gn' | 'keep' | 'none';
const LONG_MS = 60_000;
const GROUPS = 8;
const MB = 1024 * 1024;
const TARGET = 4;

function dirBytes(dir: string): number {
  let total = 0;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    total += entry.isDirectory() ? dirBytes(full) : fs.statSync(full).size;
  }
  return total;
}

interface Measured {
  name: string;
  size: number;
  codecMs: number;
  compileMs: number;
  runs: number;
  outBytes: number;
  result: CompileResult;
}

async function measure(name: string, file: string, dir: string): Promise<Measured> {
  const codecOut = path.join(dir, 'roundtrip.onnx');
  const outDir = path.join(dir, 'sliced');
  const codec: number[] = [];
  const compiled: number[] = [];
  let result: CompileResult | null = null;
  let outBytes = 0;
  for (let i = 0; i < RUNS; i++) {
    codec.push(timeMs(() => writeModel(readModel(file), codecOut)));
    fs.rmSync(codecOut, { force: true });
    const run = await timeAsyncMs(() => compile({ model: file, groups: GROUPS, outDir, norm: NORM, log: () => {} }));
    compiled.push(run.ms);
    result = run.value;
    outBytes = dirBytes(outDir);
    fs.rmSync(outDir, { recursive: true, force: true });
    if (run.ms > LONG_MS) break;
  }
  return {
    name,
    size: fs.statSync(file).size,
    codecMs: median(codec),
    compileMs: median(compiled),
    runs: compiled.length,
    outBytes,
    result: result!,
  };
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-bench-compile-'));
  const results: Measured[] = [];
  try {
    results.push(await measure('paddleocr rec', REC_MODEL, dir));
    for (const target of [10 * MB, 120 * MB]) {
      const file = path.join(dir, `big-${target / MB}mb.onnx`);
      writeModel(buildBigModel(target), file);
      results.push(await measure(`big ${target / MB} MB`, file, dir));
      fs.rmSync(file);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }

  console.log(`compile (G=${GROUPS}, ${results[0]!.result.rates.length} rates) vs readModel + writeModel, median of ${RUNS} runs unless noted`);
  const rows = results.map((r) => [
    r.name,
    `${(r.size / MB).toFixed(1)} MB`,
    `${(r.outBytes / MB).toFixed(1)} MB`,
    r.codecMs.toFixed(0),
    r.compileMs.toFixed(0),
    `${(r.compileMs / r.codecMs).toFixed(2)}x`,
    r.compileMs / r.codecMs <= TARGET ? 'yes' : 'no',
    String(r.runs),
  ]);
  for (const l of table(['model', 'size', 'output', 'read+write ms', 'compile ms', 'ratio', `≤ ${TARGET}x`, 'runs'], rows)) console.log(l);

  const largest = results.reduce((a, b) => (b.size > a.size ? b : a));
  const steps = largest.result.stats;
  const inSteps = steps.reduce((s, x) => s + x.ms, 0);
  const stepRows = steps.map((s) => [s.step, s.ms.toFixed(0), `${((100 * s.ms) / largest.compileMs).toFixed(1)}%`, String(s.nodes)]);
  stepRows.push(['(outside steps: read, snapshot, decode, cost, write)', (largest.compileMs - inSteps).toFixed(0), `${((100 * (largest.compileMs - inSteps)) / largest.compileMs).toFixed(1)}%`, '']);
  console.log('');
  console.log(`steps of the last compile of ${largest.name} (${(largest.size / MB).toFixed(1)} MB), total ${largest.compileMs.toFixed(0)} ms`);
  for (const l of table(['step', 'ms', 'share', 'nodes'], stepRows)) console.log(l);
  console.log(`target: compile within ${TARGET}x of read+write`);
}

await main();
