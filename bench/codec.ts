// Codec round-trip cost against a raw file copy: `npx tsx bench/codec.ts`.
// For a ~10 MB and a ~120 MB model (fixtures/big.ts) it measures the median of 5 runs of
// readModel + writeModel versus fs.readFileSync + fs.writeFileSync of the same bytes, and the
// peak RSS of one round trip in a fresh child process minus that of a child that loads the same
// modules and does nothing (the tsx loader alone is ~90 MB). Targets: round trip within 5x of the raw copy on the 100 MB model;
// peak memory under 3x the file size.

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { readModel, writeModel } from '../compiler/onnx-codec.js';
import { buildBigModel } from '../fixtures/big.js';
import { median, timeMs } from './common.js';

const RUNS = 5;
const MB = 1024 * 1024;

function roundTrip(file: string, out: string): void {
  writeModel(readModel(file), out);
}

/** Peak RSS (bytes) of a child running this file in `mode`. */
function childPeakRss(mode: 'empty' | 'roundtrip', file: string, out: string): number {
  const self = fileURLToPath(import.meta.url);
  const r = spawnSync(process.execPath, ['--import', 'tsx', self, '--child', mode, file, out], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`child ${mode} failed: ${r.stderr}`);
  const report = JSON.parse(r.stdout.trim().split('\n').pop()!) as { maxRssKiB: number };
  return report.maxRssKiB * 1024;
}

/**
 * This process's peak RSS in KiB. On Linux, getrusage's maxRSS survives fork + exec, so a child
 * spawned by a big parent reports at least the parent's RSS; VmHWM in /proc/self/status belongs
 * to the child's own address space and does not. Elsewhere maxRSS is all there is.
 */
function peakRssKiB(): number {
  try {
    const match = /^VmHWM:\s+(\d+) kB$/m.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    if (match) return Number(match[1]);
  } catch {
    // no procfs: fall through
  }
  return process.resourceUsage().maxRSS;
}

function runChild(mode: string, file: string, out: string): void {
  if (mode === 'roundtrip') roundTrip(file, out);
  console.log(JSON.stringify({ maxRssKiB: peakRssKiB() }));
}

function main(): void {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-bench-'));
  const rows: string[][] = [];
  try {
    for (const target of [10 * MB, 120 * MB]) {
      const file = path.join(dir, `big-${target / MB}mb.onnx`);
      writeModel(buildBigModel(target), file);
      const size = fs.statSync(file).size;
      const copy = path.join(dir, 'copy.onnx');
      const out = path.join(dir, 'out.onnx');

      const raw: number[] = [];
      const codec: number[] = [];
      for (let i = 0; i < RUNS; i++) {
        raw.push(timeMs(() => fs.writeFileSync(copy, fs.readFileSync(file))));
        codec.push(timeMs(() => roundTrip(file, out)));
      }
      if (!fs.readFileSync(out).equals(fs.readFileSync(file))) throw new Error(`round trip of ${file} changed its bytes`);

      const baseline = childPeakRss('empty', file, out);
      const peak = childPeakRss('roundtrip', file, out);
      const rawMs = median(raw);
      const codecMs = median(codec);
      rows.push([
        `${(size / MB).toFixed(1)} MB`,
        rawMs.toFixed(1),
        codecMs.toFixed(1),
        `${(codecMs / rawMs).toFixed(2)}x`,
        `${((peak - baseline) / MB).toFixed(1)} MB`,
        `${((peak - baseline) / size).toFixed(2)}x`,
      ]);
      fs.rmSync(file);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }

  const header = ['model size', 'raw ms', 'codec ms', 'codec/raw', 'peak RSS - base', 'RSS/file'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => c.padStart(widths[i]!)).join('  ');
  console.log(`codec round trip (readModel + writeModel) vs raw read + copy, median of ${RUNS} runs`);
  console.log(line(header));
  for (const r of rows) console.log(line(r));
  console.log('targets: codec/raw within 5x on the ~100 MB model; peak RSS under 3x the file size');
}

if (process.argv[2] === '--child') runChild(process.argv[3]!, process.argv[4]!, process.argv[5]!);
else main();
