// Load benchmark of `slicec serve` on a conv model, CPU: open-loop traces (average load at half
// the full model's capacity → 10× spike → recovery, and a bursty Gamma trace of the same mean)
// against the adaptive server and the static baselines (every single rate, full width with load
// shedding). Each run is a fresh server process (`slicec serve`, 1 worker) and a generator
// process (bench/load-gen.ts). Prints per-phase tables, the overhead of the runtime over a bare
// session.run (and over a bare worker hop, the floor of any worker-thread runtime) and of HTTP
// over the runtime, server RSS, and writes an SVG plot.
//
// Accuracy per rate, for effective accuracy: the manifest's when an eval recorded it, else
// --accuracy, else an assumed curve (printed as such).
//
//   npx tsx bench/load.ts [--width 128] [--slo-ms 100] [--scale 1] [--traces spike,bursty] [--accuracy a,b,c,d,e]
//                         [--exits] [--only config,...] [--build-only] [--overhead-only]
// --exits adds `adaptive + exits`: the model compiled with --exits auto, served with --exits
// (heads trained online from the traffic, within their buffer and CPU bounds).

import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { Model, Value } from '../compiler/ir.js';
import { writeModel } from '../compiler/onnx-codec.js';
import { compile } from '../compiler/pipeline.js';
import { Rng } from '../compiler/rng.js';
import { basicBlock, Exporter } from '../fixtures/exporter.js';
import { rateModelName, readServedManifest } from '../runtime/manifest.js';
import { V2Server } from '../runtime/server/http.js';
import { Session } from '../runtime/session.js';
import { SlicedModel } from '../runtime/sliced-model.js';
import { argValue, median, startServer, table } from './common.js';
import type { GenPlan, GenResult } from './load-gen.js';
import { phaseStats, plotSvg, type Phase, type PhaseStats } from './load-report.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const OUT = path.join(ROOT, 'bench', 'out', 'load');
const RATES = [0.125, 0.25, 0.5, 0.75, 1];
/** A stand-in accuracy curve for RATES (small loss down to 0.5, larger below), used only when none is recorded or given. */
const ASSUMED_ACCURACY = [0.7, 0.8, 0.88, 0.91, 0.92];


/** ResNet-style conv model of width W at 32×32 (like fixtures/resnet-small, wider and deeper). */
function buildModel(width: number): Model {
  const e = new Exporter({ opset: 13, irVersion: 8, seed: 0x10ad, docString: `bench load: ResNet width ${width}` });
  let x = e.input('input', [3, 32, 32]);
  x = e.relu('relu', e.batchNorm('bn1', e.conv('conv1', x, 3, width, { kernel: 3, pad: 1 }), width));
  x = basicBlock(e, 'layer1.0', x, width, width, 1);
  x = basicBlock(e, 'layer1.1', x, width, width, 1);
  x = basicBlock(e, 'layer2.0', x, width, 2 * width, 2);
  x = basicBlock(e, 'layer2.1', x, 2 * width, 2 * width, 1);
  x = e.flatten(e.b.globalAveragePool(x, { name: '/avgpool/GlobalAveragePool' }));
  return e.output(e.linear('fc', x, 2 * width, 10), 'output', [10]);
}

function image(rng: Rng, batch: number): Float32Array {
  const data = new Float32Array(batch * 3 * 32 * 32);
  for (let i = 0; i < data.length; i++) data[i] = rng.normal();
  return data;
}

/**
 * Accuracy per rate for effective accuracy: the manifest's when an eval recorded it, else
 * `--accuracy` (one value per rate, ascending), else an assumed curve, said so in the output:
 * the bench model is untrained, so its narrower rates agree with rate 1 only by chance.
 */
function accuracyPerRate(dir: string, flag: string | undefined): { accuracy: Map<number, number>; source: string } {
  const rates = readServedManifest(dir).rates;
  if (rates.every((r) => r.accuracy !== undefined)) return { accuracy: new Map(rates.map((r) => [r.rate, r.accuracy!])), source: 'recorded in the manifest' };
  const values = (flag ?? ASSUMED_ACCURACY.join(',')).split(',').map(Number);
  if (values.length !== rates.length || values.some((v) => !(v >= 0 && v <= 1))) throw new Error(`--accuracy needs ${rates.length} values in [0, 1]`);
  return { accuracy: new Map(rates.map((r, i) => [r.rate, values[i]!])), source: flag ? 'from --accuracy' : 'ASSUMED (no eval recorded; pass --accuracy)' };
}

function binaryBody(data: Float32Array): { body: Buffer; headers: Record<string, string> } {
  const header = Buffer.from(JSON.stringify({ inputs: [{ name: 'input', shape: [1, 3, 32, 32], datatype: 'FP32', parameters: { binary_data_size: data.byteLength } }] }));
  return { body: Buffer.concat([header, Buffer.from(data.buffer, data.byteOffset, data.byteLength)]), headers: { 'Content-Type': 'application/octet-stream', 'Inference-Header-Content-Length': String(header.length) } };
}

function post(agent: http.Agent, url: string, body: Buffer, headers: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'POST', agent, headers: { ...headers, 'Content-Length': String(body.length) } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode!));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/**
 * The floor of a worker hop: a thread holding only an onnxruntime session of `file`, sent the
 * feeds (transferred) and answering with the outputs (transferred), nothing of the runtime's.
 */
class BareWorker {
  private readonly worker: Worker;
  private waiting: ((v: unknown) => void) | null = null;
  private constructor(file: string) {
    const source = `
      const { parentPort, workerData } = require('node:worker_threads');
      const ort = require(workerData.ort);
      ort.InferenceSession.create(workerData.file, { intraOpNumThreads: 1, interOpNumThreads: 1 }).then((s) => {
        parentPort.postMessage('ready');
        parentPort.on('message', async ({ dims, data }) => {
          const out = await s.run({ [s.inputNames[0]]: new ort.Tensor('float32', data, dims) });
          const t = out[s.outputNames[0]];
          const copy = t.data.slice();
          parentPort.postMessage({ dims: t.dims, data: copy }, [copy.buffer]);
        });
      });`;
    const ort = createRequire(import.meta.url).resolve('onnxruntime-node');
    this.worker = new Worker(source, { eval: true, workerData: { file, ort } });
    this.worker.on('message', (m) => this.waiting?.(m));
  }
  static async start(file: string): Promise<BareWorker> {
    const w = new BareWorker(file);
    await w.next();
    return w;
  }
  private next(): Promise<unknown> {
    return new Promise((resolve) => (this.waiting = resolve));
  }
  run(dims: number[], data: Float32Array): Promise<unknown> {
    const copy = data.slice();
    const answer = this.next();
    this.worker.postMessage({ dims, data: copy }, [copy.buffer]);
    return answer;
  }
  close(): Promise<number> {
    return this.worker.terminate();
  }
}

/** Medians per request: bare session.run, a bare worker hop, SlicedModel.run at a fixed rate, HTTP round trip. */
async function overhead(dir: string): Promise<string[]> {
  const manifest = readServedManifest(dir);
  const rows: string[][] = [];
  const model = await SlicedModel.load(dir, { workers: 1 });
  // workers: 0 runs on this thread: the runtime's own cost without the thread hops
  const inline = await SlicedModel.load(dir, { workers: 0 });
  const server = new V2Server(model);
  const port = (await server.listen(0)).port;
  const agent = new http.Agent({ keepAlive: true });
  const data = image(new Rng(5), 1);
  const { body, headers } = binaryBody(data);
  for (const r of [manifest.rates[0]!, manifest.rates.at(-1)!]) {
    const session = await Session.create(r.file);
    const hop = await BareWorker.start(r.file);
    const feeds = { input: { dtype: 'float32' as const, dims: [1, 3, 32, 32], data } };
    const url = `http://127.0.0.1:${port}/v2/models/${rateModelName(model.name, r.rate)}/infer`;
    const bare: number[] = [];
    const hopped: number[] = [];
    const runtime: number[] = [];
    const messaging: number[] = [];
    const onThread: number[] = [];
    const viaHttp: number[] = [];
    for (let i = 0; i < 600; i++) {
      let t = performance.now();
      await session.run(feeds);
      bare.push(performance.now() - t);
      t = performance.now();
      await hop.run([1, 3, 32, 32], data);
      hopped.push(performance.now() - t);
      t = performance.now();
      const result = await model.run(feeds, { rate: r.rate });
      runtime.push(performance.now() - t);
      messaging.push(result.totalMs - result.serviceMs);
      t = performance.now();
      await inline.run(feeds, { rate: r.rate });
      onThread.push(performance.now() - t);
      t = performance.now();
      await post(agent, url, body, headers);
      viaHttp.push(performance.now() - t);
    }
    await session.release();
    await hop.close();
    const [b, hw, rt, h, on] = [bare, hopped, runtime, viaHttp, onThread].map((v) => median(v.slice(100)));
    rows.push([String(r.rate), b.toFixed(3), (hw - b).toFixed(3), rt.toFixed(3), (rt - b).toFixed(3), (rt - hw).toFixed(3), median(messaging.slice(100)).toFixed(3), (on - b).toFixed(3), h.toFixed(3), (h - rt).toFixed(3)]);
  }
  await inline.close();
  agent.destroy();
  await server.drain();
  // "runtime − service": the runtime's own time per request (checks, queue, messages), its
  // worker's session.run excluded, so it does not move with how busy the cores are.
  // "workers 0 overhead": the same runtime with its sessions on this thread (no worker messages).
  // "bare hop": a worker thread holding only the session, feeds and outputs transferred, timed
  // in the same interleaving: the floor any worker-thread runtime pays on this host.
  return table(['rate', 'session.run ms', 'bare hop overhead', 'runtime ms', 'runtime overhead', 'runtime − bare hop', 'runtime − service', 'workers 0 overhead', 'HTTP ms', 'HTTP overhead'], rows, true);
}

interface Trace {
  name: string;
  arrivals: number[];
  phases: Phase[];
}

/** Poisson arrivals whose rate follows `rateAt(ms)` (per second), piecewise constant over 50 ms steps. */
function poisson(rng: Rng, durationMs: number, rateAt: (ms: number) => number): number[] {
  const out: number[] = [];
  for (let t0 = 0; t0 < durationMs; t0 += 50) {
    const perMs = rateAt(t0) / 1000;
    let t = t0 - Math.log(1 - rng.next()) / perMs;
    while (t < t0 + 50) {
      out.push(t);
      t += -Math.log(1 - rng.next()) / perMs;
    }
  }
  return out;
}

/** Gamma(k, 1) by Marsaglia–Tsang (k < 1 through the k + 1 boost). */
function gamma(rng: Rng, k: number): number {
  if (k < 1) return gamma(rng, k + 1) * rng.next() ** (1 / k);
  const d = k - 1 / 3;
  const c = 1 / Math.sqrt(9 * d);
  for (;;) {
    const z = rng.normal();
    const v = (1 + c * z) ** 3;
    if (v > 0 && Math.log(rng.next()) < 0.5 * z * z + d - d * v + Math.log(v)) return d * v;
  }
}

function traces(capacity: number, scale: number, which: string[]): Trace[] {
  const avg = capacity / 2;
  const s = (sec: number): number => sec * 1000 * scale;
  const phases: Phase[] = [
    { name: 'average', startMs: 0, endMs: s(10) },
    { name: 'spike 10x', startMs: s(10), endMs: s(16) },
    { name: 'recovery', startMs: s(16), endMs: s(26) },
  ];
  const ramp = s(0.5);
  const rateAt = (ms: number): number => {
    if (ms < s(10) || ms >= s(16)) return avg;
    const up = Math.min(1, (ms - s(10)) / ramp);
    const down = Math.min(1, (s(16) - ms) / ramp);
    return avg * (1 + 9 * Math.min(up, down));
  };
  const spike = poisson(new Rng(1), s(26), rateAt);
  const out: Trace[] = [];
  if (which.includes('spike')) out.push({ name: 'spike', arrivals: spike, phases });
  if (which.includes('bursty')) {
    // Same mean as the spike trace, Gamma inter-arrivals with shape 0.1 (CV² = 10): bursts.
    const meanGap = s(26) / spike.length;
    const rng = new Rng(2);
    const arrivals: number[] = [];
    for (let t = gamma(rng, 0.1) * meanGap * 10; t < s(26); t += gamma(rng, 0.1) * meanGap * 10) arrivals.push(t);
    const thirds: Phase[] = [0, 1, 2].map((k) => ({ name: `third ${k + 1}`, startMs: (k * s(26)) / 3, endMs: ((k + 1) * s(26)) / 3 }));
    out.push({ name: 'bursty', arrivals, phases: thirds });
  }
  return out;
}

interface Config {
  label: string;
  model: string;
  flags: string[];
  /** The compiled folder served (default: the one without exits). */
  dir?: string;
}

function rssMb(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)![1]) / 1024;
}

/** The exit-head cache gauges of a server's /metrics (buffer bytes, trainer busy share, heads on), when it has them. */
async function cacheGauges(port: number): Promise<string | null> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const gauge = (name: string): number | null => {
    const m = new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+-]+)$`, 'm').exec(text);
    return m ? Number(m[1]) : null;
  };
  const bytes = gauge('slicec_cache_buffer_bytes');
  if (bytes === null) return null;
  return `cache buffer ${(bytes / 2 ** 20).toFixed(1)} MiB, trainer busy ${(100 * (gauge('slicec_cache_trainer_busy_ratio') ?? 0)).toFixed(1)} % of wall time, heads on ${gauge('slicec_exit_heads_on') ?? 0}`;
}

async function runOnce(dir: string, config: Config, trace: Trace, sloMs: number, body: Buffer, headers: Record<string, string>): Promise<{ result: GenResult; rss: number[]; cache: string | null }> {
  const { child, port } = await startServer(config.dir ?? dir, config.flags);
  const planFile = path.join(OUT, 'plan.json');
  const resultFile = path.join(OUT, 'result.json');
  const plan: GenPlan = { url: `http://127.0.0.1:${port}/v2/models/${config.model}/infer`, body: body.toString('base64'), headers, arrivals: trace.arrivals, timeoutMs: Math.max(1000, 20 * sloMs) };
  fs.writeFileSync(planFile, JSON.stringify(plan));
  const rss: number[] = [rssMb(child.pid!)];
  const sampler = setInterval(() => rss.push(rssMb(child.pid!)), 500);
  const gen = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'bench', 'load-gen.ts'), planFile, resultFile], { cwd: ROOT, stdio: 'inherit' });
  await new Promise<void>((resolve, reject) => gen.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`generator exited ${code}`)))));
  clearInterval(sampler);
  rss.push(rssMb(child.pid!));
  const cache = await cacheGauges(port);
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  child.kill('SIGTERM');
  await exited;
  return { result: JSON.parse(fs.readFileSync(resultFile, 'utf8')) as GenResult, rss, cache };
}

/** Closed-loop throughput of the full-width model through HTTP (4 requests in flight), requests/s. */
async function capacity(dir: string, name: string, body: Buffer, headers: Record<string, string>): Promise<number> {
  const { child, port } = await startServer(dir, []);
  const agent = new http.Agent({ keepAlive: true });
  const url = `http://127.0.0.1:${port}/v2/models/${rateModelName(name, 1)}/infer`;
  const loop = async (until: number): Promise<number> => {
    let n = 0;
    while (performance.now() < until) {
      await post(agent, url, body, headers);
      n++;
    }
    return n;
  };
  await Promise.all([0, 1, 2, 3].map(() => loop(performance.now() + 500)));
  const start = performance.now();
  const counts = await Promise.all([0, 1, 2, 3].map(() => loop(start + 3000)));
  const perSecond = counts.reduce((a, b) => a + b, 0) / ((performance.now() - start) / 1000);
  agent.destroy();
  child.kill('SIGTERM');
  await new Promise<void>((resolve) => child.on('exit', () => resolve()));
  return perSecond;
}

async function bench(): Promise<void> {
  const width = Number(argValue('--width') ?? 128);
  const sloMs = Number(argValue('--slo-ms') ?? 100);
  const scale = Number(argValue('--scale') ?? 1);
  const which = (argValue('--traces') ?? 'spike,bursty').split(',');
  const only = argValue('--only')?.split(',');
  fs.mkdirSync(OUT, { recursive: true });
  const modelFile = path.join(OUT, 'wide-resnet.onnx');
  const dir = path.join(OUT, 'wide-resnet.sliced');
  writeModel(buildModel(width), modelFile);
  await compile({ model: modelFile, groups: 8, rates: RATES, outDir: dir, log: () => {} });
  const name = readServedManifest(dir).sourceName;
  // --exits: the same model compiled with early exits, served with online head training on
  const withExits = process.argv.includes('--exits');
  const exitsDir = path.join(OUT, 'wide-resnet.exits.sliced');
  if (withExits) await compile({ model: modelFile, groups: 8, rates: RATES, outDir: exitsDir, exits: 'auto', log: () => {} });
  if (process.argv.includes('--build-only')) return;
  const { accuracy, source } = accuracyPerRate(dir, argValue('--accuracy'));
  console.log(`host: ${os.availableParallelism()} cores, 1-minute load average ${os.loadavg()[0]!.toFixed(1)} at start (other work shares the cores)`);
  console.log(`model: ResNet width ${width} (${path.relative(ROOT, modelFile)}), G=8, rates ${RATES.join(', ')}, norm ${(JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as { normalization: { mode: string } }).normalization.mode}; SLO ${sloMs} ms; 1 worker, 1 thread`);
  console.log(`accuracy per rate, ${source}: ${[...accuracy].map(([r, a]) => `${r}: ${a}`).join(', ')}\n`);
  console.log('overhead per request (median of 500, batch 1, sequential):');
  for (const line of await overhead(dir)) console.log(`  ${line}`);
  if (process.argv.includes('--overhead-only')) return;
  const { body, headers } = binaryBody(image(new Rng(3), 1));
  const cap = await capacity(dir, name, body, headers);
  console.log(`\nfull-width capacity through HTTP: ${cap.toFixed(0)} requests/s → average load ${(cap / 2).toFixed(0)}/s, spike ${(5 * cap).toFixed(0)}/s\n`);
  const configs: Config[] = [
    ...RATES.map((r) => ({ label: `static ${r}`, model: rateModelName(name, r), flags: [] })),
    { label: 'full + shedding', model: rateModelName(name, 1), flags: ['--slo-ms', String(sloMs), '--shed'] },
    { label: 'adaptive', model: name, flags: ['--slo-ms', String(sloMs)] },
    ...(withExits ? [{ label: 'adaptive + exits', model: name, flags: ['--slo-ms', String(sloMs), '--exits'], dir: exitsDir }] : []),
  ].filter((c) => !only || only.includes(c.label));
  const report: Record<string, unknown> = { width, sloMs, scale, capacity: cap, accuracy: Object.fromEntries(accuracy), traces: {} };
  for (const trace of traces(cap, scale, which)) {
    const all: { phase: Phase; stats: PhaseStats[] }[] = [];
    const rows: string[][] = [];
    const results = new Map<string, GenResult>();
    const whole: Phase = { name: 'whole trace', startMs: 0, endMs: trace.phases.at(-1)!.endMs };
    const wholeStats = new Map<string, PhaseStats>();
    for (const config of configs) {
      const loadBefore = os.loadavg()[0]!;
      const { result, rss, cache } = await runOnce(dir, config, trace, sloMs, body, headers);
      const loadAfter = os.loadavg()[0]!;
      results.set(config.label, result);
      const stats = phaseStats(trace.arrivals, result, [...trace.phases, whole], sloMs, accuracy);
      wholeStats.set(config.label, stats.at(-1)!);
      all.push({ phase: whole, stats });
      for (const s of stats) {
        rows.push([config.label, s.phase, String(s.requests), (100 * s.attainment).toFixed(1), s.goodput.toFixed(0), s.p50.toFixed(1), s.p99.toFixed(1), s.p999.toFixed(1), s.meanRate.toFixed(3), (100 * s.fullShare).toFixed(1), s.effectiveAccuracy.toFixed(3), String(s.sheds), String(s.timeouts)]);
      }
      rows.push([`  rss MB, load`, `${rss[0]!.toFixed(0)} → peak ${Math.max(...rss).toFixed(0)} → end ${rss.at(-1)!.toFixed(0)}; host load ${loadBefore.toFixed(1)} → ${loadAfter.toFixed(1)}${cache ? `; ${cache}` : ''}`, '', '', '', '', '', '', '', '', '', '', '']);
      (report.traces as Record<string, unknown>)[`${trace.name}/${config.label}`] = { stats, rss, loadavg: [loadBefore, loadAfter] };
    }
    console.log(`trace ${trace.name}: ${trace.arrivals.length} requests over ${(whole.endMs / 1000).toFixed(0)} s`);
    for (const line of table(['config', 'phase', 'requests', 'SLO %', 'goodput/s', 'p50 ms', 'p99 ms', 'p99.9 ms', 'mean rate', 'at rate 1 %', 'eff. acc.', 'sheds', 'timeouts'], rows)) console.log(`  ${line}`);
    const statics = RATES.filter((r) => wholeStats.has(`static ${r}`)).map((r) => [r, wholeStats.get(`static ${r}`)!.effectiveAccuracy] as const);
    if (statics.length < RATES.length || !results.has('adaptive')) continue; // --only: no comparison, no plot
    const best = statics.reduce((a, b) => (b[1] > a[1] ? b : a));
    console.log(`  best single static rate: ${best[0]} (effective accuracy ${best[1].toFixed(3)}); adaptive: ${wholeStats.get('adaptive')!.effectiveAccuracy.toFixed(3)}\n`);
    const svg = plotSvg(`slicec serve, ${trace.name} trace, SLO ${sloMs} ms`, [
      { label: 'adaptive', color: '#1f77b4', arrivals: trace.arrivals, result: results.get('adaptive')! },
      { label: 'static full', color: '#d62728', arrivals: trace.arrivals, result: results.get('static 1')! },
      { label: `static ${best[0]}`, color: '#2ca02c', arrivals: trace.arrivals, result: results.get(`static ${best[0]}`)! },
    ], whole.endMs, sloMs, trace.phases);
    fs.writeFileSync(path.join(OUT, `${trace.name}.svg`), svg);
  }
  fs.writeFileSync(path.join(OUT, 'results.json'), JSON.stringify(report, null, 1));
  console.log(`wrote ${path.relative(ROOT, OUT)}/{spike,bursty}.svg and results.json`);
}

await bench();
