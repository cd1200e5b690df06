/**
 * The daemon's log: every line goes to `$FSS_RUNDIR/fssd.log` and to stderr, stamped with
 * the time and pid. When stderr goes away (the client that started us stopped listening),
 * writing to it stops; the file keeps everything.
 */
import { appendFileSync } from 'node:fs';

export type Log = (line: string) => void;

export function createLog(file: string | undefined, toStderr = true): Log {
  let stderrOpen = toStderr;
  process.stderr.on('error', () => {
    stderrOpen = false;
  });
  return (line: string) => {
    const stamped = `${new Date().toISOString()} fssd[${process.pid}]: ${line}\n`;
    if (file !== undefined) {
      try {
        appendFileSync(file, stamped, { mode: 0o600 });
      } catch {
        // A full or vanished run directory must not take the daemon down with it.
      }
    }
    if (stderrOpen && !process.stderr.destroyed) {
      try {
        process.stderr.write(stamped);
      } catch {
        stderrOpen = false;
      }
    }
  };
}
