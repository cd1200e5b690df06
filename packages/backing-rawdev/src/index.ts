export { identitiesOverlap, sameStorage, storageIdentity } from './identity';
export { openRawDeviceBackingStore, RawDeviceBackingStore, type RawDeviceBackingStoreOptions } from './store';
