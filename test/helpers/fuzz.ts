// Seeded mutation engine for fuzzing the ONNX reader, shared by test/fuzz.test.ts and
// bench/fuzz.ts. A case is (corpus file, seed): the seed alone decides which mutation is applied
// and where, so any failure is reproduced by rerunning that one seed on that one file.

import { fromBinary, toBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema, type TensorProto } from 'onnx-buf';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { decodeModel, encodeModel, readModel, writeModel } from '../../compiler/onnx-codec.js';
import { isUserError, type ErrorCode } from '../../compiler/diagnostics.js';
import { Rng, TESTDATA_ROOT, fixtureModels, openwakewordModels, requireTestdata } from './models.js';

// the seeded PRNG lives with the other shared helpers; re-exported for tests that fuzz their own input
export { Rng };

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

export const MUTATION_KINDS = ['flip', 'insert', 'delete', 'truncate', 'duplicate', 'varint', 'digits'] as const;
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
    case 'digits': {
      // numbers stored as text (external data offsets and lengths): same length, so the
      // protobuf framing stays valid and the reader's own checks are what gets exercised
      const runs: [number, number][] = [];
      for (let i = 0; i < n; i++) {
        if (original[i]! < 0x30 || original[i]! > 0x39) continue;
        let j = i;
        while (j < n && original[j]! >= 0x30 && original[j]! <= 0x39) j++;
        runs.push([i, j]);
        i = j;
      }
      const out = new Uint8Array(original);
      if (runs.length === 0) {
        const at = rng.int(n);
        out[at] = 0x30 + rng.int(10);
        return { kind, detail: `digit at ${at}`, bytes: out };
      }
      // numbers written as text are mostly several digits long; favour those runs
      const long = runs.filter(([a, b]) => b - a >= 2);
      const [from, to] = long.length > 0 && rng.next() < 0.5 ? rng.pick(long) : rng.pick(runs);
      for (let i = from; i < to; i++) out[i] = 0x30 + rng.int(10);
      return { kind, detail: `digits [${from}, ${to}) := ${new TextDecoder().decode(out.subarray(from, to))}`, bytes: out };
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

/**
 * One to three mutations in a row (most cases get one). Later steps re-walk the mutated bytes
 * for varints when the file is small enough for that to be cheap.
 */
export function mutateStacked(original: Uint8Array, seed: number, spans: VarintSpan[] = varintSpans(original)): Mutation {
  const rng = new Rng(seed ^ 0x5bd1e995);
  const roll = rng.next();
  const steps = roll < 0.6 ? 1 : roll < 0.85 ? 2 : 3;
  let current = mutate(original, seed, spans);
  for (let step = 1; step < steps && current.bytes.length > 0; step++) {
    const subSeed = (seed + Math.imul(step, 0x85ebca6b)) >>> 0;
    const next = mutate(current.bytes, subSeed, current.bytes.length <= 65536 ? varintSpans(current.bytes) : []);
    current = { kind: current.kind, detail: `${current.detail}, then ${next.kind}: ${next.detail}`, bytes: next.bytes };
  }
  return current;
}

export type CaseOutcome =
  | { kind: 'accepted' }
  | { kind: 'user-error'; code: ErrorCode }
  | { kind: 'crash'; error: unknown; stage: 'decode' | 'encode' };

/**
 * The property every input must satisfy: decoding either succeeds (and then encoding the model
 * succeeds too) or throws a UserError. Anything else is a crash. With `baseDir` null, external
 * data references are rejected without touching the disk.
 */
export function checkBytes(bytes: Uint8Array, source = 'fuzzed', baseDir: string | null = null): CaseOutcome {
  let model;
  try {
    model = decodeModel(bytes, baseDir, source);
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

export interface CorpusEntry {
  name: string;
  bytes: Uint8Array;
  spans: VarintSpan[];
  /** Folder external data is read from (only for models that have some). */
  baseDir: string | null;
}

/** Real models that cover subgraphs, sequences, optionals, strings and Constant nodes. */
export const TESTDATA_FUZZ_MODELS = [
  'pytorch-operator/test_operator_conv',
  'pytorch-converted/test_Conv2d',
  'pytorch-converted/test_BatchNorm2d_eval',
  'node/test_if',
  'node/test_if_seq',
  'node/test_loop11',
  'node/test_scan_sum',
  'node/test_constant',
  'node/test_constantofshape_int_zeros',
  'node/test_cast_FLOAT_to_STRING',
  'node/test_slice_end_out_of_bounds',
  'node/test_optional_get_element_sequence',
  'node/test_sequence_insert_at_back',
  'simple/test_sequence_model1',
];

/**
 * The fuzz corpus: openwakeword models, our fixtures, the testdata models above, and two small
 * models rewritten with external data into folders under `tmpDir`.
 */
export function fuzzCorpus(tmpDir: string): CorpusEntry[] {
  requireTestdata();
  const corpus: CorpusEntry[] = [];
  for (const c of [...openwakewordModels(), ...fixtureModels()]) corpus.push(corpusEntry(c.name, new Uint8Array(fs.readFileSync(c.file))));
  for (const name of TESTDATA_FUZZ_MODELS) {
    corpus.push(corpusEntry(name, new Uint8Array(fs.readFileSync(path.join(TESTDATA_ROOT, name, 'model.onnx')))));
  }
  const conv = path.join(TESTDATA_ROOT, 'pytorch-converted', 'test_Conv2d', 'model.onnx');
  const withLengths = fs.mkdtempSync(path.join(tmpDir, 'ext-'));
  const withoutLengths = fs.mkdtempSync(path.join(tmpDir, 'ext-'));
  corpus.push(externalDataEntry(conv, withLengths), externalDataEntry(conv, withoutLengths, { dropLengths: true }));
  return corpus;
}

export function corpusEntry(name: string, bytes: Uint8Array, baseDir: string | null = null): CorpusEntry {
  return { name, bytes, spans: varintSpans(bytes), baseDir };
}

/**
 * `source` rewritten with every initializer in external data, into `dir`: mutations of its
 * external_data entries exercise the offset/length/location checks against a real file.
 */
export function externalDataEntry(source: string, dir: string, opts: { dropLengths?: boolean } = {}): CorpusEntry {
  const file = path.join(dir, 'external.onnx');
  writeModel(readModel(source), file, { externalData: { threshold: 0 } });
  let bytes = new Uint8Array(fs.readFileSync(file));
  if (opts.dropLengths) {
    // `length` is optional in ONNX (data runs to the end of the file): drop it from the last
    // tensor in the file and cut the file's alignment padding so the model stays valid
    const proto = fromBinary(ModelProtoSchema, bytes);
    const entryOf = (t: TensorProto, key: string): string | undefined => t.externalData.find((e) => e.key === key)?.value;
    let last: TensorProto | null = null;
    for (const t of proto.graph!.initializer) {
      if (!last || Number(entryOf(t, 'offset') ?? 0) > Number(entryOf(last, 'offset') ?? 0)) last = t;
    }
    if (last) {
      const end = Number(entryOf(last, 'offset') ?? 0) + Number(entryOf(last, 'length') ?? 0);
      fs.truncateSync(`${file}.data`, end);
      last.externalData = last.externalData.filter((e) => e.key !== 'length');
    }
    bytes = toBinary(ModelProtoSchema, proto);
  }
  const label = `${path.basename(path.dirname(source))} (external data${opts.dropLengths ? ', no lengths' : ''})`;
  return corpusEntry(label, bytes, dir);
}

/** Case `index` of a run: which corpus file, which seed, and the outcome. */
export function runCase(corpus: CorpusEntry[], index: number, baseSeed: number): { entry: CorpusEntry; seed: number; mutation: Mutation; outcome: CaseOutcome } {
  const entry = corpus[index % corpus.length]!;
  const seed = (baseSeed + Math.imul(index, 0x9e3779b1)) >>> 0;
  const mutation = mutateStacked(entry.bytes, seed, entry.spans);
  return { entry, seed, mutation, outcome: checkBytes(mutation.bytes, `${entry.name}#${seed}`, entry.baseDir) };
}
