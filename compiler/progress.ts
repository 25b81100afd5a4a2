// Progress bars for long compiles on a terminal: one bar per pipeline step, with its count
// (rates for prune-to-rate, 1 for the other steps), speed and ETA, drawn with cli-progress on
// stderr. Only on a TTY and never with --json or --quiet, so pipes, logs and tests stay clean.
// Notes printed while bars are drawn go above them (MultiBar.log), not through them.

import cliProgress from 'cli-progress';
import type { CompileProgress } from './pipeline-types.js';

export interface ProgressReporter {
  update(p: CompileProgress): void;
  /** A line of text printed above the bars. */
  log(text: string): void;
  stop(): void;
}

/** A reporter drawing on `stream`, or null when progress should stay quiet. */
export function progressReporter(stream: NodeJS.WriteStream, quiet: boolean): ProgressReporter | null {
  if (quiet || !stream.isTTY) return null;
  const multi = new cliProgress.MultiBar(
    {
      stream,
      format: '{step} |{bar}| {value}/{total} | {speed}/s | ETA {eta_formatted}',
      barsize: 24,
      hideCursor: true,
      clearOnComplete: false,
      stopOnComplete: false,
      etaBuffer: 4,
      fps: 10,
    },
    cliProgress.Presets.shades_classic,
  );
  const bars = new Map<string, { bar: cliProgress.SingleBar; started: number }>();
  const width = 22;
  return {
    update(p) {
      let entry = bars.get(p.step);
      if (!entry) {
        entry = { bar: multi.create(p.total, 0, { step: p.step.padEnd(width), speed: '0.0' }), started: performance.now() };
        bars.set(p.step, entry);
      }
      const seconds = (performance.now() - entry.started) / 1000;
      entry.bar.setTotal(p.total);
      entry.bar.update(p.done, { speed: seconds > 0 ? (p.done / seconds).toFixed(1) : '0.0' });
    },
    log(text) {
      multi.log(text.endsWith('\n') ? text : `${text}\n`);
    },
    stop() {
      multi.stop();
    },
  };
}
