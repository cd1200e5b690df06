export { alignedBuffer, BufferPool, isAddressAligned } from './aligned';
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
export * from './ioctl';
export * from './mountinfo';
export { RangeLock } from './range-lock';
export { type FileKind, type StatxResult, statx } from './statx';
