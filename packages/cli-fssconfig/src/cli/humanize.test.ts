import { describe, expect, it } from 'vitest';
import { humanizeNumber } from './humanize';

describe('humanizeNumber (base 1024, 4 characters, no space)', () => {
  it.each([
    [0, '0B'],
    [1, '1B'],
    [512, '512B'],
    [999, '999B'],
    [1000, '1K'],
    [1023, '1K'],
    [1024, '1K'],
    [1536, '2K'],
    [4096, '4K'],
    [65536, '64K'],
    [131072, '128K'],
    [1022976, '999K'],
    [1047552, '1M'],
    [1048576, '1M'],
    [2097152, '2M'],
    [1073741824, '1G'],
    [2 ** 40, '1T'],
    [2 ** 50, '1P'],
    [2 ** 60, '1E'],
  ])('%d → %s', (value, text) => {
    const result = humanizeNumber(value);
    expect(result).toBe(text);
    expect(result.length).toBeLessThanOrEqual(4);
  });
});
