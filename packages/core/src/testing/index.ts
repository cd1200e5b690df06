/**
 * `@fss/core/testing`: the shared conformance suites. Import it from test files only; it
 * needs vitest (an optional peer dependency of @fss/core).
 */
export {
  type BackingStoreCapabilities,
  type BackingStoreFactory,
  type BackingStoreFixture,
  type BackingStoreTestContext,
  testBackingStore,
} from './backing-store';
export {
  type BlockDeviceCapabilities,
  type BlockDeviceFactory,
  type BlockDeviceFixture,
  type BlockDeviceTestContext,
  DEVICE_BYTES_MIN,
  DEVICE_SECTORS_MIN,
  testBlockDevice,
} from './block-device';
export { assertSameBytes, concatBytes, firstDifference, isAllZero, patternBytes } from './bytes';
export { DribblingFile } from './dribbling-file';
export { expectFssError } from './errors';
