// One slicec run at a time per output: compile, finetune and train take a lock file beside the
// folder (or file) they write, `<path>.slicec-lock`, holding the run's pid. A second run on the
// same output is refused while that process lives; a lock a killed run left is taken over. In
// one process the lock is re-entrant (the demo compiles, then fine-tunes, the same folder).

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { processAlive } from './artifacts.js';
import { ErrorCodes, userError } from './diagnostics.js';

interface LockInfo {
  pid: number;
  host: string;
  what: string;
  since: string;
}

const held = new Map<string, number>();
let exitHook = false;

function readLock(file: string): LockInfo | null {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as LockInfo;
  } catch {
    return null;
  }
}

/** Takes the lock of `target` for `what` (a command name); returns its release. */
export function lockOutput(target: string, what: string): () => void {
  const file = `${path.resolve(target)}.slicec-lock`;
  const count = held.get(file);
  if (count !== undefined) {
    held.set(file, count + 1);
    return () => release(file);
  }
  const info: LockInfo = { pid: process.pid, host: os.hostname(), what, since: new Date().toISOString() };
  for (let attempt = 0; ; attempt++) {
    try {
      fs.writeFileSync(file, JSON.stringify(info), { flag: 'wx' });
      break;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      // where no file can be made beside the output (a read-only parent), runs go unlocked
      if (code !== 'EEXIST') return () => {};
      const other = readLock(file);
      if (other === null && attempt < 3) {
        // another run may have made the file and not yet written it: look again shortly
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
        continue;
      }
      const live = other === null || other.host !== info.host || processAlive(other.pid);
      if (live) {
        throw userError(ErrorCodes.BAD_OUTPUT, `${target} is in use by another slicec run`, {
          expected: 'no other run writing it',
          found: other ? `slicec ${other.what}, pid ${other.pid} on ${other.host}, since ${other.since}` : `the unreadable lock ${file}`,
          hint: other
            ? 'wait for that run to end, or stop it; a lock left by a run that was killed is taken over on its own'
            : 'if no slicec run is writing it, delete that file',
        });
      }
      fs.rmSync(file, { force: true }); // left by a run that is gone
    }
  }
  held.set(file, 1);
  if (!exitHook) {
    exitHook = true;
    // process.exit (the signal handlers) skips finally blocks: drop what this process holds
    process.on('exit', () => {
      for (const f of held.keys()) dropOwn(f);
    });
  }
  return () => release(file);
}

function release(file: string): void {
  const count = held.get(file);
  if (count === undefined) return;
  if (count > 1) {
    held.set(file, count - 1);
    return;
  }
  held.delete(file);
  dropOwn(file);
}

function dropOwn(file: string): void {
  if (readLock(file)?.pid === process.pid) fs.rmSync(file, { force: true });
}
