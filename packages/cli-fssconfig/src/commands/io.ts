/** Where a command writes, so tests can run commands in-process and capture both streams. */
export interface CommandIo {
  out(line: string): void;
  err(line: string): void;
}

// A reader that goes away (`fssconfig -l | head -1`) is not an error worth a stack trace.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(process.exitCode ?? 0);
});

export const processIo: CommandIo = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
};

/** A command's exit status; thrown to stop it where err(3)/errx(3) would exit. */
export class Exit extends Error {
  constructor(readonly status: number) {
    super(`exit ${status}`);
  }
}
