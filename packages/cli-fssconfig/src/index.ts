/**
 * @fss/cli-fssconfig as a library: the pieces of fssconfig that other programs can reuse.
 * The typed control client for fssd is added below as it lands.
 */
export { humanizeNumber } from './cli/humanize';
export { formatListLine, formatLocalTime, formatNotInUse } from './cli/list-format';
export { type FssconfigAction, type FssconfigOptions, parseFssconfigArgs } from './cli/options';
export { INT_MAX, LLONG_MAX, NumberSyntaxError, strsuftoll } from './cli/strsuftoll';
export { FSSCONFIG_USAGE } from './cli/usage';
export * from './names';
