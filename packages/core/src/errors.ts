/**
 * FssError: the one error class every fss package throws for operating errors.
 *
 * Shaped like Node's own system errors (`code`, `errno`, `syscall`, `path`) so callers can
 * handle fss errors and `fs` errors with the same code. The message reads
 * `CODE: description, syscall 'path'`. Programmer errors are assertions, not FssErrors.
 */
import { ERRNO, type ErrnoCode, errnoCodeOf, isErrnoCode } from './errno';

export interface FssErrorDetails {
  /** The operation that failed, e.g. `open`, `ioctl(BLKGETSIZE64)`, `FSSIOCSET`. */
  syscall?: string;
  /** The path the operation was about. */
  path?: string;
  /** The error that caused this one. */
  cause?: unknown;
}

export class FssError extends Error {
  override readonly name = 'FssError';
  readonly code: ErrnoCode;
  readonly errno: number;
  readonly syscall: string | undefined;
  readonly path: string | undefined;
  /** What went wrong, without the code/syscall/path decoration of `message`. */
  readonly description: string;

  constructor(code: ErrnoCode, description?: string, details: FssErrorDetails = {}) {
    const text = description ?? ERRNO[code].text;
    super(
      formatMessage(code, text, details),
      details.cause === undefined ? undefined : { cause: details.cause },
    );
    this.code = code;
    this.errno = ERRNO[code].errno;
    this.syscall = details.syscall;
    this.path = details.path;
    this.description = text;
  }
}

function formatMessage(code: ErrnoCode, description: string, details: FssErrorDetails): string {
  let message = `${code}: ${description}`;
  if (details.syscall !== undefined) message += `, ${details.syscall}`;
  if (details.path !== undefined) message += ` '${details.path}'`;
  return message;
}

/** True for an FssError, optionally of one code. */
export function isFssError(error: unknown, code?: ErrnoCode): error is FssError {
  return error instanceof FssError && (code === undefined || error.code === code);
}

/**
 * Turns anything thrown by Node or a dependency into an FssError, keeping its errno code when
 * it has one we know (Node's `fs` errors carry `code: 'ENOSPC'` etc.), else EIO.
 */
export function toFssError(error: unknown, details: FssErrorDetails = {}): FssError {
  if (error instanceof FssError) return error;
  const nodeError = error as { code?: unknown; errno?: unknown; syscall?: unknown; path?: unknown };
  let code: ErrnoCode = 'EIO';
  if (isErrnoCode(nodeError?.code)) code = nodeError.code;
  else if (nodeError?.code === 'ENOTSUP') code = 'EOPNOTSUPP';
  else if (typeof nodeError?.errno === 'number') code = errnoCodeOf(Math.abs(nodeError.errno)) ?? 'EIO';
  const syscall = details.syscall ?? (typeof nodeError?.syscall === 'string' ? nodeError.syscall : undefined);
  const path = details.path ?? (typeof nodeError?.path === 'string' ? nodeError.path : undefined);
  const description = error instanceof Error ? stripNodePrefix(error.message) : String(error);
  return new FssError(code, description, { syscall, path, cause: error });
}

/** Node formats `ENOSPC: no space left on device, write`; keep only the description part. */
function stripNodePrefix(message: string): string {
  const match = /^[A-Z0-9]+: (.*?)(?:, \w+(?: '.*')?)?$/.exec(message);
  return match?.[1] ?? message;
}
