/**
 * fssconfig's option parsing: POSIX getopt over the option string "cluvx".
 *
 * Like getopt(3): options come first and may be grouped (`-cxv`), `--` ends them, and the
 * first argument that does not start with `-` (or is just `-`) ends them too; there is no
 * permutation. `-v` and `-x` count. `-c`, `-l` and `-u` are mutually exclusive: a second
 * one of them (even the same one again) is a usage error, as in fssconfig.c v1.13. With no
 * action option the action is configure.
 *
 * Linux additions, for configure only, among the options: `--on-full POLICY` (or
 * `--on-full=POLICY`) and `--on-full-timeout SECONDS`, the unit's store-full policy. Their
 * values are checked by the configure command (with messages naming them); here only that
 * a value is there. Any other argument starting with `--` is getopt's unknown option `-`.
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
  /** `--on-full`'s value as typed (Linux addition). */
  onFull?: string;
  /** `--on-full-timeout`'s value as typed (Linux addition). */
  onFullTimeout?: string;
}

const LONG_OPTIONS = { '--on-full': 'onFull', '--on-full-timeout': 'onFullTimeout' } as const;
type LongOption = keyof typeof LONG_OPTIONS;

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
  const long: { onFull?: string; onFullTimeout?: string } = {};
  for (; index < argv.length; index += 1) {
    const arg = argv[index] as string;
    if (arg === '--') {
      index += 1;
      break;
    }
    if (!arg.startsWith('-') || arg === '-') break;
    const equals = arg.indexOf('=');
    const name = (equals === -1 ? arg : arg.slice(0, equals)) as LongOption;
    if (Object.hasOwn(LONG_OPTIONS, name)) {
      const value = equals === -1 ? argv[++index] : arg.slice(equals + 1);
      if (value === undefined)
        return { ok: false, message: `option requires an argument -- ${name.slice(2)}` };
      long[LONG_OPTIONS[name]] = value;
      continue;
    }
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
  // The store-full policy is chosen when a unit is configured, and only then.
  if (resolved !== 'configure' && Object.keys(long).length > 0) return { ok: false };
  if (resolved === 'unconfigure' && operands.length !== 1) return { ok: false };
  if (resolved === 'list' && operands.length > 1) return { ok: false };
  if (resolved === 'configure' && operands.length < 3) return { ok: false };
  return { ok: true, options: { action: resolved, verbose, unlink, operands, ...long } };
}
