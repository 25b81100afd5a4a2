// Statistics and the SVG plot of bench/load.ts. Per phase: SLO attainment (shed, timeout and
// error count as misses), goodput (on-time answers per second), latency percentiles of the
// answers, mean served rate, and effective accuracy (an answer counts with its rate's accuracy
// when on time, as wrong when late or missing).

import type { GenResult } from './load-gen.js';

export interface Phase {
  name: string;
  startMs: number;
  endMs: number;
}

export interface PhaseStats {
  phase: string;
  requests: number;
  attainment: number;
  goodput: number;
  p50: number;
  p99: number;
  p999: number;
  meanRate: number;
  /** Share of the answers served at the largest rate. */
  fullShare: number;
  effectiveAccuracy: number;
  sheds: number;
  timeouts: number;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

export function phaseStats(arrivals: number[], result: GenResult, phases: Phase[], sloMs: number, accuracy: Map<number, number>): PhaseStats[] {
  return phases.map((phase) => {
    const latencies: number[] = [];
    let requests = 0;
    let onTime = 0;
    let rateSum = 0;
    let answered = 0;
    let accuracySum = 0;
    let full = 0;
    const fullRate = Math.max(...accuracy.keys());
    let sheds = 0;
    let timeouts = 0;
    for (let i = 0; i < arrivals.length; i++) {
      const t = arrivals[i]!;
      if (t < phase.startMs || t >= phase.endMs) continue;
      requests++;
      const status = result.status[i]!;
      if (status === 0) timeouts++;
      if (status === 503) sheds++;
      if (status !== 200) continue;
      const latency = result.latency[i]!;
      latencies.push(latency);
      answered++;
      rateSum += result.rate[i]!;
      if (result.rate[i] === fullRate) full++;
      if (latency <= sloMs) {
        onTime++;
        accuracySum += accuracy.get(result.rate[i]!) ?? 0;
      }
    }
    latencies.sort((a, b) => a - b);
    return {
      phase: phase.name,
      requests,
      attainment: requests ? onTime / requests : Number.NaN,
      goodput: onTime / ((phase.endMs - phase.startMs) / 1000),
      p50: percentile(latencies, 0.5),
      p99: percentile(latencies, 0.99),
      p999: percentile(latencies, 0.999),
      meanRate: answered ? rateSum / answered : Number.NaN,
      fullShare: answered ? full / answered : Number.NaN,
      effectiveAccuracy: requests ? accuracySum / requests : Number.NaN,
      sheds,
      timeouts,
    };
  });
}

export interface Series {
  label: string;
  color: string;
  arrivals: number[];
  result: GenResult;
}

/** Two panels over time: p99 latency per bin (log scale, misses drawn at the top) and mean served rate. */
export function plotSvg(title: string, series: Series[], durationMs: number, sloMs: number, phases: Phase[], binMs = 250): string {
  const width = 900;
  const panel = 220;
  const left = 60;
  const plotW = width - left - 20;
  const bins = Math.ceil(durationMs / binMs);
  const x = (ms: number): number => left + (ms / durationMs) * plotW;
  const maxLatency = 2000;
  const yLat = (ms: number): number => 30 + panel - (Math.log10(Math.min(Math.max(ms, 0.1), maxLatency) / 0.1) / Math.log10(maxLatency / 0.1)) * panel;
  const yRate = (r: number): number => 60 + 2 * panel - r * (panel - 20);
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${2 * panel + 110}" font-family="sans-serif" font-size="11">`,
    `<text x="${left}" y="16" font-size="13">${title}</text>`,
  ];
  for (const p of phases) parts.push(`<line x1="${x(p.startMs)}" x2="${x(p.startMs)}" y1="30" y2="${60 + 2 * panel}" stroke="#ddd"/><text x="${x(p.startMs) + 3}" y="42" fill="#999">${p.name}</text>`);
  for (const ms of [1, 10, 100, 1000]) parts.push(`<line x1="${left}" x2="${left + plotW}" y1="${yLat(ms)}" y2="${yLat(ms)}" stroke="#eee"/><text x="${left - 5}" y="${yLat(ms) + 4}" text-anchor="end">${ms} ms</text>`);
  parts.push(`<line x1="${left}" x2="${left + plotW}" y1="${yLat(sloMs)}" y2="${yLat(sloMs)}" stroke="#c00" stroke-dasharray="4 3"/><text x="${left + plotW}" y="${yLat(sloMs) - 3}" text-anchor="end" fill="#c00">SLO ${sloMs} ms</text>`);
  for (const r of [0, 0.25, 0.5, 0.75, 1]) parts.push(`<line x1="${left}" x2="${left + plotW}" y1="${yRate(r)}" y2="${yRate(r)}" stroke="#eee"/><text x="${left - 5}" y="${yRate(r) + 4}" text-anchor="end">${r}</text>`);
  parts.push(`<text x="12" y="${30 + panel / 2}" transform="rotate(-90 12 ${30 + panel / 2})">p99 latency per ${binMs} ms</text>`);
  parts.push(`<text x="12" y="${60 + 1.5 * panel}" transform="rotate(-90 12 ${60 + 1.5 * panel})">mean served rate</text>`);
  series.forEach((s, k) => {
    const lat: string[] = [];
    const rate: string[] = [];
    for (let b = 0; b < bins; b++) {
      const values: number[] = [];
      let rateSum = 0;
      let answered = 0;
      for (let i = 0; i < s.arrivals.length; i++) {
        const t = s.arrivals[i]!;
        if (t < b * binMs || t >= (b + 1) * binMs) continue;
        values.push(s.result.status[i] === 200 ? s.result.latency[i]! : maxLatency);
        if (s.result.status[i] === 200) {
          rateSum += s.result.rate[i]!;
          answered++;
        }
      }
      if (values.length === 0) continue;
      values.sort((a, c) => a - c);
      const mid = x((b + 0.5) * binMs);
      lat.push(`${mid.toFixed(1)},${yLat(percentile(values, 0.99)).toFixed(1)}`);
      if (answered) rate.push(`${mid.toFixed(1)},${yRate(rateSum / answered).toFixed(1)}`);
    }
    parts.push(`<polyline fill="none" stroke="${s.color}" stroke-width="1.5" points="${lat.join(' ')}"/>`);
    parts.push(`<polyline fill="none" stroke="${s.color}" stroke-width="1.5" points="${rate.join(' ')}"/>`);
    parts.push(`<text x="${left + 10 + k * 170}" y="${2 * panel + 95}" fill="${s.color}">■ ${s.label}</text>`);
  });
  parts.push(`<text x="${left + plotW / 2}" y="${2 * panel + 78}" text-anchor="middle">time (s), ${(durationMs / 1000).toFixed(0)} s trace</text>`, '</svg>');
  return parts.join('\n');
}
