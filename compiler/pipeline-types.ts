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
   * Normalization: 'bn' (default, unless the model has layer norms) keeps BatchNorms per
   * channel, inserts one (the identity at first) after every sliced layer that has none, and
   * gives every BatchNorm statistics per rate (switchable BatchNorm); 'gn' (default for models
   * with layer norms) group norms aligned with slice groups; 'keep' leaves norms as they are
   * (BatchNorm statistics per rate); 'none' folds BatchNorms into the layers before them and
   * inserts nothing.
   */
  norm?: NormMode;
  /**
   * How channels are ordered: 'weight' (L1 of the weights cut with each union) or 'activation'
   * (mean |activation| on calibration data × L1 of the outgoing weights). Default 'activation'
   * when `calibration` is given, else 'weight'.
   */
  importance?: ImportanceMode;
  /** Calibration batch for group-norm initialization (TensorProto .pb file or folder); synthetic when absent. */
  calibration?: string;
  /**
   * Calibration data from a dataset instead (a `--data` spec as finetune takes it: fashion-mnist,
   * mnist, an .npz, a folder of images): `calibrationSamples` training examples, evenly spaced.
   */
  data?: string;
  /** How many examples `data` gives (default 512). */
  calibrationSamples?: number;
  /**
   * Fit group-norm scales to the original model (default true). Off leaves γ = 1, β = 0 (or the
   * replaced layer norm's own), e.g. for golden dumps that must not depend on float rounding.
   */
  calibrate?: boolean;
  /** Write the typed module (model.ts, model.js, model.d.ts) into the output (default true). */
  codegen?: boolean;
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
  /**
   * Early exits: 'auto' chooses them (passes/add-exits.ts), or the layers named (node names,
   * value names or module paths); absent: none. Writes exits/rate-R/segment-K.onnx and head-K.onnx.
   */
  exits?: 'auto' | string[];
  /** Told when each step starts and finishes (and per rate for per-rate steps), for progress bars. */
  progress?: (p: CompileProgress) => void;
}

/** `done` of `total` units of a step: rates for the per-rate step, 1 for the others. */
export interface CompileProgress {
  step: string;
  done: number;
  total: number;
}

export type NormMode = 'gn' | 'keep' | 'none' | 'bn';
/** Where calibration inputs came from: --calibration, --data, or seeded N(0, 1). */
export type CalibrationSource = 'file' | 'data' | 'synthetic';

export type ImportanceMode = 'activation' | 'weight' | 'none';

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

/** Why a place where the model can be cut was or was not made an exit. */
export interface ExitExplanation {
  layer: string;
  value: string;
  kind: 'residual' | 'pooling' | 'inside';
  /** Activation values per sample. */
  activation: number;
  /** Share of the model's MACs before it. */
  macsBefore: number;
  chosen: boolean;
  reason: string;
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
  mode: NormMode;
  /** Group norms by kind (batchnorm, layernorm, inserted); with 'bn', BatchNorms kept and inserted. */
  sites: Record<string, number>;
  skipped: { where: string; why: string }[];
  calibration: {
    source: CalibrationSource;
    batch: number;
    before: { relativeError: number; top1: number | null };
    after: { relativeError: number; top1: number | null };
  } | null;
  /**
   * 'bn' only: BatchNorm running statistics are per rate. The full model (and the rate-1 graph)
   * holds the full statistics and every per-rate graph their cut (the parameter map, role
   * 'running-stat'); a trainer keeps one set per rate and recalibrates each. elastic.onnx holds
   * each statistic stacked per active group count, [G, C], and reads row activeGroups − 1
   * (cut to the kept channels as the parameter map says); at compile time every row is the full
   * statistics.
   */
  perRateStats?: boolean;
  /** 'bn' only: every BatchNorm, by initializer names. */
  batchNorms?: BatchNormEntry[];
}

export interface BatchNormEntry {
  /** The node (a model's own BatchNorm, or one inserted after the layer named). */
  where: string;
  kind: 'batchnorm' | 'inserted';
  scale: string;
  bias: string;
  mean: string;
  variance: string;
  epsilon: number;
  /** Names of the stacked [G, C] statistics in elastic.onnx. */
  elastic: { mean: string; variance: string };
}

export interface ImportanceResult {
  mode: ImportanceMode;
  /** 'activation' only: where the data came from and how many samples. */
  source?: CalibrationSource;
  batch?: number;
  /** 'activation' only: unions ordered by activations (the others by weights: no layer reads them). */
  unions?: number;
}

export interface CompileResult {
  outDir: string;
  normalization: NormalizationResult;
  importance: ImportanceResult;
  elasticFile: string;
  manifestFile: string;
  rates: RateResult[];
  layers: LayerExplanation[];
  /** With --exits: every cut considered. */
  exits?: ExitExplanation[];
  stats: StepStat[];
}
