// Seeded mutations of real model bytes: every mutated file must either read (and then write)
// or be rejected with a UserError. A crash names the corpus file, the seed and the mutation, so
// `runCase(corpus, index, BASE_SEED)` in test/helpers/fuzz.ts reproduces it exactly.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ErrorCodes } from '../compiler/diagnostics.js';
import { MUTATION_KINDS, describeCrash, fuzzCorpus, runCase, type CorpusEntry } from './helpers/fuzz.js';
import { TESTDATA_ROOT, requireTestdata } from './helpers/models.js';

const BASE_SEED = 20240611;
const CASES = 6000;
const CHUNK = 500;

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-fuzz-'));
afterAll(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));

const corpus: CorpusEntry[] = fs.existsSync(TESTDATA_ROOT) ? fuzzCorpus(tmpRoot) : [];
const outcomes = new Map<string, number>();
const kinds = new Set<string>();

it('has the ONNX backend test data (apt-get install -y libonnx-testdata)', () => {
  requireTestdata();
});

describe('mutated models read or fail with a UserError', () => {
  for (let first = 0; first < CASES; first += CHUNK) {
    it(`cases ${first}..${first + CHUNK - 1}`, () => {
      requireTestdata();
      const crashes = new Map<string, string>();
      let crashCount = 0;
      for (let index = first; index < first + CHUNK; index++) {
        const { entry, seed, mutation, outcome } = runCase(corpus, index, BASE_SEED);
        kinds.add(mutation.kind);
        const key = outcome.kind === 'user-error' ? outcome.code : outcome.kind;
        outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
        if (outcome.kind !== 'crash') continue;
        crashCount++;
        // one report per distinct error, so a single bug does not drown the others
        const message = outcome.error instanceof Error ? outcome.error.message.split('\n')[0]! : String(outcome.error);
        const signature = message.replace(/-?\d+/g, 'N');
        if (!crashes.has(signature)) crashes.set(signature, `case ${index}: ${describeCrash(entry.name, seed, mutation, outcome)}`);
      }
      expect(crashCount, `${crashCount} crashes (base seed ${BASE_SEED}):\n\n${[...crashes.values()].join('\n\n')}`).toBe(0);
    });
  }
});

describe('the fuzzer reaches past the protobuf parser', () => {
  it('used every corpus file and mutation kind, and saw each kind of outcome', () => {
    requireTestdata();
    expect(corpus.length).toBeGreaterThanOrEqual(20);
    expect([...kinds].sort()).toEqual([...MUTATION_KINDS].sort());
    const total = [...outcomes.values()].reduce((a, b) => a + b, 0);
    expect(total).toBe(CASES);
    expect(outcomes.get('accepted') ?? 0, JSON.stringify([...outcomes])).toBeGreaterThan(CASES / 50);
    for (const code of [ErrorCodes.BAD_PROTOBUF, ErrorCodes.BAD_GRAPH, ErrorCodes.BAD_TENSOR, ErrorCodes.BAD_EXTERNAL_DATA]) {
      expect(outcomes.get(code) ?? 0, `no case ended in ${code}: ${JSON.stringify([...outcomes])}`).toBeGreaterThan(0);
    }
  });
});
