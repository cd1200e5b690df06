/**
 * @fss/cli-fssconfig as a library: the typed control client for fssd (everything fssconfig
 * and fss do), the control protocol's types, and the NetBSD-compatible pieces of fssconfig.
 */

export { humanizeNumber } from './cli/humanize';
export { formatListLine, formatLocalTime, formatNotInUse } from './cli/list-format';
export { type FssconfigAction, type FssconfigOptions, parseFssconfigArgs } from './cli/options';
export { INT_MAX, LLONG_MAX, NumberSyntaxError, strsuftoll } from './cli/strsuftoll';
export { FSSCONFIG_USAGE } from './cli/usage';
export { type ConnectOptions, FssClient, fromWire } from './client/client';
export { type DaemonCommand, defaultDaemonCommand, EXIT_ALREADY_RUNNING } from './client/spawn';
export * from './names';
export {
  type ControlOp,
  type ControlRequest,
  type ControlResponse,
  type ControlResults,
  type DaemonStatus,
  type IoctlRequest,
  type OpenMode,
  type OriginInfo,
  PATH_BYTES_MAX,
  REQUEST_BYTES_MAX,
  type SetResult,
  type UnitStatus,
  validateRequest,
  type WireError,
} from './protocol/messages';
export { defaultRunDir, type RunPaths, runPaths } from './rundir';
