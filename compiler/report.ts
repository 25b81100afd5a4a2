// `slicec report DIR`: one self-contained HTML page about a compiled (and maybe fine-tuned)
// folder, with the same charts beside it as SVG files, in DIR/report/. It shows what each rate
// costs (MACs, parameters) and, once an eval or fine-tune recorded them, what it buys (accuracy,
// latency); the training curves when a fine-tune ran; and which layers got sliced, which were
// pinned and why. Everything comes from manifest.json and the training log; what is absent is
// said so on the page, never invented. The page embeds its SVGs (no scripts, no network), so it
// can be mailed or attached to a CI run as it is.

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Manifest } from './artifacts.js';
import { readCompiledManifest, writeCompiledManifest } from './compiled-folder.js';
import { writeFailure } from './diagnostics.js';
import {
  costChart, evalChart, layersChart, lossChart, renderSvg, versusChart,
  type Chart, type EvalRow, type LayerRow, type RateRow, type StepRow,
} from './report-charts.js';

/** Where a fine-tune's JSON-lines log may be, in the order they are tried. */
export const TRAINING_LOGS = ['training/log.jsonl', 'train-log.jsonl'];

export interface TrainingCurves {
  /** The log file read, or 'manifest.json' when only the manifest's training section was there. */
  source: string;
  steps: StepRow[];
  evals: EvalRow[];
  /** Log lines that were not JSON (a run killed mid-write leaves a partial last line). */
  skippedLines: number;
}

interface EvalRecord {
  rate: number;
  accuracy: number | null;
  loss: number;
}

function evalRows(epoch: number, rates: unknown): EvalRow[] {
  if (!Array.isArray(rates)) return [];
  return (rates as Partial<EvalRecord>[])
    .filter((r) => typeof r.rate === 'number' && typeof r.loss === 'number')
    .map((r) => ({ epoch, rate: r.rate!, accuracy: typeof r.accuracy === 'number' ? r.accuracy : null, loss: r.loss! }));
}

/** The training curves of a folder, or null when no fine-tune ran there. */
export function readTraining(dir: string, manifest: Manifest): TrainingCurves | null {
  for (const relative of TRAINING_LOGS) {
    const file = path.join(dir, relative);
    if (!fs.existsSync(file)) continue;
    const curves: TrainingCurves = { source: relative, steps: [], evals: [], skippedLines: 0 };
    for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
      if (line.trim() === '') continue;
      let record: { type?: unknown; step?: unknown; epoch?: unknown; loss?: unknown; rates?: unknown };
      try {
        record = JSON.parse(line) as typeof record;
      } catch {
        curves.skippedLines++;
        continue;
      }
      if (record.type === 'step' && typeof record.step === 'number' && typeof record.loss === 'number') {
        curves.steps.push({ step: record.step, epoch: typeof record.epoch === 'number' ? record.epoch : 0, loss: record.loss });
      } else if (record.type === 'eval' && typeof record.epoch === 'number') {
        curves.evals.push(...evalRows(record.epoch, record.rates));
      }
    }
    return curves;
  }
  const history = (manifest as { training?: { history?: { epoch: number; rates: unknown }[] } }).training?.history;
  if (!Array.isArray(history)) return null;
  return { source: 'manifest.json', steps: [], evals: history.flatMap((h) => evalRows(h.epoch, h.rates)), skippedLines: 0 };
}

function rateRows(manifest: Manifest): RateRow[] {
  return manifest.rates.map((r) => {
    const measured = r as { accuracy?: unknown; latencyMs?: unknown };
    return {
      rate: r.rate, macs: r.macs, macRatio: r.macRatio, parameters: r.parameters,
      ...(typeof measured.accuracy === 'number' ? { accuracy: measured.accuracy } : {}),
      ...(typeof measured.latencyMs === 'number' ? { latencyMs: measured.latencyMs } : {}),
    };
  });
}

/** The charts the folder has data for, in page order. */
export function reportCharts(manifest: Manifest, training: TrainingCurves | null): Chart[] {
  const rates = rateRows(manifest);
  const charts = [costChart(rates)];
  const accuracy = rates.some((r) => r.accuracy !== undefined);
  const latency = rates.some((r) => r.latencyMs !== undefined);
  if (accuracy) charts.push(versusChart(rates, 'mmacs', 'accuracy'));
  if (latency) charts.push(versusChart(rates, 'mmacs', 'latencyMs'));
  if (accuracy && latency) charts.push(versusChart(rates, 'latencyMs', 'accuracy'));
  if (training && training.steps.length > 0) charts.push(lossChart(training.steps));
  if (training && training.evals.length > 0) charts.push(evalChart(training.evals));
  const layers: LayerRow[] = manifest.layers.map((l, index) => ({ index, ...l }));
  if (layers.length > 0) charts.push(layersChart(layers));
  return charts;
}

const escapeHtml = (text: string): string =>
  text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

function table(headers: string[], rows: (string | number)[][]): string {
  const head = headers.map((h) => `<th>${escapeHtml(h)}</th>`).join('');
  const body = rows.map((r) => `<tr>${r.map((c) => `<td>${escapeHtml(String(c))}</td>`).join('')}</tr>`).join('\n');
  return `<table><thead><tr>${head}</tr></thead><tbody>\n${body}\n</tbody></table>`;
}

const percent = (x: number | undefined): string => (x === undefined ? '—' : `${(x * 100).toFixed(2)} %`);

function page(manifest: Manifest, training: TrainingCurves | null, svgs: Map<string, string>, charts: Chart[]): string {
  const figure = (name: string): string => {
    const chart = charts.find((c) => c.name === name);
    return chart ? `<figure id="chart-${name}">${svgs.get(name)}<figcaption>${escapeHtml(chart.title)} (report/${name}.svg)</figcaption></figure>` : '';
  };
  const rates = rateRows(manifest);
  const measured = rates.some((r) => r.accuracy !== undefined || r.latencyMs !== undefined);
  const norm = manifest.normalization;
  const calibration = norm.calibration
    ? `calibrated on a ${norm.calibration.source} batch of ${norm.calibration.batch}: relative output error at rate 1 ${norm.calibration.after.relativeError.toPrecision(3)}` +
      (norm.calibration.after.top1 !== null ? `, top-1 agreement ${percent(norm.calibration.after.top1)}` : '')
    : 'no calibration';
  const sliced = manifest.layers.filter((l) => l.sliced).length;
  const trainingText = !training
    ? '<p class="absent">No fine-tune has run in this folder yet (no training log and no <code>training</code> section in manifest.json): the accuracy of each rate is not known. Fine-tuning records it.</p>'
    : `<p>From <code>${escapeHtml(training.source)}</code>: ${training.steps.length} steps, ${new Set(training.evals.map((e) => e.epoch)).size} evaluations` +
      (training.skippedLines > 0 ? `; ${training.skippedLines} unreadable log lines skipped` : '') + '.</p>' +
      (training.steps.length === 0 && training.evals.length === 0 ? '<p class="absent">The log holds no step or evaluation records.</p>' : '') +
      figure('training-loss') + figure('training-eval');
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>slicec report: ${escapeHtml(manifest.source.name)}</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1250px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; vertical-align: top; }
figcaption { color: #666; font-size: 0.85em; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { border: 1px solid #ddd; padding: 2px 8px; text-align: left; }
th { background: #f4f4f4; } tr.pinned td { color: #777; } .absent { color: #8a6d3b; }
</style>
</head>
<body>
<h1>${escapeHtml(manifest.source.name)}, sliced</h1>
<p>${manifest.groups} groups, ${rates.length} rates, ${sliced} of ${manifest.layers.length} layers sliced; normalization <code>${norm.mode}</code>, ${escapeHtml(calibration)}.
Source sha256 <code>${manifest.source.sha256.slice(0, 16)}…</code>, opset ${manifest.source.opset}.</p>
<h2>Rates: cost and accuracy</h2>
${figure('cost')}${figure('accuracy-vs-macs')}${figure('latency-vs-macs')}${figure('accuracy-vs-latency')}
${measured ? '' : '<p class="absent">No accuracy or latency is recorded per rate yet (an eval or fine-tune writes them into manifest.json).</p>'}
${table(['rate', 'active groups', 'MACs', 'MACs vs rate 1', 'parameters', 'accuracy', 'latency (ms)', 'file'],
  manifest.rates.map((r, i) => [r.rate, r.activeGroups, r.macs.toLocaleString('en'), percent(r.macRatio), r.parameters.toLocaleString('en'),
    percent(rates[i]!.accuracy), rates[i]!.latencyMs?.toFixed(3) ?? '—', r.file]))}
<h2>Training</h2>
${trainingText}
<h2>Layers</h2>
${figure('layers')}
${manifest.layers.length === 0 ? '<p class="absent">The model has no convolution or dense layers to slice.</p>' : ''}
<table><thead><tr><th>#</th><th>layer</th><th>op</th><th>channels</th><th>union</th><th>sliced</th><th>why pinned</th></tr></thead><tbody>
${manifest.layers.map((l, i) => `<tr class="${l.sliced ? 'sliced' : 'pinned'}"><td>${i}</td><td>${escapeHtml(l.layer)}</td><td>${escapeHtml(l.op)}</td><td>${l.channels}</td><td>u${l.union}</td><td>${l.sliced ? 'yes' : 'no'}</td><td>${escapeHtml(l.reason ?? '')}</td></tr>`).join('\n')}
</tbody></table>
<h2>Channel unions</h2>
${table(['union', 'width', 'unit', 'sliced', 'group boundaries / why not'],
  manifest.unions.map((u) => [`u${u.id}`, u.width, u.unit, u.sliced ? 'yes' : 'no', u.sliced ? (u.boundaries ?? []).join(' ') : (u.reason ?? '')]))}
</body>
</html>
`;
}

/**
 * Writes DIR/report/index.html and one SVG per chart, lists them in the manifest (so a later
 * compile into the folder replaces them) and returns their paths, the page first.
 */
export async function writeReport(dir: string): Promise<string[]> {
  const manifest = readCompiledManifest(dir);
  const training = readTraining(dir, manifest);
  const charts = reportCharts(manifest, training);
  const svgs = new Map<string, string>();
  for (const chart of charts) svgs.set(chart.name, await renderSvg(chart));
  const reportDir = path.join(dir, 'report');
  fs.rmSync(reportDir, { recursive: true, force: true });
  fs.mkdirSync(reportDir, { recursive: true });
  const files = ['report/index.html', ...charts.map((c) => `report/${c.name}.svg`)];
  let writing = path.join(dir, files[0]!);
  try {
    fs.writeFileSync(writing, page(manifest, training, svgs, charts));
    for (const chart of charts) fs.writeFileSync((writing = path.join(reportDir, `${chart.name}.svg`)), svgs.get(chart.name)!);
  } catch (e) {
    fs.rmSync(reportDir, { recursive: true, force: true }); // no half report
    throw writeFailure(writing, e) ?? e;
  }
  writeCompiledManifest(dir, { ...manifest, report: { files } });
  return files.map((f) => path.join(dir, f));
}
