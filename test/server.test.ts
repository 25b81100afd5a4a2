// The v2 REST server on a compiled fixture: the protocol as the KServe / Triton docs write it
// (curl as the client), the binary tensor extension, limits, metrics, the router in front of a
// slicec upstream, draining, and over a thousand fuzzed and malformed requests that must each
// get an answer (200 or a 4xx with a v2 error body) while the server keeps serving.

import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compile } from '../compiler/pipeline.js';
import { Rng } from '../compiler/rng.js';
import { V2Server } from '../runtime/server/http.js';
import { connectUpstream } from '../runtime/server/router.js';
import { decodeInferRequest, encodeInferResponse, floatToHalf, halfToFloat } from '../runtime/server/v2.js';
import { runFloat } from '../runtime/session.js';
import { SlicedModel } from '../runtime/sliced-model.js';
import { REPO_ROOT } from './helpers/models.js';
import { ensureBuilt, runCli } from './helpers/cli.js';
import { runShell } from './helpers/built-cli.js';
import { isUserError } from '../compiler/diagnostics.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-server-'));
const dir = path.join(tmp, 'resnet.sliced');
const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
let model: SlicedModel;
let server: V2Server;
let base: string;
const others: V2Server[] = [];

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** One request on the shared keep-alive agent; a body is always framed by Content-Length. */
function request(url: string, method: string, body?: Buffer | string, headers: Record<string, string> = {}): Promise<Reply> {
  const framed = body === undefined ? headers : { 'Content-Length': String(Buffer.byteLength(body)), ...headers };
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, agent, headers: framed }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

const json = (r: Reply): Record<string, unknown> => JSON.parse(r.body.toString('utf8')) as Record<string, unknown>;

function image(seed: number): number[] {
  const rng = new Rng(seed);
  return Array.from({ length: 3 * 32 * 32 }, () => Math.round((rng.next() - 0.5) * 100) / 100);
}

function inferBody(data: number[], extra: Record<string, unknown> = {}): string {
  return JSON.stringify({ inputs: [{ name: 'input', shape: [1, 3, 32, 32], datatype: 'FP32', data }], ...extra });
}

/** The spec's $inference_response. */
function expectInferResponse(body: Record<string, unknown>, model: string): void {
  expect(typeof body.model_name).toBe('string');
  expect(body.model_name).toBe(model);
  if (body.model_version !== undefined) expect(typeof body.model_version).toBe('string');
  expect(Array.isArray(body.outputs)).toBe(true);
  for (const o of body.outputs as Record<string, unknown>[]) {
    expect(typeof o.name).toBe('string');
    expect(typeof o.datatype).toBe('string');
    expect((o.shape as unknown[]).every((d) => Number.isInteger(d))).toBe(true);
    if (o.data !== undefined) expect((o.data as unknown[]).length).toBe((o.shape as number[]).reduce((a, b) => a * b, 1));
  }
}

/** The spec's $metadata_model_response. */
function expectModelMetadata(body: Record<string, unknown>): void {
  expect(typeof body.name).toBe('string');
  expect(typeof body.platform).toBe('string');
  for (const list of [body.inputs, body.outputs] as Record<string, unknown>[][]) {
    for (const t of list) {
      expect(typeof t.name).toBe('string');
      expect(typeof t.datatype).toBe('string');
      expect((t.shape as unknown[]).every((d) => Number.isInteger(d))).toBe(true);
    }
  }
}

async function direct(rate: number, data: number[]): Promise<Float32Array> {
  const out = await runFloat(path.join(dir, 'slices', `rate-${rate.toFixed(3)}.onnx`), { input: { dims: [1, 3, 32, 32], data: new Float32Array(data) } });
  return out.output!.data;
}

beforeAll(async () => {
  await compile({ codegen: false, model: path.join(REPO_ROOT, 'fixtures', 'resnet-small.onnx'), groups: 4, outDir: dir, norm: 'keep', log: () => {} });
  model = await SlicedModel.load(dir, { workers: 1, profileRuns: 2 });
  server = new V2Server(model, { sloMs: 200, maxBodyBytes: 1 << 20 });
  const address = await server.listen(0);
  base = `http://127.0.0.1:${address.port}`;
});

afterAll(async () => {
  agent.destroy();
  await server?.drain();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('the listening address', () => {
  it('a port in use is a user error, and serve exits instead of keeping its workers alive', async () => {
    const port = new URL(base).port;
    const error = await new V2Server(model).listen(Number(port)).then(() => null, (e: unknown) => e);
    expect(isUserError(error)).toBe(true);
    expect((error as Error).message).toMatch(/cannot listen on 127\.0\.0\.1:\d+: it is in use by another process/);
    const run = await runCli(['serve', dir, '--port', port]);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/error SLC007: cannot listen on .* in use[\s\S]*hint: +pick another --port/);
    // the installed command ends (it hung with its worker threads alive)
    ensureBuilt();
    // more workers than cores: a warning first (each holds its own graphs), then the same error
    const workers = os.availableParallelism() + 1;
    const bin = runShell(`timeout 60 $SLICEC serve ${dir} --port ${port} --workers ${workers}`);
    expect(bin.code, bin.stderr).toBe(2);
    expect(bin.stderr).toContain(`warning: ${workers} worker(s) × 1 thread(s) = ${workers} threads on ${os.availableParallelism()} cores`);
  }, 90_000);
});

describe('v2 protocol', () => {
  it('answers health, server and model metadata as the spec shapes them', async () => {
    expect(json(await request(`${base}/v2/health/live`, 'GET'))).toEqual({ live: true });
    expect((await request(`${base}/v2/health/ready`, 'GET')).status).toBe(200);
    const meta = json(await request(`${base}/v2`, 'GET'));
    expect(meta).toMatchObject({ name: 'slicec', version: JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')).version });
    expect(meta.extensions).toContain('binary_tensor_data');
    for (const name of ['resnet-small', 'resnet-small_r025', 'resnet-small_r100']) {
      const m = json(await request(`${base}/v2/models/${name}`, 'GET'));
      expectModelMetadata(m);
      expect(m).toMatchObject({ name, inputs: [{ name: 'input', datatype: 'FP32', shape: [-1, 3, 32, 32] }], outputs: [{ name: 'output', datatype: 'FP32', shape: [-1, 10] }] });
      expect(json(await request(`${base}/v2/models/${name}/versions/1/ready`, 'GET'))).toEqual({ name, ready: true });
    }
    expect((await request(`${base}/v2/models/nope`, 'GET')).status).toBe(404);
    expect((await request(`${base}/v2/models/resnet-small/versions/2`, 'GET')).status).toBe(404);
  });

  it('curl requests written as in the KServe / Triton docs succeed', async () => {
    const run = promisify(execFile);
    const data = image(1);
    const body = JSON.stringify({ id: '42', inputs: [{ name: 'input', shape: [1, 3, 32, 32], datatype: 'FP32', data }], outputs: [{ name: 'output' }] }, null, 2);
    const file = path.join(tmp, 'request.json');
    fs.writeFileSync(file, body);
    const ready = await run('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', `${base}/v2/health/ready`]);
    expect(ready.stdout).toBe('200');
    const { stdout } = await run('curl', ['-s', '-X', 'POST', `${base}/v2/models/resnet-small_r050/infer`, '-H', 'Content-Type: application/json', '-d', `@${file}`]);
    const response = JSON.parse(stdout) as Record<string, unknown>;
    expectInferResponse(response, 'resnet-small_r050');
    expect(response.id).toBe('42');
    const out = (response.outputs as { data: number[] }[])[0]!;
    const wanted = await direct(0.5, data);
    out.data.forEach((v, i) => expect(v).toBeCloseTo(wanted[i]!, 5));
    const versioned = await run('curl', ['-s', '-i', '-X', 'POST', `${base}/v2/models/resnet-small/versions/1/infer`, '-d', `@${file}`]);
    expect(versioned.stdout).toMatch(/^HTTP\/1.1 200/);
    expect(versioned.stdout).toMatch(/x-slicec-rate: 1\r\n/);
  });

  it('nested row-major data, the rate in header and parameters, and a per-request deadline', async () => {
    const data = image(2);
    const nested = [[0, 1, 2].map((c) => Array.from({ length: 32 }, (_, h) => data.slice(c * 1024 + h * 32, c * 1024 + h * 32 + 32)))];
    const r = await request(`${base}/v2/models/resnet-small/infer`, 'POST', JSON.stringify({ inputs: [{ name: 'input', shape: [1, 3, 32, 32], datatype: 'FP32', data: nested }] }));
    expect(r.status).toBe(200);
    const body = json(r);
    expect(body.parameters).toMatchObject({ slice_rate: 1 });
    expect(r.headers['x-slicec-rate']).toBe('1');
    const tight = await request(`${base}/v2/models/resnet-small/infer`, 'POST', inferBody(data, { parameters: { deadline_ms: 1e-6 } }));
    expect(tight.headers['x-slicec-rate']).toBe('0.25');
    const header = await request(`${base}/v2/models/resnet-small/infer`, 'POST', inferBody(data), { 'X-Slicec-Deadline-Ms': '0.000001' });
    expect(json(header).parameters).toMatchObject({ slice_rate: 0.25 });
    const shed = await request(`${base}/v2/models/resnet-small/infer`, 'POST', inferBody(data, { parameters: { deadline_ms: 1e-6, shed: true } }));
    expect(shed.status).toBe(503);
    expect(typeof json(shed).error).toBe('string');
    const fixed = await request(`${base}/v2/models/resnet-small/infer`, 'POST', inferBody(data, { parameters: { slice_rate: 0.75 } }));
    expect(fixed.headers['x-slicec-rate']).toBe('0.75');
  });

  it('speaks the binary tensor extension both ways', async () => {
    const data = new Float32Array(image(3));
    const header = Buffer.from(JSON.stringify({
      inputs: [{ name: 'input', shape: [1, 3, 32, 32], datatype: 'FP32', parameters: { binary_data_size: data.byteLength } }],
      outputs: [{ name: 'output', parameters: { binary_data: true } }],
    }));
    const r = await request(`${base}/v2/models/resnet-small_r100/infer`, 'POST', Buffer.concat([header, Buffer.from(data.buffer)]), {
      'Content-Type': 'application/octet-stream',
      'Inference-Header-Content-Length': String(header.length),
    });
    expect(r.status).toBe(200);
    const jsonLength = Number(r.headers['inference-header-content-length']);
    const head = JSON.parse(r.body.subarray(0, jsonLength).toString('utf8')) as { outputs: { parameters: { binary_data_size: number } }[] };
    expect(head.outputs[0]!.parameters.binary_data_size).toBe(40);
    const out = new Float32Array(r.body.buffer.slice(r.body.byteOffset + jsonLength, r.body.byteOffset + jsonLength + 40));
    const wanted = await direct(1, [...data]);
    out.forEach((v, i) => expect(v).toBeCloseTo(wanted[i]!, 5));
  });

  it('limits: body size (413), concurrency (503), timeout (504); metrics count it all', async () => {
    const big = Buffer.alloc(2 << 20, 32);
    expect((await request(`${base}/v2/models/resnet-small/infer`, 'POST', big)).status).toBe(413);
    const chunked = await new Promise<number>((resolve, reject) => {
      const req = http.request(`${base}/v2/models/resnet-small/infer`, { method: 'POST', headers: { 'Transfer-Encoding': 'chunked' } }, (res) => {
        res.resume();
        resolve(res.statusCode!);
      });
      req.on('error', reject);
      for (let i = 0; i < 40; i++) req.write(Buffer.alloc(64 << 10, 32));
      req.end();
    });
    expect(chunked).toBe(413);
    const busy = new V2Server(model, { maxConcurrency: 1 });
    const slow = new V2Server(model, { timeoutMs: 1e-3 });
    others.push(busy, slow);
    const busyBase = `http://127.0.0.1:${(await busy.listen(0)).port}`;
    // A request whose body is still arriving holds the one slot: the next one is refused.
    const held = inferBody(image(4));
    const first = new Promise<number>((resolve, reject) => {
      const req = http.request(`${busyBase}/v2/models/resnet-small/infer`, { method: 'POST', headers: { 'Content-Length': String(held.length) } }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode!));
      });
      req.on('error', reject);
      req.write(held.slice(0, 100));
      const second = async (): Promise<void> => {
        while (busy.activeRequests === 0) await new Promise((r) => setTimeout(r, 5));
        const r = await request(`${busyBase}/v2/models/resnet-small/infer`, 'POST', inferBody(image(4)));
        expect(r.status).toBe(503);
        expect(json(r).error).toMatch(/server busy/);
        req.end(held.slice(100));
      };
      second().catch(reject);
    });
    expect(await first).toBe(200);
    // the refused request is an inference request too: counted by its status
    expect((await request(`${busyBase}/metrics`, 'GET')).body.toString('utf8')).toMatch(/slicec_requests_total\{model="resnet-small",code="503"\} 1/);
    const slowBase = `http://127.0.0.1:${(await slow.listen(0)).port}`;
    const late = await Promise.all(Array.from({ length: 20 }, () => request(`${slowBase}/v2/models/resnet-small/infer`, 'POST', inferBody(image(5))).then((r) => r.status)));
    expect(late).toContain(504);
    expect(late.every((s) => s === 200 || s === 504)).toBe(true);
    // a request answered 504 may still be queued or running in the shared model: let it drain
    for (let waited = 0; (model.queueDepth > 0 || model.inFlight > 0) && waited < 10_000; waited += 10) await new Promise((r) => setTimeout(r, 10));
    const metrics = (await request(`${base}/metrics`, 'GET')).body.toString('utf8');
    expect(metrics).toMatch(/slicec_requests_total\{model="resnet-small",code="200"\} \d+/);
    expect(metrics).toMatch(/slicec_requests_total\{model="resnet-small",code="413"\} 2/);
    expect(metrics).toMatch(/slicec_rate_served_total\{model="resnet-small",rate="0.25"\} \d+/);
    expect(metrics).toMatch(/slicec_sheds_total\{model="resnet-small"\} 1/);
    expect(metrics).toMatch(/slicec_request_duration_seconds_bucket/);
    expect(metrics).toMatch(/slicec_queue_depth 0/);
    expect(metrics).toMatch(/slicec_process_resident_memory_bytes/);
  });
});

describe('v2 codec', () => {
  it('decodes every carried datatype from JSON and binary, and encodes them back', () => {
    const specs = [
      { name: 'h', dtype: 'float16' as const, shape: [2] },
      { name: 'i', dtype: 'int64' as const, shape: ['N'] },
      { name: 'b', dtype: 'bool' as const, shape: [3] },
      { name: 'u', dtype: 'uint8' as const, shape: [2] },
    ];
    const raw = new Uint8Array([7, 250]);
    const header = JSON.stringify({
      inputs: [
        { name: 'h', shape: [2], datatype: 'FP16', data: [1.5, -65504] },
        { name: 'i', shape: [2], datatype: 'INT64', data: [[-3], [9007199254740991]] },
        { name: 'b', shape: [3], datatype: 'BOOL', data: [true, false, true] },
        { name: 'u', shape: [2], datatype: 'UINT8', parameters: { binary_data_size: 2 } },
      ],
    });
    const body = Buffer.concat([Buffer.from(header), raw]);
    const req = decodeInferRequest(body, String(Buffer.byteLength(header)), specs);
    expect([...req.feeds.h!.data]).toEqual([0x3e00, 0xfbff]);
    expect([...req.feeds.i!.data]).toEqual([-3n, 9007199254740991n]);
    expect([...req.feeds.b!.data]).toEqual([1, 0, 1]);
    expect([...req.feeds.u!.data]).toEqual([7, 250]);
    const encoded = encodeInferResponse({ model_name: 'm', parameters: {} }, Object.entries(req.feeds).map(([name, array]) => ({ name, array, binary: false })));
    const outputs = (JSON.parse(encoded.body.toString()) as { outputs: { data: unknown[] }[] }).outputs.map((o) => o.data);
    expect(outputs).toEqual([[1.5, -65504], [-3, 9007199254740991], [true, false, true], [7, 250]]);
    expect(() => decodeInferRequest(Buffer.from(JSON.stringify({ inputs: [{ name: 'u', shape: [2], datatype: 'UINT8', data: [1, 2.5] }] })), undefined, specs)).toThrow(/not an integer/);
  });

  it('FP16 conversion rounds to nearest even and keeps subnormals, infinities and NaN', () => {
    expect(floatToHalf(1)).toBe(0x3c00);
    expect(floatToHalf(65504)).toBe(0x7bff);
    expect(floatToHalf(65520)).toBe(0x7c00);
    expect(floatToHalf(-Infinity)).toBe(0xfc00);
    expect(floatToHalf(2 ** -24)).toBe(1);
    expect(floatToHalf(1 + 2 ** -11)).toBe(0x3c00); // a tie rounds to even
    expect(floatToHalf(1 + 3 * 2 ** -11)).toBe(0x3c02);
    expect(Number.isNaN(halfToFloat(floatToHalf(Number.NaN)))).toBe(true);
    for (const h of [0x0001, 0x03ff, 0x0400, 0x3555, 0x7bff, 0xc000]) expect(floatToHalf(halfToFloat(h))).toBe(h);
  });
});

describe('robustness', () => {
  it('survives 1200 fuzzed and malformed requests, each answered 200 or 4xx with a v2 error body', async () => {
    const rng = new Rng(0x5eed);
    const valid = inferBody(image(6));
    const junk = (): unknown => rng.pick<() => unknown>([
      () => null, () => true, () => -1, () => 1e308, () => 'FP32', () => [], () => {}, () => [[[-3]]], () => ({ name: 'input' }), () => '\u0000\uffff',
      () => rng.int(1 << 30), () => [1, 3, 32, -32], () => [1e9, 1e9, 1e9, 1e9], () => [1.5, 3, 32, 32], () => 'x'.repeat(rng.int(500)),
    ])();
    const structured = (): string => {
      const req: Record<string, unknown> = JSON.parse(valid);
      const input = (req.inputs as Record<string, unknown>[])[0]!;
      const target = rng.pick(['root', 'input', 'data', 'params', 'outputs']);
      const key = rng.pick(['name', 'shape', 'datatype', 'data', 'parameters', 'inputs', 'outputs', 'id']);
      if (target === 'root') req[key] = junk();
      else if (target === 'input') input[key] = junk();
      else if (target === 'data') (input.data as unknown[])[rng.int(3072)] = junk();
      else if (target === 'params') req.parameters = { [rng.pick(['slice_rate', 'deadline_ms', 'min_accuracy', 'shed', 'binary_data_output'])]: junk() };
      else req.outputs = [rng.pick([{ name: junk() }, { name: 'output', parameters: junk() }, junk()])];
      if (rng.next() < 0.2) delete input[rng.pick(['name', 'shape', 'datatype', 'data'])];
      return JSON.stringify(req);
    };
    const bytes = (): Buffer => {
      const b = Buffer.from(valid);
      const kind = rng.int(3);
      if (kind === 0) for (let k = 0; k < 1 + rng.int(8); k++) b[rng.int(b.length)] = rng.int(256);
      if (kind === 1) return b.subarray(0, rng.int(b.length));
      if (kind === 2) return Buffer.concat([b.subarray(0, rng.int(b.length)), Buffer.from(rng.bytes(rng.int(64))), b.subarray(rng.int(b.length))]);
      return b;
    };
    const statuses = new Map<number, number>();
    for (let i = 0; i < 1200; i++) {
      const kind = i % 6;
      let url = `${base}/v2/models/resnet-small/infer`;
      let method = 'POST';
      let body: Buffer | string = valid;
      const headers: Record<string, string> = {};
      if (kind === 0 || kind === 1) body = structured();
      else if (kind === 2) body = bytes();
      else if (kind === 3) {
        const n = Buffer.byteLength(valid);
        headers['Inference-Header-Content-Length'] = rng.pick([String(rng.int(n + 10)), '-1', 'abc', '1e3', String(n)]);
        body = Buffer.concat([Buffer.from(valid), Buffer.from(rng.bytes(rng.int(32)))]);
      } else if (kind === 4) {
        url = `${base}${rng.pick(['/v2/models/%E0%A4%A/infer', '/v2/models//infer', '/v2/models/resnet-small/versions/x/infer', '/v2/models/resnet-small/infer/extra', '/v2/health', '/', '/v2/models/resnet-small_r033/infer', '/metrics/../v2'])}`;
        method = rng.pick(['POST', 'GET', 'PUT', 'DELETE']);
      } else {
        headers['X-Slicec-Deadline-Ms'] = rng.pick(['-1', 'abc', '0', 'Infinity', '5']);
        body = structured();
      }
      const r = await request(url, method, body, headers).catch((e: Error) => {
        throw new Error(`case ${i} (${method} ${url} ${JSON.stringify(headers)}): ${e.message}`);
      });
      statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
      if (r.status !== 200) {
        expect(r.status >= 400 && r.status < 500, `case ${i}: ${r.status} ${r.body.toString('utf8').slice(0, 200)}`).toBe(true);
        expect(typeof json(r).error).toBe('string');
      }
    }
    expect(statuses.get(400)! > 600).toBe(true);
    const after = await request(`${base}/v2/models/resnet-small/infer`, 'POST', valid);
    expect(after.status).toBe(200);
  });

  it('a malformed HTTP request line gets 400 and the server keeps serving', async () => {
    const net = await import('node:net');
    const port = new URL(base).port;
    const reply = await new Promise<string>((resolve) => {
      const socket = net.connect(Number(port), '127.0.0.1', () => socket.write('GARBAGE \u0001 HTTP/9\r\n\r\n'));
      let text = '';
      socket.on('data', (d) => (text += d.toString()));
      socket.on('close', () => resolve(text));
    });
    expect(reply).toMatch(/^HTTP\/1.1 400/);
    expect((await request(`${base}/v2/health/live`, 'GET')).status).toBe(200);
  });
});

describe('router', () => {
  it('applies the policy in front of a slicec upstream holding one model per rate', async () => {
    const routed = await connectUpstream(dir, { upstream: base, concurrency: 2, profileRuns: 2 });
    const router = new V2Server(routed, { sloMs: 500 });
    const routerBase = `http://127.0.0.1:${(await router.listen(0)).port}`;
    try {
      expect(routed.mode).toBe('upstream');
      const data = image(8);
      const r = await request(`${routerBase}/v2/models/resnet-small/infer`, 'POST', inferBody(data));
      expect(r.status).toBe(200);
      expect(r.headers['x-slicec-rate']).toBe('1');
      const out = (json(r).outputs as { data: number[] }[])[0]!.data;
      const wanted = await direct(1, data);
      out.forEach((v, i) => expect(v).toBeCloseTo(wanted[i]!, 5));
      const tight = await request(`${routerBase}/v2/models/resnet-small/infer`, 'POST', inferBody(data, { parameters: { deadline_ms: 1e-6 } }));
      expect(tight.headers['x-slicec-rate']).toBe('0.25');
      const upstreamMetrics = (await request(`${base}/metrics`, 'GET')).body.toString('utf8');
      expect(upstreamMetrics).toMatch(/slicec_rate_served_total\{model="resnet-small",rate="0.25"\}/);
      const bad = await request(`${routerBase}/v2/models/resnet-small/infer`, 'POST', '{"inputs": 3}');
      expect(bad.status).toBe(400);
    } finally {
      await router.drain();
    }
    await expect(connectUpstream(dir, { upstream: `${base}/nowhere` })).rejects.toThrow(/no ready model resnet-small_r025/);
  });
});

describe('drain', () => {
  it('finishes the requests in flight, then stops accepting', async () => {
    const own = await SlicedModel.load(dir, { workers: 1, profileRuns: 1 });
    const drained = new V2Server(own);
    const port = (await drained.listen(0)).port;
    const url = `http://127.0.0.1:${port}/v2/models/resnet-small/infer`;
    const fresh = new http.Agent({ keepAlive: false });
    // Batches of 32 rows: slow enough that the six are still queued when the drain starts.
    const body = JSON.stringify({ inputs: [{ name: 'input', shape: [32, 3, 32, 32], datatype: 'FP32', data: new Array(32 * 3072).fill(0.25) }] });
    let answered = 0;
    const send = (): Promise<number> =>
      new Promise((resolve, reject) => {
        const req = http.request(url, { method: 'POST', agent: fresh }, (res) => {
          res.resume();
          res.on('end', () => {
            answered++;
            resolve(res.statusCode!);
          });
        });
        req.on('error', reject);
        req.end(body);
      });
    const inFlight = Array.from({ length: 6 }, send);
    while (drained.activeRequests + answered < 6) await new Promise((r) => setTimeout(r, 5));
    await drained.drain();
    expect(await Promise.all(inFlight)).toEqual([200, 200, 200, 200, 200, 200]);
    await expect(send()).rejects.toThrow(/ECONNREFUSED/);
    for (const s of others) await s.close();
  });
});
