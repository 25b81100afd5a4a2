// The manifest's parameter map binds the compiler to the trainer: for every fixture, norm mode
// and rate, gathering each full tensor through the map gives exactly the initializer of the same
// name in the rate's graph, and scattering it back restores the full tensor.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Manifest } from '../compiler/artifacts.js';
import { readModel } from '../compiler/onnx-codec.js';
import { compile } from '../compiler/pipeline.js';
import type { TypedArray } from '../compiler/tensor.js';
import { gather, keptAxisIndices, keptByUnion, keptPositions, scatter, unionWidths, type NumericArray } from '../runtime/parameters.js';
import { fixtureModels } from './helpers/models.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-params-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function initializers(file: string): Map<string, { dims: number[]; data: TypedArray }> {
  const model = readModel(file);
  return new Map(model.graph.initializers.map((v) => [v.name, { dims: v.const!.dims, data: v.const!.data() }]));
}

describe('parameter map', () => {
  for (const fixture of fixtureModels()) {
    for (const norm of ['gn', 'keep', 'none'] as const) {
      it(`${fixture.name} --norm ${norm}: gather(full, rate) is every per-rate initializer`, async () => {
        const outDir = path.join(tmp, `${path.basename(fixture.file, '.onnx')}-${norm}`);
        await compile({ codegen: false, model: fixture.file, groups: 4, norm, calibrate: false, outDir, log: () => {} });
        const manifest = JSON.parse(fs.readFileSync(path.join(outDir, 'manifest.json'), 'utf8')) as Manifest;
        const full = initializers(path.join(outDir, manifest.rates.find((r) => r.rate === 1)!.file));
        const params = new Map(manifest.parameters.map((p) => [p.name, p]));
        expect([...full.keys()].filter((n) => !n.endsWith('_sliced')).sort()).toEqual([...params.keys()].sort());
        const elastic = initializers(path.join(outDir, manifest.elastic.file));
        const widths = unionWidths(manifest);
        let cut = 0;
        let mismatches: string[] = [];
        for (const rate of manifest.rates) {
          const kept = keptByUnion(manifest, rate.rate);
          for (const [name, tensor] of initializers(path.join(outDir, rate.file))) {
            const param = params.get(name);
            if (!param) {
              // shape constants rewritten for this rate are made per rate, not cut
              if (!name.endsWith('_sliced')) mismatches.push(`${rate.rate} ${name}: not in the map`);
              continue;
            }
            const source = full.get(name)!;
            expect(param.dims).toEqual(source.dims);
            if (elastic.has(name)) expect(Array.from(elastic.get(name)!.data as Float32Array)).toEqual(Array.from(source.data as Float32Array));
            const { dims, positions } = keptPositions(param, keptAxisIndices(param, kept, widths));
            const gathered = gather(source.data as NumericArray, positions);
            if (dims.join(',') !== tensor.dims.join(',') || !gathered.every((x, i) => x === tensor.data[i])) mismatches.push(`${rate.rate} ${name}`);
            if (positions.length < source.data.length) cut++;
            const restored = (source.data as NumericArray).slice() as NumericArray;
            restored.fill(0 as never);
            scatter(restored, positions, gathered);
            if (!Array.from(positions).every((p) => restored[p] === source.data[p])) mismatches.push(`${rate.rate} ${name}: scatter`);
          }
        }
        expect(mismatches).toEqual([]);
        expect(cut).toBeGreaterThan(0);
        const roles = new Set(manifest.parameters.map((p) => p.role));
        expect(roles.has('weight')).toBe(true);
        if (norm === 'gn' && manifest.normalization.sites && Object.keys(manifest.normalization.sites).length > 0) {
          expect(roles.has('norm-scale') && roles.has('fixed')).toBe(true);
          expect(manifest.parameters.filter((p) => p.name.includes('gn_gamma')).every((p) => p.role === 'norm-scale')).toBe(true);
        }
      });
    }
  }
});
