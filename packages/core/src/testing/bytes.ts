/**
 * Byte helpers for the conformance suites: seeded patterns and a comparison that reports
 * where two buffers first differ.
 *
 * Why not `expect(actual).toEqual(expected)`: on a 1 MiB buffer it is slow and its diff is
 * unreadable. A storage bug is found by its first wrong byte, so that is what we report,
 * with the store offset it corresponds to.
 */
import { SeededRandom } from '@fss/core';

/**
 * Returns `length` bytes of a seeded pattern. Different seeds give different contents, so
 * data written to one place and read back from another (a misdirected write) is detected.
 */
export function patternBytes(length: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(length);
  const random = new SeededRandom(seed);
  // Fill 32 bits at a time; the tail (length not a multiple of 4) byte by byte.
  const wordCount = Math.floor(length / 4);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let word = 0; word < wordCount; word++) {
    view.setUint32(word * 4, Math.floor(random.next() * 2 ** 32), true);
  }
  for (let at = wordCount * 4; at < length; at++) bytes[at] = random.integer(0, 255);
  return bytes;
}

/** Concatenates buffers into one new buffer. */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  const total = parts.reduce((sum, part) => sum + part.length, 0);
  const joined = new Uint8Array(total);
  let at = 0;
  for (const part of parts) {
    joined.set(part, at);
    at += part.length;
  }
  return joined;
}

/**
 * Index of the first byte where `actual` and `expected` differ, or -1 when they are equal
 * (a length difference counts as a difference at the shorter length).
 */
export function firstDifference(actual: Uint8Array, expected: Uint8Array): number {
  const shared = Math.min(actual.length, expected.length);
  const a = Buffer.from(actual.buffer, actual.byteOffset, shared);
  const b = Buffer.from(expected.buffer, expected.byteOffset, shared);
  if (a.equals(b)) return actual.length === expected.length ? -1 : shared;
  // Linear scan only once we know they differ; Buffer.equals is a memcmp.
  for (let at = 0; at < shared; at++) {
    if (actual[at] !== expected[at]) return at;
  }
  return shared;
}

/**
 * Throws when the buffers differ, naming the first differing byte and, when `offset` is
 * given, its position in the store.
 */
export function assertSameBytes(actual: Uint8Array, expected: Uint8Array, what: string, offset = 0): void {
  const at = firstDifference(actual, expected);
  if (at === -1) return;
  if (at >= actual.length || at >= expected.length) {
    throw new Error(`${what}: length ${actual.length}, expected ${expected.length}`);
  }
  throw new Error(
    `${what}: first difference at byte ${at} (store offset ${offset + at}): ` +
      `got 0x${actual[at]!.toString(16)}, expected 0x${expected[at]!.toString(16)}`,
  );
}

/** True when every byte is zero. */
export function isAllZero(bytes: Uint8Array): boolean {
  return firstDifference(bytes, new Uint8Array(bytes.length)) === -1;
}
