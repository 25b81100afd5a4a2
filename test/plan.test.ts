// plan.json: defaults compile writes, validation errors naming the JSON path, agreement with
// docs/plan.schema.json (checked with Python's jsonschema where installed), flag overrides, and
// the rate sampling and learning-rate schedules the fields describe.

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { isUserError } from '../compiler/diagnostics.js';
import { applyOverrides, defaultPlan, formatPlan, learningRate, parsePlan, sampleRates, validatePlan, type Plan } from '../compiler/plan.js';
import { Rng } from '../compiler/rng.js';
import { parseResize, planOverrides } from '../compiler/cli-train-flags.js';

const classifier = { rates: [0.25, 0.5, 0.75, 1], inputs: [{ name: 'x' }], outputs: [{ name: 'logits' }], isClassifier: true };
const base = () => defaultPlan(classifier);

function errorOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    if (!isUserError(e)) throw e;
    return e.format();
  }
  throw new Error('expected a user error');
}

/** The plan as JSON with one edit at a dotted path (undefined deletes). */
function edited(at: string, value: unknown): Record<string, unknown> {
  const json = JSON.parse(formatPlan(base())) as Record<string, unknown>;
  const keys = at.split('.');
  let o = json as Record<string, unknown>;
  for (const k of keys.slice(0, -1)) o = o[k] as Record<string, unknown>;
  if (value === undefined) delete o[keys[keys.length - 1]!];
  else o[keys[keys.length - 1]!] = value;
  return json;
}

// [what, path, value, message pattern, also rejected by the JSON Schema]
const INVALID: [string, string, unknown, RegExp, boolean][] = [
  ['a string momentum', 'optimizer.momentum', '0.9', /invalid optimizer\.momentum\n {2}expected: a number in \[0, 1\)\n {2}found: +"0\.9" \(a string\)/, true],
  ['a misspelt field', 'optimizer.learningRate', 0.1, /invalid optimizer\.learningRate[\s\S]*one of the fields kind, lr, momentum[\s\S]*an unknown field "learningRate"/, true],
  ['a missing field', 'epochs', undefined, /invalid epochs[\s\S]*found: +nothing \(the field is missing\)/, true],
  ['another format', 'format', 'slicec-plan/2', /invalid format[\s\S]*"slicec-plan\/1"[\s\S]*"slicec-plan\/2"/, true],
  ['a rate above 1', 'rates', [1.5, 0.5], /invalid rates\[0\][\s\S]*\(0, 1\]/, true],
  ['rates ascending', 'rates', [0.5, 1], /invalid rates\[1\][\s\S]*a rate below 0\.5/, false],
  ['an unknown sampling mode', 'sampling', { mode: 'random' }, /invalid sampling\.mode[\s\S]*"sandwich", "uniform", "round-robin"/, true],
  ['more random rates than there are', 'sampling', { mode: 'sandwich', random: 3 }, /invalid sampling\.random[\s\S]*an integer in \[0, 2\]/, false],
  ['a fractional batch size', 'batchSize', 12.5, /invalid batchSize[\s\S]*an integer in \[1, ∞\)/, true],
  ['distillation with mse', 'loss.kind', 'mse', /invalid distillation\.enabled[\s\S]*mse/, false],
  ['an unknown loss kind', 'loss.kind', 'hinge', /invalid loss\.kind/, true],
  ['warm-up longer than training', 'schedule.warmupEpochs', 11, /invalid schedule\.warmupEpochs[\s\S]*\[0, 10\]/, false],
  ['a zero learning rate', 'optimizer.lr', 0, /invalid optimizer\.lr[\s\S]*\(0, ∞\)/, true],
  ['Nesterov without momentum', 'optimizer.momentum', 0, /invalid optimizer\.nesterov[\s\S]*Nesterov needs momentum/, false],
  ['a bad resize fit', 'data.resize', { height: 8, width: 8, fit: 'crop' }, /invalid data\.resize\.fit/, true],
  ['a negative std', 'data.normalize.std', [1, -1, 1], /invalid data\.normalize\.std\[1\]/, true],
  ['valSplit of 1', 'data.valSplit', 1, /invalid data\.valSplit[\s\S]*\[0, 1\)/, true],
  ['an unknown norm mode', 'normalization.mode', 'batchnorm', /invalid normalization\.mode/, true],
];

describe('defaults', () => {
  it('a classifier gets sandwich sampling, distillation, cross-entropy, SGD Nesterov, cosine', () => {
    const plan = base();
    expect(plan.rates).toEqual([1, 0.75, 0.5, 0.25]);
    expect(plan.sampling).toEqual({ mode: 'sandwich', random: 1 });
    expect(plan.distillation).toEqual({ enabled: true, weight: 1, temperature: 1 });
    expect(plan.loss).toEqual({ kind: 'cross-entropy', output: 'logits', label: 'y' });
    expect(plan.optimizer).toEqual({ kind: 'sgd', lr: 0.03, momentum: 0.9, nesterov: true, weightDecay: 1e-4 });
    // the default normalization (bn) starts from the model's function: no warm-up; gn gets one
    expect(plan.schedule).toEqual({ kind: 'cosine', warmupEpochs: 0, minLr: 0 });
    expect(defaultPlan({ ...classifier, normalization: 'gn' }).schedule).toEqual({ kind: 'cosine', warmupEpochs: 1, minLr: 0 });
    expect(parsePlan(formatPlan(plan), 'plan.json', { outputs: ['logits'], rates: classifier.rates })).toEqual(plan);
  });

  it('docs/plan.md\'s example is the default plan of a classifier compiled with the default norm', () => {
    const text = fs.readFileSync(path.join(import.meta.dirname, '..', 'docs', 'plan.md'), 'utf8');
    const example = /## Example[^\n]*\n+```json\n([\s\S]*?)\n```/.exec(text)![1]!;
    expect(JSON.parse(example)).toEqual(defaultPlan({ ...classifier, normalization: 'bn' }));
  });

  it('a regressor gets mse without distillation; two rates train both every batch; keep recalibrates', () => {
    const plan = defaultPlan({ ...classifier, rates: [1, 0.5], isClassifier: false, normalization: 'keep' });
    expect(plan.loss.kind).toBe('mse');
    expect(plan.distillation.enabled).toBe(false);
    expect(plan.sampling).toEqual({ mode: 'round-robin' });
    expect(plan.normalization.recalibrate).toEqual({ enabled: true, samples: 2000 });
    // kept BatchNorms start from the model's function: no warm-up
    expect(plan.schedule).toEqual({ kind: 'cosine', warmupEpochs: 0, minLr: 0 });
    expect(validatePlan(plan, 'plan.json')).toEqual(plan);
  });
});

describe('validation', () => {
  it.each(INVALID)('rejects %s, naming the path', (_what, at, value, pattern) => {
    const text = errorOf(() => validatePlan(edited(at, value), 'out/plan.json'));
    expect(text).toMatch(/^error SLC010: out\/plan\.json: invalid /);
    expect(text).toMatch(pattern);
  });

  it('checks rates and the loss output against the manifest, and the file against JSON', () => {
    const context = { outputs: ['logits'], rates: [1, 0.5, 0.25] };
    expect(errorOf(() => validatePlan(base(), 'p.json', context))).toMatch(/invalid rates\[1\][\s\S]*one of the compiled rates 1, 0\.5, 0\.25[\s\S]*found: +0\.75/);
    const other = edited('loss.output', 'probs');
    expect(errorOf(() => validatePlan(other, 'p.json', { outputs: ['logits'] }))).toMatch(/invalid loss\.output[\s\S]*a model output: logits[\s\S]*"probs"/);
    expect(errorOf(() => validatePlan(edited('rates', [0.75, 0.5, 0.25]), 'p.json'))).toMatch(/invalid distillation\.enabled[\s\S]*rates include 1/);
    expect(errorOf(() => parsePlan('{"format": ', 'p.json'))).toMatch(/p\.json is not valid JSON/);
    expect(errorOf(() => validatePlan([], 'p.json'))).toMatch(/invalid format[\s\S]*an array of 0/);
  });

  const python = spawnSync('/usr/bin/python3', ['-c', 'import jsonschema'], { encoding: 'utf8' }).status === 0;
  it.skipIf(!python)('docs/plan.schema.json accepts the defaults and rejects what it can express', () => {
    const cases = [base(), defaultPlan({ ...classifier, isClassifier: false }), applyOverrides(base(), { optimizer: { kind: 'adamw' }, schedule: { kind: 'step' } }),
      ...INVALID.map(([, at, value]) => edited(at, value))];
    const script = [
      'import json, sys, jsonschema',
      'schema = json.load(open(sys.argv[1]))',
      'v = jsonschema.Draft202012Validator(schema)',
      'print(json.dumps([v.is_valid(c) for c in json.load(sys.stdin)]))',
    ].join('\n');
    const run = spawnSync('/usr/bin/python3', ['-c', script, path.join(import.meta.dirname, '..', 'docs', 'plan.schema.json')], { input: JSON.stringify(cases), encoding: 'utf8' });
    expect(run.stderr).toBe('');
    expect(JSON.parse(run.stdout)).toEqual([true, true, true, ...INVALID.map(([, , , , schema]) => !schema)]);
  });
});

describe('overrides', () => {
  it('sets fields, switches kinds from their defaults, moves step milestones with the epochs', () => {
    const p = applyOverrides(base(), { epochs: 20, batchSize: 128, optimizer: { kind: 'adamw', lr: 3e-4 }, distillation: { enabled: false } });
    expect(p.epochs).toBe(20);
    expect(p.batchSize).toBe(128);
    expect(p.optimizer).toEqual({ kind: 'adamw', lr: 3e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 });
    expect(p.distillation).toEqual({ enabled: false, weight: 1, temperature: 1 });
    const step = applyOverrides(base(), { schedule: { kind: 'step' } });
    expect(step.schedule).toEqual({ kind: 'step', warmupEpochs: 0, milestones: [5, 8], gamma: 0.1 });
    expect(applyOverrides(step, { epochs: 20 }).schedule).toMatchObject({ milestones: [10, 16] });
    expect(applyOverrides(step, { epochs: 20, schedule: { milestones: [3] } }).schedule).toMatchObject({ milestones: [3] });
    expect(applyOverrides(base(), { sampling: { mode: 'uniform' } }).sampling).toEqual({ mode: 'uniform', perBatch: 1 });
    expect(applyOverrides(base(), { rates: [1, 0.5] }).sampling).toEqual({ mode: 'sandwich', random: 0 });
    expect(errorOf(() => applyOverrides(base(), { rates: [1, 0.5], sampling: { random: 1 } }))).toMatch(/invalid sampling\.random/);
  });

  it('--resize and --val-split reach data; --resize takes HxW with an optional fit', () => {
    const p = applyOverrides(base(), planOverrides({ data: 'x', shuffle: true, resize: parseResize('32x24'), valSplit: 0.1 }));
    expect(p.data.resize).toEqual({ height: 32, width: 24, fit: 'cover' });
    expect(p.data.valSplit).toBe(0.1);
    expect(parseResize('8x6:fill')).toEqual({ height: 8, width: 6, fit: 'fill' });
    for (const bad of ['32', '0x4', '4x4:stretch', '4 x 4']) expect(errorOf(() => parseResize(bad)), bad).toMatch(/SLC007.*--resize expects HxW/);
  });

  it('checks the result and names the flags as its origin', () => {
    expect(errorOf(() => applyOverrides(base(), { optimizer: { momentum: 1.2 } }))).toMatch(/command-line flags: invalid optimizer\.momentum/);
    expect(errorOf(() => applyOverrides(base(), { optimizer: { kind: 'adamw', momentum: 0.9 } }))).toMatch(/an unknown field "momentum"/);
  });
});

describe('semantics', () => {
  it('sandwich trains the full and the smallest rate in every batch plus distinct random others', () => {
    const plan: Plan = applyOverrides(defaultPlan({ ...classifier, rates: [1, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25] }), { sampling: { random: 2 } });
    const rng = new Rng(3);
    const seen = new Map<number, number>();
    for (let i = 0; i < 2000; i++) {
      const rates = sampleRates(plan, rng);
      expect(rates).toHaveLength(4);
      expect(rates[0]).toBe(1);
      expect(rates[3]).toBe(0.25);
      expect(new Set(rates).size).toBe(4);
      expect([...rates].sort((a, b) => b - a)).toEqual(rates);
      for (const r of rates.slice(1, 3)) seen.set(r, (seen.get(r) ?? 0) + 1);
    }
    // 4000 draws over 5 middle rates: each about 800.
    expect([...seen.keys()].sort()).toEqual([0.375, 0.5, 0.625, 0.75, 0.875]);
    for (const count of seen.values()) expect(Math.abs(count - 800)).toBeLessThan(120);
  });

  it('uniform draws perBatch rates from all; round-robin trains every rate', () => {
    const uniform = applyOverrides(base(), { sampling: { mode: 'uniform', perBatch: 2 } });
    const rng = new Rng(9);
    const counts = new Map<number, number>();
    for (let i = 0; i < 1000; i++) for (const r of sampleRates(uniform, rng)) counts.set(r, (counts.get(r) ?? 0) + 1);
    expect([...counts.values()].reduce((a, b) => a + b)).toBe(2000);
    for (const count of counts.values()) expect(Math.abs(count - 500)).toBeLessThan(80);
    expect(sampleRates(applyOverrides(base(), { sampling: { mode: 'round-robin' } }), rng)).toEqual([1, 0.75, 0.5, 0.25]);
  });

  it('learning rate: linear warm-up, then cosine to minLr, step decay or constant', () => {
    const cosine = applyOverrides(base(), { optimizer: { lr: 0.1 }, schedule: { warmupEpochs: 2, minLr: 0.001 } });
    expect(learningRate(cosine, 0, 10)).toBeCloseTo(0.1 * 0.1 / 2, 12);
    expect(learningRate(cosine, 1, 10)).toBeCloseTo(0.1 * 1.1 / 2, 12);
    expect(learningRate(cosine, 2, 10)).toBeCloseTo(0.1, 12);
    expect(learningRate(cosine, 6, 10)).toBeCloseTo(0.001 + 0.099 / 2, 12);
    expect(learningRate(cosine, 10, 10)).toBeCloseTo(0.001, 12);
    const step = applyOverrides(base(), { optimizer: { lr: 0.1 }, schedule: { kind: 'step', warmupEpochs: 0, milestones: [5, 8], gamma: 0.1 } });
    const expected = [0.1, 0.1, 0.01, 0.01, 0.001, 0.001];
    [0, 4.9, 5, 7.5, 8, 9.9].forEach((t, i) => expect(learningRate(step, t, 100)).toBeCloseTo(expected[i]!, 12));
    const constant = applyOverrides(base(), { schedule: { kind: 'constant', warmupEpochs: 0 } });
    expect(learningRate(constant, 7.3, 10)).toBe(constant.optimizer.lr);
    expect(constant.optimizer.lr).toBe(0.03);
  });
});
