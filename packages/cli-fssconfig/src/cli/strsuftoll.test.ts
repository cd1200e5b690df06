import { describe, expect, it } from 'vitest';
import { INT_MAX, LLONG_MAX, strsuftoll } from './strsuftoll';

const cluster = (text: string) => strsuftoll('cluster size', text, 0n, INT_MAX);
const size = (text: string) => strsuftoll('bs size', text, 0n, LLONG_MAX);

describe('strsuftoll', () => {
  it.each([
    ['0', 0n],
    ['65536', 65536n],
    ['  42', 42n],
    ['+7', 7n],
    ['1b', 512n],
    ['4k', 4096n],
    ['64k', 65536n],
    ['2m', 2097152n],
    ['1g', 1073741824n],
    ['1t', 1099511627776n],
    ['3w', 12n],
    ['2x3', 6n],
    ['2*3', 6n],
    ['2kx2', 4096n],
    ['2x3x4', 24n],
    ['0x5', 0n],
  ])('reads %s as %s', (text, value) => {
    expect(size(text)).toBe(value);
  });

  it.each([
    ['abc', "cluster size `abc': illegal number"],
    ['', "cluster size `': illegal number"],
    ['4q', "cluster size `4q': illegal number"],
    ['4kk', "cluster size `4kk': illegal number"],
    ['4xfoo', "cluster size `foo': illegal number"],
    ['-1', 'cluster size -1 is less than 0.'],
    ['2g', 'cluster size 2147483648 is greater than 2147483647.'],
    ['99999999999999999999', 'cluster size: Numerical result out of range'],
    ['8388608t', 'cluster size: Numerical result out of range'],
  ])('rejects %s with NetBSD message', (text, message) => {
    expect(() => cluster(text)).toThrow(message);
  });

  it('checks each factor of a product against the range', () => {
    expect(() => size('2x-1')).toThrow('bs size -1 is less than 0.');
    expect(size('9223372036854775807')).toBe(LLONG_MAX);
    expect(() => size('9223372036854775807x2')).toThrow('bs size: Numerical result out of range');
  });
});
