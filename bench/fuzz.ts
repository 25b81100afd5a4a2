// Long fuzzing run of the ONNX reader: `npx tsx bench/fuzz.ts [cases=20000] [--seed N]`.
// Same corpus and mutation engine as test/fuzz.test.ts (test/helpers/fuzz.ts), many more cases.
// Prints a table per mutation kind (accepted, user errors, crashes, cases/s) and one report per
// distinct crash with the seed that reproduces it; exits 1 when anything crashed.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { MUTATION_KINDS, describeCrash, fuzzCorpus, runCase } from '../test/helpers/fuzz.js';

interface Tally {
  cases: number;
  accepted: number;
  userErrors: number;
  crashes: number;
  ms: number;
}

function parseArgs(argv: string[]): { cases: number; seed: number } {
  let cases = 20000;
  let seed = 20240611;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--seed') seed = Number(argv[++i]);
    else cases = Number(arg);
  }
  if (!Number.isSafeInteger(cases) || cases <= 0) throw new Error(`case count must be a positive integer, got ${argv.join(' ')}`);
  if (!Number.isSafeInteger(seed)) throw new Error('--seed needs an integer');
  return { cases, seed };
}

function pad(text: string | number, width: number): string {
  return String(text).padStart(width);
}

function main(): void {
  const { cases, seed } = parseArgs(process.argv.slice(2));
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-fuzz-bench-'));
  try {
    const corpus = fuzzCorpus(tmp);
    const byKind = new Map<string, Tally>();
    for (const kind of [...MUTATION_KINDS, 'all']) byKind.set(kind, { cases: 0, accepted: 0, userErrors: 0, crashes: 0, ms: 0 });
    const byCode = new Map<string, number>();
    const crashes = new Map<string, string>();

    for (let index = 0; index < cases; index++) {
      const start = process.hrtime.bigint();
      const { entry, seed: caseSeed, mutation, outcome } = runCase(corpus, index, seed);
      const ms = Number(process.hrtime.bigint() - start) / 1e6;
      for (const tally of [byKind.get(mutation.kind)!, byKind.get('all')!]) {
        tally.cases++;
        tally.ms += ms;
        if (outcome.kind === 'accepted') tally.accepted++;
        else if (outcome.kind === 'user-error') tally.userErrors++;
        else tally.crashes++;
      }
      if (outcome.kind === 'user-error') byCode.set(outcome.code, (byCode.get(outcome.code) ?? 0) + 1);
      if (outcome.kind === 'crash') {
        const message = outcome.error instanceof Error ? outcome.error.message.split('\n')[0]! : String(outcome.error);
        const signature = message.replace(/-?\d+/g, 'N');
        if (!crashes.has(signature)) crashes.set(signature, `case ${index}: ${describeCrash(entry.name, caseSeed, mutation, outcome)}`);
      }
    }

    console.log(`fuzz: ${cases} cases over ${corpus.length} corpus files, base seed ${seed}\n`);
    console.log(`${'mutation'.padEnd(10)} ${pad('cases', 8)} ${pad('accepted', 9)} ${pad('user errors', 12)} ${pad('crashes', 8)} ${pad('cases/s', 9)}`);
    for (const [kind, t] of byKind) {
      const rate = t.ms > 0 ? Math.round((t.cases * 1000) / t.ms) : 0;
      console.log(`${kind.padEnd(10)} ${pad(t.cases, 8)} ${pad(t.accepted, 9)} ${pad(t.userErrors, 12)} ${pad(t.crashes, 8)} ${pad(rate, 9)}`);
    }
    console.log('\nuser errors by code:');
    for (const [code, count] of [...byCode].sort()) console.log(`  ${code} ${pad(count, 8)}`);
    if (crashes.size > 0) {
      console.log(`\n${crashes.size} distinct crash(es):\n`);
      for (const report of crashes.values()) console.log(`${report.split('\n').slice(0, 8).join('\n')}\n`);
      process.exitCode = 1;
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

main();
