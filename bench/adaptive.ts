// Benchmark of per-input adaptive computation: a stream of Fashion-MNIST test images replayed
// through `slicec serve` (a child process, 1 worker), labels kept by the client only. Per model
// and mode: MACs per request (the server's own count, `macs` in each response), latency p50/p99
// from the client, accuracy against the labels. Modes: the full model, the best static rate (the
// cheapest whose recorded accuracy is within 0.5 point of rate 1's), slicing alone (the policy with
// an accuracy floor: least compute meeting it), exits alone (rate 1 with early exits), exits +
// slicing (the floor, with exits), the cascade across rates. Exits are measured after a warm-up
// of unlabeled training images (the heads start untrained and learn from that traffic) and keep
// learning during the measurement. The stream is the test split's odd images (calibrate-cascade
// calibrates on the even ones), shuffled.
//
// Models (built once, cached under bench/out/adaptive/): the bundled Fashion-MNIST CNN compiled
// with --exits auto (G = 8, rates 1/.75/.5/.25, BatchNorm kept) and fine-tuned 1 epoch; a
// ResNet-style model for 28×28 (stem + 3 residual stages, width 16/32/64) trained 3 epochs by
// `slicec train`, compiled the same way and fine-tuned 1 epoch. Each then gets `slicec eval` and
// `slicec calibrate-cascade`.
//
// Then, with and without exits, an open-loop phase: Poisson arrivals at the full model's
// one-at-a-time rate (`--load-factor 1`) for 10 s under `--slo-ms 20`: SLO attainment and effective accuracy, and the
// buffer's bytes and the trainer's busy share read from /metrics after it.
//
//   npx tsx bench/adaptive.ts [--models fashion,resnet] [--requests 3000] [--warmup 10000] [--agreement 0.99]
//     [--cache-bytes 268435456] [--trainer-share 0.25] [--slo-ms 20] [--load-seconds 10] [--load-factor 1]

import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Value } from '../compiler/ir.js';
import { writeModel } from '../compiler/onnx-codec.js';
import { basicBlock, Exporter } from '../fixtures/exporter.js';
import { loadDataset, materialize, type Split } from '../runtime/data.js';
import { rateModelName, readServedManifest } from '../runtime/manifest.js';
import { argValue, startServer, table } from './common.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const OUT = path.join(ROOT, 'bench', 'out', 'adaptive');
const RATES = [0.25, 0.5, 0.75, 1];

await bench();

/** ResNet-style classifier for 1×28×28: stem, three residual stages (one block each), global pool, fc. */
function buildResnet(width: number): ReturnType<Exporter['output']> {
  const e = new Exporter({ opset: 13, irVersion: 8, seed: 0xada, docString: 'bench adaptive: ResNet for 28x28' });
  let x = e.input('input', [1, 28, 28]);
  x = e.relu('relu', e.batchNorm('bn1', e.conv('conv1', x, 1, width, { kernel: 3, pad: 1 }), width));
  x = basicBlock(e, 'layer1.0', x, width, width, 1);
  x = basicBlock(e, 'layer2.0', x, width, 2 * width, 2);
  x = basicBlock(e, 'layer3.0', x, 2 * width, 4 * width, 2);
  x = e.flatten(e.b.globalAveragePool(x, { name: '/avgpool/GlobalAveragePool' }));
  return e.output(e.linear('fc', x, 4 * width, 10), 'logits', [10]);
}

/** The compiled, fine-tuned, evaluated and cascade-calibrated folder of a model (built once). */
async function prepare(name: 'fashion' | 'resnet'): Promise<string> {
  const dir = path.join(OUT, name);
  const manifestFile = path.join(dir, 'manifest.json');
  if (fs.existsSync(manifestFile) && JSON.parse(fs.readFileSync(manifestFile, 'utf8')).cascade) return dir;
  const { compile } = await import('../compiler/pipeline.js');
  const { runTraining } = await import('../compiler/finetune.js');
  const { evaluateTarget, calibrateCascadeFolder } = await import('../compiler/eval.js');
  fs.mkdirSync(OUT, { recursive: true });
  let source = path.join(ROOT, 'fixtures', 'fashion-mnist-cnn.onnx');
  if (name === 'resnet') {
    source = path.join(OUT, 'resnet.onnx');
    if (!fs.existsSync(source)) {
      const untrained = path.join(OUT, 'resnet.untrained.onnx');
      writeModel(buildResnet(16), untrained);
      console.log('training the ResNet-style model: 3 epochs of slicec train (several minutes)');
      await runTraining(untrained, { data: 'fashion-mnist', out: source, overrides: { epochs: 3 }, progress: false });
    }
  }
  fs.rmSync(dir, { recursive: true, force: true });
  console.log(`${name}: compile --exits auto, fine-tune 1 epoch, eval, calibrate-cascade`);
  await compile({ model: source, groups: 8, rates: RATES, norm: 'keep', exits: 'auto', outDir: dir, codegen: false, log: () => {}, warn: () => {} });
  await runTraining(dir, { data: 'fashion-mnist', overrides: { epochs: 1, schedule: { warmupEpochs: 0 } }, progress: false });
  await evaluateTarget(dir, { data: 'fashion-mnist', latencyRuns: 5 });
  await calibrateCascadeFolder(dir, { data: 'fashion-mnist' });
  return dir;
}

async function stopServer(child: ChildProcess): Promise<void> {
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  await exited;
}

interface Answer {
  logits: number[];
  macs: number;
  exit: number | undefined;
  ms: number;
}

function requestBody(image: Float32Array, parameters: Record<string, number>): Buffer {
  return Buffer.from(JSON.stringify({ inputs: [{ name: 'input', shape: [1, 1, 28, 28], datatype: 'FP32', data: Array.from(image) }], parameters }));
}

/** The binary tensor extension: a JSON header, then the raw float32 bytes. */
function binaryBody(image: Float32Array, parameters: Record<string, number>): { body: Buffer; headerLength: number } {
  const header = Buffer.from(JSON.stringify({ inputs: [{ name: 'input', shape: [1, 1, 28, 28], datatype: 'FP32', parameters: { binary_data_size: image.byteLength } }], parameters }));
  return { body: Buffer.concat([header, Buffer.from(image.buffer, image.byteOffset, image.byteLength)]), headerLength: header.length };
}

function infer(agent: http.Agent, url: string, image: Float32Array | { body: Buffer; headerLength: number }, parameters: Record<string, number>, t0 = performance.now()): Promise<Answer> {
  const binary = image instanceof Float32Array ? null : image;
  const body = binary ? binary.body : requestBody(image as Float32Array, parameters);
  const headers: Record<string, string> = { 'Content-Type': binary ? 'application/octet-stream' : 'application/json', 'Content-Length': String(body.length) };
  if (binary) headers['Inference-Header-Content-Length'] = String(binary.headerLength);
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'POST', agent, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const ms = performance.now() - t0;
        const json = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { outputs?: { data: number[] }[]; parameters?: { macs: number; exit?: number }; error?: string };
        if (res.statusCode !== 200 || !json.outputs) return reject(new Error(`HTTP ${res.statusCode}: ${json.error}`));
        resolve({ logits: json.outputs[0]!.data, macs: json.parameters!.macs, exit: json.parameters!.exit, ms });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

function argmax(z: ArrayLike<number>): number {
  let best = 0;
  for (let c = 1; c < z.length; c++) if (z[c]! > z[best]!) best = c;
  return best;
}

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

interface Row {
  model: string;
  mode: string;
  macs: number;
  accuracy: number;
  p50: number;
  p99: number;
  early: number | null;
}

interface Stream {
  images: Float32Array[];
  labels: number[];
}

/** Images of a split at the given indices, one Float32Array each, with their labels. */
function take(split: Split, indices: number[]): Stream {
  const { x, y } = materialize(split, Int32Array.from(indices));
  const per = 28 * 28;
  const data = x.data as Float32Array;
  return { images: indices.map((_, i) => data.slice(i * per, (i + 1) * per)), labels: Array.from(y.data as BigInt64Array, Number) };
}

function shuffled(n: number, seed: number): number[] {
  const order = Array.from({ length: n }, (_, i) => i);
  let s = seed;
  for (let i = n - 1; i > 0; i--) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    const j = s % (i + 1);
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order;
}

async function replay(port: number, model: string, stream: Stream, parameters: Record<string, number>): Promise<Omit<Row, 'model' | 'mode'>> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const url = `http://127.0.0.1:${port}/v2/models/${model}/infer`;
  let right = 0;
  let macs = 0;
  let early = 0;
  let withExits = 0;
  const times: number[] = [];
  for (let i = 0; i < stream.images.length; i++) {
    const a = await infer(agent, url, stream.images[i]!, parameters);
    if (argmax(a.logits) === stream.labels[i]) right++;
    macs += a.macs;
    times.push(a.ms);
    if (a.exit !== undefined) {
      withExits++;
      if (a.exit >= 0) early++;
    }
  }
  agent.destroy();
  times.sort((a, b) => a - b);
  const n = stream.images.length;
  return { macs: macs / n, accuracy: right / n, p50: quantile(times, 0.5), p99: quantile(times, 0.99), early: withExits > 0 ? early / withExits : null };
}

interface LoadRow {
  model: string;
  mode: string;
  perSecond: number;
  attainment: number;
  effective: number;
  macs: number;
  p99: number;
}

/**
 * Open loop: Poisson arrivals at `perSecond` for `seconds`, each request a different stream image,
 * sent at its intended time whether or not earlier ones were answered; latency from the intended
 * time. A request answered within `sloMs` attains the objective; effective accuracy counts a
 * late or failed answer as wrong.
 */
async function openLoop(port: number, model: string, stream: Stream, perSecond: number, seconds: number, sloMs: number): Promise<Omit<LoadRow, 'model' | 'mode'>> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  const url = `http://127.0.0.1:${port}/v2/models/${model}/infer`;
  let s = 0x10ad;
  const arrivals: number[] = [];
  for (let t = 0; t < seconds * 1000; ) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    t += (-Math.log(1 - s / 2 ** 32) / perSecond) * 1000;
    arrivals.push(t);
  }
  const bodies = arrivals.map((_, i) => binaryBody(stream.images[i % stream.images.length]!, { deadline_ms: sloMs }));
  const start = performance.now() + 50;
  const pending: Promise<void>[] = [];
  let inTime = 0;
  let effective = 0;
  let macs = 0;
  let answered = 0;
  const latency: number[] = [];
  for (let i = 0; i < arrivals.length; i++) {
    const due = start + arrivals[i]!;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    pending.push(infer(agent, url, bodies[i]!, {}, due).then(
      (a) => {
        latency.push(a.ms);
        answered++;
        macs += a.macs;
        if (a.ms <= sloMs) {
          inTime++;
          if (argmax(a.logits) === stream.labels[i % stream.images.length]) effective++;
        }
      },
      () => {
        latency.push(Infinity);
      },
    ));
  }
  await Promise.all(pending);
  agent.destroy();
  latency.sort((a, b) => a - b);
  return { perSecond, attainment: inTime / arrivals.length, effective: effective / arrivals.length, macs: macs / Math.max(1, answered), p99: quantile(latency, 0.99) };
}

async function scrape(port: number): Promise<Record<string, number>> {
  const text = await new Promise<string>((resolve, reject) => {
    http.get(`http://127.0.0.1:${port}/metrics`, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve(body));
    }).on('error', reject);
  });
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const m = /^(slicec_cache_buffer_bytes|slicec_cache_trainer_busy_ratio|slicec_exit_heads_on|slicec_process_resident_memory_bytes) ([0-9.e+-]+)$/.exec(line);
    if (m) out[m[1]!] = Number(m[2]);
  }
  return out;
}

interface BenchOptions {
  requests: number;
  warmup: number;
  agreement: number;
  cacheBytes: number;
  trainerShare: number;
  sloMs: number;
  loadSeconds: number;
  loadFactor: number;
}

async function benchModel(name: 'fashion' | 'resnet', opts: BenchOptions): Promise<{ rows: Row[]; load: LoadRow[]; notes: string[] }> {
  const dir = await prepare(name);
  const manifest = readServedManifest(dir);
  const raw = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as { cascade: { accuracy: number; meanMacs: number } };
  const full = manifest.rates[manifest.rates.length - 1]!;
  const fullAcc = full.accuracy!;
  const floor = fullAcc - 0.005;
  const staticRate = manifest.rates.find((r) => r.accuracy! >= floor)!;
  const data = await loadDataset('fashion-mnist', { expect: { shape: ['N', 1, 28, 28], dtype: 'f32' } });
  const test = data.test!;
  const odd = shuffled(Math.floor(test.x.dims[0]! / 2), 0x5eed).map((k) => 2 * k + 1).slice(0, opts.requests);
  const stream = take(test, odd);
  const warm = take(data.train, shuffled(data.train.x.dims[0]!, 0xa11).slice(0, opts.warmup));
  const src = manifest.sourceName;
  const rows: Row[] = [];
  const load: LoadRow[] = [];
  const notes: string[] = [];
  const addLoad = (mode: string, r: Omit<LoadRow, 'model' | 'mode'>): void => {
    load.push({ model: name, mode, ...r });
    console.log(`  ${mode} at ${r.perSecond.toFixed(0)}/s: ${(r.attainment * 100).toFixed(1)} % within ${opts.sloMs} ms, ${(r.macs / 1e6).toFixed(3)} M MACs`);
  };
  const add = (mode: string, r: Omit<Row, 'model' | 'mode'>): void => {
    rows.push({ model: name, mode, ...r });
    console.log(`  ${mode}: ${(r.macs / 1e6).toFixed(3)} M MACs, ${(r.accuracy * 100).toFixed(2)} %, p50 ${r.p50.toFixed(2)} ms`);
  };
  console.log(`${name}: ${stream.images.length} test images, floor ${(floor * 100).toFixed(2)} % (rate 1: ${(fullAcc * 100).toFixed(2)} %)`);

  let server = await startServer(dir, []);
  add('full model (rate 1)', await replay(server.port, rateModelName(src, 1), stream, {}));
  add(`best static rate (${staticRate.rate})`, await replay(server.port, rateModelName(src, staticRate.rate), stream, {}));
  add(`slicing alone (min_accuracy ${floor.toFixed(4)})`, await replay(server.port, src, stream, { min_accuracy: floor }));
  // open-loop load at a multiple of what the full model answers one at a time over HTTP
  const perSecond = opts.loadFactor * (1000 / rows[0]!.p50);
  addLoad(`slicing, --slo-ms ${opts.sloMs}`, await openLoop(server.port, src, stream, perSecond, opts.loadSeconds, opts.sloMs));
  await stopServer(server.child);

  fs.rmSync(path.join(dir, 'exits', 'cache'), { recursive: true, force: true });
  server = await startServer(dir, ['--exits', '--agreement', String(opts.agreement), '--cache-bytes', String(opts.cacheBytes), '--trainer-share', String(opts.trainerShare)]);
  const t0 = performance.now();
  // warm-up: unlabeled training images, half at rate 1 and half through the policy, so the heads of the rates both modes use learn
  const half = Math.floor(warm.images.length / 2);
  await replay(server.port, rateModelName(src, 1), { images: warm.images.slice(0, half), labels: warm.labels.slice(0, half) }, {});
  await replay(server.port, src, { images: warm.images.slice(half), labels: warm.labels.slice(half) }, { min_accuracy: floor });
  const warmS = (performance.now() - t0) / 1000;
  add('exits alone (rate 1)', await replay(server.port, rateModelName(src, 1), stream, {}));
  add('exits + slicing (min_accuracy)', await replay(server.port, src, stream, { min_accuracy: floor }));
  addLoad(`exits + slicing, --slo-ms ${opts.sloMs}`, await openLoop(server.port, src, stream, perSecond, opts.loadSeconds, opts.sloMs));
  const m = await scrape(server.port);
  notes.push(`${name}: warm-up ${opts.warmup} images in ${warmS.toFixed(0)} s; buffer ${(m.slicec_cache_buffer_bytes! / 2 ** 20).toFixed(1)} MiB of ${(opts.cacheBytes / 2 ** 20).toFixed(1)} MiB; trainer busy ${(m.slicec_cache_trainer_busy_ratio! * 100).toFixed(1)} % of wall time (bound ${(opts.trainerShare * 100).toFixed(0)} %); heads on ${m.slicec_exit_heads_on}; server RSS ${(m.slicec_process_resident_memory_bytes! / 2 ** 20).toFixed(0)} MiB`);
  await stopServer(server.child);
  const heads = path.join(dir, 'exits', 'cache', 'heads.json');
  if (fs.existsSync(heads)) {
    const saved = JSON.parse(fs.readFileSync(heads, 'utf8')) as { heads: { rate: number; exit: number; enabled: boolean; threshold: number | null; agreement: number | null; coverage: number; overall: number | null; steps: number }[] };
    for (const h of saved.heads) notes.push(`${name}: head rate ${h.rate} exit ${h.exit}: ${h.enabled ? 'on' : 'off'}, threshold ${h.threshold?.toFixed(4) ?? '-'}, agreement at it ${h.agreement === null ? '-' : (h.agreement * 100).toFixed(2) + ' %'}, answers ${(h.coverage * 100).toFixed(1)} % of the held-back, top-1 agreement ${h.overall === null ? '-' : (h.overall * 100).toFixed(1) + ' %'}, ${h.steps} steps`);
  }

  server = await startServer(dir, ['--cascade']);
  add('cascade (min_accuracy)', await replay(server.port, src, stream, { min_accuracy: floor }));
  await stopServer(server.child);
  notes.push(`${name}: cascade calibrated on the even test images: ${(raw.cascade.accuracy * 100).toFixed(2)} %, ${(raw.cascade.meanMacs / 1e6).toFixed(3)} M MACs`);
  return { rows, load, notes };
}

async function bench(): Promise<void> {
  const models = (argValue('--models') ?? 'fashion,resnet').split(',') as ('fashion' | 'resnet')[];
  const opts = {
    requests: Number(argValue('--requests') ?? 3000),
    warmup: Number(argValue('--warmup') ?? 10000),
    agreement: Number(argValue('--agreement') ?? 0.99),
    cacheBytes: Number(argValue('--cache-bytes') ?? 256 * 2 ** 20),
    trainerShare: Number(argValue('--trainer-share') ?? 0.25),
    sloMs: Number(argValue('--slo-ms') ?? 20),
    loadSeconds: Number(argValue('--load-seconds') ?? 10),
    loadFactor: Number(argValue('--load-factor') ?? 1),
  };
  const rows: Row[] = [];
  const load: LoadRow[] = [];
  const notes: string[] = [];
  for (const name of models) {
    const r = await benchModel(name, opts);
    rows.push(...r.rows);
    load.push(...r.load);
    notes.push(...r.notes);
  }
  const fullOf = (model: string): Row => rows.find((r) => r.model === model && r.mode.startsWith('full'))!;
  console.log(`\nper-input adaptive computation, ${opts.requests} test images per mode, 1 worker, 1 request in flight; agreement target ${opts.agreement}`);
  for (const line of table(
    ['model', 'mode', 'MACs/request', '× rate 1', 'accuracy', 'Δ vs full', 'p50 ms', 'p99 ms', 'answered early'],
    rows.map((r) => {
      const f = fullOf(r.model);
      return [r.model, r.mode, `${(r.macs / 1e6).toFixed(3)} M`, (r.macs / f.macs).toFixed(3), `${(r.accuracy * 100).toFixed(2)} %`, `${((r.accuracy - f.accuracy) * 100).toFixed(2)}`, r.p50.toFixed(2), r.p99.toFixed(2), r.early === null ? '-' : `${(r.early * 100).toFixed(1)} %`];
    }),
  )) console.log(line);
  console.log(`\nopen loop, Poisson arrivals at ${opts.loadFactor}× the full model's one-at-a-time rate (binary requests), ${opts.loadSeconds} s, objective ${opts.sloMs} ms (late, shed and failed count as misses)`);
  for (const line of table(
    ['model', 'mode', 'arrivals/s', 'SLO attainment', 'effective accuracy', 'MACs/request', 'p99 ms'],
    load.map((r) => [r.model, r.mode, r.perSecond.toFixed(0), `${(r.attainment * 100).toFixed(1)} %`, `${(r.effective * 100).toFixed(2)} %`, `${(r.macs / 1e6).toFixed(3)} M`, Number.isFinite(r.p99) ? r.p99.toFixed(1) : 'timeout']),
  )) console.log(line);
  console.log('');
  for (const model of models) {
    const f = fullOf(model);
    const exits = rows.find((r) => r.model === model && r.mode.startsWith('exits alone'))!;
    const cascade = rows.find((r) => r.model === model && r.mode.startsWith('cascade'))!;
    const cut = 1 - exits.macs / f.macs;
    const loss = (f.accuracy - exits.accuracy) * 100;
    console.log(`${model}: exits cut ${(cut * 100).toFixed(1)} % of the MACs at ${loss.toFixed(2)} points (target ≥ 30 % at ≤ 0.5): ${cut >= 0.3 && loss <= 0.5 ? 'met' : 'NOT met'}`);
    const gap = (cascade.accuracy - f.accuracy) * 100;
    console.log(`${model}: cascade ${(f.macs / cascade.macs).toFixed(2)}× less compute at ${gap.toFixed(2)} points (target ≥ 1.5× at ±0.3): ${f.macs / cascade.macs >= 1.5 && Math.abs(gap) <= 0.3 ? 'met' : 'NOT met'}`);
  }
  for (const n of notes) console.log(n);
}
