// Day-one commands of the CLI: `codegen` (the typed TypeScript module of a compiled folder) and
// `report` (an HTML page with charts of what was compiled and, when it ran, trained). Registered
// on the main program by compiler/cli.ts; errors propagate to its exit-code mapping.

import type { Command } from 'commander';
import * as path from 'node:path';

export interface DayOneCliIO {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
}

export function registerDayOneCommands(program: Command, io: DayOneCliIO): void {
  program
    .command('codegen')
    .description('write the typed TypeScript module of a compiled folder: model.ts, model.js, model.d.ts and a package.json that marks model.js as an ES module')
    .argument('<dir>', 'a folder written by slicec compile')
    .option('--json', 'print the files written as JSON')
    .action(async (dir: string, opts: { json?: boolean }) => {
      // loaded on demand: ts-morph is only needed here
      const { codegen } = await import('./codegen.js');
      const files = await codegen(dir);
      if (opts.json) io.stdout(`${JSON.stringify({ files: files.map((f) => path.resolve(f)) }, null, 2)}\n`);
      else for (const f of files) io.stdout(`wrote ${f}\n`);
    });

  program
    .command('report')
    .description('write DIR/report/: one self-contained HTML page and its charts as SVG files')
    .argument('<dir>', 'a folder written by slicec compile (or fine-tuned by slicec finetune)')
    .option('--json', 'print the files written as JSON')
    .action(async (dir: string, opts: { json?: boolean }) => {
      const { writeReport } = await import('./report.js');
      const files = await writeReport(dir);
      if (opts.json) io.stdout(`${JSON.stringify({ files: files.map((f) => path.resolve(f)) }, null, 2)}\n`);
      else io.stdout(`wrote ${files[0]} and ${files.length - 1} charts\n`);
    });
}
