// The package's public compiler API (`import { compile } from 'slicec'`): compiling, reading and
// writing models, printing them, verifying them, and the user-error types every failure uses.
// Only re-exports live here, so the package entry stays a list of what is public.

export { compile, validateOptions, STEPS } from './pipeline.js';
export type { PipelineHooks, StepHook } from './pipeline.js';
export type { CompileOptions, CompileProgress, CompileResult, LayerExplanation, NormalizationResult, RateResult, StepStat } from './pipeline-types.js';
export { MANIFEST_FORMAT } from './artifacts.js';
export type { Manifest, ManifestRate, ManifestUnion, TensorSignature } from './artifacts.js';
export { readModel, writeModel, decodeModel, encodeModel } from './onnx-codec.js';
export type { ReadOptions, WriteOptions } from './onnx-codec.js';
export { printModel } from './printer.js';
export type { PrintOptions, PrintSection } from './printer.js';
export { verifyModel } from './verifier.js';
export type { VerifyOptions } from './verifier.js';
export { ErrorCodes, UserError, isUserError, userError } from './diagnostics.js';
export type { ErrorCode, UserErrorDetails } from './diagnostics.js';
export { Graph, Model, Node, Value } from './ir.js';

// The serving runtime (`import { SlicedModel } from 'slicec'`, also `slicec/runtime`).
export * from '../runtime/index.js';
