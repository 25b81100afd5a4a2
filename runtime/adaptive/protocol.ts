// Names of the control feed and the extra outputs an exit worker exchanges with the main thread
// (see exit-worker.ts), in a module of their own: the worker module runs only as a thread.

/** Per-row mode of a request: 0 plain, 1 exits, 2 collect (to the end, no head consulted). */
export const MODE_FEED = 'slicec:mode';
/** Per row: the exit that answered, −1 the final output. */
export const EXIT_OUTPUT = 'slicec:exit';
/** Per row: MACs the run spent. */
export const MACS_OUTPUT = 'slicec:macs';
/** Per row: 1 when no head could have answered it (its sample may be held back). */
export const UNBIASED_OUTPUT = 'slicec:unbiased';
/** The final logits, when the run reached the end. */
export const TEACHER_OUTPUT = 'slicec:teacher';

/** Exit k's activation, when the run reached the end. */
export function activationOutput(exit: number): string {
  return `slicec:activation-${exit}`;
}
