export { FileBackingStore, type FileBackingStoreStat, openFileBackingStore } from './file-store';
export type { CreateMode, FileBackingStoreOptions } from './open';
