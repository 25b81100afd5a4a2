// SlicedModel: a compiled slicec folder loaded for serving. Feeds are checked against the
// manifest, the rate policy picks a rate per request from the deadline and the predicted queue
// wait, and a worker pool runs it. Modes:
// - 'per-rate' (default): every worker holds one session per rate graph (fastest graphs; weights
//   in memory ≈ workers × Σ r² × the full weights, r over the rates).
// - 'elastic': every worker holds only elastic.onnx, fed the rate as a scalar (one copy of the
//   weights; slower per request, see docs/runtime.md).
// The latency profile is measured at load (a few runs per rate at batch 1 and a larger batch)
// and refined from every observed slot time (dispatch to answer, so messaging and the delays
// other work on the host adds to our threads count too).
// Per-input adaptive computation (runtime/adaptive/): with `exits`, requests run segment by
// segment and leave at the first confident head the cache trainer has switched on; with
// `cascade`, the policy may answer at a low rate and run a higher one only when the answer is not
// confident (thresholds from `slicec calibrate-cascade`). Both enter the policy as options with
// their measured accuracy and mean MACs.

import * as os from 'node:os';
import { ErrorCodes, userError } from '../compiler/diagnostics.js';
import { makeArray, shapeMatches, sizeOf, type NdArray } from './ndarray.js';
import { chooseRate, rankAccuracy, type Decision, type RateOption } from './policy.js';
import { ArrivalRate, LatencyProfile, type LatencySample, type RateProfileSnapshot } from './profile.js';
import { InlineRunner, startWorkers } from './pool.js';
import { Scheduler, ShedError, type Job, type Runner } from './scheduler.js';
import { readServedManifest, type ServedManifest, type ServedRate, type ServedTensor } from './manifest.js';
import { warnCudaFallback, type Device } from './session.js';
import { requireCascade, type ManifestCascade } from './adaptive/cascade-spec.js';
import { MODE_FEED } from './adaptive/protocol.js';
import { startExitServing, type ExitOptions, type ExitServing } from './adaptive/exits.js';
import { runCascade } from './adaptive/cascade-run.js';

export { ShedError };

export type ServeMode = 'per-rate' | 'elastic' | 'upstream';

export interface LoadOptions {
  device?: Device;
  /**
   * Worker threads (default: cores ÷ threads, at least 1). 0 runs the sessions on the calling
   * thread: no messages or thread wake-ups per request (the least overhead), but each run blocks
   * the event loop, so it is for scripts and one caller at a time, not for a server.
   */
  workers?: number;
  /** Intra-op threads per session (default 1). */
  threads?: number;
  mode?: 'per-rate' | 'elastic';
  /** Dynamic batching: rows per batch (default 1, off) and the longest wait for a batch to fill. */
  maxBatch?: number;
  maxQueueDelayMs?: number;
  /** Measured runs per rate and batch size when profiling at load (default 5). */
  profileRuns?: number;
  /**
   * Share of a request's deadline the policy plans to fill when the request arrives (default
   * 0.75); the rest absorbs prediction error. Filling the whole budget lets the queue grow until
   * every answer lands just at the deadline, where any noise makes it late. (0.5 was the default
   * before the dispatch-time cap from the queue's deadlines; with the cap, 0.75 kept 100 % SLO
   * attainment on both traces of bench/load.ts and raised effective accuracy on both.)
   */
  targetFraction?: number;
  /**
   * Utilization the policy keeps the workers under (default 0.95): a rate whose service time at
   * the current arrival rate would exceed it is not chosen, even while the queue is short. The
   * wait check (predicted wait + service within the planning budget) already guards latency, so
   * this only needs a stability margin; at 0.8 the spike of bench/load.ts was served at the
   * smallest rate although the next one up was sustainable (measured: mean rate 0.16 against
   * 0.24, effective accuracy 0.772 against 0.817, both at 100 % SLO attainment).
   */
  maxUtilization?: number;
  /** Where the one CUDA fallback warning goes (default stderr). */
  warn?: (text: string) => void;
  /** Serve with early exits and train their heads online (per-rate mode only; the folder needs --exits). */
  exits?: ExitOptions | boolean;
  /** Let the policy answer through the cascade across rates recorded by `slicec calibrate-cascade`. */
  cascade?: boolean;
}

export interface InferOptions {
  /** Serve at exactly this rate (one of the manifest's); the policy is skipped. */
  rate?: number;
  /** Latency objective for this request, ms from `arrivedAt` (or from the call). */
  deadlineMs?: number;
  /**
   * Accuracy floor; needs per-rate accuracy in the manifest. The request is then served by the
   * option that spends the fewest MACs meeting it (within the deadline, when one is given).
   */
  minAccuracy?: number;
  /** Refuse (ShedError) instead of answering late when no rate fits the deadline. */
  shed?: boolean;
  /** performance.now() when the request arrived, so time spent before `run` counts. */
  arrivedAt?: number;
  /** Output names to return (default all). */
  outputs?: string[];
}

export interface InferResult {
  outputs: Record<string, NdArray>;
  rate: number;
  queueMs: number;
  serviceMs: number;
  /** From arrival to the answer, ms. */
  totalMs: number;
  /** What the policy predicted for wait + service, ms. */
  predictedMs: number;
  batchRows: number;
  /** MACs spent per row (mean over the rows): the rate's, less what an early exit saved, or the cascade's stages summed. */
  macs: number;
  /** Served with exits: per row, the exit that answered (−1: the final output). */
  exits?: number[];
  /** Served by the cascade: the rates run, in order (the last one answered what was left). */
  cascade?: number[];
}

export class SlicedModel {
  private profile: LatencyProfile;
  private readonly accuracy: { values: number[]; recorded: boolean };
  private readonly batchable: boolean;
  private readonly pool: Scheduler;
  private readonly targetFraction: number;
  private readonly maxUtilization: number;
  private readonly arrivals = new ArrivalRate();
  private readonly exits: ExitServing | null;
  private readonly cascade: ManifestCascade | null;

  private constructor(
    readonly manifest: ServedManifest,
    readonly mode: ServeMode,
    runners: Runner[],
    readonly device: Device,
    options: LoadOptions,
    adaptive: { exits?: ExitServing; cascade?: ManifestCascade },
  ) {
    this.exits = adaptive.exits ?? null;
    this.cascade = adaptive.cascade ?? null;
    this.batchable = [...manifest.inputs, ...manifest.outputs].every((t) => t.shape !== null && t.shape.length > 0 && typeof t.shape[0] !== 'number');
    this.pool = new Scheduler(runners, { maxBatch: this.batchable ? options.maxBatch : 1, maxQueueDelayMs: options.maxQueueDelayMs });
    this.profile = new LatencyProfile(manifest.rates.map(() => ({ intercept: 1, slope: 0 })));
    this.accuracy = rankAccuracy(manifest.rates);
    this.targetFraction = Math.min(1, Math.max(0.05, options.targetFraction ?? 0.75));
    this.maxUtilization = Math.min(1, Math.max(0.05, options.maxUtilization ?? 0.95));
  }

  /**
   * A model served by the given runners (one per parallel slot), profiled before it resolves.
   * `load` uses worker threads; the router uses connections to an upstream v2 server.
   */
  static async withRunners(manifest: ServedManifest, mode: ServeMode, runners: Runner[], device: Device, options: LoadOptions = {}, exits?: ExitServing): Promise<SlicedModel> {
    const cascade = options.cascade ? requireCascade(manifest.dir, manifest.rates.map((r) => r.rate)) : undefined;
    if (cascade && manifest.outputs.length !== 1) {
      throw userError(ErrorCodes.BAD_FLAG, '--cascade needs a model with one output (class scores)', { expected: '1 output', found: `${manifest.outputs.length} outputs` });
    }
    const model = new SlicedModel(manifest, mode, runners, device, options, { exits, cascade });
    try {
      await model.measureProfile(options.profileRuns ?? 5);
    } catch (e) {
      await model.close();
      throw e;
    }
    return model;
  }

  static async load(dir: string, options: LoadOptions = {}): Promise<SlicedModel> {
    const manifest = readServedManifest(dir);
    const mode = options.mode ?? 'per-rate';
    if (mode === 'elastic' && !manifest.elastic) {
      throw userError(ErrorCodes.BAD_INPUT_FILE, `${manifest.dir} has no elastic graph`, { expected: 'manifest.elastic with file and rateInput', hint: 'use mode per-rate' });
    }
    const threads = Math.max(1, options.threads ?? 1);
    if (options.workers !== undefined && !(Number.isInteger(options.workers) && options.workers >= 0)) {
      throw userError(ErrorCodes.BAD_FLAG, `workers must be a whole number ≥ 0, got ${options.workers}`, { expected: '0 (on the calling thread) or a count of worker threads', found: String(options.workers) });
    }
    const inline = options.workers === 0;
    const workers = Math.max(1, options.workers ?? Math.floor(os.availableParallelism() / threads));
    const warnFallback = (fallback: string | null): void => {
      if (options.device === 'cuda') warnCudaFallback(fallback, options.warn);
    };
    if (options.exits) {
      if (inline) throw userError(ErrorCodes.BAD_FLAG, 'exits are served from worker threads (their heads train beside them)', { expected: 'workers ≥ 1', found: 'workers 0', hint: 'leave workers out, or give 1 or more' });
      if (mode === 'elastic') throw userError(ErrorCodes.BAD_FLAG, '--exits serves the per-rate graphs', { expected: '--mode per-rate', found: '--mode elastic', hint: 'drop --mode elastic' });
      const started = await startExitServing(manifest, options.exits === true ? {} : options.exits, { workers, threads, device: options.device ?? 'cpu' });
      warnFallback(started.fallback);
      try {
        return await SlicedModel.withRunners(manifest, mode, started.runners, started.device, options, started.exits);
      } catch (e) {
        await started.exits.close();
        throw e;
      }
    }
    const pool = {
      files: mode === 'elastic' ? [manifest.elastic!.file] : manifest.rates.map((r) => r.file),
      rateInput: mode === 'elastic' ? manifest.elastic!.rateInput : null,
      rates: manifest.rates.map((r) => r.rate),
      workers,
      threads,
      device: options.device ?? 'cpu',
    };
    const started = inline ? await InlineRunner.start(pool) : await startWorkers(pool);
    warnFallback(started.fallback);
    return SlicedModel.withRunners(manifest, mode, started.runners, started.device, options);
  }

  get name(): string {
    return this.manifest.sourceName;
  }

  get rates(): readonly ServedRate[] {
    return this.manifest.rates;
  }

  get inputs(): readonly ServedTensor[] {
    return this.manifest.inputs;
  }

  get outputs(): readonly ServedTensor[] {
    return this.manifest.outputs;
  }

  get workers(): number {
    return this.pool.runners;
  }

  get queueDepth(): number {
    return this.pool.queueDepth;
  }

  get inFlight(): number {
    return this.pool.inFlight;
  }

  /** The exits' serving state (heads, trainer statistics), when loaded with exits. */
  get exitServing(): ExitServing | null {
    return this.exits;
  }

  /** The cascade the policy may use, when loaded with one. */
  get cascadeSpec(): ManifestCascade | null {
    return this.cascade;
  }

  profileSnapshot(): RateProfileSnapshot[] {
    return this.profile.snapshot();
  }

  /** Predicted service time at rate index `index` for `rows` rows, ms. */
  predictServiceMs(index: number, rows: number): number {
    return this.profile.predict(index, rows);
  }

  async run(feeds: Record<string, NdArray>, options: InferOptions = {}): Promise<InferResult> {
    const arrivedAt = options.arrivedAt ?? performance.now();
    const rows = this.checkFeeds(feeds);
    this.arrivals.arrive(arrivedAt);
    const wanted = this.checkOutputs(options.outputs);
    const plan = this.plan(rows, options, arrivedAt);
    if (plan.index === this.manifest.rates.length) return this.runCascade(feeds, rows, options, arrivedAt, wanted, plan.predictedMs);
    const { result, exits } = await this.submit(plan.index, feeds, rows, true, plan.revise, plan.deadlineAt);
    const outputs: Record<string, NdArray> = {};
    for (const name of wanted) outputs[name] = result.outputs[name]!;
    const rateMacs = this.manifest.rates[result.rateIndex]!.macs;
    return {
      outputs,
      rate: this.manifest.rates[result.rateIndex]!.rate,
      queueMs: result.queueMs,
      serviceMs: result.serviceMs,
      totalMs: performance.now() - arrivedAt,
      predictedMs: plan.predictedMs,
      batchRows: result.batchRows,
      macs: exits.length > 0 ? exits.reduce((a, e) => a + e.macs, 0) / exits.length : rateMacs,
      ...(exits.length > 0 ? { exits: exits.map((e) => e.exit) } : {}),
    };
  }

  /** One job at a rate; with exits loaded, in the exits' mode (`useExits`) or plain. */
  private async submit(index: number, feeds: Record<string, NdArray>, rows: number, useExits: boolean, revise?: Job['revise'], deadlineAt?: number): Promise<{ result: Awaited<ReturnType<Scheduler['submit']>>; exits: { exit: number; macs: number }[] }> {
    const busy = this.pool.queueDepth > 0;
    this.exits?.backlog(busy);
    const mode = this.exits && useExits ? this.exits.modeFeed(index, rows, busy) : this.exits ? { dtype: 'int32' as const, dims: [rows], data: new Int32Array(rows) } : null;
    const result = await this.pool.submit({
      rateIndex: index,
      feeds: mode ? { ...feeds, [MODE_FEED]: mode } : feeds,
      rows,
      predictedMs: this.profile.predict(index, rows),
      revise,
      deadlineAt,
    });
    this.profile.observe(result.rateIndex, result.batchRows, result.slotMs);
    return { result, exits: this.exits ? this.exits.takeRows(result.rateIndex, result.outputs) : [] };
  }

  /** The cascade (runtime/adaptive/cascade-run.ts): stages run plain, each a job of its own. */
  private runCascade(feeds: Record<string, NdArray>, rows: number, options: InferOptions, arrivedAt: number, wanted: string[], predictedMs: number): Promise<InferResult> {
    return runCascade(
      {
        cascade: this.cascade!,
        manifest: this.manifest,
        submit: async (index) => (await this.submit(index, feeds, rows, false)).result,
        predictMs: (index) => this.pool.predictedWaitMs() + this.profile.predict(index, rows),
      },
      rows,
      options.deadlineMs ?? Infinity,
      arrivedAt,
      wanted,
      predictedMs,
    );
  }

  /** Let running and queued requests finish, then stop the workers (and the cache trainer, which checkpoints its heads). */
  async close(): Promise<void> {
    await this.pool.close();
    await this.exits?.close();
  }

  /**
   * The policy's options: every rate (with exits loaded, at its accuracy less the share its heads
   * answer against the final model, and its mean MACs with them), then the cascade when loaded.
   */
  private options(rows: number): RateOption[] {
    const all = this.manifest.rates.map((r, i): RateOption => {
      const estimate = this.exits?.anyOn(i) ? this.exits.estimate(i) : null;
      return { rate: r.rate, accuracy: this.accuracy.values[i]! - (estimate?.disagreement ?? 0), serviceMs: this.profile.predict(i, rows), macs: estimate?.meanMacs ?? r.macs };
    });
    const c = this.cascade;
    if (c) {
      let reach = 1;
      let serviceMs = 0;
      for (const s of c.stages) {
        const index = this.manifest.rates.findIndex((r) => Math.abs(r.rate - s.rate) < 1e-9);
        serviceMs += reach * this.profile.predict(index, rows);
        reach -= s.answered / Math.max(1, c.samples);
      }
      all.push({ rate: c.stages[c.stages.length - 1]!.rate, accuracy: c.accuracy, serviceMs, macs: c.meanMacs });
    }
    return all;
  }

  /**
   * The rate for a request, and how to revise it at dispatch. A fixed rate is the policy over that
   * one rate, so `shed` still refuses what cannot be answered in time (full-width with shedding).
   */
  private plan(rows: number, options: InferOptions, arrivedAt: number): { index: number; predictedMs: number; revise?: Job['revise']; deadlineAt?: number } {
    let indices = this.manifest.rates.map((_, i) => i);
    if (options.rate !== undefined) {
      const index = this.manifest.rates.findIndex((r) => Math.abs(r.rate - options.rate!) < 1e-9);
      if (index < 0) {
        throw userError(ErrorCodes.BAD_REQUEST, `rate ${options.rate} is not one this model was compiled for`, {
          expected: this.manifest.rates.map((r) => r.rate).join(', '),
          found: String(options.rate),
        });
      }
      indices = [index];
    } else {
      if (options.minAccuracy !== undefined && !this.accuracy.recorded) {
        throw userError(ErrorCodes.BAD_REQUEST, 'minAccuracy needs an accuracy per rate, and the manifest records none', {
          hint: 'run `slicec eval` on the compiled folder first, or ask for a rate or a deadline',
        });
      }
      // the cascade is one more option, after the rates
      if (this.cascade) indices.push(this.manifest.rates.length);
    }
    const deadline = options.deadlineMs ?? Infinity;
    const minAccuracy = options.rate === undefined ? options.minAccuracy : undefined;
    const request = { minAccuracy, shed: options.shed, objective: minAccuracy !== undefined ? ('compute' as const) : ('latency' as const) };
    const perMs = this.arrivals.at(performance.now());
    // Without a deadline there is no objective to protect: the most accurate rate is served.
    const maxServiceMs = perMs > 0 && Number.isFinite(deadline) ? (this.pool.runners * this.maxUtilization) / perMs : undefined;
    const decide = (within: number[], waitMs: number, fraction: number, capMs?: number): Decision & { rateIndex: number } => {
      const all = this.options(rows);
      const budgetMs = deadline * fraction - (performance.now() - arrivedAt);
      const cap = capMs === undefined ? maxServiceMs : Math.min(maxServiceMs ?? Infinity, capMs);
      const decision = chooseRate(within.map((i) => all[i]!), { ...request, budgetMs }, { waitMs, maxServiceMs: cap });
      return { ...decision, rateIndex: decision.kind === 'serve' ? within[decision.index]! : -1 };
    };
    const waitMs = this.pool.predictedWaitMs();
    let first = decide(indices, waitMs, this.targetFraction);
    // Shedding judges against the whole deadline; the rate is planned on a share of it.
    if (first.kind === 'shed') first = decide(indices, waitMs, 1);
    if (first.kind === 'shed') throw new ShedError(first.predictedMs);
    if (!Number.isFinite(deadline) || first.rateIndex === this.manifest.rates.length) return { index: first.rateIndex, predictedMs: first.predictedMs };
    // At dispatch the wait is known: keep the rate when it still fits, else step down (never up,
    // which would lengthen the wait of everything queued behind), and no wider than what keeps
    // the queue behind in time at one rate (capMs, from the scheduler).
    const revise = (_waitedMs: number, current: number, capMs?: number): { rateIndex: number; predictedMs: number } | -1 => {
      const lower = indices.filter((i) => i < this.manifest.rates.length && this.accuracy.values[i]! <= this.accuracy.values[current]!);
      const decision = decide(lower, 0, 1, capMs);
      if (decision.kind === 'shed') return -1;
      return { rateIndex: decision.rateIndex, predictedMs: decision.predictedMs };
    };
    return { index: first.rateIndex, predictedMs: first.predictedMs, revise, deadlineAt: arrivedAt + deadline };
  }

  /** Names, dtypes and shapes against the manifest; returns the batch rows (axis 0). */
  private checkFeeds(feeds: Record<string, NdArray>): number {
    const bad = (message: string, expected: string, found: string): Error => userError(ErrorCodes.BAD_REQUEST, message, { expected, found });
    const names = this.manifest.inputs.map((t) => t.name);
    for (const name of Object.keys(feeds)) {
      if (!names.includes(name)) throw bad(`unknown input "${name}"`, `inputs ${names.join(', ')}`, name);
    }
    const symbols = new Map<string, number>();
    for (const input of this.manifest.inputs) {
      const feed = feeds[input.name];
      if (!feed) throw bad(`input "${input.name}" is missing`, `inputs ${names.join(', ')}`, Object.keys(feeds).join(', ') || 'none');
      if (feed.dtype !== input.dtype) throw bad(`input "${input.name}" has dtype ${feed.dtype}`, input.dtype, feed.dtype);
      const shape = input.shape;
      if (!feed.dims.every((d) => Number.isSafeInteger(d) && d >= 0) || !shapeMatches(feed.dims, shape)) {
        throw bad(`input "${input.name}" has shape [${feed.dims.join(', ')}]`, `[${(shape ?? ['*']).map((d) => d ?? '?').join(', ')}]`, `[${feed.dims.join(', ')}]`);
      }
      if (feed.data.length !== sizeOf(feed.dims)) throw bad(`input "${input.name}" holds ${feed.data.length} values for shape [${feed.dims.join(', ')}]`, `${sizeOf(feed.dims)} values`, String(feed.data.length));
      shape?.forEach((d, i) => {
        if (typeof d !== 'string') return;
        const seen = symbols.get(d);
        if (seen !== undefined && seen !== feed.dims[i]) throw bad(`dimension ${d} is ${feed.dims[i]} in "${input.name}" but ${seen} elsewhere`, `${d} = ${seen}`, String(feed.dims[i]));
        symbols.set(d, feed.dims[i]!);
      });
    }
    const first = feeds[this.manifest.inputs[0]!.name]!;
    return this.batchable ? first.dims[0]! : 1;
  }

  private checkOutputs(wanted: string[] | undefined): string[] {
    const names = this.manifest.outputs.map((t) => t.name);
    if (!wanted) return names;
    for (const name of wanted) {
      if (!names.includes(name)) throw userError(ErrorCodes.BAD_REQUEST, `unknown output "${name}"`, { expected: `outputs ${names.join(', ')}`, found: name });
    }
    return wanted;
  }

  /** A few timed runs per rate at batch 1 and one larger batch; the profile is a line through them. */
  private async measureProfile(runs: number): Promise<void> {
    const batches = this.batchable ? [1, Math.max(4, this.pool.maxBatch)] : [1];
    const samples: LatencySample[][] = this.manifest.rates.map(() => []);
    for (let index = 0; index < this.manifest.rates.length; index++) {
      for (const batch of batches) {
        const feeds = this.sampleFeeds(batch);
        const times: number[] = [];
        for (let k = 0; k < runs + 2; k++) {
          const r = await this.pool.submit({ rateIndex: index, feeds, rows: batch, predictedMs: 0 });
          if (k >= 2) times.push(r.slotMs);
        }
        times.sort((a, b) => a - b);
        samples[index]!.push({ batch, ms: times[Math.floor(times.length / 2)]! });
      }
    }
    this.profile = LatencyProfile.fromSamples(samples);
  }

  /** Feeds of the manifest's shapes (symbolic axis 0 = batch, other symbols 1), seeded values. */
  private sampleFeeds(batch: number): Record<string, NdArray> {
    const feeds: Record<string, NdArray> = {};
    for (const input of this.manifest.inputs) {
      const dims = (input.shape ?? []).map((d, i) => (typeof d === 'number' ? d : i === 0 ? batch : 1));
      const data = makeArray(input.dtype, sizeOf(dims));
      if (data instanceof Float32Array || data instanceof Float64Array) {
        let state = 12345;
        for (let i = 0; i < data.length; i++) {
          state = (state * 1103515245 + 12345) >>> 0;
          data[i] = state / 2 ** 31 - 1;
        }
      }
      feeds[input.name] = { dtype: input.dtype, dims, data };
    }
    return feeds;
  }
}
