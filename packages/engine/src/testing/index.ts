/**
 * `@fss/engine/testing`: the engine-level conformance case for backing stores. Import it from
 * test files only; it needs vitest (an optional peer dependency of @fss/engine).
 */
export { defineEngineTests, testBackingStoreWithEngine } from './engine';
