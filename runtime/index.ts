// The package's runtime entry (`import { runFloat } from 'slicec/runtime'`): a plain list of the
// runtime modules whose API is public.

export * from './session.js';
