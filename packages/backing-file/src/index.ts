export { FileBackingStore, type FileBackingStoreStat, openFileBackingStore } from './file-store';
export { type CreateMode, type FileBackingStoreOptions, fileSystemBlockSize } from './open';
