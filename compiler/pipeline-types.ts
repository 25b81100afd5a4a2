// Options and results of `compile()`, shared by the pipeline, the CLI and tests.

export interface CompileOptions {
  /** Path of the input .onnx model. */
  model: string;
  /** Number of ordered channel groups per sliced layer. */
  groups: number;
  /** Slice rates in (0, 1]; default every k/groups. */
  rates?: number[];
  /** Output directory; default `<model without .onnx>.sliced/`. */
  outDir?: string;
  /** Round kept channel counts to multiples of this where possible (1 = off). */
  roundTo?: number;
  /** Step names (or 'all') to print the model before / after. */
  printBefore?: string[];
  printAfter?: string[];
  /** Where printed dumps and stats go (default stderr). */
  log?: (text: string) => void;
  /** Collect per-step timings and counters. */
  stats?: boolean;
}

export interface LayerExplanation {
  /** Node name (or op + output name when the node has none). */
  layer: string;
  op: string;
  /** Output channels of the layer. */
  channels: number;
  sliced: boolean;
  /** Union the layer's outputs belong to. */
  union: number;
  /** Why not, when not sliced. */
  reason?: string;
}

export interface RateResult {
  rate: number;
  activeGroups: number;
  file: string;
  parameters: number;
  macs: number;
}

export interface StepStat {
  step: string;
  ms: number;
  nodes: number;
}

export interface CompileResult {
  outDir: string;
  manifestFile: string;
  rates: RateResult[];
  layers: LayerExplanation[];
  stats: StepStat[];
}
