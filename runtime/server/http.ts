// The v2 (KServe / Triton Open Inference Protocol) REST server in front of a SlicedModel (local
// workers or an upstream router). The model answers as `<name>` (rate chosen per request from
// the deadline and the load) and as `<name>_r050` etc. (one fixed rate each). HTTP parsing, the
// codec and the policy run on the main thread; inference runs in the model's workers. Limits:
// body size (413), concurrent requests (503), per-request timeout (504); every bad request gets a
// 4xx with a v2 error body and the server keeps serving. `drain()` stops accepting, lets the
// requests in flight finish, then closes the model.

import * as http from 'node:http';
import * as net from 'node:net';
import type { AddressInfo } from 'node:net';
import { ErrorCodes, isUserError, userError } from '../../compiler/diagnostics.js';
import { rateModelName } from '../manifest.js';
import { ShedError, type InferOptions, type SlicedModel } from '../sliced-model.js';
import { ServerMetrics } from './metrics.js';
import { packageVersion } from '../version.js';
import { V2Error, decodeInferRequest, encodeInferResponse, tensorMetadata } from './v2.js';

export interface ServerOptions {
  /** Model name (default: the source model's file base name). */
  name?: string;
  /** Default latency objective per request, ms; a request's `deadline_ms` parameter or X-Slicec-Deadline-Ms header overrides it. */
  sloMs?: number;
  /** Refuse requests no rate can answer in time (503) instead of answering late at the smallest rate. */
  shed?: boolean;
  /** Default accuracy floor per request (least compute meeting it); a request's `min_accuracy` overrides it. */
  minAccuracy?: number;
  maxBodyBytes?: number;
  maxConcurrency?: number;
  timeoutMs?: number;
  /** Server version in `GET /v2` (default: slicec's). */
  version?: string;
}

export const RATE_HEADER = 'x-slicec-rate';
export const DEADLINE_HEADER = 'x-slicec-deadline-ms';

interface Route {
  /** Fixed rate for `<name>_rXXX`, undefined for the adaptive model. */
  rate: number | undefined;
  action: 'metadata' | 'ready' | 'infer';
}

export class V2Server {
  readonly metrics: ServerMetrics;
  readonly name: string;
  private readonly http: http.Server;
  private readonly models = new Map<string, number | undefined>();
  private active = 0;
  /** Requests of any kind being handled, and when the last one arrived (for drain). */
  private handling = 0;
  private lastArrival = 0;
  private draining = false;
  private readonly opts: Required<Omit<ServerOptions, 'name' | 'sloMs' | 'minAccuracy'>> & { sloMs: number | undefined; minAccuracy: number | undefined };

  constructor(
    private readonly model: SlicedModel,
    options: ServerOptions = {},
  ) {
    this.name = options.name ?? model.name;
    this.opts = {
      sloMs: options.sloMs,
      minAccuracy: options.minAccuracy,
      shed: options.shed ?? false,
      maxBodyBytes: options.maxBodyBytes ?? 64 * 1024 * 1024,
      maxConcurrency: options.maxConcurrency ?? 4096,
      timeoutMs: options.timeoutMs ?? 30_000,
      version: options.version ?? packageVersion(),
    };
    this.models.set(this.name, undefined);
    for (const r of model.rates) this.models.set(rateModelName(this.name, r.rate), r.rate);
    this.metrics = new ServerMetrics(() => {
      const stats = model.exitServing?.stats;
      return {
        queueDepth: model.queueDepth,
        inFlight: model.inFlight,
        ...(stats ? { cacheBytes: stats.bytes, trainerShare: stats.wallMs > 0 ? stats.busyMs / stats.wallMs : 0, headsOn: model.exitServing!.headStates.filter((h) => h.enabled).length } : {}),
      };
    });
    this.http = http.createServer({ requestTimeout: Math.max(10_000, Math.ceil(this.opts.timeoutMs * 2)), headersTimeout: 10_000, keepAliveTimeout: 5_000 }, (req, res) => {
      void this.handle(req, res);
    });
    this.http.on('clientError', (_err, socket) => {
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Type: application/json\r\n\r\n{"error":"malformed HTTP request"}');
      else socket.destroy();
    });
  }

  /** Names this server answers to: the adaptive model, then one per rate. */
  get modelNames(): string[] {
    return [...this.models.keys()];
  }

  listen(port: number, host = '127.0.0.1'): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.http.once('error', (e: NodeJS.ErrnoException) => {
        // the address is the user's choice: taken, not ours to bind, or not an address of this host
        const why = { EADDRINUSE: 'is in use by another process', EACCES: 'needs privileges slicec does not have', EADDRNOTAVAIL: 'is not an address of this host' }[e.code ?? ''];
        reject(why ? userError(ErrorCodes.BAD_FLAG, `cannot listen on ${host}:${port}: it ${why}`, {
          expected: 'a free port on an address of this host', found: `${host}:${port} (${e.code})`, hint: 'pick another --port (0: any free one) or --host',
        }) : e);
      });
      this.http.listen(port, host, () => {
        this.http.off('error', reject);
        resolve(this.http.address() as AddressInfo);
      });
    });
  }

  /** Requests being handled right now. */
  get activeRequests(): number {
    return this.handling;
  }

  /**
   * Stop accepting and finish the requests in flight; the model stays open. http.Server.close
   * would also drop connections that were accepted but have not sent their request yet, so the
   * listener is closed at the net level, requests still arriving on open connections are served
   * (with Connection: close) until none has come for a moment, and only then are idle
   * connections closed.
   */
  async close(): Promise<void> {
    this.draining = true;
    const closed = new Promise<void>((resolve) => net.Server.prototype.close.call(this.http, () => resolve()));
    const quietMs = 50;
    while (this.handling > 0 || performance.now() - this.lastArrival < quietMs) await new Promise((r) => setTimeout(r, quietMs / 5));
    this.http.closeIdleConnections();
    await closed;
  }

  /** `close()`, then close the model (SIGTERM). */
  async drain(): Promise<void> {
    await this.close();
    await this.model.close();
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const arrivedAt = performance.now();
    this.handling++;
    this.lastArrival = arrivedAt;
    res.once('close', () => this.handling--);
    if (this.draining) res.setHeader('Connection', 'close');
    try {
      const url = new URL(req.url ?? '/', 'http://localhost');
      const p = url.pathname;
      if (p === '/v2/health/live') return await this.getOnly(req, res, () => this.json(res, 200, { live: true }));
      if (p === '/v2/health/ready') return await this.getOnly(req, res, () => this.json(res, this.draining ? 503 : 200, { ready: !this.draining }));
      if (p === '/v2' || p === '/v2/') return await this.getOnly(req, res, () => this.json(res, 200, { name: 'slicec', version: this.opts.version, extensions: ['binary_tensor_data', 'slicec_rate'] }));
      if (p === '/metrics') return await this.getOnly(req, res, async () => this.text(res, 200, await this.metrics.registry.metrics(), this.metrics.registry.contentType));
      const m = /^\/v2\/models\/([^/]+)(?:\/versions\/([^/]+))?(?:\/(ready|infer))?$/.exec(p);
      if (!m) throw new V2Error(404, `no route for ${p}`);
      const name = decodeURIComponent(m[1]!);
      if (!this.models.has(name)) throw new V2Error(404, `unknown model "${name}"; this server serves ${this.modelNames.join(', ')}`);
      if (m[2] !== undefined && decodeURIComponent(m[2]) !== '1') throw new V2Error(404, `model "${name}" has only version 1`);
      const route: Route = { rate: this.models.get(name), action: (m[3] as Route['action'] | undefined) ?? 'metadata' };
      if (route.action === 'metadata') return await this.getOnly(req, res, () => this.json(res, 200, this.metadata(name)));
      if (route.action === 'ready') return await this.getOnly(req, res, () => this.json(res, this.draining ? 503 : 200, { name, ready: !this.draining }));
      if (req.method !== 'POST') throw new V2Error(405, `${req.method} is not allowed on ${p}; use POST`);
      await this.infer(name, route, req, res, arrivedAt);
    } catch (e) {
      this.fail(res, e, undefined);
    }
  }

  private async getOnly(req: http.IncomingMessage, res: http.ServerResponse, answer: () => void | Promise<void>): Promise<void> {
    if (req.method !== 'GET' && req.method !== 'HEAD') throw new V2Error(405, `${req.method} is not allowed here; use GET`);
    req.resume();
    await answer();
  }

  private metadata(name: string): Record<string, unknown> {
    return {
      name,
      versions: ['1'],
      platform: 'slicec',
      inputs: this.model.inputs.map(tensorMetadata),
      outputs: this.model.outputs.map(tensorMetadata),
      parameters: { rates: this.model.rates.map((r) => r.rate).join(','), mode: this.model.mode, device: this.model.device },
    };
  }

  private async infer(name: string, route: Route, req: http.IncomingMessage, res: http.ServerResponse, arrivedAt: number): Promise<void> {
    if (this.active >= this.opts.maxConcurrency) {
      req.resume();
      this.fail(res, new V2Error(503, `server busy: ${this.active} requests in flight (limit ${this.opts.maxConcurrency})`), arrivedAt);
      return;
    }
    this.active++;
    try {
      const body = await readBody(req, this.opts.maxBodyBytes);
      const headerLength = req.headers['inference-header-content-length'];
      const request = decodeInferRequest(body, Array.isArray(headerLength) ? headerLength[0] : headerLength, this.model.inputs);
      const deadlineHeader = req.headers[DEADLINE_HEADER];
      let deadlineMs = request.parameters.deadlineMs ?? this.opts.sloMs;
      if (typeof deadlineHeader === 'string') {
        const v = Number(deadlineHeader);
        if (!(v > 0) || !Number.isFinite(v)) throw new V2Error(400, `${DEADLINE_HEADER} must be a positive number of ms`);
        deadlineMs = v;
      }
      const options: InferOptions = {
        rate: route.rate ?? request.parameters.sliceRate,
        deadlineMs,
        minAccuracy: request.parameters.minAccuracy ?? (route.rate === undefined ? this.opts.minAccuracy : undefined),
        shed: request.parameters.shed ?? this.opts.shed,
        arrivedAt,
        outputs: request.outputs?.map((o) => o.name),
      };
      const result = await withTimeout(this.model.run(request.feeds, options), this.opts.timeoutMs);
      const binary = new Map(request.outputs?.map((o) => [o.name, o.binary]) ?? []);
      const encoded = encodeInferResponse(
        {
          model_name: name,
          model_version: '1',
          ...(request.id !== undefined ? { id: request.id } : {}),
          parameters: {
            slice_rate: result.rate,
            queue_ms: round3(result.queueMs),
            service_ms: round3(result.serviceMs),
            macs: Math.round(result.macs),
            ...(result.exits ? { exit: result.exits[0]! } : {}),
            ...(result.cascade ? { cascade: result.cascade.join(',') } : {}),
          },
        },
        Object.entries(result.outputs).map(([n, array]) => ({ name: n, array, binary: binary.get(n) ?? request.binaryOutputDefault })),
      );
      res.setHeader(RATE_HEADER, String(result.rate));
      if (encoded.headerLength !== null) {
        res.setHeader('Inference-Header-Content-Length', String(encoded.headerLength));
        res.setHeader('Content-Type', 'application/octet-stream');
      } else {
        res.setHeader('Content-Type', 'application/json');
      }
      res.setHeader('Content-Length', encoded.body.length);
      res.statusCode = 200;
      res.end(encoded.body);
      const totalMs = performance.now() - arrivedAt;
      this.metrics.served.inc({ model: this.name, rate: String(result.rate) });
      this.metrics.macs.inc({ model: this.name }, result.macs * result.batchRows);
      for (const exit of result.exits ?? []) this.metrics.exitAnswers.inc({ model: this.name, exit: exit < 0 ? 'final' : String(exit) });
      if (deadlineMs !== undefined && totalMs > deadlineMs) this.metrics.deadlineMisses.inc({ model: this.name });
      this.record(res.statusCode, arrivedAt);
    } catch (e) {
      if (e instanceof ShedError) this.metrics.sheds.inc({ model: this.name });
      this.fail(res, e, arrivedAt);
    } finally {
      this.active--;
    }
  }

  private record(code: number, arrivedAt: number | undefined): void {
    this.metrics.requests.inc({ model: this.name, code: String(code) });
    if (arrivedAt !== undefined) this.metrics.latency.observe({ model: this.name }, (performance.now() - arrivedAt) / 1000);
  }

  private fail(res: http.ServerResponse, e: unknown, arrivedAt: number | undefined): void {
    let status = 500;
    let message = e instanceof Error ? e.message : String(e);
    if (e instanceof V2Error) status = e.status;
    else if (e instanceof ShedError) status = 503;
    else if (isUserError(e)) status = 400;
    else if (e instanceof URIError) {
      status = 400;
      message = `malformed URL: ${message}`;
    }
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const req = res.req;
    if (!req.complete) {
      // A body within the limit is read and dropped, so the connection stays usable; a larger
      // one is not read: the connection closes after this answer (its rest would parse as garbage).
      const declared = Number(req.headers['content-length'] ?? NaN);
      if (declared <= this.opts.maxBodyBytes && status !== 413) {
        req.resume();
      } else {
        res.setHeader('Connection', 'close');
        res.once('finish', () => req.socket.end());
      }
    }
    this.json(res, status, { error: message });
    if (arrivedAt !== undefined) this.record(status, arrivedAt);
  }

  private json(res: http.ServerResponse, status: number, value: unknown): void {
    this.text(res, status, JSON.stringify(value), 'application/json');
  }

  private text(res: http.ServerResponse, status: number, body: string, type: string): void {
    res.statusCode = status;
    res.setHeader('Content-Type', type);
    res.setHeader('Content-Length', Buffer.byteLength(body));
    res.end(body);
  }
}

function round3(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}

function readBody(req: http.IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > limit) {
    req.resume();
    return Promise.reject(new V2Error(413, `request body of ${declared} bytes exceeds the limit of ${limit}`));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        reject(new V2Error(413, `request body exceeds the limit of ${limit} bytes`));
        req.removeAllListeners('data');
        req.resume();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)));
    req.on('error', reject);
    req.on('aborted', () => reject(new V2Error(400, 'request aborted')));
  });
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new V2Error(504, `no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
