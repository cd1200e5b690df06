/**
 * The error expectation the conformance suites share: an operating error is an FssError of
 * one errno code, with its errno number and the code in its message (STYLE practice 12),
 * delivered as a rejected promise. Given a function, it also checks that the operation does
 * not throw synchronously: every storage method returns a promise, and a caller that attaches
 * `.catch` to it (the NBD server, the FUSE session) must never see a throw instead.
 */
import { type ErrnoCode, FssError } from '@fss/core';
import { expect } from 'vitest';

/**
 * Expects `operation` (a promise, or a function returning one) to reject with an FssError of
 * `code` (or of one of `code`), and returns the error.
 */
export async function expectFssError(
  operation: Promise<unknown> | (() => Promise<unknown>),
  code: ErrnoCode | readonly ErrnoCode[],
): Promise<FssError> {
  const codes: readonly ErrnoCode[] = typeof code === 'string' ? [code] : code;
  let promise: Promise<unknown>;
  if (typeof operation === 'function') {
    try {
      promise = operation();
    } catch (error) {
      expect.fail(
        `expected a rejection with ${codes.join(' or ')}, but the call threw synchronously: ${error}`,
      );
    }
  } else {
    promise = operation;
  }
  const error = await promise.then(
    () => undefined,
    (reason: unknown) => reason,
  );
  expect(error, `expected a rejection with ${codes.join(' or ')}`).toBeInstanceOf(FssError);
  const fssError = error as FssError;
  expect(codes).toContain(fssError.code);
  expect(fssError.errno).toBeGreaterThan(0);
  expect(fssError.message).toContain(fssError.code);
  return fssError;
}
