/**
 * @fss/engine: fss's copy-on-write engine. An `Origin` owns a device's write path; each
 * `Snapshot` taken of it preserves the point-in-time contents of the device on its backing
 * store. Built on @fss/core's vocabulary (geometry, bitmap, indirect table, store format,
 * interfaces, errors) and @fss/cache's cluster cache.
 */
export { Origin, type OriginOptions, type OriginWriter } from './origin';
export {
  CACHE_BYTES_DEFAULT,
  type Durability,
  type Logger,
  ON_FULL_TIMEOUT_MS_DEFAULT,
  type OnFullPolicy,
  PERSISTENT_CACHE_BYTES_DEFAULT,
  Snapshot,
  type SnapshotHost,
  type SnapshotOptions,
  type SnapshotState,
  type SnapshotStats,
} from './snapshot';
export { SpaceWaitingStore, type SpaceWaitOptions } from './space-wait';
export { WriteGate } from './write-gate';
