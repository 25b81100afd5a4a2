// Open-loop load generator, run as its own process by bench/load.ts so its CPU use is not the
// server's event loop. It reads a plan (target URL, request body, intended send times), sends
// each request at its intended time whether or not earlier ones were answered, and measures
// latency from the intended send time (not the actual one), so a stalled server cannot hide
// its queueing by slowing the generator down (no coordinated omission). Writes one JSON result.
//
//   tsx bench/load-gen.ts PLAN.json OUT.json

import * as fs from 'node:fs';
import * as http from 'node:http';

export interface GenPlan {
  url: string;
  /** Base64 request body and its headers (binary tensor extension). */
  body: string;
  headers: Record<string, string>;
  /** Intended send times, ms from the start. */
  arrivals: number[];
  /** Give up on a request after this many ms from its intended time (counted as a timeout). */
  timeoutMs: number;
}

export interface GenResult {
  /** Per request, in plan order: latency ms from the intended time (-1 timeout), HTTP status (0 timeout or socket error), rate served (NaN when none). */
  latency: number[];
  status: number[];
  rate: number[];
  /** How late the generator sent, ms: median and max over requests. */
  sendLagMs: { median: number; max: number };
}

async function main(): Promise<void> {
  const [planFile, outFile] = process.argv.slice(2);
  if (!planFile || !outFile) throw new Error('usage: load-gen.ts PLAN.json OUT.json');
  const plan = JSON.parse(fs.readFileSync(planFile, 'utf8')) as GenPlan;
  const body = Buffer.from(plan.body, 'base64');
  const headers = { ...plan.headers, 'Content-Length': String(body.length) };
  const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
  const n = plan.arrivals.length;
  const result: GenResult = { latency: new Array(n).fill(-1), status: new Array(n).fill(0), rate: new Array(n).fill(Number.NaN), sendLagMs: { median: 0, max: 0 } };
  const lags: number[] = [];
  let done = 0;
  let finish: () => void = () => {};
  const finished = new Promise<void>((resolve) => (finish = resolve));
  const settle = (): void => {
    done++;
    if (done === n) finish();
  };
  const start = performance.now();

  const send = (i: number): void => {
    const intended = start + plan.arrivals[i]!;
    lags.push(performance.now() - intended);
    let settled = false;
    const end = (status: number): void => {
      if (settled) return;
      settled = true;
      result.status[i] = status;
      result.latency[i] = status === 0 ? -1 : performance.now() - intended;
      settle();
    };
    const req = http.request(plan.url, { method: 'POST', agent, headers }, (res) => {
      const rate = res.headers['x-slicec-rate'];
      if (typeof rate === 'string') result.rate[i] = Number(rate);
      res.resume();
      res.on('end', () => end(res.statusCode ?? 0));
      res.on('error', () => end(0));
    });
    req.on('error', () => end(0));
    const left = intended + plan.timeoutMs - performance.now();
    req.setTimeout(Math.max(1, left), () => {
      end(0);
      req.destroy();
    });
    req.end(body);
  };

  // Sends everything due, then sleeps until the next intended time (spinning on setImmediate for
  // the last millisecond, since timers are only millisecond-accurate).
  let next = 0;
  const tick = (): void => {
    const now = performance.now() - start;
    while (next < n && plan.arrivals[next]! <= now) send(next++);
    if (next >= n) return;
    const wait = plan.arrivals[next]! - (performance.now() - start);
    if (wait > 1.5) setTimeout(tick, wait - 1);
    else setImmediate(tick);
  };
  if (n === 0) finish();
  else tick();
  await finished;
  agent.destroy();
  lags.sort((a, b) => a - b);
  result.sendLagMs = { median: lags[Math.floor(lags.length / 2)] ?? 0, max: lags[lags.length - 1] ?? 0 };
  fs.writeFileSync(outFile, JSON.stringify(result));
}

await main();
