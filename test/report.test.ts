// slicec report: the page and its SVG charts for a freshly compiled folder (training absent) and
// for one with recorded accuracy, latency and a training log; the page rendered in headless
// Chromium (Debian's `chromium`) draws every chart: the DOM holds each SVG's marks, and a
// screenshot shows the bars in their colour.

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Manifest } from '../compiler/artifacts.js';
import { compile } from '../compiler/pipeline.js';
import { readTraining, writeReport } from '../compiler/report.js';
import { REPO_ROOT } from './helpers/models.js';
import { runCli } from './helpers/cli.js';

const CHROMIUM = '/usr/bin/chromium';
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-report-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const outDir = path.join(tmp, 'resnet.sliced');
const model = path.join(REPO_ROOT, 'fixtures', 'resnet-small.onnx');

function chromium(args: string[]): string {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found: run \`apt-get install -y chromium\` (scripts/setup.sh does)`);
  const r = spawnSync(CHROMIUM, [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', `--user-data-dir=${fs.mkdtempSync(path.join(tmp, 'chromium-'))}`, ...args,
  ], { encoding: 'utf8', timeout: 60_000 });
  if (r.status !== 0) throw new Error(`chromium failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

function readManifest(): Manifest {
  return JSON.parse(fs.readFileSync(path.join(outDir, 'manifest.json'), 'utf8')) as Manifest;
}

beforeAll(async () => {
  await compile({ model, groups: 4, outDir, warn: () => {}, codegen: false });
});

describe('slicec report', () => {
  it('writes the page and the charts it has data for, and says what is absent', async () => {
    const files = await writeReport(outDir);
    expect(files.map((f) => path.relative(outDir, f))).toEqual(['report/index.html', 'report/cost.svg', 'report/layers.svg']);
    expect(readManifest().report?.files).toEqual(['report/index.html', 'report/cost.svg', 'report/layers.svg']);
    const html = fs.readFileSync(files[0]!, 'utf8');
    expect(html).toMatch(/No fine-tune has run in this folder yet/);
    expect(html).toMatch(/No accuracy or latency is recorded/);
    expect(html).toContain('reaches graph output output');
    expect((html.match(/<svg /g) ?? []).length).toBe(2);
    expect(html).not.toMatch(/<script|https?:\/\/(?!www\.w3\.org)/);
    for (const svg of files.slice(1)) expect(fs.readFileSync(svg, 'utf8')).toMatch(/^<svg [^>]*class="marks"/);
    // the report's files are the folder's own: compiling into it again replaces them
    await compile({ model, groups: 4, outDir, warn: () => {}, codegen: false });
    expect(fs.existsSync(path.join(outDir, 'report'))).toBe(false);
  });

  it('draws accuracy, latency and training curves when they were recorded', async () => {
    const manifest = readManifest();
    manifest.rates.forEach((r, i) => Object.assign(r, { accuracy: 0.7 + 0.05 * i, latencyMs: 0.2 + 0.3 * i }));
    fs.writeFileSync(path.join(outDir, 'manifest.json'), JSON.stringify(manifest));
    const lines = [];
    for (let step = 1; step <= 40; step++) lines.push(JSON.stringify({ type: 'step', step, epoch: Math.ceil(step / 20), loss: 2.3 / Math.sqrt(step), lr: 0.1 }));
    for (const epoch of [1, 2]) lines.push(JSON.stringify({ type: 'eval', epoch, rates: manifest.rates.map((r) => ({ rate: r.rate, accuracy: 0.5 + 0.1 * epoch * r.rate, loss: 1 / epoch, samples: 100 })) }));
    fs.mkdirSync(path.join(outDir, 'training'));
    fs.writeFileSync(path.join(outDir, 'training', 'log.jsonl'), `${lines.join('\n')}\n{"type":"step","st`);
    const training = readTraining(outDir, manifest)!;
    expect(training).toMatchObject({ source: 'training/log.jsonl', skippedLines: 1 });
    expect(training.steps).toHaveLength(40);
    expect(training.evals).toHaveLength(2 * manifest.rates.length);
    const files = (await writeReport(outDir)).map((f) => path.basename(f));
    expect(files).toEqual(['index.html', 'cost.svg', 'accuracy-vs-macs.svg', 'latency-vs-macs.svg', 'accuracy-vs-latency.svg', 'training-loss.svg', 'training-eval.svg', 'layers.svg']);
    const html = fs.readFileSync(path.join(outDir, 'report', 'index.html'), 'utf8');
    expect(html).toMatch(/40 steps, 2 evaluations; 1 unreadable log lines skipped/);
    expect(html).toContain('75.00 %');
  });

  it('reads the curves from the manifest\'s training section when there is no log', () => {
    const manifest = readManifest();
    const history = [1, 2, 3].map((epoch) => ({ epoch, rates: manifest.rates.map((r) => ({ rate: r.rate, accuracy: null, loss: 2 / epoch / r.rate, samples: 50 })) }));
    const empty = fs.mkdtempSync(path.join(tmp, 'no-log-'));
    const curves = readTraining(empty, { ...manifest, training: { history } } as Manifest)!;
    expect(curves).toMatchObject({ source: 'manifest.json', steps: [], skippedLines: 0 });
    expect(curves.evals).toHaveLength(3 * manifest.rates.length);
    expect(curves.evals[0]).toEqual({ epoch: 1, rate: manifest.rates[0]!.rate, accuracy: null, loss: 2 / manifest.rates[0]!.rate });
    expect(readTraining(empty, manifest)).toBeNull();
  });

  it('renders in headless Chromium with every chart drawn', async () => {
    const page = `file://${path.join(outDir, 'report', 'index.html')}`;
    const dom = chromium(['--dump-dom', page]);
    const figures = [...dom.matchAll(/<figure id="chart-([a-z-]+)">([\s\S]*?)<\/figure>/g)];
    expect(figures.map((f) => f[1])).toEqual(['cost', 'accuracy-vs-macs', 'latency-vs-macs', 'accuracy-vs-latency', 'training-loss', 'training-eval', 'layers']);
    for (const [, name, body] of figures) {
      // every chart has its marks: bars (rect), lines, points (symbol) with drawn paths
      expect(body, name).toMatch(/<g class="mark-(rect|line|symbol) role-mark[^"]*"[^>]*>\s*<path [^>]*d="M/);
    }
    const shot = path.join(tmp, 'report.png');
    chromium(['--window-size=1300,2400', `--screenshot=${shot}`, page]);
    const { data, info } = await sharp(shot).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    let barBlue = 0;
    let nonWhite = 0;
    for (let i = 0; i < data.length; i += info.channels) {
      const [r, g, b] = [data[i]!, data[i + 1]!, data[i + 2]!];
      if (Math.abs(r - 0x4c) < 6 && Math.abs(g - 0x78) < 6 && Math.abs(b - 0xa8) < 6) barBlue++;
      if (r < 240 || g < 240 || b < 240) nonWhite++;
    }
    // the cost chart's bars alone cover well over 10,000 pixels at this size
    expect(barBlue).toBeGreaterThan(10_000);
    expect(nonWhite / (info.width * info.height)).toBeGreaterThan(0.05);
  });

  it('slicec report through the CLI; a folder that is not compiled is a user error', async () => {
    const ok = await runCli(['report', outDir]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/report\/index\.html and 7 charts/);
    const bad = await runCli(['report', tmp]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/SLC010/);
  });
});
