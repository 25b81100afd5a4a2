// The rate policy, the latency profile and the scheduler, without onnxruntime: pure functions and
// a scheduler over fake runners whose service times the test controls.

import { describe, expect, it } from 'vitest';
import { chooseRate, rankAccuracy, type RateOption } from '../runtime/policy.js';
import { LatencyProfile, fitLine } from '../runtime/profile.js';
import { Scheduler, ShedError, uniformServiceCap, type Runner } from '../runtime/scheduler.js';
import type { NdArray } from '../runtime/ndarray.js';

const OPTIONS: RateOption[] = [
  { rate: 0.25, accuracy: 0.25, serviceMs: 1 },
  { rate: 0.5, accuracy: 0.5, serviceMs: 3 },
  { rate: 0.75, accuracy: 0.75, serviceMs: 6 },
  { rate: 1, accuracy: 1, serviceMs: 10 },
];

describe('chooseRate', () => {
  it('serves the most accurate rate that fits the budget', () => {
    expect(chooseRate(OPTIONS, { budgetMs: Infinity }, { waitMs: 0 })).toEqual({ kind: 'serve', index: 3, predictedMs: 10, meetsDeadline: true });
    expect(chooseRate(OPTIONS, { budgetMs: 10 }, { waitMs: 0 })).toMatchObject({ index: 3, meetsDeadline: true });
    expect(chooseRate(OPTIONS, { budgetMs: 9.9 }, { waitMs: 0 })).toMatchObject({ index: 2 });
  });

  it('steps down as the predicted queue wait grows', () => {
    const served = [0, 4, 7, 8.5, 20].map((waitMs) => chooseRate(OPTIONS, { budgetMs: 10 }, { waitMs }));
    expect(served.map((d) => (d.kind === 'serve' ? d.index : -1))).toEqual([3, 2, 1, 0, 0]);
    expect(served[4]).toMatchObject({ meetsDeadline: false, predictedMs: 21 });
  });

  it('answers late at the cheapest rate when nothing fits, or sheds when asked', () => {
    expect(chooseRate(OPTIONS, { budgetMs: 0.5 }, { waitMs: 0 })).toEqual({ kind: 'serve', index: 0, predictedMs: 1, meetsDeadline: false });
    expect(chooseRate(OPTIONS, { budgetMs: 0.5, shed: true }, { waitMs: 0 })).toEqual({ kind: 'shed', predictedMs: 1 });
    expect(chooseRate(OPTIONS, { budgetMs: 5, shed: true }, { waitMs: 1 })).toMatchObject({ kind: 'serve', index: 1 });
  });

  it('keeps to the accuracy floor, and to the most accurate rate when the floor is out of reach', () => {
    expect(chooseRate(OPTIONS, { budgetMs: 2, minAccuracy: 0.5 }, { waitMs: 0 })).toMatchObject({ kind: 'serve', index: 1, meetsDeadline: false });
    expect(chooseRate(OPTIONS, { budgetMs: 2, minAccuracy: 0.5, shed: true }, { waitMs: 0 })).toMatchObject({ kind: 'shed' });
    expect(chooseRate(OPTIONS, { budgetMs: 100, minAccuracy: 2 }, { waitMs: 0 })).toMatchObject({ index: 3 });
  });

  it('ranks by recorded accuracy, not by rate, and breaks ties toward the cheaper rate', () => {
    const recorded = OPTIONS.map((o, i) => ({ ...o, accuracy: [0.7, 0.9, 0.9, 0.85][i]! }));
    expect(chooseRate(recorded, { budgetMs: Infinity }, { waitMs: 0 })).toMatchObject({ index: 1 });
    expect(chooseRate(recorded, { budgetMs: 2 }, { waitMs: 0 })).toMatchObject({ index: 0 });
  });

  it('accuracy-constrained: the least compute meeting the floor, within the deadline when one is given', () => {
    // a rate with exits (index 4) is as accurate as rate 0.75 and spends less than rate 0.5
    const withExits: RateOption[] = [...OPTIONS.map((o) => ({ ...o, macs: o.rate * 100 })), { rate: 1, accuracy: 0.75, serviceMs: 4, macs: 40 }];
    const compute = (minAccuracy: number, budgetMs: number) => chooseRate(withExits, { budgetMs, minAccuracy, objective: 'compute' }, { waitMs: 0 });
    expect(compute(0.7, Infinity)).toMatchObject({ kind: 'serve', index: 4 });
    expect(compute(0.5, Infinity)).toMatchObject({ index: 4 });
    expect(compute(0.3, Infinity)).toMatchObject({ index: 4 });
    expect(compute(0.2, Infinity)).toMatchObject({ index: 0 });
    expect(compute(0.9, Infinity)).toMatchObject({ index: 3 });
    // within 3.5 ms: the exits option is too slow, rate 0.75 too; rate 0.5 meets 0.5
    expect(compute(0.5, 3.5)).toMatchObject({ index: 1, meetsDeadline: true });
    // nothing meeting 0.9 fits 3.5 ms: the floor wins, the answer is late
    expect(compute(0.9, 3.5)).toMatchObject({ index: 3, meetsDeadline: false });
    // latency mode with the same floor: the most accurate in time, not the cheapest
    expect(chooseRate(withExits, { budgetMs: Infinity, minAccuracy: 0.5 }, { waitMs: 0 })).toMatchObject({ index: 3 });
    // without MACs the rate value ranks the cost
    expect(chooseRate(OPTIONS, { budgetMs: Infinity, minAccuracy: 0.5, objective: 'compute' }, { waitMs: 0 })).toMatchObject({ index: 1 });
  });

  it('rankAccuracy uses the manifest only when every rate has a value', () => {
    expect(rankAccuracy([{ rate: 0.5, accuracy: 0.8 }, { rate: 1, accuracy: 0.9 }])).toEqual({ values: [0.8, 0.9], recorded: true });
    expect(rankAccuracy([{ rate: 0.5, accuracy: 0.8 }, { rate: 1 }])).toEqual({ values: [0.5, 1], recorded: false });
  });
});

describe('LatencyProfile', () => {
  it('fits intercept + slope · batch exactly on linear samples', () => {
    const fit = fitLine([{ batch: 1, ms: 1.5 }, { batch: 8, ms: 5 }, { batch: 4, ms: 3 }]);
    expect(fit.intercept).toBeCloseTo(1, 9);
    expect(fit.slope).toBeCloseTo(0.5, 9);
    expect(fitLine([{ batch: 2, ms: 4 }])).toEqual({ intercept: 0, slope: 2 });
  });

  it('follows a slowdown through the moving average and leaves other rates alone', () => {
    const profile = new LatencyProfile([{ intercept: 1, slope: 1 }, { intercept: 2, slope: 0 }], 0.2, 1000);
    expect(profile.predict(0, 3, 0)).toBe(4);
    for (let i = 0; i < 40; i++) profile.observe(0, 1, 4, i); // twice the fitted 2 ms
    expect(profile.predict(0, 3, 40)).toBeCloseTo(8, 1);
    expect(profile.predict(1, 1, 40)).toBe(2);
    profile.observe(1, 1, Number.NaN, 40);
    expect(profile.snapshot()[1]).toMatchObject({ factor: 1, observed: 0 });
    // Unrefreshed, the correction relaxes toward the fitted line: halfway after one half-life.
    expect(profile.predict(0, 3, 1039)).toBeCloseTo(6, 1);
    expect(profile.predict(0, 3, 20_000)).toBeCloseTo(4, 2);
  });
});

/** A runner that takes `ms[rateIndex]` per call and echoes its input as the output `y`. */
class FakeRunner implements Runner {
  calls: { rateIndex: number; rows: number }[] = [];
  closed = false;
  constructor(private readonly ms: number[]) {}
  async run(rateIndex: number, feeds: Record<string, NdArray>): Promise<{ outputs: Record<string, NdArray>; serviceMs: number }> {
    const x = feeds.x!;
    this.calls.push({ rateIndex, rows: x.dims[0]! });
    await new Promise((r) => setTimeout(r, this.ms[rateIndex]));
    return { outputs: { y: { ...x, data: (x.data as Float32Array).map((v) => v * 10) } }, serviceMs: this.ms[rateIndex]! };
  }
  async close(): Promise<void> {
    this.closed = true;
  }
}

const row = (v: number): Record<string, NdArray> => ({ x: { dtype: 'float32', dims: [1, 2], data: new Float32Array([v, v + 1]) } });

describe('Scheduler', () => {
  it('predicts the wait from the work queued ahead, spread over the runners', async () => {
    const scheduler = new Scheduler([new FakeRunner([20, 20]), new FakeRunner([20, 20])]);
    expect(scheduler.predictedWaitMs()).toBe(0);
    const jobs = [1, 2, 3, 4].map((v) => scheduler.submit({ rateIndex: 0, feeds: row(v), rows: 1, predictedMs: 20 }));
    expect(scheduler.queueDepth).toBe(2);
    expect(scheduler.predictedWaitMs()).toBeGreaterThanOrEqual(20); // the queued 40 ms over two runners, plus what the running jobs have left
    expect(scheduler.predictedWaitMs()).toBeLessThanOrEqual(40);
    const results = await Promise.all(jobs);
    expect(results.map((r) => r.outputs.y!.data[0])).toEqual([10, 20, 30, 40]);
    expect(results[3]!.queueMs).toBeGreaterThan(15);
    await scheduler.close();
  });

  it('revises the rate at dispatch and sheds when the revision says so', async () => {
    const runner = new FakeRunner([5, 30]);
    const scheduler = new Scheduler([runner]);
    const first = scheduler.submit({ rateIndex: 1, feeds: row(1), rows: 1, predictedMs: 30 });
    const waited: number[] = [];
    const second = scheduler.submit({
      rateIndex: 1, feeds: row(2), rows: 1, predictedMs: 30,
      revise: (waitedMs) => (waited.push(waitedMs), { rateIndex: 0, predictedMs: 5 }),
    });
    const third = scheduler.submit({ rateIndex: 1, feeds: row(3), rows: 1, predictedMs: 30, revise: () => -1 });
    await first;
    expect((await second).rateIndex).toBe(0);
    expect(waited[0]).toBeGreaterThan(20);
    await expect(third).rejects.toBeInstanceOf(ShedError);
    expect(runner.calls.map((c) => c.rateIndex)).toEqual([1, 0]);
    await scheduler.close();
  });

  it('caps the head by the deadlines queued behind it: one service time that keeps them all in time', () => {
    // job j finishes after (j + 1) services ÷ runners: caps 100, 60 / 2 = 30, 90 / 3 = 30; the least wins
    expect(uniformServiceCap([{ deadlineAt: 1100 }, { deadlineAt: 1060 }, { deadlineAt: 1090 }], 1000, 1)).toBe(30);
    expect(uniformServiceCap([{ deadlineAt: 1100 }, { deadlineAt: 1060 }, { deadlineAt: 1090 }], 1000, 2)).toBe(60);
    // no deadline, or already past it: no say
    expect(uniformServiceCap([{ deadlineAt: 1100 }, {}, { deadlineAt: 900 }], 1000, 1)).toBe(100);
    expect(uniformServiceCap([{}, {}], 1000, 1)).toBeUndefined();
    expect(uniformServiceCap([], 1000, 1)).toBeUndefined();
  });

  it("passes the queue's cap to the head's revision", async () => {
    const runner = new FakeRunner([5, 30]);
    const scheduler = new Scheduler([runner]);
    const first = scheduler.submit({ rateIndex: 1, feeds: row(1), rows: 1, predictedMs: 30 });
    const caps: (number | undefined)[] = [];
    const now = performance.now();
    const head = scheduler.submit({
      rateIndex: 1, feeds: row(2), rows: 1, predictedMs: 30, deadlineAt: now + 10_000,
      revise: (_w, _r, capMs) => (caps.push(capMs), { rateIndex: 0, predictedMs: 5 }),
    });
    // behind the head: two jobs due 1 s from now, so at most ~1000 / 3 ms each for the three to be in time
    const behind = [3, 4].map((v) => scheduler.submit({ rateIndex: 0, feeds: row(v), rows: 1, predictedMs: 5, deadlineAt: now + 1000 }));
    await Promise.all([first, head, ...behind]);
    expect(caps[0]).toBeGreaterThan(250);
    expect(caps[0]).toBeLessThanOrEqual(1000 / 3);
    await scheduler.close();
  });

  it('batches queued rows of one rate along axis 0 and splits the answers back', async () => {
    const runner = new FakeRunner([10, 10]);
    const scheduler = new Scheduler([runner], { maxBatch: 4, maxQueueDelayMs: 50 });
    const jobs = [1, 2, 3, 4, 5].map((v) => scheduler.submit({ rateIndex: v === 3 ? 1 : 0, feeds: row(v), rows: 1, predictedMs: 10 }));
    const results = await Promise.all(jobs);
    expect(results.map((r) => [...r.outputs.y!.data])).toEqual([[10, 20], [20, 30], [30, 40], [40, 50], [50, 60]]);
    expect(runner.calls).toEqual([{ rateIndex: 0, rows: 4 }, { rateIndex: 1, rows: 1 }]);
    expect(results[0]!.batchRows).toBe(4);
    await scheduler.close();
  });

  it('close() lets queued jobs finish, then refuses new ones', async () => {
    const runner = new FakeRunner([5, 5]);
    const scheduler = new Scheduler([runner]);
    const jobs = [1, 2, 3].map((v) => scheduler.submit({ rateIndex: 0, feeds: row(v), rows: 1, predictedMs: 5 }));
    await scheduler.close();
    expect((await Promise.all(jobs)).length).toBe(3);
    expect(runner.closed).toBe(true);
    await expect(scheduler.submit({ rateIndex: 0, feeds: row(9), rows: 1, predictedMs: 5 })).rejects.toThrow(/closing/);
  });
});

describe('load-aware limits', () => {
  it('leaves out rates the arrival rate cannot sustain, keeping the smallest when none can', () => {
    expect(chooseRate(OPTIONS, { budgetMs: 100 }, { waitMs: 0, maxServiceMs: 6 })).toMatchObject({ index: 2 });
    expect(chooseRate(OPTIONS, { budgetMs: 100 }, { waitMs: 0, maxServiceMs: 0.5 })).toMatchObject({ index: 0, meetsDeadline: true });
    expect(chooseRate(OPTIONS, { budgetMs: 100 }, { waitMs: 0, maxServiceMs: 1000 })).toMatchObject({ index: 3 });
  });

  it('ArrivalRate reads a steady stream right and follows a 10× step within a second', async () => {
    const { ArrivalRate } = await import('../runtime/profile.js');
    const meter = new ArrivalRate(250);
    let t = 0;
    for (; t < 5000; t += 10) meter.arrive(t); // 0.1 per ms
    expect(meter.at(t)).toBeGreaterThan(0.09);
    expect(meter.at(t)).toBeLessThan(0.11);
    for (const end = t + 1000; t < end; t += 1) meter.arrive(t); // 1 per ms
    expect(meter.at(t)).toBeGreaterThan(0.9);
    expect(meter.at(t + 2000)).toBeLessThan(0.001);
  });
});
