// Writes docs/cli.md, the command-line reference, from the commander definitions the CLI itself
// runs (compiler/cli.ts builds the program), so the reference cannot drift from the flags:
// `npm run docs` regenerates it and test/docs.test.ts fails when it is out of date.

import type { Command } from 'commander';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildProgram } from '../compiler/cli.js';

export const CLI_DOC = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'docs', 'cli.md');

/** Table cell text: pipes escaped, and `<` too outside code spans (Markdown would read `<model>` as HTML). */
const cell = (text: string): string => text.replace(/\|/g, '\\|').replace(/\n/g, ' ');
const prose = (text: string): string => cell(text).replace(/&/g, '&amp;').replace(/</g, '&lt;');

function commandPath(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

function section(cmd: Command, lines: string[]): void {
  const help = cmd.createHelp();
  const title = commandPath(cmd);
  lines.push(`## \`${title}\``, '', prose(help.commandDescription(cmd)), '', '```', help.commandUsage(cmd), '```', '');
  const args = help.visibleArguments(cmd);
  if (args.length > 0) {
    lines.push('| argument | meaning |', '| --- | --- |');
    for (const a of args) lines.push(`| \`${cell(help.argumentTerm(a))}\` | ${prose(help.argumentDescription(a))} |`);
    lines.push('');
  }
  const options = help.visibleOptions(cmd);
  if (options.length > 0) {
    lines.push('| option | meaning |', '| --- | --- |');
    for (const o of options) lines.push(`| \`${cell(help.optionTerm(o))}\` | ${prose(help.optionDescription(o))} |`);
    lines.push('');
  }
  for (const sub of help.visibleCommands(cmd).filter((c) => c.name() !== 'help')) section(sub, lines);
}

/** The text of docs/cli.md. */
export function cliReference(): string {
  const program = buildProgram({ stdout: () => {}, stderr: () => {} }, false, { exitCode: 0, usageMessage: '' });
  const lines = [
    '# Command-line reference',
    '',
    'Generated from the CLI\'s own definitions by `npm run docs` (scripts/docs-cli.ts); do not edit by hand.',
    'Exit codes: 0 success, 1 user error, 2 usage error, 70 internal error ([troubleshooting](troubleshooting.md)).',
    '',
  ];
  section(program, lines);
  return `${lines.join('\n').replace(/\n+$/, '')}\n`;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  fs.writeFileSync(CLI_DOC, cliReference());
  process.stdout.write(`wrote ${path.relative(process.cwd(), CLI_DOC)}\n`);
}
