// The cascade across rates that `slicec calibrate-cascade` records in manifest.json (`cascade`):
// stages in the order a request meets them (rates ascending), each with the confidence threshold
// at which its answer stands, and what the calibration measured (accuracy, mean MACs, share of
// samples each stage answered). Serving reads it here; runtime/cascade.ts computes it.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { ErrorCodes, userError } from '../../compiler/diagnostics.js';

export interface ManifestCascade {
  target: number;
  accuracy: number;
  /** Mean MACs per sample on the calibration samples. */
  meanMacs: number;
  samples: number;
  /** Where the calibration samples came from: the --data spec, its split, and the share of it (indices ⌊k ÷ share⌋). */
  data: { spec: string; split: string; share: number };
  /** Thresholds: null for the last stage, which answers whatever reaches it. */
  stages: { rate: number; threshold: number | null; answered: number }[];
}

/** The folder's recorded cascade, checked against its rates; null when none was calibrated. */
export function readCascade(dir: string, rates: readonly number[]): ManifestCascade | null {
  const raw = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as { cascade?: ManifestCascade };
  const c = raw.cascade;
  if (!c) return null;
  const known = c.stages.every((s) => rates.some((r) => Math.abs(r - s.rate) < 1e-9));
  if (!known || c.stages.length === 0) {
    throw userError(ErrorCodes.BAD_INPUT_FILE, `${dir}: the recorded cascade names rates this folder does not have`, {
      expected: `stages among rates ${rates.join(', ')}`,
      found: c.stages.map((s) => s.rate).join(', '),
      hint: 'run slicec calibrate-cascade again',
    });
  }
  return c;
}

/** The recorded cascade or a user error saying how to make one. */
export function requireCascade(dir: string, rates: readonly number[]): ManifestCascade {
  const c = readCascade(dir, rates);
  if (!c) {
    throw userError(ErrorCodes.BAD_FLAG, `--cascade: ${dir} records no cascade`, {
      expected: 'manifest.json with a `cascade` section',
      found: 'none',
      hint: `run slicec calibrate-cascade ${dir} --data SPEC first`,
    });
  }
  return c;
}
