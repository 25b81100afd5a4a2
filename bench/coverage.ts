// Slicing coverage on real PyTorch exports:
// `npx tsx bench/coverage.ts [--groups 8] [--norm keep|gn|none] [--only a,b]`.
// Compiles every model the export script left in the cache (test/.cache/torch-exports, made by
// scripts/make-torch-exports.py) with --norm keep (default) at rates .5 and 1 and prints, per model, the
// MAC ratio MAC(.5)/MAC(1) from the manifest, the share of producer layers sliced, and the pin
// reasons that remain (most frequent first, with how many layers each blocks).

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Manifest } from '../compiler/artifacts.js';
import { compile } from '../compiler/pipeline.js';
import { argValue, table, timeAsyncMs } from './common.js';

const CACHE = fileURLToPath(new URL('../test/.cache/torch-exports/', import.meta.url));
const GROUPS = Number(argValue('--groups') ?? 8);
const ONLY = (argValue('--only') ?? '').split(',').filter((s) => s);
const NORM = (argValue('--norm') ?? 'keep') as 'keep' | 'gn' | 'none';

async function main(): Promise<void> {
  if (!fs.existsSync(CACHE)) throw new Error(`no exports in ${CACHE}: run /usr/bin/python3 scripts/make-torch-exports.py first`);
  const files = fs.readdirSync(CACHE).filter((f) => f.endsWith('.onnx') && (ONLY.length === 0 || ONLY.some((o) => f.startsWith(o)))).sort();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-coverage-'));
  const rows: string[][] = [];
  const details: string[] = [];
  try {
    for (const file of files) {
      const outDir = path.join(tmp, file);
      const { ms, value: result } = await timeAsyncMs(() => compile({ model: path.join(CACHE, file), groups: GROUPS, rates: [0.5, 1], norm: NORM, outDir, log: () => {} }));
      const manifest = JSON.parse(fs.readFileSync(result.manifestFile, 'utf8')) as Manifest;
      const half = manifest.rates.find((r) => r.rate === 0.5)!;
      const sliced = manifest.layers.filter((l) => l.sliced).length;
      const reasons = new Map<string, number>();
      for (const l of manifest.layers) if (!l.sliced) reasons.set(l.reason!, (reasons.get(l.reason!) ?? 0) + 1);
      const top = [...reasons].sort((a, b) => b[1] - a[1]);
      rows.push([file.replace(/\.onnx$/, ''), half.macRatio.toFixed(3), `${sliced}/${manifest.layers.length}`, (ms / 1000).toFixed(1), top.length ? `${top[0]![1]}× ${top[0]![0]}` : '']);
      for (const [r, n] of top) details.push(`${file}: ${n}× ${r}`);
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  console.log(`G = ${GROUPS}, --norm ${NORM}, rates 0.5 and 1`);
  console.log(table(['model', 'MAC(.5)/MAC(1)', 'layers sliced', 'compile s', 'most frequent pin reason'], rows).join('\n'));
  console.log('\nall pin reasons:');
  console.log(details.join('\n'));
}

await main();
