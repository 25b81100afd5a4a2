// Slicing coverage on real PyTorch exports:
// `npx tsx bench/coverage.ts [--groups 8] [--cache DIR] [--only a,b]`.
// Compiles every model the export script left in the cache (default test/.cache/torch-exports,
// made by `/usr/bin/python3 scripts/make-torch-exports.py [--out DIR] [--size N]`) at rates .5
// and 1, once with --norm keep and once with --norm gn (uncalibrated: the MAC counts do not
// depend on the fitted scales), and prints per model the MAC ratio MAC(.5)/MAC(1) from the
// manifest in both modes, the share of producer layers sliced (gn), and the pin reasons that
// remain (gn; most frequent first, with the number of layers each blocks; the output layer, pinned
// in every model since the output width is fixed, is left out).

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Manifest } from '../compiler/artifacts.js';
import { compile } from '../compiler/pipeline.js';
import { argValue, table } from './common.js';

const CACHE = argValue('--cache') ?? fileURLToPath(new URL('../test/.cache/torch-exports/', import.meta.url));
const GROUPS = Number(argValue('--groups') ?? 8);
const ONLY = (argValue('--only') ?? '').split(',').filter((s) => s);

async function compiled(file: string, norm: 'keep' | 'gn', dir: string): Promise<Manifest> {
  const outDir = path.join(dir, `${path.basename(file)}-${norm}`);
  const result = await compile({ model: file, groups: GROUPS, rates: [0.5, 1], norm, calibrate: false, outDir, log: () => {} });
  return JSON.parse(fs.readFileSync(result.manifestFile, 'utf8')) as Manifest;
}

/** A pin reason without the layer it names, so equal causes in different layers add up. */
function cause(reason: string): string {
  return reason.replace(/^(\S+) "[^"]*"/, '$1');
}

async function main(): Promise<void> {
  if (!fs.existsSync(CACHE)) {
    process.stderr.write(`no exports in ${CACHE}: run /usr/bin/python3 scripts/make-torch-exports.py first\n`);
    process.exitCode = 1;
    return;
  }
  const files = fs.readdirSync(CACHE).filter((f) => f.endsWith('.onnx') && (ONLY.length === 0 || ONLY.some((o) => f.startsWith(o)))).sort();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-coverage-'));
  const rows: string[][] = [];
  const details: string[] = [];
  try {
    for (const file of files) {
      const keep = await compiled(path.join(CACHE, file), 'keep', tmp);
      const gn = await compiled(path.join(CACHE, file), 'gn', tmp);
      const reasons = new Map<string, number>();
      for (const l of gn.layers) if (!l.sliced) reasons.set(cause(l.reason!), (reasons.get(cause(l.reason!)) ?? 0) + 1);
      // the classifier's output width is the model's output: pinned in every model, by design
      const others = [...reasons].filter(([r]) => !r.startsWith('reaches graph output')).sort((a, b) => b[1] - a[1]);
      const sliced = gn.layers.filter((l) => l.sliced).length;
      rows.push([
        file.replace(/\.onnx$/, ''),
        keep.rates[0]!.macRatio.toFixed(3),
        gn.rates[0]!.macRatio.toFixed(3),
        `${sliced}/${gn.layers.length}`,
        others.map(([r, n]) => `${n}× ${r.split(' ').slice(0, 6).join(' ')} …`).join('; ') || '—',
      ]);
      for (const [r, n] of others) details.push(`${file}: ${n}× ${r}`);
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  console.log(`G = ${GROUPS}, rates 0.5 and 1, ${CACHE}`);
  console.log(table(['model', 'MAC(.5)/MAC(1) keep', 'gn', 'layers sliced (gn)', 'pinned besides the output layer (gn)'], rows).join('\n'));
  console.log('\npin reasons in full (gn; every model also pins its output layer):');
  console.log(details.join('\n'));
}

await main();
