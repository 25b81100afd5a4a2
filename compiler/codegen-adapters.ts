// The one piece of a generated model.ts that touches slicec's runtime: the body of its
// `openRuntime(dir, options)`, which returns `{ run(feeds, options), close() }` over
//   - 'sliced-model': the serving runtime, `SlicedModel.load(dir, {device, workers, threads,
//     mode})` and `run(feeds, {rate, deadlineMs, minAccuracy})`, which picks the rate per request
//     from the deadline, the load and the recorded accuracy;
//   - 'graph-session': one plain onnxruntime session per rate graph, serving the rate asked for
//     (or the largest); no policy, for builds of the runtime without SlicedModel.
// Everything else in the module (the types users program against) is the same for both.

export type RuntimeAdapter = 'sliced-model' | 'graph-session';

export interface AdapterCode {
  imports: { moduleSpecifier: string; namedImports: string[]; isTypeOnly?: boolean }[];
  body: string[];
}

export const ADAPTERS: Record<RuntimeAdapter, (runtimeModule: string) => AdapterCode> = {
  'sliced-model': (runtimeModule) => ({
    imports: [
      { moduleSpecifier: runtimeModule, namedImports: ['SlicedModel'] },
      { moduleSpecifier: runtimeModule, namedImports: ['NdArray'], isTypeOnly: true },
    ],
    body: [
      'const model = await SlicedModel.load(dir, { device: options.device, workers: options.workers, threads: options.threads, mode: options.mode });',
      'return {',
      '  run: async (feeds, runOptions) => {',
      '    const arrays = Object.fromEntries(feeds.map(([name, t]) => [name, { dtype: t.dtype, dims: [...t.dims], data: t.data }])) as Record<string, NdArray>;',
      '    const result = await model.run(arrays, runOptions);',
      '    return { outputs: result.outputs, rate: result.rate, timings: { totalMs: result.totalMs, queueMs: result.queueMs, serviceMs: result.serviceMs } };',
      '  },',
      '  close: () => model.close(),',
      '};',
    ],
  }),
  'graph-session': (runtimeModule) => ({
    imports: [
      { moduleSpecifier: 'node:fs', namedImports: ['readFileSync'] },
      { moduleSpecifier: 'node:path', namedImports: ['join'] },
      { moduleSpecifier: runtimeModule, namedImports: ['GraphSession'] },
    ],
    body: [
      "const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as { rates: { rate: number; file: string }[] };",
      'const sessions = await Promise.all(manifest.rates.map((r) => GraphSession.create(join(dir, r.file), { threads: options.threads, device: options.device })));',
      'const largest = manifest.rates.reduce((best, r, i) => (r.rate > manifest.rates[best]!.rate ? i : best), 0);',
      'return {',
      '  run: async (feeds, runOptions) => {',
      '    const index = runOptions.rate === undefined ? largest : manifest.rates.findIndex((r) => r.rate === runOptions.rate);',
      '    if (index < 0) throw new Error(`rate ${runOptions.rate} is not compiled in ${dir}`);',
      '    const start = performance.now();',
      '    const arrays = Object.fromEntries(feeds.map(([name, t]) => [name, { dtype: t.dtype, dims: [...t.dims], data: t.data }])) as Parameters<GraphSession[\'run\']>[0];',
      '    const outputs: Record<string, unknown> = {};',
      '    for (const [name, a] of await sessions[index]!.run(arrays)) outputs[name] = a;',
      '    return { outputs, rate: manifest.rates[index]!.rate, timings: { totalMs: performance.now() - start } };',
      '  },',
      '  close: async () => {',
      '    for (const s of sessions) await s.release();',
      '  },',
      '};',
    ],
  }),
};
