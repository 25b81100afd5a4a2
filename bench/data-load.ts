// Data loading times: the package datasets' first parse (JSON → uint8, cache written) against
// later loads from the cache, an .npz of the same size, and batch gathering. Uses a temporary
// cache folder and removes it.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { BatchIterator, loadDataset, materialize } from '../runtime/data.js';
import { writeNpz } from '../runtime/npz.js';
import { median, nowMs, table } from './common.js';

const cacheDir = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-bench-data-'));
const expect = { shape: ['N', 1, 28, 28] as const, dtype: 'f32' };
const rows: string[][] = [];

async function timed(label: string, runs: number, fn: () => Promise<unknown>): Promise<void> {
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const start = nowMs();
    await fn();
    times.push(nowMs() - start);
  }
  rows.push([label, String(runs), median(times).toFixed(0)]);
}

try {
  for (const name of ['fashion-mnist', 'mnist']) {
    await timed(`${name}: parse JSON + write cache`, 1, () => loadDataset(name, { expect: { ...expect, shape: [...expect.shape] }, cacheDir }));
    await timed(`${name}: load from cache`, 5, () => loadDataset(name, { expect: { ...expect, shape: [...expect.shape] }, cacheDir }));
  }
  const fashion = await loadDataset('fashion-mnist', { expect: { ...expect, shape: [...expect.shape] }, cacheDir });
  const npz = path.join(cacheDir, 'train.npz');
  writeNpz(npz, materialize(fashion.train));
  await timed(`train.npz (60000 float32 images, ${(fs.statSync(npz).size / 2 ** 20).toFixed(0)} MB)`, 3, () => loadDataset(npz, { expect: { ...expect, shape: [...expect.shape] } }));
  const batches = new BatchIterator(fashion.train, { batchSize: 128, seed: 1 });
  await timed('one epoch of batch-128 batches (gather + uint8 → float32)', 3, async () => {
    for (const _ of batches.epoch()) { /* gather only */ }
  });
  const cacheBytes = fs.readdirSync(cacheDir).filter((f) => f.endsWith('.npz') && f !== 'train.npz').map((f) => `${f} ${(fs.statSync(path.join(cacheDir, f)).size / 2 ** 20).toFixed(1)} MB`);
  console.log('data loading, median ms');
  for (const line of table(['what', 'runs', 'ms'], rows)) console.log(line);
  console.log(`cache files: ${cacheBytes.join(', ')}`);
} finally {
  fs.rmSync(cacheDir, { recursive: true, force: true });
}
