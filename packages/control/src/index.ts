/**
 * @fss/control: how programs talk to fssd. The control protocol (one JSON request per line,
 * errors as errno names and numbers), the names of units and origins, the run directory, the
 * typed FssClient, and starting fssd on demand. No native code, no NBD, no engine: a Node
 * program that only wants the client installs @fss/core and this.
 */
export {
  type ConnectOptions,
  FssClient,
  fromWire,
  type SetOptions,
} from './client/client';
export {
  type DaemonCommand,
  daemonCommandFor,
  defaultDaemonCommand,
  EXIT_ALREADY_RUNNING,
  type StartOptions,
  startDaemon,
} from './client/spawn';
export {
  defaultOriginName,
  isOriginName,
  ORIGIN_NAME_BYTES_MAX,
  parseUnitName,
  UNIT_COUNT_DEFAULT,
  UNIT_COUNT_MAX,
  unitName,
} from './names';
export { LineSplitter } from './protocol/lines';
export {
  type ChangedResult,
  type ControlOp,
  type ControlRequest,
  type ControlResponse,
  type ControlResults,
  type DaemonStatus,
  type Extent,
  type IoctlRequest,
  isIoctlOp,
  ON_FULL_POLICIES,
  ON_FULL_TIMEOUT_MS_MAX,
  type OnFullPolicy,
  type OpenMode,
  type OriginInfo,
  PATH_BYTES_MAX,
  REQUEST_BYTES_MAX,
  type RequestId,
  type RollbackStatus,
  requestIdOf,
  type SetResult,
  type TcpExportInfo,
  type TcpExportRequest,
  type TcpExportTls,
  toWireError,
  type UnitStatus,
  validateRequest,
  type WireError,
} from './protocol/messages';
export { checkSocketPath, defaultRunDir, type RunPaths, runPaths, SOCKET_PATH_BYTES_MAX } from './rundir';
