// Progress bars for long compiles on a terminal: one bar per pipeline step with its count (rates
// for prune-to-rate, 1 for the other steps) and elapsed time, plus speed and ETA where a step has
// several units, drawn with cli-progress on stderr. Only on a TTY and never with --json or
// --quiet, so pipes, logs and tests stay clean. Notes printed while bars are drawn go above them
// (MultiBar.log), not through them.

import cliProgress from 'cli-progress';
import type { CompileProgress } from './pipeline-types.js';

export interface ProgressReporter {
  update(p: CompileProgress): void;
  /** A line of text printed above the bars. */
  log(text: string): void;
  stop(): void;
}

const STEP_WIDTH = 22;

/** `step |bar| 3/8 | 2.1/s | 4s | ETA 2s`; single-unit steps show only the count and elapsed time. */
const formatLine: cliProgress.GenericFormatter = (options, params, payload: { step: string }) => {
  const { Format } = cliProgress;
  const seconds = ((params.stopTime ?? Date.now()) - params.startTime) / 1000;
  const elapsed = Math.round(seconds);
  const parts = [`${payload.step.padEnd(STEP_WIDTH)} |${Format.BarFormat(params.progress, options)}| ${params.value}/${params.total}`];
  if (params.total > 1) parts.push(`${(seconds > 0 ? params.value / seconds : 0).toFixed(1)}/s`);
  parts.push(Format.TimeFormat(elapsed, options, 1));
  if (params.total > 1 && params.value < params.total) parts.push(`ETA ${Format.TimeFormat(params.eta, options, 1)}`);
  return parts.join(' | ');
};

/** A reporter drawing on `stream`, or null when progress should stay quiet. */
export function progressReporter(stream: NodeJS.WriteStream, quiet: boolean): ProgressReporter | null {
  if (quiet || !stream.isTTY) return null;
  const multi = new cliProgress.MultiBar(
    { stream, format: formatLine, barsize: 24, hideCursor: true, clearOnComplete: false, stopOnComplete: false, etaBuffer: 4, fps: 10 },
    cliProgress.Presets.shades_classic,
  );
  const bars = new Map<string, cliProgress.SingleBar>();
  return {
    update(p) {
      let bar = bars.get(p.step);
      if (!bar) {
        bar = multi.create(p.total, 0, { step: p.step });
        bars.set(p.step, bar);
      }
      bar.setTotal(p.total);
      bar.update(p.done);
      // a finished step keeps its elapsed time
      if (p.done >= p.total) bar.stop();
    },
    log(text) {
      multi.log(text.endsWith('\n') ? text : `${text}\n`);
    },
    stop() {
      multi.stop();
    },
  };
}
