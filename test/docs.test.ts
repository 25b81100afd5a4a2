// The user guide stays true to the code: docs/cli.md is what `npm run docs` generates from the
// commander definitions, docs/troubleshooting.md has one entry per user-error code (no more, no
// fewer), and docs/manifest.md names every top-level field a compiled manifest has.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ErrorCodes } from '../compiler/diagnostics.js';
import { compile } from '../compiler/pipeline.js';
import { CLI_DOC, cliReference } from '../scripts/docs-cli.js';
import { REPO_ROOT } from './helpers/models.js';

const docs = path.join(REPO_ROOT, 'docs');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'slicec-docs-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('user guide', () => {
  it('docs/cli.md is up to date with the commander definitions (npm run docs)', () => {
    const reference = cliReference();
    expect(fs.readFileSync(CLI_DOC, 'utf8'), 'docs/cli.md is stale: run `npm run docs`').toBe(reference);
    for (const command of ['compile', 'print', 'verify', 'grad', 'train-graphs', 'codegen', 'report']) expect(reference).toContain(`## \`slicec ${command}\``);
  });

  it('docs/troubleshooting.md documents exactly the user-error codes in compiler/diagnostics.ts', () => {
    const text = fs.readFileSync(path.join(docs, 'troubleshooting.md'), 'utf8');
    const documented = [...text.matchAll(/^## (SLC\d{3}): \S/gm)].map((m) => m[1]);
    expect(documented).toEqual([...new Set(documented)]);
    expect([...documented].sort()).toEqual(Object.values(ErrorCodes).sort());
  });

  it('docs/manifest.md names every top-level manifest field', async () => {
    const outDir = path.join(tmp, 'mlp.sliced');
    await compile({ model: path.join(REPO_ROOT, 'fixtures', 'mlp.onnx'), groups: 2, outDir, warn: () => {} });
    const manifest = JSON.parse(fs.readFileSync(path.join(outDir, 'manifest.json'), 'utf8')) as Record<string, unknown>;
    const text = fs.readFileSync(path.join(docs, 'manifest.md'), 'utf8');
    for (const key of Object.keys(manifest)) expect(text, key).toMatch(new RegExp(`^\\| [^|]*\`${key}\`[^|]*\\|`, 'm'));
  });

  it('links between the guide pages resolve', () => {
    for (const page of fs.readdirSync(docs).filter((f) => f.endsWith('.md'))) {
      const text = fs.readFileSync(path.join(docs, page), 'utf8');
      for (const [, target] of text.matchAll(/\]\(([a-z-]+\.md)(#[^)]*)?\)/g)) {
        // runtime.md comes with the serving runtime
        if (target !== 'runtime.md') expect(fs.existsSync(path.join(docs, target!)), `${page} → ${target}`).toBe(true);
      }
    }
  });
});
