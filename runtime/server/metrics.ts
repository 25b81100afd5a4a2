// Prometheus metrics of the server (prom-client, one registry per server so tests and several
// servers in one process do not share counters): requests by model and status, latency from
// arrival to answer, the rate served, queue depth, sheds and deadline misses, plus the process
// defaults (RSS, heap, event-loop lag) under the `slicec_` prefix. With early exits: answers by
// exit, MACs spent, the replay buffer's bytes, the cache trainer's busy share and heads switched on.

import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export class ServerMetrics {
  readonly registry = new Registry();
  readonly requests: Counter<'model' | 'code'>;
  readonly latency: Histogram<'model'>;
  readonly served: Counter<'model' | 'rate'>;
  readonly queueDepth: Gauge;
  readonly inFlight: Gauge;
  readonly sheds: Counter<'model'>;
  readonly deadlineMisses: Counter<'model'>;
  readonly macs: Counter<'model'>;
  readonly exitAnswers: Counter<'model' | 'exit'>;

  constructor(sample: () => { queueDepth: number; inFlight: number; cacheBytes?: number; trainerShare?: number; headsOn?: number }) {
    const registers = [this.registry];
    this.requests = new Counter({ name: 'slicec_requests_total', help: 'Inference requests by model and HTTP status', labelNames: ['model', 'code'], registers });
    this.latency = new Histogram({
      name: 'slicec_request_duration_seconds',
      help: 'Time from request arrival to the response, seconds',
      labelNames: ['model'],
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5],
      registers,
    });
    this.served = new Counter({ name: 'slicec_rate_served_total', help: 'Answers by the slice rate that produced them', labelNames: ['model', 'rate'], registers });
    this.queueDepth = new Gauge({ name: 'slicec_queue_depth', help: 'Requests waiting for a worker', registers, collect: () => this.queueDepth.set(sample().queueDepth) });
    this.inFlight = new Gauge({ name: 'slicec_in_flight', help: 'Requests running on a worker', registers, collect: () => this.inFlight.set(sample().inFlight) });
    this.sheds = new Counter({ name: 'slicec_sheds_total', help: 'Requests refused because no rate could meet their deadline', labelNames: ['model'], registers });
    this.deadlineMisses = new Counter({ name: 'slicec_deadline_misses_total', help: 'Answers later than their deadline', labelNames: ['model'], registers });
    this.macs = new Counter({ name: 'slicec_macs_total', help: 'Multiply-accumulates spent on answers (early exits and cascades included)', labelNames: ['model'], registers });
    this.exitAnswers = new Counter({ name: 'slicec_exit_answers_total', help: 'Answers served with exits, by the exit that gave them (final: the whole model)', labelNames: ['model', 'exit'], registers });
    const cache = (name: string, help: string, read: (s: ReturnType<typeof sample>) => number | undefined): void => {
      const gauge: Gauge = new Gauge({ name, help, registers, collect: () => gauge.set(read(sample()) ?? 0) });
    };
    cache('slicec_cache_buffer_bytes', 'Bytes held by the replay buffer of the exit heads', (s) => s.cacheBytes);
    cache('slicec_cache_trainer_busy_ratio', 'Share of the wall time the cache trainer has been busy', (s) => s.trainerShare);
    cache('slicec_exit_heads_on', 'Exit heads switched on (agreement at their threshold ≥ the target)', (s) => s.headsOn);
    collectDefaultMetrics({ register: this.registry, prefix: 'slicec_' });
  }
}
