import { type FssError, strerror } from '@fss/core';

/** Where a command writes, so tests can run commands in-process and capture both streams. */
export interface CommandIo {
  out(line: string): void;
  err(line: string): void;
  /** Whether out() reaches a terminal (fss status --watch redraws there). */
  isTTY?: boolean;
  /** Writes to stdout without a newline (a progress line redrawn with `\r`). */
  write?(text: string): void;
  /**
   * The raw streams, for commands that copy data (`fss dump fssN -`) or draw a progress bar;
   * absent in-process, where those commands write no data to stdout and show no bar.
   */
  streams?: ProcessStreams;
}

export interface ProcessStreams {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
  readonly stderrIsTTY: boolean;
  /** True in a program: a copy command handles SIGINT/SIGTERM (removes its partial file). */
  readonly handleSignals: boolean;
}

/**
 * The process's own streams, for the programs (bin/). A reader that goes away
 * (`fssconfig -l | head -1`) is not an error worth a stack trace; the handler is installed
 * when a program asks for these streams, never when the package is imported.
 */
export function processIo(): CommandIo {
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  });
  return {
    out: (line) => process.stdout.write(`${line}\n`),
    err: (line) => process.stderr.write(`${line}\n`),
    isTTY: process.stdout.isTTY === true,
    write: (text) => process.stdout.write(text),
    streams: {
      stdout: process.stdout,
      stderr: process.stderr,
      stderrIsTTY: process.stderr.isTTY === true,
      handleSignals: true,
    },
  };
}

/** A command's exit status; thrown to stop it where err(3)/errx(3) would exit. */
export class Exit extends Error {
  constructor(readonly status: number) {
    super(`exit ${status}`);
  }
}

/**
 * fssd's detail line for an error, when it says more than strerror does (Node's texts are
 * strerror in lower case, so the comparison ignores case); undefined when it does not.
 */
export function errorDetail(error: FssError): string | undefined {
  const plain = strerror(error.code);
  return error.description.toLowerCase() === plain.toLowerCase() ? undefined : error.description;
}
