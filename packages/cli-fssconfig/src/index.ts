/**
 * @fss/cli-fssconfig as a library: the NetBSD-compatible pieces of fssconfig (argument parsing,
 * strsuftoll, humanize_number, the -l line formats), for programs that want to print or parse
 * exactly what fssconfig does. The client and the protocol are @fss/control's.
 */

export { humanizeNumber } from './cli/humanize';
export { formatListLine } from './cli/list-format';
export {
  type FssconfigAction,
  type FssconfigOptions,
  type ParseResult,
  parseFssconfigArgs,
} from './cli/options';
export { NumberSyntaxError, strsuftoll } from './cli/strsuftoll';
export {
  type OriginDocument,
  STATUS_SCHEMA_VERSION,
  type StatusDocument,
  statusDocument,
  type UnitDocument,
} from './status/document';
