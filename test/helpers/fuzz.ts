// Seeded mutation engine for fuzzing the ONNX reader, shared by test/fuzz.test.ts and
// bench/fuzz.ts. A case is (corpus file, seed): the seed alone decides which mutation is applied
// and where, so any failure is reproduced by rerunning that one seed on that one file.

import { decodeModel, encodeModel } from '../../compiler/onnx-codec.js';
import { isUserError, type ErrorCode } from '../../compiler/diagnostics.js';

/** Small, fast, seedable PRNG (mulberry32). */
export class Rng {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }

  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.int(256);
    return out;
  }
}

/** Where a varint sits in a protobuf message, and what it encodes. */
export interface VarintSpan {
  start: number;
  end: number;
  role: 'tag' | 'value' | 'length';
}

function readVarint(bytes: Uint8Array, at: number): { value: bigint; end: number } | null {
  let value = 0n;
  let shift = 0n;
  for (let i = at; i < bytes.length && i < at + 10; i++) {
    const b = bytes[i]!;
    value |= BigInt(b & 0x7f) << shift;
    shift += 7n;
    if ((b & 0x80) === 0) return { value, end: i + 1 };
  }
  return null;
}

/**
 * Walks protobuf wire format and collects every varint (tags, varint values, lengths). A
 * length-delimited payload that parses cleanly as a message is walked too, so spans reach into
 * nested messages (graph → node → attribute → tensor). Stops quietly at anything malformed.
 */
export function varintSpans(bytes: Uint8Array, start = 0, end = bytes.length, out: VarintSpan[] = [], depth = 0): VarintSpan[] {
  let at = start;
  const found: VarintSpan[] = [];
  while (at < end) {
    const tag = readVarint(bytes, at);
    if (!tag || tag.end > end || tag.value === 0n) return out;
    found.push({ start: at, end: tag.end, role: 'tag' });
    at = tag.end;
    const wire = Number(tag.value & 7n);
    if (wire === 0) {
      const v = readVarint(bytes, at);
      if (!v || v.end > end) return out;
      found.push({ start: at, end: v.end, role: 'value' });
      at = v.end;
    } else if (wire === 1) {
      at += 8;
    } else if (wire === 5) {
      at += 4;
    } else if (wire === 2) {
      const len = readVarint(bytes, at);
      if (!len || len.end > end) return out;
      found.push({ start: at, end: len.end, role: 'length' });
      const bodyEnd = len.end + Number(len.value);
      if (bodyEnd > end) return out;
      if (depth < 12 && bodyEnd > len.end) {
        const nested: VarintSpan[] = [];
        if (parsesAsMessage(bytes, len.end, bodyEnd)) varintSpans(bytes, len.end, bodyEnd, nested, depth + 1);
        found.push(...nested);
      }
      at = bodyEnd;
    } else {
      return out;
    }
  }
  if (at === end) out.push(...found);
  return out;
}

function parsesAsMessage(bytes: Uint8Array, start: number, end: number): boolean {
  let at = start;
  while (at < end) {
    const tag = readVarint(bytes, at);
    if (!tag || tag.end > end || tag.value === 0n || tag.value >> 3n === 0n) return false;
    at = tag.end;
    const wire = Number(tag.value & 7n);
    if (wire === 0) {
      const v = readVarint(bytes, at);
      if (!v) return false;
      at = v.end;
    } else if (wire === 1) at += 8;
    else if (wire === 5) at += 4;
    else if (wire === 2) {
      const len = readVarint(bytes, at);
      if (!len) return false;
      at = len.end + Number(len.value);
    } else return false;
  }
  return at === end;
}

function encodeVarint(value: bigint): Uint8Array {
  const out: number[] = [];
  let v = BigInt.asUintN(64, value);
  while (v > 0x7fn) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
  return Uint8Array.from(out);
}

/** Varint values that tend to break readers: zero, edges of 7/31/32/53/63/64 bits, -1. */
const INTERESTING_VARINTS: bigint[] = [
  0n, 1n, 2n, 7n, 8n, 127n, 128n, 255n, 16383n, 16384n, 65535n,
  2n ** 31n - 1n, 2n ** 31n, 2n ** 32n - 1n, 2n ** 32n, 2n ** 53n, 2n ** 53n + 1n,
  2n ** 63n - 1n, 2n ** 63n, 2n ** 64n - 1n,
];

export const MUTATION_KINDS = ['flip', 'insert', 'delete', 'truncate', 'duplicate', 'varint'] as const;
export type MutationKind = (typeof MUTATION_KINDS)[number];

export interface Mutation {
  kind: MutationKind;
  /** Human-readable description (offsets, lengths, values) for failure reports. */
  detail: string;
  bytes: Uint8Array;
}

function splice(bytes: Uint8Array, at: number, remove: number, insert: Uint8Array): Uint8Array {
  const out = new Uint8Array(bytes.length - remove + insert.length);
  out.set(bytes.subarray(0, at), 0);
  out.set(insert, at);
  out.set(bytes.subarray(at + remove), at + insert.length);
  return out;
}

/**
 * One seeded mutation of `original`. `spans` (from varintSpans) lets the varint mutation hit
 * real tags, values and lengths instead of random bytes; pass them in to avoid re-walking.
 */
export function mutate(original: Uint8Array, seed: number, spans: VarintSpan[] = varintSpans(original)): Mutation {
  const rng = new Rng(seed);
  const kind = rng.pick(MUTATION_KINDS);
  const n = original.length;
  switch (kind) {
    case 'flip': {
      const out = new Uint8Array(original);
      const count = 1 + rng.int(8);
      const where: string[] = [];
      for (let i = 0; i < count; i++) {
        const at = rng.int(n);
        const mask = 1 + rng.int(255);
        out[at] = out[at]! ^ mask;
        where.push(`${at}^0x${mask.toString(16)}`);
      }
      return { kind, detail: `xor ${where.join(', ')}`, bytes: out };
    }
    case 'insert': {
      const at = rng.int(n + 1);
      const extra = rng.bytes(1 + rng.int(16));
      return { kind, detail: `insert ${extra.length} bytes at ${at}`, bytes: splice(original, at, 0, extra) };
    }
    case 'delete': {
      const at = rng.int(n);
      const count = 1 + rng.int(Math.min(64, n - at));
      return { kind, detail: `delete ${count} bytes at ${at}`, bytes: splice(original, at, count, new Uint8Array(0)) };
    }
    case 'truncate': {
      const at = rng.int(n);
      return { kind, detail: `truncate to ${at} bytes`, bytes: original.slice(0, at) };
    }
    case 'duplicate': {
      const from = rng.int(n);
      const count = 1 + rng.int(Math.min(256, n - from));
      const to = rng.int(n + 1);
      const copy = original.slice(from, from + count);
      return { kind, detail: `copy [${from}, ${from + count}) to ${to}`, bytes: splice(original, to, 0, copy) };
    }
    case 'varint': {
      const value = rng.next() < 0.7 ? rng.pick(INTERESTING_VARINTS) : BigInt(rng.int(1 << 30));
      if (spans.length === 0) {
        const at = rng.int(n);
        return { kind, detail: `varint ${value} over byte ${at}`, bytes: splice(original, at, 1, encodeVarint(value)) };
      }
      const span = rng.pick(spans);
      let replacement = value;
      if (span.role === 'tag' && rng.next() < 0.5) {
        // keep the field number, change the wire type (or the reverse) to confuse the decoder
        const old = readVarint(original, span.start)!.value;
        replacement = rng.next() < 0.5 ? (old & ~7n) | BigInt(rng.int(8)) : (BigInt(1 + rng.int(30)) << 3n) | (old & 7n);
      }
      const encoded = encodeVarint(replacement);
      return {
        kind,
        detail: `${span.role} varint at [${span.start}, ${span.end}) := ${replacement}`,
        bytes: splice(original, span.start, span.end - span.start, encoded),
      };
    }
  }
}

export type CaseOutcome =
  | { kind: 'accepted' }
  | { kind: 'user-error'; code: ErrorCode }
  | { kind: 'crash'; error: unknown; stage: 'decode' | 'encode' };

/**
 * The property every input must satisfy: decoding either succeeds (and then encoding the model
 * succeeds too) or throws a UserError. Anything else is a crash. `baseDir` is null, so external
 * data references are rejected without touching the disk.
 */
export function checkBytes(bytes: Uint8Array, source = 'fuzzed'): CaseOutcome {
  let model;
  try {
    model = decodeModel(bytes, null, source);
  } catch (e) {
    if (isUserError(e)) return { kind: 'user-error', code: e.code };
    return { kind: 'crash', error: e, stage: 'decode' };
  }
  try {
    encodeModel(model);
  } catch (e) {
    return { kind: 'crash', error: e, stage: 'encode' };
  }
  return { kind: 'accepted' };
}

export function describeCrash(file: string, seed: number, mutation: Mutation, outcome: Extract<CaseOutcome, { kind: 'crash' }>): string {
  const err = outcome.error instanceof Error ? (outcome.error.stack ?? outcome.error.message) : String(outcome.error);
  return `${file} seed=${seed} mutation=${mutation.kind} (${mutation.detail}) crashed in ${outcome.stage}:\n${err}`;
}

/** Offsets where a top-level field of a protobuf message ends (cutting there leaves a valid message). */
export function topLevelFieldEnds(bytes: Uint8Array): number[] {
  const ends: number[] = [];
  let at = 0;
  while (at < bytes.length) {
    const tag = readVarint(bytes, at);
    if (!tag) break;
    at = tag.end;
    const wire = Number(tag.value & 7n);
    if (wire === 0) {
      const v = readVarint(bytes, at);
      if (!v) break;
      at = v.end;
    } else if (wire === 1) at += 8;
    else if (wire === 5) at += 4;
    else if (wire === 2) {
      const len = readVarint(bytes, at);
      if (!len) break;
      at = len.end + Number(len.value);
    } else break;
    ends.push(at);
  }
  return ends;
}
