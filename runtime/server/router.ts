// The router: the same policy as the local runtime, in front of a v2 server that holds one model
// per rate (`<name>_r050`, ... as `slicec export triton` writes them for Triton, or another slicec
// server). Each of `concurrency` runners keeps one request in flight upstream, so the router's own
// queue is the load signal, and the service times it profiles and refines are the round trips it
// observes (network and upstream queueing included). Tensors travel with the binary extension.

import { ErrorCodes, userError } from '../../compiler/diagnostics.js';
import { dtypeFromV2, makeArray, v2Name, viewBytes, type NdArray } from '../ndarray.js';
import { rateModelName, readServedManifest } from '../manifest.js';
import type { Runner } from '../scheduler.js';
import { SlicedModel, type LoadOptions } from '../sliced-model.js';

export interface UpstreamOptions extends LoadOptions {
  /** Base URL of the upstream v2 server, e.g. http://triton:8000. */
  upstream: string;
  /** Model name upstream (default: the source model's file base name). */
  name?: string;
  /** Requests kept in flight upstream (default 2). */
  concurrency?: number;
}

class UpstreamRunner implements Runner {
  constructor(
    private readonly base: string,
    private readonly models: string[],
    private readonly outputs: string[],
  ) {}

  async run(rateIndex: number, feeds: Record<string, NdArray>): Promise<{ outputs: Record<string, NdArray>; serviceMs: number }> {
    const entries = Object.entries(feeds);
    const header = Buffer.from(
      JSON.stringify({
        inputs: entries.map(([name, a]) => ({ name, shape: a.dims, datatype: v2Name(a.dtype), parameters: { binary_data_size: a.data.byteLength } })),
        outputs: this.outputs.map((name) => ({ name, parameters: { binary_data: true } })),
      }),
    );
    const body = Buffer.concat([header, ...entries.map(([, a]) => Buffer.from(a.data.buffer, a.data.byteOffset, a.data.byteLength))]);
    const t0 = performance.now();
    const res = await fetch(`${this.base}/v2/models/${encodeURIComponent(this.models[rateIndex]!)}/infer`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/octet-stream', 'Inference-Header-Content-Length': String(header.length) },
      body,
    });
    const bytes = Buffer.from(await res.arrayBuffer());
    const serviceMs = performance.now() - t0;
    if (!res.ok) {
      let message = bytes.toString('utf8');
      try {
        message = (JSON.parse(message) as { error?: string }).error ?? message;
      } catch {
        // not a v2 error body: keep the text
      }
      throw new Error(`upstream ${this.models[rateIndex]} answered ${res.status}: ${message}`);
    }
    return { outputs: decodeUpstreamResponse(bytes, res.headers.get('inference-header-content-length')), serviceMs };
  }

  async close(): Promise<void> {}
}

/** A v2 infer response (JSON, or JSON header + binary outputs) into typed arrays. */
export function decodeUpstreamResponse(bytes: Buffer, headerLength: string | null): Record<string, NdArray> {
  const jsonEnd = headerLength === null ? bytes.length : Number(headerLength);
  const parsed = JSON.parse(bytes.subarray(0, jsonEnd).toString('utf8')) as {
    outputs: { name: string; datatype: string; shape: number[]; data?: (number | boolean)[]; parameters?: { binary_data_size?: number } }[];
  };
  let offset = jsonEnd;
  const out: Record<string, NdArray> = {};
  for (const o of parsed.outputs) {
    const dtype = dtypeFromV2(o.datatype);
    if (!dtype) throw new Error(`upstream output ${o.name} has datatype ${o.datatype}, which the runtime does not carry`);
    const size = o.parameters?.binary_data_size;
    if (size !== undefined) {
      out[o.name] = { dtype, dims: o.shape, data: viewBytes(dtype, bytes.subarray(offset, offset + size)) };
      offset += size;
    } else {
      const values = o.data ?? [];
      const data = makeArray(dtype, values.length);
      const wide = dtype === 'int64' || dtype === 'uint64';
      for (let i = 0; i < values.length; i++) data[i] = wide ? (BigInt(values[i] as number) as never) : Number(values[i]);
      out[o.name] = { dtype, dims: o.shape, data };
    }
  }
  return out;
}

/** A SlicedModel whose rates run upstream; every per-rate model must be ready there. */
export async function connectUpstream(dir: string, options: UpstreamOptions): Promise<SlicedModel> {
  const manifest = readServedManifest(dir);
  const base = options.upstream.replace(/\/+$/, '');
  const name = options.name ?? manifest.sourceName;
  const models = manifest.rates.map((r) => rateModelName(name, r.rate));
  for (const model of models) {
    let status: number | string;
    try {
      status = (await fetch(`${base}/v2/models/${encodeURIComponent(model)}/ready`)).status;
    } catch (e) {
      status = (e as Error).message;
    }
    if (status !== 200) {
      throw userError(ErrorCodes.BAD_FLAG, `upstream ${base} has no ready model ${model}`, {
        expected: `a v2 server with ${models.join(', ')} ready`,
        found: typeof status === 'number' ? `HTTP ${status}` : status,
        hint: 'export them with `slicec export triton DIR REPO` (or serve the folder with slicec) and check --upstream',
      });
    }
  }
  const outputs = manifest.outputs.map((t) => t.name);
  const runners = Array.from({ length: Math.max(1, options.concurrency ?? 2) }, () => new UpstreamRunner(base, models, outputs));
  return SlicedModel.withRunners(manifest, 'upstream', runners, 'cpu', options);
}
