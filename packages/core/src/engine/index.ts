export { Mutex } from './mutex';
export { Origin, type OriginOptions } from './origin';
export {
  type Logger,
  Snapshot,
  type SnapshotHost,
  type SnapshotOptions,
  type SnapshotState,
  type SnapshotStats,
} from './snapshot';
export { WriteGate } from './write-gate';
