// The trainer's progress bar on stderr (cli-progress): epoch, loss, the batch's rate mix,
// samples/s and the ETA. Only on a TTY when enabled; otherwise silent (the JSON-lines log and
// the epoch notes carry the same information).

import cliProgress from 'cli-progress';

export interface StepInfo {
  epoch: number;
  loss: number;
  rates: number[];
  samplesPerSecond: number;
}

export class TrainProgress {
  private readonly bar: cliProgress.SingleBar | null;
  private smoothed = 0;

  constructor(enabled: boolean, total: number, start: number) {
    this.bar = enabled && process.stderr.isTTY
      ? new cliProgress.SingleBar({
        format: 'epoch {epoch} [{bar}] {value}/{total} | loss {loss} | rates {rates} | {speed} samples/s | ETA {eta_formatted}',
        stream: process.stderr,
        hideCursor: true,
        etaBuffer: 50,
      }, cliProgress.Presets.shades_classic)
      : null;
    this.bar?.start(total, start, { epoch: 1, loss: '-', rates: '-', speed: '-' });
  }

  update(step: number, info: StepInfo): void {
    this.smoothed = this.smoothed === 0 ? info.samplesPerSecond : 0.9 * this.smoothed + 0.1 * info.samplesPerSecond;
    this.bar?.update(step, { epoch: info.epoch, loss: info.loss.toFixed(4), rates: info.rates.join('+'), speed: this.smoothed.toFixed(0) });
  }

  /** A line above the bar (epoch results). */
  note(text: string): void {
    if (!this.bar) return;
    process.stderr.write(`\r\x1b[K${text}\n`);
    this.bar.render();
  }

  stop(): void {
    this.bar?.stop();
  }
}
