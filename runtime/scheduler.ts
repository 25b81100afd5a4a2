// One FIFO queue in front of a fixed set of runners (worker threads, or connections to an
// upstream server). The queue is the load signal: a new request's predicted wait is the predicted
// work ahead of it (queued jobs plus what is left of running ones) spread over the runners. Just
// before a runner takes a job, the job may revise its rate with the wait it actually had.
// At that revision the head also sees the deadlines of everything queued behind it: the longest
// service time at which every queued job would still finish in time if all ran at one rate caps
// the head's rate. Without it the first request of a burst takes the widest rate and the ones
// behind it drop to the narrowest; with a concave accuracy curve the mix is worse than one
// middle rate for all (bench/load.ts, bursty trace).
// Optional dynamic batching joins queued jobs of one rate and matching trailing dims along axis
// 0, up to `maxBatch` rows, waiting at most `maxQueueDelayMs` for a batch to fill.

import { concatRows, sliceRows, type NdArray } from './ndarray.js';

/** Runs one (possibly batched) job: feeds are owned by the runner (it may transfer them). */
export interface Runner {
  run(rateIndex: number, feeds: Record<string, NdArray>): Promise<{ outputs: Record<string, NdArray>; serviceMs: number }>;
  close(): Promise<void>;
}

export interface Job {
  rateIndex: number;
  feeds: Record<string, NdArray>;
  rows: number;
  predictedMs: number;
  /**
   * At dispatch: the rate to run with after `waitedMs` in the queue, or -1 to shed. `capMs`, when
   * given, is the longest service time that keeps every queued job with a deadline in time if all
   * ran at the same rate (see uniformServiceCap).
   */
  revise?: (waitedMs: number, rateIndex: number, capMs?: number) => { rateIndex: number; predictedMs: number } | -1;
  /** When the answer is due (performance.now() ms); jobs without one do not cap the head's rate. */
  deadlineAt?: number;
}

export interface JobResult {
  outputs: Record<string, NdArray>;
  rateIndex: number;
  queueMs: number;
  /** The runner's own measure (session.run in the worker, the round trip for upstream). */
  serviceMs: number;
  /**
   * Dispatch to answer on this thread: service plus messaging and thread wake-ups. This is what
   * a slot costs, and what grows when other work on the host delays our threads.
   */
  slotMs: number;
  /** Rows of the batch this job ran in. */
  batchRows: number;
}

export class ShedError extends Error {
  constructor(readonly predictedMs: number) {
    super(`shed: predicted ${predictedMs.toFixed(1)} ms exceeds the deadline`);
    this.name = 'ShedError';
  }
}

interface Queued extends Job {
  enqueuedAt: number;
  resolve: (r: JobResult) => void;
  reject: (e: Error) => void;
}

interface Slot {
  runner: Runner;
  busy: { startedAt: number; predictedMs: number } | null;
}

export interface SchedulerOptions {
  maxBatch?: number;
  maxQueueDelayMs?: number;
}

export class Scheduler {
  private readonly slots: Slot[];
  private readonly queue: Queued[] = [];
  private closing = false;
  private delayTimer: NodeJS.Timeout | null = null;
  private idleWaiters: (() => void)[] = [];
  readonly maxBatch: number;
  readonly maxQueueDelayMs: number;

  constructor(runners: Runner[], options: SchedulerOptions = {}) {
    if (runners.length === 0) throw new Error('a scheduler needs at least one runner');
    this.slots = runners.map((runner) => ({ runner, busy: null }));
    this.maxBatch = Math.max(1, options.maxBatch ?? 1);
    this.maxQueueDelayMs = Math.max(0, options.maxQueueDelayMs ?? 0);
  }

  get runners(): number {
    return this.slots.length;
  }

  /** Jobs waiting for a runner. */
  get queueDepth(): number {
    return this.queue.length;
  }

  get inFlight(): number {
    return this.slots.filter((s) => s.busy).length;
  }

  /** Predicted wait before a job submitted now starts, ms. */
  predictedWaitMs(): number {
    const now = performance.now();
    let backlog = 0;
    for (const job of this.queue) backlog += job.predictedMs;
    if (backlog === 0 && this.slots.some((s) => !s.busy)) return 0;
    for (const s of this.slots) if (s.busy) backlog += Math.max(0, s.busy.predictedMs - (now - s.busy.startedAt));
    return backlog / this.slots.length;
  }

  submit(job: Job): Promise<JobResult> {
    if (this.closing) return Promise.reject(new Error('the model is closing'));
    return new Promise((resolve, reject) => {
      this.queue.push({ ...job, enqueuedAt: performance.now(), resolve, reject });
      this.pump();
    });
  }

  /** Refuse new jobs, finish queued and running ones, then close the runners. */
  async close(): Promise<void> {
    this.closing = true;
    this.pump();
    while (this.queue.length > 0 || this.inFlight > 0) await new Promise<void>((r) => this.idleWaiters.push(r));
    await Promise.all(this.slots.map((s) => s.runner.close()));
  }

  private pump(): void {
    for (;;) {
      const slot = this.slots.find((s) => !s.busy);
      if (!slot || this.queue.length === 0) break;
      const jobs = this.takeBatch();
      if (!jobs) break;
      if (jobs.length > 0) void this.dispatch(slot, jobs);
    }
    if (this.queue.length === 0 && this.inFlight === 0) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  /** The next jobs to run together; [] when the head was shed; null to wait for a batch to fill. */
  private takeBatch(): Queued[] | null {
    const now = performance.now();
    const head = this.queue[0]!;
    if (head.revise) {
      const revised = head.revise(now - head.enqueuedAt, head.rateIndex, uniformServiceCap(this.queue, now, this.slots.length));
      if (revised === -1) {
        this.queue.shift();
        head.reject(new ShedError(head.predictedMs));
        return [];
      }
      head.rateIndex = revised.rateIndex;
      head.predictedMs = revised.predictedMs;
      head.revise = undefined;
    }
    if (this.maxBatch <= 1) return [this.queue.shift()!];
    const picked = [0];
    let rows = head.rows;
    for (let i = 1; i < this.queue.length && rows < this.maxBatch; i++) {
      const job = this.queue[i]!;
      if (job.rateIndex === head.rateIndex && rows + job.rows <= this.maxBatch && sameTrailingDims(head.feeds, job.feeds)) {
        picked.push(i);
        rows += job.rows;
      }
    }
    const waited = now - head.enqueuedAt;
    if (rows < this.maxBatch && waited < this.maxQueueDelayMs && !this.closing) {
      if (!this.delayTimer) {
        this.delayTimer = setTimeout(() => {
          this.delayTimer = null;
          this.pump();
        }, this.maxQueueDelayMs - waited);
      }
      return null;
    }
    const jobs = picked.map((i) => this.queue[i]!);
    for (let k = picked.length - 1; k >= 0; k--) this.queue.splice(picked[k]!, 1);
    return jobs;
  }

  private async dispatch(slot: Slot, jobs: Queued[]): Promise<void> {
    const head = jobs[0]!;
    const feeds: Record<string, NdArray> = {};
    for (const name of Object.keys(head.feeds)) {
      const parts = jobs.map((j) => j.feeds[name]!);
      // A lone caller's array is copied: the runner may transfer (detach) what it is given.
      feeds[name] = parts.length === 1 ? { ...parts[0]!, data: parts[0]!.data.slice() } : concatRows(parts);
    }
    const startedAt = performance.now();
    slot.busy = { startedAt, predictedMs: jobs.reduce((s, j) => s + j.predictedMs, 0) };
    const batchRows = jobs.reduce((s, j) => s + j.rows, 0);
    try {
      const { outputs, serviceMs } = await slot.runner.run(head.rateIndex, feeds);
      const slotMs = performance.now() - startedAt;
      let row = 0;
      for (const job of jobs) {
        const mine: Record<string, NdArray> = {};
        for (const [name, a] of Object.entries(outputs)) mine[name] = jobs.length === 1 ? a : sliceRows(a, row, row + job.rows);
        row += job.rows;
        job.resolve({ outputs: mine, rateIndex: head.rateIndex, queueMs: startedAt - job.enqueuedAt, serviceMs, slotMs, batchRows });
      }
    } catch (e) {
      const error = e instanceof Error ? e : new Error(String(e));
      for (const job of jobs) job.reject(error);
    } finally {
      slot.busy = null;
      this.pump();
    }
  }
}

/**
 * The longest service time per job at which every job in `queue` that has a deadline still
 * finishes by it, if all run at one rate on `runners` runners from `now`: job j (0 = the head)
 * finishes after (j + 1) services ÷ runners, so the cap is the least (deadline_j − now) ×
 * runners ÷ (j + 1). Jobs already past their deadline are left out (they are late whatever the
 * head does). Undefined when no queued job has a deadline.
 */
export function uniformServiceCap(queue: readonly Pick<Job, 'deadlineAt'>[], now: number, runners: number): number | undefined {
  let cap: number | undefined;
  for (let j = 0; j < queue.length; j++) {
    const due = queue[j]!.deadlineAt;
    if (due === undefined || due <= now) continue;
    const c = ((due - now) * runners) / (j + 1);
    if (cap === undefined || c < cap) cap = c;
  }
  return cap;
}

function sameTrailingDims(a: Record<string, NdArray>, b: Record<string, NdArray>): boolean {
  for (const [name, x] of Object.entries(a)) {
    const y = b[name];
    if (!y || y.dtype !== x.dtype || y.dims.length !== x.dims.length) return false;
    for (let i = 1; i < x.dims.length; i++) if (x.dims[i] !== y.dims[i]) return false;
  }
  return true;
}
