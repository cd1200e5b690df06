/**
 * A Manual as a man page: roff with the man(7) macros only (TH, SH, PP, TP, RS/RE, B, nf/fi,
 * and font escapes), so man-db, mandoc and groff render it alike and without warnings.
 *
 * Escaping: every backslash becomes `\e`, every `-` the ASCII minus `\-` (so options copy and
 * paste as typed), and a line that would start with `.` or `'` gets `\&` first (it would be
 * read as a request). In synopses and option names, flags are bold and operands italic.
 */
import { type Block, commandSynopsis, type Manual, type OptionHelp, synopsisLines } from './manual';

export interface ManPageOptions {
  /** The footer's source: `fss 0.1.0`. */
  source: string;
  /** The page's date, YYYY-MM-DD. */
  date: string;
  /** Where the manual comes from, named in a comment at the top (the file not to edit). */
  generatedFrom?: string;
}

export function manPage(manual: Manual, options: ManPageOptions): string {
  const out: string[] = [];
  if (options.generatedFrom !== undefined) {
    out.push(`.\\" Generated from ${options.generatedFrom}; edit that, not this file.`);
  }
  out.push(
    `.TH ${manual.name.toUpperCase()} ${manual.section} ${quoted(options.date)} ${quoted(options.source)} ${quoted("System Manager's Manual")}`,
    '.SH NAME',
    `${escapeRoff(manual.name)} \\- ${escapeRoff(manual.summary)}`,
    '.SH SYNOPSIS',
  );
  synopsisLines(manual).forEach((line, index) => {
    if (index > 0) out.push('.br');
    out.push(synopsis(line, commandWordCount(manual, line)));
  });
  out.push('.SH DESCRIPTION', ...blocks(manual.description));
  if (manual.commands !== undefined && manual.commands.length > 0) {
    out.push('.SH COMMANDS');
    for (const command of manual.commands) {
      out.push('.PP');
      commandSynopsis(manual, command).forEach((line, index) => {
        if (index > 0) out.push('.br');
        out.push(synopsis(line, 1 + command.words.length));
      });
      out.push('.RS', `${escapeRoff(command.summary)}.`);
      if (command.description !== undefined) out.push(...blocks(command.description));
      if (command.options !== undefined) out.push(...optionList(command.options));
      out.push('.RE');
    }
  }
  if (manual.options !== undefined && manual.options.length > 0) {
    out.push('.SH OPTIONS', ...optionList(manual.options));
  }
  for (const section of manual.sections ?? []) {
    out.push(`.SH ${quotedIfSpaced(section.title.toUpperCase())}`, ...blocks(section.body));
  }
  if (manual.seeAlso !== undefined && manual.seeAlso.length > 0) {
    out.push('.SH "SEE ALSO"');
    manual.seeAlso.forEach((page, index) => {
      const match = /^(.+)\((\w+)\)$/.exec(page);
      const comma = index < (manual.seeAlso?.length ?? 0) - 1 ? ',' : '';
      out.push(
        match === null
          ? escapeRoff(page) + comma
          : `.BR ${escapeRoff(match[1] as string)} (${match[2]})${comma}`,
      );
    });
  }
  return `${out.join('\n')}\n`;
}

/** How many leading words of a program's synopsis line name the program and its command. */
function commandWordCount(manual: Manual, line: string): number {
  const words = line.split(' ');
  let best = 1;
  for (const command of manual.commands ?? []) {
    if (command.words.every((word, index) => words[index + 1] === word)) {
      best = Math.max(best, 1 + command.words.length);
    }
  }
  return best;
}

/** A synopsis line: the program and command words bold, then flags bold, operands italic. */
function synopsis(line: string, nameWords: number): string {
  const words = line.split(' ');
  const name = `\\fB${escapeRoff(words.slice(0, nameWords).join(' '))}\\fR`;
  const rest = words.slice(nameWords).join(' ');
  return rest === '' ? name : `${name} ${styled(rest)}`;
}

/** Flags (words starting with -) bold, other words italic, brackets and bars roman. */
function styled(text: string): string {
  return text.replace(/[^\s[\]|,]+/g, (word) =>
    word.startsWith('-') ? `\\fB${escapeRoff(word)}\\fR` : `\\fI${escapeRoff(word)}\\fR`,
  );
}

function optionList(list: readonly OptionHelp[]): string[] {
  return list.flatMap((option) => ['.TP', styled(option.flags), line(option.text)]);
}

function blocks(list: readonly Block[]): string[] {
  const out: string[] = [];
  for (const block of list) {
    if (typeof block === 'string') out.push('.PP', line(block));
    else if ('code' in block) out.push('.PP', '.RS 4', '.nf', ...block.code.map(line), '.fi', '.RE');
    else for (const item of block.items) out.push('.TP', `\\fB${escapeRoff(item.term)}\\fR`, line(item.text));
  }
  return out;
}

/** A text line: escaped, and protected from being read as a request. */
function line(text: string): string {
  const escaped = escapeRoff(text);
  return /^[.']/.test(escaped) ? `\\&${escaped}` : escaped;
}

export function escapeRoff(text: string): string {
  return text.replace(/\\/g, '\\e').replace(/-/g, '\\-');
}

function quoted(text: string): string {
  return `"${escapeRoff(text).replace(/"/g, '\\(dq')}"`;
}

function quotedIfSpaced(text: string): string {
  return text.includes(' ') ? quoted(text) : escapeRoff(text);
}
