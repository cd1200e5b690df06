/**
 * fssconfig's option parsing: POSIX getopt over the option string "cluvx".
 *
 * Like getopt(3): options come first and may be grouped (`-cxv`), `--` ends them, and the
 * first argument that does not start with `-` (or is just `-`) ends them too; there is no
 * permutation. `-v` and `-x` count. `-c`, `-l` and `-u` are mutually exclusive: a second
 * one of them (even the same one again) is a usage error, as in fssconfig.c v1.13. With no
 * action option the action is configure.
 *
 * The argument-count rules differ per action and, for configure, are checked at different
 * points of the algorithm (NetBSD stats `path` before it counts the optional numbers), so
 * they live with the commands, except the ones that only depend on the options.
 */
export type FssconfigAction = 'configure' | 'unconfigure' | 'list';

export interface FssconfigOptions {
  action: FssconfigAction;
  verbose: number;
  unlink: number;
  operands: string[];
}

export type ParseResult =
  | { ok: true; options: FssconfigOptions }
  /** `message` is getopt's own complaint, printed before the usage text. */
  | { ok: false; message?: string };

const ACTION_OF: Readonly<Record<string, FssconfigAction>> = {
  c: 'configure',
  l: 'list',
  u: 'unconfigure',
};

export function parseFssconfigArgs(argv: readonly string[]): ParseResult {
  let action: FssconfigAction | undefined;
  let verbose = 0;
  let unlink = 0;
  let index = 0;
  for (; index < argv.length; index += 1) {
    const arg = argv[index] as string;
    if (arg === '--') {
      index += 1;
      break;
    }
    if (!arg.startsWith('-') || arg === '-') break;
    for (const letter of arg.slice(1)) {
      const chosen = ACTION_OF[letter];
      if (chosen !== undefined) {
        if (action !== undefined) return { ok: false };
        action = chosen;
      } else if (letter === 'v') {
        verbose += 1;
      } else if (letter === 'x') {
        unlink += 1;
      } else {
        return { ok: false, message: `unknown option -- ${letter}` };
      }
    }
  }
  const resolved = action ?? 'configure';
  const operands = argv.slice(index);
  // -x means "unlink the backup once configured": meaningless for -u and -l.
  if (resolved !== 'configure' && unlink > 0) return { ok: false };
  if (resolved === 'unconfigure' && operands.length !== 1) return { ok: false };
  if (resolved === 'list' && operands.length > 1) return { ok: false };
  if (resolved === 'configure' && operands.length < 3) return { ok: false };
  return { ok: true, options: { action: resolved, verbose, unlink, operands } };
}
