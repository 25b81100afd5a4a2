// `slicec serve` and `slicec export triton`: the runtime's commands, registered on the main
// program by one call so the CLI file stays the compiler's. `serve` runs until SIGTERM/SIGINT,
// then drains the requests in flight and exits 0. Bad flag values are user errors (exit 2).

import type { Command } from 'commander';
import * as os from 'node:os';
import { ErrorCodes, userError, type UserError } from './diagnostics.js';
import { exportTriton } from './export-triton.js';

function badFlag(flag: string, expected: string, value: string): UserError {
  return userError(ErrorCodes.BAD_FLAG, `${flag} expects ${expected}, got "${value}"`, { expected, found: `"${value}"`, hint: 'see the command\'s --help' });
}

/** Model names go into URL paths and Triton folder names: letters, digits, `_`, `.` and `-`. */
function modelName(flag: string): (value: string) => string {
  return (value) => {
    if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(value)) throw badFlag(flag, 'a name of letters, digits, _, . and - (starting with a letter or digit)', value);
    return value;
  };
}

function integer(flag: string, min: number): (value: string) => number {
  return (value) => {
    const n = Number(value.trim());
    if (!/^[0-9]+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < min) throw badFlag(flag, `an integer ≥ ${min}`, value);
    return n;
  };
}

function positive(flag: string): (value: string) => number {
  return (value) => {
    const n = Number(value.trim());
    if (value.trim() === '' || !Number.isFinite(n) || n <= 0) throw badFlag(flag, 'a positive number', value);
    return n;
  };
}

function fraction(flag: string): (value: string) => number {
  return (value) => {
    const n = Number(value.trim());
    if (value.trim() === '' || !Number.isFinite(n) || n <= 0 || n > 1) throw badFlag(flag, 'a number in (0, 1]', value);
    return n;
  };
}

function oneOf<T extends string>(flag: string, values: readonly T[]): (value: string) => T {
  return (value) => {
    if (!(values as readonly string[]).includes(value)) throw badFlag(flag, values.join(' or '), value);
    return value as T;
  };
}

interface ServeFlags {
  port: number;
  host: string;
  sloMs?: number;
  device: 'cpu' | 'cuda';
  workers?: number;
  threads: number;
  mode: 'per-rate' | 'elastic';
  name?: string;
  shed?: boolean;
  maxBatch: number;
  maxQueueDelayMs: number;
  maxBodyBytes?: number;
  maxConcurrency?: number;
  timeoutMs?: number;
  upstream?: string;
  upstreamConcurrency: number;
  minAccuracy?: number;
  exits?: boolean;
  cacheBytes?: number;
  trainerShare?: number;
  agreement?: number;
  probeShare?: number;
  cascade?: boolean;
}

interface TritonFlags {
  name?: string;
  maxBatchSize?: number;
  instances: number;
  kind: 'gpu' | 'cpu';
  maxQueueDelayUs: number;
}

export function registerRuntimeCommands(program: Command): void {
  const write = (text: string): void => {
    const out = program.configureOutput().writeOut;
    if (out) out(text);
    else process.stdout.write(text);
  };

  program
    .command('serve')
    .description('serve a compiled folder over the KServe/Triton v2 REST protocol, choosing a rate per request')
    .argument('<dir>', 'compiled output folder (manifest.json, slices/, elastic.onnx)')
    .option('--port <n>', 'TCP port (0: any free port)', integer('--port', 0), 8000)
    .option('--host <addr>', 'address to listen on', '127.0.0.1')
    .option('--slo-ms <ms>', 'latency objective per request, ms (a request may override it)', positive('--slo-ms'))
    .option('--device <cpu|cuda>', 'where to run; cuda falls back to cpu with a warning', oneOf('--device', ['cpu', 'cuda'] as const), 'cpu')
    .option('--workers <n>', 'inference worker threads (default: cores ÷ threads)', integer('--workers', 1))
    .option('--threads <n>', 'intra-op threads per worker', integer('--threads', 1), 1)
    .option('--mode <mode>', 'per-rate: one session per rate graph; elastic: elastic.onnx only (one session; least memory when compiled with --elastic lean)', oneOf('--mode', ['per-rate', 'elastic'] as const), 'per-rate')
    .option('--name <name>', 'model name: letters, digits, _, . and - (default: the source model file base name)', modelName('--name'))
    .option('--shed', 'refuse (503) requests no rate can answer within the objective')
    .option('--max-batch <n>', 'dynamic batching: rows per batch (1: off)', integer('--max-batch', 1), 1)
    .option('--max-queue-delay-ms <ms>', 'dynamic batching: longest wait for a batch to fill', (v) => (v.trim() === '0' ? 0 : positive('--max-queue-delay-ms')(v)), 0)
    .option('--max-body-bytes <n>', 'largest request body (413 above)', integer('--max-body-bytes', 1))
    .option('--max-concurrency <n>', 'requests in flight before 503', integer('--max-concurrency', 1))
    .option('--timeout-ms <ms>', 'per-request timeout (504)', positive('--timeout-ms'))
    .option('--upstream <url>', 'route to a v2 server holding <name>_rXXX models instead of running them here')
    .option('--upstream-concurrency <n>', 'requests kept in flight upstream', integer('--upstream-concurrency', 1), 2)
    .option('--min-accuracy <a>', 'accuracy floor per request: the least compute meeting it (needs recorded accuracy; a request may override it)', fraction('--min-accuracy'))
    .option('--exits', 'serve with early exits, their heads trained online from the served traffic (a folder compiled with --exits)')
    .option('--cache-bytes <n>', 'with --exits: bytes the replay buffer may hold', integer('--cache-bytes', 1024))
    .option('--trainer-share <f>', 'with --exits: most of the wall time the head trainer may be busy', fraction('--trainer-share'))
    .option('--agreement <f>', 'with --exits: agreement with the full model a head needs at its threshold to answer', fraction('--agreement'))
    .option('--probe-share <f>', 'with --exits: share of requests run to the end while heads answer (keeps them trained and measured)', (v) => (v.trim() === '0' ? 0 : fraction('--probe-share')(v)))
    .option('--cascade', 'let the policy answer through the cascade across rates recorded by calibrate-cascade')
    .action(async (dir: string, flags: ServeFlags) => {
      const { SlicedModel } = await import('../runtime/sliced-model.js');
      const { V2Server } = await import('../runtime/server/http.js');
      const { connectUpstream } = await import('../runtime/server/router.js');
      const load = { maxBatch: flags.maxBatch, maxQueueDelayMs: flags.maxQueueDelayMs, cascade: flags.cascade === true };
      const exitKnobs = (['cacheBytes', 'trainerShare', 'agreement', 'probeShare'] as const).filter((k) => flags[k] !== undefined);
      if (!flags.exits && exitKnobs.length > 0) {
        throw userError(ErrorCodes.BAD_FLAG, `--${exitKnobs[0]!.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} tunes early exits, which are off`, { expected: '--exits with it', found: 'no --exits', hint: 'add --exits (a folder compiled with --exits)' });
      }
      if (flags.exits && flags.upstream) throw userError(ErrorCodes.BAD_FLAG, '--exits runs the segments here, --upstream routes elsewhere', { expected: 'one of them', found: 'both', hint: 'drop one' });
      const exits = flags.exits ? { maxBufferBytes: flags.cacheBytes, trainerShare: flags.trainerShare, agreement: flags.agreement, probeShare: flags.probeShare } : undefined;
      const cores = os.availableParallelism();
      const busy = (flags.workers ?? Math.max(1, Math.floor(cores / (flags.threads ?? 1)))) * (flags.threads ?? 1);
      if (!flags.upstream && busy > cores) {
        process.stderr.write(`warning: ${flags.workers ?? 'the default'} worker(s) × ${flags.threads ?? 1} thread(s) = ${busy} threads on ${cores} cores: they will take turns, and every worker holds its own copy of the graphs\n`);
      }
      const model = flags.upstream
        ? await connectUpstream(dir, { ...load, upstream: flags.upstream, name: flags.name, concurrency: flags.upstreamConcurrency })
        : await SlicedModel.load(dir, { ...load, device: flags.device, workers: flags.workers, threads: flags.threads, mode: flags.mode, exits });
      if (flags.minAccuracy !== undefined && !model.rates.every((r) => typeof r.accuracy === 'number')) {
        await model.close();
        throw userError(ErrorCodes.BAD_FLAG, '--min-accuracy needs an accuracy per rate, and the manifest records none', { expected: 'rates[].accuracy in manifest.json', found: 'none', hint: `run slicec eval ${dir} --data SPEC first` });
      }
      const server = new V2Server(model, {
        name: flags.name,
        sloMs: flags.sloMs,
        minAccuracy: flags.minAccuracy,
        shed: flags.shed === true,
        maxBodyBytes: flags.maxBodyBytes,
        maxConcurrency: flags.maxConcurrency,
        timeoutMs: flags.timeoutMs,
      });
      let address;
      try {
        address = await server.listen(flags.port, flags.host);
      } catch (e) {
        await model.close(); // the workers would keep the process alive
        throw e;
      }
      const where = flags.upstream ? `routing to ${flags.upstream}` : `${model.workers} worker(s) on ${model.device}, mode ${model.mode}`;
      const extras = [flags.sloMs ? `objective ${flags.sloMs} ms` : '', flags.minAccuracy !== undefined ? `accuracy floor ${flags.minAccuracy}` : '', flags.exits ? 'early exits' : '', flags.cascade ? 'cascade' : ''].filter((x) => x);
      write(`serving ${server.modelNames.join(', ')} at http://${address.address}:${address.port}/v2 (${[where, ...extras].join(', ')})\n`);
      await new Promise<void>((resolve) => {
        const stop = (): void => {
          process.off('SIGTERM', stop);
          process.off('SIGINT', stop);
          write('draining: finishing requests in flight\n');
          void server.drain().then(resolve);
        };
        process.on('SIGTERM', stop);
        process.on('SIGINT', stop);
      });
    });

  program
    .command('calibrate-cascade')
    .description('calibrate the cascade across rates (answer at a low rate when confident, else run a wider one) on data; written into manifest.json')
    .argument('<dir>', 'compiled output folder')
    .requiredOption('--data <spec>', 'fashion-mnist | mnist | file.npz | x.npy,y.npy | a folder of class sub-folders of images')
    .option('--target <accuracy>', 'accuracy the cascade must reach on the calibration samples (default: the widest rate\'s)', fraction('--target'))
    .option('--share <fraction>', 'share of the test split used, spread evenly over it (the rest is left for measuring)', fraction('--share'), 0.5)
    .option('--device <cpu|cuda>', 'where to run; cuda falls back to cpu with a warning', oneOf('--device', ['cpu', 'cuda'] as const), 'cpu')
    .action(async (dir: string, flags: { data: string; target?: number; share: number; device: 'cpu' | 'cuda' }) => {
      const { calibrateCascadeFolder } = await import('./eval.js');
      const { progressReporter } = await import('./progress.js');
      const progress = progressReporter(process.stderr, false);
      let calibrated;
      try {
        calibrated = await calibrateCascadeFolder(dir, { ...flags, progress });
      } finally {
        progress?.stop();
      }
      const { cascade, fullAccuracy, manifestFile } = calibrated;
      const pct = (x: number): string => `${(x * 100).toFixed(2)} %`;
      const widest = cascade.stages[cascade.stages.length - 1]!;
      write(`${cascade.samples} samples (${cascade.data.split} split, every ${(1 / cascade.data.share).toFixed(1)}th)\n`);
      write(`stages: ${cascade.stages.map((s) => `rate ${s.rate}${s.threshold === null ? '' : ` (confidence ≥ ${s.threshold.toFixed(4)})`}: ${s.answered}`).join(' → ')}\n`);
      write(`accuracy ${pct(cascade.accuracy)} (target ${pct(cascade.target)}; rate ${widest.rate} alone ${pct(fullAccuracy)}), mean MACs ${Math.round(cascade.meanMacs)}\n`);
      write(`wrote ${manifestFile}\n`);
    });

  program
    .command('export')
    .description('export a compiled folder for another serving engine')
    .command('triton')
    .description('write a Triton model repository: <name>_rXXX/config.pbtxt and <name>_rXXX/1/model.onnx per rate')
    .argument('<dir>', 'compiled output folder')
    .argument('<repo>', 'Triton model repository folder (created if missing)')
    .option('--name <name>', 'model name prefix: letters, digits, _, . and - (default: the source model file base name)', modelName('--name'))
    .option('--max-batch-size <n>', 'Triton max_batch_size (default 32; 0 when the model has no batch axis)', integer('--max-batch-size', 0))
    .option('--instances <n>', 'instance_group count', integer('--instances', 1), 1)
    .option('--kind <gpu|cpu>', 'instance_group kind', oneOf('--kind', ['gpu', 'cpu'] as const), 'gpu')
    .option('--max-queue-delay-us <us>', 'dynamic_batching max_queue_delay_microseconds', integer('--max-queue-delay-us', 0), 100)
    .action((dir: string, repo: string, flags: TritonFlags) => {
      const models = exportTriton(dir, repo, { ...flags });
      for (const m of models) write(`wrote ${m.dir} (rate ${m.rate})\n`);
    });
}
