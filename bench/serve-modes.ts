// Latency and memory of SlicedModel per mode (per-rate sessions vs elastic.onnx) and device:
// one child process per (mode, device), so each RSS is that mode's alone. Per rate and batch size:
// the median service time of 30 runs inside the worker (session.run only), and the process RSS
// after loading and after the runs.
//
//   npx tsx bench/serve-modes.ts DIR [--batches 1,32,256] [--devices cpu,cuda] [--workers 1]

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { SlicedModel } from '../runtime/sliced-model.js';
import type { Device } from '../runtime/session.js';
import { argValue, median, table } from './common.js';

interface ModeResult {
  mode: string;
  device: string;
  rssLoadedMb: number;
  rssAfterMb: number;
  ms: Record<string, number>;
}

function rssMb(): number {
  return Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'))![1]) / 1024;
}

async function child(dir: string, mode: 'per-rate' | 'elastic', device: Device, batches: number[], workers: number): Promise<ModeResult> {
  const base = rssMb();
  const model = await SlicedModel.load(dir, { mode, device, workers, profileRuns: 1 });
  const rssLoadedMb = rssMb() - base;
  const ms: Record<string, number> = {};
  for (const rate of model.rates) {
    for (const batch of batches) {
      const input = model.inputs[0]!;
      const dims = (input.shape ?? []).map((d, i) => (typeof d === 'number' ? d : i === 0 ? batch : 1));
      const data = new Float32Array(dims.reduce((a, b) => a * b, 1)).fill(0.5);
      const times: number[] = [];
      for (let k = 0; k < 33; k++) {
        const r = await model.run({ [input.name]: { dtype: 'float32', dims, data } }, { rate: rate.rate });
        if (k >= 3) times.push(r.serviceMs);
      }
      ms[`${rate.rate}@${batch}`] = median(times);
    }
  }
  const rssAfterMb = rssMb() - base;
  await model.close();
  return { mode, device: model.device, rssLoadedMb, rssAfterMb, ms };
}

const dir = process.argv[2];
if (!dir) throw new Error('usage: serve-modes.ts DIR [--batches 1,32,256] [--devices cpu,cuda]');
const batches = (argValue('--batches') ?? '1,32').split(',').map(Number);
const workers = Number(argValue('--workers') ?? 1);
if (process.argv.includes('--child')) {
  const result = await child(dir, argValue('--mode') as 'per-rate' | 'elastic', argValue('--device') as Device, batches, workers);
  process.stdout.write(JSON.stringify(result));
} else {
  const results: ModeResult[] = [];
  for (const device of (argValue('--devices') ?? 'cpu').split(',')) {
    for (const mode of ['per-rate', 'elastic']) {
      const run = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), dir, '--child', '--mode', mode, '--device', device, '--batches', batches.join(','), '--workers', String(workers)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
      if (run.status !== 0) throw new Error(`${mode} on ${device} failed`);
      results.push(JSON.parse(run.stdout) as ModeResult);
    }
  }
  const keys = Object.keys(results[0]!.ms);
  const header = ['mode', 'device', 'RSS loaded MB', 'RSS after MB', ...keys.map((k) => `${k} ms`)];
  const rows = results.map((r) => [r.mode, r.device, r.rssLoadedMb.toFixed(0), r.rssAfterMb.toFixed(0), ...keys.map((k) => r.ms[k]!.toFixed(3))]);
  console.log(`service time (median of 30, in the worker) per rate@batch; RSS above the process baseline; ${workers} worker(s)`);
  for (const line of table(header, rows)) console.log(line);
}
