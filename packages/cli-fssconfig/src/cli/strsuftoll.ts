/**
 * Numbers the way NetBSD's strsuftoll(3) reads them, for fssconfig's `cluster` and `size`.
 *
 * Grammar: optional leading white space, a base-10 integer with an optional sign, then at
 * most one suffix (b ×512, k ×2^10, m ×2^20, g ×2^30, t ×2^40, w ×sizeof(int) = 4), then
 * either the end or `x`/`*` followed by another such number to multiply by. Each factor of a
 * product is range-checked on its own, as NetBSD does, and so is the product.
 *
 * Arithmetic is done in BigInt against the 64-bit `long long` range, so overflow is exact
 * (NetBSD detects it with a sign test that misses some cases; the messages are the same).
 *
 * Messages (printed by the caller after `fssconfig: `):
 *   `<desc> `<val>': illegal number`     (val: the text of the factor that failed)
 *   `<desc> <n> is less than <min>.`
 *   `<desc> <n> is greater than <max>.`
 *   `<desc>: <strerror(ERANGE)>`          (Linux text, like every other strerror we print)
 */
import { strerror } from '@fss/core';

export const LLONG_MAX = 2n ** 63n - 1n;
export const LLONG_MIN = -(2n ** 63n);
export const INT_MAX = 2n ** 31n - 1n;

const SUFFIX_FACTORS: Readonly<Record<string, bigint>> = {
  b: 512n,
  k: 1024n,
  m: 1024n ** 2n,
  g: 1024n ** 3n,
  t: 1024n ** 4n,
  w: 4n,
};

export class NumberSyntaxError extends Error {
  override readonly name = 'NumberSyntaxError';
}

/**
 * Parses `text` as strsuftoll(desc, text, min, max) would.
 * Returns the value, or throws NumberSyntaxError whose message is NetBSD's text.
 */
export function strsuftoll(desc: string, text: string, min: bigint, max: bigint): bigint {
  const value = text.replace(/^[ \t\n\v\f\r]+/, '');
  const match = /^[+-]?[0-9]+/.exec(value);
  if (match === null) throw new NumberSyntaxError(`${desc} \`${value}': illegal number`);
  let num = BigInt(match[0]);
  if (num > LLONG_MAX || num < LLONG_MIN) throw rangeError(desc);
  let rest = value.slice(match[0].length);
  const factor = SUFFIX_FACTORS[rest.charAt(0)];
  if (factor !== undefined) {
    num = checkedProduct(desc, num, factor);
    rest = rest.slice(1);
  }
  if (rest.startsWith('x') || rest.startsWith('*')) {
    num = checkedProduct(desc, num, strsuftoll(desc, rest.slice(1), min, max));
  } else if (rest !== '') {
    throw new NumberSyntaxError(`${desc} \`${value}': illegal number`);
  }
  if (num < min) throw new NumberSyntaxError(`${desc} ${num} is less than ${min}.`);
  if (num > max) throw new NumberSyntaxError(`${desc} ${num} is greater than ${max}.`);
  return num;
}

function checkedProduct(desc: string, a: bigint, b: bigint): bigint {
  const product = a * b;
  if (product > LLONG_MAX || product < LLONG_MIN) throw rangeError(desc);
  return product;
}

function rangeError(desc: string): NumberSyntaxError {
  return new NumberSyntaxError(`${desc}: ${strerror('ERANGE')}`);
}
