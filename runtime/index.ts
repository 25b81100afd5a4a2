// The package's library entry (`import { SlicedModel } from 'slicec'`): the serving runtime and
// what it is built from. The compiler is reached through the CLI.

export { SlicedModel, ShedError, type LoadOptions, type InferOptions, type InferResult, type ServeMode } from './sliced-model.js';
export { V2Server, type ServerOptions } from './server/http.js';
export { connectUpstream, type UpstreamOptions } from './server/router.js';
export { chooseRate, rankAccuracy, type RateOption, type PolicyRequest, type PolicyLoad, type Decision } from './policy.js';
export { LatencyProfile, fitLine, type LatencySample, type LinearFit } from './profile.js';
export { Session, warnOnce, runFloat, openFloatSession, type Device, type SessionOptions, type FloatSession, type Feeds } from './session.js';
export { readServedManifest, rateModelName, type ServedManifest, type ServedRate, type ServedTensor } from './manifest.js';
export type { NdArray, DType, TypedArray } from './ndarray.js';
export { exportTriton, type TritonExportOptions } from '../compiler/export-triton.js';
export { calibrateCascade, calibrateSelective, evaluateCascade, type CascadeStage, type CascadeCalibration, type SelectiveStage, type SelectiveThreshold } from './cascade.js';
export { exitSettings, type ExitOptions, type ExitServing } from './adaptive/exits.js';
export { ReplayBuffer, type CacheSample, type BufferOptions } from './adaptive/buffer.js';
export type { HeadState } from './adaptive/heads.js';
export type { ManifestCascade } from './adaptive/cascade-spec.js';
