export {
  FUSE_KERNEL_MINOR_VERSION,
  FUSE_KERNEL_VERSION,
  InitFlag,
  Opcode,
  OpenFlag,
  opcodeName,
} from './abi';
export { type AttachBlockDeviceOptions, type AttachedBlockDevice, attachBlockDevice } from './attach';
export { fuseErrnoOf } from './errors';
export { FUSE_FSTYPE, isFssFuseMounted, removeStaleMount, type UnmountResult, unmountFuse } from './mount';
export {
  type FuseFile,
  type FuseFileStats,
  READER_THREADS_WITH_IO,
  type ServeFuseOptions,
  serveFuse,
} from './serve';
export type { FuseSessionStats } from './session';
