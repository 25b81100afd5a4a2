// The replay buffer of online cache training: served inputs' exit activations with the final
// model's softmax, bounded in bytes. Two parts share the bound: the training pool and the
// held-back pool (a share of the unbiased stream, never trained on, on which each head's
// agreement with the final model is measured). Both are FIFO: when a sample would pass the bound,
// the oldest samples go first, so the buffer follows the traffic as it drifts.
//
// Unbiased samples are the ones that would have reached the final model whatever the heads said
// (probes, and requests served while no head of their rate was on): the held-back pool takes only
// those, since the samples that ran to the end because no exit was confident are the hard ones,
// and agreement measured on them alone would understate every head.

/** One served input that reached the final model. */
export interface CacheSample {
  rateIndex: number;
  /** The activation at each exit of its rate, in exit order. */
  activations: Float32Array[];
  /** The final model's softmax, [classes]. */
  teacher: Float32Array;
  unbiased: boolean;
}

export interface BufferOptions {
  maxBytes: number;
  /** Share of the bytes for the held-back pool (default 0.25). */
  heldBackBytesShare?: number;
  /** Share of the unbiased samples held back (default 0.25). */
  heldBackShare?: number;
}

/** Bytes a sample is charged: its arrays plus a fixed allowance for the object and its array headers. */
export const SAMPLE_OVERHEAD_BYTES = 256;

export function sampleBytes(s: CacheSample): number {
  return s.activations.reduce((a, x) => a + x.byteLength, 0) + s.teacher.byteLength + SAMPLE_OVERHEAD_BYTES;
}

class Pool {
  /** Per rate index, oldest first. */
  readonly byRate = new Map<number, CacheSample[]>();
  /** Rate index of every sample, oldest first (which rate's head to evict from). */
  private readonly order: number[] = [];
  private head = 0;
  bytes = 0;

  constructor(readonly maxBytes: number) {}

  get size(): number {
    return this.order.length - this.head;
  }

  add(s: CacheSample): void {
    const bytes = sampleBytes(s);
    if (bytes > this.maxBytes) return;
    while (this.bytes + bytes > this.maxBytes) this.evictOldest();
    const list = this.byRate.get(s.rateIndex) ?? [];
    list.push(s);
    this.byRate.set(s.rateIndex, list);
    this.order.push(s.rateIndex);
    this.bytes += bytes;
  }

  private evictOldest(): void {
    const rate = this.order[this.head++]!;
    const gone = this.byRate.get(rate)!.shift()!;
    this.bytes -= sampleBytes(gone);
    // compact the index now and then, so it does not grow with the stream
    if (this.head > 1024 && this.head * 2 > this.order.length) {
      this.order.splice(0, this.head);
      this.head = 0;
    }
  }
}

export class ReplayBuffer {
  private readonly train: Pool;
  private readonly held: Pool;
  private readonly heldBackShare: number;
  private unbiasedSeen = 0;
  /** Samples offered, over the buffer's life. */
  offered = 0;

  constructor(options: BufferOptions) {
    const share = options.heldBackBytesShare ?? 0.25;
    this.held = new Pool(Math.floor(options.maxBytes * share));
    this.train = new Pool(options.maxBytes - this.held.maxBytes);
    this.heldBackShare = options.heldBackShare ?? 0.25;
  }

  get maxBytes(): number {
    return this.train.maxBytes + this.held.maxBytes;
  }

  get bytes(): number {
    return this.train.bytes + this.held.bytes;
  }

  get trainSize(): number {
    return this.train.size;
  }

  get heldBackSize(): number {
    return this.held.size;
  }

  /** Keep a sample: every 1 ÷ heldBackShare-th unbiased one is held back (deterministic, so runs repeat). */
  add(s: CacheSample): void {
    this.offered++;
    if (s.unbiased) {
      this.unbiasedSeen++;
      const before = Math.floor((this.unbiasedSeen - 1) * this.heldBackShare);
      if (Math.floor(this.unbiasedSeen * this.heldBackShare) > before) {
        this.held.add(s);
        return;
      }
    }
    this.train.add(s);
  }

  /** Training samples of one rate, oldest first (not copied: do not change them). */
  training(rateIndex: number): readonly CacheSample[] {
    return this.train.byRate.get(rateIndex) ?? [];
  }

  heldBack(rateIndex: number): readonly CacheSample[] {
    return this.held.byRate.get(rateIndex) ?? [];
  }
}
