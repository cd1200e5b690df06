export { openRawDeviceBackingStore, RawDeviceBackingStore, type RawDeviceBackingStoreOptions } from './store';
