/**
 * Assertions for programmer errors. They stay on in production (TigerStyle): a broken
 * invariant in a storage engine must stop the operation, never corrupt data quietly.
 */
export class AssertionError extends Error {
  override readonly name = 'AssertionError';
}

export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new AssertionError(message);
}
