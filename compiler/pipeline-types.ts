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
  /**
   * Normalization: 'gn' (default) group norms aligned with slice groups; 'keep' leaves norms as
   * they are; 'none' folds BatchNorms into the layers before them and inserts nothing.
   */
  norm?: 'gn' | 'keep' | 'none';
  /** Calibration batch for group-norm initialization (TensorProto .pb file or folder); synthetic when absent. */
  calibration?: string;
  /**
   * Fit group-norm scales to the original model (default true). Off leaves γ = 1, β = 0 (or the
   * replaced layer norm's own), e.g. for golden dumps that must not depend on float rounding.
   */
  calibrate?: boolean;
  /**
   * Form of elastic.onnx: 'fast' an If tree over the per-rate graphs on one shared copy of the
   * weights (per-rate latency, more session memory); 'lean' weights cut by run-time Slices
   * (least memory, slower). Default 'fast'.
   */
  elastic?: 'fast' | 'lean';
  /** Step names (or 'all') to print the model before / after. */
  printBefore?: string[];
  printAfter?: string[];
  /** Where printed dumps and stats go (default stderr). */
  log?: (text: string) => void;
  /** Where notes go (merged rates, ...), one line per call (default stderr). */
  warn?: (text: string) => void;
  /** Collect per-step timings and counters. */
  stats?: boolean;
  /** Told when each step starts and finishes (and per rate for per-rate steps), for progress bars. */
  progress?: (p: CompileProgress) => void;
}

/** `done` of `total` units of a step: rates for the per-rate step, 1 for the others. */
export interface CompileProgress {
  step: string;
  done: number;
  total: number;
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

export interface NormalizationResult {
  mode: 'gn' | 'keep' | 'none';
  /** Group norms by kind (batchnorm, layernorm, inserted). */
  sites: Record<string, number>;
  skipped: { where: string; why: string }[];
  calibration: {
    source: 'file' | 'synthetic';
    batch: number;
    before: { relativeError: number; top1: number | null };
    after: { relativeError: number; top1: number | null };
  } | null;
}

export interface CompileResult {
  outDir: string;
  normalization: NormalizationResult;
  elasticFile: string;
  manifestFile: string;
  rates: RateResult[];
  layers: LayerExplanation[];
  stats: StepStat[];
}
