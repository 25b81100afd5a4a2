// The names of compile()'s steps in the order it runs them, as --print-before/--print-after and
// the golden dumps name them. Kept apart from the pipeline so the CLI can check flags (and print
// help) without loading the passes. Steps that run once per rate print as `step@0.500`.

export const STEPS = [
  'read', 'infer-shapes', 'fold-constants', 'couple-channels', 'partition-channels', 'reorder-channels', 'fold-batch-norm', 'insert-group-norm',
  'calibrate-group-norm', 'insert-batch-norm', 'calibrate-batch-norm', 'add-exits', 'prune-to-rate', 'upgrade-opset', 'make-elastic',
] as const;

export type StepName = (typeof STEPS)[number];

/** True for a step name as the stepper prints it: `prune-to-rate` or `prune-to-rate@0.500`. */
export function isStepName(name: string): boolean {
  const at = name.indexOf('@');
  const base = at < 0 ? name : name.slice(0, at);
  if (!(STEPS as readonly string[]).includes(base)) return false;
  return at < 0 || /^\d+(\.\d+)?$/.test(name.slice(at + 1));
}
