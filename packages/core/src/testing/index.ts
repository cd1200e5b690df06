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
export { assertSameBytes, concatBytes, firstDifference, isAllZero, patternBytes } from './bytes';
