// The report's charts as Vega-Lite specifications, rendered to SVG strings in Node with Vega's
// headless renderer (no browser, no canvas: text widths are estimated, which is plenty for axis
// labels). Vega-Lite was chosen because a chart is a small declarative JSON spec (data, mark,
// encodings), Vega renders it to standalone SVG without a DOM, and both are maintained by the
// University of Washington's IDL; Observable Plot and D3 want a DOM (jsdom), Chart.js a canvas.

import type { TopLevelSpec } from 'vega-lite';

export interface RateRow {
  rate: number;
  macs: number;
  macRatio: number;
  parameters: number;
  accuracy?: number;
  latencyMs?: number;
}

export interface LayerRow {
  index: number;
  layer: string;
  op: string;
  channels: number;
  union: number;
  sliced: boolean;
  reason?: string;
}

export interface StepRow {
  step: number;
  epoch: number;
  loss: number;
}

export interface EvalRow {
  epoch: number;
  rate: number;
  accuracy: number | null;
  loss: number;
}

export interface Chart {
  /** File name under report/ without .svg. */
  name: string;
  title: string;
  spec: TopLevelSpec;
}

const WIDTH = 420;
const HEIGHT = 260;

function rateLabel(rows: RateRow[]): (RateRow & { label: string; mmacs: number })[] {
  return rows.map((r) => ({ ...r, label: `r=${+r.rate.toFixed(4)}`, mmacs: r.macs / 1e6 }));
}

/** MACs and parameters per rate: always known after compile. */
export function costChart(rows: RateRow[]): Chart {
  return {
    name: 'cost', title: 'MACs per rate',
    spec: {
      $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
      width: WIDTH, height: HEIGHT, data: { values: rateLabel(rows) },
      layer: [
        { mark: { type: 'bar', color: '#4c78a8' }, encoding: {
          x: { field: 'label', type: 'ordinal', sort: null, title: 'slice rate' },
          y: { field: 'mmacs', type: 'quantitative', title: 'MACs per sample (millions)' },
          tooltip: [{ field: 'rate' }, { field: 'macs', format: ',' }, { field: 'parameters', format: ',' }],
        } },
        { mark: { type: 'text', dy: -6 }, encoding: {
          x: { field: 'label', type: 'ordinal', sort: null },
          y: { field: 'mmacs', type: 'quantitative' },
          text: { field: 'macRatio', type: 'quantitative', format: '.0%' },
        } },
      ],
    },
  };
}

const AXES = {
  mmacs: { title: 'MACs per sample (millions)', format: null },
  accuracy: { title: 'top-1 accuracy', format: '.1%' },
  latencyMs: { title: 'latency (ms)', format: null },
} as const;

/**
 * One quantity per rate against another, a line through the rates with each point labelled:
 * accuracy or latency against MACs, and accuracy against latency (what a deadline buys).
 */
export function versusChart(rows: RateRow[], xField: 'mmacs' | 'latencyMs', yField: 'accuracy' | 'latencyMs'): Chart {
  const known = rateLabel(rows).filter((r) => typeof r[xField] === 'number' && typeof r[yField] === 'number');
  const axis = (field: keyof typeof AXES) => ({
    field, type: 'quantitative' as const, title: AXES[field].title, scale: { zero: field === 'mmacs' },
    ...(AXES[field].format ? { axis: { format: AXES[field].format } } : {}),
  });
  const encoding = { x: axis(xField), y: axis(yField) };
  const name = `${yField === 'accuracy' ? 'accuracy' : 'latency'}-vs-${xField === 'mmacs' ? 'macs' : 'latency'}`;
  return {
    name, title: `${AXES[yField].title} vs ${xField === 'mmacs' ? 'MACs' : 'latency'}`,
    spec: {
      $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
      width: WIDTH, height: HEIGHT, data: { values: known },
      layer: [
        { mark: { type: 'line', point: true, color: yField === 'accuracy' ? '#54a24b' : '#e45756' }, encoding },
        { mark: { type: 'text', align: 'left', dx: 6, dy: -6 }, encoding: { ...encoding, text: { field: 'label' } } },
      ],
    },
  };
}

/** Training loss per step (from the JSON-lines log). */
export function lossChart(steps: StepRow[]): Chart {
  return {
    name: 'training-loss', title: 'training loss per step',
    spec: {
      $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
      width: WIDTH, height: HEIGHT, data: { values: steps },
      mark: { type: 'line', color: '#4c78a8' },
      encoding: {
        x: { field: 'step', type: 'quantitative', title: 'step' },
        y: { field: 'loss', type: 'quantitative', title: 'loss (summed over the sampled rates)', scale: { zero: false } },
      },
    },
  };
}

/** Validation accuracy (or loss, when the task has no accuracy) per epoch, one line per rate. */
export function evalChart(evals: EvalRow[]): Chart {
  const accuracy = evals.some((e) => e.accuracy !== null);
  const field = accuracy ? 'accuracy' : 'loss';
  return {
    name: 'training-eval', title: `validation ${field} per epoch`,
    spec: {
      $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
      width: WIDTH, height: HEIGHT, data: { values: evals.map((e) => ({ ...e, rateName: `r=${+e.rate.toFixed(4)}` })) },
      mark: { type: 'line', point: true },
      encoding: {
        x: { field: 'epoch', type: 'quantitative', title: 'epoch', axis: { tickMinStep: 1, format: 'd' } },
        y: { field, type: 'quantitative', title: `validation ${field}`, scale: { zero: false }, ...(accuracy ? { axis: { format: '.1%' } } : {}) },
        color: { field: 'rateName', type: 'nominal', title: 'rate', sort: null },
      },
    },
  };
}

/**
 * The model's layers in graph order, one bar per layer as tall as its channels, coloured by the
 * channel union it belongs to; pinned layers are drawn pale, so what got sliced shows at a glance.
 */
export function layersChart(layers: LayerRow[]): Chart {
  const named = layers.length <= 48;
  const unions = new Set(layers.map((l) => l.union)).size;
  // many unions: the legend goes under the chart in rows, so it neither runs off the page nor
  // outgrows the chart
  const legend = unions > 12 ? { orient: 'bottom' as const, columns: 12, symbolLimit: 0 } : {};
  return {
    name: 'layers', title: 'layers by channel union',
    spec: {
      $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
      width: Math.max(WIDTH, Math.min(960, layers.length * 18)), height: HEIGHT,
      data: { values: layers.map((l) => ({ ...l, state: l.sliced ? 'sliced' : 'pinned', unionName: `u${l.union}`, why: l.reason ?? '' })) },
      mark: { type: 'bar', stroke: '#333', strokeWidth: 0.5 },
      encoding: {
        x: named
          ? { field: 'layer', type: 'ordinal', sort: { field: 'index' }, title: 'layer (graph order)', axis: { labelAngle: -60, labelLimit: 120 } }
          : { field: 'index', type: 'ordinal', title: 'layer (graph order)', axis: { labelOverlap: true } },
        y: { field: 'channels', type: 'quantitative', title: 'output channels' },
        color: { field: 'unionName', type: 'nominal', title: 'union', scale: { scheme: 'category20' }, sort: null, legend },
        opacity: { field: 'state', type: 'ordinal', title: 'slicing', scale: { domain: ['sliced', 'pinned'], range: [1, 0.25] } },
        tooltip: [{ field: 'layer' }, { field: 'op' }, { field: 'channels' }, { field: 'unionName', title: 'union' }, { field: 'state' }, { field: 'why', title: 'why pinned' }],
      },
    },
  };
}

/** One chart as a standalone SVG document. */
export async function renderSvg(chart: Chart): Promise<string> {
  const [vega, vegaLite] = await Promise.all([import('vega'), import('vega-lite')]);
  const compiled = vegaLite.compile({ ...chart.spec, title: chart.title } as TopLevelSpec).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}
