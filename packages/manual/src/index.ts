/**
 * @fss/manual: a program's manual as data (manual.ts), rendered as its usage text and
 * `--help` texts (help.ts) and as its man page (roff.ts). fss, fssconfig, fssck and fssd each
 * keep one Manual; their man pages are generated from it at build time (writeManPages).
 */
export { blocks, commandUsage, helpText, usageText, wrap } from './help';
export {
  type Block,
  type CommandHelp,
  commandSynopsis,
  helpTarget,
  type Item,
  type Manual,
  type OptionHelp,
  type Section,
  synopsisLines,
} from './manual';
export { escapeRoff, type ManPageOptions, manPage } from './roff';
export { manPageDate, writeManPages } from './write';
