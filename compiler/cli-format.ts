// What `slicec compile` prints: the summary table, notes a user should act on (nothing sliced,
// group norms that changed the full-rate model), the --explain and --stats tables. Kept apart
// from cli.ts so the command wiring stays short.

import * as path from 'node:path';
import type { CompileResult } from './pipeline-types.js';

/** The compile result as printed: rate files as absolute paths, each with the manifest's MAC ratio. */
export type CompileSummary = Omit<CompileResult, 'rates'> & { rates: (CompileResult['rates'][number] & { macRatio: number })[] };

export function formatCompileSummary(result: CompileSummary): string {
  const rows = result.rates.map((r) => [
    formatRate(r.rate),
    String(r.activeGroups),
    formatCount(r.parameters),
    formatCount(r.macs),
    r.macRatio.toFixed(3),
    displayPath(result.outDir, r.file),
  ]);
  const table = formatTable(['rate', 'groups', 'params', 'MACs', 'MACs/rate1', 'file'], rows, [false, true, true, true, true, false]);
  const lines = [
    `wrote ${displayDir(result.outDir)} (manifest: ${displayPath(result.outDir, result.manifestFile)}, elastic: ${displayPath(result.outDir, result.elasticFile)})`,
    formatNormalization(result),
    table,
  ];
  return lines.filter((l) => l !== '').join('\n');
}

/** What a user should know about a result: nothing sliced, or group norms that changed the model. */
export function compileNotes(result: CompileSummary, groups: number): string[] {
  const notes: string[] = [];
  const sliced = groups > 1 && result.layers.some((l) => l.sliced);
  if (!sliced || (result.rates.length > 1 && result.rates.every((r) => r.macs === result.rates[0]!.macs))) {
    notes.push(
      'nothing could be sliced: every rate gives the same graph (MACs ratio 1.0)' +
        (groups === 1 ? '; --groups 1 keeps every layer whole, use --groups 2 or more' : '; run with --explain to see why each layer is kept whole'),
    );
  }
  const c = result.normalization.calibration;
  const changed = c && (c.after.relativeError > 0.05 || (c.after.top1 !== null && c.after.top1 < 0.99));
  if (c && changed) {
    const top1 = c.after.top1 === null ? '' : `top-1 agreement ${(c.after.top1 * 100).toFixed(1)}%, `;
    notes.push(
      `the group norms change the full-rate model (${top1}relative error ${c.after.relativeError.toFixed(3)} against the original). ` +
        `Fine-tuning restores accuracy: slicec finetune ${result.outDir} --data <training data>` +
        `${c.source === 'synthetic' ? '; --data or --calibration with real inputs also fits the group norms better' : ''}. ` +
        'Or compile with --norm bn or keep, which keep the original model exactly at rate 1.',
    );
  }
  return notes;
}

function formatNormalization(result: CompileSummary): string {
  const n = result.normalization;
  const counts = Object.entries(n.sites).map(([kind, count]) => `${count} ${kind}`).join(', ');
  let line = `normalization: ${n.mode}${counts ? ` (${counts})` : ''}`;
  const c = n.calibration;
  if (c) {
    const top1 = (a: { top1: number | null }): string => (a.top1 === null ? '' : `, top-1 agreement ${(a.top1 * 100).toFixed(1)}%`);
    const source = c.source === 'file' ? 'calibration file' : c.source === 'data' ? 'training examples (--data)' : 'synthetic N(0,1) inputs (pass --data or --calibration for real data)';
    line += `\ncalibration on ${c.batch} ${source}: full-rate output vs original, relative error ${c.before.relativeError.toFixed(3)} → ${c.after.relativeError.toFixed(3)}${top1(c.after)}`;
  }
  return line;
}

export function formatExplanation(result: CompileResult): string {
  const rows = result.layers.map((l) => [l.layer, l.op, String(l.channels), l.sliced ? 'yes' : 'no', l.reason ?? '']);
  const layers = formatTable(['layer', 'op', 'channels', 'sliced', 'reason'], rows, [false, false, true, false, false]);
  if (!result.exits) return layers;
  const exitRows = result.exits.map((e) => [e.layer, e.kind, String(e.activation), `${(e.macsBefore * 100).toFixed(1)}%`, e.chosen ? 'yes' : 'no', e.reason]);
  return `${layers}\n${formatTable(['cut after', 'kind', 'values', 'MACs before', 'exit', 'why'], exitRows, [false, false, true, true, false, false])}`;
}

export function formatStats(result: CompileResult): string {
  const rows = result.stats.map((s) => [s.step, s.ms.toFixed(1), String(s.nodes)]);
  return formatTable(['step', 'ms', 'nodes'], rows, [false, true, true]);
}

/** Plain aligned columns; `rightAlign[i]` for numeric columns. Trailing spaces are trimmed. */
function formatTable(headers: string[], rows: string[][], rightAlign: boolean[]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    cells
      .map((cell, i) => (rightAlign[i] ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n') + '\n';
}

function formatRate(rate: number): string {
  return String(Number(rate.toPrecision(6)));
}

function formatCount(n: number): string {
  return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

/** A folder below the working directory as a relative path, any other as given. */
function displayDir(dir: string): string {
  const relative = path.relative(process.cwd(), dir);
  return relative && !relative.startsWith('..') && !path.isAbsolute(relative) ? relative : dir;
}

function displayPath(outDir: string, file: string): string {
  return path.isAbsolute(file) ? path.relative(outDir, file) || file : file;
}
