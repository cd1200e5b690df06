export { alignedBuffer, BufferPool, isAddressAligned } from './aligned';
export { fileAllocation } from './allocation';
export { busyDeviceError, lockImage, loopBackingFile, loopDevicesBackedBy, refuseLoopBacked } from './claim';
export {
  type IoMode,
  LinuxBlockDevice,
  type LinuxBlockDeviceProperties,
  type OpenBlockDeviceOptions,
  openBlockDevice,
} from './device';
export { errnoError } from './errors';
export {
  type FreezeOptions,
  type FrozenFilesystem,
  freezeFilesystem,
  withFrozenFilesystem,
} from './freeze';
export {
  identitiesOverlap,
  type StorageIdentity,
  sameIdentity,
  sameStorage,
  storageIdentity,
} from './identity';
export * from './ioctl';
export {
  type AsyncCapable,
  type AsyncResult,
  addressOf,
  callAsync,
  koffiEntryPath,
  type Libc,
  lastErrno,
  libc,
  POLL_PROTOTYPE,
  PREAD_PROTOTYPE,
  PWRITE_PROTOTYPE,
  READ_PROTOTYPE,
  WRITE_PROTOTYPE,
} from './libc';
export {
  type AttachLoopOptions,
  attachLoop,
  type DetachLoopOptions,
  detachLoop,
  detachLoopSync,
  LO_FLAGS_DIRECT_IO,
  LO_FLAGS_READ_ONLY,
  LOOP_CLR_FD,
  LOOP_CONFIGURE,
  LOOP_CTL_GET_FREE,
  type LoopDevice,
  loopDevicesOf,
  loopDevicesUnder,
} from './loop';
export * from './mountinfo';
export { type DatagramReceiver, openDatagramReceiver, sdNotify, unixAddress } from './notify';
export { type PeerCredentials, peerCredentials, peerRefusal, socketDescriptor } from './peer-credentials';
export { RangeLock } from './range-lock';
export { type FileKind, type StatxResult, statx } from './statx';
