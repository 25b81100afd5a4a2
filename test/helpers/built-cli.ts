// Runs the built CLI (`node bin/slicec.js`, as installed users run it) with what the output and
// error tests need: another user (to make read-only folders bite when tests run as root), a
// umask, a shell line (pipes, process substitution), and variants of real models that are broken
// in one way each.

import { spawnSync, type SpawnSyncOptions } from 'node:child_process';
import * as path from 'node:path';
import { readModel, writeModel } from '../../compiler/onnx-codec.js';
import type { Model } from '../../compiler/ir.js';
import { REPO_ROOT } from './models.js';
import type { CliRun } from './cli.js';

export const BIN = path.join(REPO_ROOT, 'bin', 'slicec.js');
export const STACK_LINE = /^\s+at .+/m;
/** The user `nobody`, for running as someone who cannot write where root could. */
export const NOBODY = 65534;

export interface BinOptions {
  cwd?: string;
  /** Run as this user and group (only possible when the tests run as root). */
  uid?: number;
  env?: Record<string, string>;
}

export function runBuilt(args: string[], opts: BinOptions = {}): CliRun {
  const spawnOpts: SpawnSyncOptions = { cwd: opts.cwd ?? REPO_ROOT, encoding: 'utf8', env: { ...process.env, ...opts.env } };
  if (opts.uid !== undefined) Object.assign(spawnOpts, { uid: opts.uid, gid: opts.uid });
  const r = spawnSync(process.execPath, [BIN, ...args], spawnOpts);
  if (r.error) throw r.error;
  return { code: r.status ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
}

/** A bash command line with `$SLICEC` naming the built CLI. */
export function runShell(line: string, cwd = REPO_ROOT): CliRun & { signal: NodeJS.Signals | null } {
  const r = spawnSync('bash', ['-c', line], { cwd, encoding: 'utf8', env: { ...process.env, SLICEC: `${process.execPath} ${BIN}` } });
  if (r.error) throw r.error;
  return { code: r.status ?? -1, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/** Writes `source` changed by `edit` to `file` (a model broken in one way). */
export function writeVariant(source: string, file: string, edit: (m: Model) => void): string {
  const model = readModel(source);
  edit(model);
  writeModel(model, file);
  return file;
}
