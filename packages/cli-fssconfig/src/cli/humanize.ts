/**
 * humanize_number(3) as fssconfig -lv calls it: a 5-byte buffer (at most 4 characters),
 * automatic scaling in steps of 1024, `B` when no scaling happened, no space, no suffix.
 *
 * The value is kept times 100 so the last division rounds half up. It is divided while it
 * would need more than 3 digits, or while it sits at 999 with a remainder that would round
 * it up to 1000 (the "divisor decimal cut", 973 = ceil(0.95 × 1024)).
 * Examples: 512 → 512B, 1000 → 1K, 65536 → 64K, 2 MiB → 2M (no HN_DECIMAL, so no fractions).
 */
const PREFIXES = ['B', 'K', 'M', 'G', 'T', 'P', 'E'] as const;
const DIVISOR = 1024n;
const DIVISOR_DECIMAL_CUT = 973n;
/** 100 × 10^(buffer length 5 − base length 2): values below 1000 fit in 3 digits. */
const MAX_SCALED = 100_000n;

export function humanizeNumber(bytes: number | bigint): string {
  let quotient = BigInt(bytes);
  const negative = quotient < 0n;
  if (negative) quotient = -quotient;
  quotient *= 100n;
  // A negative number needs one more column for its sign.
  const max = negative ? MAX_SCALED / 10n : MAX_SCALED;
  let remainder = 0n;
  let scale = 0;
  while (
    (quotient >= max || (quotient === max - 1n && remainder >= DIVISOR_DECIMAL_CUT)) &&
    scale < PREFIXES.length - 1
  ) {
    remainder = quotient % DIVISOR;
    quotient /= DIVISOR;
    scale += 1;
  }
  const rounded = (quotient + 50n) / 100n;
  return `${negative ? '-' : ''}${rounded}${PREFIXES[scale]}`;
}
