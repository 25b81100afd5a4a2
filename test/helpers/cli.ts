// Runs the slicec CLI in-process with captured output, and (for the few tests that must prove the
// installed entry point works) as a child process of `node bin/slicec.js`.

import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { main } from '../../compiler/cli.js';
import { REPO_ROOT } from './models.js';

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

export async function runCli(args: string[]): Promise<CliRun> {
  let stdout = '';
  let stderr = '';
  const code = await main(args, {
    stdout: (text) => {
      stdout += text;
    },
    stderr: (text) => {
      stderr += text;
    },
  });
  return { code, stdout, stderr };
}

/** `node bin/slicec.js ...args` in the repository root. */
export function runBin(args: string[]): CliRun {
  const result = spawnSync(process.execPath, [path.join(REPO_ROOT, 'bin', 'slicec.js'), ...args], {
    cwd: REPO_ROOT,
    encoding: 'utf8',
  });
  if (result.error) throw result.error;
  return { code: result.status ?? -1, stdout: result.stdout, stderr: result.stderr };
}

/** Build dist/ when it is missing or older than any TypeScript source it is built from. */
export function ensureBuilt(): void {
  const built = path.join(REPO_ROOT, 'dist', 'compiler', 'cli.js');
  if (fs.existsSync(built) && fs.statSync(built).mtimeMs >= newestSourceMtime()) return;
  try {
    execFileSync('npm', ['run', 'build', '--silent'], { cwd: REPO_ROOT, stdio: 'pipe', encoding: 'utf8' });
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string };
    throw new Error(`npm run build failed:\n${err.stdout ?? ''}${err.stderr ?? ''}`);
  }
}

function newestSourceMtime(): number {
  let newest = 0;
  for (const folder of ['compiler', 'passes', 'runtime', 'fixtures']) {
    const dir = path.join(REPO_ROOT, folder);
    if (!fs.existsSync(dir)) continue;
    for (const entry of fs.readdirSync(dir, { recursive: true, encoding: 'utf8' })) {
      if (!entry.endsWith('.ts')) continue;
      newest = Math.max(newest, fs.statSync(path.join(dir, entry)).mtimeMs);
    }
  }
  return newest;
}
