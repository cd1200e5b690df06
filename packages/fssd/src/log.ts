/**
 * The daemon's log: every line goes to `$FSS_RUNDIR/fssd.log` and to stderr. One call is one
 * event and one line: newlines inside it (a stack trace) are folded into ` | `, so a reader
 * of the log, or journald, never sees half an event.
 *
 * In the file, and on stderr by default, a line is stamped with the time and pid. Under a
 * service manager (`fssd --foreground`) stderr lines carry no stamp, since journald (or the
 * supervisor) stamps them itself; when stderr is the journal (systemd sets JOURNAL_STREAM to
 * its device and inode) each line starts with an sd-daemon(3) priority: <3> errors, <4>
 * warnings (invalid snapshots, writes outside fss), <6> everything else.
 *
 * When stderr goes away (the client that started us stopped listening), writing to it stops;
 * the file keeps everything.
 */
import { appendFileSync, fstatSync } from 'node:fs';

export type Log = (line: string) => void;

/** How stderr lines look: stamped (default), bare (--foreground), or bare with priorities (the journal). */
export type StderrStyle = 'stamped' | 'bare' | 'journal';

export function createLog(file: string | undefined, toStderr = true, style: StderrStyle = 'stamped'): Log {
  let stderrOpen = toStderr;
  process.stderr.on('error', () => {
    stderrOpen = false;
  });
  return (text: string) => {
    const line = oneLine(text);
    const stamped = `${new Date().toISOString()} fssd[${process.pid}]: ${line}\n`;
    if (file !== undefined) {
      try {
        appendFileSync(file, stamped, { mode: 0o600 });
      } catch {
        // A full or vanished run directory must not take the daemon down with it.
      }
    }
    if (stderrOpen && !process.stderr.destroyed) {
      const shown =
        style === 'stamped' ? stamped : style === 'bare' ? `${line}\n` : `<${priorityOf(line)}>${line}\n`;
      try {
        process.stderr.write(shown);
      } catch {
        stderrOpen = false;
      }
    }
  };
}

/** One event, one line. */
export function oneLine(text: string): string {
  return text.replace(/\s*\r?\n\s*/g, ' | ').trimEnd();
}

/** The syslog priority of a log line, by what it reports. */
export function priorityOf(line: string): 3 | 4 | 6 {
  if (/uncaught|unhandled|cannot start|failed|stopping failed/i.test(line)) return 3;
  if (/invalid|outside fss|not reattached|refus/i.test(line)) return 4;
  return 6;
}

/**
 * The stderr style for `--foreground`: `journal` when JOURNAL_STREAM names stderr's own
 * device and inode (systemd's contract), else `bare`.
 */
export function foregroundStyle(env: NodeJS.ProcessEnv = process.env): StderrStyle {
  const stream = env['JOURNAL_STREAM'];
  if (stream === undefined) return 'bare';
  try {
    const stats = fstatSync(2);
    return stream === `${stats.dev}:${stats.ino}` ? 'journal' : 'bare';
  } catch {
    return 'bare';
  }
}
