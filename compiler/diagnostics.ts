// Every message slicec shows a user is built here. A user error carries a stable code, what was
// expected, what was found and a hint; the CLI prints it without a stack and exits 1. Anything
// else that escapes is an internal error: the CLI prints the stack and asks for a bug report.

export const ErrorCodes = {
  /** The file could not be opened or read. */
  FILE_NOT_FOUND: 'SLC001',
  /** The bytes are not a valid ONNX protobuf message. */
  BAD_PROTOBUF: 'SLC002',
  /** The model is structurally invalid (missing value, cycle, duplicate producer ...). */
  BAD_GRAPH: 'SLC003',
  /** A tensor's data does not match its type and dims. */
  BAD_TENSOR: 'SLC004',
  /** An external data reference is unsafe or points outside its file. */
  BAD_EXTERNAL_DATA: 'SLC005',
  /** A node breaks its op's signature (arity, attributes, types). */
  BAD_NODE: 'SLC006',
  /** A command-line flag has a value slicec cannot use. */
  BAD_FLAG: 'SLC007',
  /** The output location cannot be used. */
  BAD_OUTPUT: 'SLC008',
  /** The model uses something slicec cannot handle here. */
  UNSUPPORTED: 'SLC009',
  /** An input file other than the model (calibration data, ...) is not usable. */
  BAD_INPUT_FILE: 'SLC010',
  /** The output folder cannot be written (read-only, under a file, a virtual filesystem). */
  OUTPUT_NOT_WRITABLE: 'SLC011',
  /** The model's opset imports are missing, unreleased, or lack a domain its nodes use. */
  BAD_OPSET: 'SLC012',
  /** A default-domain op that ONNX does not define (at the model's opset). */
  UNKNOWN_OP: 'SLC013',
  /** A step must run the model in onnxruntime, which cannot run one of its ops. */
  CANNOT_RUN: 'SLC014',
  /** An earlier output folder holds files slicec did not write. */
  OUTPUT_HAS_USER_FILES: 'SLC015',
  /** Calibration or training data holds NaN or infinite values. */
  NON_FINITE_DATA: 'SLC016',
  /** An inference request does not fit the model (input names, dtypes, shapes, rate, options). */
  BAD_REQUEST: 'SLC017',
  /** Training diverged: a step's loss is NaN or infinite. */
  DIVERGED: 'SLC018',
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

export interface UserErrorDetails {
  expected?: string;
  found?: string;
  hint?: string;
}

export class UserError extends Error {
  readonly code: ErrorCode;
  readonly details: UserErrorDetails;

  constructor(code: ErrorCode, message: string, details: UserErrorDetails = {}) {
    super(message);
    this.name = 'UserError';
    this.code = code;
    this.details = details;
  }

  /** The one block of text a user sees. */
  format(): string {
    const lines = [`error ${this.code}: ${this.message}`];
    if (this.details.expected) lines.push(`  expected: ${this.details.expected}`);
    if (this.details.found) lines.push(`  found:    ${this.details.found}`);
    if (this.details.hint) lines.push(`  hint:     ${this.details.hint}`);
    return lines.join('\n');
  }

  toJSON(): Record<string, unknown> {
    return { error: { code: this.code, message: this.message, ...this.details } };
  }
}

export function userError(code: ErrorCode, message: string, details: UserErrorDetails = {}): UserError {
  return new UserError(code, message, details);
}

export function isUserError(e: unknown): e is UserError {
  return e instanceof UserError;
}

/** Wraps an error with the pipeline step that raised it, keeping user errors user errors. */
export function withStep(step: string, e: unknown): Error {
  if (e instanceof UserError) {
    return new UserError(e.code, `${step}: ${e.message}`, e.details);
  }
  const err = e instanceof Error ? e : new Error(String(e));
  err.message = `in step ${step}: ${err.message}`;
  return err;
}

export function formatInternalError(e: unknown): string {
  const stack = e instanceof Error ? (e.stack ?? e.message) : String(e);
  return (
    `internal error: slicec hit a bug. Please report it with the command line and the model.\n` +
    stack
  );
}

/**
 * A file system error while writing `file` as the user error it is (a full disk, no permission,
 * a read-only file system), or null for anything else, which stays an internal error.
 */
export function writeFailure(file: string, e: unknown): UserError | null {
  const code = (e as NodeJS.ErrnoException | null)?.code;
  if (!code || !['ENOSPC', 'EDQUOT', 'EACCES', 'EPERM', 'EROFS'].includes(code)) return null;
  const full = code === 'ENOSPC' || code === 'EDQUOT';
  return userError(ErrorCodes.OUTPUT_NOT_WRITABLE, `cannot write ${file}`, {
    expected: full ? 'room for it on its file system' : 'a writable folder',
    found: (e as Error).message,
    hint: full ? 'free some space there and run again' : "check the folder's permissions",
  });
}
