/**
 * @fss/cli-fssconfig as a library (README, API): the typed control client for fssd
 * (everything fssconfig and fss do), the control protocol's types, and the NetBSD-compatible
 * pieces of fssconfig. Only what the README documents, and the types its signatures use; the
 * rest is the programs' own, imported from its modules.
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
export { type ConnectOptions, FssClient } from './client/client';
export type { DaemonCommand } from './client/spawn';
export {
  type ControlOp,
  type ControlRequest,
  type ControlResults,
  type DaemonStatus,
  type IoctlRequest,
  type OpenMode,
  type OriginInfo,
  type SetResult,
  type UnitStatus,
  validateRequest,
} from './protocol/messages';
export { defaultRunDir } from './rundir';
