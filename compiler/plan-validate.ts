// Hand validation of plan.json (slicec-plan/1), field by field, so each error names the JSON
// path that is wrong (`optimizer.momentum`, `rates[2]`), what it must be and what it is. Unknown
// keys are errors too: a misspelt field would otherwise be ignored silently. The checks mirror
// docs/plan.schema.json, plus what a schema cannot say (rates unique, warm-up within the epochs,
// milestones ascending, distillation needing the full rate) and, given the manifest, that the
// loss output exists and the rates were compiled.

import { ErrorCodes, userError } from './diagnostics.js';
import type { Optimizer, Plan, Sampling, Schedule } from './plan.js';

type Json = Record<string, unknown>;

function describeFound(v: unknown): string {
  if (v === undefined) return 'nothing (the field is missing)';
  if (v === null) return 'null';
  if (Array.isArray(v)) return `an array of ${v.length}`;
  if (typeof v === 'object') return 'an object';
  const text = JSON.stringify(v);
  return `${text.length > 40 ? `${text.slice(0, 40)}…` : text} (a ${typeof v})`;
}

class Checker {
  constructor(private readonly file: string) {}

  private raise(at: string, expected: string, found: string, hint?: string): never {
    throw userError(ErrorCodes.BAD_INPUT_FILE, `${this.file}: invalid ${at || 'plan'}`, { expected, found, hint });
  }

  fail(at: string, expected: string, found: unknown, hint?: string): never {
    return this.raise(at, expected, describeFound(found), hint);
  }

  /** Fails with a found text written out (not a JSON value). */
  failText(at: string, expected: string, found: string, hint?: string): never {
    return this.raise(at, expected, found, hint);
  }

  object(v: unknown, at: string, keys: string[]): Json {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) this.fail(at, `an object with ${keys.join(', ')}`, v);
    const o = v as Json;
    for (const k of Object.keys(o)) {
      if (!keys.includes(k)) this.failText(join(at, k), `one of the fields ${keys.join(', ')}`, `an unknown field "${k}"`, 'see docs/plan.md for the fields');
    }
    for (const k of keys) if (!(k in o)) this.fail(join(at, k), `a value (see docs/plan.md)`, undefined);
    return o;
  }

  number(v: unknown, at: string, range: { min?: number; max?: number; minOpen?: boolean; maxOpen?: boolean; integer?: boolean } = {}): number {
    const lo = range.min === undefined ? '' : `${range.minOpen ? '(' : '['}${range.min}`;
    const hi = range.max === undefined ? '' : `${range.max}${range.maxOpen ? ')' : ']'}`;
    const what = `${range.integer ? 'an integer' : 'a number'}${lo || hi ? ` in ${lo || '(-∞'}, ${hi || '∞)'}` : ''}`;
    if (typeof v !== 'number' || !Number.isFinite(v)) this.fail(at, what, v);
    const n = v as number;
    const bad = (range.integer && !Number.isInteger(n))
      || (range.min !== undefined && (range.minOpen ? n <= range.min : n < range.min))
      || (range.max !== undefined && (range.maxOpen ? n >= range.max : n > range.max));
    if (bad) this.fail(at, what, v);
    return n;
  }

  boolean(v: unknown, at: string): boolean {
    if (typeof v !== 'boolean') this.fail(at, 'true or false', v);
    return v as boolean;
  }

  string(v: unknown, at: string): string {
    if (typeof v !== 'string' || v.length === 0) this.fail(at, 'a non-empty string', v);
    return v as string;
  }

  oneOf<T extends string>(v: unknown, at: string, options: readonly T[]): T {
    if (typeof v !== 'string' || !options.includes(v as T)) this.fail(at, `one of ${options.map((o) => JSON.stringify(o)).join(', ')}`, v);
    return v as T;
  }

  numbers(v: unknown, at: string, each: Parameters<Checker['number']>[2], minItems = 0): number[] {
    if (!Array.isArray(v) || v.length < minItems) this.fail(at, `an array of ${minItems > 0 ? `at least ${minItems} ` : ''}numbers`, v);
    return (v as unknown[]).map((x, i) => this.number(x, `${at}[${i}]`, each));
  }
}

const join = (at: string, key: string) => (at ? `${at}.${key}` : key);

/** The discriminant first, then that variant's fields. */
function variant<K extends string>(c: Checker, v: unknown, at: string, tag: string, fields: Record<K, string[]>): { kind: K; o: Json } {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) c.fail(at, `an object with a "${tag}"`, v);
  const kind = c.oneOf((v as Json)[tag], join(at, tag), Object.keys(fields) as K[]);
  return { kind, o: c.object(v, at, [tag, ...fields[kind]]) };
}

function checkSampling(c: Checker, v: unknown, rates: number[]): Sampling {
  const { kind, o } = variant(c, v, 'sampling', 'mode', { sandwich: ['random'], uniform: ['perBatch'], 'round-robin': [] });
  if (kind === 'sandwich') {
    const others = Math.max(0, rates.length - 2);
    return { mode: kind, random: c.number(o.random, 'sampling.random', { min: 0, max: others, integer: true }) };
  }
  if (kind === 'uniform') return { mode: kind, perBatch: c.number(o.perBatch, 'sampling.perBatch', { min: 1, max: rates.length, integer: true }) };
  return { mode: kind };
}

function checkOptimizer(c: Checker, v: unknown): Optimizer {
  const { kind, o } = variant(c, v, 'optimizer', 'kind', { sgd: ['lr', 'momentum', 'nesterov', 'weightDecay'], adamw: ['lr', 'beta1', 'beta2', 'eps', 'weightDecay'] });
  const lr = c.number(o.lr, 'optimizer.lr', { min: 0, minOpen: true });
  const weightDecay = c.number(o.weightDecay, 'optimizer.weightDecay', { min: 0 });
  if (kind === 'sgd') {
    const momentum = c.number(o.momentum, 'optimizer.momentum', { min: 0, max: 1, maxOpen: true });
    const nesterov = c.boolean(o.nesterov, 'optimizer.nesterov');
    if (nesterov && momentum === 0) c.fail('optimizer.nesterov', 'false when momentum is 0 (Nesterov needs momentum)', true);
    return { kind, lr, momentum, nesterov, weightDecay };
  }
  return {
    kind, lr, weightDecay,
    beta1: c.number(o.beta1, 'optimizer.beta1', { min: 0, max: 1, maxOpen: true }),
    beta2: c.number(o.beta2, 'optimizer.beta2', { min: 0, max: 1, maxOpen: true }),
    eps: c.number(o.eps, 'optimizer.eps', { min: 0, minOpen: true }),
  };
}

function checkSchedule(c: Checker, v: unknown, epochs: number): Schedule {
  const { kind, o } = variant(c, v, 'schedule', 'kind', { cosine: ['warmupEpochs', 'minLr'], step: ['warmupEpochs', 'milestones', 'gamma'], constant: ['warmupEpochs'] });
  const warmupEpochs = c.number(o.warmupEpochs, 'schedule.warmupEpochs', { min: 0, max: epochs });
  if (kind === 'cosine') return { kind, warmupEpochs, minLr: c.number(o.minLr, 'schedule.minLr', { min: 0 }) };
  if (kind === 'constant') return { kind, warmupEpochs };
  const milestones = c.numbers(o.milestones, 'schedule.milestones', { min: 0, max: epochs, minOpen: true, maxOpen: true });
  milestones.forEach((m, i) => {
    if (i > 0 && m <= milestones[i - 1]!) c.fail(`schedule.milestones[${i}]`, `an epoch after ${milestones[i - 1]} (milestones ascend)`, m);
  });
  return { kind, warmupEpochs, milestones, gamma: c.number(o.gamma, 'schedule.gamma', { min: 0, max: 1, minOpen: true }) };
}

export function checkPlan(json: unknown, file: string, context: { outputs?: string[]; rates?: number[] }): Plan {
  const c = new Checker(file);
  // The format first: a plan of another version fails on that, not on its fields.
  const format = json !== null && typeof json === 'object' && !Array.isArray(json) ? (json as Json).format : json;
  if (format !== 'slicec-plan/1') c.fail('format', '"slicec-plan/1"', format, 'a plan written by this version of slicec compile');
  const top = c.object(json, '', ['format', 'rates', 'sampling', 'distillation', 'loss', 'optimizer', 'schedule', 'epochs', 'batchSize', 'seed', 'data', 'normalization']);

  const rates = c.numbers(top.rates, 'rates', { min: 0, max: 1, minOpen: true }, 1);
  rates.forEach((r, i) => {
    if (i > 0 && r >= rates[i - 1]!) c.fail(`rates[${i}]`, `a rate below ${rates[i - 1]} (rates are listed once each, descending)`, r);
    if (context.rates && !context.rates.some((k) => Math.abs(k - r) < 1e-9)) {
      c.fail(`rates[${i}]`, `one of the compiled rates ${context.rates.join(', ')}`, r, 'compile with --rates to add a rate');
    }
  });
  const epochs = c.number(top.epochs, 'epochs', { min: 1, integer: true });
  const sampling = checkSampling(c, top.sampling, rates);

  const lossO = c.object(top.loss, 'loss', ['kind', 'output', 'label']);
  const loss = { kind: c.oneOf(lossO.kind, 'loss.kind', ['cross-entropy', 'mse'] as const), output: c.string(lossO.output, 'loss.output'), label: c.string(lossO.label, 'loss.label') };
  if (context.outputs && !context.outputs.includes(loss.output)) c.fail('loss.output', `a model output: ${context.outputs.join(', ')}`, loss.output);

  const distO = c.object(top.distillation, 'distillation', ['enabled', 'weight', 'temperature']);
  const distillation = {
    enabled: c.boolean(distO.enabled, 'distillation.enabled'),
    weight: c.number(distO.weight, 'distillation.weight', { min: 0, max: 1 }),
    temperature: c.number(distO.temperature, 'distillation.temperature', { min: 0, minOpen: true }),
  };
  if (distillation.enabled && loss.kind !== 'cross-entropy') c.fail('distillation.enabled', 'false with an mse loss (distillation matches class probabilities)', true);
  if (distillation.enabled && rates[0] !== 1) c.fail('distillation.enabled', 'false unless rates include 1 (the teacher is the full rate)', true);

  const dataO = c.object(top.data, 'data', ['normalize', 'resize', 'valSplit']);
  const normO = c.object(dataO.normalize, 'data.normalize', ['scale', 'mean', 'std']);
  const normalize = {
    scale: c.number(normO.scale, 'data.normalize.scale', { min: 0, minOpen: true }),
    mean: c.numbers(normO.mean, 'data.normalize.mean', {}, 1),
    std: c.numbers(normO.std, 'data.normalize.std', { min: 0, minOpen: true }, 1),
  };
  let resize: Plan['data']['resize'] = null;
  if (dataO.resize !== null) {
    const r = c.object(dataO.resize, 'data.resize', ['height', 'width', 'fit']);
    resize = {
      height: c.number(r.height, 'data.resize.height', { min: 1, integer: true }),
      width: c.number(r.width, 'data.resize.width', { min: 1, integer: true }),
      fit: c.oneOf(r.fit, 'data.resize.fit', ['cover', 'fill', 'contain'] as const),
    };
  }
  const data = { normalize, resize, valSplit: c.number(dataO.valSplit, 'data.valSplit', { min: 0, max: 1, maxOpen: true }) };

  const nO = c.object(top.normalization, 'normalization', ['mode', 'trainAffine', 'recalibrate']);
  const recO = c.object(nO.recalibrate, 'normalization.recalibrate', ['enabled', 'samples']);
  const normalization = {
    mode: c.oneOf(nO.mode, 'normalization.mode', ['gn', 'keep', 'none', 'bn'] as const),
    trainAffine: c.boolean(nO.trainAffine, 'normalization.trainAffine'),
    recalibrate: { enabled: c.boolean(recO.enabled, 'normalization.recalibrate.enabled'), samples: c.number(recO.samples, 'normalization.recalibrate.samples', { min: 1, integer: true }) },
  };

  return {
    format: 'slicec-plan/1', rates, sampling, distillation, loss,
    optimizer: checkOptimizer(c, top.optimizer),
    schedule: checkSchedule(c, top.schedule, epochs),
    epochs,
    batchSize: c.number(top.batchSize, 'batchSize', { min: 1, integer: true }),
    seed: c.number(top.seed, 'seed', { min: 0, max: 2 ** 32 - 1, integer: true }),
    data, normalization,
  };
}
