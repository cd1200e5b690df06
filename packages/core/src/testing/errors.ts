/**
 * The error expectation the conformance suites share: an operating error is an FssError of
 * one errno code, with its errno number and the code in its message (STYLE practice 12).
 */
import { type ErrnoCode, FssError } from '@fss/core';
import { expect } from 'vitest';

/** Expects `promise` to reject with an FssError of `code` (or of one of `code`), and returns it. */
export async function expectFssError(
  promise: Promise<unknown>,
  code: ErrnoCode | readonly ErrnoCode[],
): Promise<FssError> {
  const error = await promise.then(
    () => undefined,
    (reason: unknown) => reason,
  );
  const codes: readonly ErrnoCode[] = typeof code === 'string' ? [code] : code;
  expect(error, `expected a rejection with ${codes.join(' or ')}`).toBeInstanceOf(FssError);
  const fssError = error as FssError;
  expect(codes).toContain(fssError.code);
  expect(fssError.errno).toBeGreaterThan(0);
  expect(fssError.message).toContain(fssError.code);
  return fssError;
}
