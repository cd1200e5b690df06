/**
 * A program's manual as data. One `Manual` per program is the single source of its usage
 * lines (bad usage), its `--help` texts (the program's, a command group's, a command's) and
 * its man page: help.ts and roff.ts only render it. A command is one `CommandHelp` entry;
 * adding one to a program's manual adds it to all three.
 *
 * Text conventions, the same for every renderer: a paragraph is one string (renderers wrap
 * it); `code` blocks are kept line by line (examples); in synopses, UPPERCASE words are
 * operands (italic in the man page) and words starting with `-` are flags (bold).
 */

/** A paragraph, a block of literal lines, or a list of terms with their descriptions. */
export type Block = string | { code: readonly string[] } | { items: readonly Item[] };

export interface Item {
  term: string;
  text: string;
}

export interface OptionHelp {
  /** The option as written, with its argument: `--rundir DIR`, `-v`, `-c, --check`. */
  flags: string;
  text: string;
}

export interface CommandHelp {
  /** The words naming the command after the program: `['origin', 'add']`. */
  words: readonly string[];
  /** Its synopsis lines after the words: `['PATH [--name NAME] [--attach]']`. One empty string when it takes nothing. */
  synopsis: readonly string[];
  /** One line: what it does. */
  summary: string;
  description?: readonly Block[];
  options?: readonly OptionHelp[];
}

export interface Section {
  /** Upper case, as man pages have them: `EXIT STATUS`, `ENVIRONMENT`. */
  title: string;
  body: readonly Block[];
}

export interface Manual {
  /** The program: `fss`. */
  name: string;
  /** Its manual section (8: system administration). */
  section: number;
  /** The NAME line's description: `point-in-time snapshots of block devices`. */
  summary: string;
  /**
   * Synopsis lines after the program name, for a program without commands (fssconfig, fssd,
   * fssck). A program with commands has its synopsis made from theirs.
   */
  synopsis?: readonly string[];
  /**
   * The lines bad usage prints, after the program name, when they are not the synopsis:
   * fssconfig keeps NetBSD's three, though its synopsis shows a Linux addition too.
   */
  usage?: readonly string[];
  description: readonly Block[];
  /** Sub-commands (fss), in the order they are listed. */
  commands?: readonly CommandHelp[];
  options?: readonly OptionHelp[];
  /** Further sections, in order, between OPTIONS and SEE ALSO: EXIT STATUS, ENVIRONMENT, FILES, EXAMPLES. */
  sections?: readonly Section[];
  /** Other pages: `fssd(8)`. */
  seeAlso?: readonly string[];
}

/** Every synopsis line of the program, each starting with its name. */
export function synopsisLines(manual: Manual): string[] {
  if (manual.commands !== undefined && manual.commands.length > 0) {
    return manual.commands.flatMap((command) => commandSynopsis(manual, command));
  }
  return (manual.synopsis ?? ['']).map((line) => joinWords([manual.name, line]));
}

/** A command's synopsis lines, each starting with the program's name and the command's words. */
export function commandSynopsis(manual: Manual, command: CommandHelp): string[] {
  return command.synopsis.map((line) => joinWords([manual.name, ...command.words, line]));
}

/**
 * What `argv` asks help for: the command whose words are the longest prefix of argv's
 * leading non-flag words, and the commands under the words matched so far (a group such as
 * `fss origin`). Neither: the program's own help.
 */
export function helpTarget(
  manual: Manual,
  argv: readonly string[],
): { command?: CommandHelp; group?: { words: string[]; commands: CommandHelp[] } } {
  const words: string[] = [];
  for (const arg of argv) {
    if (arg.startsWith('-')) break;
    words.push(arg);
  }
  const commands = manual.commands ?? [];
  let best: CommandHelp | undefined;
  for (const command of commands) {
    if (command.words.length > words.length) continue;
    if (!command.words.every((word, index) => words[index] === word)) continue;
    if (best === undefined || command.words.length > best.words.length) best = command;
  }
  if (best !== undefined) return { command: best };
  for (let length = words.length; length > 0; length -= 1) {
    const prefix = words.slice(0, length);
    const group = commands.filter((command) => prefix.every((word, index) => command.words[index] === word));
    if (group.length > 0) return { group: { words: prefix, commands: group } };
  }
  return {};
}

function joinWords(words: readonly string[]): string {
  return words.filter((word) => word !== '').join(' ');
}
