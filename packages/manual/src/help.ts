/**
 * The terminal renderings of a Manual: the usage text bad usage prints (the synopsis lines,
 * `usage: ` before the first and the rest lined up under it, as NetBSD's tools print them)
 * and the `--help` texts, wrapped to 80 columns.
 */
import {
  type Block,
  type CommandHelp,
  commandSynopsis,
  helpTarget,
  type Manual,
  type OptionHelp,
  synopsisLines,
} from './manual';

const WIDTH = 80;
const OPTION_COLUMN = 24;

/** `usage: fss origin add …\n       fss origin rm …`: the usage lines, else the synopsis. */
export function usageText(manual: Manual, lines: readonly string[] = usageLines(manual)): string {
  return lines.map((line, index) => `${index === 0 ? 'usage: ' : '       '}${line}`).join('\n');
}

function usageLines(manual: Manual): string[] {
  if (manual.usage === undefined) return synopsisLines(manual);
  return manual.usage.map((line) => (line === '' ? manual.name : `${manual.name} ${line}`));
}

/** The usage text of one command (all its synopsis lines). */
export function commandUsage(manual: Manual, command: CommandHelp): string {
  return usageText(manual, commandSynopsis(manual, command));
}

/**
 * `PROGRAM [WORDS…] --help`: the help of the command argv names, of the group it names
 * (`fss origin --help`), or of the program.
 */
export function helpText(manual: Manual, argv: readonly string[] = []): string {
  const target = helpTarget(manual, argv);
  if (target.command !== undefined) return commandHelp(manual, target.command);
  if (target.group !== undefined) {
    return [
      usageText(
        manual,
        target.group.commands.flatMap((command) => commandSynopsis(manual, command)),
      ),
      '',
      ...commandList(manual, target.group.commands),
      '',
      `Run '${manual.name} ${target.group.words.join(' ')} COMMAND --help' for one command.`,
    ].join('\n');
  }
  const lines = [usageText(manual, synopsisLines(manual)), '', `${manual.name}: ${manual.summary}.`, ''];
  lines.push(...blocks(manual.description));
  if (manual.commands !== undefined && manual.commands.length > 0) {
    lines.push('', 'Commands:', ...commandList(manual, manual.commands));
  }
  if (manual.options !== undefined && manual.options.length > 0) {
    lines.push('', 'Options:', ...options(manual.options));
  }
  lines.push('', more(manual));
  return lines.join('\n');
}

function commandHelp(manual: Manual, command: CommandHelp): string {
  const lines = [commandUsage(manual, command), '', `${command.summary}.`];
  if (command.description !== undefined && command.description.length > 0) {
    lines.push('', ...blocks(command.description));
  }
  if (command.options !== undefined && command.options.length > 0) {
    lines.push('', 'Options:', ...options(command.options));
  }
  lines.push('', more(manual));
  return lines.join('\n');
}

function more(manual: Manual): string {
  const commands = manual.commands !== undefined && manual.commands.length > 0;
  const perCommand = commands ? `'${manual.name} COMMAND --help' for one command, ` : '';
  return `See ${perCommand}man ${manual.section} ${manual.name} for the manual.`;
}

function commandList(manual: Manual, commands: readonly CommandHelp[]): string[] {
  return commands.flatMap((command) => [
    ...commandSynopsis(manual, command).map((line) => `  ${line}`),
    ...wrap(`${command.summary}.`, 6),
  ]);
}

function options(list: readonly OptionHelp[]): string[] {
  return list.flatMap((option) => {
    const flags = `  ${option.flags}`;
    const text = wrap(option.text, OPTION_COLUMN);
    if (flags.length < OPTION_COLUMN - 1) {
      const first = text[0]?.slice(OPTION_COLUMN) ?? '';
      return [`${flags.padEnd(OPTION_COLUMN)}${first}`, ...text.slice(1)];
    }
    return [flags, ...text];
  });
}

/** Paragraphs wrapped, code kept, items as a definition list; a blank line between blocks. */
export function blocks(list: readonly Block[], indent = 0): string[] {
  const out: string[] = [];
  for (const block of list) {
    if (out.length > 0) out.push('');
    if (typeof block === 'string') out.push(...wrap(block, indent));
    else if ('code' in block) out.push(...block.code.map((line) => `${' '.repeat(indent + 4)}${line}`));
    else {
      for (const item of block.items) {
        out.push(`${' '.repeat(indent + 2)}${item.term}`, ...wrap(item.text, indent + 6));
      }
    }
  }
  return out;
}

/** Greedy word wrap to WIDTH columns, every line indented by `indent` spaces. */
export function wrap(text: string, indent: number): string[] {
  const pad = ' '.repeat(indent);
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(/\s+/).filter((each) => each !== '')) {
    if (line !== '' && indent + line.length + 1 + word.length > WIDTH) {
      lines.push(pad + line);
      line = word;
    } else line = line === '' ? word : `${line} ${word}`;
  }
  if (line !== '') lines.push(pad + line);
  return lines;
}
