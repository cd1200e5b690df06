import { describe, expect, it } from 'vitest';
import { defaultOriginName, isOriginName, parseUnitName } from './names';

describe('unit names', () => {
  it.each([
    ['fss0', 0],
    ['fss15', 15],
    ['/dev/fss3', 3],
    ['/dev/rfss3', 3],
  ])('%s → %d', (name, unit) => expect(parseUnitName(name)).toBe(unit));
  it.each(['fss', 'fss01', 'fss-1', 'fss1a', 'vnd0', '/dev/fss', 'dev/fss0', ' fss0', 'fss99999'])(
    'rejects %j',
    (name) => expect(parseUnitName(name)).toBeUndefined(),
  );
});

describe('origin names', () => {
  it('accepts the allowed set and rejects the rest', () => {
    expect(isOriginName('disk.img')).toBe(true);
    expect(isOriginName('a-b_c.9')).toBe(true);
    for (const bad of ['', '.', '..', '-x', '.hidden', 'a/b', 'a b', 'x'.repeat(65), 'é']) {
      expect(isOriginName(bad)).toBe(false);
    }
  });
  it('derives unique names from paths', () => {
    const taken = new Set(['disk.img', 'disk.img-2']);
    expect(defaultOriginName('/srv/disk.img', (n) => taken.has(n))).toBe('disk.img-3');
    expect(defaultOriginName('/srv/my disk', () => false)).toBe('my_disk');
    expect(defaultOriginName('/dev/vdb', () => false)).toBe('vdb');
    expect(defaultOriginName('/', () => false)).toBe('origin');
    expect(isOriginName(defaultOriginName(`/x/${'a'.repeat(100)}`, () => false))).toBe(true);
  });
});
